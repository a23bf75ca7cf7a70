"""Wav2Vec2 on MindSpore: HF's `modeling_wav2vec2.py` structure, names and outputs; device concerns live in `backend`.

Raw 16 kHz audio -> a stack of strided 1-D convolutions (the feature encoder, ~20 ms per frame) -> LayerNorm +
projection -> a convolutional relative position embedding (a grouped conv under weight norm) -> Transformer layers,
post-norm (`do_stable_layer_norm=False`, wav2vec2-base) or pre-norm (`True`, the "large-lv60" checkpoints). Heads:
CTC (`lm_head`), utterance classification (mean-pooled projector + classifier), frame classification, x-vector
(TDNN + statistics pooling + AM-softmax loss).

Pre-training (`Wav2Vec2ForPreTraining`): Gumbel vector quantizer, contrastive loss over given
`sampled_negative_indices` and `mask_time_indices` (HF's `_compute_mask_indices` / `_sample_negative_indices` make them),
codebook-diversity loss.

Training: SpecAugment (random time and feature spans) and LayerDrop are drawn from numpy's global RNG in PyNative,
in HF's order (a seeded numpy gives HF's time/feature masks); a compiled (graph) training step applies neither.

Adapters: `config.add_adapter` appends strided Conv1d + GLU layers (optionally after a down-projection to
`output_hidden_size`) to the encoder's output; `config.adapter_attn_dim` adds a small bottleneck after every pre-norm
layer (MMS), whose weights and `lm_head` per language `load_adapter(target_lang)` reads from
`adapter.<lang>.safetensors` (or `.bin`) beside the checkpoint (`from_pretrained(..., target_lang=...)` too).
"""

import logging
from dataclasses import dataclass
from typing import Any, Optional, Tuple

import mindspore as ms
import numpy as np
from mindspore import nn, ops
from mindspore.common.initializer import Constant, HeNormal, Normal, One, Uniform, Zero
from transformers import Wav2Vec2Config

from ...backend import functional as F
from ...backend import runtime
from ...backend.layers import Conv1d, Dropout, GroupNorm, LayerNorm, Linear, WeightNormConv1d, new_parameter
from ...loss_utils import fixed_cross_entropy
from ...masking_utils import create_bidirectional_mask
from ...modeling_layers import GradientCheckpointingLayer
from ...modeling_outputs import (
    model_output,
    CausalLMOutput,
    ModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
    Wav2Vec2BaseModelOutput,
    XVectorOutput,
)
from ...modeling_utils import PreTrainedModel, init_parameter

logger = logging.getLogger(__name__)


@dataclass
class Wav2Vec2ForPreTrainingOutput(ModelOutput):
    """Output type of `Wav2Vec2ForPreTraining`; the losses are set when `sampled_negative_indices` are passed."""

    loss: Any = None
    projected_states: Any = None
    projected_quantized_states: Any = None
    codevector_perplexity: Any = None
    hidden_states: Optional[Tuple[Any, ...]] = None
    attentions: Optional[Tuple[Any, ...]] = None
    contrastive_loss: Any = None
    diversity_loss: Any = None


def _compute_mask_indices(shape, mask_prob, mask_length, input_lengths=None, min_masks=0):
    """SpecAugment's random spans, HF's rule: (batch, length) bool numpy mask, drawn from numpy's global RNG.

    Each row gets `int(mask_prob * length / mask_length + u)` spans (u ~ U[0, 1) shared by the batch, at least
    `min_masks`, at most what fits) of `mask_length` frames, their starts drawn without replacement among a row's
    real frames (`input_lengths`); spans may overlap. The draws are made in HF's order, so a seeded numpy RNG gives
    HF's masks.
    """
    batch_size, sequence_length = shape
    if mask_length < 1:
        raise ValueError("`mask_length` has to be bigger than 0.")
    if mask_length > sequence_length:
        raise ValueError(f"`mask_length` has to be smaller than `sequence_length`, but got `mask_length`: "
                         f"{mask_length} and `sequence_length`: {sequence_length}`")
    u = np.random.rand(1).item()

    def num_spans(length):
        n = max(int(mask_prob * length / mask_length + u), min_masks)
        n = min(n, sequence_length // mask_length)
        return min(n, max(length - (mask_length - 1), 0))

    mask = np.zeros((batch_size, sequence_length), dtype=bool)
    if num_spans(sequence_length) == 0:
        return mask
    lengths = [sequence_length] * batch_size if input_lengths is None else [int(n) for n in input_lengths]
    for row, length in enumerate(lengths):
        starts = np.random.choice(np.arange(length - (mask_length - 1)), num_spans(length), replace=False)
        for start in starts:
            mask[row, start:min(start + mask_length, sequence_length)] = True
    return mask


# ---- feature encoder: raw audio -> frames ----------------------------------------------------------------------


class Wav2Vec2NoLayerNormConvLayer(GradientCheckpointingLayer):
    def __init__(self, config, layer_id=0):
        super().__init__()
        self.in_conv_dim = config.conv_dim[layer_id - 1] if layer_id > 0 else 1
        self.out_conv_dim = config.conv_dim[layer_id]
        self.conv = Conv1d(self.in_conv_dim, self.out_conv_dim, kernel_size=config.conv_kernel[layer_id],
                           stride=config.conv_stride[layer_id], bias=config.conv_bias)
        self.activation = F.get_activation(config.feat_extract_activation)

    def construct(self, hidden_states):
        return self.activation(self.conv(hidden_states))


class Wav2Vec2LayerNormConvLayer(GradientCheckpointingLayer):
    """Conv, LayerNorm over the channels of each frame, activation (`feat_extract_norm="layer"`)."""

    def __init__(self, config, layer_id=0):
        super().__init__()
        self.in_conv_dim = config.conv_dim[layer_id - 1] if layer_id > 0 else 1
        self.out_conv_dim = config.conv_dim[layer_id]
        self.conv = Conv1d(self.in_conv_dim, self.out_conv_dim, kernel_size=config.conv_kernel[layer_id],
                           stride=config.conv_stride[layer_id], bias=config.conv_bias)
        self.layer_norm = LayerNorm(self.out_conv_dim)
        self.activation = F.get_activation(config.feat_extract_activation)

    def construct(self, hidden_states):
        hidden_states = self.layer_norm(self.conv(hidden_states).swapaxes(-2, -1)).swapaxes(-2, -1)
        return self.activation(hidden_states)


class Wav2Vec2GroupNormConvLayer(GradientCheckpointingLayer):
    """First layer of `feat_extract_norm="group"`: GroupNorm with one group per channel, i.e. each channel is
    normalised over the whole (padded) time axis -- which is why these checkpoints are fed no attention mask."""

    def __init__(self, config, layer_id=0):
        super().__init__()
        self.in_conv_dim = config.conv_dim[layer_id - 1] if layer_id > 0 else 1
        self.out_conv_dim = config.conv_dim[layer_id]
        self.conv = Conv1d(self.in_conv_dim, self.out_conv_dim, kernel_size=config.conv_kernel[layer_id],
                           stride=config.conv_stride[layer_id], bias=config.conv_bias)
        self.activation = F.get_activation(config.feat_extract_activation)
        self.layer_norm = GroupNorm(num_groups=self.out_conv_dim, num_channels=self.out_conv_dim, affine=True)

    def construct(self, hidden_states):
        return self.activation(self.layer_norm(self.conv(hidden_states)))


class Wav2Vec2FeatureEncoder(nn.Cell):
    """Construct the features from raw audio waveform: (B, L) samples -> (B, conv_dim[-1], frames)."""

    def __init__(self, config):
        super().__init__()
        if config.feat_extract_norm == "group":
            conv_layers = [Wav2Vec2GroupNormConvLayer(config, layer_id=0)] + [
                Wav2Vec2NoLayerNormConvLayer(config, layer_id=i + 1) for i in range(config.num_feat_extract_layers - 1)
            ]
        elif config.feat_extract_norm == "layer":
            conv_layers = [Wav2Vec2LayerNormConvLayer(config, layer_id=i)
                           for i in range(config.num_feat_extract_layers)]
        else:
            raise ValueError(f"`config.feat_extract_norm` is {config.feat_extract_norm}, but has to be one of "
                             "['group', 'layer']")
        self.conv_layers = nn.CellList(conv_layers)

    def _freeze_parameters(self):
        for param in self.get_parameters():
            param.requires_grad = False

    def construct(self, input_values):
        hidden_states = input_values[:, None]
        for conv_layer in self.conv_layers:
            hidden_states = conv_layer(hidden_states)
        return hidden_states


class Wav2Vec2FeatureProjection(nn.Cell):
    def __init__(self, config):
        super().__init__()
        self.layer_norm = LayerNorm(config.conv_dim[-1], eps=config.layer_norm_eps)
        self.projection = Linear(config.conv_dim[-1], config.hidden_size)
        self.dropout = Dropout(config.feat_proj_dropout)

    def construct(self, hidden_states):
        # the normalised, unprojected features are returned too (`extract_features`; the quantizer's input)
        norm_hidden_states = self.layer_norm(hidden_states)
        return self.dropout(self.projection(norm_hidden_states)), norm_hidden_states


# ---- Transformer encoder -----------------------------------------------------------------------------------------


class Wav2Vec2PositionalConvEmbedding(nn.Cell):
    """Relative positions from a wide grouped convolution over time, under weight norm over the kernel axis (dim=2);
    an even kernel gives one frame too many, which is cut from the end (HF's `Wav2Vec2SamePadLayer`)."""

    def __init__(self, config):
        super().__init__()
        self.conv = WeightNormConv1d(config.hidden_size, config.hidden_size, kernel_size=config.num_conv_pos_embeddings,
                                     padding=config.num_conv_pos_embeddings // 2,
                                     groups=config.num_conv_pos_embedding_groups, dim=2)
        self.num_pad_remove = 1 if config.num_conv_pos_embeddings % 2 == 0 else 0
        self.activation = F.get_activation(config.feat_extract_activation)

    def construct(self, hidden_states):
        hidden_states = self.conv(hidden_states.swapaxes(1, 2))
        if self.num_pad_remove > 0:
            hidden_states = hidden_states[:, :, :-self.num_pad_remove]
        return self.activation(hidden_states).swapaxes(1, 2)


class Wav2Vec2Attention(nn.Cell):
    """Multi-headed attention from 'Attention Is All You Need' paper"""

    def __init__(self, embed_dim, num_heads, dropout=0.0, is_decoder=False, bias=True, is_causal=False, config=None):
        super().__init__()
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.dropout = dropout
        self.head_dim = embed_dim // num_heads
        if self.head_dim * num_heads != self.embed_dim:
            raise ValueError(f"embed_dim must be divisible by num_heads (got `embed_dim`: {self.embed_dim} and "
                             f"`num_heads`: {num_heads}).")
        self.scaling = self.head_dim ** -0.5
        self.is_decoder = is_decoder
        self.is_causal = is_causal
        self.k_proj = Linear(embed_dim, embed_dim, bias=bias)
        self.v_proj = Linear(embed_dim, embed_dim, bias=bias)
        self.q_proj = Linear(embed_dim, embed_dim, bias=bias)
        self.out_proj = Linear(embed_dim, embed_dim, bias=bias)

    def construct(self, hidden_states, attention_mask=None):
        batch, seq_len = hidden_states.shape[:2]
        shape = (batch, seq_len, self.num_heads, self.head_dim)
        query = self.q_proj(hidden_states).reshape(shape).swapaxes(1, 2)
        key = self.k_proj(hidden_states).reshape(shape).swapaxes(1, 2)
        value = self.v_proj(hidden_states).reshape(shape).swapaxes(1, 2)
        attn_output, attn_weights = F.attention(query, key, value, attn_mask=attention_mask, scale=self.scaling,
                                                dropout_p=self.dropout if self.training else 0.0,
                                                training=self.training)
        attn_output = attn_output.swapaxes(1, 2).reshape(batch, seq_len, -1)
        return self.out_proj(attn_output), attn_weights


class Wav2Vec2FeedForward(nn.Cell):
    def __init__(self, config):
        super().__init__()
        self.intermediate_dropout = Dropout(config.activation_dropout)
        self.intermediate_dense = Linear(config.hidden_size, config.intermediate_size)
        self.intermediate_act_fn = F.get_activation(config.hidden_act)
        self.output_dense = Linear(config.intermediate_size, config.hidden_size)
        self.output_dropout = Dropout(config.hidden_dropout)

    def construct(self, hidden_states):
        hidden_states = self.intermediate_dropout(self.intermediate_act_fn(self.intermediate_dense(hidden_states)))
        return self.output_dropout(self.output_dense(hidden_states))


class Wav2Vec2EncoderLayer(GradientCheckpointingLayer):
    """Post-norm layer (wav2vec2-base)."""

    def __init__(self, config):
        super().__init__()
        self.attention = Wav2Vec2Attention(config.hidden_size, config.num_attention_heads,
                                           dropout=config.attention_dropout, config=config)
        self.dropout = Dropout(config.hidden_dropout)
        self.layer_norm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.feed_forward = Wav2Vec2FeedForward(config)
        self.final_layer_norm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def construct(self, hidden_states, attention_mask=None):
        """Returns (hidden_states, attention weights)."""
        attn_residual = hidden_states
        hidden_states, attn_weights = self.attention(hidden_states, attention_mask)
        hidden_states = self.layer_norm(attn_residual + self.dropout(hidden_states))
        hidden_states = self.final_layer_norm(hidden_states + self.feed_forward(hidden_states))
        return hidden_states, attn_weights


class Wav2Vec2AttnAdapterLayer(nn.Cell):
    """MMS language adapter: LayerNorm -> down-projection -> ReLU -> up-projection, added to the layer's output."""

    def __init__(self, config):
        super().__init__()
        self.input_dim = config.adapter_attn_dim
        self.hidden_dim = config.hidden_size
        self.norm = LayerNorm(self.hidden_dim)
        self.linear_1 = Linear(self.hidden_dim, self.input_dim)
        self.linear_2 = Linear(self.input_dim, self.hidden_dim)

    def construct(self, hidden_states):
        return self.linear_2(F.relu(self.linear_1(self.norm(hidden_states))))


class Wav2Vec2EncoderLayerStableLayerNorm(GradientCheckpointingLayer):
    """Pre-norm layer (`do_stable_layer_norm=True`), with the MMS adapter when `config.adapter_attn_dim` is set."""

    def __init__(self, config):
        super().__init__()
        self.attention = Wav2Vec2Attention(config.hidden_size, config.num_attention_heads,
                                           dropout=config.attention_dropout, config=config)
        self.dropout = Dropout(config.hidden_dropout)
        self.layer_norm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.feed_forward = Wav2Vec2FeedForward(config)
        self.final_layer_norm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.adapter_layer = (Wav2Vec2AttnAdapterLayer(config)
                              if getattr(config, "adapter_attn_dim", None) is not None else None)

    def construct(self, hidden_states, attention_mask=None):
        attn_residual = hidden_states
        hidden_states, attn_weights = self.attention(self.layer_norm(hidden_states), attention_mask)
        hidden_states = attn_residual + self.dropout(hidden_states)
        hidden_states = hidden_states + self.feed_forward(self.final_layer_norm(hidden_states))
        if self.adapter_layer is not None:
            hidden_states = hidden_states + self.adapter_layer(hidden_states)
        return hidden_states, attn_weights


class Wav2Vec2Encoder(nn.Cell):
    """Positional conv + layers. Post-norm: LayerNorm right after the positions. Stable (pre-norm): LayerNorm after
    the last layer -- `hidden_states[-1]` is then the state before it, as in HF."""

    def __init__(self, config, stable_layer_norm=False):
        super().__init__()
        self.config = config
        self.stable_layer_norm = stable_layer_norm
        self.pos_conv_embed = Wav2Vec2PositionalConvEmbedding(config)
        self.layer_norm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout)
        layer_cls = Wav2Vec2EncoderLayerStableLayerNorm if stable_layer_norm else Wav2Vec2EncoderLayer
        self.layers = nn.CellList([layer_cls(config) for _ in range(config.num_hidden_layers)])

    def construct(self, hidden_states, attention_mask=None, output_attentions=False, output_hidden_states=False):
        additive_mask = None
        if attention_mask is not None:
            # padded frames enter the positional convolution as zeros
            hidden_states = hidden_states * attention_mask[..., None].astype(hidden_states.dtype)
            additive_mask = create_bidirectional_mask(attention_mask, hidden_states.shape[1], hidden_states.dtype)
        hidden_states = hidden_states + self.pos_conv_embed(hidden_states)
        if not self.stable_layer_norm:
            hidden_states = self.layer_norm(hidden_states)
        hidden_states = self.dropout(hidden_states)

        all_hidden_states = () if output_hidden_states else None
        all_attentions = () if output_attentions else None
        ran_a_layer = False
        for layer in self.layers:
            # LayerDrop (https://huggingface.co/papers/1909.11556): in training (PyNative) each layer is skipped with
            # probability `config.layerdrop`; a compiled forward runs every layer
            if self.training and self.config.layerdrop > 0.0 and not runtime.in_graph() \
                    and np.random.rand() < self.config.layerdrop:
                continue
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            hidden_states, attn_weights = layer(hidden_states, additive_mask)
            ran_a_layer = True
            if output_attentions:
                all_attentions += (attn_weights,)
        if output_hidden_states and ran_a_layer:
            # as HF records them: the input of the first layer that ran, then every output (none if all dropped)
            all_hidden_states += (hidden_states,)
        if self.stable_layer_norm:
            hidden_states = self.layer_norm(hidden_states)
        return hidden_states, all_hidden_states, all_attentions


class Wav2Vec2GumbelVectorQuantizer(nn.Cell):
    """Vector quantization using gumbel softmax: each frame picks one codevector per group (argmax in eval, a hard
    Gumbel-softmax sample in training) and the groups' codevectors are concatenated."""

    def __init__(self, config):
        super().__init__()
        self.num_groups = config.num_codevector_groups
        self.num_vars = config.num_codevectors_per_group
        if config.codevector_dim % self.num_groups != 0:
            raise ValueError(f"`config.codevector_dim {config.codevector_dim} must be divisible by "
                             f"`config.num_codevector_groups` {self.num_groups} for concatenation")
        # storage for codebook variables (codewords)
        self.codevectors = new_parameter((1, self.num_groups * self.num_vars, config.codevector_dim // self.num_groups),
                                         Uniform(0.5))
        self.weight_proj = Linear(config.conv_dim[-1], self.num_groups * self.num_vars)
        # can be decayed for training
        self.temperature = 2

    @staticmethod
    def _compute_perplexity(probs, mask=None):
        """exp(entropy) of the codevector distribution averaged over (unmasked) frames, summed over groups."""
        if mask is not None:
            keep = mask.reshape(-1).astype(probs.dtype)[:, None, None]
            marginal_probs = (probs * keep).sum(0) / mask.astype(probs.dtype).sum()
        else:
            marginal_probs = probs.mean(0)
        positive = marginal_probs > 0
        # xlogy: 0 * log 0 = 0 (the log of 1 there keeps the gradient finite)
        plogp = F.where(positive, marginal_probs * ops.log(F.where(positive, marginal_probs,
                                                                    ops.ones_like(marginal_probs))),
                        ops.zeros_like(marginal_probs))
        return ops.exp(-plogp.sum(-1)).sum()

    def construct(self, hidden_states, mask_time_indices=None):
        batch_size, sequence_length = hidden_states.shape[:2]
        hidden_states = self.weight_proj(hidden_states).reshape(batch_size * sequence_length * self.num_groups, -1)
        if self.training:
            # sample code vector probs via gumbel in differentiable way
            codevector_probs = F.gumbel_softmax(hidden_states.astype(ms.float32), self.temperature, True).astype(
                hidden_states.dtype)
            codevector_soft_dist = F.softmax(
                hidden_states.reshape(batch_size * sequence_length, self.num_groups, -1).astype(ms.float32), -1)
            perplexity = self._compute_perplexity(codevector_soft_dist, mask_time_indices)
        else:
            # take argmax in non-differentiable way: a hard one-hot codevector distribution
            index = F.argmax(hidden_states, -1)
            codevector_probs = (index[:, None] == F.arange(0, hidden_states.shape[-1], dtype=index.dtype)[None]
                                ).astype(hidden_states.dtype)
            codevector_probs = codevector_probs.reshape(batch_size * sequence_length, self.num_groups, -1)
            perplexity = self._compute_perplexity(codevector_probs, mask_time_indices)
        codevector_probs = codevector_probs.reshape(batch_size * sequence_length, -1)
        # use probs to retrieve codevectors
        codevectors_per_group = codevector_probs[..., None] * self.codevectors
        codevectors = codevectors_per_group.reshape(batch_size * sequence_length, self.num_groups, self.num_vars, -1)
        return codevectors.sum(-2).reshape(batch_size, sequence_length, -1), perplexity


class Wav2Vec2AdapterLayer(nn.Cell):
    """Strided Conv1d doubling the channels, then GLU halving them: (B, C, T) -> (B, C, ~T / adapter_stride)."""

    def __init__(self, config):
        super().__init__()
        self.conv = Conv1d(config.output_hidden_size, 2 * config.output_hidden_size, config.adapter_kernel_size,
                           stride=config.adapter_stride, padding=1)

    def construct(self, hidden_states):
        hidden_states = self.conv(hidden_states)
        half = hidden_states.shape[1] // 2
        return hidden_states[:, :half] * F.sigmoid(hidden_states[:, half:])


class Wav2Vec2Adapter(nn.Cell):
    """`config.add_adapter`: optional projection to `output_hidden_size`, then `num_adapter_layers` conv layers
    (each skipped with probability `layerdrop` in PyNative training, drawn from numpy's RNG as HF draws it)."""

    def __init__(self, config):
        super().__init__()
        if config.output_hidden_size != config.hidden_size:
            self.proj = Linear(config.hidden_size, config.output_hidden_size)
            self.proj_layer_norm = LayerNorm(config.output_hidden_size)
        else:
            self.proj = self.proj_layer_norm = None
        self.layers = nn.CellList([Wav2Vec2AdapterLayer(config) for _ in range(config.num_adapter_layers)])
        self.layerdrop = config.layerdrop

    def construct(self, hidden_states):
        if self.proj is not None:
            hidden_states = self.proj_layer_norm(self.proj(hidden_states))
        hidden_states = hidden_states.swapaxes(1, 2)
        for layer in self.layers:
            if not self.training or runtime.in_graph() or np.random.random() > self.layerdrop:
                hidden_states = layer(hidden_states)
        return hidden_states.swapaxes(1, 2)


# ---- models -----------------------------------------------------------------------------------------------------


class Wav2Vec2PreTrainedModel(PreTrainedModel):
    config_class = Wav2Vec2Config
    base_model_prefix = "wav2vec2"
    main_input_name = "input_values"
    supports_gradient_checkpointing = True

    def _init_weights(self, cell):
        """HF's scheme: normal(initializer_range) Linear, kaiming-normal Conv1d, unit norms, uniform projection."""
        if isinstance(cell, Wav2Vec2GumbelVectorQuantizer):
            # gumbel softmax requires special init
            init_parameter(cell.weight_proj.weight, Normal(1.0))
            init_parameter(cell.weight_proj.bias, Zero())
            _uniform_0_1(cell.codevectors)
            cell.weight_proj.skip_default_init = True
        elif isinstance(cell, Wav2Vec2PositionalConvEmbedding):
            p = cell.conv.parametrizations.weight
            k, c_in = p.original1.shape[2], p.original1.shape[1] * cell.conv.groups
            init_parameter(p.original1, Normal(2 * (1.0 / (k * c_in)) ** 0.5))
            v = p.original1.astype(ms.float32)
            p.original0.set_data(ops.sqrt((v * v).sum((0, 1), keepdims=True)).astype(p.original0.dtype))
            init_parameter(cell.conv.bias, Zero())
        elif isinstance(cell, Wav2Vec2FeatureProjection):
            k = (1.0 / cell.projection.in_features) ** 0.5
            init_parameter(cell.projection.weight, Uniform(k))
            init_parameter(cell.projection.bias, Uniform(k))
        elif isinstance(cell, Conv1d):
            init_parameter(cell.weight, HeNormal())
            if cell.bias is not None:
                c_out, c_in_per_group, k = cell.weight.shape
                init_parameter(cell.bias, Uniform((1.0 / (c_in_per_group * k)) ** 0.5))
        elif isinstance(cell, (LayerNorm, GroupNorm)):
            if cell.weight is not None:
                init_parameter(cell.weight, One())
            if cell.bias is not None:
                init_parameter(cell.bias, Zero())
        elif isinstance(cell, Linear) and not getattr(cell, "skip_default_init", False):
            init_parameter(cell.weight, Normal(self.config.initializer_range))
            if cell.bias is not None:
                init_parameter(cell.bias, Zero())
        elif isinstance(cell, AMSoftmaxLoss):
            init_parameter(cell.weight, Normal(1.0))
        if isinstance(cell, Wav2Vec2Model) and cell.masked_spec_embed is not None:
            _uniform_0_1(cell.masked_spec_embed)

    def _get_feat_extract_output_lengths(self, input_lengths, add_adapter=None):
        """Computes the output length of the convolutional layers (ints or integer tensors)."""
        add_adapter = self.config.add_adapter if add_adapter is None else add_adapter
        for kernel_size, stride in zip(self.config.conv_kernel, self.config.conv_stride):
            input_lengths = (input_lengths - kernel_size) // stride + 1
        if add_adapter:
            for _ in range(self.config.num_adapter_layers):
                input_lengths = (input_lengths - 1) // self.config.adapter_stride + 1
        return input_lengths

    def _get_feature_vector_attention_mask(self, feature_vector_length, attention_mask, add_adapter=None):
        """(B, frames) bool mask of the frames computed from real samples, from the (B, samples) 0/1 mask."""
        lengths = self._get_feat_extract_output_lengths(attention_mask.astype(ms.int32).sum(-1), add_adapter)
        return F.arange(0, feature_vector_length, dtype=ms.int32)[None] < lengths.astype(ms.int32)[:, None]


def _uniform_0_1(param):
    """torch's `uniform_()` default: U[0, 1) (MindSpore's `Uniform(s)` is symmetric around 0)."""
    init_parameter(param, Uniform(0.5))
    param.set_data(param + 0.5)


class Wav2Vec2Model(Wav2Vec2PreTrainedModel):
    def __init__(self, config: Wav2Vec2Config):
        super().__init__(config)
        self.config = config
        self.feature_extractor = Wav2Vec2FeatureEncoder(config)
        self.feature_projection = Wav2Vec2FeatureProjection(config)
        # model only needs masking vector if mask prob is > 0.0
        self.masked_spec_embed = None
        if config.mask_time_prob > 0.0 or config.mask_feature_prob > 0.0:
            self.masked_spec_embed = new_parameter((config.hidden_size,), Uniform(0.5))
        self.encoder = Wav2Vec2Encoder(config, stable_layer_norm=config.do_stable_layer_norm)
        self.adapter = Wav2Vec2Adapter(config) if config.add_adapter else None
        self.post_init()

    def freeze_feature_encoder(self):
        """Stops gradients to the convolutional feature encoder."""
        self.feature_extractor._freeze_parameters()

    def _mask_hidden_states(self, hidden_states, mask_time_indices=None, attention_mask=None):
        """SpecAugment: frames in `mask_time_indices` (B, frames) become the learned mask embedding. In training
        (PyNative) without given indices, random time spans (`mask_time_prob`, `mask_time_length`) and feature spans
        (`mask_feature_prob`: set to 0) are drawn as HF draws them; a compiled (graph) forward cannot draw host-side
        spans and applies only given indices."""
        if not getattr(self.config, "apply_spec_augment", True):
            return hidden_states
        config = self.config
        draw = self.training and not runtime.in_graph()
        if mask_time_indices is None and draw and config.mask_time_prob > 0:
            lengths = None if attention_mask is None else attention_mask.astype(ms.int32).sum(-1).asnumpy()
            mask_time_indices = ms.Tensor(_compute_mask_indices(
                hidden_states.shape[:2], config.mask_time_prob, config.mask_time_length, lengths,
                config.mask_time_min_masks))
        if mask_time_indices is not None:
            embed = self.masked_spec_embed.astype(hidden_states.dtype)
            hidden_states = F.where(mask_time_indices.astype(ms.bool_)[..., None], embed, hidden_states)
        if draw and config.mask_feature_prob > 0:
            batch_size, _, hidden_size = hidden_states.shape
            features = ms.Tensor(_compute_mask_indices((batch_size, hidden_size), config.mask_feature_prob,
                                                       config.mask_feature_length,
                                                       min_masks=config.mask_feature_min_masks))
            hidden_states = F.where(features[:, None, :], ops.zeros((), hidden_states.dtype), hidden_states)
        return hidden_states

    def construct(self, input_values, attention_mask=None, mask_time_indices=None, output_attentions=None,
                  output_hidden_states=None, return_dict=None, **kwargs):
        r"""
        Args:
            input_values: (B, samples) float raw waveform, as `Wav2Vec2FeatureExtractor` makes it.
            attention_mask: (B, samples) 1 for real samples, 0 for padding. Only pass it to checkpoints with
                `feat_extract_norm == "layer"` (the group-norm ones were trained on zero-padded batches without it).
            mask_time_indices: (B, frames) bool, frames to replace with `masked_spec_embed`.
        """
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        input_values = input_values.astype(self.feature_projection.projection.weight.dtype)
        extract_features = self.feature_extractor(input_values).swapaxes(1, 2)
        if attention_mask is not None:
            attention_mask = self._get_feature_vector_attention_mask(extract_features.shape[1], attention_mask,
                                                                     add_adapter=False)
        hidden_states, extract_features = self.feature_projection(extract_features)
        hidden_states = self._mask_hidden_states(hidden_states, mask_time_indices, attention_mask)
        hidden_states, all_hidden_states, all_attentions = self.encoder(
            hidden_states, attention_mask, output_attentions, output_hidden_states)
        if self.adapter is not None:
            hidden_states = self.adapter(hidden_states)
        fields = {"last_hidden_state": hidden_states, "extract_features": extract_features,
                  "hidden_states": all_hidden_states, "attentions": all_attentions}
        return model_output(Wav2Vec2BaseModelOutput, fields, return_dict is not False)


class Wav2Vec2ForPreTraining(Wav2Vec2PreTrainedModel):
    """Wav2Vec2 Model with a quantizer and `VQ` head on top: contrastive + codebook-diversity pre-training loss."""

    def __init__(self, config: Wav2Vec2Config):
        super().__init__(config)
        self.wav2vec2 = Wav2Vec2Model(config)
        self.dropout_features = Dropout(config.feat_quantizer_dropout)
        self.quantizer = Wav2Vec2GumbelVectorQuantizer(config)
        self.project_hid = Linear(config.hidden_size, config.proj_codevector_dim)
        self.project_q = Linear(config.codevector_dim, config.proj_codevector_dim)
        # HF keeps torch's default Linear init for the last two projections
        self.project_hid.skip_default_init = self.project_q.skip_default_init = True
        self.post_init()

    def set_gumbel_temperature(self, temperature):
        """Set the Gumbel softmax temperature to a given value. Only necessary for training."""
        self.quantizer.temperature = temperature

    def freeze_feature_encoder(self):
        """Stops gradients to the convolutional feature encoder."""
        self.wav2vec2.feature_extractor._freeze_parameters()

    @staticmethod
    def compute_contrastive_logits(target_features, negative_features, predicted_features, temperature=0.1):
        """Cosine similarity (float32) of the predictions with [positive, negatives], divided by `temperature`."""
        targets = F.cat([target_features, negative_features], 0).astype(ms.float32)
        predicted = predicted_features.astype(ms.float32)
        # torch's cosine_similarity: x.y / sqrt(max(|x|^2 |y|^2, eps^2)), eps = 1e-8
        dot = (targets * predicted).sum(-1)
        norms = (targets * targets).sum(-1) * (predicted * predicted).sum(-1)
        logits = dot / ops.sqrt(ops.clamp(norms, min=1e-16))
        return logits.astype(target_features.dtype) / temperature

    def construct(self, input_values, attention_mask=None, mask_time_indices=None, sampled_negative_indices=None,
                  output_attentions=None, output_hidden_states=None, return_dict=None, **kwargs):
        r"""
        Args:
            mask_time_indices: (B, frames) bool, the frames masked for the contrastive loss.
            sampled_negative_indices: (B, frames, num_negatives) indices into the flattened (B * frames) quantized
                states: the distractors (HF's `_sample_negative_indices` makes them). Required for the loss.
        """
        if mask_time_indices is not None:
            mask_time_indices = mask_time_indices.astype(ms.bool_)
        outputs = self.wav2vec2(input_values, attention_mask=attention_mask, mask_time_indices=mask_time_indices,
                                output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                                return_dict=True)
        # 1. project all transformed features (including masked) to final vq dim
        transformer_features = self.project_hid(outputs["last_hidden_state"])
        # 2. quantize all (unmasked) extracted features and project to final vq dim
        extract_features = self.dropout_features(outputs["extract_features"])
        quantized_features, codevector_perplexity = self.quantizer(extract_features, mask_time_indices)
        quantized_features = self.project_q(quantized_features.astype(self.project_q.weight.dtype))

        loss = contrastive_loss = diversity_loss = None
        if sampled_negative_indices is not None:
            batch_size, sequence_length, hidden_size = quantized_features.shape
            # 3. the K sampled distractors: (K, B, T, D)
            negatives = ops.gather(quantized_features.reshape(-1, hidden_size),
                                   sampled_negative_indices.astype(ms.int32).reshape(-1), 0)
            negatives = ops.transpose(negatives.reshape(batch_size, sequence_length, -1, hidden_size), (2, 0, 1, 3))
            # 4. logits = sim(c_t, [q_t, negatives]) / kappa
            logits = self.compute_contrastive_logits(quantized_features[None], negatives, transformer_features,
                                                     self.config.contrastive_logits_temperature)
            # 5. a distractor identical to the positive (low codebook use) is masked out
            neg_is_pos = (quantized_features[None] == negatives).all(-1)
            is_pos_row = F.cat([ops.zeros((1,) + neg_is_pos.shape[1:], ms.bool_), neg_is_pos], 0)
            logits = logits.masked_fill(is_pos_row, float("-inf"))
            # 6. contrastive loss: cross-entropy of the positive (index 0) at the masked frames
            logits = ops.transpose(logits, (2, 1, 0)).reshape(-1, logits.shape[0])
            target = ((1 - mask_time_indices.astype(ms.int64)) * -100).swapaxes(0, 1).reshape(-1)
            contrastive_loss = F.cross_entropy(logits.astype(ms.float32), target, reduction="sum")
            # 7. diversity loss
            num_codevectors = self.config.num_codevectors_per_group * self.config.num_codevector_groups
            diversity_loss = ((num_codevectors - codevector_perplexity) / num_codevectors) * \
                mask_time_indices.astype(ms.float32).sum()
            # 8. L = L_m + alpha * L_d
            loss = contrastive_loss + self.config.diversity_loss_weight * diversity_loss
        fields = {"loss": loss, "projected_states": transformer_features,
                  "projected_quantized_states": quantized_features, "codevector_perplexity": codevector_perplexity,
                  "hidden_states": outputs.get("hidden_states"), "attentions": outputs.get("attentions"),
                  "contrastive_loss": contrastive_loss, "diversity_loss": diversity_loss}
        return model_output(Wav2Vec2ForPreTrainingOutput, fields, return_dict is not False)


class _Wav2Vec2HeadMixin:
    """What every head on top of `self.wav2vec2` shares: freezing, and the (optionally weighted) layer sum."""

    def freeze_feature_encoder(self):
        """Stops gradients to the convolutional feature encoder."""
        self.wav2vec2.feature_extractor._freeze_parameters()

    def freeze_base_model(self):
        """Stops gradients to the whole base model: only the head is trained."""
        for param in self.wav2vec2.get_parameters():
            param.requires_grad = False

    def _base_outputs(self, input_values, attention_mask, output_attentions, output_hidden_states):
        """(summed hidden states, base outputs); `use_weighted_layer_sum` mixes all layers with softmax weights."""
        weighted = getattr(self.config, "use_weighted_layer_sum", False)
        outputs = self.wav2vec2(input_values, attention_mask=attention_mask, output_attentions=output_attentions,
                                output_hidden_states=True if weighted else output_hidden_states, return_dict=True)
        if weighted:
            stacked = F.stack(outputs["hidden_states"], 1)
            norm_weights = F.softmax(self.layer_weights, -1)
            hidden_states = (stacked * norm_weights.reshape(-1, 1, 1)).sum(1)
        else:
            hidden_states = outputs["last_hidden_state"]
        return hidden_states, outputs

    def _extras(self, outputs, output_hidden_states):
        """(hidden_states, attentions) to report: hidden states only when the caller asked for them."""
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return (outputs.get("hidden_states") if output_hidden_states else None), outputs.get("attentions")

    def _layer_weights(self):
        num_layers = self.config.num_hidden_layers + 1  # transformer layers + input embeddings
        if not self.config.use_weighted_layer_sum:
            return None
        return new_parameter((num_layers,), Constant(1.0 / num_layers))


class Wav2Vec2ForCTC(_Wav2Vec2HeadMixin, Wav2Vec2PreTrainedModel):
    def __init__(self, config: Wav2Vec2Config, target_lang=None):
        super().__init__(config)
        self.wav2vec2 = Wav2Vec2Model(config)
        self.dropout = Dropout(config.final_dropout)
        self.target_lang = target_lang
        if config.vocab_size is None:
            raise ValueError(f"You are trying to instantiate {self.__class__} with a configuration that does not "
                             "define the vocabulary size of the language model head. Please instantiate the model as "
                             "follows: `Wav2Vec2ForCTC.from_pretrained(..., vocab_size=vocab_size)`. or define "
                             "`vocab_size` of your model's configuration.")
        output_hidden_size = config.output_hidden_size if config.add_adapter else config.hidden_size
        self.lm_head = Linear(output_hidden_size, config.vocab_size)
        self.post_init()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, target_lang=None, **kwargs):
        """As `PreTrainedModel.from_pretrained`; `target_lang` then loads that language's adapter weights
        (`load_adapter`), as HF does after loading the checkpoint."""
        loaded = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        if target_lang is not None:
            if getattr(model.config, "adapter_attn_dim", None) is None:
                raise ValueError(f"Cannot pass `target_lang`: {target_lang} if `config.adapter_attn_dim` is not "
                                 "defined.")
            hub_kwargs = {k: kwargs[k] for k in ("cache_dir", "local_files_only", "token", "revision")
                          if k in kwargs}
            model.load_adapter(target_lang, **hub_kwargs)
        return loaded

    def _get_adapters(self):
        """{name: Parameter} of the attention adapters and the lm_head: what an adapter file replaces."""
        if self.config.adapter_attn_dim is None:
            raise ValueError(f"{self.__class__} has no adapter layers. Make sure to define `config.adapter_attn_dim`.")
        return {name: p for name, p in self.named_parameters_dict().items()
                if ".adapter_layer." in name or name.startswith("lm_head.")}

    def init_adapter_layers(self):
        """(Re-)initialises the attention adapters and the lm_head for adapter-only fine-tuning."""
        for name, cell in self.cells_and_names():
            if ".adapter_layer." in f".{name}." or name == "lm_head" or name.startswith("lm_head."):
                self._init_weights(cell)

    def load_adapter(self, target_lang, force_load=True, **kwargs):
        """Loads `adapter.<target_lang>.safetensors` (else `adapter.<target_lang>.bin`) from the checkpoint's
        directory or Hub repo into the attention adapters and the lm_head (resized when the language's vocabulary
        differs; `config.vocab_size` follows).

        Args:
            target_lang: the language id of the adapter file.
            force_load: load even when `target_lang` is already the loaded one.
            kwargs: `cache_dir`, `local_files_only`, `token`, `revision`, `use_safetensors` as in HF.
        """
        from ...weights import iter_state_dict, resolve_named_file

        if self.config.adapter_attn_dim is None:
            raise ValueError(f"Cannot load_adapter for {target_lang} if `config.adapter_attn_dim` is not defined.")
        if target_lang == self.target_lang and not force_load:
            logger.warning("Adapter weights are already set to %s.", target_lang)
            return
        use_safetensors = kwargs.pop("use_safetensors", None)
        hub_kwargs = {k: kwargs.pop(k) for k in ("cache_dir", "local_files_only", "token", "revision") if k in kwargs}
        for unused in ("force_download", "proxies", "mirror"):
            kwargs.pop(unused, None)
        if kwargs:
            raise TypeError(f"load_adapter got unexpected keyword arguments: {sorted(kwargs)}")
        source = getattr(self, "name_or_path", None) or self.config.name_or_path
        names = [(f"adapter.{target_lang}.safetensors", "safetensors"), (f"adapter.{target_lang}.bin", "bin")]
        if use_safetensors:
            names = names[:1]
        elif use_safetensors is False:
            names = names[1:]
        path, fmt = None, None
        for name, fmt in names:
            path = resolve_named_file(source, name, **hub_kwargs)
            if path is not None:
                break
        if path is None:
            raise OSError(f"Can't load the adapter for {target_lang!r}: {source!r} has no "
                          f"{' or '.join(n for n, _ in names)}")
        state_dict = dict(iter_state_dict([path], fmt))
        adapter_weights = self._get_adapters()
        unexpected = set(state_dict) - set(adapter_weights)
        missing = set(adapter_weights) - set(state_dict)
        if unexpected:
            raise ValueError(f"The adapter weights {path} has unexpected keys: {', '.join(sorted(unexpected))}.")
        if missing:
            raise ValueError(f"The adapter weights {path} has missing keys: {', '.join(sorted(missing))}.")
        target_vocab_size = state_dict["lm_head.weight"].shape[0]
        if target_vocab_size != self.config.vocab_size:
            dtype = self.lm_head.weight.dtype
            self.lm_head = Linear(self.lm_head.weight.shape[1], target_vocab_size, dtype=dtype)
            self.config.vocab_size = target_vocab_size
            adapter_weights = self._get_adapters()
        for name, array in state_dict.items():
            param = adapter_weights[name]
            param.set_data(ms.Tensor(np.asarray(array)).astype(param.dtype))
        self.target_lang = target_lang

    def construct(self, input_values, attention_mask=None, labels=None, output_attentions=None,
                  output_hidden_states=None, return_dict=None, **kwargs):
        r"""
        Args:
            labels: (B, target_length) CTC targets; -100 and the blank (`config.pad_token_id`) are padding. The loss
                follows `config.ctc_loss_reduction` and `config.ctc_zero_infinity`.
        """
        if labels is not None and not runtime.in_graph() and int(labels.max()) >= self.config.vocab_size:
            raise ValueError(f"Label values must be <= vocab_size: {self.config.vocab_size}")
        outputs = self.wav2vec2(input_values, attention_mask=attention_mask, output_attentions=output_attentions,
                                output_hidden_states=output_hidden_states, return_dict=True)
        logits = self.lm_head(self.dropout(outputs["last_hidden_state"]))

        loss = None
        if labels is not None:
            if attention_mask is None:
                attention_mask = ops.ones(input_values.shape, ms.int32)
            input_lengths = self._get_feat_extract_output_lengths(attention_mask.astype(ms.int32).sum(-1))
            loss = ctc_loss(logits, labels, input_lengths, self.config.pad_token_id,
                            self.config.ctc_loss_reduction, self.config.ctc_zero_infinity)
        fields = {"loss": loss, "logits": logits, "hidden_states": outputs.get("hidden_states"),
                  "attentions": outputs.get("attentions")}
        return model_output(CausalLMOutput, fields, return_dict is not False)


def ctc_loss(logits, labels, logit_lengths, blank_token_id, reduction="mean", zero_infinity=False,
             ignore_index=-100):
    """HF's `ForCTCLoss`: targets are the labels that are neither `ignore_index` nor the blank, in order."""
    labels_mask = ops.logical_and(labels != ignore_index, labels != blank_token_id)
    target_lengths = labels_mask.astype(ms.int32).sum(-1)
    # move each row's targets to its front (a stable sort on "is padding"), so padding in the middle is dropped as
    # torch's masked_select drops it
    width = labels.shape[-1]
    positions = F.arange(0, width, dtype=ms.int32).astype(ms.float32)
    order = F.sort((1.0 - labels_mask.astype(ms.float32)) * width + positions, -1)[1]
    targets = ops.gather_elements(F.where(labels_mask, labels, ops.zeros_like(labels)), -1, order.astype(ms.int32))
    log_probs = F.log_softmax(logits.astype(ms.float32), -1).swapaxes(0, 1)
    return F.ctc_loss(log_probs, targets, logit_lengths, target_lengths, blank=blank_token_id, reduction=reduction,
                      zero_infinity=zero_infinity)


class Wav2Vec2ForSequenceClassification(_Wav2Vec2HeadMixin, Wav2Vec2PreTrainedModel):
    def __init__(self, config: Wav2Vec2Config):
        super().__init__(config)
        if getattr(config, "add_adapter", False):
            raise ValueError("Sequence classification does not support the use of Wav2Vec2 adapters "
                             "(config.add_adapter=True)")
        self.wav2vec2 = Wav2Vec2Model(config)
        self.layer_weights = self._layer_weights()
        self.projector = Linear(config.hidden_size, config.classifier_proj_size)
        self.classifier = Linear(config.classifier_proj_size, config.num_labels)
        self.post_init()

    def construct(self, input_values, attention_mask=None, labels=None, output_attentions=None,
                  output_hidden_states=None, return_dict=None, **kwargs):
        r"""
        Args:
            labels: (B,) class indices; cross-entropy loss.
        """
        hidden_states, outputs = self._base_outputs(input_values, attention_mask, output_attentions,
                                                    output_hidden_states)
        hidden_states = self.projector(hidden_states)
        if attention_mask is None:
            pooled_output = hidden_states.mean(1)
        else:
            padding_mask = self._get_feature_vector_attention_mask(hidden_states.shape[1], attention_mask)
            real = padding_mask.astype(hidden_states.dtype)
            pooled_output = (hidden_states * real[..., None]).sum(1) / real.sum(1).reshape(-1, 1)
        logits = self.classifier(pooled_output)
        loss = None
        if labels is not None:
            loss = fixed_cross_entropy(logits.reshape(-1, self.config.num_labels), labels.reshape(-1))
        hidden, attentions = self._extras(outputs, output_hidden_states)
        fields = {"loss": loss, "logits": logits, "hidden_states": hidden, "attentions": attentions}
        return model_output(SequenceClassifierOutput, fields, return_dict is not False)


class Wav2Vec2ForAudioFrameClassification(_Wav2Vec2HeadMixin, Wav2Vec2PreTrainedModel):
    def __init__(self, config: Wav2Vec2Config):
        super().__init__(config)
        if getattr(config, "add_adapter", False):
            raise ValueError("Audio frame classification does not support the use of Wav2Vec2 adapters "
                             "(config.add_adapter=True)")
        self.wav2vec2 = Wav2Vec2Model(config)
        self.layer_weights = self._layer_weights()
        self.classifier = Linear(config.hidden_size, config.num_labels)
        self.num_labels = config.num_labels
        self.post_init()

    def construct(self, input_values, attention_mask=None, labels=None, output_attentions=None,
                  output_hidden_states=None, return_dict=None, **kwargs):
        r"""
        Args:
            labels: (B, frames, num_labels) one-hot (or scores) per frame; the loss is cross-entropy against each
                frame's argmax, as HF computes it.
        """
        hidden_states, outputs = self._base_outputs(input_values, attention_mask, output_attentions,
                                                    output_hidden_states)
        logits = self.classifier(hidden_states)
        loss = None
        if labels is not None:
            targets = F.argmax(labels.reshape(-1, self.num_labels), -1)
            loss = fixed_cross_entropy(logits.reshape(-1, self.num_labels), targets)
        hidden, attentions = self._extras(outputs, output_hidden_states)
        fields = {"loss": loss, "logits": logits, "hidden_states": hidden, "attentions": attentions}
        return model_output(TokenClassifierOutput, fields, return_dict is not False)


class AMSoftmaxLoss(nn.Cell):
    """Additive-margin softmax: cosine logits against unit class vectors, `margin` taken off the true class."""

    def __init__(self, input_dim, num_labels, scale=30.0, margin=0.4):
        super().__init__()
        self.scale = scale
        self.margin = margin
        self.num_labels = num_labels
        self.weight = new_parameter((input_dim, num_labels), Normal(1.0))

    def construct(self, hidden_states, labels):
        labels = labels.reshape(-1)
        weight = _l2_normalize(self.weight, 0)
        hidden_states = _l2_normalize(hidden_states, 1)
        cos_theta = ops.matmul(hidden_states, weight)
        onehot = labels.astype(ms.int32)[:, None] == F.arange(0, self.num_labels, dtype=ms.int32)[None]
        logits = self.scale * F.where(onehot, cos_theta - self.margin, cos_theta)
        return fixed_cross_entropy(logits, labels)


def _l2_normalize(x, axis, eps=1e-12):
    """torch's F.normalize: x / max(||x||, eps)."""
    norm = ops.sqrt((x * x).sum(axis, keepdims=True))
    return x / ops.clamp(norm, min=eps)


class TDNNLayer(nn.Cell):
    """A dilated 1-D convolution stored as a Linear over the flattened (kernel, channels) window, then ReLU."""

    def __init__(self, config, layer_id=0):
        super().__init__()
        self.in_conv_dim = config.tdnn_dim[layer_id - 1] if layer_id > 0 else config.tdnn_dim[layer_id]
        self.out_conv_dim = config.tdnn_dim[layer_id]
        self.kernel_size = config.tdnn_kernel[layer_id]
        self.dilation = config.tdnn_dilation[layer_id]
        self.kernel = Linear(self.in_conv_dim * self.kernel_size, self.out_conv_dim)

    def construct(self, hidden_states):
        weight = self.kernel.weight.reshape(self.out_conv_dim, self.kernel_size, self.in_conv_dim).swapaxes(1, 2)
        hidden_states = F.conv1d(hidden_states.swapaxes(1, 2), weight, self.kernel.bias, dilation=self.dilation)
        return F.relu(hidden_states.swapaxes(1, 2))


class Wav2Vec2ForXVector(_Wav2Vec2HeadMixin, Wav2Vec2PreTrainedModel):
    def __init__(self, config: Wav2Vec2Config):
        super().__init__(config)
        self.wav2vec2 = Wav2Vec2Model(config)
        self.layer_weights = self._layer_weights()
        self.projector = Linear(config.hidden_size, config.tdnn_dim[0])
        self.tdnn = nn.CellList([TDNNLayer(config, i) for i in range(len(config.tdnn_dim))])
        self.feature_extractor = Linear(config.tdnn_dim[-1] * 2, config.xvector_output_dim)
        self.classifier = Linear(config.xvector_output_dim, config.xvector_output_dim)
        self.objective = AMSoftmaxLoss(config.xvector_output_dim, config.num_labels)
        self.post_init()

    def _get_tdnn_output_lengths(self, input_lengths):
        """Computes the output length of the TDNN layers."""
        for kernel_size in self.config.tdnn_kernel:
            input_lengths = input_lengths - kernel_size + 1
        return input_lengths

    def construct(self, input_values, attention_mask=None, labels=None, output_attentions=None,
                  output_hidden_states=None, return_dict=None, **kwargs):
        r"""
        Args:
            labels: (B,) speaker indices; AM-softmax loss over `config.num_labels` classes.
        """
        hidden_states, outputs = self._base_outputs(input_values, attention_mask, output_attentions,
                                                    output_hidden_states)
        hidden_states = self.projector(hidden_states)
        for tdnn_layer in self.tdnn:
            hidden_states = tdnn_layer(hidden_states)
        # statistics pooling: mean and (unbiased) standard deviation over each utterance's real frames
        if attention_mask is None:
            frames = ops.ones(hidden_states.shape[:2], hidden_states.dtype)
        else:
            lengths = self._get_tdnn_output_lengths(
                self._get_feat_extract_output_lengths(attention_mask.astype(ms.int32).sum(1)))
            frames = (F.arange(0, hidden_states.shape[1], dtype=ms.int32)[None] < lengths[:, None]).astype(
                hidden_states.dtype)
        count = frames.sum(1)[:, None]
        mean_features = (hidden_states * frames[..., None]).sum(1) / count
        centred = (hidden_states - mean_features[:, None]) * frames[..., None]
        std_features = ops.sqrt((centred * centred).sum(1) / (count - 1))
        statistic_pooling = F.cat([mean_features, std_features], -1)
        output_embeddings = self.feature_extractor(statistic_pooling)
        logits = self.classifier(output_embeddings)
        loss = None
        if labels is not None:
            loss = self.objective(logits, labels)
        hidden, attentions = self._extras(outputs, output_hidden_states)
        fields = {"loss": loss, "logits": logits, "embeddings": output_embeddings, "hidden_states": hidden,
                  "attentions": attentions}
        return model_output(XVectorOutput, fields, return_dict is not False)


__all__ = [
    "Wav2Vec2ForAudioFrameClassification",
    "Wav2Vec2ForCTC",
    "Wav2Vec2ForPreTraining",
    "Wav2Vec2ForSequenceClassification",
    "Wav2Vec2ForXVector",
    "Wav2Vec2Model",
    "Wav2Vec2PreTrainedModel",
]
