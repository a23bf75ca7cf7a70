"""DINOv2 on MindSpore: HF's `modeling_dinov2.py` (transformers 5) structure, names and outputs.

A ViT with layer scale on both residual branches, an optional SwiGLU MLP, and position embeddings that are resized
(bicubic, in fp32) whenever the patch grid differs from the trained one. The classifier reads the class token
concatenated with the mean of the patch tokens.
"""

import mindspore as ms
from mindspore import nn, ops
from mindspore.common.initializer import TruncatedNormal, Zero
from transformers import Dinov2Config

from ...backend import functional as F
from ...backend.layers import Conv2d, Dropout, LayerNorm, Linear, new_parameter
from ...loss_utils import sequence_classification_loss
from ...modeling_layers import GradientCheckpointingLayer
from ...modeling_outputs import BaseModelOutputWithPooling, ImageClassifierOutput, model_output
from ...modeling_utils import PreTrainedModel, init_parameter


def _pair(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x, x)


class Dinov2PatchEmbeddings(nn.Cell):
    def __init__(self, config):
        super().__init__()
        image_size, self.patch_size = _pair(config.image_size), _pair(config.patch_size)
        self.num_channels = config.num_channels
        self.num_patches = (image_size[0] // self.patch_size[0]) * (image_size[1] // self.patch_size[1])
        self.projection = Conv2d(config.num_channels, config.hidden_size, kernel_size=self.patch_size,
                                 stride=self.patch_size)

    def construct(self, pixel_values):
        if pixel_values.shape[1] != self.num_channels:
            raise ValueError("Make sure that the channel dimension of the pixel values match with the one set in the "
                             f"configuration. Expected {self.num_channels} but got {pixel_values.shape[1]}.")
        embeddings = self.projection(pixel_values.astype(self.projection.weight.dtype))
        return embeddings.reshape(embeddings.shape[0], embeddings.shape[1], -1).swapaxes(1, 2)


class Dinov2Embeddings(nn.Cell):
    """Class token, mask token, patch embeddings and (interpolated) position embeddings."""

    def __init__(self, config):
        super().__init__()
        std = config.initializer_range
        self.cls_token = new_parameter((1, 1, config.hidden_size), TruncatedNormal(std))
        self.mask_token = new_parameter((1, config.hidden_size)) if config.use_mask_token else None
        self.patch_embeddings = Dinov2PatchEmbeddings(config)
        self.patch_size = self.patch_embeddings.patch_size
        self.position_embeddings = new_parameter((1, self.patch_embeddings.num_patches + 1, config.hidden_size),
                                                 TruncatedNormal(std))
        self.dropout = Dropout(config.hidden_dropout_prob)

    def interpolate_pos_encoding(self, embeddings, height, width):
        """The position table for a `height` x `width` image: resized with bicubic interpolation in fp32
        (half-precision resampling shifts the embeddings); the class token's entry is kept."""
        if embeddings.shape[1] == self.position_embeddings.shape[1] and height == width:
            return self.position_embeddings
        table = self.position_embeddings
        num_positions = table.shape[1] - 1
        dim = table.shape[-1]
        side = int(num_positions ** 0.5)
        patch_pos = table[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2)
        patch_pos = F.interpolate(patch_pos.astype(ms.float32),
                                  (height // self.patch_size[0], width // self.patch_size[1]),
                                  mode="bicubic", align_corners=False).astype(table.dtype)
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, -1, dim)
        return F.cat([table[:, :1], patch_pos], 1)

    def construct(self, pixel_values, bool_masked_pos=None):
        batch_size, _, height, width = pixel_values.shape
        embeddings = self.patch_embeddings(pixel_values)
        if bool_masked_pos is not None:
            mask = bool_masked_pos[..., None].astype(embeddings.dtype)
            embeddings = embeddings * (1 - mask) + self.mask_token.astype(embeddings.dtype)[None] * mask
        cls_tokens = ops.broadcast_to(self.cls_token, (batch_size, 1, embeddings.shape[-1]))
        embeddings = F.cat([cls_tokens.astype(embeddings.dtype), embeddings], 1)
        embeddings = embeddings + self.interpolate_pos_encoding(embeddings, height, width)
        return self.dropout(embeddings)


class _Dinov2QKV(nn.Cell):
    def __init__(self, hidden_size, inner, bias):
        super().__init__()
        self.query = Linear(hidden_size, inner, bias=bias)
        self.key = Linear(hidden_size, inner, bias=bias)
        self.value = Linear(hidden_size, inner, bias=bias)


class _Dinov2Dense(nn.Cell):
    def __init__(self, in_features, out_features):
        super().__init__()
        self.dense = Linear(in_features, out_features)

    def construct(self, x):
        return self.dense(x)


class Dinov2Attention(nn.Cell):
    def __init__(self, config):
        super().__init__()
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.attention_dropout = config.attention_probs_dropout_prob
        self.scaling = self.head_dim ** -0.5
        inner = config.num_attention_heads * self.head_dim
        # the names of the saved checkpoints (HF 5 renames them to q/k/v/o_proj on load)
        self.attention = _Dinov2QKV(config.hidden_size, inner, config.qkv_bias)
        self.output = _Dinov2Dense(inner, config.hidden_size)

    def construct(self, hidden_states, attention_mask=None):
        batch, seq_len = hidden_states.shape[:2]
        query = self.attention.query(hidden_states).reshape(batch, seq_len, -1, self.head_dim).swapaxes(1, 2)
        key = self.attention.key(hidden_states).reshape(batch, seq_len, -1, self.head_dim).swapaxes(1, 2)
        value = self.attention.value(hidden_states).reshape(batch, seq_len, -1, self.head_dim).swapaxes(1, 2)
        attn_output, attn_weights = F.attention(query, key, value, attn_mask=attention_mask, scale=self.scaling,
                                                dropout_p=self.attention_dropout if self.training else 0.0,
                                                training=self.training)
        return self.output.dense(attn_output.swapaxes(1, 2).reshape(batch, seq_len, -1)), attn_weights


class Dinov2LayerScale(nn.Cell):
    def __init__(self, config):
        super().__init__()
        self.lambda1 = new_parameter((config.hidden_size,), float(config.layerscale_value))

    def construct(self, hidden_state):
        return hidden_state * self.lambda1


class Dinov2MLP(nn.Cell):
    def __init__(self, config):
        super().__init__()
        hidden_features = int(config.hidden_size * config.mlp_ratio)
        self.activation_fn = F.get_activation(config.hidden_act)
        self.fc1 = Linear(config.hidden_size, hidden_features)
        self.fc2 = Linear(hidden_features, config.hidden_size)

    def construct(self, hidden_states):
        return self.fc2(self.activation_fn(self.fc1(hidden_states)))


class Dinov2SwiGLUFFN(nn.Cell):
    def __init__(self, config):
        super().__init__()
        hidden_features = int(config.hidden_size * config.mlp_ratio)
        # two thirds of the MLP width, rounded up to a multiple of 8 (the original DINOv2 rule)
        hidden_features = (int(hidden_features * 2 / 3) + 7) // 8 * 8
        self.hidden_features = hidden_features
        # the saved checkpoints' fused [gate; up] projection (HF 5 splits it into gate_proj/up_proj on load)
        self.weights_in = Linear(config.hidden_size, 2 * hidden_features)
        self.weights_out = Linear(hidden_features, config.hidden_size)

    def construct(self, x):
        fused = self.weights_in(x)
        gate, up = fused[..., :self.hidden_features], fused[..., self.hidden_features:]
        return self.weights_out(F.silu(gate) * up)


class Dinov2DropPath(nn.Cell):
    """Stochastic depth per sample; identity outside training."""

    def __init__(self, drop_prob=0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def construct(self, hidden_states):
        if self.drop_prob == 0.0 or not self.training:
            return hidden_states
        keep_prob = 1 - self.drop_prob
        shape = (hidden_states.shape[0],) + (1,) * (hidden_states.ndim - 1)
        random_tensor = ops.floor(ops.rand(shape, dtype=hidden_states.dtype) + keep_prob)
        return hidden_states / keep_prob * random_tensor


class Dinov2Layer(GradientCheckpointingLayer):
    def __init__(self, config):
        super().__init__()
        self.norm1 = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = Dinov2Attention(config)
        self.layer_scale1 = Dinov2LayerScale(config)
        self.drop_path = Dinov2DropPath(config.drop_path_rate)
        self.norm2 = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = Dinov2SwiGLUFFN(config) if config.use_swiglu_ffn else Dinov2MLP(config)
        self.layer_scale2 = Dinov2LayerScale(config)

    def construct(self, hidden_states, attention_mask=None):
        attn_output, attn_weights = self.attention(self.norm1(hidden_states), attention_mask)
        hidden_states = self.drop_path(self.layer_scale1(attn_output)) + hidden_states
        hidden_states = self.drop_path(self.layer_scale2(self.mlp(self.norm2(hidden_states)))) + hidden_states
        return hidden_states, attn_weights


class Dinov2Encoder(nn.Cell):
    def __init__(self, config):
        super().__init__()
        self.layer = nn.CellList([Dinov2Layer(config) for _ in range(config.num_hidden_layers)])

    def construct(self, hidden_states, attention_mask=None, output_attentions=False, output_hidden_states=False):
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer_module in self.layer:
            hidden_states, attn_weights = layer_module(hidden_states, attention_mask)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            if output_attentions:
                all_attentions += (attn_weights,)
        return hidden_states, all_hidden_states, all_attentions


class Dinov2PreTrainedModel(PreTrainedModel):
    config_class = Dinov2Config
    base_model_prefix = "dinov2"
    main_input_name = "pixel_values"
    supports_gradient_checkpointing = True
    _no_split_modules = ["Dinov2Embeddings", "Dinov2Layer"]

    def _init_weights(self, cell):
        super()._init_weights(cell)
        std = self.config.initializer_range
        if isinstance(cell, (Linear, Conv2d)):
            init_parameter(cell.weight, TruncatedNormal(std))
            if cell.bias is not None:
                init_parameter(cell.bias, Zero())
        elif isinstance(cell, Dinov2Embeddings):
            init_parameter(cell.position_embeddings, TruncatedNormal(std))
            init_parameter(cell.cls_token, TruncatedNormal(std))
            if cell.mask_token is not None:
                init_parameter(cell.mask_token, Zero())
        elif isinstance(cell, Dinov2LayerScale):
            init_parameter(cell.lambda1, float(self.config.layerscale_value))

    def _output_flags(self, output_attentions, output_hidden_states):
        config = self.config
        return (output_attentions if output_attentions is not None else config.output_attentions,
                output_hidden_states if output_hidden_states is not None else config.output_hidden_states)


def _additive_key_mask(attention_mask, dtype):
    """(B, S) 1/0 keys to attend to -> additive (B, 1, 1, S)."""
    return (1.0 - attention_mask[:, None, None, :].astype(dtype)) * F.finfo_min(dtype)


class Dinov2Model(Dinov2PreTrainedModel):
    def __init__(self, config: Dinov2Config):
        super().__init__(config)
        self.embeddings = Dinov2Embeddings(config)
        self.encoder = Dinov2Encoder(config)
        self.layernorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.patch_embeddings

    def construct(self, pixel_values=None, bool_masked_pos=None, attention_mask=None, output_attentions=None,
                  output_hidden_states=None, return_dict=None, **kwargs):
        r"""
        Args:
            pixel_values: (B, C, H, W), e.g. from `BitImageProcessor(..., return_tensors="np")`; any size that is a
                multiple of the patch size (the position table is interpolated).
            bool_masked_pos: (B, num_patches) patches replaced by the mask token.
        Returns `last_hidden_state` (after the final LayerNorm), `pooler_output` (its class token), and the
        embeddings + every layer's output when `output_hidden_states`.
        """
        if pixel_values is None:
            raise ValueError("You have to specify pixel_values")
        output_attentions, output_hidden_states = self._output_flags(output_attentions, output_hidden_states)
        last, hidden, attentions = self._forward(pixel_values, bool_masked_pos, attention_mask, output_attentions,
                                                 output_hidden_states)
        fields = {"last_hidden_state": last, "pooler_output": last[:, 0, :], "hidden_states": hidden,
                  "attentions": attentions}
        return model_output(BaseModelOutputWithPooling, fields, return_dict is not False)

    def _forward(self, pixel_values, bool_masked_pos=None, attention_mask=None, output_attentions=False,
                 output_hidden_states=False):
        embedding_output = self.embeddings(pixel_values, bool_masked_pos=bool_masked_pos)
        if attention_mask is not None:
            attention_mask = _additive_key_mask(attention_mask, embedding_output.dtype)
        hidden_states, all_hidden_states, all_attentions = self.encoder(embedding_output, attention_mask,
                                                                        output_attentions, output_hidden_states)
        return self.layernorm(hidden_states), all_hidden_states, all_attentions


class Dinov2ForImageClassification(Dinov2PreTrainedModel):
    """DINOv2 with a linear classifier on [class token, mean of the patch tokens]."""

    def __init__(self, config: Dinov2Config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.dinov2 = Dinov2Model(config)
        self.classifier = Linear(config.hidden_size * 2, config.num_labels) if config.num_labels > 0 else None
        self.post_init()

    def construct(self, pixel_values=None, labels=None, attention_mask=None, output_attentions=None,
                  output_hidden_states=None, return_dict=None, **kwargs):
        output_attentions, output_hidden_states = self._output_flags(output_attentions, output_hidden_states)
        sequence_output, hidden, attentions = self.dinov2._forward(pixel_values, None, attention_mask,
                                                                   output_attentions, output_hidden_states)
        linear_input = F.cat([sequence_output[:, 0], sequence_output[:, 1:].mean(1)], 1)
        logits = self.classifier(linear_input) if self.classifier is not None else linear_input
        loss = sequence_classification_loss(labels, logits, self.config) if labels is not None else None
        fields = {"loss": loss, "logits": logits, "hidden_states": hidden, "attentions": attentions}
        return model_output(ImageClassifierOutput, fields, return_dict is not False)


__all__ = ["Dinov2Model", "Dinov2ForImageClassification", "Dinov2PreTrainedModel"]
