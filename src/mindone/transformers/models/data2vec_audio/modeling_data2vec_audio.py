"""Data2Vec-Audio on MindSpore: HF's `modeling_data2vec_audio.py` structure, names and outputs; device concerns live
in `backend`.

The Wav2Vec2 architecture trained by self-distillation, with three differences: every feature-encoder conv is
followed by a LayerNorm over channels, the relative position embedding is a stack of `num_conv_pos_embeddings`
plain grouped convolutions (each with a parameter-free LayerNorm, no weight norm), and the layers are post-norm only.
Heads: CTC (`lm_head`), utterance classification, frame classification, x-vector.

Training: SpecAugment (random time and feature spans) and LayerDrop are drawn from numpy's global RNG in PyNative,
in HF's order (a seeded numpy gives HF's time/feature masks); a compiled (graph) training step applies neither.
Not implemented: adapters (`add_adapter`).
"""

import logging

import mindspore as ms
import numpy as np
from mindspore import nn, ops
from mindspore.common.initializer import Constant, HeNormal, Normal, One, Uniform, Zero
from transformers import Data2VecAudioConfig

from ...backend import functional as F
from ...backend import runtime
from ...backend.layers import Conv1d, Dropout, LayerNorm, Linear, new_parameter
from ...loss_utils import fixed_cross_entropy
from ...masking_utils import create_bidirectional_mask
from ...modeling_layers import GradientCheckpointingLayer
from ...modeling_outputs import (
    model_output,
    CausalLMOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
    Wav2Vec2BaseModelOutput,
    XVectorOutput,
)
from ...modeling_utils import PreTrainedModel, init_parameter

logger = logging.getLogger(__name__)

Data2VecAudioBaseModelOutput = Wav2Vec2BaseModelOutput  # HF's alias: the same fields


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


class Data2VecAudioConvLayer(GradientCheckpointingLayer):
    """Conv, LayerNorm over the channels of each frame, activation."""

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


class Data2VecAudioFeatureEncoder(nn.Cell):
    """Construct the features from raw audio waveform: (B, L) samples -> (B, conv_dim[-1], frames)."""

    def __init__(self, config):
        super().__init__()
        self.conv_layers = nn.CellList([Data2VecAudioConvLayer(config, layer_id=i)
                                        for i in range(config.num_feat_extract_layers)])

    def _freeze_parameters(self):
        for param in self.get_parameters():
            param.requires_grad = False

    def construct(self, input_values):
        hidden_states = input_values[:, None]
        for conv_layer in self.conv_layers:
            hidden_states = conv_layer(hidden_states)
        return hidden_states


class Data2VecAudioFeatureProjection(nn.Cell):
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


class Data2VecAudioPositionalConvLayer(nn.Cell):
    """Grouped conv over time, cut to the input length for an even kernel, parameter-free LayerNorm, activation."""

    def __init__(self, config):
        super().__init__()
        self.conv = Conv1d(config.hidden_size, config.hidden_size, kernel_size=config.conv_pos_kernel_size,
                           padding=config.conv_pos_kernel_size // 2, groups=config.num_conv_pos_embedding_groups)
        self.num_pad_remove = 1 if config.conv_pos_kernel_size % 2 == 0 else 0
        self.activation = F.get_activation(config.feat_extract_activation)
        self.layer_norm = LayerNorm(config.hidden_size, elementwise_affine=False)

    def construct(self, hidden_states):
        hidden_states = self.conv(hidden_states)
        if self.num_pad_remove > 0:
            hidden_states = hidden_states[:, :, :-self.num_pad_remove]
        hidden_states = self.layer_norm(hidden_states.swapaxes(1, 2)).swapaxes(1, 2)
        return self.activation(hidden_states)


class Data2VecAudioPositionalConvEmbedding(nn.Cell):
    """Relative positions from `config.num_conv_pos_embeddings` stacked positional conv layers."""

    def __init__(self, config):
        super().__init__()
        self.layers = nn.CellList([Data2VecAudioPositionalConvLayer(config)
                                   for _ in range(config.num_conv_pos_embeddings)])

    def construct(self, hidden_states):
        hidden_states = hidden_states.swapaxes(1, 2)
        for layer in self.layers:
            hidden_states = layer(hidden_states)
        return hidden_states.swapaxes(1, 2)


class Data2VecAudioAttention(nn.Cell):
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


class Data2VecAudioFeedForward(nn.Cell):
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


class Data2VecAudioEncoderLayer(GradientCheckpointingLayer):
    """Post-norm layer (data2vec_audio-base)."""

    def __init__(self, config):
        super().__init__()
        self.attention = Data2VecAudioAttention(config.hidden_size, config.num_attention_heads,
                                           dropout=config.attention_dropout, config=config)
        self.dropout = Dropout(config.hidden_dropout)
        self.layer_norm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.feed_forward = Data2VecAudioFeedForward(config)
        self.final_layer_norm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def construct(self, hidden_states, attention_mask=None):
        """Returns (hidden_states, attention weights)."""
        attn_residual = hidden_states
        hidden_states, attn_weights = self.attention(hidden_states, attention_mask)
        hidden_states = self.layer_norm(attn_residual + self.dropout(hidden_states))
        hidden_states = self.final_layer_norm(hidden_states + self.feed_forward(hidden_states))
        return hidden_states, attn_weights


class Data2VecAudioEncoder(nn.Cell):
    """Positional convs, LayerNorm, post-norm layers."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.pos_conv_embed = Data2VecAudioPositionalConvEmbedding(config)
        self.layer_norm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout)
        self.layers = nn.CellList([Data2VecAudioEncoderLayer(config) for _ in range(config.num_hidden_layers)])

    def construct(self, hidden_states, attention_mask=None, output_attentions=False, output_hidden_states=False):
        additive_mask = None
        if attention_mask is not None:
            # padded frames enter the positional convolutions as zeros
            hidden_states = hidden_states * attention_mask[..., None].astype(hidden_states.dtype)
            additive_mask = create_bidirectional_mask(attention_mask, hidden_states.shape[1], hidden_states.dtype)
        hidden_states = self.dropout(self.layer_norm(hidden_states + self.pos_conv_embed(hidden_states)))

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
        return hidden_states, all_hidden_states, all_attentions


# ---- models -----------------------------------------------------------------------------------------------------


class Data2VecAudioPreTrainedModel(PreTrainedModel):
    config_class = Data2VecAudioConfig
    base_model_prefix = "data2vec_audio"
    main_input_name = "input_values"
    supports_gradient_checkpointing = True

    def _init_weights(self, cell):
        """HF's scheme: normal(initializer_range) Linear, kaiming-normal Conv1d (zero bias in the positional
        convs), unit norms, uniform projection."""
        if isinstance(cell, Data2VecAudioFeatureProjection):
            k = (1.0 / cell.projection.in_features) ** 0.5
            init_parameter(cell.projection.weight, Uniform(k))
            init_parameter(cell.projection.bias, Uniform(k))
        elif isinstance(cell, Conv1d):
            init_parameter(cell.weight, HeNormal())
            if cell.bias is not None:
                c_out, c_in_per_group, k = cell.weight.shape
                init_parameter(cell.bias, Uniform((1.0 / (c_in_per_group * k)) ** 0.5))
        elif isinstance(cell, LayerNorm):
            if cell.weight is not None:
                init_parameter(cell.weight, One())
            if cell.bias is not None:
                init_parameter(cell.bias, Zero())
        elif isinstance(cell, Linear):
            init_parameter(cell.weight, Normal(self.config.initializer_range))
            if cell.bias is not None:
                init_parameter(cell.bias, Zero())
        elif isinstance(cell, AMSoftmaxLoss):
            init_parameter(cell.weight, Normal(1.0))
        if isinstance(cell, Data2VecAudioPositionalConvLayer):
            init_parameter(cell.conv.bias, Zero())
        if isinstance(cell, Data2VecAudioModel) and cell.masked_spec_embed is not None:
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


def _check_supported(config):
    if getattr(config, "add_adapter", False):
        raise NotImplementedError("Data2VecAudio with `config.add_adapter=True` is not supported by mindone.transformers")


class Data2VecAudioModel(Data2VecAudioPreTrainedModel):
    def __init__(self, config: Data2VecAudioConfig):
        super().__init__(config)
        _check_supported(config)
        self.config = config
        self.feature_extractor = Data2VecAudioFeatureEncoder(config)
        self.feature_projection = Data2VecAudioFeatureProjection(config)
        # model only needs masking vector if mask prob is > 0.0
        self.masked_spec_embed = None
        if config.mask_time_prob > 0.0 or config.mask_feature_prob > 0.0:
            self.masked_spec_embed = new_parameter((config.hidden_size,), Uniform(0.5))
        self.encoder = Data2VecAudioEncoder(config)
        self.adapter = None
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
            input_values: (B, samples) float raw waveform, as `Data2VecAudioFeatureExtractor` makes it.
            attention_mask: (B, samples) 1 for real samples, 0 for padding.
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
        fields = {"last_hidden_state": hidden_states, "extract_features": extract_features,
                  "hidden_states": all_hidden_states, "attentions": all_attentions}
        return model_output(Data2VecAudioBaseModelOutput, fields, return_dict is not False)


class _Data2VecAudioHeadMixin:
    """What every head on top of `self.data2vec_audio` shares: freezing, and the (optionally weighted) layer sum."""

    def freeze_feature_encoder(self):
        """Stops gradients to the convolutional feature encoder."""
        self.data2vec_audio.feature_extractor._freeze_parameters()

    def freeze_base_model(self):
        """Stops gradients to the whole base model: only the head is trained."""
        for param in self.data2vec_audio.get_parameters():
            param.requires_grad = False

    def _base_outputs(self, input_values, attention_mask, output_attentions, output_hidden_states):
        """(summed hidden states, base outputs); `use_weighted_layer_sum` mixes all layers with softmax weights."""
        weighted = getattr(self.config, "use_weighted_layer_sum", False)
        outputs = self.data2vec_audio(input_values, attention_mask=attention_mask, output_attentions=output_attentions,
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


class Data2VecAudioForCTC(_Data2VecAudioHeadMixin, Data2VecAudioPreTrainedModel):
    def __init__(self, config: Data2VecAudioConfig):
        super().__init__(config)
        self.data2vec_audio = Data2VecAudioModel(config)
        self.dropout = Dropout(config.final_dropout)
        if config.vocab_size is None:
            raise ValueError(f"You are trying to instantiate {self.__class__} with a configuration that does not "
                             "define the vocabulary size of the language model head. Please instantiate the model as "
                             "follows: `Data2VecAudioForCTC.from_pretrained(..., vocab_size=vocab_size)`. or define "
                             "`vocab_size` of your model's configuration.")
        self.lm_head = Linear(config.hidden_size, config.vocab_size)
        self.post_init()

    def construct(self, input_values, attention_mask=None, labels=None, output_attentions=None,
                  output_hidden_states=None, return_dict=None, **kwargs):
        r"""
        Args:
            labels: (B, target_length) CTC targets; -100 and the blank (`config.pad_token_id`) are padding. The loss
                follows `config.ctc_loss_reduction` and `config.ctc_zero_infinity`.
        """
        if labels is not None and not runtime.in_graph() and int(labels.max()) >= self.config.vocab_size:
            raise ValueError(f"Label values must be <= vocab_size: {self.config.vocab_size}")
        outputs = self.data2vec_audio(input_values, attention_mask=attention_mask, output_attentions=output_attentions,
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


class Data2VecAudioForSequenceClassification(_Data2VecAudioHeadMixin, Data2VecAudioPreTrainedModel):
    def __init__(self, config: Data2VecAudioConfig):
        super().__init__(config)
        if getattr(config, "add_adapter", False):
            raise ValueError("Sequence classification does not support the use of Data2VecAudio adapters "
                             "(config.add_adapter=True)")
        self.data2vec_audio = Data2VecAudioModel(config)
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


class Data2VecAudioForAudioFrameClassification(_Data2VecAudioHeadMixin, Data2VecAudioPreTrainedModel):
    def __init__(self, config: Data2VecAudioConfig):
        super().__init__(config)
        if getattr(config, "add_adapter", False):
            raise ValueError("Audio frame classification does not support the use of Data2VecAudio adapters "
                             "(config.add_adapter=True)")
        self.data2vec_audio = Data2VecAudioModel(config)
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


class Data2VecAudioForXVector(_Data2VecAudioHeadMixin, Data2VecAudioPreTrainedModel):
    def __init__(self, config: Data2VecAudioConfig):
        super().__init__(config)
        self.data2vec_audio = Data2VecAudioModel(config)
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
    "Data2VecAudioForAudioFrameClassification",
    "Data2VecAudioForCTC",
    "Data2VecAudioForSequenceClassification",
    "Data2VecAudioForXVector",
    "Data2VecAudioModel",
    "Data2VecAudioPreTrainedModel",
]
