"""DINOv2 on MindSpore: HF's `modeling_dinov2.py` names, checkpoint keys and outputs; device concerns live in
`backend`.

Parameter names are the checkpoint keys (`encoder.layer.N.attention.attention.query`, the SwiGLU FFN's fused
`mlp.weights_in` / `mlp.weights_out`), the format transformers 5 still reads and writes.
"""

import collections.abc

import mindspore as ms
from mindspore import nn, ops
from mindspore.common.initializer import TruncatedNormal
from transformers import Dinov2Config

from ...backend import functional as F
from ...backend.layers import Conv2d, Dropout, LayerNorm, Linear, new_parameter
from ...loss_utils import sequence_classification_loss
from ...modeling_layers import GradientCheckpointingLayer
from ...modeling_outputs import BaseModelOutputWithPooling, ImageClassifierOutput, model_output
from ...modeling_utils import PreTrainedModel, init_parameter


def _pair(x):
    return tuple(x) if isinstance(x, collections.abc.Iterable) else (x, x)


class Dinov2PatchEmbeddings(nn.Cell):
    """(B, C, H, W) pixels -> (B, num_patches, hidden) with one strided convolution."""

    def __init__(self, config: Dinov2Config):
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


class Dinov2Embeddings(nn.Cell):
    """Class token + patch embeddings (optionally some replaced by the mask token) + position embeddings, resized
    to the image's patch grid whenever it differs from the pre-training one (DINOv2 always does)."""

    def __init__(self, config: Dinov2Config):
        super().__init__()
        self.config = config
        self.cls_token = new_parameter((1, 1, config.hidden_size))
        self.mask_token = new_parameter((1, config.hidden_size)) if config.use_mask_token else None
        self.patch_embeddings = Dinov2PatchEmbeddings(config)
        self.position_embeddings = new_parameter((1, self.patch_embeddings.num_patches + 1, config.hidden_size),
                                                 TruncatedNormal(config.initializer_range))
        self.dropout = Dropout(config.hidden_dropout_prob)

    def interpolate_pos_encoding(self, embeddings, height, width):
        num_patches = embeddings.shape[1] - 1
        num_positions = self.position_embeddings.shape[1] - 1
        if num_patches == num_positions and height == width:
            return self.position_embeddings
        class_pos_embed = self.position_embeddings[:, :1]
        patch_pos_embed = self.position_embeddings[:, 1:]
        dim = embeddings.shape[-1]
        patch_height, patch_width = self.patch_embeddings.patch_size
        side = int(num_positions ** 0.5)
        target_dtype = patch_pos_embed.dtype
        patch_pos_embed = patch_pos_embed.reshape(1, side, side, dim).permute(0, 3, 1, 2)
        # resampled in float32, as HF: bicubic weights in half precision shift the table
        patch_pos_embed = F.interpolate(patch_pos_embed.astype(ms.float32), (height // patch_height,
                                                                             width // patch_width),
                                        mode="bicubic", align_corners=False).astype(target_dtype)
        patch_pos_embed = patch_pos_embed.permute(0, 2, 3, 1).reshape(1, -1, dim)
        return F.cat([class_pos_embed, patch_pos_embed], 1)

    def construct(self, pixel_values, bool_masked_pos=None):
        batch_size, _, height, width = pixel_values.shape
        embeddings = self.patch_embeddings(pixel_values.astype(self.patch_embeddings.projection.weight.dtype))
        if bool_masked_pos is not None:
            mask = bool_masked_pos.reshape(batch_size, -1, 1).astype(embeddings.dtype)
            embeddings = embeddings * (1.0 - mask) + self.mask_token.astype(embeddings.dtype)[None] * mask
        cls_tokens = ops.broadcast_to(self.cls_token, (batch_size, 1, embeddings.shape[-1]))
        embeddings = F.cat([cls_tokens.astype(embeddings.dtype), embeddings], 1)
        embeddings = embeddings + self.interpolate_pos_encoding(embeddings, height, width)
        return self.dropout(embeddings)


class Dinov2SelfAttention(nn.Cell):
    def __init__(self, config: Dinov2Config):
        super().__init__()
        if config.hidden_size % config.num_attention_heads != 0:
            raise ValueError(f"The hidden size {config.hidden_size} is not a multiple of the number of attention "
                             f"heads {config.num_attention_heads}.")
        self.attention_head_size = config.hidden_size // config.num_attention_heads
        self.all_head_size = config.num_attention_heads * self.attention_head_size
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


class Dinov2SelfOutput(nn.Cell):
    def __init__(self, config: Dinov2Config):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def construct(self, hidden_states):
        return self.dropout(self.dense(hidden_states))


class Dinov2Attention(nn.Cell):
    def __init__(self, config: Dinov2Config):
        super().__init__()
        self.attention = Dinov2SelfAttention(config)
        self.output = Dinov2SelfOutput(config)

    def construct(self, hidden_states):
        context, probs = self.attention(hidden_states)
        return self.output(context), probs


class Dinov2LayerScale(nn.Cell):
    """Per-channel learned scale of a residual branch."""

    def __init__(self, config: Dinov2Config):
        super().__init__()
        self.lambda1 = new_parameter((config.hidden_size,), float(config.layerscale_value))

    def construct(self, hidden_state):
        return hidden_state * self.lambda1


class Dinov2MLP(nn.Cell):
    def __init__(self, config: Dinov2Config):
        super().__init__()
        hidden_features = int(config.hidden_size * config.mlp_ratio)
        self.fc1 = Linear(config.hidden_size, hidden_features)
        self.activation = F.get_activation(config.hidden_act)
        self.fc2 = Linear(hidden_features, config.hidden_size)

    def construct(self, hidden_state):
        return self.fc2(self.activation(self.fc1(hidden_state)))


class Dinov2SwiGLUFFN(nn.Cell):
    """silu(gate) * up with gate and up fused in `weights_in` (gate first), then `weights_out`."""

    def __init__(self, config: Dinov2Config):
        super().__init__()
        hidden_features = int(config.hidden_size * config.mlp_ratio)
        # two thirds of the MLP width, rounded up to a multiple of 8
        hidden_features = (int(hidden_features * 2 / 3) + 7) // 8 * 8
        self.weights_in = Linear(config.hidden_size, 2 * hidden_features)
        self.weights_out = Linear(hidden_features, config.hidden_size)
        self.silu = F.get_activation("silu")

    def construct(self, hidden_state):
        gate, up = ops.chunk(self.weights_in(hidden_state), 2, -1)
        return self.weights_out(self.silu(gate) * up)


class Dinov2Layer(GradientCheckpointingLayer):
    """Pre-norm block with layer-scaled residual branches (drop path is identity at inference and not
    implemented for training)."""

    def __init__(self, config: Dinov2Config):
        super().__init__()
        if config.drop_path_rate > 0.0:
            raise NotImplementedError("Dinov2 drop_path_rate > 0 (stochastic depth) is not implemented")
        self.norm1 = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = Dinov2Attention(config)
        self.layer_scale1 = Dinov2LayerScale(config)
        self.norm2 = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = Dinov2SwiGLUFFN(config) if config.use_swiglu_ffn else Dinov2MLP(config)
        self.layer_scale2 = Dinov2LayerScale(config)

    def construct(self, hidden_states):
        attention_output, probs = self.attention(self.norm1(hidden_states))
        hidden_states = self.layer_scale1(attention_output) + hidden_states
        hidden_states = self.layer_scale2(self.mlp(self.norm2(hidden_states))) + hidden_states
        return hidden_states, probs


class Dinov2Encoder(nn.Cell):
    """Returns (last, hidden_states or None, attentions or None); hidden_states holds the embeddings and every
    layer's output (the last one before the final layernorm), as HF."""

    def __init__(self, config: Dinov2Config):
        super().__init__()
        self.layer = nn.CellList([Dinov2Layer(config) for _ in range(config.num_hidden_layers)])

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


class Dinov2PreTrainedModel(PreTrainedModel):
    config_class = Dinov2Config
    base_model_prefix = "dinov2"
    main_input_name = "pixel_values"
    supports_gradient_checkpointing = True
    _no_split_modules = ["Dinov2Layer"]

    def _output_flags(self, output_attentions, output_hidden_states):
        config = self.config
        return (output_attentions if output_attentions is not None else config.output_attentions,
                output_hidden_states if output_hidden_states is not None else config.output_hidden_states)

    def _init_weights(self, cell):
        """HF's scheme: truncated normal linears/convs, position table and class token; zero mask token; layer
        scales at `layerscale_value`."""
        super()._init_weights(cell)
        std = self.config.initializer_range
        if isinstance(cell, (Linear, Conv2d)):
            init_parameter(cell.weight, TruncatedNormal(std))
        elif isinstance(cell, Dinov2Embeddings):
            init_parameter(cell.position_embeddings, TruncatedNormal(std))
            init_parameter(cell.cls_token, TruncatedNormal(std))
            if cell.mask_token is not None:
                init_parameter(cell.mask_token, "zeros")
        elif isinstance(cell, Dinov2LayerScale):
            init_parameter(cell.lambda1, float(self.config.layerscale_value))


class Dinov2Model(Dinov2PreTrainedModel):
    def __init__(self, config: Dinov2Config):
        super().__init__(config)
        self.embeddings = Dinov2Embeddings(config)
        self.encoder = Dinov2Encoder(config)
        self.layernorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.patch_embeddings

    def construct(self, pixel_values=None, bool_masked_pos=None, output_attentions=None, output_hidden_states=None,
                  return_dict=None, **kwargs):
        r"""
        Args:
            pixel_values: (B, C, H, W), e.g. from `BitImageProcessor(..., return_tensors="np")`; any size that is a
                multiple of the patch size (the position table is resized).
            bool_masked_pos: (B, num_patches) patches replaced by the mask token.
        pooler_output is the final class token (after the layernorm).
        """
        if pixel_values is None:
            raise ValueError("You have to specify pixel_values")
        output_attentions, output_hidden_states = self._output_flags(output_attentions, output_hidden_states)
        sequence_output, all_hidden_states, all_attentions = self._forward(
            pixel_values, bool_masked_pos, output_attentions, output_hidden_states)
        fields = {"last_hidden_state": sequence_output, "pooler_output": sequence_output[:, 0, :],
                  "hidden_states": all_hidden_states, "attentions": all_attentions}
        return model_output(BaseModelOutputWithPooling, fields, return_dict is not False)

    def _forward(self, pixel_values, bool_masked_pos, output_attentions, output_hidden_states):
        embedding_output = self.embeddings(pixel_values, bool_masked_pos=bool_masked_pos)
        hidden_states, all_hidden_states, all_attentions = self.encoder(embedding_output, output_attentions,
                                                                        output_hidden_states)
        return self.layernorm(hidden_states), all_hidden_states, all_attentions


class Dinov2ForImageClassification(Dinov2PreTrainedModel):
    """Linear classifier on [class token, mean of the patch tokens]."""

    def __init__(self, config: Dinov2Config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.dinov2 = Dinov2Model(config)
        self.classifier = Linear(config.hidden_size * 2, config.num_labels) if config.num_labels > 0 else None
        self.post_init()

    def construct(self, pixel_values=None, labels=None, output_attentions=None, output_hidden_states=None,
                  return_dict=None, **kwargs):
        if pixel_values is None:
            raise ValueError("You have to specify pixel_values")
        output_attentions, output_hidden_states = self._output_flags(output_attentions, output_hidden_states)
        sequence_output, all_hidden_states, all_attentions = self.dinov2._forward(
            pixel_values, None, output_attentions, output_hidden_states)
        linear_input = F.cat([sequence_output[:, 0], sequence_output[:, 1:].mean(1)], 1)
        logits = self.classifier(linear_input) if self.classifier is not None else linear_input
        loss = sequence_classification_loss(labels, logits, self.config) if labels is not None else None
        fields = {"loss": loss, "logits": logits, "hidden_states": all_hidden_states, "attentions": all_attentions}
        return model_output(ImageClassifierOutput, fields, return_dict is not False)


__all__ = ["Dinov2ForImageClassification", "Dinov2Model", "Dinov2PreTrainedModel"]
