"""ViT on MindSpore: HF's `modeling_vit.py` (transformers 5) structure, names and outputs.

Patch embedding (a strided conv) + class token + learned positions, pre-norm encoder layers directly under the model
(`encoder.layer.N`, the saved checkpoints' layout), final LayerNorm, optional tanh pooler on the class token.
"""

import mindspore as ms
from mindspore import nn, ops
from mindspore.common.initializer import TruncatedNormal, Zero
from transformers import ViTConfig

from ...backend import functional as F
from ...backend.layers import Conv2d, Dropout, LayerNorm, Linear, new_parameter
from ...loss_utils import sequence_classification_loss
from ...modeling_layers import GradientCheckpointingLayer
from ...modeling_outputs import BaseModelOutputWithPooling, ImageClassifierOutput, model_output
from ...modeling_utils import PreTrainedModel, init_parameter


def _pair(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x, x)


class ViTPatchEmbeddings(nn.Cell):
    def __init__(self, config):
        super().__init__()
        self.image_size = _pair(config.image_size)
        self.patch_size = _pair(config.patch_size)
        self.num_channels = config.num_channels
        self.num_patches = (self.image_size[0] // self.patch_size[0]) * (self.image_size[1] // self.patch_size[1])
        self.projection = Conv2d(config.num_channels, config.hidden_size, kernel_size=self.patch_size,
                                 stride=self.patch_size)

    def construct(self, pixel_values):
        if pixel_values.shape[1] != self.num_channels:
            raise ValueError("Make sure that the channel dimension of the pixel values match with the one set in the "
                             f"configuration. Expected {self.num_channels} but got {pixel_values.shape[1]}.")
        embeddings = self.projection(pixel_values.astype(self.projection.weight.dtype))
        return embeddings.reshape(embeddings.shape[0], embeddings.shape[1], -1).swapaxes(1, 2)


def interpolate_position_table(position_embeddings, height, width, patch_size):
    """(1, 1 + n, D) table resized (bicubic, align_corners=False, in fp32 as HF's DINOv2) to the patch grid of a
    `height` x `width` image; the class token's entry is kept."""
    num_positions = position_embeddings.shape[1] - 1
    dim = position_embeddings.shape[-1]
    side = int(num_positions ** 0.5)
    patch_pos = position_embeddings[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2)
    patch_pos = F.interpolate(patch_pos.astype(ms.float32), (height // patch_size[0], width // patch_size[1]),
                              mode="bicubic", align_corners=False).astype(position_embeddings.dtype)
    patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, -1, dim)
    return F.cat([position_embeddings[:, :1], patch_pos], 1)


class ViTEmbeddings(nn.Cell):
    """Class token, optional mask token, patch and position embeddings."""

    def __init__(self, config, use_mask_token=False):
        super().__init__()
        self.cls_token = new_parameter((1, 1, config.hidden_size), TruncatedNormal(config.initializer_range))
        self.mask_token = new_parameter((1, 1, config.hidden_size)) if use_mask_token else None
        self.patch_embeddings = ViTPatchEmbeddings(config)
        self.position_embeddings = new_parameter((1, self.patch_embeddings.num_patches + 1, config.hidden_size),
                                                 TruncatedNormal(config.initializer_range))
        self.dropout = Dropout(config.hidden_dropout_prob)
        self.patch_size = self.patch_embeddings.patch_size
        self.image_size = self.patch_embeddings.image_size

    def interpolate_pos_encoding(self, embeddings, height, width):
        if embeddings.shape[1] == self.position_embeddings.shape[1] and height == width:
            return self.position_embeddings
        return interpolate_position_table(self.position_embeddings, height, width, self.patch_size)

    def construct(self, pixel_values, bool_masked_pos=None, interpolate_pos_encoding=False):
        batch_size, _, height, width = pixel_values.shape
        embeddings = self.patch_embeddings(pixel_values)
        if bool_masked_pos is not None:
            mask = bool_masked_pos[..., None].astype(embeddings.dtype)
            embeddings = embeddings * (1.0 - mask) + self.mask_token.astype(embeddings.dtype) * mask
        cls_tokens = ops.broadcast_to(self.cls_token, (batch_size, 1, embeddings.shape[-1]))
        embeddings = F.cat([cls_tokens.astype(embeddings.dtype), embeddings], 1)
        if interpolate_pos_encoding:
            embeddings = embeddings + self.interpolate_pos_encoding(embeddings, height, width)
        else:
            if height != self.image_size[0] or width != self.image_size[1]:
                raise ValueError(f"Input image size ({height}*{width}) doesn't match model "
                                 f"({self.image_size[0]}*{self.image_size[1]}).")
            embeddings = embeddings + self.position_embeddings
        return self.dropout(embeddings)


class _ViTQKV(nn.Cell):
    def __init__(self, hidden_size, inner, bias):
        super().__init__()
        self.query = Linear(hidden_size, inner, bias=bias)
        self.key = Linear(hidden_size, inner, bias=bias)
        self.value = Linear(hidden_size, inner, bias=bias)


class _ViTDense(nn.Cell):
    def __init__(self, in_features, out_features):
        super().__init__()
        self.dense = Linear(in_features, out_features)

    def construct(self, x):
        return self.dense(x)


class ViTAttention(nn.Cell):
    def __init__(self, config):
        super().__init__()
        self.num_attention_heads = config.num_attention_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.attention_dropout = config.attention_probs_dropout_prob
        self.scaling = self.head_dim ** -0.5
        inner = config.num_attention_heads * self.head_dim
        # the names of the saved checkpoints (HF 5 renames them to q/k/v/o_proj on load)
        self.attention = _ViTQKV(config.hidden_size, inner, config.qkv_bias)
        self.output = _ViTDense(inner, config.hidden_size)

    def construct(self, hidden_states, attention_mask=None):
        batch, seq_len = hidden_states.shape[:2]
        query = self.attention.query(hidden_states).reshape(batch, seq_len, -1, self.head_dim).swapaxes(1, 2)
        key = self.attention.key(hidden_states).reshape(batch, seq_len, -1, self.head_dim).swapaxes(1, 2)
        value = self.attention.value(hidden_states).reshape(batch, seq_len, -1, self.head_dim).swapaxes(1, 2)
        attn_output, attn_weights = F.attention(query, key, value, attn_mask=attention_mask, scale=self.scaling,
                                                dropout_p=self.attention_dropout if self.training else 0.0,
                                                training=self.training)
        return self.output.dense(attn_output.swapaxes(1, 2).reshape(batch, seq_len, -1)), attn_weights


class _ViTIntermediate(nn.Cell):
    def __init__(self, config):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.intermediate_size)
        self.intermediate_act_fn = F.get_activation(config.hidden_act)

    def construct(self, hidden_states):
        return self.intermediate_act_fn(self.dense(hidden_states))


class ViTLayer(GradientCheckpointingLayer):
    def __init__(self, config):
        super().__init__()
        self.attention = ViTAttention(config)
        self.layernorm_before = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.layernorm_after = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.intermediate = _ViTIntermediate(config)
        self.output = _ViTDense(config.intermediate_size, config.hidden_size)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def construct(self, hidden_states, attention_mask=None):
        attn_output, attn_weights = self.attention(self.layernorm_before(hidden_states), attention_mask)
        hidden_states = self.dropout(attn_output) + hidden_states
        hidden_states = self.dropout(self.output(self.intermediate(self.layernorm_after(hidden_states)))) + hidden_states
        return hidden_states, attn_weights


class ViTEncoder(nn.Cell):
    def __init__(self, config):
        super().__init__()
        self.layer = nn.CellList([ViTLayer(config) for _ in range(config.num_hidden_layers)])


class ViTPooler(nn.Cell):
    def __init__(self, config):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.pooler_output_size)
        self.activation = F.get_activation(config.pooler_act)

    def construct(self, hidden_states):
        return self.activation(self.dense(hidden_states[:, 0]))


class ViTPreTrainedModel(PreTrainedModel):
    config_class = ViTConfig
    base_model_prefix = "vit"
    main_input_name = "pixel_values"
    supports_gradient_checkpointing = True
    _no_split_modules = ["ViTEmbeddings", "ViTLayer"]

    def _init_weights(self, cell):
        super()._init_weights(cell)
        std = self.config.initializer_range
        if isinstance(cell, (Linear, Conv2d)):
            init_parameter(cell.weight, TruncatedNormal(std))
            if cell.bias is not None:
                init_parameter(cell.bias, Zero())
        elif isinstance(cell, ViTEmbeddings):
            init_parameter(cell.position_embeddings, TruncatedNormal(std))
            init_parameter(cell.cls_token, TruncatedNormal(std))
            if cell.mask_token is not None:
                init_parameter(cell.mask_token, Zero())

    def _output_flags(self, output_attentions, output_hidden_states):
        config = self.config
        return (output_attentions if output_attentions is not None else config.output_attentions,
                output_hidden_states if output_hidden_states is not None else config.output_hidden_states)


class ViTModel(ViTPreTrainedModel):
    def __init__(self, config: ViTConfig, add_pooling_layer=True, use_mask_token=False):
        super().__init__(config)
        self.embeddings = ViTEmbeddings(config, use_mask_token=use_mask_token)
        self.encoder = ViTEncoder(config)
        self.layernorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.pooler = ViTPooler(config) if add_pooling_layer else None
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.patch_embeddings

    def construct(self, pixel_values=None, bool_masked_pos=None, interpolate_pos_encoding=None, attention_mask=None,
                  output_attentions=None, output_hidden_states=None, return_dict=None, **kwargs):
        r"""
        Args:
            pixel_values: (B, C, H, W), e.g. from `ViTImageProcessor(..., return_tensors="np")`.
            bool_masked_pos: (B, num_patches) patches replaced by the mask token (needs `use_mask_token=True`).
            interpolate_pos_encoding: resize the position table (bicubic) for images of another size.
            output_hidden_states: the embeddings and every layer's output (before the final LayerNorm).
        """
        if pixel_values is None:
            raise ValueError("You have to specify pixel_values")
        output_attentions, output_hidden_states = self._output_flags(output_attentions, output_hidden_states)
        last, pooled, hidden, attentions = self._forward(pixel_values, bool_masked_pos, interpolate_pos_encoding,
                                                         attention_mask, output_attentions, output_hidden_states)
        fields = {"last_hidden_state": last, "pooler_output": pooled, "hidden_states": hidden,
                  "attentions": attentions}
        return model_output(BaseModelOutputWithPooling, fields, return_dict is not False)

    def _forward(self, pixel_values, bool_masked_pos=None, interpolate_pos_encoding=None, attention_mask=None,
                 output_attentions=False, output_hidden_states=False):
        """(last_hidden_state, pooled or None, hidden_states, attentions) as plain tuples for the heads."""
        hidden_states = self.embeddings(pixel_values, bool_masked_pos=bool_masked_pos,
                                        interpolate_pos_encoding=bool(interpolate_pos_encoding))
        if attention_mask is not None:
            # (B, S) 1/0 keys to attend to -> additive (B, 1, 1, S)
            attention_mask = (1.0 - attention_mask[:, None, None, :].astype(hidden_states.dtype)) * \
                F.finfo_min(hidden_states.dtype)
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.encoder.layer:
            hidden_states, attn_weights = layer(hidden_states, attention_mask)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            if output_attentions:
                all_attentions += (attn_weights,)
        sequence_output = self.layernorm(hidden_states)
        pooled_output = self.pooler(sequence_output) if self.pooler is not None else None
        return sequence_output, pooled_output, all_hidden_states, all_attentions


class ViTForImageClassification(ViTPreTrainedModel):
    """ViT with a linear classifier on the final class-token state."""

    def __init__(self, config: ViTConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.vit = ViTModel(config, add_pooling_layer=False)
        self.classifier = Linear(config.hidden_size, config.num_labels) if config.num_labels > 0 else None
        self.post_init()

    def construct(self, pixel_values=None, labels=None, interpolate_pos_encoding=None, attention_mask=None,
                  output_attentions=None, output_hidden_states=None, return_dict=None, **kwargs):
        r"""
        labels: (B,) class ids (cross-entropy), floats for regression (`num_labels == 1`) or (B, num_labels)
            multi-label targets, as `config.problem_type` says or HF infers.
        """
        output_attentions, output_hidden_states = self._output_flags(output_attentions, output_hidden_states)
        sequence_output, _, hidden, attentions = self.vit._forward(pixel_values, None, interpolate_pos_encoding,
                                                                   attention_mask, output_attentions,
                                                                   output_hidden_states)
        pooled_output = sequence_output[:, 0, :]
        logits = self.classifier(pooled_output) if self.classifier is not None else pooled_output
        loss = sequence_classification_loss(labels, logits, self.config) if labels is not None else None
        fields = {"loss": loss, "logits": logits, "hidden_states": hidden, "attentions": attentions}
        return model_output(ImageClassifierOutput, fields, return_dict is not False)


__all__ = ["ViTModel", "ViTForImageClassification", "ViTPreTrainedModel"]
