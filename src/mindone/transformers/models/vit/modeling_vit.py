"""ViT on MindSpore: HF's `modeling_vit.py` names, checkpoint keys and outputs; device concerns live in `backend`.

Parameter names are the checkpoint keys (`vit.encoder.layer.N.attention.attention.query.weight`, ...), which is the
format transformers 5 still writes even though its own modules were renamed.
"""

import collections.abc

import mindspore as ms
from mindspore import nn, ops
from mindspore.common.initializer import TruncatedNormal
from transformers import ViTConfig

from ...backend import functional as F
from ...backend.layers import Conv2d, Dropout, LayerNorm, Linear, new_parameter
from ...loss_utils import sequence_classification_loss
from ...modeling_layers import GradientCheckpointingLayer
from ...modeling_outputs import BaseModelOutputWithPooling, ImageClassifierOutput, model_output
from ...modeling_utils import PreTrainedModel, init_parameter


def _pair(x):
    return tuple(x) if isinstance(x, collections.abc.Iterable) else (x, x)


class ViTPatchEmbeddings(nn.Cell):
    """(B, C, H, W) pixels -> (B, num_patches, hidden) with one strided convolution."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.image_size = _pair(config.image_size)
        self.patch_size = _pair(config.patch_size)
        self.num_channels = config.num_channels
        self.num_patches = (self.image_size[1] // self.patch_size[1]) * (self.image_size[0] // self.patch_size[0])
        self.projection = Conv2d(config.num_channels, config.hidden_size, kernel_size=self.patch_size,
                                 stride=self.patch_size)

    def construct(self, pixel_values):
        if pixel_values.shape[1] != self.num_channels:
            raise ValueError("Make sure that the channel dimension of the pixel values match with the one set in the "
                             f"configuration. Expected {self.num_channels} but got {pixel_values.shape[1]}.")
        embeddings = self.projection(pixel_values)
        return embeddings.reshape(embeddings.shape[0], embeddings.shape[1], -1).swapaxes(1, 2)


class ViTEmbeddings(nn.Cell):
    """Class token + patch embeddings (optionally some replaced by the mask token) + position embeddings."""

    def __init__(self, config: ViTConfig, use_mask_token=False):
        super().__init__()
        self.config = config
        self.cls_token = new_parameter((1, 1, config.hidden_size), TruncatedNormal(config.initializer_range))
        self.mask_token = new_parameter((1, 1, config.hidden_size)) if use_mask_token else None
        self.patch_embeddings = ViTPatchEmbeddings(config)
        num_patches = self.patch_embeddings.num_patches
        self.position_embeddings = new_parameter((1, num_patches + 1, config.hidden_size),
                                                 TruncatedNormal(config.initializer_range))
        self.dropout = Dropout(config.hidden_dropout_prob)
        self.patch_size = config.patch_size
        self.image_size = self.patch_embeddings.image_size

    def interpolate_pos_encoding(self, embeddings, height, width):
        """Position table resized (bicubic, as HF) to a `height` x `width` image's patch grid; the class token's
        entry is kept."""
        num_patches = embeddings.shape[1] - 1
        num_positions = self.position_embeddings.shape[1] - 1
        if num_patches == num_positions and height == width:
            return self.position_embeddings
        class_pos_embed = self.position_embeddings[:, :1]
        patch_pos_embed = self.position_embeddings[:, 1:]
        dim = embeddings.shape[-1]
        side = int(num_positions ** 0.5)
        patch_pos_embed = patch_pos_embed.reshape(1, side, side, dim).permute(0, 3, 1, 2)
        patch_pos_embed = F.interpolate(patch_pos_embed, (height // self.patch_size, width // self.patch_size),
                                        mode="bicubic", align_corners=False)
        patch_pos_embed = patch_pos_embed.permute(0, 2, 3, 1).reshape(1, -1, dim)
        return F.cat([class_pos_embed, patch_pos_embed], 1)

    def construct(self, pixel_values, bool_masked_pos=None, interpolate_pos_encoding=False):
        batch_size, _, height, width = pixel_values.shape
        embeddings = self.patch_embeddings(pixel_values)
        if bool_masked_pos is not None:
            mask = bool_masked_pos.reshape(batch_size, -1, 1).astype(embeddings.dtype)
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


class ViTSelfAttention(nn.Cell):
    def __init__(self, config: ViTConfig):
        super().__init__()
        if config.hidden_size % config.num_attention_heads != 0:
            raise ValueError(f"The hidden size {config.hidden_size} is not a multiple of the number of attention "
                             f"heads {config.num_attention_heads}.")
        self.num_attention_heads = config.num_attention_heads
        self.attention_head_size = config.hidden_size // config.num_attention_heads
        self.all_head_size = self.num_attention_heads * self.attention_head_size
        self.dropout_prob = config.attention_probs_dropout_prob
        self.scaling = self.attention_head_size ** -0.5
        self.query = Linear(config.hidden_size, self.all_head_size, bias=config.qkv_bias)
        self.key = Linear(config.hidden_size, self.all_head_size, bias=config.qkv_bias)
        self.value = Linear(config.hidden_size, self.all_head_size, bias=config.qkv_bias)

    def construct(self, hidden_states):
        batch, seq_len = hidden_states.shape[:2]

        def heads(x):
            return x.reshape(batch, seq_len, -1, self.attention_head_size).swapaxes(1, 2)

        context, probs = F.attention(heads(self.query(hidden_states)), heads(self.key(hidden_states)),
                                     heads(self.value(hidden_states)), scale=self.scaling,
                                     dropout_p=self.dropout_prob if self.training else 0.0, training=self.training)
        return context.swapaxes(1, 2).reshape(batch, seq_len, self.all_head_size), probs


class ViTSelfOutput(nn.Cell):
    """The attention output projection; the residual is added in ViTLayer (pre-norm)."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def construct(self, hidden_states):
        return self.dropout(self.dense(hidden_states))


class ViTAttention(nn.Cell):
    def __init__(self, config: ViTConfig):
        super().__init__()
        self.attention = ViTSelfAttention(config)
        self.output = ViTSelfOutput(config)

    def construct(self, hidden_states):
        context, probs = self.attention(hidden_states)
        return self.output(context), probs


class ViTIntermediate(nn.Cell):
    def __init__(self, config: ViTConfig):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.intermediate_size)
        self.intermediate_act_fn = F.get_activation(config.hidden_act)

    def construct(self, hidden_states):
        return self.intermediate_act_fn(self.dense(hidden_states))


class ViTOutput(nn.Cell):
    def __init__(self, config: ViTConfig):
        super().__init__()
        self.dense = Linear(config.intermediate_size, config.hidden_size)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def construct(self, hidden_states, input_tensor):
        return self.dropout(self.dense(hidden_states)) + input_tensor


class ViTLayer(GradientCheckpointingLayer):
    """Pre-norm block: x + attention(layernorm_before(x)), then + MLP(layernorm_after(.))."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.attention = ViTAttention(config)
        self.intermediate = ViTIntermediate(config)
        self.output = ViTOutput(config)
        self.layernorm_before = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.layernorm_after = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def construct(self, hidden_states):
        attention_output, probs = self.attention(self.layernorm_before(hidden_states))
        hidden_states = attention_output + hidden_states
        layer_output = self.output(self.intermediate(self.layernorm_after(hidden_states)), hidden_states)
        return layer_output, probs


class ViTEncoder(nn.Cell):
    """Returns (last, hidden_states or None, attentions or None); hidden_states holds the embeddings and every
    layer's output (the last one before the final layernorm), as HF."""

    def __init__(self, config: ViTConfig):
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


class ViTPooler(nn.Cell):
    """dense + activation on the class token."""

    def __init__(self, config: ViTConfig):
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

    def _output_flags(self, output_attentions, output_hidden_states):
        config = self.config
        return (output_attentions if output_attentions is not None else config.output_attentions,
                output_hidden_states if output_hidden_states is not None else config.output_hidden_states)

    def _init_weights(self, cell):
        """HF's scheme: truncated normal for the class token and position table, zero mask token."""
        super()._init_weights(cell)
        if isinstance(cell, ViTEmbeddings):
            init_parameter(cell.position_embeddings, TruncatedNormal(self.config.initializer_range))
            init_parameter(cell.cls_token, TruncatedNormal(self.config.initializer_range))
            if cell.mask_token is not None:
                init_parameter(cell.mask_token, "zeros")


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

    def construct(self, pixel_values=None, bool_masked_pos=None, output_attentions=None, output_hidden_states=None,
                  interpolate_pos_encoding=None, return_dict=None, **kwargs):
        r"""
        Args:
            pixel_values: (B, C, H, W), e.g. from `ViTImageProcessor(..., return_tensors="np")`.
            bool_masked_pos: (B, num_patches) patches replaced by the mask token (needs `use_mask_token=True`).
            interpolate_pos_encoding: resize the position table for images of another size.
        """
        if pixel_values is None:
            raise ValueError("You have to specify pixel_values")
        output_attentions, output_hidden_states = self._output_flags(output_attentions, output_hidden_states)
        sequence_output, pooled_output, all_hidden_states, all_attentions = self._forward(
            pixel_values, bool_masked_pos, output_attentions, output_hidden_states, interpolate_pos_encoding)
        fields = {"last_hidden_state": sequence_output, "pooler_output": pooled_output,
                  "hidden_states": all_hidden_states, "attentions": all_attentions}
        return model_output(BaseModelOutputWithPooling, fields, return_dict is not False)

    def _forward(self, pixel_values, bool_masked_pos, output_attentions, output_hidden_states,
                 interpolate_pos_encoding):
        """(sequence_output, pooled or None, hidden_states, attentions) as plain tuples for the heads."""
        pixel_values = pixel_values.astype(self.embeddings.patch_embeddings.projection.weight.dtype)
        embedding_output = self.embeddings(pixel_values, bool_masked_pos=bool_masked_pos,
                                           interpolate_pos_encoding=bool(interpolate_pos_encoding))
        hidden_states, all_hidden_states, all_attentions = self.encoder(embedding_output, output_attentions,
                                                                        output_hidden_states)
        sequence_output = self.layernorm(hidden_states)
        pooled_output = self.pooler(sequence_output) if self.pooler is not None else None
        return sequence_output, pooled_output, all_hidden_states, all_attentions


class ViTForImageClassification(ViTPreTrainedModel):
    """Linear classifier on the final class token (no pooler)."""

    def __init__(self, config: ViTConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.vit = ViTModel(config, add_pooling_layer=False)
        self.classifier = Linear(config.hidden_size, config.num_labels) if config.num_labels > 0 else None
        self.post_init()

    def construct(self, pixel_values=None, labels=None, output_attentions=None, output_hidden_states=None,
                  interpolate_pos_encoding=None, return_dict=None, **kwargs):
        if pixel_values is None:
            raise ValueError("You have to specify pixel_values")
        output_attentions, output_hidden_states = self._output_flags(output_attentions, output_hidden_states)
        sequence_output, _, all_hidden_states, all_attentions = self.vit._forward(
            pixel_values, None, output_attentions, output_hidden_states, interpolate_pos_encoding)
        pooled_output = sequence_output[:, 0, :]
        logits = self.classifier(pooled_output) if self.classifier is not None else pooled_output
        loss = sequence_classification_loss(labels, logits, self.config) if labels is not None else None
        fields = {"loss": loss, "logits": logits, "hidden_states": all_hidden_states, "attentions": all_attentions}
        return model_output(ImageClassifierOutput, fields, return_dict is not False)


__all__ = ["ViTForImageClassification", "ViTModel", "ViTPreTrainedModel"]
