"""Perceiver IO on MindSpore: HF's `modeling_perceiver.py` checkpoint keys, signatures and outputs (text part).

A fixed set of learned latents cross-attends once to the (preprocessed) inputs, then runs `num_blocks` x
`num_self_attends_per_block` self-attention layers (pre-norm attention and MLP, residual). A decoder builds queries
(learned position encodings) that cross-attend to the latents: one query per output position for masked language
modeling (logits through the transposed input embedding), one query for classification.

Provided: `PerceiverModel` (raw `d_model` inputs, or with the text / image preprocessors and basic /
classification decoders given as arguments), `PerceiverForMaskedLM`, `PerceiverForSequenceClassification`,
`PerceiverForImageClassificationLearned` (1x1 conv + learned positions), `PerceiverForImageClassificationFourier`
(raw pixels + Fourier position features). Not yet: the conv-processing image head (`Conv2DDownsample`), optical
flow, multimodal autoencoding, `interpolate_pos_encoding`.
"""

from dataclasses import dataclass
from typing import Any, Optional, Tuple

import mindspore as ms
import numpy as np
from mindspore import nn, ops
from mindspore.common.initializer import Normal
from transformers import PerceiverConfig

from ...backend import functional as F
from ...backend.layers import Conv2d, Embedding, LayerNorm, Linear, new_parameter
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


@ops.constexpr
def _fourier_features(index_dims, num_bands, max_resolution, concat_pos, sine_only):
    """(prod(index_dims), channels) Fourier position features of a [-1, 1] grid (HF's generate_fourier_features,
    float32 like torch): [positions,] sin(pi * pos * f) [, cos(pi * pos * f)] for `num_bands` frequencies per
    dimension from 1 to resolution / 2."""
    grids = np.meshgrid(*[_linspace_float32(-1.0, 1.0, n) for n in index_dims], indexing="ij")
    pos = np.stack(grids, -1).reshape(-1, len(index_dims)).astype(np.float32)
    bands = np.stack([_linspace_float32(1.0, res / 2, num_bands) for res in max_resolution])
    per_pos = (pos[:, :, None] * bands[None]).reshape(pos.shape[0], -1)
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

    def construct(self, index_dims, batch_size, dtype):
        table = _fourier_features(tuple(index_dims), self.num_bands, self.max_resolution, self.concat_pos,
                                  self.sine_only).astype(dtype)
        return ops.broadcast_to(table[None], (batch_size,) + tuple(table.shape))


class PerceiverImagePreprocessor(nn.Cell):
    """Images (B, C, H, W) -> (B, H' * W', channels): a 1x1 conv (`prep_type="conv1x1"`) or the raw pixels
    (`"pixels"`), with learned (`"trainable"`) or Fourier position encodings concatenated or added."""

    def __init__(self, config, prep_type="conv", spatial_downsample=4, temporal_downsample=1,
                 position_encoding_type="fourier", in_channels=3, out_channels=64, conv_after_patching=False,
                 conv_after_patching_in_channels=54, conv2d_use_batchnorm=True, concat_or_add_pos="concat",
                 project_pos_dim=-1, trainable_position_encoding_kwargs=None, fourier_position_encoding_kwargs=None):
        super().__init__()
        if prep_type not in ("conv", "patches", "pixels", "conv1x1"):
            raise ValueError(f"Prep_type {prep_type} is invalid")
        if prep_type not in ("pixels", "conv1x1") or conv_after_patching or temporal_downsample != 1:
            raise NotImplementedError(f"PerceiverImagePreprocessor: prep_type {prep_type!r} (or conv after patching, "
                                      "temporal downsampling) is not implemented yet; 'conv1x1' and 'pixels' are")
        if concat_or_add_pos not in ("concat", "add"):
            raise ValueError(f"Invalid value {concat_or_add_pos} for concat_or_add_pos.")
        self.config = config
        self.in_channels, self.out_channels = in_channels, out_channels
        self.prep_type = prep_type
        self.spatial_downsample = spatial_downsample
        self.position_encoding_type = position_encoding_type
        self.concat_or_add_pos = concat_or_add_pos
        self.project_pos_dim = project_pos_dim
        if prep_type == "conv1x1":
            self.convnet_1x1 = Conv2d(in_channels, out_channels, kernel_size=(1, 1),
                                      stride=(spatial_downsample, spatial_downsample))
        if position_encoding_type == "trainable":
            if not trainable_position_encoding_kwargs:
                raise ValueError("Make sure to pass trainable_position_encoding_kwargs")
            self.position_embeddings = PerceiverTrainablePositionEncoding(**trainable_position_encoding_kwargs)
        elif position_encoding_type == "fourier":
            if not fourier_position_encoding_kwargs:
                raise ValueError("Make sure to pass fourier_position_encoding_kwargs")
            self.position_embeddings = PerceiverFourierPositionEncoding(**fourier_position_encoding_kwargs)
        else:
            raise ValueError(f"Unknown position encoding type: {position_encoding_type}.")
        self.positions_projection = Linear(out_channels, project_pos_dim) if project_pos_dim > 0 else None

    @property
    def num_channels(self):
        pos_dim = self.project_pos_dim if self.project_pos_dim > 0 else self.position_embeddings.output_size()
        if self.concat_or_add_pos == "add":
            return pos_dim
        if self.prep_type == "conv1x1":
            return self.out_channels + pos_dim
        return -(-self.in_channels // self.spatial_downsample) + pos_dim

    def construct(self, inputs, pos=None, network_input_is_1d=True, interpolate_pos_encoding=False):
        """Returns (inputs with positions, modality sizes (None), inputs without positions)."""
        if self.prep_type == "conv1x1":
            inputs = self.convnet_1x1(inputs.astype(self.convnet_1x1.weight.dtype))
        else:
            # HF slices the batch and channel axes of a 4D input here ([::s, ::s]): the same for s = 1
            inputs = inputs[::self.spatial_downsample, ::self.spatial_downsample]
        inputs = inputs.permute(0, 2, 3, 1)
        batch_size, height, width = inputs.shape[:3]
        inputs = inputs.reshape(batch_size, height * width, -1)
        if self.position_encoding_type == "trainable":
            pos_enc = self.position_embeddings(batch_size)
        else:
            pos_enc = self.position_embeddings((height, width), batch_size, inputs.dtype)
        if self.positions_projection is not None:
            pos_enc = self.positions_projection(pos_enc)
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


class PerceiverBasicDecoder(nn.Cell):
    """Queries from a trainable position encoding cross-attend to the latents (then an optional projection)."""

    def __init__(self, config, output_num_channels, position_encoding_type="trainable", output_index_dims=None,
                 num_channels=128, subsampled_index_dims=None, qk_channels=None, v_channels=None, num_heads=1,
                 widening_factor=1, use_query_residual=False, concat_preprocessed_input=False, final_project=True,
                 position_encoding_only=False, trainable_position_encoding_kwargs=None, project_pos_dim=-1):
        super().__init__()
        if position_encoding_type != "trainable":
            raise NotImplementedError(f"PerceiverBasicDecoder: position_encoding_type {position_encoding_type!r} is "
                                      "not implemented yet (only 'trainable')")
        if not trainable_position_encoding_kwargs:
            raise ValueError("Make sure to pass trainable_position_encoding_kwargs")
        self.output_num_channels = output_num_channels
        self.position_encoding_type = position_encoding_type
        self.output_position_encodings = PerceiverTrainablePositionEncoding(**trainable_position_encoding_kwargs)
        self.positions_projection = (Linear(self.output_position_encodings.output_size(), project_pos_dim)
                                     if project_pos_dim > 0 else None)
        self.output_index_dims = output_index_dims
        self.num_channels = num_channels
        self.concat_preprocessed_input = concat_preprocessed_input
        self.final_project = final_project
        self.position_encoding_only = position_encoding_only
        if not position_encoding_only:
            self.decoding_cross_attention = PerceiverLayer(
                config, is_cross_attention=True, qk_channels=qk_channels, v_channels=v_channels,
                num_heads=num_heads, q_dim=num_channels, kv_dim=config.d_latents, widening_factor=widening_factor,
                use_query_residual=use_query_residual)
            self.final_layer = Linear(num_channels, output_num_channels) if final_project else None

    def decoder_query(self, inputs, modality_sizes=None, inputs_without_pos=None, subsampled_points=None):
        if subsampled_points is not None:
            raise NotImplementedError("PerceiverBasicDecoder: subsampled_points are not implemented yet")
        pos_emb = self.output_position_encodings(inputs.shape[0])
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

    def decoder_query(self, inputs, modality_sizes=None, inputs_without_pos=None, subsampled_points=None):
        return self.decoder.decoder_query(inputs, modality_sizes, inputs_without_pos, subsampled_points)

    def construct(self, query, z, query_mask=None, output_attentions=False):
        logits, cross = self.decoder(query, z, output_attentions=output_attentions)
        return logits[:, 0, :], cross


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


class PerceiverModel(PerceiverPreTrainedModel):
    def __init__(self, config: PerceiverConfig, decoder=None, input_preprocessor=None, output_postprocessor=None):
        super().__init__(config)
        if output_postprocessor is not None:
            raise NotImplementedError("PerceiverModel: output postprocessors are not implemented yet")
        self.input_preprocessor = input_preprocessor
        self.output_postprocessor = None
        self.embeddings = PerceiverEmbeddings(config)
        self.encoder = PerceiverEncoder(
            config, kv_dim=input_preprocessor.num_channels if input_preprocessor is not None else config.d_model)
        self.decoder = decoder
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.latents

    def _forward(self, inputs, attention_mask=None, output_attentions=None, output_hidden_states=None):
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        inputs_without_pos = modality_sizes = None
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
            query = self.decoder.decoder_query(inputs, modality_sizes, inputs_without_pos)
            logits, decoder_cross = self.decoder(query, last, mask, output_attentions)
            if output_attentions and decoder_cross is not None:
                cross = cross + decoder_cross
        return {"logits": logits, "last_hidden_state": last, "hidden_states": hidden, "attentions": attentions,
                "cross_attentions": cross}

    def construct(self, inputs, attention_mask=None, subsampled_output_points=None, output_attentions=None,
                  output_hidden_states=None, interpolate_pos_encoding=False, return_dict=None, **kwargs):
        r"""
        Args:
            inputs: (B, S, d_model) features, or what the model's input preprocessor takes (token ids for text).
            attention_mask: (B, S) 1 for real inputs (the latents' cross-attention skips the others).
        Returns `logits` (with a decoder), `last_hidden_state` (B, num_latents, d_latents) and, when asked,
        `hidden_states`, `attentions` and `cross_attentions` (encoder's, then the decoder's).
        """
        if subsampled_output_points is not None:
            raise NotImplementedError("PerceiverModel: subsampled_output_points are not implemented yet")
        if interpolate_pos_encoding:
            raise NotImplementedError("PerceiverModel: interpolate_pos_encoding (image inputs) is not implemented "
                                      "yet")
        fields = self._forward(inputs, attention_mask, output_attentions, output_hidden_states)
        return model_output(PerceiverModelOutput, fields, return_dict is not False)


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


__all__ = ["PerceiverModel", "PerceiverForMaskedLM", "PerceiverForSequenceClassification",
           "PerceiverForImageClassificationLearned", "PerceiverForImageClassificationFourier",
           "PerceiverPreTrainedModel"]
