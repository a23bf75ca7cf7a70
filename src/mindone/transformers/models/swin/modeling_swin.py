"""Swin Transformer on MindSpore: HF's `modeling_swin.py` checkpoint keys, signatures and outputs.

Patch embeddings -> stages of (shifted) window attention blocks, each stage but the last ending in patch merging
(2x2 neighbours concatenated, normalised, projected to twice the channels). Attention runs inside non-overlapping
windows with a learned relative position bias; every second block shifts the windows by half a window (a cyclic roll)
and masks the pairs that the roll brought together from opposite borders. Feature maps whose size is not a multiple
of the window (or of 2 for merging, of the patch size for the pixels) are zero-padded right/bottom, as HF.

Parameter names are the checkpoint keys (`swin.encoder.layers.N.blocks.M.attention.self.query.weight`, ...): the
format transformers 5 still writes although its own modules were renamed.
"""

import collections.abc
import math
from dataclasses import dataclass
from typing import Any, Optional, Tuple

import mindspore as ms
import numpy as np
from mindspore import nn, ops
from mindspore.common.initializer import Zero
from transformers import SwinConfig

from ...backbone_utils import BackboneMixin
from ...backend import functional as F
from ...backend.layers import Conv2d, Dropout, LayerNorm, Linear, new_parameter
from ...loss_utils import sequence_classification_loss
from ...modeling_outputs import BackboneOutput, ModelOutput, model_output
from ...modeling_utils import PreTrainedModel, init_parameter


@dataclass
class SwinModelOutput(ModelOutput):
    last_hidden_state: Any = None
    pooler_output: Any = None
    hidden_states: Optional[Tuple[Any, ...]] = None
    attentions: Optional[Tuple[Any, ...]] = None
    reshaped_hidden_states: Optional[Tuple[Any, ...]] = None


@dataclass
class SwinMaskedImageModelingOutput(ModelOutput):
    loss: Any = None
    reconstruction: Any = None
    hidden_states: Optional[Tuple[Any, ...]] = None
    attentions: Optional[Tuple[Any, ...]] = None
    reshaped_hidden_states: Optional[Tuple[Any, ...]] = None


@dataclass
class SwinImageClassifierOutput(ModelOutput):
    loss: Any = None
    logits: Any = None
    hidden_states: Optional[Tuple[Any, ...]] = None
    attentions: Optional[Tuple[Any, ...]] = None
    reshaped_hidden_states: Optional[Tuple[Any, ...]] = None


def _pair(x):
    return tuple(x) if isinstance(x, collections.abc.Iterable) else (x, x)


def window_partition(input_feature, window_size):
    """(B, H, W, C) -> (B * H/ws * W/ws, ws, ws, C), windows in row-major order within each image."""
    batch_size, height, width, num_channels = input_feature.shape
    windows = input_feature.reshape(batch_size, height // window_size, window_size, width // window_size,
                                    window_size, num_channels)
    return ops.transpose(windows, (0, 1, 3, 2, 4, 5)).reshape(-1, window_size, window_size, num_channels)


def window_reverse(windows, window_size, height, width):
    """Inverse of `window_partition`: (B * nW, ws, ws, C) -> (B, H, W, C)."""
    num_channels = windows.shape[-1]
    windows = windows.reshape(-1, height // window_size, width // window_size, window_size, window_size,
                              num_channels)
    return ops.transpose(windows, (0, 1, 3, 2, 4, 5)).reshape(-1, height, width, num_channels)


@ops.constexpr
def _relative_position_index(window_size):
    """(ws*ws * ws*ws,) index into the ((2ws-1)^2, heads) bias table for every (query, key) pair of a window."""
    coords = np.stack(np.meshgrid(np.arange(window_size), np.arange(window_size), indexing="ij")).reshape(2, -1)
    relative = (coords[:, :, None] - coords[:, None, :]).transpose(1, 2, 0) + (window_size - 1)
    index = relative[:, :, 0] * (2 * window_size - 1) + relative[:, :, 1]
    return ms.Tensor(index.reshape(-1).astype(np.int32))


@ops.constexpr
def _shifted_window_mask(height, width, window_size, shift_size, dtype):
    """(nW, ws*ws, ws*ws) additive mask for shifted windows: -100 between positions that came from different
    regions of the padded map before the cyclic shift (HF's value), 0 elsewhere."""
    def regions(size):
        index = np.arange(size)
        return (index >= size - window_size).astype(np.int64) + (index >= size - shift_size)

    labels = regions(height)[:, None] * 3 + regions(width)[None, :]
    windows = labels.reshape(height // window_size, window_size, width // window_size, window_size)
    windows = windows.transpose(0, 2, 1, 3).reshape(-1, window_size * window_size)
    mask = np.where(windows[:, None, :] != windows[:, :, None], -100.0, 0.0)
    return ms.Tensor(mask, dtype)


class SwinPatchEmbeddings(nn.Cell):
    """(B, C, H, W) pixels, zero-padded to a multiple of the patch size -> ((B, H' * W', hidden), (H', W'))."""

    def __init__(self, config):
        super().__init__()
        image_size, patch_size = _pair(config.image_size), _pair(config.patch_size)
        self.image_size, self.patch_size = image_size, patch_size
        self.num_channels = config.num_channels
        self.num_patches = (image_size[1] // patch_size[1]) * (image_size[0] // patch_size[0])
        self.grid_size = (image_size[0] // patch_size[0], image_size[1] // patch_size[1])
        self.projection = Conv2d(config.num_channels, config.embed_dim, kernel_size=patch_size, stride=patch_size)

    def maybe_pad(self, pixel_values, height, width):
        if width % self.patch_size[1] != 0:
            pixel_values = F.pad(pixel_values, (0, self.patch_size[1] - width % self.patch_size[1]))
        if height % self.patch_size[0] != 0:
            pixel_values = F.pad(pixel_values, (0, 0, 0, self.patch_size[0] - height % self.patch_size[0]))
        return pixel_values

    def construct(self, pixel_values):
        if pixel_values.shape[1] != self.num_channels:
            raise ValueError("Make sure that the channel dimension of the pixel values match with the one set in the "
                             f"configuration. Expected {self.num_channels} but got {pixel_values.shape[1]}.")
        pixel_values = self.maybe_pad(pixel_values, pixel_values.shape[2], pixel_values.shape[3])
        embeddings = self.projection(pixel_values.astype(self.projection.weight.dtype))
        batch_size, channels, height, width = embeddings.shape
        return embeddings.reshape(batch_size, channels, -1).swapaxes(1, 2), (height, width)


class SwinEmbeddings(nn.Cell):
    """Patch embeddings -> LayerNorm -> optional mask token and absolute position embeddings -> dropout."""

    def __init__(self, config, use_mask_token=False):
        super().__init__()
        self.patch_embeddings = SwinPatchEmbeddings(config)
        num_patches = self.patch_embeddings.num_patches
        self.patch_grid = self.patch_embeddings.grid_size
        self.mask_token = new_parameter((1, 1, config.embed_dim)) if use_mask_token else None
        self.position_embeddings = (new_parameter((1, num_patches, config.embed_dim))
                                    if config.use_absolute_embeddings else None)
        self.norm = LayerNorm(config.embed_dim)
        self.dropout = Dropout(config.hidden_dropout_prob)
        self.patch_size = config.patch_size

    def interpolate_pos_encoding(self, embeddings, height, width):
        """The position table resized (bicubic, as HF) to a `height` x `width` image's patch grid."""
        num_patches = embeddings.shape[1]
        num_positions = self.position_embeddings.shape[1]
        if num_patches == num_positions and height == width:
            return self.position_embeddings
        dim = embeddings.shape[-1]
        side = int(num_positions ** 0.5)
        table = self.position_embeddings.reshape(1, side, side, dim).permute(0, 3, 1, 2)
        table = F.interpolate(table, (height // self.patch_size, width // self.patch_size), mode="bicubic",
                              align_corners=False)
        return table.permute(0, 2, 3, 1).reshape(1, -1, dim)

    def construct(self, pixel_values, bool_masked_pos=None, interpolate_pos_encoding=False):
        height, width = pixel_values.shape[2], pixel_values.shape[3]
        embeddings, output_dimensions = self.patch_embeddings(pixel_values)
        embeddings = self.norm(embeddings)
        if bool_masked_pos is not None:
            mask = bool_masked_pos.reshape(bool_masked_pos.shape[0], -1, 1).astype(embeddings.dtype)
            embeddings = embeddings * (1.0 - mask) + self.mask_token.astype(embeddings.dtype) * mask
        if self.position_embeddings is not None:
            if interpolate_pos_encoding:
                embeddings = embeddings + self.interpolate_pos_encoding(embeddings, height, width)
            else:
                embeddings = embeddings + self.position_embeddings
        return self.dropout(embeddings), output_dimensions


class SwinPatchMerging(nn.Cell):
    """(B, H*W, C) -> (B, ceil(H/2) * ceil(W/2), 2C): each 2x2 neighbourhood concatenated, normalised, projected."""

    def __init__(self, dim):
        super().__init__()
        self.reduction = Linear(4 * dim, 2 * dim, bias=False)
        self.norm = LayerNorm(4 * dim)

    def construct(self, input_feature, input_dimensions):
        height, width = input_dimensions
        batch_size, _, num_channels = input_feature.shape
        input_feature = input_feature.reshape(batch_size, height, width, num_channels)
        if height % 2 == 1 or width % 2 == 1:
            input_feature = F.pad(input_feature, (0, 0, 0, width % 2, 0, height % 2))
        # HF concatenates (even row, even col), (odd row, even col), (even row, odd col), (odd row, odd col): a
        # reshape to (B, H/2, row parity, W/2, col parity, C) brought to col-parity-major order (a step-2 slice's
        # gradient, StridedSliceGrad, fails on MindSpore's CPU backend)
        height, width = input_feature.shape[1], input_feature.shape[2]
        input_feature = input_feature.reshape(batch_size, height // 2, 2, width // 2, 2, num_channels)
        input_feature = ops.transpose(input_feature, (0, 1, 3, 4, 2, 5)).reshape(batch_size, -1, 4 * num_channels)
        return self.reduction(self.norm(input_feature))


class SwinDropPath(nn.Cell):
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


class SwinSelfAttention(nn.Cell):
    def __init__(self, config, dim, num_heads, window_size):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"The hidden size ({dim}) is not a multiple of the number of attention heads "
                             f"({num_heads})")
        self.num_attention_heads = num_heads
        self.attention_head_size = dim // num_heads
        self.window_size = window_size
        self.relative_position_bias_table = new_parameter(((2 * window_size - 1) ** 2, num_heads))
        self.query = Linear(dim, dim, bias=config.qkv_bias)
        self.key = Linear(dim, dim, bias=config.qkv_bias)
        self.value = Linear(dim, dim, bias=config.qkv_bias)
        self.dropout_p = config.attention_probs_dropout_prob

    def relative_position_bias(self):
        """(1, heads, ws*ws, ws*ws): the learned bias of every (query, key) offset inside a window."""
        area = self.window_size * self.window_size
        bias = ops.gather(self.relative_position_bias_table, _relative_position_index(self.window_size), 0)
        return ops.transpose(bias.reshape(area, area, -1), (2, 0, 1))[None]

    def construct(self, hidden_states, attention_mask=None):
        """hidden_states (B * nW, N, C); attention_mask (nW, N, N) or None."""
        batch_windows, seq_len, _ = hidden_states.shape
        shape = (batch_windows, seq_len, self.num_attention_heads, self.attention_head_size)
        query = self.query(hidden_states).reshape(shape).swapaxes(1, 2)
        key = self.key(hidden_states).reshape(shape).swapaxes(1, 2)
        value = self.value(hidden_states).reshape(shape).swapaxes(1, 2)
        mask = self.relative_position_bias().astype(query.dtype)
        if attention_mask is not None:
            num_windows = attention_mask.shape[0]
            window_mask = ops.broadcast_to(attention_mask[None, :, None],
                                           (batch_windows // num_windows, num_windows, 1, seq_len, seq_len))
            mask = mask + window_mask.reshape(batch_windows, 1, seq_len, seq_len).astype(query.dtype)
        context, weights = F.attention(query, key, value, mask, dropout_p=self.dropout_p, training=self.training)
        return context.swapaxes(1, 2).reshape(batch_windows, seq_len, -1), weights


class SwinSelfOutput(nn.Cell):
    def __init__(self, config, dim):
        super().__init__()
        self.dense = Linear(dim, dim)
        self.dropout = Dropout(config.attention_probs_dropout_prob)

    def construct(self, hidden_states):
        return self.dropout(self.dense(hidden_states))


class SwinAttention(nn.Cell):
    def __init__(self, config, dim, num_heads, window_size):
        super().__init__()
        self.self = SwinSelfAttention(config, dim, num_heads, window_size)
        self.output = SwinSelfOutput(config, dim)

    def construct(self, hidden_states, attention_mask=None):
        context, weights = self.self(hidden_states, attention_mask)
        return self.output(context), weights


class SwinIntermediate(nn.Cell):
    def __init__(self, config, dim):
        super().__init__()
        self.dense = Linear(dim, int(config.mlp_ratio * dim))
        self.intermediate_act_fn = F.get_activation(config.hidden_act)

    def construct(self, hidden_states):
        return self.intermediate_act_fn(self.dense(hidden_states))


class SwinOutput(nn.Cell):
    def __init__(self, config, dim):
        super().__init__()
        self.dense = Linear(int(config.mlp_ratio * dim), dim)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def construct(self, hidden_states):
        return self.dropout(self.dense(hidden_states))


class SwinLayer(nn.Cell):
    """One (shifted) window attention block: pre-norm window attention and pre-norm MLP, both residual."""

    def __init__(self, config, dim, num_heads, drop_path_rate=0.0, shift_size=0):
        super().__init__()
        self.window_size = config.window_size
        self.shift_size = shift_size
        self.layernorm_before = LayerNorm(dim, eps=config.layer_norm_eps)
        self.attention = SwinAttention(config, dim, num_heads, config.window_size)
        self.drop_path = SwinDropPath(drop_path_rate)
        self.layernorm_after = LayerNorm(dim, eps=config.layer_norm_eps)
        self.intermediate = SwinIntermediate(config, dim)
        self.output = SwinOutput(config, dim)

    def _window_and_shift(self, height, width, always_partition):
        # a map no larger than a window is one unshifted window (HF's set_shift_and_window_size), unless the caller
        # (the backbone) asks to always partition with the configured window
        if not always_partition and min(height, width) <= self.window_size:
            return min(height, width), 0
        return self.window_size, self.shift_size

    def construct(self, hidden_states, input_dimensions, always_partition=False):
        height, width = input_dimensions
        window_size, shift_size = self._window_and_shift(height, width, always_partition)
        batch_size, _, channels = hidden_states.shape
        shortcut = hidden_states
        hidden_states = self.layernorm_before(hidden_states).reshape(batch_size, height, width, channels)
        pad_right = (window_size - width % window_size) % window_size
        pad_bottom = (window_size - height % window_size) % window_size
        if pad_right or pad_bottom:
            hidden_states = F.pad(hidden_states, (0, 0, 0, pad_right, 0, pad_bottom))
        height_pad, width_pad = height + pad_bottom, width + pad_right
        attn_mask = None
        if shift_size > 0:
            hidden_states = F.roll(hidden_states, (-shift_size, -shift_size), (1, 2))
            attn_mask = _shifted_window_mask(height_pad, width_pad, window_size, shift_size, hidden_states.dtype)
        windows = window_partition(hidden_states, window_size).reshape(-1, window_size * window_size, channels)
        attention_output, attention_weights = self.attention(windows, attn_mask)
        attention_windows = attention_output.reshape(-1, window_size, window_size, channels)
        hidden_states = window_reverse(attention_windows, window_size, height_pad, width_pad)
        if shift_size > 0:
            hidden_states = F.roll(hidden_states, (shift_size, shift_size), (1, 2))
        if pad_right or pad_bottom:
            hidden_states = hidden_states[:, :height, :width, :]
        hidden_states = shortcut + self.drop_path(hidden_states.reshape(batch_size, height * width, channels))
        layer_output = self.output(self.intermediate(self.layernorm_after(hidden_states)))
        return hidden_states + layer_output, attention_weights


class SwinStage(nn.Cell):
    def __init__(self, config, dim, depth, num_heads, drop_path, downsample):
        super().__init__()
        self.blocks = nn.CellList([
            SwinLayer(config, dim, num_heads, drop_path_rate=drop_path[i],
                      shift_size=0 if i % 2 == 0 else config.window_size // 2)
            for i in range(depth)
        ])
        self.downsample = SwinPatchMerging(dim) if downsample else None

    def construct(self, hidden_states, input_dimensions, always_partition=False):
        """Returns (output, output before downsampling, the last block's attention weights)."""
        attention_weights = None
        for block in self.blocks:
            hidden_states, attention_weights = block(hidden_states, input_dimensions, always_partition)
        before_downsampling = hidden_states
        if self.downsample is not None:
            hidden_states = self.downsample(before_downsampling, input_dimensions)
        return hidden_states, before_downsampling, attention_weights


def _spatial(hidden_states, height, width):
    """(B, H*W, C) -> (B, C, H, W)."""
    batch_size, _, channels = hidden_states.shape
    return hidden_states.reshape(batch_size, height, width, channels).permute(0, 3, 1, 2)


class SwinEncoder(nn.Cell):
    def __init__(self, config, grid_size):
        super().__init__()
        self.num_layers = len(config.depths)
        total = sum(config.depths)
        rates = [config.drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        self.layers = nn.CellList([
            SwinStage(config, int(config.embed_dim * 2 ** i), config.depths[i], config.num_heads[i],
                      rates[sum(config.depths[:i]):sum(config.depths[:i + 1])], downsample=i < self.num_layers - 1)
            for i in range(self.num_layers)
        ])

    def construct(self, hidden_states, input_dimensions, always_partition=False, output_hidden_states=False,
                  output_attentions=False, output_hidden_states_before_downsampling=False):
        """Returns (last hidden state, hidden states, attentions, reshaped hidden states), HF 5's conventions:
        hidden states are the embeddings and every stage's (downsampled) output, (B, L, C); the reshaped ones the
        same as (B, C, H, W) maps, or each stage's map before downsampling; attentions the last block's of each
        stage."""
        all_hidden = (hidden_states,) if output_hidden_states else None
        all_reshaped = (_spatial(hidden_states, *input_dimensions),) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for i, stage in enumerate(self.layers):
            height, width = input_dimensions
            hidden_states, before, weights = stage(hidden_states, input_dimensions, always_partition)
            if i < self.num_layers - 1:  # the stage ended in patch merging
                input_dimensions = ((height + 1) // 2, (width + 1) // 2)
            if output_hidden_states:
                all_hidden += (hidden_states,)
                if output_hidden_states_before_downsampling:
                    all_reshaped += (_spatial(before, height, width),)
                else:
                    all_reshaped += (_spatial(hidden_states, *input_dimensions),)
            if output_attentions:
                all_attentions += (weights,)
        return hidden_states, all_hidden, all_attentions, all_reshaped


class SwinPreTrainedModel(PreTrainedModel):
    config_class = SwinConfig
    base_model_prefix = "swin"
    main_input_name = "pixel_values"
    _no_split_modules = ["SwinStage"]
    _keys_to_ignore_on_load_unexpected = [r"relative_position_index"]

    def _init_weights(self, cell):
        super()._init_weights(cell)
        if isinstance(cell, SwinEmbeddings):
            for p in (cell.mask_token, cell.position_embeddings):
                if p is not None:
                    init_parameter(p, Zero())
        elif isinstance(cell, SwinSelfAttention):
            init_parameter(cell.relative_position_bias_table, Zero())

    def _flag(self, value, name):
        return value if value is not None else getattr(self.config, name)


class SwinModel(SwinPreTrainedModel):
    def __init__(self, config: SwinConfig, add_pooling_layer=True, use_mask_token=False):
        super().__init__(config)
        self.num_layers = len(config.depths)
        self.num_features = int(config.embed_dim * 2 ** (self.num_layers - 1))
        self.embeddings = SwinEmbeddings(config, use_mask_token=use_mask_token)
        self.encoder = SwinEncoder(config, self.embeddings.patch_grid)
        self.layernorm = LayerNorm(self.num_features, eps=config.layer_norm_eps)
        self.add_pooling_layer = add_pooling_layer
        self.post_init()

    def construct(self, pixel_values=None, bool_masked_pos=None, output_attentions=None, output_hidden_states=None,
                  interpolate_pos_encoding=False, return_dict=None, **kwargs):
        r"""
        Args:
            pixel_values: (B, C, H, W), e.g. from `ViTImageProcessor(..., return_tensors="np")`.
            bool_masked_pos: (B, num_patches) booleans, patches replaced by the mask token (needs `use_mask_token`).
            interpolate_pos_encoding: resize the absolute position embeddings (if any) to the image.
        Returns `last_hidden_state` (B, L, C) after the final LayerNorm, `pooler_output` (its mean over L) and, when
        asked, `hidden_states`, `attentions` and `reshaped_hidden_states`.
        """
        fields = self._forward(pixel_values, bool_masked_pos, self._flag(output_attentions, "output_attentions"),
                               self._flag(output_hidden_states, "output_hidden_states"), interpolate_pos_encoding)
        return model_output(SwinModelOutput, fields, return_dict is not False)

    def _forward(self, pixel_values, bool_masked_pos=None, output_attentions=False, output_hidden_states=False,
                 interpolate_pos_encoding=False, always_partition=False,
                 output_hidden_states_before_downsampling=False):
        if pixel_values is None:
            raise ValueError("You have to specify pixel_values")
        embeddings, input_dimensions = self.embeddings(pixel_values, bool_masked_pos, interpolate_pos_encoding)
        last, hidden, attentions, reshaped = self.encoder(embeddings, input_dimensions, always_partition,
                                                          output_hidden_states, output_attentions,
                                                          output_hidden_states_before_downsampling)
        last = self.layernorm(last)
        pooled = last.mean(1) if self.add_pooling_layer else None
        return {"last_hidden_state": last, "pooler_output": pooled, "hidden_states": hidden,
                "attentions": attentions, "reshaped_hidden_states": reshaped}


class SwinForMaskedImageModeling(SwinPreTrainedModel):
    """SimMIM: the masked patches' pixels reconstructed by a 1x1 conv + pixel shuffle from the last hidden state."""

    def __init__(self, config: SwinConfig):
        super().__init__(config)
        self.swin = SwinModel(config, add_pooling_layer=False, use_mask_token=True)
        num_features = int(config.embed_dim * 2 ** (config.num_layers - 1))
        self.decoder = nn.CellList([
            Conv2d(num_features, config.encoder_stride ** 2 * config.num_channels, kernel_size=1),
        ])
        self.post_init()

    def _pixel_shuffle(self, x):
        """torch's PixelShuffle(r): (B, C*r*r, H, W) -> (B, C, H*r, W*r)."""
        r = self.config.encoder_stride
        batch_size, channels, height, width = x.shape
        x = x.reshape(batch_size, channels // (r * r), r, r, height, width)
        return ops.transpose(x, (0, 1, 4, 2, 5, 3)).reshape(batch_size, channels // (r * r), height * r, width * r)

    def construct(self, pixel_values=None, bool_masked_pos=None, output_attentions=None, output_hidden_states=None,
                  interpolate_pos_encoding=False, return_dict=None, **kwargs):
        r"""
        Args:
            bool_masked_pos: (B, num_patches) booleans, the patches to mask (and to score the L1 loss on).
        Returns `loss` (mean L1 over masked pixels, when `bool_masked_pos` is given), `reconstruction` (B, C, H, W).
        """
        out = self.swin._forward(pixel_values, bool_masked_pos, self._flag(output_attentions, "output_attentions"),
                                 self._flag(output_hidden_states, "output_hidden_states"), interpolate_pos_encoding)
        sequence_output = out["last_hidden_state"].swapaxes(1, 2)
        batch_size, num_channels, sequence_length = sequence_output.shape
        side = int(math.floor(sequence_length ** 0.5))
        reconstructed = self._pixel_shuffle(self.decoder[0](sequence_output.reshape(batch_size, num_channels, side,
                                                                                    side)))
        loss = None
        if bool_masked_pos is not None:
            size = self.config.image_size // self.config.patch_size
            p = self.config.patch_size
            mask = bool_masked_pos.reshape(-1, size, 1, size, 1).astype(reconstructed.dtype)
            mask = ops.broadcast_to(mask, (mask.shape[0], size, p, size, p)).reshape(-1, 1, size * p, size * p)
            l1 = ops.abs(pixel_values.astype(reconstructed.dtype) - reconstructed)
            loss = (l1 * mask).sum() / (mask.sum() + 1e-5) / self.config.num_channels
        fields = {"loss": loss, "reconstruction": reconstructed, "hidden_states": out["hidden_states"],
                  "attentions": out["attentions"], "reshaped_hidden_states": out["reshaped_hidden_states"]}
        return model_output(SwinMaskedImageModelingOutput, fields, return_dict is not False)


class SwinForImageClassification(SwinPreTrainedModel):
    def __init__(self, config: SwinConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.swin = SwinModel(config)
        self.classifier = Linear(self.swin.num_features, config.num_labels) if config.num_labels > 0 else None
        self.post_init()

    def construct(self, pixel_values=None, labels=None, output_attentions=None, output_hidden_states=None,
                  interpolate_pos_encoding=False, return_dict=None, **kwargs):
        out = self.swin._forward(pixel_values, None, self._flag(output_attentions, "output_attentions"),
                                 self._flag(output_hidden_states, "output_hidden_states"), interpolate_pos_encoding)
        pooled = out["pooler_output"]
        logits = self.classifier(pooled) if self.classifier is not None else pooled
        loss = sequence_classification_loss(labels, logits, self.config) if labels is not None else None
        fields = {"loss": loss, "logits": logits, "hidden_states": out["hidden_states"],
                  "attentions": out["attentions"], "reshaped_hidden_states": out["reshaped_hidden_states"]}
        return model_output(SwinImageClassifierOutput, fields, return_dict is not False)


class SwinBackbone(BackboneMixin, SwinPreTrainedModel):
    """The checkpoint holds `embeddings.*`, `encoder.*` and `hidden_states_norms.<stage>.*` at the top (transformers 5
    also writes an unused `swin.layernorm`, ignored here)."""

    _keys_to_ignore_on_load_unexpected = [r"relative_position_index", r"^swin\.layernorm\."]

    def __init__(self, config: SwinConfig):
        super().__init__(config)
        self.num_features = [config.embed_dim] + [int(config.embed_dim * 2 ** i) for i in range(len(config.depths))]
        self.embeddings = SwinEmbeddings(config)
        self.encoder = SwinEncoder(config, self.embeddings.patch_grid)
        self.hidden_states_norms = nn.CellDict({stage: LayerNorm(channels)
                                                for stage, channels in zip(self.out_features, self.channels)})
        self.post_init()

    def construct(self, pixel_values, output_hidden_states=None, output_attentions=None, return_dict=None, **kwargs):
        r"""
        Returns `feature_maps`: a normalised (B, C, H, W) map per stage of `config.out_features` (stages before
        their patch merging, windows always partitioned); with `output_hidden_states`, every stage's map.
        """
        output_attentions = self._flag(output_attentions, "output_attentions")
        embeddings, input_dimensions = self.embeddings(pixel_values)
        _, _, attentions, reshaped = self.encoder(embeddings, input_dimensions, True, True, output_attentions, True)
        feature_maps = ()
        for stage, hidden_state in zip(self.stage_names, reshaped):
            if stage in self.out_features:
                batch_size, channels, height, width = hidden_state.shape
                flat = hidden_state.permute(0, 2, 3, 1).reshape(batch_size, height * width, channels)
                flat = self.hidden_states_norms[stage](flat)
                feature_maps += (flat.reshape(batch_size, height, width, channels).permute(0, 3, 1, 2),)
        fields = {"feature_maps": feature_maps,
                  "hidden_states": reshaped if self._flag(output_hidden_states, "output_hidden_states") else None,
                  "attentions": attentions}
        return model_output(BackboneOutput, fields, return_dict is not False)


__all__ = ["SwinModel", "SwinForImageClassification", "SwinForMaskedImageModeling", "SwinBackbone",
           "SwinPreTrainedModel"]
