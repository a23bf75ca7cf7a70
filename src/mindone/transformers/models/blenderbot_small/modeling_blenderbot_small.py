"""Blenderbot Small on MindSpore: HF's `modeling_blenderbot_small.py` structure, names and outputs; device concerns
live in `backend`.

BART's post-norm encoder-decoder with two differences in the embeddings: learned positions without BART's offset,
and the decoder normalises its token embeddings *before* adding positions (the encoder normalises the sum). As in
transformers 5, only the encoder multiplies token embeddings by `embed_scale`; the decoder does not. The LM head adds
a `final_logits_bias` buffer. `BlenderbotSmallForCausalLM` is the decoder alone (keys `model.decoder.*`).
"""

import math

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import Normal
from transformers import BlenderbotSmallConfig

from ...backend import functional as F
from ...backend import runtime
from ...backend.layers import Dropout, Embedding, LayerNorm, Linear, new_parameter
from ...cache_utils import DynamicCache, EncoderDecoderCache
from ...generation import GenerationMixin
from ...masking_utils import create_bidirectional_mask, create_causal_mask
from ...modeling_layers import GradientCheckpointingLayer
from ...modeling_outputs import (
    BaseModelOutput,
    CausalLMOutputWithCrossAttentions,
    Seq2SeqLMOutput,
    Seq2SeqModelOutput,
    model_output,
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


class BlenderbotSmallLearnedPositionalEmbedding(Embedding):
    """Learned positions 0..max_position_embeddings-1 (no offset)."""

    def __init__(self, num_embeddings, embedding_dim):
        super().__init__(num_embeddings, embedding_dim)

    def construct(self, position_ids):
        """position_ids: (S,) or (B, S) absolute positions."""
        return F.embedding(position_ids.astype(ms.int64), self.weight)


class BlenderbotSmallAttention(nn.Cell):
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
        if past_key_values is None or (is_cross_attention and not isinstance(past_key_values, EncoderDecoderCache)):
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
            self_cache = (past_key_values.self_attention_cache if isinstance(past_key_values, EncoderDecoderCache)
                          else past_key_values)
            # the slots a static cache writes (as HF's cache_kwargs); a DynamicCache appends and ignores them
            key_states, value_states = self_cache.update(*self._project_kv(current_states), self.layer_idx,
                                                         {"cache_position": cache_position})

        attn_output, attn_weights = F.attention(query_states, key_states, value_states, attn_mask=attention_mask,
                                                scale=self.scaling, dropout_p=self.dropout if self.training else 0.0,
                                                training=self.training)
        attn_output = attn_output.swapaxes(1, 2).reshape(batch, seq_len, -1)
        return self.out_proj(attn_output), attn_weights


class BlenderbotSmallEncoderLayer(GradientCheckpointingLayer):
    def __init__(self, config: BlenderbotSmallConfig, layer_idx=None):
        super().__init__()
        self.embed_dim = config.d_model
        self.self_attn = BlenderbotSmallAttention(self.embed_dim, config.encoder_attention_heads,
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


class BlenderbotSmallDecoderLayer(GradientCheckpointingLayer):
    def __init__(self, config: BlenderbotSmallConfig, layer_idx=None):
        super().__init__()
        self.embed_dim = config.d_model
        self.self_attn = BlenderbotSmallAttention(self.embed_dim, config.decoder_attention_heads,
                                       dropout=config.attention_dropout, is_decoder=True, is_causal=True,
                                       config=config, layer_idx=layer_idx)
        self.dropout = Dropout(config.dropout)
        self.activation_fn = F.get_activation(config.activation_function)
        self.activation_dropout = Dropout(config.activation_dropout)
        self.self_attn_layer_norm = LayerNorm(self.embed_dim)
        self.encoder_attn = BlenderbotSmallAttention(self.embed_dim, config.decoder_attention_heads,
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


class BlenderbotSmallPreTrainedModel(PreTrainedModel):
    config_class = BlenderbotSmallConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True

    def _init_weights(self, cell):
        """HF's scheme with the config's `init_std`; `final_logits_bias` starts at zero."""
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
        if isinstance(cell, BlenderbotSmallForConditionalGeneration):
            init_parameter(cell.final_logits_bias, "zeros")


def _encoder_fields(encoder_outputs):
    """(last_hidden_state, hidden_states, attentions) of a given encoder output object or HF-style tuple."""
    if isinstance(encoder_outputs, dict):
        return (encoder_outputs.get("last_hidden_state"), encoder_outputs.get("hidden_states"),
                encoder_outputs.get("attentions"))
    return (encoder_outputs[0], encoder_outputs[1] if len(encoder_outputs) > 1 else None,
            encoder_outputs[2] if len(encoder_outputs) > 2 else None)


class BlenderbotSmallEncoder(nn.Cell):
    """`config.encoder_layers` post-norm self-attention layers over LayerNorm(scaled tokens + positions)."""

    def __init__(self, config: BlenderbotSmallConfig):
        super().__init__()
        self.config = config
        self.padding_idx = config.pad_token_id
        self.max_source_positions = config.max_position_embeddings
        self.layerdrop = config.encoder_layerdrop
        self.embed_scale = math.sqrt(config.d_model) if config.scale_embedding else 1.0
        self.embed_tokens = Embedding(config.vocab_size, config.d_model, self.padding_idx)
        self.embed_positions = BlenderbotSmallLearnedPositionalEmbedding(config.max_position_embeddings,
                                                                         config.d_model)
        self.layers = nn.CellList([BlenderbotSmallEncoderLayer(config, layer_idx=i)
                                   for i in range(config.encoder_layers)])
        self.layernorm_embedding = LayerNorm(config.d_model)
        self.dropout = Dropout(config.dropout)

    def get_input_embeddings(self):
        return self.embed_tokens

    def set_input_embeddings(self, value):
        self.embed_tokens = value

    def construct(self, input_ids=None, attention_mask=None, inputs_embeds=None, output_attentions=None,
                  output_hidden_states=None, return_dict=True, **kwargs):
        """With `return_dict=False`: the fixed 3-tuple (last_hidden_state, hidden_states, attentions). Given
        `inputs_embeds` are used as they are (not scaled), as in HF."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids) * self.embed_scale
        seq_len = inputs_embeds.shape[1]
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


class BlenderbotSmallDecoder(nn.Cell):
    """`config.decoder_layers` post-norm layers with causal self-attention and (with an encoder) cross-attention,
    over LayerNorm(tokens) + positions."""

    def __init__(self, config: BlenderbotSmallConfig):
        super().__init__()
        self.config = config
        self.padding_idx = config.pad_token_id
        self.max_target_positions = config.max_position_embeddings
        self.layerdrop = config.decoder_layerdrop
        # kept for HF's attribute set; transformers 5 does not apply it in the decoder
        self.embed_scale = math.sqrt(config.d_model) if config.scale_embedding else 1.0
        self.embed_tokens = Embedding(config.vocab_size, config.d_model, self.padding_idx)
        self.embed_positions = BlenderbotSmallLearnedPositionalEmbedding(config.max_position_embeddings,
                                                                         config.d_model)
        self.layers = nn.CellList([BlenderbotSmallDecoderLayer(config, layer_idx=i)
                                   for i in range(config.decoder_layers)])
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
            past_key_values = (EncoderDecoderCache(DynamicCache(), DynamicCache())
                               if encoder_hidden_states is not None or self.config.is_encoder_decoder
                               else DynamicCache())
        self_cache = (past_key_values.self_attention_cache if isinstance(past_key_values, EncoderDecoderCache)
                      else past_key_values)
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
        hidden_states = self.dropout(self.layernorm_embedding(inputs_embeds) + positions.astype(dtype))

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


class BlenderbotSmallModel(BlenderbotSmallPreTrainedModel):
    _tied_weights_keys = {
        "encoder.embed_tokens.weight": "shared.weight",
        "decoder.embed_tokens.weight": "shared.weight",
    }

    def __init__(self, config: BlenderbotSmallConfig):
        super().__init__(config)
        self.shared = Embedding(config.vocab_size, config.d_model, config.pad_token_id)
        self.encoder = BlenderbotSmallEncoder(config)
        self.decoder = BlenderbotSmallDecoder(config)
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
            decoder_input_ids: (B, T) decoder ids, starting with `decoder_start_token_id` (BOS).
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


class BlenderbotSmallForConditionalGeneration(BlenderbotSmallPreTrainedModel, GenerationMixin):
    # compiled decoding: the decoder reads an EncoderDecoderStaticCache, and the step takes the encoder padding mask
    _supports_static_cache = True
    _decode_step_encoder_mask = True
    base_model_prefix = "model"
    _tied_weights_keys = {
        "model.encoder.embed_tokens.weight": "model.shared.weight",
        "model.decoder.embed_tokens.weight": "model.shared.weight",
        "lm_head.weight": "model.shared.weight",
    }
    _keys_to_ignore_on_load_missing = [r"final_logits_bias"]

    def __init__(self, config: BlenderbotSmallConfig):
        super().__init__(config)
        self.model = BlenderbotSmallModel(config)
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
        Other arguments as in `BlenderbotSmallModel`.
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


class BlenderbotSmallDecoderWrapper(BlenderbotSmallPreTrainedModel):
    """Holds the decoder under `decoder`, so causal-LM checkpoint keys read `model.decoder.*`."""

    def __init__(self, config: BlenderbotSmallConfig):
        super().__init__(config)
        self.decoder = BlenderbotSmallDecoder(config)
        self.post_init()

    def construct(self, *args, **kwargs):
        return self.decoder(*args, **kwargs)


class BlenderbotSmallForCausalLM(BlenderbotSmallPreTrainedModel, GenerationMixin):
    """The decoder alone as a causal LM (optionally cross-attending to given `encoder_hidden_states`)."""

    _tied_weights_keys = {"lm_head.weight": "model.decoder.embed_tokens.weight"}

    def __init__(self, config: BlenderbotSmallConfig):
        config.is_decoder = True
        config.is_encoder_decoder = False
        super().__init__(config)
        self.model = BlenderbotSmallDecoderWrapper(config)
        self.lm_head = Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.decoder.embed_tokens

    def set_input_embeddings(self, value):
        self.model.decoder.embed_tokens = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    def construct(self, input_ids=None, attention_mask=None, encoder_hidden_states=None, encoder_attention_mask=None,
                  past_key_values=None, inputs_embeds=None, labels=None, use_cache=None, output_attentions=None,
                  output_hidden_states=None, return_dict=None, cache_position=None, logits_to_keep=0, **kwargs):
        r"""
        labels: (B, S) targets for `logits[:, i]` at `labels[:, i]`: *not* shifted inside the model (HF's rule for
            this class); -100 is ignored.
        logits_to_keep: if > 0, logits only for the last `logits_to_keep` positions.
        """
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        fields = self.model.decoder(
            input_ids=input_ids, attention_mask=attention_mask, encoder_hidden_states=encoder_hidden_states,
            encoder_attention_mask=encoder_attention_mask, past_key_values=past_key_values,
            inputs_embeds=inputs_embeds, use_cache=use_cache, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states, cache_position=cache_position,
        )
        hidden_states = fields[0]
        if logits_to_keep > 0:
            hidden_states = hidden_states[:, -logits_to_keep:, :]
        logits = self.lm_head(hidden_states)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.reshape(-1, self.config.vocab_size), labels.reshape(-1))
        return model_output(CausalLMOutputWithCrossAttentions, {
            "loss": loss,
            "logits": logits,
            "past_key_values": fields[1],
            "hidden_states": fields[2],
            "attentions": fields[3],
            "cross_attentions": fields[4],
        }, return_dict is not False)


__all__ = [
    "BlenderbotSmallForCausalLM",
    "BlenderbotSmallForConditionalGeneration",
    "BlenderbotSmallModel",
    "BlenderbotSmallPreTrainedModel",
]
