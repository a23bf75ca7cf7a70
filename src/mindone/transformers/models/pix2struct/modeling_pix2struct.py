"""Pix2Struct on MindSpore: HF's `modeling_pix2struct.py` names, checkpoint keys and outputs.

An image-encoder / text-decoder model for screenshots, documents and charts. The encoder is a ViT over "flattened
patches" made by `Pix2StructImageProcessor` at a variable resolution: every row of `flattened_patches` is
(row index, column index, patch pixels...), all-zero rows are padding. Row and column indices pick learned
embeddings, so the aspect ratio survives. Both halves are T5-style: scale-only RMS norms, unscaled attention, gated
feed-forward; the decoder has T5's causal relative position bias (first layer only) and cross-attention to the
encoder. VQA checkpoints (`is_vqa`) get the question rendered onto the image by the processor; the model is the same.

generate() encodes the patches once; the first decoder step (PyNative) projects the encoder output into an
`EncoderDecoderStaticCache`, then every one-token step runs compiled (`mindspore.jit`) with the patch mask as an
input.
"""

import mindspore as ms
from mindspore import nn, ops
from mindspore.common.initializer import Constant, Normal
from transformers import Pix2StructConfig, Pix2StructTextConfig, Pix2StructVisionConfig

from ...backend import functional as F
from ...backend import runtime
from ...backend.layers import Dropout, Embedding, Linear
from ...cache_utils import DynamicCache, EncoderDecoderCache
from ...generation import GenerationMixin
from ...masking_utils import create_bidirectional_mask, create_causal_mask
from ...modeling_layers import GradientCheckpointingLayer
from ...modeling_outputs import BaseModelOutput, CausalLMOutputWithCrossAttentions, Seq2SeqLMOutput, model_output
from ...modeling_utils import PreTrainedModel, init_parameter
from ..t5.modeling_t5 import T5LayerNorm, clamp_fp16, relative_position_bucket_table
from ..vision_encoder_decoder.modeling_vision_encoder_decoder import shift_tokens_right

# T5's scale-only RMS norm (statistics in float32) under Pix2Struct's name
Pix2StructLayerNorm = T5LayerNorm


class Pix2StructGatedMlp(nn.Cell):
    """act(wi_0 x) * wi_1 x -> wo (the vision MLP and the decoder's `DenseReluDense`)."""

    def __init__(self, hidden_size, d_ff, dense_act_fn, dropout_rate):
        super().__init__()
        self.wi_0 = Linear(hidden_size, d_ff, bias=False)
        self.wi_1 = Linear(hidden_size, d_ff, bias=False)
        self.wo = Linear(d_ff, hidden_size, bias=False)
        self.dropout = Dropout(dropout_rate)
        self.act = F.get_activation(dense_act_fn)

    def construct(self, hidden_states):
        hidden_states = self.act(self.wi_0(hidden_states)) * self.wi_1(hidden_states)
        return self.wo(self.dropout(hidden_states))


class Pix2StructVisionMlp(Pix2StructGatedMlp):
    """The encoder layers' MLP (HF initialises it differently from the decoder's)."""


class Pix2StructTextDenseGatedActDense(Pix2StructGatedMlp):
    """The decoder blocks' MLP."""


# ----------------------------------------------------------------------------------------------------------------
# vision encoder
# ----------------------------------------------------------------------------------------------------------------


class Pix2StructVisionEmbeddings(nn.Cell):
    """Patch projection + row embedding + column embedding; the indices are the first two entries of every row."""

    def __init__(self, config: Pix2StructVisionConfig):
        super().__init__()
        self.patch_projection = Linear(config.patch_embed_hidden_size, config.hidden_size)
        self.row_embedder = Embedding(config.seq_len, config.hidden_size)
        self.column_embedder = Embedding(config.seq_len, config.hidden_size)
        self.dropout = Dropout(config.dropout_rate)

    def construct(self, flattened_patches):
        # indices are stored as floats; torch's .long() truncates, as does the int cast
        row_indices = flattened_patches[:, :, 0].astype(ms.int32)
        col_indices = flattened_patches[:, :, 1].astype(ms.int32)
        embeddings = self.patch_projection(flattened_patches[:, :, 2:])
        embeddings = embeddings + self.row_embedder(row_indices) + self.column_embedder(col_indices)
        return self.dropout(embeddings)


class Pix2StructVisionAttention(nn.Cell):
    """Bidirectional attention without bias terms and without the 1/sqrt(d) scale (T5 folds it into `query`)."""

    def __init__(self, config: Pix2StructVisionConfig):
        super().__init__()
        self.key_value_proj_dim = config.d_kv
        self.n_heads = config.num_attention_heads
        self.dropout = config.attention_dropout
        inner_dim = self.n_heads * self.key_value_proj_dim
        self.query = Linear(config.hidden_size, inner_dim, bias=False)
        self.key = Linear(config.hidden_size, inner_dim, bias=False)
        self.value = Linear(config.hidden_size, inner_dim, bias=False)
        self.output = Linear(inner_dim, config.hidden_size, bias=False)

    def construct(self, hidden_states, attention_mask=None):
        batch, seq_len = hidden_states.shape[:2]

        def heads(x):
            return x.reshape(batch, seq_len, -1, self.key_value_proj_dim).swapaxes(1, 2)

        attn_output, attn_weights = F.attention(
            heads(self.query(hidden_states)), heads(self.key(hidden_states)), heads(self.value(hidden_states)),
            attn_mask=attention_mask, scale=1.0, dropout_p=self.dropout if self.training else 0.0,
            training=self.training)
        attn_output = attn_output.swapaxes(1, 2).reshape(batch, seq_len, -1)
        return self.output(attn_output), attn_weights


class Pix2StructVisionLayer(GradientCheckpointingLayer):
    def __init__(self, config: Pix2StructVisionConfig):
        super().__init__()
        self.attention = Pix2StructVisionAttention(config)
        self.mlp = Pix2StructVisionMlp(config.hidden_size, config.d_ff, config.dense_act_fn, config.dropout_rate)
        self.pre_mlp_layer_norm = Pix2StructLayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.pre_attention_layer_norm = Pix2StructLayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def construct(self, hidden_states, attention_mask=None):
        attention_output, attn_weights = self.attention(self.pre_attention_layer_norm(hidden_states), attention_mask)
        hidden_states = attention_output + hidden_states
        return self.mlp(self.pre_mlp_layer_norm(hidden_states)) + hidden_states, attn_weights


class Pix2StructVisionEncoder(nn.Cell):
    def __init__(self, config: Pix2StructVisionConfig):
        super().__init__()
        self.layer = nn.CellList([Pix2StructVisionLayer(config) for _ in range(config.num_hidden_layers)])

    def construct(self, hidden_states, attention_mask=None, output_attentions=False, output_hidden_states=False):
        all_hidden_states = () if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer_module in self.layer:
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            hidden_states, attn_weights = layer_module(hidden_states, attention_mask)
            if output_attentions:
                all_attentions += (attn_weights,)
        if output_hidden_states:
            all_hidden_states += (hidden_states,)
        return hidden_states, all_hidden_states, all_attentions


# ----------------------------------------------------------------------------------------------------------------
# text decoder
# ----------------------------------------------------------------------------------------------------------------


class Pix2StructTextAttention(nn.Cell):
    """T5 attention under Pix2Struct's names: self-attention with the causal relative position bias (first layer
    owns the table) or cross-attention to the encoder; keys/values go through the cache when one is given."""

    def __init__(self, config: Pix2StructTextConfig, has_relative_attention_bias=False, layer_idx=None):
        super().__init__()
        self.has_relative_attention_bias = has_relative_attention_bias
        self.relative_attention_num_buckets = config.relative_attention_num_buckets
        self.relative_attention_max_distance = config.relative_attention_max_distance
        self.key_value_proj_dim = config.d_kv
        self.n_heads = config.num_heads
        self.dropout = config.dropout_rate
        self.layer_idx = layer_idx
        # HF sizes these hidden -> hidden (num_heads * d_kv must equal hidden_size)
        self.query = Linear(config.hidden_size, config.hidden_size, bias=False)
        self.key = Linear(config.hidden_size, config.hidden_size, bias=False)
        self.value = Linear(config.hidden_size, config.hidden_size, bias=False)
        self.output = Linear(config.hidden_size, config.hidden_size, bias=False)
        if has_relative_attention_bias:
            self.relative_attention_bias = Embedding(self.relative_attention_num_buckets, self.n_heads)
            # decoder buckets: only keys at or before the query (bidirectional=False)
            self.bucket_table = ms.Tensor(relative_position_bucket_table(
                False, self.relative_attention_num_buckets, self.relative_attention_max_distance))

    def compute_bias(self, key_length, cache_position):
        """(1, H, Sq, Sk) bias for queries at absolute `cache_position` and keys 0..key_length-1."""
        context_position = cache_position.astype(ms.int64)[:, None]
        memory_position = F.arange(key_length, dtype=ms.int64)[None, :]
        distance = ops.minimum(ops.relu(context_position - memory_position), self.relative_attention_max_distance)
        values = self.relative_attention_bias(ops.gather(self.bucket_table, distance, 0))  # (Sq, Sk, H)
        return values.permute(2, 0, 1)[None]

    def _project_kv(self, states):
        batch, kv_len = states.shape[:2]
        key_states = self.key(states).reshape(batch, kv_len, -1, self.key_value_proj_dim).swapaxes(1, 2)
        value_states = self.value(states).reshape(batch, kv_len, -1, self.key_value_proj_dim).swapaxes(1, 2)
        return key_states, value_states

    def construct(self, hidden_states, mask=None, key_value_states=None, position_bias=None, past_key_values=None,
                  cache_position=None):
        batch, seq_len = hidden_states.shape[:2]
        is_cross_attention = key_value_states is not None
        query_states = self.query(hidden_states).reshape(batch, seq_len, -1, self.key_value_proj_dim).swapaxes(1, 2)
        if past_key_values is None:
            key_states, value_states = self._project_kv(key_value_states if is_cross_attention else hidden_states)
        elif is_cross_attention:
            cache = past_key_values.cross_attention_cache
            if past_key_values.is_updated.get(self.layer_idx):
                # the encoder's keys/values were projected at the first decoding step (a host-side flag, so a
                # compiled decode step reads them from the cache without projecting again)
                key_states, value_states = cache.key_cache[self.layer_idx], cache.value_cache[self.layer_idx]
            else:
                slots = F.arange(0, key_value_states.shape[1], dtype=ms.int64)
                key_states, value_states = cache.update(*self._project_kv(key_value_states), self.layer_idx,
                                                        {"cache_position": slots})
                past_key_values.is_updated[self.layer_idx] = True
        else:
            key_states, value_states = past_key_values.self_attention_cache.update(
                *self._project_kv(hidden_states), self.layer_idx, {"cache_position": cache_position})

        key_length = key_states.shape[-2]
        if position_bias is None:
            if self.has_relative_attention_bias:
                position_bias = self.compute_bias(key_length, cache_position)
            else:
                position_bias = ops.zeros((1, self.n_heads, seq_len, key_length), query_states.dtype)
        scores_bias = position_bias.astype(query_states.dtype)
        if mask is not None:
            scores_bias = scores_bias + mask[:, :, :, :key_length]
        attn_output, attn_weights = F.attention(query_states, key_states, value_states, attn_mask=scores_bias,
                                                scale=1.0, dropout_p=self.dropout if self.training else 0.0,
                                                training=self.training)
        attn_output = attn_output.swapaxes(1, 2).reshape(batch, seq_len, -1)
        return self.output(attn_output), position_bias, attn_weights


class Pix2StructTextLayerSelfAttention(nn.Cell):
    def __init__(self, config, has_relative_attention_bias=False, layer_idx=None):
        super().__init__()
        self.attention = Pix2StructTextAttention(config, has_relative_attention_bias, layer_idx)
        self.layer_norm = Pix2StructLayerNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.dropout = Dropout(config.dropout_rate)

    def construct(self, hidden_states, attention_mask=None, position_bias=None, past_key_values=None,
                  cache_position=None):
        attention_output, position_bias, attn_weights = self.attention(
            self.layer_norm(hidden_states), mask=attention_mask, position_bias=position_bias,
            past_key_values=past_key_values, cache_position=cache_position)
        return hidden_states + self.dropout(attention_output), position_bias, attn_weights


class Pix2StructTextLayerCrossAttention(nn.Cell):
    def __init__(self, config, layer_idx=None):
        super().__init__()
        self.attention = Pix2StructTextAttention(config, False, layer_idx)
        self.layer_norm = Pix2StructLayerNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.dropout = Dropout(config.dropout_rate)

    def construct(self, hidden_states, key_value_states, attention_mask=None, position_bias=None,
                  past_key_values=None):
        attention_output, position_bias, attn_weights = self.attention(
            self.layer_norm(hidden_states), mask=attention_mask, key_value_states=key_value_states,
            position_bias=position_bias, past_key_values=past_key_values)
        return hidden_states + self.dropout(attention_output), position_bias, attn_weights


class Pix2StructTextLayerFF(nn.Cell):
    def __init__(self, config: Pix2StructTextConfig):
        super().__init__()
        self.DenseReluDense = Pix2StructTextDenseGatedActDense(config.hidden_size, config.d_ff,
                                                               config.dense_act_fn, config.dropout_rate)
        self.layer_norm = Pix2StructLayerNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.dropout = Dropout(config.dropout_rate)

    def construct(self, hidden_states):
        return hidden_states + self.dropout(self.DenseReluDense(self.layer_norm(hidden_states)))


class Pix2StructTextBlock(GradientCheckpointingLayer):
    def __init__(self, config, has_relative_attention_bias=False, layer_idx=None):
        super().__init__()
        self.self_attention = Pix2StructTextLayerSelfAttention(config, has_relative_attention_bias, layer_idx)
        self.encoder_decoder_attention = Pix2StructTextLayerCrossAttention(config, layer_idx)
        self.mlp = Pix2StructTextLayerFF(config)

    def construct(self, hidden_states, attention_mask=None, position_bias=None, encoder_hidden_states=None,
                  encoder_attention_mask=None, encoder_decoder_position_bias=None, past_key_values=None,
                  cache_position=None):
        """Returns (hidden_states, self-attention bias, cross-attention bias, self weights, cross weights)."""
        hidden_states, position_bias, self_weights = self.self_attention(
            hidden_states, attention_mask, position_bias, past_key_values, cache_position)
        hidden_states = clamp_fp16(hidden_states)
        cross_bias, cross_weights = None, None
        if encoder_hidden_states is not None:
            hidden_states, cross_bias, cross_weights = self.encoder_decoder_attention(
                hidden_states, encoder_hidden_states, encoder_attention_mask, encoder_decoder_position_bias,
                past_key_values)
            hidden_states = clamp_fp16(hidden_states)
        hidden_states = clamp_fp16(self.mlp(hidden_states))
        return hidden_states, position_bias, cross_bias, self_weights, cross_weights


# ----------------------------------------------------------------------------------------------------------------
# models
# ----------------------------------------------------------------------------------------------------------------


class Pix2StructPreTrainedModel(PreTrainedModel):
    config_class = Pix2StructConfig
    base_model_prefix = ""
    supports_gradient_checkpointing = True
    _no_split_modules = ["Pix2StructVisionLayer", "Pix2StructTextBlock"]

    def _output_flags(self, output_attentions, output_hidden_states):
        config = self.config
        return (output_attentions if output_attentions is not None else config.output_attentions,
                output_hidden_states if output_hidden_states is not None else config.output_hidden_states)

    def _init_weights(self, cell):
        """HF's scheme: T5's factors for the decoder's attention / MLP, normal(factor * hidden**-0.5) for every
        embedding, normal(initializer_range) for the vision linear layers."""
        config = self.config
        text = config.text_config if isinstance(config, Pix2StructConfig) else config
        vision = config.vision_config if isinstance(config, Pix2StructConfig) else config
        factor = config.initializer_factor
        hidden = text.hidden_size
        if isinstance(cell, T5LayerNorm):
            init_parameter(cell.weight, Constant(factor * 1.0))
        elif isinstance(cell, Pix2StructTextDenseGatedActDense):
            init_parameter(cell.wi_0.weight, Normal(factor * hidden ** -0.5))
            init_parameter(cell.wi_1.weight, Normal(factor * hidden ** -0.5))
            init_parameter(cell.wo.weight, Normal(factor * text.d_ff ** -0.5))
        elif isinstance(cell, Pix2StructTextAttention):
            init_parameter(cell.query.weight, Normal(factor * (hidden * text.d_kv) ** -0.5))
            init_parameter(cell.key.weight, Normal(factor * hidden ** -0.5))
            init_parameter(cell.value.weight, Normal(factor * hidden ** -0.5))
            init_parameter(cell.output.weight, Normal(factor * (text.num_heads * text.d_kv) ** -0.5))
            if cell.has_relative_attention_bias:
                init_parameter(cell.relative_attention_bias.weight, Normal(factor * hidden ** -0.5))
        elif isinstance(cell, Embedding):
            init_parameter(cell.weight, Normal(factor * hidden ** -0.5))
        elif isinstance(cell, Pix2StructTextModel):
            init_parameter(cell.lm_head.weight, Normal(factor * hidden ** -0.5))
        elif isinstance(cell, (Pix2StructVisionEmbeddings, Pix2StructVisionAttention, Pix2StructVisionMlp)):
            for sub in cell.cells():
                if isinstance(sub, Linear):
                    init_parameter(sub.weight, Normal(vision.initializer_range))
                    if sub.bias is not None:
                        init_parameter(sub.bias, "zeros")

    def _shift_right(self, input_ids):
        """decoder_input_ids from labels: decoder_start_token_id first, the last label dropped, -100 -> pad."""
        config = self.config.text_config if isinstance(self.config, Pix2StructConfig) else self.config
        start_id = getattr(self.config, "decoder_start_token_id", None)
        start_id = start_id if start_id is not None else config.decoder_start_token_id
        pad_id = getattr(self.config, "pad_token_id", None)
        pad_id = pad_id if pad_id is not None else config.pad_token_id
        if start_id is None:
            raise ValueError("self.model.config.decoder_start_token_id has to be defined. In Pix2Struct it is usually "
                             "set to the pad_token_id. See Pix2Struct docs for more information.")
        if pad_id is None:
            raise ValueError("self.model.config.pad_token_id has to be defined.")
        return shift_tokens_right(input_ids, pad_id, start_id)


def _patch_mask(flattened_patches, attention_mask):
    """The given (B, N) patch mask, else 1 where a patch row is not all zeros (as HF infers it)."""
    if attention_mask is not None:
        return attention_mask
    return (flattened_patches.sum(-1) != 0).astype(ms.float32)


class Pix2StructVisionModel(Pix2StructPreTrainedModel):
    config_class = Pix2StructVisionConfig
    main_input_name = "flattened_patches"
    _no_split_modules = ["Pix2StructVisionLayer"]

    def __init__(self, config: Pix2StructVisionConfig):
        super().__init__(config)
        self.embeddings = Pix2StructVisionEmbeddings(config)
        self.encoder = Pix2StructVisionEncoder(config)
        self.layernorm = Pix2StructLayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.patch_projection

    def construct(self, flattened_patches=None, attention_mask=None, output_attentions=None,
                  output_hidden_states=None, return_dict=None, **kwargs):
        r"""
        flattened_patches: (B, N, 2 + C * ph * pw) from `Pix2StructImageProcessor` (row, column, pixels).
        attention_mask: (B, N) 1 for real patches; inferred from all-zero rows when omitted.
        """
        if flattened_patches is None:
            raise ValueError("You have to specify flattened_patches")
        output_attentions, output_hidden_states = self._output_flags(output_attentions, output_hidden_states)
        embedding_output = self.embeddings(flattened_patches.astype(self.embeddings.patch_projection.weight.dtype))
        mask = create_bidirectional_mask(_patch_mask(flattened_patches, attention_mask), embedding_output.shape[1],
                                         embedding_output.dtype)
        hidden_states, all_hidden_states, all_attentions = self.encoder(
            embedding_output, mask, output_attentions, output_hidden_states)
        fields = {"last_hidden_state": self.layernorm(hidden_states), "hidden_states": all_hidden_states,
                  "attentions": all_attentions}
        return model_output(BaseModelOutput, fields, return_dict is not False)


class Pix2StructTextModel(Pix2StructPreTrainedModel):
    """The decoder with its LM head (HF's standalone text model)."""

    config_class = Pix2StructTextConfig
    _no_split_modules = ["Pix2StructTextBlock"]
    _tied_weights_keys = {"lm_head.weight": "embed_tokens.weight"}

    def __init__(self, config: Pix2StructTextConfig):
        super().__init__(config)
        self.embed_tokens = Embedding(config.vocab_size, config.hidden_size)
        self.layer = nn.CellList([Pix2StructTextBlock(config, has_relative_attention_bias=(i == 0), layer_idx=i)
                                  for i in range(config.num_layers)])
        self.final_layer_norm = Pix2StructLayerNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.dropout = Dropout(config.dropout_rate)
        self.lm_head = Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.embed_tokens

    def set_input_embeddings(self, new_embeddings):
        self.embed_tokens = new_embeddings

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    def construct(self, input_ids=None, attention_mask=None, encoder_hidden_states=None, encoder_attention_mask=None,
                  inputs_embeds=None, past_key_values=None, use_cache=None, output_attentions=None,
                  output_hidden_states=None, labels=None, return_dict=None, cache_position=None, cache=None,
                  **kwargs):
        r"""
        input_ids: (B, T) decoder tokens (relative positions: padding may be on either side).
        encoder_hidden_states / encoder_attention_mask: the encoder's output and its (B, N) patch mask.
        past_key_values (or HF 5's name `cache`): an `EncoderDecoderCache`; one is made when `use_cache`.
        labels: (B, T) targets at the same positions as the logits (-100 ignored), plain mean cross-entropy.
        """
        past_key_values = past_key_values if past_key_values is not None else cache
        output_attentions, output_hidden_states = self._output_flags(output_attentions, output_hidden_states)
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("You have to specify either decoder_input_ids or decoder_inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        batch_size, seq_len = inputs_embeds.shape[:2]
        dtype = inputs_embeds.dtype

        use_cache = use_cache if use_cache is not None else self.config.use_cache
        if use_cache and past_key_values is None and not runtime.in_graph():
            past_key_values = EncoderDecoderCache(DynamicCache(), DynamicCache())
        self_cache = past_key_values.self_attention_cache if past_key_values is not None else None
        past_seen = self_cache.get_seq_length() if self_cache is not None else 0
        if cache_position is None:
            cache_position = F.arange(past_seen, past_seen + seq_len, dtype=ms.int64)
        if self_cache is not None and self_cache.get_max_cache_shape() is not None:
            kv_length = self_cache.get_max_cache_shape()  # a static cache: every slot is a key (future ones masked)
        else:
            kv_length = past_seen + seq_len
        causal_mask = create_causal_mask(attention_mask, batch_size, cache_position, kv_length, dtype)
        cross_mask = None
        if encoder_hidden_states is not None:
            cross_mask = create_bidirectional_mask(encoder_attention_mask, seq_len, dtype)

        all_hidden_states = () if output_hidden_states else None
        all_attentions = () if output_attentions else None
        all_cross_attentions = () if output_attentions else None
        position_bias = None
        cross_bias = None
        hidden_states = self.dropout(inputs_embeds)
        for layer_module in self.layer:
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            hidden_states, position_bias, layer_cross_bias, self_weights, cross_weights = layer_module(
                hidden_states, causal_mask, position_bias, encoder_hidden_states, cross_mask, cross_bias,
                past_key_values, cache_position)
            if encoder_hidden_states is not None:
                cross_bias = layer_cross_bias
            if output_attentions:
                all_attentions += (self_weights,)
                if encoder_hidden_states is not None:
                    all_cross_attentions += (cross_weights,)
        hidden_states = self.dropout(self.final_layer_norm(hidden_states))
        logits = self.lm_head(hidden_states)
        if output_hidden_states:
            all_hidden_states += (hidden_states,)

        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.astype(ms.float32).reshape(-1, logits.shape[-1]), labels.reshape(-1))
        fields = {"loss": loss, "logits": logits, "past_key_values": past_key_values if use_cache else None,
                  "hidden_states": all_hidden_states, "attentions": all_attentions,
                  "cross_attentions": all_cross_attentions}
        return model_output(CausalLMOutputWithCrossAttentions, fields, return_dict is not False)


class Pix2StructForConditionalGeneration(Pix2StructPreTrainedModel, GenerationMixin):
    """Image (flattened patches) -> text: the vision encoder's output feeds the decoder's cross-attention."""

    main_input_name = "flattened_patches"
    # compiled decoding: the decoder reads an EncoderDecoderStaticCache, and the step takes the patch mask
    _supports_static_cache = True
    _decode_step_encoder_mask = True

    def __init__(self, config: Pix2StructConfig):
        super().__init__(config)
        self.encoder = Pix2StructVisionModel(config.vision_config)
        self.decoder = Pix2StructTextModel(config.text_config)
        self.is_vqa = config.is_vqa
        self.post_init()

    def get_encoder(self):
        return self.encoder

    def get_decoder(self):
        return self.decoder

    def get_input_embeddings(self):
        return self.decoder.get_input_embeddings()

    def set_input_embeddings(self, new_embeddings):
        self.decoder.set_input_embeddings(new_embeddings)

    def get_output_embeddings(self):
        return self.decoder.get_output_embeddings()

    def set_output_embeddings(self, new_embeddings):
        self.decoder.set_output_embeddings(new_embeddings)

    def _tied_pairs(self):
        return {f"decoder.{target}": f"decoder.{source}" for target, source in self.decoder._tied_pairs().items()}

    def construct(self, flattened_patches=None, attention_mask=None, decoder_input_ids=None,
                  decoder_attention_mask=None, encoder_outputs=None, past_key_values=None, labels=None,
                  decoder_inputs_embeds=None, use_cache=None, output_attentions=None, output_hidden_states=None,
                  return_dict=None, cache_position=None, cache=None, **kwargs):
        r"""
        flattened_patches: (B, N, 2 + C * ph * pw) from `Pix2StructProcessor` (or `encoder_outputs`).
        attention_mask: (B, N) patch mask; the encoder infers one when omitted, but (as in HF) only a given mask
            reaches the decoder's cross-attention.
        decoder_input_ids: (B, T), starting with decoder_start_token_id; from `labels` when only those are given
            (shifted right, with a decoder mask of non-pad positions).
        labels: (B, T) target ids (-100 ignored).
        """
        past_key_values = past_key_values if past_key_values is not None else cache
        use_cache = use_cache if use_cache is not None else self.config.text_config.use_cache
        if encoder_outputs is None:
            encoder_outputs = self.encoder(flattened_patches=flattened_patches, attention_mask=attention_mask,
                                           output_attentions=output_attentions,
                                           output_hidden_states=output_hidden_states, return_dict=True)
        elif isinstance(encoder_outputs, (tuple, list)):
            n = len(encoder_outputs)
            encoder_outputs = {"last_hidden_state": encoder_outputs[0],
                               "hidden_states": encoder_outputs[1] if n > 1 else None,
                               "attentions": encoder_outputs[2] if n > 2 else None}
        if labels is not None and decoder_input_ids is None and decoder_inputs_embeds is None:
            decoder_input_ids = self._shift_right(labels)
            if decoder_attention_mask is None:
                decoder_attention_mask = (decoder_input_ids != self.config.pad_token_id).astype(ms.float32)
            # the start token is attended even when it is the pad id
            decoder_attention_mask = F.cat([ops.ones_like(decoder_attention_mask[:, :1]),
                                            decoder_attention_mask[:, 1:]], 1)
        decoder_outputs = self.decoder(
            input_ids=decoder_input_ids, attention_mask=decoder_attention_mask, inputs_embeds=decoder_inputs_embeds,
            past_key_values=past_key_values, encoder_hidden_states=encoder_outputs["last_hidden_state"],
            encoder_attention_mask=attention_mask, use_cache=use_cache, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states, labels=labels, return_dict=True,
            cache_position=cache_position)
        fields = {
            "loss": decoder_outputs.get("loss"),
            "logits": decoder_outputs["logits"],
            "past_key_values": decoder_outputs.get("past_key_values"),
            "decoder_hidden_states": decoder_outputs.get("hidden_states"),
            "decoder_attentions": decoder_outputs.get("attentions"),
            "cross_attentions": decoder_outputs.get("cross_attentions"),
            "encoder_last_hidden_state": encoder_outputs["last_hidden_state"],
            "encoder_hidden_states": encoder_outputs.get("hidden_states"),
            "encoder_attentions": encoder_outputs.get("attentions"),
        }
        return model_output(Seq2SeqLMOutput, fields, return_dict is not False)

    def prepare_decoder_input_ids_from_labels(self, labels):
        return self._shift_right(labels)


__all__ = [
    "Pix2StructForConditionalGeneration",
    "Pix2StructPreTrainedModel",
    "Pix2StructTextModel",
    "Pix2StructVisionModel",
]
