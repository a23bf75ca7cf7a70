"""CPM-Ant on MindSpore: HF's `modeling_cpmant.py` structure, names and outputs; device concerns live in `backend`.

CPM-Ant is a pre-norm decoder (RMS-style norms without bias, gated-GELU feed-forward, bias-free projections) with
two twists:
  * `prompt_length` learned prompt tokens (ids `vocab_size + 2 * prompt_length ...`) are put in front of every input;
    they are segment 0, text tokens segment 2, padding (id 0) segment 0. Inputs are *left*-padded; the model derives
    its padding mask from the number of non-zero ids.
  * attention scores get a learned bias: a bucketed relative position (T5-style log buckets) within a segment, one
    bucket per (query segment, key segment) pair across segments.
The forward always takes the whole sequence: with a cache it computes the masks for all of it and keeps the new rows.
"""

import math

import mindspore as ms
from mindspore import nn, ops
from transformers import CpmAntConfig

from ...backend import functional as F
from ...backend.layers import Dropout, Embedding, Linear, new_parameter
from ...backend import runtime
from ...cache_utils import DynamicCache
from ...generation.utils import GenerationMixin
from ...modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast, model_output
from ...modeling_utils import PreTrainedModel


class CpmAntLayerNorm(nn.Cell):
    """x * rsqrt(mean(x^2) + eps) * weight (no mean subtraction, no bias), the variance in fp32."""

    def __init__(self, config: CpmAntConfig):
        super().__init__()
        self.eps = config.eps
        self.dim_norm = config.hidden_size
        self.weight = new_parameter((config.hidden_size,), "ones")

    def construct(self, hidden_states):
        if hidden_states.shape[-1] != self.dim_norm:
            raise AssertionError("hidden_states.size(-1) != self.dim_norm")
        variance = hidden_states.astype(ms.float32).pow(2).mean(-1, keep_dims=True)
        normed = (hidden_states * ops.rsqrt(variance + self.eps)).astype(hidden_states.dtype)
        return normed * self.weight


class CpmAntAttention(nn.Cell):
    def __init__(self, config: CpmAntConfig, layer_idx=None):
        super().__init__()
        self.dim_model = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.dim_head = config.dim_head
        self.layer_idx = layer_idx
        self.project_q = Linear(self.dim_model, self.num_heads * self.dim_head, bias=False)
        self.project_k = Linear(self.dim_model, self.num_heads * self.dim_head, bias=False)
        self.project_v = Linear(self.dim_model, self.num_heads * self.dim_head, bias=False)
        self.attention_out = Linear(self.num_heads * self.dim_head, self.dim_model, bias=False)
        self.dropout = Dropout(config.dropout_p) if config.dropout_p is not None else None

    def _heads(self, x):
        return x.reshape(x.shape[0], x.shape[1], self.num_heads, self.dim_head).swapaxes(1, 2)

    def construct(self, hidden_q, hidden_kv, attention_mask, position_bias, past_key_values=None):
        batch_size, len_q = hidden_q.shape[:2]
        query = self._heads(self.project_q(hidden_q))
        key = self._heads(self.project_k(hidden_kv))
        value = self._heads(self.project_v(hidden_kv))
        if past_key_values is not None:
            key, value = past_key_values.update(key, value, self.layer_idx)
        score = F.matmul(query, key.swapaxes(-1, -2)) / math.sqrt(self.dim_head)
        score = score + position_bias
        allowed = attention_mask.reshape(batch_size, 1, len_q, key.shape[-2])
        # HF fills -inf and zeroes the probabilities of masked keys afterwards (a row without any key -> all zeros);
        # the dtype's minimum gives the same probabilities without NaN in between
        score = ops.where(allowed, score, F.full((), F.finfo_min(score.dtype), score.dtype))
        probs = ops.where(allowed, F.softmax(score, -1), ops.zeros((), score.dtype))
        attended = probs if self.dropout is None else self.dropout(probs)
        out = F.matmul(attended, value).swapaxes(1, 2).reshape(batch_size, len_q, self.num_heads * self.dim_head)
        return self.attention_out(out), probs


class CpmAntSelfAttentionBlock(nn.Cell):
    def __init__(self, config: CpmAntConfig, layer_idx=None):
        super().__init__()
        self.layernorm_before_attention = CpmAntLayerNorm(config)
        self.self_attention = CpmAntAttention(config, layer_idx=layer_idx)
        self.dropout = Dropout(config.dropout_p) if config.dropout_p else None

    def construct(self, hidden_states, attention_mask, position_bias=None, past_key_values=None):
        normed = self.layernorm_before_attention(hidden_states)
        outputs, probs = self.self_attention(normed, normed, attention_mask, position_bias, past_key_values)
        if self.dropout is not None:
            outputs = self.dropout(outputs)
        return hidden_states + outputs, probs


class CpmAntDenseGatedACT(nn.Cell):
    """gelu(w_0 x) * w_1 x."""

    def __init__(self, config: CpmAntConfig):
        super().__init__()
        self.w_0 = Linear(config.hidden_size, config.dim_ff, bias=False)
        self.w_1 = Linear(config.hidden_size, config.dim_ff, bias=False)

    def construct(self, hidden_states):
        return F.gelu(self.w_0(hidden_states)) * self.w_1(hidden_states)


class CpmAntFeedForward(nn.Cell):
    def __init__(self, config: CpmAntConfig):
        super().__init__()
        self.w_in = CpmAntDenseGatedACT(config)
        self.dropout = Dropout(config.dropout_p) if config.dropout_p is not None else None
        self.w_out = Linear(config.dim_ff, config.hidden_size, bias=False)

    def construct(self, hidden_states):
        hidden_states = self.w_in(hidden_states)
        if self.dropout is not None:
            hidden_states = self.dropout(hidden_states)
        return self.w_out(hidden_states)


class CpmAntFFNBlock(nn.Cell):
    def __init__(self, config: CpmAntConfig):
        super().__init__()
        self.layernorm_before_ffn = CpmAntLayerNorm(config)
        self.ffn = CpmAntFeedForward(config)
        self.dropout = Dropout(config.dropout_p) if config.dropout_p else None

    def construct(self, hidden_states):
        outputs = self.ffn(self.layernorm_before_ffn(hidden_states))
        if self.dropout is not None:
            outputs = self.dropout(outputs)
        return hidden_states + outputs


class CpmAntTransformerBlock(nn.Cell):
    def __init__(self, config: CpmAntConfig, layer_idx=None):
        super().__init__()
        self.self_att = CpmAntSelfAttentionBlock(config, layer_idx=layer_idx)
        self.ffn = CpmAntFFNBlock(config)

    def construct(self, hidden_states, attention_mask, position_bias=None, past_key_values=None):
        hidden_states, probs = self.self_att(hidden_states, attention_mask, position_bias, past_key_values)
        return self.ffn(hidden_states), probs


class CpmAntEncoder(nn.Cell):
    def __init__(self, config: CpmAntConfig):
        super().__init__()
        self.num_layers = config.num_hidden_layers
        self.layers = nn.CellList([CpmAntTransformerBlock(config, layer_idx=i) for i in range(self.num_layers)])
        self.output_layernorm = CpmAntLayerNorm(config)

    def construct(self, hidden_states, attention_mask, position_bias, output_attentions=False,
                  output_hidden_states=False, past_key_values=None):
        all_hidden_states = () if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layers:
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            hidden_states, probs = layer(hidden_states, attention_mask, position_bias, past_key_values)
            if output_attentions:
                all_attentions += (probs,)
        hidden_states = self.output_layernorm(hidden_states)
        if output_hidden_states:
            all_hidden_states += (hidden_states,)
        return hidden_states, all_hidden_states, all_attentions


class CpmAntSegmentPositionEmbedding(nn.Cell):
    """(B, heads, Lq, Lk) score bias: same segment -> bucketed relative position (k - q); different segments ->
    bucket `num_buckets + q_segment * segment_types + k_segment`."""

    def __init__(self, config: CpmAntConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.num_buckets = config.position_bias_num_buckets
        self.max_distance = config.position_bias_max_distance
        self.num_segments = config.segment_types
        self.relative_attention_bias = new_parameter(
            (config.segment_types * config.segment_types + config.position_bias_num_buckets,
             config.num_attention_heads), "zeros")

    def construct(self, key_pos, query_pos, key_segment, query_segment):
        batch, keylen, querylen = key_pos.shape[0], key_pos.shape[1], query_pos.shape[1]
        if key_pos.shape[0] != query_pos.shape[0]:
            raise AssertionError(f"key_pos.size(0) should be equal to query_pos.size(0), but got {key_pos.shape[0]} "
                                 f"and {query_pos.shape[0]}!")
        if keylen != key_segment.shape[1] or querylen != query_segment.shape[1]:
            raise AssertionError(f"keylen should be equal to key_segment.size(1), but got {keylen} and "
                                 f"{key_segment.shape[1]}!")
        key_segment = key_segment.reshape(batch, 1, keylen)
        query_segment = query_segment.reshape(batch, querylen, 1)
        segment_bucket = query_segment * self.num_segments + key_segment + self.num_buckets
        relative = F.arange(keylen, dtype=ms.int32).reshape(1, keylen) - F.arange(querylen, dtype=ms.int32).reshape(
            querylen, 1)
        position_bucket = self._position_bucket(relative, self.num_buckets, self.max_distance)
        bucket = ops.where(key_segment == query_segment, position_bucket.reshape(1, querylen, keylen).astype(
            segment_bucket.dtype), segment_bucket)
        embeds = F.embedding(bucket.astype(ms.int64), self.relative_attention_bias)  # (B, Lq, Lk, heads)
        return ops.transpose(embeds, (0, 3, 1, 2))

    def _segment_relative_position_bucket(self, query_segment, key_segment):
        return query_segment * self.num_segments + key_segment

    def _position_bucket(self, relative_position, num_buckets=32, max_distance=128):
        """Half the buckets per direction: exact below num_buckets / 4, then log-spaced up to max_distance."""
        num_buckets //= 2
        relative_buckets = (relative_position > 0).astype(ms.int32) * num_buckets
        relative_position = ops.abs(relative_position)
        max_exact = num_buckets // 2
        is_small = relative_position < max_exact
        # distance >= 1 inside the log: the small branch covers 0, whose log would be -inf
        distance = ops.maximum(relative_position, ops.ones((), ms.int32)).astype(ms.float32)
        if_large = max_exact + (ops.log(distance / max_exact) / math.log(max_distance / max_exact)
                                * (num_buckets - max_exact)).astype(ms.int32)
        if_large = ops.minimum(if_large, F.full((), num_buckets - 1, ms.int32))
        return relative_buckets + ops.where(is_small, relative_position.astype(ms.int32), if_large)


class CpmAntPreTrainedModel(PreTrainedModel):
    config_class = CpmAntConfig
    base_model_prefix = "cpmant"


class CpmAntModel(CpmAntPreTrainedModel):
    def __init__(self, config: CpmAntConfig):
        super().__init__(config)
        self.encoder = CpmAntEncoder(config)
        self.segment_embedding = Embedding(config.segment_types, config.hidden_size)
        self.input_embedding = Embedding(config.vocab_size + config.prompt_types * config.prompt_length,
                                         config.hidden_size)
        self.position_bias = CpmAntSegmentPositionEmbedding(config)
        self.prompt_length = config.prompt_length
        self.vocab_size = config.vocab_size
        self.post_init()

    def get_input_embeddings(self):
        return self.input_embedding

    def set_input_embeddings(self, embeddings, **kwargs):
        self.input_embedding = embeddings

    def _prepare_attention_mask(self, input_ids, span, context, length):
        """(B, L, L) bool: causal among non-context positions (all are context here, so bidirectional), same span,
        and both positions real (prompts always; text: the last `length` positions, i.e. left padding)."""
        batch, seqlen = input_ids.shape
        positions = F.arange(seqlen)
        directional = positions.reshape(1, seqlen) <= positions.reshape(seqlen, 1)
        context = context.astype(ms.bool_)
        mask = ops.logical_or(context[:, None, :],
                              ops.logical_and(ops.logical_not(context[:, :, None]), directional[None]))
        mask = ops.logical_and(mask, span[:, None, :] == span[:, :, None])
        from_end = F.arange(seqlen - self.prompt_length - 1, -1, -1).reshape(1, -1)
        real = from_end < length.astype(ms.int64)[:, None]
        real = F.cat([ops.ones((batch, self.prompt_length), ms.bool_), real], 1)
        return ops.logical_and(ops.logical_and(real[:, :, None], real[:, None, :]), mask)

    def construct(self, input_ids=None, output_attentions=None, output_hidden_states=None, past_key_values=None,
                  use_cache=None, return_dict=None, **kwargs):
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        if past_key_values is None:
            past_key_values = kwargs.get("cache")  # HF 5's name for the same argument
        use_cache = use_cache if use_cache is not None else self.config.use_cache
        if runtime.in_graph():
            use_cache = False  # a growing cache only exists in PyNative
        input_ids = input_ids.astype(ms.int32)
        batch = input_ids.shape[0]
        segment = ops.where(input_ids != 0, F.full((), 2, ms.int32), F.full((), 0, ms.int32))
        length = (segment != 0).astype(ms.int32).sum(-1)
        prompts = F.arange(self.prompt_length * 2 + self.vocab_size, self.prompt_length * 3 + self.vocab_size,
                           dtype=ms.int32).reshape(1, -1)
        input_ids = F.cat([ops.broadcast_to(prompts, (batch, self.prompt_length)), input_ids], 1)
        seq_length = input_ids.shape[1]
        segment = F.cat([ops.zeros((batch, self.prompt_length), ms.int32), segment], 1)
        context = F.full((batch, seq_length), 1, ms.int32)
        position = ops.broadcast_to(F.arange(seq_length, dtype=ms.int32).reshape(1, -1), (batch, seq_length))
        span = F.full((batch, seq_length), 0, ms.int32)

        if use_cache and past_key_values is None:
            past_key_values = DynamicCache(config=self.config)
        if not use_cache:
            past_key_values = None
        past_length = past_key_values.get_seq_length() if past_key_values is not None else 0
        hidden_states = self.input_embedding(input_ids.astype(ms.int64))
        segment_states = self.segment_embedding(segment.astype(ms.int64))
        if past_length != 0:
            segment_states = segment_states[:, -1:, :]
        hidden_states = hidden_states + segment_states

        attention_mask = self._prepare_attention_mask(input_ids, span, context, length)
        position_bias = self.position_bias(position, position, segment, segment)
        attention_mask = attention_mask[:, past_length:, :]
        position_bias = position_bias[:, :, past_length:, :]
        hidden_states = hidden_states[:, past_length:, :]

        hidden_states, all_hidden_states, all_attentions = self.encoder(
            hidden_states, attention_mask, position_bias, output_attentions, output_hidden_states, past_key_values)
        if past_length == 0:
            # drop the prompt positions
            hidden_states = hidden_states[:, self.prompt_length:, :]
            if all_attentions is not None:
                all_attentions = tuple(a[:, :, self.prompt_length:, self.prompt_length:] for a in all_attentions)
            if all_hidden_states is not None:
                all_hidden_states = tuple(h[:, self.prompt_length:, :] for h in all_hidden_states)
        return model_output(BaseModelOutputWithPast, {
            "last_hidden_state": hidden_states,
            "past_key_values": past_key_values,
            "hidden_states": all_hidden_states,
            "attentions": all_attentions,
        }, return_dict is None or return_dict)


class CpmAntForCausalLM(CpmAntPreTrainedModel, GenerationMixin):
    """CPM-Ant with its (untied) LM head; `generate()` feeds the whole sequence every step (see the module note)."""

    _tied_weights_keys = {}

    def __init__(self, config: CpmAntConfig):
        super().__init__(config)
        self.cpmant = CpmAntModel(config)
        self.lm_head = Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.cpmant.input_embedding

    def set_input_embeddings(self, embeddings):
        self.cpmant.input_embedding = embeddings

    def prepare_inputs_for_generation(self, input_ids, past_key_values=None, use_cache=True, **kwargs):
        # the forward slices the cached prefix off itself, so it takes the whole running sequence
        inputs = {"input_ids": input_ids, "past_key_values": past_key_values, "use_cache": use_cache}
        for key in ("output_attentions", "output_hidden_states", "logits_to_keep"):
            if key in kwargs:
                inputs[key] = kwargs[key]
        return inputs

    def construct(self, input_ids=None, past_key_values=None, use_cache=None, output_attentions=None,
                  output_hidden_states=None, labels=None, return_dict=None, attention_mask=None, logits_to_keep=0,
                  **kwargs):
        """`attention_mask` is accepted and ignored, as in HF (the padding mask comes from the ids)."""
        return_dict = return_dict if return_dict is not None else True
        if past_key_values is None:
            past_key_values = kwargs.get("cache")
        outputs = self.cpmant(input_ids, output_attentions, output_hidden_states, past_key_values, use_cache)
        hidden_states = outputs["last_hidden_state"]
        if isinstance(logits_to_keep, int) and logits_to_keep > 0:
            hidden_states = hidden_states[:, -logits_to_keep:, :]
        logits = self.lm_head(hidden_states)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
        return model_output(CausalLMOutputWithPast, {
            "loss": loss,
            "logits": logits,
            "past_key_values": outputs.get("past_key_values"),
            "hidden_states": outputs.get("hidden_states"),
            "attentions": outputs.get("attentions"),
        }, return_dict)


__all__ = ["CpmAntForCausalLM", "CpmAntModel", "CpmAntPreTrainedModel"]
