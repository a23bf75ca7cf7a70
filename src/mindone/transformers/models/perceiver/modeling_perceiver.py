"""Perceiver IO on MindSpore: HF's `modeling_perceiver.py` checkpoint keys, signatures and outputs.

A fixed set of learned latents cross-attends once to the (preprocessed) inputs, then runs `num_blocks` x
`num_self_attends_per_block` self-attention layers (pre-norm attention and MLP, residual). A decoder builds queries
(learned or Fourier position encodings, or the preprocessed inputs themselves) that cross-attend to the latents.

Provided: `PerceiverModel` (raw `d_model` inputs, or with the preprocessors, decoders and postprocessors given as
arguments), `PerceiverForMaskedLM`, `PerceiverForSequenceClassification`, the image classifiers
`PerceiverForImageClassificationLearned` (1x1 conv + learned positions), `...Fourier` (raw pixels + Fourier
features) and `...ConvProcessing` (conv + max pool + Fourier features), `PerceiverForOpticalFlow` (patches of two
frames, the inputs as decoder queries) and `PerceiverForMultimodalAutoencoding` (audio / video / label, subsampled
decoding, per-modality postprocessors). Not yet: `interpolate_pos_encoding`.
"""

import math
from dataclasses import dataclass
from typing import Any, Optional, Tuple

import mindspore as ms
import numpy as np
from mindspore import nn, ops
from mindspore.common.initializer import Normal
from transformers import PerceiverConfig

from ...backend import functional as F
from ...backend.layers import BatchNorm2d, Conv2d, Embedding, LayerNorm, Linear, new_parameter
from ...loss_utils import masked_lm_loss, sequence_classification_loss
from ...masking_utils import create_bidirectional_mask
from ...modeling_outputs import ModelOutput, model_output
from ...modeling_utils import PreTrainedModel, init_parameter


@dataclass
class PerceiverModelOutput(ModelOutput):
    logits: Any = None
    last_hidden_state: Any = None
    hidden_states: Optional[Tuple[Any, ...]] = None
    attentions: Optional[Tuple[Any, ...]] = None
    cross_attentions: Optional[Tuple[Any, ...]] = None


@dataclass
class PerceiverMaskedLMOutput(ModelOutput):
    loss: Any = None
    logits: Any = None
    hidden_states: Optional[Tuple[Any, ...]] = None
    attentions: Optional[Tuple[Any, ...]] = None
    cross_attentions: Optional[Tuple[Any, ...]] = None


@dataclass
class PerceiverClassifierOutput(ModelOutput):
    loss: Any = None
    logits: Any = None
    hidden_states: Optional[Tuple[Any, ...]] = None
    attentions: Optional[Tuple[Any, ...]] = None
    cross_attentions: Optional[Tuple[Any, ...]] = None


class PerceiverEmbeddings(nn.Cell):
    """The learned latent array, shared by every example of a batch."""

    def __init__(self, config):
        super().__init__()
        self.latents = new_parameter((config.num_latents, config.d_latents), Normal(1.0))

    def construct(self, batch_size):
        return ops.broadcast_to(self.latents[None], (batch_size,) + tuple(self.latents.shape))


class PerceiverSelfAttention(nn.Cell):
    """Multi-head attention whose queries come from `hidden_states` and keys/values from `inputs` (cross) or
    `hidden_states` (self); both sides are layer-normalised first (inputs only for cross-attention)."""

    def __init__(self, config, is_cross_attention=False, qk_channels=None, v_channels=None, num_heads=1, q_dim=None,
                 kv_dim=None):
        super().__init__()
        self.num_heads = num_heads
        if qk_channels is None:
            qk_channels = q_dim
        if v_channels is None:
            v_channels = qk_channels
        if qk_channels % num_heads != 0:
            raise ValueError(f"qk_channels ({qk_channels}) must be divisible by num_heads ({num_heads}).")
        if v_channels % num_heads != 0:
            raise ValueError(f"v_channels ({v_channels}) must be divisible by num_heads ({num_heads}).")
        self.qk_channels, self.v_channels = qk_channels, v_channels
        self.qk_channels_per_head = qk_channels // num_heads
        self.v_channels_per_head = v_channels // num_heads
        self.layernorm1 = LayerNorm(q_dim)
        self.layernorm2 = LayerNorm(kv_dim) if is_cross_attention else None
        self.query = Linear(q_dim, qk_channels)
        self.key = Linear(kv_dim, qk_channels)
        self.value = Linear(kv_dim, v_channels)
        self.dropout_p = config.attention_probs_dropout_prob

    def _heads(self, x, per_head):
        return x.reshape(x.shape[0], x.shape[1], self.num_heads, per_head).swapaxes(1, 2)

    def construct(self, hidden_states, attention_mask=None, inputs=None, inputs_mask=None):
        hidden_states = self.layernorm1(hidden_states)
        if inputs is not None:
            source = self.layernorm2(inputs) if self.layernorm2 is not None else inputs
            attention_mask = inputs_mask
        else:
            source = hidden_states
        query = self._heads(self.query(hidden_states), self.qk_channels_per_head)
        key = self._heads(self.key(source), self.qk_channels_per_head)
        value = self._heads(self.value(source), self.v_channels_per_head)
        context, weights = F.attention(query, key, value, attention_mask, dropout_p=self.dropout_p,
                                       training=self.training)
        batch_size, seq_len = hidden_states.shape[:2]
        return context.swapaxes(1, 2).reshape(batch_size, seq_len, -1), weights


class PerceiverSelfOutput(nn.Cell):
    def __init__(self, config, input_channels, output_channels):
        super().__init__()
        self.dense = Linear(input_channels, output_channels)

    def construct(self, hidden_states):
        return self.dense(hidden_states)


class PerceiverAttention(nn.Cell):
    """Attention + output projection, with the query residual when `use_query_residual`."""

    def __init__(self, config, is_cross_attention=False, qk_channels=None, v_channels=None, num_heads=1, q_dim=None,
                 kv_dim=None, use_query_residual=True):
        super().__init__()
        if is_cross_attention and qk_channels is None:
            if config.cross_attention_shape_for_attention == "q":
                qk_channels = q_dim
            elif config.cross_attention_shape_for_attention == "kv":
                qk_channels = kv_dim
            else:
                raise ValueError(f"Unknown value {config.cross_attention_shape_for_attention} for "
                                 "cross_attention_shape_for_attention.")
        else:
            if qk_channels is None:
                qk_channels = q_dim
            if v_channels is None:
                v_channels = qk_channels
        self.self = PerceiverSelfAttention(config, is_cross_attention, qk_channels, v_channels, num_heads, q_dim,
                                           kv_dim)
        output_channels = q_dim if is_cross_attention else v_channels
        self.output = PerceiverSelfOutput(config, self.self.v_channels, output_channels)
        self.use_query_residual = use_query_residual

    def construct(self, hidden_states, attention_mask=None, inputs=None, inputs_mask=None):
        context, weights = self.self(hidden_states, attention_mask, inputs, inputs_mask)
        output = self.output(context)
        if self.use_query_residual:
            output = output + hidden_states
        return output, weights


class PerceiverMLP(nn.Cell):
    def __init__(self, config, input_size, widening_factor):
        super().__init__()
        self.dense1 = Linear(input_size, widening_factor * input_size)
        self.intermediate_act_fn = F.get_activation(config.hidden_act)
        self.dense2 = Linear(widening_factor * input_size, input_size)

    def construct(self, hidden_states):
        return self.dense2(self.intermediate_act_fn(self.dense1(hidden_states)))


class PerceiverLayer(nn.Cell):
    def __init__(self, config, is_cross_attention=False, qk_channels=None, v_channels=None, num_heads=1, q_dim=None,
                 kv_dim=None, widening_factor=4, use_query_residual=True):
        super().__init__()
        self.attention = PerceiverAttention(config, is_cross_attention, qk_channels, v_channels, num_heads, q_dim,
                                            kv_dim, use_query_residual)
        self.layernorm = LayerNorm(q_dim)
        self.mlp = PerceiverMLP(config, q_dim, widening_factor)

    def construct(self, hidden_states, attention_mask=None, inputs=None, inputs_mask=None):
        attention_output, weights = self.attention(hidden_states, attention_mask, inputs, inputs_mask)
        return self.mlp(self.layernorm(attention_output)) + attention_output, weights


class PerceiverEncoder(nn.Cell):
    """One cross-attention from the latents to the inputs, then `num_blocks` passes over the (weight-shared)
    self-attention layers."""

    def __init__(self, config, kv_dim=None):
        super().__init__()
        self.num_blocks = config.num_blocks
        if config.d_latents % config.num_self_attention_heads != 0:
            raise ValueError(f"num_z_channels ({config.d_latents}) must be divisible by num_self_attend_heads "
                             f"({config.num_self_attention_heads}).")
        if config.d_latents % config.num_cross_attention_heads != 0:
            raise ValueError(f"num_z_channels ({config.d_latents}) must be divisible by num_cross_attend_heads "
                             f"({config.num_cross_attention_heads}).")
        self.cross_attention = PerceiverLayer(
            config, is_cross_attention=True, qk_channels=config.qk_channels, v_channels=config.v_channels,
            num_heads=config.num_cross_attention_heads, q_dim=config.d_latents, kv_dim=kv_dim,
            widening_factor=config.cross_attention_widening_factor, use_query_residual=config.use_query_residual)
        self.self_attends = nn.CellList([
            PerceiverLayer(config, is_cross_attention=False, qk_channels=config.qk_channels,
                           v_channels=config.v_channels, num_heads=config.num_self_attention_heads,
                           q_dim=config.d_latents, kv_dim=config.d_latents,
                           widening_factor=config.self_attention_widening_factor)
            for _ in range(config.num_self_attends_per_block)
        ])

    def construct(self, hidden_states, inputs, inputs_mask=None, output_attentions=False,
                  output_hidden_states=False):
        """Returns (last hidden state, hidden states, self-attentions, cross-attentions) in HF's order: the hidden
        states are each layer's input of every block plus every block's output."""
        all_hidden = () if output_hidden_states else None
        all_self = () if output_attentions else None
        hidden_states, cross_weights = self.cross_attention(hidden_states, None, inputs, inputs_mask)
        all_cross = (cross_weights,) if output_attentions else None
        for _ in range(self.num_blocks):
            for layer in self.self_attends:
                if output_hidden_states:
                    all_hidden += (hidden_states,)
                hidden_states, weights = layer(hidden_states)
                if output_attentions:
                    all_self += (weights,)
            if output_hidden_states:
                all_hidden += (hidden_states,)
        return hidden_states, all_hidden, all_self, all_cross


class PerceiverTrainablePositionEncoding(nn.Cell):
    def __init__(self, index_dims, num_channels=128):
        super().__init__()
        self._num_channels = num_channels
        self._index_dims = index_dims
        index_dim = 1
        for d in (index_dims if isinstance(index_dims, (tuple, list)) else (index_dims,)):
            index_dim *= d
        self.position_embeddings = new_parameter((index_dim, num_channels), Normal(1.0))

    @property
    def num_dimensions(self):
        return 1 if isinstance(self._index_dims, int) else len(self._index_dims)

    def output_size(self, *args, **kwargs):
        return self._num_channels

    def construct(self, batch_size):
        return ops.broadcast_to(self.position_embeddings[None],
                                (batch_size,) + tuple(self.position_embeddings.shape))


def _linspace_float32(start, end, steps):
    """torch.linspace in float32 as its CPU kernel computes it (a float32 step, each value one fused multiply-add
    from `start`, or back from `end` for the second half), so the Fourier features match torch's to the last bit of
    their arguments (a plain float32 product is 1 ulp off on some values, 3e-5 on the features)."""
    step = np.float64(np.float32((np.float32(end) - np.float32(start)) / np.float32(max(steps - 1, 1))))
    index = np.arange(steps, dtype=np.float64)
    forward = np.float64(np.float32(start)) + step * index
    backward = np.float64(np.float32(end)) - step * (steps - 1 - index)
    return np.where(index < steps // 2, forward, backward).astype(np.float32)


def _frequency_bands(num_bands, max_resolution):
    """(len(max_resolution), num_bands) frequencies from 1 to resolution / 2 per dimension (float32)."""
    return np.stack([_linspace_float32(1.0, res / 2, num_bands) for res in max_resolution])


@ops.constexpr
def _fourier_features(index_dims, num_bands, max_resolution, concat_pos, sine_only):
    """(prod(index_dims), channels) Fourier position features of a [-1, 1] grid (HF's generate_fourier_features,
    float32 like torch): [positions,] sin(pi * pos * f) [, cos(pi * pos * f)] for `num_bands` frequencies per
    dimension from 1 to resolution / 2."""
    grids = np.meshgrid(*[_linspace_float32(-1.0, 1.0, n) for n in index_dims], indexing="ij")
    pos = np.stack(grids, -1).reshape(-1, len(index_dims)).astype(np.float32)
    per_pos = (pos[:, :, None] * _frequency_bands(num_bands, max_resolution)[None]).reshape(pos.shape[0], -1)
    angle = np.float32(np.pi) * per_pos
    features = [np.sin(angle)] if sine_only else [np.sin(angle), np.cos(angle)]
    if concat_pos:
        features = [pos] + features
    return ms.Tensor(np.concatenate(features, -1).astype(np.float32))


class PerceiverFourierPositionEncoding(nn.Cell):
    def __init__(self, num_bands, max_resolution, concat_pos=True, sine_only=False):
        super().__init__()
        self.num_bands = num_bands
        self.max_resolution = tuple(max_resolution)
        self.concat_pos = concat_pos
        self.sine_only = sine_only

    @property
    def num_dimensions(self):
        return len(self.max_resolution)

    def output_size(self):
        size = self.num_bands * len(self.max_resolution) * (1 if self.sine_only else 2)
        return size + (self.num_dimensions if self.concat_pos else 0)

    def construct(self, index_dims, batch_size, dtype, pos=None):
        """(batch_size, prod(index_dims), channels) features of the [-1, 1] grid over `index_dims`, or of the given
        (batch_size, n, len(index_dims)) float32 positions `pos` (the frequencies multiply the first row's, as HF's)."""
        if pos is None:
            table = _fourier_features(tuple(index_dims), self.num_bands, self.max_resolution, self.concat_pos,
                                      self.sine_only).astype(dtype)
            return ops.broadcast_to(table[None], (batch_size,) + tuple(table.shape))
        if pos.shape[-1] != len(index_dims):
            raise ValueError("Spatial features have the wrong number of dimensions.")
        bands = ms.Tensor(_frequency_bands(self.num_bands, self.max_resolution))
        per_pos = (pos[0][:, :, None] * bands[None]).reshape(pos.shape[1], -1)
        angle = per_pos * np.float32(np.pi)
        features = ops.sin(angle) if self.sine_only else ops.cat((ops.sin(angle), ops.cos(angle)), -1)
        features = ops.broadcast_to(features[None], (batch_size,) + tuple(features.shape))
        if self.concat_pos:
            features = ops.cat((pos, features), -1)
        return features.astype(dtype)


def build_position_encoding(position_encoding_type, out_channels=None, project_pos_dim=-1,
                            trainable_position_encoding_kwargs=None, fourier_position_encoding_kwargs=None):
    """(position encoding, projection to `project_pos_dim` channels or None)."""
    if position_encoding_type == "trainable":
        if not trainable_position_encoding_kwargs:
            raise ValueError("Make sure to pass trainable_position_encoding_kwargs")
        encoding = PerceiverTrainablePositionEncoding(**trainable_position_encoding_kwargs)
    elif position_encoding_type == "fourier":
        if not fourier_position_encoding_kwargs:
            raise ValueError("Make sure to pass fourier_position_encoding_kwargs")
        encoding = PerceiverFourierPositionEncoding(**fourier_position_encoding_kwargs)
    else:
        raise ValueError(f"Unknown position encoding type: {position_encoding_type}.")
    return encoding, (Linear(out_channels, project_pos_dim) if project_pos_dim > 0 else None)


def _position_encoding(encoding, batch_size, index_dims, dtype, pos=None):
    if isinstance(encoding, PerceiverTrainablePositionEncoding):
        return encoding(batch_size)
    return encoding(index_dims, batch_size, dtype, pos)


class _ParameterDict(nn.Cell):
    """torch's nn.ParameterDict: one parameter per key, saved as `<prefix>.<key>`."""

    def __init__(self, shapes):
        super().__init__()
        self._keys = list(shapes)
        for key, shape in shapes.items():
            setattr(self, key, new_parameter(shape, Normal(1.0), name=key))

    def __getitem__(self, key):
        return getattr(self, key)

    def keys(self):
        return list(self._keys)


def space_to_depth(frames, temporal_block_size=1, spatial_block_size=1):
    """Channels-first frames (B, C, H, W) or video (B, T, C, H, W) -> channels-last blocks: (B, H/s, W/s, s*s*C)
    or (B, T/t, H/s, W/s, t*s*s*C), each block flattened (time, row, column)-major with the channel last."""
    s = spatial_block_size
    if frames.ndim == 4:
        batch, channels, height, width = frames.shape
        frames = frames.reshape(batch, channels, height // s, s, width // s, s)
        frames = ops.transpose(frames, (0, 2, 4, 3, 5, 1))
        return frames.reshape(batch, height // s, width // s, s * s * channels)
    if frames.ndim == 5:
        t = temporal_block_size
        batch, time, channels, height, width = frames.shape
        frames = frames.reshape(batch, time // t, t, channels, height // s, s, width // s, s)
        frames = ops.transpose(frames, (0, 1, 4, 6, 2, 5, 7, 3))
        return frames.reshape(batch, time // t, height // s, width // s, t * s * s * channels)
    raise ValueError("Frames should be of rank 4 (batch, channels, height, width) or rank 5 (batch, time, channels, "
                     "height, width)")


class Conv2DDownsample(nn.Cell):
    """7x7 stride-2 convolution ("same" zero padding: 3 on each side), batch norm, ReLU, 3x3 stride-2 max pool."""

    def __init__(self, num_layers=1, in_channels=3, out_channels=64, use_batchnorm=True):
        super().__init__()
        kernel = 7
        # HF's Conv2dSamePadding: k // 2 + k % 2 - 1 before, k // 2 after
        self._padding = (kernel // 2 + kernel % 2 - 1, kernel // 2)
        self.conv = Conv2d(in_channels, out_channels, kernel_size=kernel, stride=2, bias=False)
        self.batchnorm = BatchNorm2d(out_channels) if use_batchnorm else None

    def construct(self, inputs):
        before, after = self._padding
        out = self.conv(F.pad(inputs, (before, after, before, after)))
        if self.batchnorm is not None:
            out = self.batchnorm(out)
        return F.max_pool2d(F.relu(out), 3, 2)


class PerceiverImagePreprocessor(nn.Cell):
    """Images (B, C, H, W) or video (B, T, C, H, W) -> (B, N, channels) with position encodings concatenated or
    added: `prep_type` "conv" (7x7 conv + max pool, 4x smaller), "conv1x1", "pixels" (strided subsampling) or
    "patches" (space-to-depth blocks, optionally through a linear "conv after patching")."""

    def __init__(self, config, prep_type="conv", spatial_downsample=4, temporal_downsample=1,
                 position_encoding_type="fourier", in_channels=3, out_channels=64, conv_after_patching=False,
                 conv_after_patching_in_channels=54, conv2d_use_batchnorm=True, concat_or_add_pos="concat",
                 project_pos_dim=-1, **position_encoding_kwargs):
        super().__init__()
        if prep_type not in ("conv", "patches", "pixels", "conv1x1"):
            raise ValueError(f"Prep_type {prep_type} is invalid")
        if concat_or_add_pos not in ("concat", "add"):
            raise ValueError(f"Invalid value {concat_or_add_pos} for concat_or_add_pos.")
        self.config = config
        self.in_channels, self.out_channels = in_channels, out_channels
        self.prep_type = prep_type
        self.spatial_downsample, self.temporal_downsample = spatial_downsample, temporal_downsample
        self.position_encoding_type = position_encoding_type
        self.concat_or_add_pos = concat_or_add_pos
        self.conv_after_patching = conv_after_patching
        self.project_pos_dim = project_pos_dim
        if prep_type == "conv":
            num_layers = math.log(spatial_downsample, 4)
            if num_layers != np.round(num_layers) or temporal_downsample != 1:
                raise ValueError("Only powers of 4 expected for spatial and 1 expected for temporal downsampling "
                                 "with conv.")
            self.convnet = Conv2DDownsample(num_layers=int(num_layers), in_channels=in_channels,
                                            out_channels=out_channels, use_batchnorm=conv2d_use_batchnorm)
        elif prep_type == "conv1x1":
            if temporal_downsample != 1:
                raise ValueError("Conv1x1 does not downsample in time.")
            self.convnet_1x1 = Conv2d(in_channels, out_channels, kernel_size=(1, 1),
                                      stride=(spatial_downsample, spatial_downsample))
        self.position_embeddings, self.positions_projection = build_position_encoding(
            position_encoding_type, out_channels=out_channels, project_pos_dim=project_pos_dim,
            **position_encoding_kwargs)
        self.conv_after_patches = (Linear(conv_after_patching_in_channels, out_channels) if conv_after_patching
                                   else None)

    @property
    def num_channels(self):
        is_temporal = self.position_embeddings.num_dimensions > 2
        pos_dim = self.project_pos_dim if self.project_pos_dim > 0 else self.position_embeddings.output_size()
        if self.concat_or_add_pos == "add":
            return pos_dim
        if self.conv_after_patching or self.prep_type in ("conv1x1", "conv"):
            inp_dim = self.out_channels
        elif self.prep_type == "pixels":
            inp_dim = self.in_channels if is_temporal else -(-self.in_channels // self.spatial_downsample)
        else:
            inp_dim = self.in_channels * self.spatial_downsample ** 2
            if is_temporal:
                inp_dim *= self.temporal_downsample
        return inp_dim + pos_dim

    def construct(self, inputs, pos=None, network_input_is_1d=True, interpolate_pos_encoding=False):
        """Returns (inputs with positions, modality sizes (None), inputs without positions)."""
        if interpolate_pos_encoding:
            raise NotImplementedError("PerceiverImagePreprocessor: interpolate_pos_encoding is not implemented yet")
        if self.prep_type == "conv":
            inputs = self.convnet(inputs.astype(self.convnet.conv.weight.dtype))
        elif self.prep_type == "conv1x1":
            inputs = self.convnet_1x1(inputs.astype(self.convnet_1x1.weight.dtype))
        elif self.prep_type == "pixels":
            s = self.spatial_downsample
            if inputs.ndim == 4:
                # as HF: this slices the batch and channel axes of a 4D input (the same for s = 1)
                inputs = inputs[::s, ::s]
            elif inputs.ndim == 5:
                inputs = inputs[:, ::self.temporal_downsample, :, ::s, ::s]
            else:
                raise ValueError("Unsupported data format for pixels.")
        else:
            inputs = space_to_depth(inputs, self.temporal_downsample, self.spatial_downsample)
            if inputs.ndim == 5 and inputs.shape[1] == 1:
                inputs = inputs.squeeze(1)  # optical flow: the two frames became one
            if self.conv_after_patches is not None:
                inputs = self.conv_after_patches(inputs)
        if self.prep_type != "patches":
            if inputs.ndim == 4:
                inputs = inputs.permute(0, 2, 3, 1)
            elif inputs.ndim == 5:
                inputs = inputs.permute(0, 1, 3, 4, 2)
            else:
                raise ValueError("Unsupported data format for conv1x1.")
        batch_size = inputs.shape[0]
        index_dims = tuple(inputs.shape[1:-1])
        if inputs.ndim > 3 and network_input_is_1d:
            inputs = inputs.reshape(batch_size, -1, inputs.shape[-1])
        pos_enc = _position_encoding(self.position_embeddings, batch_size, index_dims, inputs.dtype)
        if self.positions_projection is not None:
            pos_enc = self.positions_projection(pos_enc)
        if not network_input_is_1d:
            pos_enc = pos_enc.reshape(tuple(inputs.shape[:-1]) + (-1,))
        pos_enc = pos_enc.astype(inputs.dtype)
        with_pos = ops.cat((inputs, pos_enc), -1) if self.concat_or_add_pos == "concat" else inputs + pos_enc
        return with_pos, None, inputs


class PerceiverTextPreprocessor(nn.Cell):
    """Token embeddings + learned absolute positions (d_model channels)."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.embeddings = Embedding(config.vocab_size, config.d_model)
        self.position_embeddings = Embedding(config.max_position_embeddings, config.d_model)

    @property
    def num_channels(self):
        return self.config.d_model

    def construct(self, inputs, pos=None, network_input_is_1d=True, interpolate_pos_encoding=False):
        """Returns (embeddings, modality sizes (None), embeddings without positions)."""
        without_pos = self.embeddings(inputs)
        positions = self.position_embeddings(F.arange(0, inputs.shape[1]))
        return without_pos + positions[None], None, without_pos


class PerceiverOneHotPreprocessor(nn.Cell):
    """(B, num_labels) -> (B, 1, num_labels): a dummy index dimension, no positions."""

    def __init__(self, config):
        super().__init__()
        self.config = config

    @property
    def num_channels(self):
        return self.config.num_labels

    def construct(self, inputs, pos=None, network_input_is_1d=True):
        inputs = inputs[:, None, :]
        return inputs, None, inputs


class PerceiverAudioPreprocessor(nn.Cell):
    """Raw audio (B, samples) -> (B, samples / samples_per_patch, samples_per_patch) patches with positions."""

    def __init__(self, config, prep_type="patches", samples_per_patch=96, position_encoding_type="fourier",
                 concat_or_add_pos="concat", out_channels=64, project_pos_dim=-1, **position_encoding_kwargs):
        super().__init__()
        if prep_type != "patches":
            raise ValueError(f"Prep_type {prep_type} is invalid, can only be 'patches'.")
        if concat_or_add_pos not in ("concat", "add"):
            raise ValueError(f"Concat_or_pos {concat_or_add_pos} is invalid, can only be 'concat' or 'add'.")
        self.config = config
        self.samples_per_patch = samples_per_patch
        self.position_encoding_type = position_encoding_type
        self.concat_or_add_pos = concat_or_add_pos
        self.project_pos_dim = project_pos_dim
        self.position_embeddings, self.positions_projection = build_position_encoding(
            position_encoding_type, out_channels=out_channels, project_pos_dim=project_pos_dim,
            **position_encoding_kwargs)

    @property
    def num_channels(self):
        pos_dim = self.project_pos_dim if self.project_pos_dim > 0 else self.position_embeddings.output_size()
        return pos_dim if self.concat_or_add_pos == "add" else self.samples_per_patch + pos_dim

    def construct(self, inputs, pos=None, network_input_is_1d=True, interpolate_pos_encoding=False):
        inputs = inputs.reshape(inputs.shape[0], -1, self.samples_per_patch)
        pos_enc = _position_encoding(self.position_embeddings, inputs.shape[0], tuple(inputs.shape[1:-1]),
                                     inputs.dtype)
        if self.positions_projection is not None:
            pos_enc = self.positions_projection(pos_enc)
        with_pos = ops.cat((inputs, pos_enc), -1) if self.concat_or_add_pos == "concat" else inputs + pos_enc
        return with_pos, None, inputs


class PerceiverMultimodalPreprocessor(nn.Cell):
    """Each modality through its preprocessor, padded to a common channel count with a learned per-modality vector,
    optionally replaced by a learned mask token with probability `mask_probs[modality]`, then concatenated along the
    index axis in sorted modality order. Returns (inputs, {modality: size}, {modality: inputs without positions})."""

    def __init__(self, modalities, mask_probs=None, min_padding_size=2):
        super().__init__()
        self.modalities = nn.CellDict(modalities)
        # names as constant tuples: a graph cannot iterate or sort a CellDict's / dict's keys
        self._names, self._sorted_names = tuple(modalities), tuple(sorted(modalities))
        self.min_padding_size = min_padding_size
        self.mask_probs = mask_probs if mask_probs is not None else {}
        self.padding = _ParameterDict({m: (1, self.num_channels - p.num_channels) for m, p in modalities.items()})
        self.mask = _ParameterDict({m: (1, self.num_channels) for m in self.mask_probs})

    @property
    def num_channels(self):
        return max(p.num_channels for p in self.modalities.values()) + self.min_padding_size

    def construct(self, inputs, pos=None, network_input_is_1d=True, interpolate_pos_encoding=False):
        padded, modality_sizes, inputs_without_pos = {}, {}, {}
        for modality in self._names:
            output, _, inputs_without_pos[modality] = self.modalities[modality](
                inputs[modality], pos=pos, network_input_is_1d=network_input_is_1d)
            batch_size, num_samples, num_channels = output.shape
            padding = ops.broadcast_to(getattr(self.padding, modality)[None].astype(output.dtype),
                                       (batch_size, num_samples, self.num_channels - num_channels))
            output = ops.cat((output, padding), 2)
            if modality in self.mask_probs:
                output = _mask_tokens(output, getattr(self.mask, modality)[None].astype(output.dtype),
                                      self.mask_probs[modality])
            padded[modality] = output
            modality_sizes[modality] = output.shape[1]
        return ops.cat([padded[k] for k in self._sorted_names], 1), modality_sizes, inputs_without_pos


def _mask_tokens(output, mask_token, prob):
    """HF's (1 - m) * output + m * mask_token with m ~ Bernoulli(prob) per position. For prob 0 or 1 (the
    multimodal autoencoder's) m is constant and the blend is exactly `output` or the token: no mask is drawn."""
    if prob <= 0.0:
        return output
    if prob >= 1.0:
        return ops.broadcast_to(mask_token, output.shape)
    mask = (ops.rand(output.shape[:2] + (1,)) < prob).astype(output.dtype)
    return (1 - mask) * output + mask * mask_token


def _unravel_positions(points, dims):
    """Flat indices (n,) into an array of shape `dims` -> their coordinates scaled to [-1, 1): -1 + 2 * i / dim
    (float32, as torch divides the integer coordinates)."""
    coords, stride = [], 1
    for d in reversed(dims):
        coords.append((points // stride) % d)
        stride *= d
    coords = ops.stack(coords[::-1], 1).astype(ms.float32) if len(dims) > 1 else \
        coords[0][:, None].astype(ms.float32)
    return (coords * 2) / ms.Tensor(np.array(dims, np.float32))[None] - 1


class PerceiverBasicDecoder(nn.Cell):
    """Queries (trainable or Fourier position encodings of the output positions, or given ones for
    `position_encoding_type="none"`) cross-attend to the latents, then an optional projection. With
    `position_encoding_only` it only builds queries (for the multimodal decoder)."""

    def __init__(self, config, output_num_channels, position_encoding_type="trainable", output_index_dims=None,
                 num_channels=128, subsampled_index_dims=None, qk_channels=None, v_channels=None, num_heads=1,
                 widening_factor=1, use_query_residual=False, concat_preprocessed_input=False, final_project=True,
                 position_encoding_only=False, **position_encoding_kwargs):
        super().__init__()
        self.output_num_channels = output_num_channels
        self.position_encoding_type = position_encoding_type
        self.position_encoding_kwargs = position_encoding_kwargs
        self.output_position_encodings = self.positions_projection = None
        if position_encoding_type != "none":
            self.output_position_encodings, self.positions_projection = build_position_encoding(
                position_encoding_type, **position_encoding_kwargs)
        self.output_index_dims = output_index_dims
        self.num_channels = num_channels
        self.subsampled_index_dims = output_index_dims if subsampled_index_dims is None else subsampled_index_dims
        self.concat_preprocessed_input = concat_preprocessed_input
        self.final_project = final_project
        self.position_encoding_only = position_encoding_only
        if not position_encoding_only:
            self.decoding_cross_attention = PerceiverLayer(
                config, is_cross_attention=True, qk_channels=qk_channels, v_channels=v_channels,
                num_heads=num_heads, q_dim=num_channels, kv_dim=config.d_latents, widening_factor=widening_factor,
                use_query_residual=use_query_residual)
            self.final_layer = Linear(num_channels, output_num_channels) if final_project else None

    @property
    def num_query_channels(self):
        if self.position_encoding_type == "none":
            raise ValueError("You cannot calculate number of decoder query channels when position_encoding_type is "
                             "set to none")
        if self.position_encoding_only:
            if "project_pos_dim" in self.position_encoding_kwargs:
                return self.position_encoding_kwargs["project_pos_dim"]
            return self.output_position_encodings.output_size()
        return self.output_num_channels if self.final_project else self.num_channels

    def decoder_query(self, inputs, modality_sizes=None, inputs_without_pos=None, subsampled_points=None):
        if self.position_encoding_type == "none":
            raise ValueError("You cannot construct decoder queries when position_encoding_type is set to none")
        batch_size = inputs.shape[0]
        if subsampled_points is not None:
            # flat indices into output_index_dims -> their [-1, 1) coordinates
            dims = tuple(self.output_index_dims) if isinstance(self.output_index_dims, (tuple, list)) else \
                (self.output_index_dims,)
            pos = _unravel_positions(subsampled_points, dims)
            pos = ops.broadcast_to(pos[None], (batch_size,) + tuple(pos.shape))
            pos_emb = _position_encoding(self.output_position_encodings, batch_size, dims, inputs.dtype, pos)
            if self.positions_projection is not None:
                pos_emb = self.positions_projection(pos_emb)
            pos_emb = pos_emb.reshape(pos_emb.shape[0], -1, pos_emb.shape[-1])
        else:
            pos_emb = _position_encoding(self.output_position_encodings, batch_size, tuple(inputs.shape[2:]),
                                         inputs.dtype)
            if self.positions_projection is not None:
                pos_emb = self.positions_projection(pos_emb)
        if self.concat_preprocessed_input:
            if inputs_without_pos is None:
                raise ValueError("Value is required for inputs_without_pos if concat_preprocessed_input is True")
            pos_emb = ops.cat((inputs_without_pos, pos_emb), -1)
        return pos_emb

    def construct(self, query, z, query_mask=None, output_attentions=False):
        """Returns (logits, cross-attentions). As HF, the query mask does not reach the attention (the latents are
        never padded)."""
        output, weights = self.decoding_cross_attention(query, None, z, None)
        logits = self.final_layer(output) if self.final_layer is not None else output
        return logits, ((weights,) if output_attentions else None)


class PerceiverClassificationDecoder(nn.Cell):
    """A basic decoder with one query: (B, num_labels) logits."""

    def __init__(self, config, **decoder_kwargs):
        super().__init__()
        self.num_labels = config.num_labels
        self.decoder = PerceiverBasicDecoder(config, output_num_channels=self.num_labels, output_index_dims=1,
                                             **decoder_kwargs)

    @property
    def num_query_channels(self):
        return self.decoder.num_query_channels

    def decoder_query(self, inputs, modality_sizes=None, inputs_without_pos=None, subsampled_points=None):
        return self.decoder.decoder_query(inputs, modality_sizes, inputs_without_pos, subsampled_points)

    def construct(self, query, z, query_mask=None, output_attentions=False):
        logits, cross = self.decoder(query, z, output_attentions=output_attentions)
        return logits[:, 0, :], cross


class PerceiverOpticalFlowDecoder(nn.Cell):
    """The preprocessed inputs are the queries; the output is (B, *output_image_shape, 2) flow / rescale_factor."""

    def __init__(self, config, output_image_shape, output_num_channels=2, rescale_factor=100.0, **decoder_kwargs):
        super().__init__()
        self.output_image_shape = tuple(output_image_shape)
        self.output_num_channels = output_num_channels
        self.rescale_factor = rescale_factor
        self.decoder = PerceiverBasicDecoder(config, output_num_channels=output_num_channels, **decoder_kwargs)

    @property
    def num_query_channels(self):
        return self.decoder.num_query_channels

    def decoder_query(self, inputs, modality_sizes=None, inputs_without_pos=None, subsampled_points=None):
        if subsampled_points is not None:
            raise ValueError("FlowDecoder doesn't support subsampling yet.")
        return inputs

    def construct(self, query, z, query_mask=None, output_attentions=False):
        preds, cross = self.decoder(query, z, output_attentions=output_attentions)
        preds = preds / self.rescale_factor
        return preds.reshape((preds.shape[0],) + self.output_image_shape + (preds.shape[-1],)), cross


class PerceiverBasicVideoAutoencodingDecoder(nn.Cell):
    """A basic decoder over the (T, H, W) positions of `output_shape` (B, T, H, W), its logits reshaped to it."""

    def __init__(self, config, output_shape, position_encoding_type, **decoder_kwargs):
        super().__init__()
        if len(output_shape) != 4:
            raise ValueError(f"Expected rank 4 output_shape, got {output_shape}.")
        self.output_shape = tuple(output_shape)
        self.output_num_channels = decoder_kwargs["output_num_channels"]
        self.decoder = PerceiverBasicDecoder(config, output_index_dims=tuple(output_shape[1:4]),
                                             position_encoding_type=position_encoding_type, **decoder_kwargs)

    @property
    def num_query_channels(self):
        return self.decoder.num_query_channels

    def decoder_query(self, inputs, modality_sizes=None, inputs_without_pos=None, subsampled_points=None):
        return self.decoder.decoder_query(inputs, modality_sizes, inputs_without_pos, subsampled_points)

    def construct(self, query, z, query_mask=None, output_attentions=False):
        logits, cross = self.decoder(query, z)
        return logits.reshape(self.output_shape + (logits.shape[-1],)), cross


def restructure(modality_sizes, inputs, names=None):
    """(B, N, C) -> {modality: its slice of the index axis}, the modalities in sorted order (`names`, already
    sorted, when known: a graph cannot sort a dict's keys)."""
    outputs, index = {}, 0
    for modality in names if names is not None else sorted(modality_sizes):
        size = modality_sizes[modality]
        outputs[modality] = inputs[:, index:index + size]
        index += size
    return outputs


class PerceiverMultimodalDecoder(nn.Cell):
    """Each modality's decoder builds its queries; they are padded to a common channel count with a learned
    per-modality vector, concatenated (sorted modality order) and decoded by one shared cross-attention."""

    def __init__(self, config, modalities, num_outputs, output_num_channels, min_padding_size=2,
                 subsampled_index_dims=None, **decoder_kwargs):
        super().__init__()
        self.modalities = nn.CellDict(modalities)
        self._names, self._sorted_names = tuple(modalities), tuple(sorted(modalities))
        self.subsampled_index_dims = subsampled_index_dims
        self.min_padding_size = min_padding_size
        self.output_num_channels = output_num_channels
        self.num_outputs = num_outputs
        self.decoder = PerceiverBasicDecoder(config, output_index_dims=(num_outputs,),
                                             output_num_channels=output_num_channels, position_encoding_type="none",
                                             num_channels=self.num_query_channels, **decoder_kwargs)
        self.padding = _ParameterDict({m: (1, self.num_query_channels - d.num_query_channels)
                                       for m, d in modalities.items()})

    @property
    def num_query_channels(self):
        return max(d.num_query_channels for d in self.modalities.values()) + self.min_padding_size

    def decoder_query(self, inputs, modality_sizes, inputs_without_pos=None, subsampled_points=None):
        inputs = restructure(modality_sizes, inputs, self._sorted_names)
        subsampled_points = subsampled_points if subsampled_points is not None else {}
        queries = {}
        for modality in self._names:
            without_pos = inputs_without_pos.get(modality, None) if inputs_without_pos is not None else None
            queries[modality] = self.modalities[modality].decoder_query(
                inputs[modality], None, without_pos, subsampled_points.get(modality, None))
        embedded = []
        for modality in self._sorted_names:
            x = queries[modality]
            x = x.reshape(x.shape[0], -1, x.shape[-1])
            pad = ops.broadcast_to(getattr(self.padding, modality)[None].astype(x.dtype),
                                   (x.shape[0], x.shape[1], self.num_query_channels - x.shape[2]))
            embedded.append(ops.cat((x, pad), 2))
        return ops.cat(embedded, 1)

    def construct(self, query, z, query_mask=None, output_attentions=False):
        return self.decoder(query, z, output_attentions=output_attentions)


class PerceiverMultimodalPostprocessor(nn.Cell):
    """Splits the decoder output by modality (sizes given) and applies each modality's postprocessor: a dict."""

    def __init__(self, modalities, input_is_dict=False):
        super().__init__()
        self.modalities = nn.CellDict(modalities)
        self._names, self._sorted_names = tuple(modalities), tuple(sorted(modalities))
        self.input_is_dict = input_is_dict

    def construct(self, inputs, pos=None, modality_sizes=None):
        if not self.input_is_dict:
            if modality_sizes is None:
                raise ValueError("Modality sizes should be specified if input is not a dictionary.")
            inputs = restructure(modality_sizes, inputs, self._sorted_names)
        outputs = {}
        for modality in self._names:
            outputs[modality] = self.modalities[modality](inputs[modality], pos=pos, modality_sizes=None)
        return outputs


class PerceiverClassificationPostprocessor(nn.Cell):
    """(B, N, C) -> (B, num_labels) logits of the first position."""

    def __init__(self, config, in_channels):
        super().__init__()
        self.classifier = Linear(in_channels, config.num_labels)

    def construct(self, inputs, pos=None, modality_sizes=None):
        return self.classifier(inputs)[:, 0, :]


class PerceiverAudioPostprocessor(nn.Cell):
    """(B, patches, C) -> (B, patches * samples_per_patch) audio samples."""

    def __init__(self, config, in_channels, postproc_type="patches"):
        super().__init__()
        if postproc_type != "patches":
            raise ValueError("Invalid postproc_type!")
        self.classifier = Linear(in_channels, config.samples_per_patch)

    def construct(self, inputs, pos=None, modality_sizes=None):
        return self.classifier(inputs).reshape(inputs.shape[0], -1)


class PerceiverProjectionPostprocessor(nn.Cell):
    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.classifier = Linear(in_channels, out_channels)

    def construct(self, inputs, pos=None, modality_sizes=None):
        return self.classifier(inputs)



class PerceiverEmbeddingDecoder(nn.Cell):
    """Vocabulary logits as the decoder output times the transposed input embedding table, plus a bias."""

    def __init__(self, config):
        super().__init__()
        self.vocab_size = config.vocab_size
        self.bias = new_parameter((config.vocab_size,), "zeros")

    def construct(self, hidden_states, embedding_layer):
        batch_size, seq_len, d_model = hidden_states.shape
        output = ops.matmul(hidden_states.reshape(-1, d_model), embedding_layer.weight.swapaxes(0, 1)) + self.bias
        return output.reshape(batch_size, seq_len, self.vocab_size)


class PerceiverPreTrainedModel(PreTrainedModel):
    config_class = PerceiverConfig
    base_model_prefix = "perceiver"
    main_input_name = "inputs"

    def _init_weights(self, cell):
        super()._init_weights(cell)
        std = self.config.initializer_range
        if isinstance(cell, PerceiverEmbeddings):
            init_parameter(cell.latents, Normal(std))
        elif isinstance(cell, PerceiverTrainablePositionEncoding):
            init_parameter(cell.position_embeddings, Normal(std))
        elif isinstance(cell, PerceiverEmbeddingDecoder):
            init_parameter(cell.bias, "zeros")
        elif isinstance(cell, _ParameterDict):
            for key in cell.keys():
                init_parameter(cell[key], Normal(std))


class PerceiverModel(PerceiverPreTrainedModel):
    def __init__(self, config: PerceiverConfig, decoder=None, input_preprocessor=None, output_postprocessor=None):
        super().__init__(config)
        self.input_preprocessor = input_preprocessor
        self.output_postprocessor = output_postprocessor
        self.embeddings = PerceiverEmbeddings(config)
        self.encoder = PerceiverEncoder(
            config, kv_dim=input_preprocessor.num_channels if input_preprocessor is not None else config.d_model)
        self.decoder = decoder
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.latents

    def _forward(self, inputs, attention_mask=None, output_attentions=None, output_hidden_states=None,
                 subsampled_output_points=None):
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        inputs_without_pos = modality_sizes = None
        # float inputs (features, pixels, audio; per modality for a dict) in the model's dtype, as the weights
        inputs = _to_dtype(inputs, self.embeddings.latents.dtype)
        if self.input_preprocessor is not None:
            inputs, modality_sizes, inputs_without_pos = self.input_preprocessor(inputs)
        elif inputs.shape[-1] != self.config.d_model:
            raise ValueError(f"Last dimension of the inputs: {inputs.shape[-1]} doesn't correspond to "
                             f"config.d_model: {self.config.d_model}. Make sure to set config.d_model appropriately.")
        batch_size, seq_length = inputs.shape[:2]
        if attention_mask is None:
            attention_mask = F.full((batch_size, seq_length), 1, ms.int64)
        latents = self.embeddings(batch_size)
        mask = create_bidirectional_mask(attention_mask, latents.shape[1], inputs.dtype)
        last, hidden, attentions, cross = self.encoder(latents, inputs, mask, output_attentions,
                                                       output_hidden_states)
        logits = None
        if self.decoder is not None:
            output_modality_sizes = modality_sizes
            if subsampled_output_points is not None:
                output_modality_sizes = {"audio": subsampled_output_points["audio"].shape[0],
                                         "image": subsampled_output_points["image"].shape[0], "label": 1}
            query = self.decoder.decoder_query(inputs, modality_sizes, inputs_without_pos,
                                               subsampled_points=subsampled_output_points)
            logits, decoder_cross = self.decoder(query, last, mask, output_attentions)
            if output_attentions and decoder_cross is not None:
                cross = cross + decoder_cross
            if self.output_postprocessor is not None:
                logits = self.output_postprocessor(logits, modality_sizes=output_modality_sizes)
        return {"logits": logits, "last_hidden_state": last, "hidden_states": hidden, "attentions": attentions,
                "cross_attentions": cross}

    def construct(self, inputs, attention_mask=None, subsampled_output_points=None, output_attentions=None,
                  output_hidden_states=None, interpolate_pos_encoding=False, return_dict=None, **kwargs):
        r"""
        Args:
            inputs: (B, S, d_model) features, or what the model's input preprocessor takes (token ids for text,
                a {modality: tensor} dict for the multimodal preprocessor).
            attention_mask: (B, S) 1 for real inputs (the latents' cross-attention skips the others).
            subsampled_output_points: {modality: flat output indices (or None)} for the multimodal decoder's
                queries: only these outputs are decoded.
        Returns `logits` (with a decoder; a {modality: tensor} dict after the multimodal postprocessor),
        `last_hidden_state` (B, num_latents, d_latents) and, when asked, `hidden_states`, `attentions` and
        `cross_attentions` (encoder's, then the decoder's).
        """
        if interpolate_pos_encoding:
            raise NotImplementedError("PerceiverModel: interpolate_pos_encoding (image inputs) is not implemented "
                                      "yet")
        fields = self._forward(inputs, attention_mask, output_attentions, output_hidden_states,
                               subsampled_output_points)
        return model_output(PerceiverModelOutput, fields, return_dict is not False)


def _to_dtype(inputs, dtype):
    if isinstance(inputs, dict):
        return {k: _to_dtype(v, dtype) for k, v in inputs.items()}
    return inputs.astype(dtype) if ops.is_floating_point(inputs) else inputs


def _text_inputs(inputs, input_ids):
    if inputs is not None and input_ids is not None:
        raise ValueError("You cannot use both `inputs` and `input_ids`")
    return input_ids if inputs is None else inputs


class PerceiverForMaskedLM(PerceiverPreTrainedModel):
    def __init__(self, config: PerceiverConfig):
        super().__init__(config)
        text_preprocessor = PerceiverTextPreprocessor(config)
        self.perceiver = PerceiverModel(
            config, input_preprocessor=text_preprocessor,
            decoder=PerceiverBasicDecoder(
                config, output_num_channels=config.d_latents, output_index_dims=config.max_position_embeddings,
                num_channels=text_preprocessor.num_channels, qk_channels=8 * 32,
                v_channels=text_preprocessor.num_channels, num_heads=8, use_query_residual=False,
                final_project=False,
                trainable_position_encoding_kwargs={"num_channels": text_preprocessor.num_channels,
                                                    "index_dims": config.max_position_embeddings}))
        self.embedding_decoder = PerceiverEmbeddingDecoder(config)
        self.post_init()

    def construct(self, inputs=None, attention_mask=None, output_attentions=None, output_hidden_states=None,
                  labels=None, return_dict=None, input_ids=None, **kwargs):
        r"""
        Args:
            inputs / input_ids: (B, S) byte-level token ids (PerceiverTokenizer).
            labels: (B, max_position_embeddings) targets, -100 ignored: the decoder predicts every position up to
                `config.max_position_embeddings` (inputs are padded to it, as HF's examples do).
        Returns `logits` (B, max_position_embeddings, vocab_size).
        """
        outputs = self.perceiver._forward(_text_inputs(inputs, input_ids), attention_mask, output_attentions,
                                          output_hidden_states)
        logits = self.embedding_decoder(outputs["logits"], self.perceiver.input_preprocessor.embeddings)
        loss = masked_lm_loss(logits, labels, self.config.vocab_size) if labels is not None else None
        fields = {"loss": loss, "logits": logits, "hidden_states": outputs["hidden_states"],
                  "attentions": outputs["attentions"], "cross_attentions": outputs["cross_attentions"]}
        return model_output(PerceiverMaskedLMOutput, fields, return_dict is not False)


class PerceiverForSequenceClassification(PerceiverPreTrainedModel):
    def __init__(self, config: PerceiverConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.perceiver = PerceiverModel(
            config, input_preprocessor=PerceiverTextPreprocessor(config),
            decoder=PerceiverClassificationDecoder(
                config, num_channels=config.d_latents, use_query_residual=True,
                trainable_position_encoding_kwargs={"num_channels": config.d_latents, "index_dims": 1}))
        self.post_init()

    def construct(self, inputs=None, attention_mask=None, output_attentions=None, output_hidden_states=None,
                  labels=None, return_dict=None, input_ids=None, **kwargs):
        r"""
        Args:
            labels: (B,) class indices (cross-entropy), floats for regression (`num_labels == 1`) or multi-label.
        """
        outputs = self.perceiver._forward(_text_inputs(inputs, input_ids), attention_mask, output_attentions,
                                          output_hidden_states)
        logits = outputs["logits"]
        loss = sequence_classification_loss(labels, logits, self.config) if labels is not None else None
        fields = {"loss": loss, "logits": logits, "hidden_states": outputs["hidden_states"],
                  "attentions": outputs["attentions"], "cross_attentions": outputs["cross_attentions"]}
        return model_output(PerceiverClassifierOutput, fields, return_dict is not False)


class _PerceiverImageClassifier(PerceiverPreTrainedModel):
    """Shared forward of the image classification heads: `inputs` / `pixel_values` (B, C, H, W)."""

    main_input_name = "pixel_values"

    def _classifier_decoder(self, config):
        return PerceiverClassificationDecoder(
            config, num_channels=config.d_latents, use_query_residual=True,
            trainable_position_encoding_kwargs={"num_channels": config.d_latents, "index_dims": 1})

    def construct(self, inputs=None, attention_mask=None, output_attentions=None, output_hidden_states=None,
                  labels=None, interpolate_pos_encoding=False, return_dict=None, pixel_values=None, **kwargs):
        r"""
        Args:
            inputs / pixel_values: (B, C, H, W) images (PerceiverImageProcessor).
            labels: (B,) class indices (cross-entropy), floats for regression or multi-label.
        """
        if inputs is not None and pixel_values is not None:
            raise ValueError("You cannot use both `inputs` and `pixel_values`")
        if interpolate_pos_encoding:
            raise NotImplementedError("Perceiver: interpolate_pos_encoding is not implemented yet")
        outputs = self.perceiver._forward(pixel_values if inputs is None else inputs, attention_mask,
                                          output_attentions, output_hidden_states)
        logits = outputs["logits"]
        loss = sequence_classification_loss(labels, logits, self.config) if labels is not None else None
        fields = {"loss": loss, "logits": logits, "hidden_states": outputs["hidden_states"],
                  "attentions": outputs["attentions"], "cross_attentions": outputs["cross_attentions"]}
        return model_output(PerceiverClassifierOutput, fields, return_dict is not False)


class PerceiverForImageClassificationLearned(_PerceiverImageClassifier):
    """1x1 conv to 256 channels, concatenated with 256 projected learned positions (one per pixel of
    `config.image_size` x `config.image_size`)."""

    def __init__(self, config: PerceiverConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.perceiver = PerceiverModel(
            config,
            input_preprocessor=PerceiverImagePreprocessor(
                config, prep_type="conv1x1", spatial_downsample=1, out_channels=256,
                position_encoding_type="trainable", concat_or_add_pos="concat", project_pos_dim=256,
                trainable_position_encoding_kwargs={"num_channels": 256, "index_dims": config.image_size ** 2}),
            decoder=self._classifier_decoder(config))
        self.post_init()


class PerceiverForImageClassificationFourier(_PerceiverImageClassifier):
    """Raw pixels concatenated with Fourier features of their position (64 bands per axis up to 224 / 2)."""

    def __init__(self, config: PerceiverConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.perceiver = PerceiverModel(
            config,
            input_preprocessor=PerceiverImagePreprocessor(
                config, prep_type="pixels", spatial_downsample=1,
                fourier_position_encoding_kwargs={"concat_pos": True, "max_resolution": (224, 224),
                                                  "num_bands": 64, "sine_only": False}),
            decoder=self._classifier_decoder(config))
        self.post_init()


class PerceiverForImageClassificationConvProcessing(_PerceiverImageClassifier):
    """7x7 conv + batch norm + ReLU + max pool (64 channels, 4x smaller), concatenated with Fourier features of the
    pooled grid (64 bands per axis up to 56 / 2)."""

    def __init__(self, config: PerceiverConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.perceiver = PerceiverModel(
            config,
            input_preprocessor=PerceiverImagePreprocessor(
                config, prep_type="conv", spatial_downsample=1, position_encoding_type="fourier",
                fourier_position_encoding_kwargs={"concat_pos": True, "max_resolution": (56, 56), "num_bands": 64,
                                                  "sine_only": False}),
            decoder=self._classifier_decoder(config))
        self.post_init()


class PerceiverForOpticalFlow(PerceiverPreTrainedModel):
    """Two frames of 3x3 patches around each pixel, (B, 2, 27, H, W) with (H, W) = `config.train_size`: the frames'
    54 values per pixel through a linear layer, concatenated with Fourier features of the pixel grid; the same
    inputs are the decoder's queries. Logits: (B, H, W, 2) flow."""

    def __init__(self, config: PerceiverConfig):
        super().__init__(config)
        fourier_kwargs = {"num_bands": 64, "max_resolution": config.train_size, "sine_only": False,
                          "concat_pos": True}
        image_preprocessor = PerceiverImagePreprocessor(
            config, prep_type="patches", spatial_downsample=1, conv_after_patching=True,
            conv_after_patching_in_channels=54, temporal_downsample=2, position_encoding_type="fourier",
            fourier_position_encoding_kwargs=fourier_kwargs)
        self.perceiver = PerceiverModel(
            config, input_preprocessor=image_preprocessor,
            decoder=PerceiverOpticalFlowDecoder(
                config, num_channels=image_preprocessor.num_channels, output_image_shape=config.train_size,
                rescale_factor=100.0, use_query_residual=False, output_num_channels=2,
                position_encoding_type="fourier", fourier_position_encoding_kwargs=dict(fourier_kwargs)))
        self.post_init()

    def construct(self, inputs=None, attention_mask=None, output_attentions=None, output_hidden_states=None,
                  labels=None, return_dict=None, **kwargs):
        r"""
        Args:
            inputs: (B, 2, 27, H, W) patches of two frames.
            labels: not supported (HF raises too).
        Returns `logits` (B, H, W, 2).
        """
        if labels is not None:
            raise NotImplementedError("Optical flow training is not yet supported")
        outputs = self.perceiver._forward(inputs, attention_mask, output_attentions, output_hidden_states)
        fields = {"loss": None, "logits": outputs["logits"], "hidden_states": outputs["hidden_states"],
                  "attentions": outputs["attentions"], "cross_attentions": outputs["cross_attentions"]}
        return model_output(PerceiverClassifierOutput, fields, return_dict is not False)


class PerceiverForMultimodalAutoencoding(PerceiverPreTrainedModel):
    """Video autoencoding (Kinetics-700): audio patches, image 4x4 patches of every frame and a label (masked: a
    learned token) with Fourier / no positions, padded to one channel count and concatenated; the decoder queries
    the outputs picked by `subsampled_output_points` (Fourier features of their positions, a learned label query)
    and the postprocessors turn them into {"audio": (B, samples), "image": (B, points, 3), "label": (B, labels)}."""

    def __init__(self, config: PerceiverConfig):
        super().__init__(config)
        n_audio_samples = config.num_frames * config.audio_samples_per_frame
        audio_fourier = {"num_bands": 192, "max_resolution": (n_audio_samples,), "sine_only": False,
                         "concat_pos": True}
        image_fourier = {"num_bands": 32, "max_resolution": (config.num_frames, config.image_size, config.image_size),
                         "sine_only": False, "concat_pos": True}
        input_preprocessor = PerceiverMultimodalPreprocessor(
            min_padding_size=4,
            modalities={
                "audio": PerceiverAudioPreprocessor(config, position_encoding_type="fourier",
                                                    fourier_position_encoding_kwargs=dict(audio_fourier),
                                                    prep_type="patches", samples_per_patch=config.samples_per_patch),
                "image": PerceiverImagePreprocessor(config, position_encoding_type="fourier",
                                                    fourier_position_encoding_kwargs=dict(image_fourier),
                                                    prep_type="patches", spatial_downsample=4, temporal_downsample=1),
                "label": PerceiverOneHotPreprocessor(config),
            },
            mask_probs={"image": 0.0, "audio": 0.0, "label": 1.0})
        image_decoder = PerceiverBasicVideoAutoencodingDecoder(
            config, concat_preprocessed_input=False, output_shape=config.output_shape,
            output_num_channels=config.output_num_channels, use_query_residual=False, position_encoding_only=True,
            position_encoding_type="fourier", fourier_position_encoding_kwargs=dict(image_fourier))
        decoder = PerceiverMultimodalDecoder(
            config, concat_preprocessed_input=False,
            modalities={
                "audio": PerceiverBasicDecoder(
                    config, concat_preprocessed_input=False,
                    output_index_dims=(n_audio_samples // config.samples_per_patch,),
                    output_num_channels=config.output_num_channels, use_query_residual=False,
                    position_encoding_only=True, position_encoding_type="fourier",
                    fourier_position_encoding_kwargs=dict(audio_fourier)),
                "image": image_decoder,
                "label": PerceiverClassificationDecoder(
                    config, concat_preprocessed_input=False, use_query_residual=False, position_encoding_only=True,
                    position_encoding_type="trainable",
                    trainable_position_encoding_kwargs={"num_channels": config._label_trainable_num_channels,
                                                        "index_dims": 1}),
            },
            num_outputs=None, output_num_channels=config.output_num_channels, use_query_residual=False)
        output_postprocessor = PerceiverMultimodalPostprocessor(modalities={
            "audio": PerceiverAudioPostprocessor(config, in_channels=config.output_num_channels),
            "image": PerceiverProjectionPostprocessor(in_channels=config.output_num_channels, out_channels=3),
            "label": PerceiverClassificationPostprocessor(config, in_channels=config.output_num_channels),
        })
        self.perceiver = PerceiverModel(config, input_preprocessor=input_preprocessor, decoder=decoder,
                                        output_postprocessor=output_postprocessor)
        self.post_init()

    def construct(self, inputs=None, attention_mask=None, subsampled_output_points=None, output_attentions=None,
                  output_hidden_states=None, labels=None, return_dict=None, **kwargs):
        r"""
        Args:
            inputs: {"audio": (B, samples, 1), "image": (B, T, C, H, W), "label": (B, num_labels)}.
            subsampled_output_points: {"audio": flat patch indices, "image": flat (T, H, W) indices, "label": None}
                (HF needs them: without, its decoder queries do not match the outputs).
            labels: not supported (HF raises too).
        Returns `logits` {"audio": (B, points * samples_per_patch), "image": (B, points, 3),
        "label": (B, num_labels)}.
        """
        if labels is not None:
            raise NotImplementedError("Multimodal autoencoding training is not yet supported")
        outputs = self.perceiver._forward(inputs, attention_mask, output_attentions, output_hidden_states,
                                          subsampled_output_points)
        fields = {"loss": None, "logits": outputs["logits"], "hidden_states": outputs["hidden_states"],
                  "attentions": outputs["attentions"], "cross_attentions": outputs["cross_attentions"]}
        return model_output(PerceiverClassifierOutput, fields, return_dict is not False)


__all__ = ["PerceiverModel", "PerceiverForMaskedLM", "PerceiverForSequenceClassification",
           "PerceiverForImageClassificationLearned", "PerceiverForImageClassificationFourier",
           "PerceiverForImageClassificationConvProcessing", "PerceiverForOpticalFlow",
           "PerceiverForMultimodalAutoencoding", "PerceiverPreTrainedModel"]
