"""BART on MindSpore: HF's `modeling_bart.py` structure, names and outputs; device concerns live in `backend`.

A post-norm Transformer encoder-decoder: learned positions (with fairseq's offset of 2), a LayerNorm over the
embeddings, optional sqrt(d_model) embedding scale, and an LM head tied to the shared embeddings plus a
`final_logits_bias` buffer.
"""

import math

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import Normal
from transformers import BartConfig

from ...backend import functional as F
from ...backend import runtime
from ...backend.layers import Dropout, Embedding, LayerNorm, Linear, new_parameter
from ...cache_utils import DynamicCache, EncoderDecoderCache
from ...generation import GenerationMixin
from ...loss_utils import question_answering_loss, sequence_classification_loss
from ...masking_utils import create_bidirectional_mask, create_causal_mask
from ...modeling_layers import GradientCheckpointingLayer
from ...modeling_outputs import (
    model_output,
    BaseModelOutput,
    Seq2SeqLMOutput,
    Seq2SeqModelOutput,
    Seq2SeqQuestionAnsweringModelOutput,
    Seq2SeqSequenceClassifierOutput,
)
from ...modeling_utils import PreTrainedModel, init_parameter

_FP16_MAX = 65504.0


def shift_tokens_right(input_ids, pad_token_id, decoder_start_token_id):
    """decoder inputs from labels: prepend decoder_start_token_id, drop the last token, -100 -> pad_token_id."""
    if pad_token_id is None:
        raise ValueError("self.model.config.pad_token_id has to be defined.")
    start = F.full((input_ids.shape[0], 1), decoder_start_token_id, input_ids.dtype)
    shifted = F.cat([start, input_ids[:, :-1]], -1)
    return shifted.masked_fill(shifted == -100, pad_token_id)


def _clamp_fp16_if_overflowed(hidden_states):
    """HF's encoder-layer guard: once an fp16 activation is not finite, clamp everything to 1000 below the fp16 max
    (clamping to the max itself otherwise changes no finite value)."""
    if hidden_states.dtype != ms.float16:
        return hidden_states
    overflowed = ops.logical_not(ops.isfinite(hidden_states).all())
    clamp_value = ops.where(overflowed, Tensor(_FP16_MAX - 1000, ms.float16), Tensor(_FP16_MAX, ms.float16))
    return ops.clamp(hidden_states, -clamp_value, clamp_value)


class BartLearnedPositionalEmbedding(Embedding):
    """Learned positions; fairseq reserved the first two rows, so position p reads row p + 2."""

    def __init__(self, num_embeddings, embedding_dim):
        self.offset = 2
        super().__init__(num_embeddings + self.offset, embedding_dim)

    def construct(self, position_ids):
        """position_ids: (S,) or (B, S) absolute positions."""
        return F.embedding(position_ids.astype(ms.int64) + self.offset, self.weight)


class BartScaledWordEmbedding(Embedding):
    """Token embeddings multiplied by `embed_scale` (sqrt(d_model) when `config.scale_embedding`, else 1)."""

    def __init__(self, num_embeddings, embedding_dim, padding_idx, embed_scale=1.0):
        super().__init__(num_embeddings, embedding_dim, padding_idx)
        self.embed_scale = embed_scale

    def construct(self, input_ids):
        embeds = F.embedding(input_ids, self.weight, self.padding_idx)
        if self.embed_scale != 1.0:
            embeds = embeds * self.embed_scale
        return embeds


class BartAttention(nn.Cell):
    """Multi-head attention (self or cross), 1/sqrt(head_dim) scaled, with biases on every projection."""

    def __init__(self, embed_dim, num_heads, dropout=0.0, is_decoder=False, bias=True, is_causal=False,
                 config=None, layer_idx=None):
        super().__init__()
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.dropout = dropout
        self.head_dim = embed_dim // num_heads
        if self.head_dim * num_heads != embed_dim:
            raise ValueError(f"embed_dim must be divisible by num_heads (got `embed_dim`: {embed_dim} and "
                             f"`num_heads`: {num_heads}).")
        self.scaling = self.head_dim ** -0.5
        self.is_decoder = is_decoder
        self.is_causal = is_causal
        self.layer_idx = layer_idx
        self.k_proj = Linear(embed_dim, embed_dim, bias=bias)
        self.v_proj = Linear(embed_dim, embed_dim, bias=bias)
        self.q_proj = Linear(embed_dim, embed_dim, bias=bias)
        self.out_proj = Linear(embed_dim, embed_dim, bias=bias)

    def _project_kv(self, states):
        batch, kv_len = states.shape[:2]
        key_states = self.k_proj(states).reshape(batch, kv_len, -1, self.head_dim).swapaxes(1, 2)
        value_states = self.v_proj(states).reshape(batch, kv_len, -1, self.head_dim).swapaxes(1, 2)
        return key_states, value_states

    def construct(self, hidden_states, key_value_states=None, past_key_values=None, attention_mask=None,
                  cache_position=None):
        """Returns (output (B, S, D), attention weights (B, H, S, S_kv))."""
        batch, seq_len = hidden_states.shape[:2]
        is_cross_attention = key_value_states is not None
        query_states = self.q_proj(hidden_states).reshape(batch, seq_len, -1, self.head_dim).swapaxes(1, 2)

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

        attn_output, attn_weights = F.attention(query_states, key_states, value_states, attn_mask=attention_mask,
                                                scale=self.scaling, dropout_p=self.dropout if self.training else 0.0,
                                                training=self.training)
        attn_output = attn_output.swapaxes(1, 2).reshape(batch, seq_len, -1)
        return self.out_proj(attn_output), attn_weights


class BartEncoderLayer(GradientCheckpointingLayer):
    def __init__(self, config: BartConfig, layer_idx=None):
        super().__init__()
        self.embed_dim = config.d_model
        self.self_attn = BartAttention(self.embed_dim, config.encoder_attention_heads,
                                       dropout=config.attention_dropout, config=config, layer_idx=layer_idx)
        self.self_attn_layer_norm = LayerNorm(self.embed_dim)
        self.dropout = Dropout(config.dropout)
        self.activation_fn = F.get_activation(config.activation_function)
        self.activation_dropout = Dropout(config.activation_dropout)
        self.fc1 = Linear(self.embed_dim, config.encoder_ffn_dim)
        self.fc2 = Linear(config.encoder_ffn_dim, self.embed_dim)
        self.final_layer_norm = LayerNorm(self.embed_dim)

    def construct(self, hidden_states, attention_mask=None):
        """Returns (hidden_states, self-attention weights); post-norm: residual add, then LayerNorm."""
        attn_output, attn_weights = self.self_attn(hidden_states, attention_mask=attention_mask)
        hidden_states = self.self_attn_layer_norm(hidden_states + self.dropout(attn_output))
        ffn = self.fc2(self.activation_dropout(self.activation_fn(self.fc1(hidden_states))))
        hidden_states = self.final_layer_norm(hidden_states + self.dropout(ffn))
        return _clamp_fp16_if_overflowed(hidden_states), attn_weights


class BartDecoderLayer(GradientCheckpointingLayer):
    def __init__(self, config: BartConfig, layer_idx=None):
        super().__init__()
        self.embed_dim = config.d_model
        self.self_attn = BartAttention(self.embed_dim, config.decoder_attention_heads,
                                       dropout=config.attention_dropout, is_decoder=True, is_causal=True,
                                       config=config, layer_idx=layer_idx)
        self.dropout = Dropout(config.dropout)
        self.activation_fn = F.get_activation(config.activation_function)
        self.activation_dropout = Dropout(config.activation_dropout)
        self.self_attn_layer_norm = LayerNorm(self.embed_dim)
        self.encoder_attn = BartAttention(self.embed_dim, config.decoder_attention_heads,
                                          dropout=config.attention_dropout, is_decoder=True, config=config,
                                          layer_idx=layer_idx)
        self.encoder_attn_layer_norm = LayerNorm(self.embed_dim)
        self.fc1 = Linear(self.embed_dim, config.decoder_ffn_dim)
        self.fc2 = Linear(config.decoder_ffn_dim, self.embed_dim)
        self.final_layer_norm = LayerNorm(self.embed_dim)

    def construct(self, hidden_states, attention_mask=None, encoder_hidden_states=None, encoder_attention_mask=None,
                  past_key_values=None, cache_position=None):
        """Returns (hidden_states, self-attention weights, cross-attention weights or None)."""
        attn_output, self_weights = self.self_attn(hidden_states, past_key_values=past_key_values,
                                                   attention_mask=attention_mask, cache_position=cache_position)
        hidden_states = self.self_attn_layer_norm(hidden_states + self.dropout(attn_output))

        cross_weights = None
        if encoder_hidden_states is not None:
            attn_output, cross_weights = self.encoder_attn(hidden_states, key_value_states=encoder_hidden_states,
                                                           past_key_values=past_key_values,
                                                           attention_mask=encoder_attention_mask)
            hidden_states = self.encoder_attn_layer_norm(hidden_states + self.dropout(attn_output))

        ffn = self.fc2(self.activation_dropout(self.activation_fn(self.fc1(hidden_states))))
        hidden_states = self.final_layer_norm(hidden_states + self.dropout(ffn))
        return hidden_states, self_weights, cross_weights


class BartClassificationHead(nn.Cell):
    """Head for sentence-level classification tasks."""

    def __init__(self, input_dim, inner_dim, num_classes, pooler_dropout):
        super().__init__()
        self.dense = Linear(input_dim, inner_dim)
        self.dropout = Dropout(pooler_dropout)
        self.out_proj = Linear(inner_dim, num_classes)

    def construct(self, hidden_states):
        hidden_states = F.tanh(self.dense(self.dropout(hidden_states)))
        return self.out_proj(self.dropout(hidden_states))


class BartPreTrainedModel(PreTrainedModel):
    config_class = BartConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _keys_to_ignore_on_load_unexpected = [r"encoder\.version", r"decoder\.version"]
    _no_split_modules = [r"BartEncoderLayer", r"BartDecoderLayer"]

    def _init_weights(self, cell):
        """HF's scheme with BART's `init_std`; `final_logits_bias` starts at zero."""
        std = self.config.init_std
        if isinstance(cell, Linear):
            init_parameter(cell.weight, Normal(std))
            if cell.bias is not None:
                init_parameter(cell.bias, "zeros")
        elif isinstance(cell, Embedding):
            init_parameter(cell.weight, Normal(std))
            if cell.padding_idx is not None:
                data = cell.weight.asnumpy().copy()
                data[cell.padding_idx] = 0
                cell.weight.set_data(Tensor(data))
        else:
            super()._init_weights(cell)
        if isinstance(cell, BartForConditionalGeneration):
            init_parameter(cell.final_logits_bias, "zeros")


def _encoder_fields(encoder_outputs):
    """(last_hidden_state, hidden_states, attentions) of a given encoder output object or HF-style tuple."""
    if isinstance(encoder_outputs, dict):
        return (encoder_outputs.get("last_hidden_state"), encoder_outputs.get("hidden_states"),
                encoder_outputs.get("attentions"))
    return (encoder_outputs[0], encoder_outputs[1] if len(encoder_outputs) > 1 else None,
            encoder_outputs[2] if len(encoder_outputs) > 2 else None)


class BartEncoder(nn.Cell):
    """`config.encoder_layers` post-norm self-attention layers over token + position embeddings."""

    def __init__(self, config: BartConfig):
        super().__init__()
        self.config = config
        self.padding_idx = config.pad_token_id
        self.max_source_positions = config.max_position_embeddings
        self.layerdrop = config.encoder_layerdrop
        embed_scale = math.sqrt(config.d_model) if config.scale_embedding else 1.0
        self.embed_tokens = BartScaledWordEmbedding(config.vocab_size, config.d_model, self.padding_idx,
                                                    embed_scale=embed_scale)
        self.embed_positions = BartLearnedPositionalEmbedding(config.max_position_embeddings, config.d_model)
        self.layers = nn.CellList([BartEncoderLayer(config, layer_idx=i) for i in range(config.encoder_layers)])
        self.layernorm_embedding = LayerNorm(config.d_model)
        self.dropout = Dropout(config.dropout)

    def get_input_embeddings(self):
        return self.embed_tokens

    def set_input_embeddings(self, value):
        self.embed_tokens = value

    def construct(self, input_ids=None, attention_mask=None, inputs_embeds=None, output_attentions=None,
                  output_hidden_states=None, return_dict=True, **kwargs):
        """With `return_dict=False`: the fixed 3-tuple (last_hidden_state, hidden_states, attentions)."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        seq_len = inputs_embeds.shape[1]
        # encoder positions are 0..S-1 whatever the padding (as in HF)
        positions = self.embed_positions(F.arange(seq_len, dtype=ms.int64))
        hidden_states = self.dropout(self.layernorm_embedding(inputs_embeds + positions.astype(inputs_embeds.dtype)))
        attention_mask = create_bidirectional_mask(attention_mask, seq_len, inputs_embeds.dtype)

        all_hidden_states = () if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layers:
            # LayerDrop (training only) is not implemented: every layer always runs
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            hidden_states, attn_weights = layer(hidden_states, attention_mask)
            if output_attentions:
                all_attentions += (attn_weights,)
        if output_hidden_states:
            all_hidden_states += (hidden_states,)
        if not return_dict:
            return hidden_states, all_hidden_states, all_attentions
        fields = {"last_hidden_state": hidden_states, "hidden_states": all_hidden_states,
                  "attentions": all_attentions}
        return model_output(BaseModelOutput, fields, True)


class BartDecoder(nn.Cell):
    """`config.decoder_layers` post-norm layers with causal self-attention and cross-attention to the encoder."""

    def __init__(self, config: BartConfig):
        super().__init__()
        self.config = config
        self.padding_idx = config.pad_token_id
        self.max_target_positions = config.max_position_embeddings
        self.layerdrop = config.decoder_layerdrop
        embed_scale = math.sqrt(config.d_model) if config.scale_embedding else 1.0
        self.embed_tokens = BartScaledWordEmbedding(config.vocab_size, config.d_model, self.padding_idx,
                                                    embed_scale=embed_scale)
        self.embed_positions = BartLearnedPositionalEmbedding(config.max_position_embeddings, config.d_model)
        self.layers = nn.CellList([BartDecoderLayer(config, layer_idx=i) for i in range(config.decoder_layers)])
        self.layernorm_embedding = LayerNorm(config.d_model)
        self.dropout = Dropout(config.dropout)

    def get_input_embeddings(self):
        return self.embed_tokens

    def set_input_embeddings(self, value):
        self.embed_tokens = value

    def construct(self, input_ids=None, attention_mask=None, encoder_hidden_states=None, encoder_attention_mask=None,
                  past_key_values=None, inputs_embeds=None, use_cache=None, output_attentions=False,
                  output_hidden_states=False, cache_position=None, return_dict=False, **kwargs):
        """Returns the fixed 5-tuple (last_hidden_state, past_key_values, hidden_states, attentions,
        cross_attentions), None entries included."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("You must specify exactly one of decoder_input_ids or decoder_inputs_embeds")
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
        attention_mask = create_causal_mask(attention_mask, batch_size, cache_position, kv_length, dtype)
        if encoder_hidden_states is not None:
            encoder_attention_mask = create_bidirectional_mask(encoder_attention_mask, seq_len, dtype)

        positions = self.embed_positions(cache_position)
        hidden_states = self.dropout(self.layernorm_embedding(inputs_embeds + positions.astype(dtype)))

        all_hidden_states = () if output_hidden_states else None
        all_attentions = () if output_attentions else None
        all_cross_attentions = () if output_attentions and encoder_hidden_states is not None else None
        for layer in self.layers:
            # LayerDrop (training only) is not implemented: every layer always runs
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            hidden_states, self_weights, cross_weights = layer(
                hidden_states, attention_mask, encoder_hidden_states, encoder_attention_mask, past_key_values,
                cache_position)
            if output_attentions:
                all_attentions += (self_weights,)
                if encoder_hidden_states is not None:
                    all_cross_attentions += (cross_weights,)
        if output_hidden_states:
            all_hidden_states += (hidden_states,)
        past_key_values = past_key_values if use_cache else None
        return hidden_states, past_key_values, all_hidden_states, all_attentions, all_cross_attentions


class BartModel(BartPreTrainedModel):
    _tied_weights_keys = {
        "decoder.embed_tokens.weight": "shared.weight",
        "encoder.embed_tokens.weight": "shared.weight",
    }

    def __init__(self, config: BartConfig):
        super().__init__(config)
        embed_scale = math.sqrt(config.d_model) if config.scale_embedding else 1.0
        self.shared = BartScaledWordEmbedding(config.vocab_size, config.d_model, config.pad_token_id,
                                              embed_scale=embed_scale)
        self.encoder = BartEncoder(config)
        self.decoder = BartDecoder(config)
        self.post_init()

    def get_input_embeddings(self):
        return self.shared

    def set_input_embeddings(self, value):
        self.shared = value
        self.encoder.embed_tokens = self.shared
        self.decoder.embed_tokens = self.shared

    def get_encoder(self):
        return self.encoder

    def get_decoder(self):
        return self.decoder

    def _encode_decode(self, input_ids, attention_mask, decoder_input_ids, decoder_attention_mask, encoder_outputs,
                       past_key_values, inputs_embeds, decoder_inputs_embeds, use_cache, output_attentions,
                       output_hidden_states, cache_position):
        """(encoder fields, decoder fields) as plain tuples (nested output objects fail inside graphs)."""
        # unlike other models, BART builds decoder inputs from input_ids (denoising pre-training) when none are given
        if decoder_input_ids is None and decoder_inputs_embeds is None:
            if input_ids is None:
                raise ValueError("If no `decoder_input_ids` or `decoder_inputs_embeds` are passed, `input_ids` cannot "
                                 "be `None`. Please pass either `input_ids` or `decoder_input_ids` or "
                                 "`decoder_inputs_embeds`.")
            decoder_input_ids = shift_tokens_right(input_ids, self.config.pad_token_id,
                                                   self.config.decoder_start_token_id)
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        if encoder_outputs is None:
            encoder_fields = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                                          inputs_embeds=inputs_embeds, output_attentions=output_attentions,
                                          output_hidden_states=output_hidden_states, return_dict=False)
        else:
            encoder_fields = _encoder_fields(encoder_outputs)
        decoder_fields = self.decoder(
            input_ids=decoder_input_ids, attention_mask=decoder_attention_mask,
            encoder_hidden_states=encoder_fields[0], encoder_attention_mask=attention_mask,
            past_key_values=past_key_values, inputs_embeds=decoder_inputs_embeds, use_cache=use_cache,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states,
            cache_position=cache_position,
        )
        return encoder_fields, decoder_fields

    def construct(self, input_ids=None, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
                  encoder_outputs=None, past_key_values=None, inputs_embeds=None, decoder_inputs_embeds=None,
                  use_cache=None, output_attentions=None, output_hidden_states=None, return_dict=None,
                  cache_position=None, **kwargs):
        r"""
        Args:
            input_ids: (B, S) encoder token ids; `attention_mask` (B, S) marks real tokens with 1.
            decoder_input_ids: (B, T) decoder ids, starting with `decoder_start_token_id`; without them,
                `shift_tokens_right(input_ids)` is used (BART's denoising setup).
            encoder_outputs: a previous encoder pass (reused during generation).
            past_key_values: an `EncoderDecoderCache` (created when `use_cache` and none is given).
        """
        encoder_fields, decoder_fields = self._encode_decode(
            input_ids, attention_mask, decoder_input_ids, decoder_attention_mask, encoder_outputs, past_key_values,
            inputs_embeds, decoder_inputs_embeds, use_cache, output_attentions, output_hidden_states, cache_position,
        )
        fields = {
            "last_hidden_state": decoder_fields[0],
            "past_key_values": decoder_fields[1],
            "decoder_hidden_states": decoder_fields[2],
            "decoder_attentions": decoder_fields[3],
            "cross_attentions": decoder_fields[4],
            "encoder_last_hidden_state": encoder_fields[0],
            "encoder_hidden_states": encoder_fields[1],
            "encoder_attentions": encoder_fields[2],
        }
        return model_output(Seq2SeqModelOutput, fields, return_dict is not False)


class BartForConditionalGeneration(BartPreTrainedModel, GenerationMixin):
    # compiled decoding: the decoder reads an EncoderDecoderStaticCache, and the step takes the encoder padding mask
    _supports_static_cache = True
    _decode_step_encoder_mask = True
    base_model_prefix = "model"
    _tied_weights_keys = {
        "model.decoder.embed_tokens.weight": "model.shared.weight",
        "model.encoder.embed_tokens.weight": "model.shared.weight",
        "lm_head.weight": "model.shared.weight",
    }
    _keys_to_ignore_on_load_missing = [r"final_logits_bias"]

    def __init__(self, config: BartConfig):
        super().__init__(config)
        self.model = BartModel(config)
        # a buffer in HF (saved, never trained): a parameter without gradient here
        self.final_logits_bias = new_parameter((1, config.vocab_size), "zeros", requires_grad=False)
        self.lm_head = Linear(config.d_model, config.vocab_size, bias=False)
        self.post_init()

    def get_encoder(self):
        return self.model.encoder

    def get_decoder(self):
        return self.model.decoder

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    def resize_token_embeddings(self, new_num_tokens=None, pad_to_multiple_of=None):
        embeddings = super().resize_token_embeddings(new_num_tokens, pad_to_multiple_of)
        self._resize_final_logits_bias(embeddings.weight.shape[0])
        return embeddings

    def _resize_final_logits_bias(self, new_num_tokens):
        old = self.final_logits_bias.asnumpy()
        new = np.zeros((1, new_num_tokens), old.dtype)
        n = min(new_num_tokens, old.shape[1])
        new[:, :n] = old[:, :n]
        self.final_logits_bias = Parameter(Tensor(new), name="final_logits_bias", requires_grad=False)

    def construct(self, input_ids=None, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
                  encoder_outputs=None, past_key_values=None, inputs_embeds=None, decoder_inputs_embeds=None,
                  labels=None, use_cache=None, output_attentions=None, output_hidden_states=None, return_dict=None,
                  cache_position=None, **kwargs):
        r"""
        labels: (B, T) target ids; -100 is ignored by the loss. Without decoder inputs, `decoder_input_ids` is
            `shift_tokens_right(labels, pad_token_id, decoder_start_token_id)`; with labels no cache is built.
        Other arguments as in `BartModel`.
        """
        if labels is not None:
            use_cache = False
            if decoder_input_ids is None and decoder_inputs_embeds is None:
                decoder_input_ids = shift_tokens_right(labels, self.config.pad_token_id,
                                                       self.config.decoder_start_token_id)
        encoder_fields, decoder_fields = self.model._encode_decode(
            input_ids, attention_mask, decoder_input_ids, decoder_attention_mask, encoder_outputs, past_key_values,
            inputs_embeds, decoder_inputs_embeds, use_cache, output_attentions, output_hidden_states, cache_position,
        )
        lm_logits = self.lm_head(decoder_fields[0])
        lm_logits = lm_logits + self.final_logits_bias.astype(lm_logits.dtype)

        loss = None
        if labels is not None:
            loss = F.cross_entropy(lm_logits.reshape(-1, self.config.vocab_size), labels.reshape(-1))
        fields = {
            "loss": loss,
            "logits": lm_logits,
            "past_key_values": decoder_fields[1],
            "decoder_hidden_states": decoder_fields[2],
            "decoder_attentions": decoder_fields[3],
            "cross_attentions": decoder_fields[4],
            "encoder_last_hidden_state": encoder_fields[0],
            "encoder_hidden_states": encoder_fields[1],
            "encoder_attentions": encoder_fields[2],
        }
        return model_output(Seq2SeqLMOutput, fields, return_dict is not False)

    def prepare_decoder_input_ids_from_labels(self, labels):
        return shift_tokens_right(labels, self.config.pad_token_id, self.config.decoder_start_token_id)


class BartForSequenceClassification(BartPreTrainedModel):
    """Classifies the decoder state at each row's last <eos> of `input_ids` (every row needs the same number)."""

    _tied_weights_keys = {
        "model.decoder.embed_tokens.weight": "model.shared.weight",
        "model.encoder.embed_tokens.weight": "model.shared.weight",
    }

    def __init__(self, config: BartConfig, **kwargs):
        super().__init__(config, **kwargs)
        self.model = BartModel(config)
        self.classification_head = BartClassificationHead(config.d_model, config.d_model, config.num_labels,
                                                          config.classifier_dropout)
        self.post_init()

    def construct(self, input_ids=None, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
                  encoder_outputs=None, inputs_embeds=None, decoder_inputs_embeds=None, labels=None, use_cache=None,
                  output_attentions=None, output_hidden_states=None, return_dict=None, **kwargs):
        if labels is not None:
            use_cache = False
        if input_ids is None and inputs_embeds is not None:
            raise NotImplementedError(f"Passing input embeddings is currently not supported for {type(self).__name__}")
        encoder_fields, decoder_fields = self.model._encode_decode(
            input_ids, attention_mask, decoder_input_ids, decoder_attention_mask, encoder_outputs, None,
            inputs_embeds, decoder_inputs_embeds, use_cache, output_attentions, output_hidden_states, None,
        )
        hidden_states = decoder_fields[0]
        eos_mask = (input_ids == self.config.eos_token_id).astype(ms.int32)
        if not runtime.in_graph():
            counts = eos_mask.sum(1).asnumpy()
            if (counts != counts[0]).any():
                raise ValueError("All examples must have the same number of <eos> tokens.")
            if counts[0] < 1:
                raise ValueError("Each example must contain at least one <eos> token.")
        batch_size, seq_len, hidden_size = hidden_states.shape
        last_eos = F.argmax(F.arange(seq_len, dtype=ms.int32) * eos_mask, -1).astype(ms.int32)
        sentence_representation = ops.gather_elements(
            hidden_states, 1, ops.broadcast_to(last_eos[:, None, None], (batch_size, 1, hidden_size))
        ).squeeze(1)
        logits = self.classification_head(sentence_representation)

        loss = None
        if labels is not None:
            loss = sequence_classification_loss(labels, logits, self.config)
        fields = {
            "loss": loss,
            "logits": logits,
            "past_key_values": decoder_fields[1],
            "decoder_hidden_states": decoder_fields[2],
            "decoder_attentions": decoder_fields[3],
            "cross_attentions": decoder_fields[4],
            "encoder_last_hidden_state": encoder_fields[0],
            "encoder_hidden_states": encoder_fields[1],
            "encoder_attentions": encoder_fields[2],
        }
        return model_output(Seq2SeqSequenceClassifierOutput, fields, return_dict is not False)


class BartForQuestionAnswering(BartPreTrainedModel):
    _tied_weights_keys = {
        "model.decoder.embed_tokens.weight": "model.shared.weight",
        "model.encoder.embed_tokens.weight": "model.shared.weight",
    }

    def __init__(self, config: BartConfig):
        super().__init__(config)
        config.num_labels = 2
        self.num_labels = config.num_labels
        self.model = BartModel(config)
        self.qa_outputs = Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def construct(self, input_ids=None, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
                  encoder_outputs=None, start_positions=None, end_positions=None, inputs_embeds=None,
                  decoder_inputs_embeds=None, use_cache=None, output_attentions=None, output_hidden_states=None,
                  return_dict=None, **kwargs):
        if start_positions is not None and end_positions is not None:
            use_cache = False
        encoder_fields, decoder_fields = self.model._encode_decode(
            input_ids, attention_mask, decoder_input_ids, decoder_attention_mask, encoder_outputs, None,
            inputs_embeds, decoder_inputs_embeds, use_cache, output_attentions, output_hidden_states, None,
        )
        logits = self.qa_outputs(decoder_fields[0])
        start_logits, end_logits = logits[..., 0], logits[..., 1]
        loss = None
        if start_positions is not None and end_positions is not None:
            loss = question_answering_loss(start_logits, end_logits, start_positions, end_positions)
        fields = {
            "loss": loss,
            "start_logits": start_logits,
            "end_logits": end_logits,
            "past_key_values": decoder_fields[1],
            "decoder_hidden_states": decoder_fields[2],
            "decoder_attentions": decoder_fields[3],
            "cross_attentions": decoder_fields[4],
            "encoder_last_hidden_state": encoder_fields[0],
            "encoder_hidden_states": encoder_fields[1],
            "encoder_attentions": encoder_fields[2],
        }
        return model_output(Seq2SeqQuestionAnsweringModelOutput, fields, return_dict is not False)


__all__ = [
    "BartForConditionalGeneration",
    "BartForQuestionAnswering",
    "BartForSequenceClassification",
    "BartModel",
    "BartPreTrainedModel",
    "shift_tokens_right",
]
