"""T5 on MindSpore: HF's `modeling_t5.py` structure, names and outputs; device concerns live in `backend`.

Covers v1.0 (ReLU feed-forward, LM head tied to the embeddings and fed `d_model**-0.5`-scaled states) and v1.1 / Flan
(gated-GELU, separate LM head). mT5 and UMT5 reuse these classes (`models/mt5`, `models/umt5`); UMT5 differs
only in giving every block its own relative position bias (`T5Stack.bias_in_every_block`).
"""

import copy

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops
from mindspore.common.initializer import Constant, Normal
from transformers import T5Config

from ...backend import functional as F
from ...backend import runtime
from ...backend.layers import Dropout, Embedding, Linear, default_dtype, new_parameter
from ...cache_utils import DynamicCache, EncoderDecoderCache
from ...generation import GenerationMixin
from ...loss_utils import question_answering_loss, sequence_classification_loss, token_classification_loss
from ...masking_utils import create_bidirectional_mask, create_causal_mask
from ...modeling_layers import GradientCheckpointingLayer
from ...modeling_outputs import (
    model_output,
    BaseModelOutput,
    BaseModelOutputWithPastAndCrossAttentions,
    Seq2SeqLMOutput,
    Seq2SeqModelOutput,
    Seq2SeqQuestionAnsweringModelOutput,
    Seq2SeqSequenceClassifierOutput,
    TokenClassifierOutput,
)
from ...modeling_utils import PreTrainedModel, init_parameter

_FP16_MAX = 65504.0


def clamp_fp16(hidden_states):
    """HF's fp16 guard after every sub-layer: clamp to the fp16 range, 1000 below it once an inf has appeared."""
    if hidden_states.dtype != ms.float16:
        return hidden_states
    has_inf = ops.isinf(hidden_states).any()
    clamp_value = ops.where(has_inf, Tensor(_FP16_MAX - 1000, ms.float16), Tensor(_FP16_MAX, ms.float16))
    return ops.clamp(hidden_states, -clamp_value, clamp_value)


def relative_position_bucket_table(bidirectional, num_buckets, max_distance):
    """Bucket of every distance 0..max_distance (larger distances share the last entry), computed once on the host.

    Mesh-TF's rule: half of the buckets hold exact small distances, the other half logarithmically wider bins up to
    max_distance. With `bidirectional`, the upper half of `num_buckets` is for keys after the query. The float32
    log is evaluated here rather than per call so that bucket edges cannot move with a device's log kernel.
    """
    if bidirectional:
        num_buckets //= 2
    max_exact = num_buckets // 2
    distance = np.arange(max_distance + 1, dtype=np.int64)
    with np.errstate(divide="ignore"):
        log_ratio = np.log(distance.astype(np.float32) / np.float32(max_exact))
        scaled = log_ratio / np.float32(np.log(max_distance / max_exact)) * np.float32(num_buckets - max_exact)
    large = max_exact + np.where(distance < max_exact, 0, scaled).astype(np.int64)
    large = np.minimum(large, num_buckets - 1)
    return np.where(distance < max_exact, distance, large)


class T5LayerNorm(nn.Cell):
    """Scale-only RMS norm; statistics in float32, the result cast to the weight's dtype when that is half."""

    def __init__(self, hidden_size, eps=1e-6):
        super().__init__()
        self.weight = new_parameter((hidden_size,), "ones")
        self.variance_epsilon = eps

    def construct(self, hidden_states):
        hidden_states = F.rms_norm(hidden_states.astype(ms.float32), None, self.variance_epsilon)
        if self.weight.dtype in (ms.float16, ms.bfloat16):
            hidden_states = hidden_states.astype(self.weight.dtype)
        return self.weight * hidden_states


def _wo_dtype():
    # HF keeps `wo` in float32 when T5 is loaded in float16 (`_keep_in_fp32_modules`): its outputs overflow fp16
    return ms.float32 if default_dtype() == ms.float16 else None


class T5DenseActDense(nn.Cell):
    def __init__(self, config: T5Config):
        super().__init__()
        self.wi = Linear(config.d_model, config.d_ff, bias=False)
        self.wo = Linear(config.d_ff, config.d_model, bias=False, dtype=_wo_dtype())
        self.dropout = Dropout(config.dropout_rate)
        self.act = F.get_activation(config.dense_act_fn)

    def construct(self, hidden_states):
        hidden_states = self.dropout(self.act(self.wi(hidden_states)))
        return self.wo(hidden_states.astype(self.wo.weight.dtype))


class T5DenseGatedActDense(nn.Cell):
    def __init__(self, config: T5Config):
        super().__init__()
        self.wi_0 = Linear(config.d_model, config.d_ff, bias=False)
        self.wi_1 = Linear(config.d_model, config.d_ff, bias=False)
        self.wo = Linear(config.d_ff, config.d_model, bias=False, dtype=_wo_dtype())
        self.dropout = Dropout(config.dropout_rate)
        self.act = F.get_activation(config.dense_act_fn)

    def construct(self, hidden_states):
        hidden_states = self.act(self.wi_0(hidden_states)) * self.wi_1(hidden_states)
        hidden_states = self.dropout(hidden_states)
        return self.wo(hidden_states.astype(self.wo.weight.dtype))


class T5LayerFF(nn.Cell):
    def __init__(self, config: T5Config):
        super().__init__()
        if config.is_gated_act:
            self.DenseReluDense = T5DenseGatedActDense(config)
        else:
            self.DenseReluDense = T5DenseActDense(config)
        self.layer_norm = T5LayerNorm(config.d_model, eps=config.layer_norm_epsilon)
        self.dropout = Dropout(config.dropout_rate)

    def construct(self, hidden_states):
        # with a float32 `wo` the residual stream becomes float32 here, exactly as in HF
        return hidden_states + self.dropout(self.DenseReluDense(self.layer_norm(hidden_states)))


class T5Attention(nn.Cell):
    """Unscaled dot-product attention with a learned relative position bias (only the first layer owns one)."""

    def __init__(self, config: T5Config, has_relative_attention_bias=False, layer_idx=None):
        super().__init__()
        self.is_decoder = config.is_decoder
        self.has_relative_attention_bias = has_relative_attention_bias
        self.relative_attention_num_buckets = config.relative_attention_num_buckets
        self.relative_attention_max_distance = config.relative_attention_max_distance
        self.d_model = config.d_model
        self.key_value_proj_dim = config.d_kv
        self.n_heads = config.num_heads
        self.dropout = config.dropout_rate
        self.inner_dim = self.n_heads * self.key_value_proj_dim
        self.layer_idx = layer_idx

        self.q = Linear(self.d_model, self.inner_dim, bias=False)
        self.k = Linear(self.d_model, self.inner_dim, bias=False)
        self.v = Linear(self.d_model, self.inner_dim, bias=False)
        self.o = Linear(self.inner_dim, self.d_model, bias=False)
        if self.has_relative_attention_bias:
            self.relative_attention_bias = Embedding(self.relative_attention_num_buckets, self.n_heads)
            self.bucket_table = Tensor(relative_position_bucket_table(
                not self.is_decoder, self.relative_attention_num_buckets, self.relative_attention_max_distance))

    def _relative_position_bucket(self, relative_position):
        """Bucket ids (int64) of `memory_position - query_position`; decoders only see the past (<= 0)."""
        max_distance = self.relative_attention_max_distance
        if not self.is_decoder:
            upper = (relative_position > 0).astype(ms.int64) * (self.relative_attention_num_buckets // 2)
            distance = ops.minimum(ops.abs(relative_position), max_distance)
            return upper + ops.gather(self.bucket_table, distance, 0)
        distance = ops.minimum(ops.relu(-relative_position), max_distance)
        return ops.gather(self.bucket_table, distance, 0)

    def compute_bias(self, key_length, cache_position):
        """(1, H, Sq, Sk) bias for queries at absolute `cache_position` and keys 0..key_length-1."""
        context_position = cache_position.astype(ms.int64)[:, None]
        memory_position = F.arange(key_length, dtype=ms.int64)[None, :]
        buckets = self._relative_position_bucket(memory_position - context_position)
        values = self.relative_attention_bias(buckets)  # (Sq, Sk, H)
        return values.permute(2, 0, 1)[None]

    def _project_kv(self, states):
        batch, kv_len = states.shape[:2]
        key_states = self.k(states).reshape(batch, kv_len, -1, self.key_value_proj_dim).swapaxes(1, 2)
        value_states = self.v(states).reshape(batch, kv_len, -1, self.key_value_proj_dim).swapaxes(1, 2)
        return key_states, value_states

    def construct(self, hidden_states, mask=None, key_value_states=None, position_bias=None, past_key_values=None,
                  cache_position=None):
        batch, seq_len = hidden_states.shape[:2]
        is_cross_attention = key_value_states is not None
        query_states = self.q(hidden_states).reshape(batch, seq_len, -1, self.key_value_proj_dim).swapaxes(1, 2)

        current_states = key_value_states if is_cross_attention else hidden_states
        if past_key_values is None:
            key_states, value_states = self._project_kv(current_states)
        elif is_cross_attention:
            cache = past_key_values.cross_attention_cache
            if past_key_values.is_updated.get(self.layer_idx):
                # the encoder's keys/values were projected at the first decoding step (a host-side flag, so a
                # compiled decode step reads them from the cache without projecting again)
                key_states, value_states = cache.key_cache[self.layer_idx], cache.value_cache[self.layer_idx]
            else:
                slots = F.arange(0, current_states.shape[1], dtype=ms.int64)
                key_states, value_states = cache.update(*self._project_kv(current_states), self.layer_idx,
                                                        {"cache_position": slots})
                past_key_values.is_updated[self.layer_idx] = True
        else:
            # the slots a static cache writes (as HF's cache_kwargs); a DynamicCache appends and ignores them
            key_states, value_states = past_key_values.self_attention_cache.update(
                *self._project_kv(current_states), self.layer_idx, {"cache_position": cache_position})

        key_length = key_states.shape[-2]
        if position_bias is None:
            if self.has_relative_attention_bias:
                position_bias = self.compute_bias(key_length, cache_position)
            else:
                position_bias = ops.zeros((1, self.n_heads, seq_len, key_length), query_states.dtype)
        scores_bias = position_bias.astype(query_states.dtype)
        if mask is not None:
            scores_bias = scores_bias + mask
        # T5 does not scale q.k: the 1/sqrt(d) factor is folded into the initialisation of q
        attn_output, attn_weights = F.attention(query_states, key_states, value_states, attn_mask=scores_bias,
                                                scale=1.0, dropout_p=self.dropout if self.training else 0.0,
                                                training=self.training)
        attn_output = attn_output.swapaxes(1, 2).reshape(batch, seq_len, -1)
        return self.o(attn_output), position_bias, attn_weights


class T5LayerSelfAttention(nn.Cell):
    def __init__(self, config, has_relative_attention_bias=False, layer_idx=None):
        super().__init__()
        self.SelfAttention = T5Attention(config, has_relative_attention_bias=has_relative_attention_bias,
                                         layer_idx=layer_idx)
        self.layer_norm = T5LayerNorm(config.d_model, eps=config.layer_norm_epsilon)
        self.dropout = Dropout(config.dropout_rate)

    def construct(self, hidden_states, attention_mask=None, position_bias=None, past_key_values=None,
                  cache_position=None):
        attention_output, position_bias, attn_weights = self.SelfAttention(
            self.layer_norm(hidden_states), mask=attention_mask, position_bias=position_bias,
            past_key_values=past_key_values, cache_position=cache_position,
        )
        return hidden_states + self.dropout(attention_output), position_bias, attn_weights


class T5LayerCrossAttention(nn.Cell):
    def __init__(self, config, layer_idx=None):
        super().__init__()
        self.EncDecAttention = T5Attention(config, has_relative_attention_bias=False, layer_idx=layer_idx)
        self.layer_norm = T5LayerNorm(config.d_model, eps=config.layer_norm_epsilon)
        self.dropout = Dropout(config.dropout_rate)

    def construct(self, hidden_states, key_value_states, attention_mask=None, position_bias=None,
                  past_key_values=None, cache_position=None):
        attention_output, position_bias, attn_weights = self.EncDecAttention(
            self.layer_norm(hidden_states), mask=attention_mask, key_value_states=key_value_states,
            position_bias=position_bias, past_key_values=past_key_values, cache_position=cache_position,
        )
        return hidden_states + self.dropout(attention_output), position_bias, attn_weights


class T5Block(GradientCheckpointingLayer):
    def __init__(self, config, has_relative_attention_bias=False, layer_idx=None):
        super().__init__()
        self.is_decoder = config.is_decoder
        layers = [T5LayerSelfAttention(config, has_relative_attention_bias=has_relative_attention_bias,
                                       layer_idx=layer_idx)]
        if self.is_decoder:
            layers.append(T5LayerCrossAttention(config, layer_idx=layer_idx))
        layers.append(T5LayerFF(config))
        self.layer = nn.CellList(layers)

    def construct(self, hidden_states, attention_mask=None, position_bias=None, encoder_hidden_states=None,
                  encoder_attention_mask=None, encoder_decoder_position_bias=None, past_key_values=None,
                  cache_position=None):
        """Returns (hidden_states, self-attention bias, cross-attention bias, self weights, cross weights)."""
        hidden_states, self_attn_position_bias, self_attn_weights = self.layer[0](
            hidden_states, attention_mask, position_bias, past_key_values, cache_position
        )
        hidden_states = clamp_fp16(hidden_states)

        cross_attn_position_bias, cross_attn_weights = None, None
        if self.is_decoder and encoder_hidden_states is not None:
            hidden_states, cross_attn_position_bias, cross_attn_weights = self.layer[1](
                hidden_states, encoder_hidden_states, encoder_attention_mask, encoder_decoder_position_bias,
                past_key_values, cache_position,
            )
            hidden_states = clamp_fp16(hidden_states)

        hidden_states = clamp_fp16(self.layer[-1](hidden_states))
        return hidden_states, self_attn_position_bias, cross_attn_position_bias, self_attn_weights, cross_attn_weights


class T5ClassificationHead(nn.Cell):
    """Head for sentence-level classification tasks."""

    def __init__(self, config: T5Config):
        super().__init__()
        self.dense = Linear(config.d_model, config.d_model)
        self.dropout = Dropout(config.classifier_dropout)
        self.out_proj = Linear(config.d_model, config.num_labels)

    def construct(self, hidden_states):
        hidden_states = F.tanh(self.dense(self.dropout(hidden_states)))
        return self.out_proj(self.dropout(hidden_states))


class T5PreTrainedModel(PreTrainedModel):
    config_class = T5Config
    base_model_prefix = "transformer"
    supports_gradient_checkpointing = True
    _no_split_modules = ["T5Block"]
    _keep_in_fp32_modules = ["wo"]
    # the first decoder block never has a cross-attention bias; some old checkpoints carry one
    _keys_to_ignore_on_load_unexpected = [r"decoder\.block\.0\.layer\.1\.EncDecAttention\.relative_attention_bias"]

    def _init_weights(self, cell):
        """HF's T5 scheme: every std is derived from d_model / d_ff / d_kv and `initializer_factor`."""
        super()._init_weights(cell)
        factor = self.config.initializer_factor
        d_model, d_ff, d_kv, n_heads = self.config.d_model, self.config.d_ff, self.config.d_kv, self.config.num_heads

        def normal(linear, std):
            init_parameter(linear.weight, Normal(std))
            if getattr(linear, "bias", None) is not None:
                init_parameter(linear.bias, "zeros")

        if isinstance(cell, T5LayerNorm):
            init_parameter(cell.weight, Constant(factor * 1.0))
        elif isinstance(cell, (T5Model, T5ForConditionalGeneration, T5EncoderModel, T5ForQuestionAnswering)):
            init_parameter(cell.shared.weight, Normal(factor * 1.0))
            if getattr(cell, "lm_head", None) is not None and "lm_head.weight" not in cell._tied_pairs():
                init_parameter(cell.lm_head.weight, Normal(factor * 1.0))
            if getattr(cell, "qa_outputs", None) is not None:
                normal(cell.qa_outputs, factor * d_model ** -0.5)
        elif isinstance(cell, T5ForTokenClassification):
            normal(cell.classifier, factor * 1.0)
        elif isinstance(cell, T5ClassificationHead):
            normal(cell.dense, factor * d_model ** -0.5)
            normal(cell.out_proj, factor * d_model ** -0.5)
        elif isinstance(cell, T5DenseActDense):
            normal(cell.wi, factor * d_model ** -0.5)
            normal(cell.wo, factor * d_ff ** -0.5)
        elif isinstance(cell, T5DenseGatedActDense):
            normal(cell.wi_0, factor * d_model ** -0.5)
            normal(cell.wi_1, factor * d_model ** -0.5)
            normal(cell.wo, factor * d_ff ** -0.5)
        elif isinstance(cell, T5Attention):
            normal(cell.q, factor * (d_model * d_kv) ** -0.5)
            normal(cell.k, factor * d_model ** -0.5)
            normal(cell.v, factor * d_model ** -0.5)
            normal(cell.o, factor * (n_heads * d_kv) ** -0.5)
            if cell.has_relative_attention_bias:
                init_parameter(cell.relative_attention_bias.weight, Normal(factor * d_model ** -0.5))

    # ------------------------------------------------------------------------------------------------------------
    # v1.1 / Flan heads: transformers 5 always sets `tie_word_embeddings=True` on T5 configs (the original flag now
    # only means `scale_decoder_outputs`), and its loader keeps `lm_head` separate when the checkpoint stores an
    # `lm_head.weight` different from `shared.weight`. We follow the checkpoint the same way.
    # ------------------------------------------------------------------------------------------------------------

    _lm_head_untied = False

    def _tied_pairs(self):
        pairs = super()._tied_pairs()
        if self._lm_head_untied:
            pairs.pop("lm_head.weight", None)
        return pairs

    def _load_checkpoint(self, files, fmt, ignore_mismatched_sizes=False):
        head = getattr(self, "lm_head", None)
        if head is None or "lm_head.weight" not in self._tied_pairs():
            return super()._load_checkpoint(files, fmt, ignore_mismatched_sizes=ignore_mismatched_sizes)
        # load lm_head into a parameter of its own (zeros mark "not in the checkpoint"), then tie it back unless the
        # checkpoint gave it values of its own
        self._lm_head_untied = True
        head.weight = new_parameter(head.weight.shape, "zeros", head.weight.dtype)
        self._keys_to_ignore_on_load_missing = [r"^lm_head\.weight$"]
        try:
            info = super()._load_checkpoint(files, fmt, ignore_mismatched_sizes=ignore_mismatched_sizes)
        finally:
            del self._keys_to_ignore_on_load_missing
        weight = head.weight.asnumpy()
        if not weight.any() or np.array_equal(weight, self.shared.weight.asnumpy()):
            self._lm_head_untied = False
            self.tie_weights()
        return info

    # ------------------------------------------------------------------------------------------------------------
    # the encoder-decoder body shared by T5Model, T5ForConditionalGeneration and T5ForQuestionAnswering
    # ------------------------------------------------------------------------------------------------------------

    def _build_encoder_decoder(self, config):
        self.model_dim = config.d_model
        self.shared = Embedding(config.vocab_size, config.d_model)
        encoder_config, decoder_config = _stack_configs(config)
        self.encoder = T5Stack(encoder_config)
        self.decoder = T5Stack(decoder_config)

    def get_input_embeddings(self):
        if getattr(self, "shared", None) is None:
            return self.transformer.get_input_embeddings()
        return self.shared

    def set_input_embeddings(self, new_embeddings):
        if getattr(self, "shared", None) is None:
            self.transformer.set_input_embeddings(new_embeddings)
            return
        self.shared = new_embeddings
        for stack in (getattr(self, "encoder", None), getattr(self, "decoder", None)):
            if stack is not None:
                stack.set_input_embeddings(new_embeddings)

    def get_encoder(self):
        return self.encoder

    def get_decoder(self):
        return self.decoder

    def _encode_decode(self, input_ids, attention_mask, decoder_input_ids, decoder_attention_mask, encoder_outputs,
                       past_key_values, inputs_embeds, decoder_inputs_embeds, use_cache, output_attentions,
                       output_hidden_states, cache_position):
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        if encoder_outputs is None:
            last_hidden_state, _, hidden_states, attentions, _ = self.encoder(
                input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                output_attentions=output_attentions, output_hidden_states=output_hidden_states, return_dict=False,
            )
            encoder_fields = (last_hidden_state, hidden_states, attentions)
        else:
            encoder_fields = _encoder_fields(encoder_outputs)
        decoder_fields = self.decoder(
            input_ids=decoder_input_ids, attention_mask=decoder_attention_mask, inputs_embeds=decoder_inputs_embeds,
            past_key_values=past_key_values, encoder_hidden_states=encoder_fields[0],
            encoder_attention_mask=attention_mask, use_cache=use_cache, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states, cache_position=cache_position, return_dict=False,
        )
        # plain tuples rather than output objects inside the graph: MindSpore's CPU runtime fails on nested output
        # objects carrying attention tuples
        return encoder_fields, decoder_fields

    def _shift_right(self, input_ids):
        """decoder_input_ids from labels: prepend decoder_start_token_id, drop the last token, -100 -> pad."""
        decoder_start_token_id = self.config.decoder_start_token_id
        pad_token_id = self.config.pad_token_id
        if decoder_start_token_id is None:
            raise ValueError("self.model.config.decoder_start_token_id has to be defined. In T5 it is usually set to "
                             "the pad_token_id. See T5 docs for more information.")
        if pad_token_id is None:
            raise ValueError("self.model.config.pad_token_id has to be defined.")
        start = F.full((input_ids.shape[0], 1), decoder_start_token_id, input_ids.dtype)
        shifted = F.cat([start, input_ids[:, :-1]], -1)
        return shifted.masked_fill(shifted == -100, pad_token_id)


class T5Stack(nn.Cell):
    """The encoder or the decoder (`config.is_decoder`): embeddings -> blocks -> final norm."""

    def __init__(self, config: T5Config):
        super().__init__()
        self.config = config
        self.embed_tokens = Embedding(config.vocab_size, config.d_model)
        self.is_decoder = config.is_decoder
        # T5/mT5: the first block owns the relative position bias and the others reuse it; UMT5: every block has its own
        self.bias_in_every_block = config.model_type == "umt5"
        self.block = nn.CellList(
            [T5Block(config, has_relative_attention_bias=(i == 0 or self.bias_in_every_block), layer_idx=i)
             for i in range(config.num_layers)]
        )
        self.final_layer_norm = T5LayerNorm(config.d_model, eps=config.layer_norm_epsilon)
        self.dropout = Dropout(config.dropout_rate)

    def set_input_embeddings(self, new_embeddings):
        self.embed_tokens = new_embeddings

    def construct(self, input_ids=None, attention_mask=None, encoder_hidden_states=None, encoder_attention_mask=None,
                  inputs_embeds=None, past_key_values=None, use_cache=None, output_attentions=False,
                  output_hidden_states=False, cache_position=None, return_dict=True):
        """With `return_dict=False`: the fixed 5-tuple (last_hidden_state, past_key_values, hidden_states, attentions,
        cross_attentions), None entries included."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        batch_size, seq_len = inputs_embeds.shape[:2]
        dtype = inputs_embeds.dtype

        if self.is_decoder:
            use_cache = use_cache if use_cache is not None else self.config.use_cache
            if use_cache and past_key_values is None and not runtime.in_graph():
                # a growing cache only exists in PyNative; compiled decoding passes a static one
                past_key_values = EncoderDecoderCache(DynamicCache(), DynamicCache())
            self_cache = past_key_values.self_attention_cache if past_key_values is not None else None
            past_seen = self_cache.get_seq_length() if self_cache is not None else 0
            if cache_position is None:
                cache_position = F.arange(past_seen, past_seen + seq_len, dtype=ms.int64)
            if self_cache is not None and self_cache.get_max_cache_shape() is not None:
                kv_length = self_cache.get_max_cache_shape()
            else:
                kv_length = past_seen + seq_len
            attention_mask = create_causal_mask(attention_mask, batch_size, cache_position, kv_length, dtype)
        else:
            # the encoder never caches; its relative positions are 0..S-1
            past_key_values = None
            cache_position = F.arange(seq_len, dtype=ms.int64)
            attention_mask = create_bidirectional_mask(attention_mask, seq_len, dtype)

        encoder_extended_attention_mask = None
        if self.is_decoder and encoder_hidden_states is not None:
            encoder_extended_attention_mask = create_bidirectional_mask(encoder_attention_mask, seq_len, dtype)

        all_hidden_states = () if output_hidden_states else None
        all_attentions = () if output_attentions else None
        all_cross_attentions = () if output_attentions and self.is_decoder else None

        position_bias = None
        encoder_decoder_position_bias = None
        hidden_states = self.dropout(inputs_embeds)
        for layer_module in self.block:
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            hidden_states, self_bias, cross_bias, self_weights, cross_weights = layer_module(
                hidden_states, attention_mask, position_bias, encoder_hidden_states, encoder_extended_attention_mask,
                encoder_decoder_position_bias, past_key_values, cache_position,
            )
            # the first block computes the position biases, the others reuse them
            if not self.bias_in_every_block:
                position_bias = self_bias
            if self.is_decoder and encoder_hidden_states is not None:
                encoder_decoder_position_bias = cross_bias
            if output_attentions:
                all_attentions += (self_weights,)
                if self.is_decoder and encoder_hidden_states is not None:
                    all_cross_attentions += (cross_weights,)

        hidden_states = self.dropout(self.final_layer_norm(hidden_states))
        if output_hidden_states:
            all_hidden_states += (hidden_states,)
        past_key_values = past_key_values if use_cache else None
        if not return_dict:
            return hidden_states, past_key_values, all_hidden_states, all_attentions, all_cross_attentions
        return BaseModelOutputWithPastAndCrossAttentions(
            last_hidden_state=hidden_states,
            past_key_values=past_key_values,
            hidden_states=all_hidden_states,
            attentions=all_attentions,
            cross_attentions=all_cross_attentions,
        )


def _stack_configs(config):
    encoder_config = copy.deepcopy(config)
    encoder_config.is_decoder = False
    encoder_config.use_cache = False
    decoder_config = copy.deepcopy(config)
    decoder_config.is_decoder = True
    decoder_config.num_layers = config.num_decoder_layers
    return encoder_config, decoder_config


def _encoder_fields(encoder_outputs):
    """(last_hidden_state, hidden_states, attentions) of a given encoder output object or HF-style tuple."""
    if isinstance(encoder_outputs, dict):
        return (encoder_outputs.get("last_hidden_state"), encoder_outputs.get("hidden_states"),
                encoder_outputs.get("attentions"))
    return (encoder_outputs[0], encoder_outputs[1] if len(encoder_outputs) > 1 else None,
            encoder_outputs[2] if len(encoder_outputs) > 2 else None)


class T5Model(T5PreTrainedModel):
    _tied_weights_keys = {
        "encoder.embed_tokens.weight": "shared.weight",
        "decoder.embed_tokens.weight": "shared.weight",
    }

    def __init__(self, config: T5Config):
        super().__init__(config)
        self._build_encoder_decoder(config)
        self.post_init()

    def construct(self, input_ids=None, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
                  encoder_outputs=None, past_key_values=None, inputs_embeds=None, decoder_inputs_embeds=None,
                  use_cache=None, output_attentions=None, output_hidden_states=None, return_dict=None,
                  cache_position=None, **kwargs):
        r"""
        Args:
            input_ids: (B, S) encoder token ids (T5 has relative positions: pad on either side).
            decoder_input_ids: (B, T) decoder ids, starting with `decoder_start_token_id` (see `_shift_right`).
            encoder_outputs: a previous encoder pass (reused during generation).
            past_key_values: an encoder-decoder cache (`self_attention_cache` / `cross_attention_cache`); only used
                when given (generation passes one).
        """
        encoder_fields, decoder_fields = self._encode_decode(
            input_ids, attention_mask, decoder_input_ids, decoder_attention_mask, encoder_outputs, past_key_values,
            inputs_embeds, decoder_inputs_embeds, use_cache, output_attentions, output_hidden_states, cache_position,
        )
        enc_last, enc_hidden, enc_attn = encoder_fields
        dec_last, dec_past, dec_hidden, dec_attn, dec_cross = decoder_fields
        fields = {
            "last_hidden_state": dec_last,
            "past_key_values": dec_past,
            "decoder_hidden_states": dec_hidden,
            "decoder_attentions": dec_attn,
            "cross_attentions": dec_cross,
            "encoder_last_hidden_state": enc_last,
            "encoder_hidden_states": enc_hidden,
            "encoder_attentions": enc_attn,
        }
        return model_output(Seq2SeqModelOutput, fields, return_dict is not False)


class T5ForConditionalGeneration(T5PreTrainedModel, GenerationMixin):
    # compiled decoding: the decoder reads an EncoderDecoderStaticCache, and the step takes the encoder padding mask
    _supports_static_cache = True
    _decode_step_encoder_mask = True
    _tied_weights_keys = {
        "encoder.embed_tokens.weight": "shared.weight",
        "decoder.embed_tokens.weight": "shared.weight",
        "lm_head.weight": "shared.weight",
    }

    def __init__(self, config: T5Config):
        super().__init__(config)
        self._build_encoder_decoder(config)
        self.lm_head = Linear(config.d_model, config.vocab_size, bias=False)
        # v1.0 feeds the tied head d_model**-0.5-scaled states; v1.1 / Flan configs say tie_word_embeddings=False
        self.scale_decoder_outputs = bool(getattr(config, "scale_decoder_outputs", config.tie_word_embeddings))
        self.post_init()

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    def construct(self, input_ids=None, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
                  encoder_outputs=None, past_key_values=None, inputs_embeds=None, decoder_inputs_embeds=None,
                  labels=None, use_cache=None, output_attentions=None, output_hidden_states=None, return_dict=None,
                  cache_position=None, **kwargs):
        r"""
        labels: (B, T) target ids; -100 is ignored by the loss. Without decoder inputs, `decoder_input_ids` is
            `_shift_right(labels)`.
        Other arguments as in `T5Model`.
        """
        if labels is not None and decoder_input_ids is None and decoder_inputs_embeds is None:
            decoder_input_ids = self._shift_right(labels)
        encoder_fields, decoder_fields = self._encode_decode(
            input_ids, attention_mask, decoder_input_ids, decoder_attention_mask, encoder_outputs, past_key_values,
            inputs_embeds, decoder_inputs_embeds, use_cache, output_attentions, output_hidden_states, cache_position,
        )
        enc_last, enc_hidden, enc_attn = encoder_fields
        dec_last, dec_past, dec_hidden, dec_attn, dec_cross = decoder_fields
        sequence_output = dec_last
        if self.scale_decoder_outputs:
            sequence_output = sequence_output * (self.model_dim ** -0.5)
        lm_logits = self.lm_head(sequence_output)

        loss = None
        if labels is not None:
            loss = F.cross_entropy(lm_logits.reshape(-1, lm_logits.shape[-1]), labels.reshape(-1))

        fields = {
            "loss": loss,
            "logits": lm_logits,
            "past_key_values": dec_past,
            "decoder_hidden_states": dec_hidden,
            "decoder_attentions": dec_attn,
            "cross_attentions": dec_cross,
            "encoder_last_hidden_state": enc_last,
            "encoder_hidden_states": enc_hidden,
            "encoder_attentions": enc_attn,
        }
        return model_output(Seq2SeqLMOutput, fields, return_dict is not False)

    def prepare_decoder_input_ids_from_labels(self, labels):
        return self._shift_right(labels)


class T5EncoderModel(T5PreTrainedModel):
    _tied_weights_keys = {"encoder.embed_tokens.weight": "shared.weight"}
    _keys_to_ignore_on_load_unexpected = [r"decoder", r"lm_head"]

    def __init__(self, config: T5Config):
        super().__init__(config)
        self.shared = Embedding(config.vocab_size, config.d_model)
        encoder_config, _ = _stack_configs(config)
        encoder_config.is_encoder_decoder = False
        self.encoder = T5Stack(encoder_config)
        self.post_init()

    def construct(self, input_ids=None, attention_mask=None, inputs_embeds=None, output_attentions=None,
                  output_hidden_states=None, return_dict=None, **kwargs):
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        last_hidden_state, _, hidden_states, attentions, _ = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states, return_dict=False,
        )
        fields = {"last_hidden_state": last_hidden_state, "hidden_states": hidden_states, "attentions": attentions}
        return model_output(BaseModelOutput, fields, return_dict is not False)


class T5ForSequenceClassification(T5PreTrainedModel):
    """Classifies the decoder state at each row's last <eos> of `input_ids` (every row needs the same number)."""

    _tied_weights_keys = {
        "transformer.encoder.embed_tokens.weight": "transformer.shared.weight",
        "transformer.decoder.embed_tokens.weight": "transformer.shared.weight",
    }

    def __init__(self, config: T5Config):
        super().__init__(config)
        self.transformer = T5Model(config)
        self.classification_head = T5ClassificationHead(config)
        self.post_init()

    def construct(self, input_ids=None, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
                  encoder_outputs=None, inputs_embeds=None, decoder_inputs_embeds=None, labels=None, use_cache=None,
                  output_attentions=None, output_hidden_states=None, return_dict=None, **kwargs):
        if input_ids is None:
            raise NotImplementedError(f"Passing input embeddings is currently not supported for {type(self).__name__}")
        if decoder_input_ids is None and decoder_inputs_embeds is None:
            decoder_input_ids = self._shift_right(input_ids)
        outputs = self.transformer(
            input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=decoder_attention_mask, encoder_outputs=encoder_outputs,
            inputs_embeds=inputs_embeds, decoder_inputs_embeds=decoder_inputs_embeds, use_cache=use_cache,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states, return_dict=True,
        )
        sequence_output = outputs.get("last_hidden_state")
        eos_mask = (input_ids == self.config.eos_token_id).astype(ms.int32)
        if not runtime.in_graph():
            counts = eos_mask.sum(1).asnumpy()
            if (counts != counts[0]).any():
                raise ValueError("All examples must have the same number of <eos> tokens.")
            if counts[0] < 1:
                raise ValueError("Each example must contain at least one <eos> token.")
        batch_size, seq_len, hidden_size = sequence_output.shape
        last_eos = F.argmax(F.arange(seq_len, dtype=ms.int32) * eos_mask, -1).astype(ms.int32)
        sentence_representation = ops.gather_elements(
            sequence_output, 1, ops.broadcast_to(last_eos[:, None, None], (batch_size, 1, hidden_size))
        ).squeeze(1)
        logits = self.classification_head(sentence_representation)

        loss = None
        if labels is not None:
            loss = sequence_classification_loss(labels, logits, self.config)
        fields = {
            "loss": loss,
            "logits": logits,
            "past_key_values": outputs.get("past_key_values"),
            "decoder_hidden_states": outputs.get("decoder_hidden_states"),
            "decoder_attentions": outputs.get("decoder_attentions"),
            "cross_attentions": outputs.get("cross_attentions"),
            "encoder_last_hidden_state": outputs.get("encoder_last_hidden_state"),
            "encoder_hidden_states": outputs.get("encoder_hidden_states"),
            "encoder_attentions": outputs.get("encoder_attentions"),
        }
        return model_output(Seq2SeqSequenceClassifierOutput, fields, return_dict is not False)


class T5ForTokenClassification(T5PreTrainedModel):
    _tied_weights_keys = {"transformer.encoder.embed_tokens.weight": "transformer.shared.weight"}

    def __init__(self, config: T5Config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.transformer = T5EncoderModel(config)
        self.dropout = Dropout(config.classifier_dropout)
        self.classifier = Linear(config.d_model, config.num_labels)
        self.post_init()

    def construct(self, input_ids=None, attention_mask=None, inputs_embeds=None, labels=None, output_attentions=None,
                  output_hidden_states=None, return_dict=None, **kwargs):
        outputs = self.transformer(input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                                   output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                                   return_dict=True)
        logits = self.classifier(self.dropout(outputs.get("last_hidden_state")))
        loss = None
        if labels is not None:
            loss = token_classification_loss(logits, labels, self.num_labels)
        fields = {"loss": loss, "logits": logits, "hidden_states": outputs.get("hidden_states"),
                  "attentions": outputs.get("attentions")}
        return model_output(TokenClassifierOutput, fields, return_dict is not False)


class T5ForQuestionAnswering(T5PreTrainedModel):
    _tied_weights_keys = {
        "encoder.embed_tokens.weight": "shared.weight",
        "decoder.embed_tokens.weight": "shared.weight",
    }

    def __init__(self, config: T5Config):
        super().__init__(config)
        self._build_encoder_decoder(config)
        self.num_labels = config.num_labels
        self.qa_outputs = Linear(config.d_model, config.num_labels)
        self.post_init()

    def construct(self, input_ids=None, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
                  encoder_outputs=None, start_positions=None, end_positions=None, inputs_embeds=None,
                  decoder_inputs_embeds=None, use_cache=None, output_attentions=None, output_hidden_states=None,
                  return_dict=None, **kwargs):
        if decoder_input_ids is None and decoder_inputs_embeds is None:
            if input_ids is None:
                raise ValueError("If no `decoder_input_ids` or `decoder_inputs_embeds` are passed, `input_ids` cannot "
                                 "be `None`. Please pass either `input_ids` or `decoder_input_ids` or "
                                 "`decoder_inputs_embeds`.")
            decoder_input_ids = self._shift_right(input_ids)
        encoder_fields, decoder_fields = self._encode_decode(
            input_ids, attention_mask, decoder_input_ids, decoder_attention_mask, encoder_outputs, None,
            inputs_embeds, decoder_inputs_embeds, use_cache, output_attentions, output_hidden_states, None,
        )
        enc_last, enc_hidden, enc_attn = encoder_fields
        dec_last, dec_past, dec_hidden, dec_attn, dec_cross = decoder_fields
        logits = self.qa_outputs(dec_last)
        start_logits, end_logits = logits[..., 0], logits[..., 1]
        loss = None
        if start_positions is not None and end_positions is not None:
            loss = question_answering_loss(start_logits, end_logits, start_positions, end_positions)
        fields = {
            "loss": loss,
            "start_logits": start_logits,
            "end_logits": end_logits,
            "past_key_values": dec_past,
            "decoder_hidden_states": dec_hidden,
            "decoder_attentions": dec_attn,
            "cross_attentions": dec_cross,
            "encoder_last_hidden_state": enc_last,
            "encoder_hidden_states": enc_hidden,
            "encoder_attentions": enc_attn,
        }
        return model_output(Seq2SeqQuestionAnsweringModelOutput, fields, return_dict is not False)


__all__ = [
    "T5EncoderModel",
    "T5ForConditionalGeneration",
    "T5Model",
    "T5PreTrainedModel",
    "T5ForQuestionAnswering",
    "T5ForSequenceClassification",
    "T5ForTokenClassification",
]
