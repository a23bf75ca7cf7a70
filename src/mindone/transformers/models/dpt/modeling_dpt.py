"""DPT (Dense Prediction Transformer) on MindSpore: HF's `modeling_dpt.py` names, checkpoint keys and outputs.

A ViT encoder (ViT's blocks and keys) whose hidden states at `config.backbone_out_indices` are reassembled into
image-like maps (the class token dropped, added or projected in, per `readout_type`; 1x1 projection; resized by a
transposed conv, identity or strided conv per `reassemble_factors`), brought to `fusion_hidden_size` channels and
fused coarse-to-fine by residual conv units with x2 bilinear upsampling. Heads: depth (3 convs, x2 upsampling,
ReLU) and semantic segmentation (conv-BN-ReLU-conv, x2 upsampling, optional auxiliary head).

Supported configurations: the plain ViT backbone (`is_hybrid=False`, no `backbone_config`) and DPT-Hybrid
(`is_hybrid=True`: a BiT backbone's last feature map, 1x1-projected, is the ViT's token grid; its first two feature
maps go to the neck directly, in place of the first two reassembled maps). DPT with an external backbone (DINOv2,
Swinv2: Depth Anything-style configs) raises `NotImplementedError` when built.
"""

from dataclasses import dataclass
from typing import Any, Optional, Tuple

from mindspore import nn, ops
from transformers import DPTConfig

from ...backbone_utils import load_backbone
from ...backend import functional as F
from ...backend.layers import BatchNorm2d, Conv2d, ConvTranspose2d, Dropout, LayerNorm, Linear, new_parameter
from ...modeling_outputs import DepthEstimatorOutput, ModelOutput, SemanticSegmenterOutput, model_output
from ...modeling_utils import PreTrainedModel, init_parameter
from ..vit.modeling_vit import ViTLayer, ViTPatchEmbeddings, ViTPooler


@dataclass
class BaseModelOutputWithPoolingAndIntermediateActivations(ModelOutput):
    last_hidden_state: Any = None
    pooler_output: Any = None
    hidden_states: Optional[Tuple[Any, ...]] = None
    attentions: Optional[Tuple[Any, ...]] = None
    intermediate_activations: Optional[Tuple[Any, ...]] = None


def _check_supported(config):
    if not config.is_hybrid and config.backbone_config is not None:
        raise NotImplementedError(f"DPT with an external backbone (backbone_config.model_type="
                                  f"{config.backbone_config.model_type!r}) is not implemented yet; the ViT-backbone "
                                  "DPT (is_hybrid=False, backbone_config=None) and DPT-Hybrid (is_hybrid=True) are")


def _pair(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _resize_position_table(table, height, width):
    """(1, 1 + n*n, dim) position table, its grid resized (bilinear, as HF) to height x width."""
    old = int((table.shape[1] - 1) ** 0.5)
    if old == height and old == width:  # bilinear resizing to the same size is the identity
        return table
    dim = table.shape[-1]
    grid = table[:, 1:].reshape(1, old, old, dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, (height, width), mode="bilinear", align_corners=False)
    return F.cat([table[:, :1], grid.permute(0, 2, 3, 1).reshape(1, height * width, dim)], 1)


class DPTViTEmbeddings(nn.Cell):
    """Class token + patch embeddings + the position table, resized (bilinear, as HF) to the input's patch grid."""

    def __init__(self, config: DPTConfig):
        super().__init__()
        self.cls_token = new_parameter((1, 1, config.hidden_size))
        self.patch_embeddings = ViTPatchEmbeddings(config)
        self.position_embeddings = new_parameter((1, self.patch_embeddings.num_patches + 1, config.hidden_size))
        self.dropout = Dropout(config.hidden_dropout_prob)
        self.patch_size = config.patch_size

    def construct(self, pixel_values):
        """Returns (embeddings, intermediate activations: None)."""
        batch_size, _, height, width = pixel_values.shape
        embeddings = self.patch_embeddings(pixel_values)
        cls_tokens = ops.broadcast_to(self.cls_token, (batch_size, 1, embeddings.shape[-1])).astype(embeddings.dtype)
        embeddings = F.cat([cls_tokens, embeddings], 1)
        embeddings = embeddings + _resize_position_table(self.position_embeddings, height // self.patch_size,
                                                         width // self.patch_size)
        return self.dropout(embeddings), None


class DPTViTHybridEmbeddings(nn.Cell):
    """DPT-Hybrid's embeddings: the BiT backbone (`config.backbone_config`, three feature maps), its last map
    1x1-projected to `hidden_size` as the token grid, the class token prepended and the position table (resized to
    the patch grid) added; the backbone's first two maps are kept for the neck."""

    def __init__(self, config: DPTConfig, feature_size=None):
        super().__init__()
        image_size, patch_size = _pair(config.image_size), _pair(config.patch_size)
        num_patches = (image_size[1] // patch_size[1]) * (image_size[0] // patch_size[0])
        self.backbone = load_backbone(config)
        if len(self.backbone.channels) != 3:
            raise ValueError(f"Expected backbone to have 3 output features, got {len(self.backbone.channels)}")
        self.residual_feature_map_index = [0, 1]  # the first and second backbone stages, as HF
        # HF sizes the projection from config.backbone_featmap_shape unless a feature size is given
        feature_dim = config.backbone_featmap_shape[1] if feature_size is None else self.backbone.channels[-1]
        self.image_size, self.patch_size = image_size, patch_size[0]
        self.num_channels = config.num_channels
        self.projection = Conv2d(feature_dim, config.hidden_size, kernel_size=1)
        self.cls_token = new_parameter((1, 1, config.hidden_size))
        self.position_embeddings = new_parameter((1, num_patches + 1, config.hidden_size))

    def construct(self, pixel_values):
        """Returns (embeddings, [the backbone's first two feature maps])."""
        batch_size, num_channels, height, width = pixel_values.shape
        if num_channels != self.num_channels:
            raise ValueError("Make sure that the channel dimension of the pixel values match with the one set in the "
                             "configuration.")
        if height != self.image_size[0] or width != self.image_size[1]:
            raise ValueError(f"Input image size ({height}*{width}) doesn't match model ({self.image_size[0]}*"
                             f"{self.image_size[1]}).")
        feature_maps = self.backbone(pixel_values)["feature_maps"]
        intermediate = [feature_maps[i] for i in self.residual_feature_map_index]
        features = self.projection(feature_maps[-1])
        embeddings = features.reshape(batch_size, features.shape[1], -1).swapaxes(1, 2)
        cls_tokens = ops.broadcast_to(self.cls_token, (batch_size, 1, embeddings.shape[-1])).astype(embeddings.dtype)
        embeddings = F.cat([cls_tokens, embeddings], 1)
        positions = _resize_position_table(self.position_embeddings, height // self.patch_size,
                                           width // self.patch_size)
        return embeddings + positions.astype(embeddings.dtype), intermediate


class DPTViTEncoder(nn.Cell):
    """Returns (last, hidden_states or None, attentions or None); hidden_states holds the embeddings and every
    layer's output (the last one before the final layernorm), as HF."""

    def __init__(self, config: DPTConfig):
        super().__init__()
        self.layer = nn.CellList([ViTLayer(config) for _ in range(config.num_hidden_layers)])

    def construct(self, hidden_states, output_attentions=False, output_hidden_states=False):
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layer:
            hidden_states, probs = layer(hidden_states)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            if output_attentions:
                all_attentions += (probs,)
        return hidden_states, all_hidden_states, all_attentions


class DPTReassembleLayer(nn.Cell):
    """1x1 projection to `channels`, then resizing by `factor`: transposed conv (>1), identity (1), strided 3x3
    conv (<1)."""

    def __init__(self, config: DPTConfig, channels, factor):
        super().__init__()
        hidden_size = _backbone_hidden_size(config)
        self.projection = Conv2d(hidden_size, channels, kernel_size=1)
        if factor > 1:
            self.resize = ConvTranspose2d(channels, channels, kernel_size=factor, stride=factor, padding=0)
        elif factor < 1:
            self.resize = Conv2d(channels, channels, kernel_size=3, stride=int(1 / factor), padding=1)
        else:
            self.resize = None

    def construct(self, hidden_state):
        hidden_state = self.projection(hidden_state)
        return self.resize(hidden_state) if self.resize is not None else hidden_state


def _backbone_hidden_size(config):
    if config.backbone_config is not None and hasattr(config.backbone_config, "hidden_size"):
        return config.backbone_config.hidden_size
    return config.hidden_size


class DPTReassembleStage(nn.Cell):
    """Token sequences (B, 1 + h*w, hidden) -> maps (B, neck_hidden_sizes[i], h', w') at several resolutions.

    DPT-Hybrid: the first two entries are the BiT backbone's feature maps, passed on unchanged (stages in
    `config.neck_ignore_stages`; HF's identity layers there have no weights, so the keys start at index 2)."""

    def __init__(self, config: DPTConfig):
        super().__init__()
        self.readout_type = config.readout_type
        self.neck_ignore_stages = tuple(config.neck_ignore_stages)
        hybrid = config.is_hybrid
        if hybrid and config.readout_type != "project":
            raise ValueError(f"Readout type {config.readout_type} is not supported for DPT-Hybrid.")
        self.layers = nn.CellList([nn.Identity() if hybrid and i <= 1 else DPTReassembleLayer(config, channels, factor)
                                   for i, (channels, factor) in enumerate(zip(config.neck_hidden_sizes,
                                                                              config.reassemble_factors))])
        # HF's keys `readout_projects.<i>.0`: [Linear(2 * hidden, hidden), activation] per map
        hidden_size = _backbone_hidden_size(config)
        self.readout_projects = (nn.CellList([nn.CellList([nn.Identity() if hybrid and i <= 1
                                                           else Linear(2 * hidden_size, hidden_size)])
                                              for i in range(len(config.neck_hidden_sizes))])
                                 if config.readout_type == "project" else None)
        self.readout_act = F.get_activation(config.hidden_act)

    def construct(self, hidden_states, patch_height=None, patch_width=None):
        out = []
        for i, hidden_state in enumerate(hidden_states):
            if i in self.neck_ignore_stages:
                out.append(hidden_state)
                continue
            cls_token, tokens = hidden_state[:, 0], hidden_state[:, 1:]
            batch_size, sequence_length, channels = tokens.shape
            if patch_height is None or patch_width is None:
                patch_height = patch_width = int(sequence_length ** 0.5)
            if self.readout_type == "project":
                readout = ops.broadcast_to(cls_token[:, None], tokens.shape)
                tokens = self.readout_act(self.readout_projects[i][0](F.cat([tokens, readout], -1)))
            elif self.readout_type == "add":
                tokens = tokens + cls_token[:, None]
            feature_map = tokens.reshape(batch_size, patch_height, patch_width, channels).permute(0, 3, 1, 2)
            out.append(self.layers[i](feature_map))
        return out


class DPTPreActResidualLayer(nn.Cell):
    """Pre-activation residual conv unit: x + conv(relu(conv(relu(x)))) (BatchNorm after each conv if configured)."""

    def __init__(self, config: DPTConfig):
        super().__init__()
        self.use_batch_norm = config.use_batch_norm_in_fusion_residual
        use_bias = (config.use_bias_in_fusion_residual if config.use_bias_in_fusion_residual is not None
                    else not self.use_batch_norm)
        size = config.fusion_hidden_size
        self.convolution1 = Conv2d(size, size, kernel_size=3, stride=1, padding=1, bias=use_bias)
        self.convolution2 = Conv2d(size, size, kernel_size=3, stride=1, padding=1, bias=use_bias)
        if self.use_batch_norm:
            self.batch_norm1 = BatchNorm2d(size)
            self.batch_norm2 = BatchNorm2d(size)

    def construct(self, hidden_state):
        residual = hidden_state
        hidden_state = self.convolution1(F.relu(hidden_state))
        if self.use_batch_norm:
            hidden_state = self.batch_norm1(hidden_state)
        hidden_state = self.convolution2(F.relu(hidden_state))
        if self.use_batch_norm:
            hidden_state = self.batch_norm2(hidden_state)
        return hidden_state + residual


def _upsample2x(x, align_corners):
    return F.interpolate(x, (x.shape[2] * 2, x.shape[3] * 2), mode="bilinear", align_corners=align_corners)


class DPTFeatureFusionLayer(nn.Cell):
    """(coarser fused map, this level's map) -> residual units, x2 bilinear upsampling (align_corners), 1x1 conv."""

    def __init__(self, config: DPTConfig, align_corners=True):
        super().__init__()
        self.align_corners = align_corners
        self.projection = Conv2d(config.fusion_hidden_size, config.fusion_hidden_size, kernel_size=1, bias=True)
        self.residual_layer1 = DPTPreActResidualLayer(config)
        self.residual_layer2 = DPTPreActResidualLayer(config)

    def construct(self, hidden_state, residual=None):
        if residual is not None:
            if hidden_state.shape != residual.shape:
                residual = F.interpolate(residual, hidden_state.shape[2:], mode="bilinear", align_corners=False)
            hidden_state = hidden_state + self.residual_layer1(residual)
        hidden_state = self.residual_layer2(hidden_state)
        return self.projection(_upsample2x(hidden_state, self.align_corners))


class DPTFeatureFusionStage(nn.Cell):
    def __init__(self, config: DPTConfig):
        super().__init__()
        self.layers = nn.CellList([DPTFeatureFusionLayer(config) for _ in config.neck_hidden_sizes])

    def construct(self, hidden_states):
        """Coarsest first: every layer fuses the previous output with the next finer map; returns every output."""
        fused_hidden_states = []
        fused = None
        for hidden_state, layer in zip(hidden_states[::-1], self.layers):
            fused = layer(hidden_state) if fused is None else layer(fused, hidden_state)
            fused_hidden_states.append(fused)
        return fused_hidden_states


class DPTNeck(nn.Cell):
    """Reassemble stage -> 3x3 convs to `fusion_hidden_size` -> fusion stage."""

    def __init__(self, config: DPTConfig):
        super().__init__()
        self.num_inputs = len(config.neck_hidden_sizes)
        self.reassemble_stage = DPTReassembleStage(config)
        self.convs = nn.CellList([Conv2d(channels, config.fusion_hidden_size, kernel_size=3, padding=1, bias=False)
                                  for channels in config.neck_hidden_sizes])
        self.fusion_stage = DPTFeatureFusionStage(config)

    def construct(self, hidden_states, patch_height=None, patch_width=None):
        if len(hidden_states) != self.num_inputs:
            raise ValueError("The number of hidden states should be equal to the number of neck hidden sizes.")
        hidden_states = self.reassemble_stage(hidden_states, patch_height, patch_width)
        return self.fusion_stage([conv(feature) for conv, feature in zip(self.convs, hidden_states)])


class DPTPreTrainedModel(PreTrainedModel):
    config_class = DPTConfig
    base_model_prefix = "dpt"
    main_input_name = "pixel_values"
    supports_gradient_checkpointing = True
    _no_split_modules = ["DPTViTEmbeddings", "ViTLayer"]

    def _init_weights(self, cell):
        super()._init_weights(cell)
        if isinstance(cell, (DPTViTEmbeddings, DPTViTHybridEmbeddings)):
            init_parameter(cell.cls_token, "zeros")
            init_parameter(cell.position_embeddings, "zeros")

    def _output_flags(self, output_attentions, output_hidden_states):
        config = self.config
        return (output_attentions if output_attentions is not None else config.output_attentions,
                output_hidden_states if output_hidden_states is not None else config.output_hidden_states)

    def _neck_inputs(self, hidden_states, intermediate_activations=None):
        """The encoder outputs (hidden_states without the embeddings) at `backbone_out_indices`; for DPT-Hybrid the
        backbone's two intermediate maps, then the encoder outputs at `backbone_out_indices[2:]`."""
        if not self.config.is_hybrid:
            return [h for i, h in enumerate(hidden_states[1:]) if i in self.config.backbone_out_indices]
        return list(intermediate_activations) + [h for i, h in enumerate(hidden_states[1:])
                                                 if i in self.config.backbone_out_indices[2:]]


class DPTModel(DPTPreTrainedModel):
    def __init__(self, config: DPTConfig, add_pooling_layer=True):
        super().__init__(config)
        _check_supported(config)
        self.embeddings = DPTViTHybridEmbeddings(config) if config.is_hybrid else DPTViTEmbeddings(config)
        self.encoder = DPTViTEncoder(config)
        self.layernorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.pooler = ViTPooler(config) if add_pooling_layer else None
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings if self.config.is_hybrid else self.embeddings.patch_embeddings

    def construct(self, pixel_values=None, output_attentions=None, output_hidden_states=None, return_dict=None,
                  **kwargs):
        r"""
        Args:
            pixel_values: (B, C, H, W), e.g. from `DPTImageProcessor(..., return_tensors="np")`; H and W multiples
                of the patch size (the position table is resized to the patch grid).
        Returns `last_hidden_state` (B, 1 + patches, hidden), `pooler_output`, for DPT-Hybrid
        `intermediate_activations` (the BiT backbone's first two feature maps) and, when asked, `hidden_states`
        (embeddings + every layer) and `attentions`.
        """
        if pixel_values is None:
            raise ValueError("You have to specify pixel_values")
        output_attentions, output_hidden_states = self._output_flags(output_attentions, output_hidden_states)
        sequence_output, pooled, hidden_states, attentions, intermediate = self._forward(
            pixel_values, output_attentions, output_hidden_states)
        fields = {"last_hidden_state": sequence_output, "pooler_output": pooled, "hidden_states": hidden_states,
                  "attentions": attentions, "intermediate_activations": intermediate}
        return model_output(BaseModelOutputWithPoolingAndIntermediateActivations, fields, return_dict is not False)

    def _forward(self, pixel_values, output_attentions=False, output_hidden_states=False):
        """Returns (sequence output, pooled, hidden_states, attentions, intermediate activations)."""
        projection = self.embeddings.projection if self.config.is_hybrid else \
            self.embeddings.patch_embeddings.projection
        pixel_values = pixel_values.astype(projection.weight.dtype)
        embeddings, intermediate = self.embeddings(pixel_values)
        last, hidden_states, attentions = self.encoder(embeddings, output_attentions, output_hidden_states)
        sequence_output = self.layernorm(last)
        pooled = self.pooler(sequence_output) if self.pooler is not None else None
        return sequence_output, pooled, hidden_states, attentions, intermediate


class DPTDepthEstimationHead(nn.Cell):
    """conv (features -> features/2), x2 bilinear upsampling (align_corners), conv -> 32, ReLU, 1x1 conv -> 1,
    ReLU (HF's `nn.Sequential` keys `head.0`, `head.2`, `head.4`), on the fusion output `head_in_index`."""

    def __init__(self, config: DPTConfig):
        super().__init__()
        self.head_in_index = config.head_in_index
        self.projection = (Conv2d(256, 256, kernel_size=3, stride=1, padding=1) if config.add_projection else None)
        features = config.fusion_hidden_size
        self.head = nn.CellDict({"0": Conv2d(features, features // 2, kernel_size=3, stride=1, padding=1),
                                 "2": Conv2d(features // 2, 32, kernel_size=3, stride=1, padding=1),
                                 "4": Conv2d(32, 1, kernel_size=1, stride=1, padding=0)})

    def construct(self, hidden_states):
        hidden_state = hidden_states[self.head_in_index]
        if self.projection is not None:
            hidden_state = F.relu(self.projection(hidden_state))
        hidden_state = _upsample2x(self.head["0"](hidden_state), True)
        hidden_state = F.relu(self.head["2"](hidden_state))
        return F.relu(self.head["4"](hidden_state)).squeeze(1)


class DPTForDepthEstimation(DPTPreTrainedModel):
    def __init__(self, config: DPTConfig):
        super().__init__(config)
        _check_supported(config)
        self.dpt = DPTModel(config, add_pooling_layer=False)
        self.neck = DPTNeck(config)
        self.head = DPTDepthEstimationHead(config)
        self.post_init()

    def construct(self, pixel_values=None, labels=None, output_attentions=None, output_hidden_states=None,
                  return_dict=None, **kwargs):
        r"""
        Args:
            pixel_values: (B, C, H, W), e.g. from `DPTImageProcessor(..., return_tensors="np")`.
        Returns `predicted_depth` (B, H', W') and, when asked, the encoder's `hidden_states` / `attentions`.
        Training is not implemented (as in HF): `labels` raise `NotImplementedError`.
        """
        if labels is not None:
            raise NotImplementedError("Training is not implemented yet")
        output_attentions, output_hidden_states = self._output_flags(output_attentions, output_hidden_states)
        _, _, hidden_states, attentions, intermediate = self.dpt._forward(pixel_values, output_attentions, True)
        predicted_depth = self.head(self.neck(self._neck_inputs(hidden_states, intermediate)))
        fields = {"loss": None, "predicted_depth": predicted_depth,
                  "hidden_states": hidden_states if output_hidden_states else None, "attentions": attentions}
        return model_output(DepthEstimatorOutput, fields, return_dict is not False)


class DPTSegmentationHead(nn.Cell):
    """conv (no bias) -> BatchNorm -> ReLU -> dropout -> 1x1 conv to the classes (HF's `nn.Sequential` keys
    `head.0`, `head.1`, `head.4`); the semantic head then upsamples x2 (bilinear, align_corners)."""

    def __init__(self, config: DPTConfig, dropout, upsample):
        super().__init__()
        features = config.fusion_hidden_size
        self.upsample = upsample
        self.head = nn.CellDict({"0": Conv2d(features, features, kernel_size=3, padding=1, bias=False),
                                 "1": BatchNorm2d(features),
                                 "3": Dropout(dropout),
                                 "4": Conv2d(features, config.num_labels, kernel_size=1)})

    def construct(self, hidden_state):
        hidden_state = F.relu(self.head["1"](self.head["0"](hidden_state)))
        logits = self.head["4"](self.head["3"](hidden_state))
        return _upsample2x(logits, True) if self.upsample else logits


class DPTForSemanticSegmentation(DPTPreTrainedModel):
    def __init__(self, config: DPTConfig):
        super().__init__(config)
        _check_supported(config)
        self.dpt = DPTModel(config, add_pooling_layer=False)
        self.neck = DPTNeck(config)
        self.head = DPTSegmentationHead(config, config.semantic_classifier_dropout, upsample=True)
        self.auxiliary_head = DPTSegmentationHead(config, 0.1, upsample=False) if config.use_auxiliary_head else None
        self.post_init()

    def construct(self, pixel_values=None, labels=None, output_attentions=None, output_hidden_states=None,
                  return_dict=None, **kwargs):
        r"""
        Args:
            pixel_values: (B, C, H, W), e.g. from `DPTImageProcessor(..., return_tensors="np")`.
            labels: (B, H, W) class indices per pixel (`config.semantic_loss_ignore_index` is ignored); needs the
                auxiliary head (as HF's loss).
        Returns `logits` (B, num_labels, H', W'); with labels, `loss` = cross-entropy of the logits resized
        (bilinear) to the labels plus `auxiliary_loss_weight` x that of the auxiliary head.
        """
        if labels is not None and self.config.num_labels == 1:
            raise ValueError("The number of labels should be greater than one")
        output_attentions, output_hidden_states = self._output_flags(output_attentions, output_hidden_states)
        _, _, hidden_states, attentions, intermediate = self.dpt._forward(pixel_values, output_attentions, True)
        fused = self.neck(self._neck_inputs(hidden_states, intermediate))
        logits = self.head(fused[self.config.head_in_index])
        loss = None
        if labels is not None:
            if self.auxiliary_head is None:
                raise ValueError("DPTForSemanticSegmentation's loss needs the auxiliary head "
                                 "(config.use_auxiliary_head=True), as HF's")
            auxiliary_logits = self.auxiliary_head(fused[-1])
            loss = (self._pixel_loss(logits, labels)
                    + self.config.auxiliary_loss_weight * self._pixel_loss(auxiliary_logits, labels))
        fields = {"loss": loss, "logits": logits,
                  "hidden_states": hidden_states if output_hidden_states else None, "attentions": attentions}
        return model_output(SemanticSegmenterOutput, fields, return_dict is not False)

    def _pixel_loss(self, logits, labels):
        logits = F.interpolate(logits, labels.shape[-2:], mode="bilinear", align_corners=False)
        num_labels = logits.shape[1]
        flat = logits.permute(0, 2, 3, 1).reshape(-1, num_labels)
        return F.cross_entropy(flat, labels.reshape(-1), ignore_index=self.config.semantic_loss_ignore_index)


__all__ = ["DPTModel", "DPTForDepthEstimation", "DPTForSemanticSegmentation", "DPTPreTrainedModel"]
