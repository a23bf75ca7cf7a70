"""YOLOS on MindSpore: a ViT encoder with detection tokens and DETR-style class / box MLP heads. HF's
`modeling_yolos.py` names, checkpoint keys and outputs; the transformer block is ViT's (same keys).

The position tables are always resized (bicubic, as HF) from the config's `image_size` grid to the input's, so any
image size divisible by the patch size works. The Hungarian-matching loss is not implemented (labels raise)."""

from dataclasses import dataclass
from typing import Any, Optional, Tuple

from mindspore import nn, ops
from transformers import YolosConfig

from ...backend import functional as F
from ...backend.layers import Dropout, LayerNorm, Linear, new_parameter
from ...loss_utils import object_detection_loss
from ...modeling_outputs import BaseModelOutputWithPooling, ModelOutput, model_output
from ...modeling_utils import PreTrainedModel, init_parameter
from ..vit.modeling_vit import ViTLayer, ViTPatchEmbeddings, ViTPooler, _pair


@dataclass
class YolosObjectDetectionOutput(ModelOutput):
    loss: Any = None
    loss_dict: Optional[dict] = None
    logits: Any = None
    pred_boxes: Any = None
    auxiliary_outputs: Optional[list] = None
    last_hidden_state: Any = None
    hidden_states: Optional[Tuple[Any, ...]] = None
    attentions: Optional[Tuple[Any, ...]] = None


def _resize_patch_positions(table, config, height, width):
    """(..., 1 + grid + num_detection_tokens, hidden) table for the config's image size -> the same for a
    `height` x `width` input: the patch grid part is resized bicubically, class/detection entries are kept."""
    num_det = config.num_detection_tokens
    image_size, patch = _pair(config.image_size), config.patch_size
    lead, dim = table.shape[:-2], table.shape[-1]
    flat = table.reshape(-1, table.shape[-2], dim)
    cls_pos, det_pos = flat[:, :1], flat[:, -num_det:]
    grid = flat[:, 1:-num_det].swapaxes(1, 2).reshape(flat.shape[0], dim, image_size[0] // patch,
                                                    image_size[1] // patch)
    new_h, new_w = height // patch, width // patch
    grid = F.interpolate(grid, (new_h, new_w), mode="bicubic", align_corners=False)
    grid = grid.reshape(flat.shape[0], dim, new_h * new_w).swapaxes(1, 2)
    out = F.cat([cls_pos, grid, det_pos], 1)
    return out.reshape(tuple(lead) + (out.shape[1], dim))


class YolosEmbeddings(nn.Cell):
    """[class token, patch embeddings, detection tokens] + the (resized) position table."""

    def __init__(self, config: YolosConfig):
        super().__init__()
        self.config = config
        self.cls_token = new_parameter((1, 1, config.hidden_size))
        self.detection_tokens = new_parameter((1, config.num_detection_tokens, config.hidden_size))
        self.patch_embeddings = ViTPatchEmbeddings(config)
        self.position_embeddings = new_parameter(
            (1, self.patch_embeddings.num_patches + config.num_detection_tokens + 1, config.hidden_size))
        self.dropout = Dropout(config.hidden_dropout_prob)

    def construct(self, pixel_values):
        batch_size, _, height, width = pixel_values.shape
        embeddings = self.patch_embeddings(pixel_values)
        dim = embeddings.shape[-1]
        cls_tokens = ops.broadcast_to(self.cls_token, (batch_size, 1, dim)).astype(embeddings.dtype)
        det_tokens = ops.broadcast_to(self.detection_tokens, (batch_size, self.config.num_detection_tokens, dim))
        embeddings = F.cat([cls_tokens, embeddings, det_tokens.astype(embeddings.dtype)], 1)
        embeddings = embeddings + _resize_patch_positions(self.position_embeddings, self.config, height, width)
        return self.dropout(embeddings)


class YolosEncoder(nn.Cell):
    def __init__(self, config: YolosConfig):
        super().__init__()
        self.config = config
        self.layer = nn.CellList([ViTLayer(config) for _ in range(config.num_hidden_layers)])
        # per-layer position tables added after every layer but the last (checkpoint key
        # `vit.encoder.mid_position_embeddings`)
        self.mid_position_embeddings = None
        if config.use_mid_position_embeddings:
            image_size = _pair(config.image_size)
            seq_length = 1 + image_size[0] * image_size[1] // config.patch_size ** 2 + config.num_detection_tokens
            self.mid_position_embeddings = new_parameter((config.num_hidden_layers - 1, 1, seq_length,
                                                          config.hidden_size))

    def construct(self, hidden_states, height, width, output_attentions=False, output_hidden_states=False):
        mid = None
        if self.mid_position_embeddings is not None:
            mid = _resize_patch_positions(self.mid_position_embeddings, self.config, height, width)
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        last = len(self.layer) - 1
        for i, layer in enumerate(self.layer):
            hidden_states, probs = layer(hidden_states)
            # as HF, the recorded hidden state is the layer's output before the mid position table is added
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            if mid is not None and i < last:
                hidden_states = hidden_states + mid[i].astype(hidden_states.dtype)
            if output_attentions:
                all_attentions += (probs,)
        return hidden_states, all_hidden_states, all_attentions


class YolosPooler(ViTPooler):
    """dense + tanh on the class token."""

    def __init__(self, config: YolosConfig):
        nn.Cell.__init__(self)
        self.dense = Linear(config.hidden_size, config.hidden_size)
        self.activation = ops.tanh


class YolosPreTrainedModel(PreTrainedModel):
    config_class = YolosConfig
    base_model_prefix = "vit"
    main_input_name = "pixel_values"
    supports_gradient_checkpointing = True
    _no_split_modules = ["YolosEmbeddings", "ViTLayer"]

    def _output_flags(self, output_attentions, output_hidden_states):
        config = self.config
        return (output_attentions if output_attentions is not None else config.output_attentions,
                output_hidden_states if output_hidden_states is not None else config.output_hidden_states)

    def _init_weights(self, cell):
        """HF's scheme: class/detection tokens and position tables start at zero."""
        super()._init_weights(cell)
        if isinstance(cell, YolosEmbeddings):
            for p in (cell.cls_token, cell.detection_tokens, cell.position_embeddings):
                init_parameter(p, "zeros")
        if isinstance(cell, YolosEncoder) and cell.mid_position_embeddings is not None:
            init_parameter(cell.mid_position_embeddings, "zeros")


class YolosModel(YolosPreTrainedModel):
    def __init__(self, config: YolosConfig, add_pooling_layer=True):
        super().__init__(config)
        self.embeddings = YolosEmbeddings(config)
        self.encoder = YolosEncoder(config)
        self.layernorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.pooler = YolosPooler(config) if add_pooling_layer else None
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.patch_embeddings

    def construct(self, pixel_values=None, output_attentions=None, output_hidden_states=None, return_dict=None,
                  **kwargs):
        r"""
        Args:
            pixel_values: (B, C, H, W), H and W multiples of the patch size (e.g. from `YolosImageProcessor`).
        """
        if pixel_values is None:
            raise ValueError("You have to specify pixel_values")
        output_attentions, output_hidden_states = self._output_flags(output_attentions, output_hidden_states)
        sequence_output, pooled, all_hidden_states, all_attentions = self._forward(
            pixel_values, output_attentions, output_hidden_states)
        fields = {"last_hidden_state": sequence_output, "pooler_output": pooled, "hidden_states": all_hidden_states,
                  "attentions": all_attentions}
        return model_output(BaseModelOutputWithPooling, fields, return_dict is not False)

    def _forward(self, pixel_values, output_attentions, output_hidden_states):
        pixel_values = pixel_values.astype(self.embeddings.patch_embeddings.projection.weight.dtype)
        height, width = pixel_values.shape[-2:]
        embedding_output = self.embeddings(pixel_values)
        hidden_states, all_hidden_states, all_attentions = self.encoder(
            embedding_output, height, width, output_attentions, output_hidden_states)
        sequence_output = self.layernorm(hidden_states)
        pooled = self.pooler(sequence_output) if self.pooler is not None else None
        return sequence_output, pooled, all_hidden_states, all_attentions


class YolosMLPPredictionHead(nn.Cell):
    """`num_layers` linear layers with ReLU between them (DETR's box / class head)."""

    def __init__(self, input_dim, hidden_dim, output_dim, num_layers):
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.CellList([Linear(a, b) for a, b in zip(dims[:-1], dims[1:])])

    def construct(self, x):
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = ops.relu(x)
        return x


class YolosForObjectDetection(YolosPreTrainedModel):
    """Class logits (num_labels + 1, the last is "no object") and sigmoid (cx, cy, w, h) boxes from the final
    detection tokens."""

    def __init__(self, config: YolosConfig):
        super().__init__(config)
        self.vit = YolosModel(config, add_pooling_layer=False)
        self.class_labels_classifier = YolosMLPPredictionHead(config.hidden_size, config.hidden_size,
                                                              config.num_labels + 1, 3)
        self.bbox_predictor = YolosMLPPredictionHead(config.hidden_size, config.hidden_size, 4, 3)
        self.post_init()

    def construct(self, pixel_values=None, labels=None, output_attentions=None, output_hidden_states=None,
                  return_dict=None, **kwargs):
        if pixel_values is None:
            raise ValueError("You have to specify pixel_values")
        output_attentions, output_hidden_states = self._output_flags(output_attentions, output_hidden_states)
        sequence_output, _, all_hidden_states, all_attentions = self.vit._forward(
            pixel_values, output_attentions, output_hidden_states)
        detection = sequence_output[:, -self.config.num_detection_tokens:, :]
        logits = self.class_labels_classifier(detection)
        pred_boxes = ops.sigmoid(self.bbox_predictor(detection))
        loss = loss_dict = None
        if labels is not None:
            # Hungarian matching on the host (scipy), then differentiable class / L1 / GIoU terms (PyNative only)
            loss, loss_dict = object_detection_loss(logits, pred_boxes, labels, self.config)
        fields = {"loss": loss, "loss_dict": loss_dict, "logits": logits, "pred_boxes": pred_boxes,
                  "last_hidden_state": sequence_output,
                  "hidden_states": all_hidden_states, "attentions": all_attentions}
        return model_output(YolosObjectDetectionOutput, fields, return_dict is not False)


__all__ = ["YolosForObjectDetection", "YolosModel", "YolosPreTrainedModel", "YolosObjectDetectionOutput"]
