"""M2M100 (and NLLB, the same architecture with its own tokenizer) on MindSpore: HF's `modeling_m2m_100.py`
structure, names and outputs; device concerns live in `backend`.

A pre-norm Transformer encoder-decoder (a LayerNorm before each sub-block and one after each stack), token embeddings
scaled by sqrt(d_model), and fixed sinusoidal positions counted fairseq-style: real tokens get positions
padding_idx + 1, padding_idx + 2, ... (padding tokens skipped), padding tokens read the all-zero row `padding_idx`.
Translation picks the target language by forcing its language id as the first generated token
(`forced_bos_token_id`).
"""

import math

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops
from mindspore.common.initializer import Normal
from transformers import M2M100Config

from ...backend import functional as F
from ...backend import runtime
from ...backend.layers import Dropout, Embedding, LayerNorm, Linear, default_dtype
from ...cache_utils import DynamicCache, EncoderDecoderCache
from ...generation import GenerationMixin
from ...masking_utils import create_bidirectional_mask, create_causal_mask
from ...modeling_layers import GradientCheckpointingLayer
from ...modeling_outputs import BaseModelOutput, Seq2SeqLMOutput, Seq2SeqModelOutput, model_output
from ...modeling_utils import PreTrainedModel, init_parameter

_FP16_CLAMP = 65504.0 - 1000


def shift_tokens_right(input_ids, pad_token_id, decoder_start_token_id):
    """decoder inputs from labels: prepend decoder_start_token_id, drop the last token, -100 -> pad_token_id."""
    if pad_token_id is None:
        raise ValueError("self.model.config.pad_token_id has to be defined.")
    start = F.full((input_ids.shape[0], 1), decoder_start_token_id, input_ids.dtype)
    shifted = F.cat([start, input_ids[:, :-1]], -1)
    return shifted.masked_fill(shifted == -100, pad_token_id)


class M2M100ScaledWordEmbedding(Embedding):
    """Token embeddings multiplied by `embed_scale` (sqrt(d_model) when `config.scale_embedding`, else 1)."""

    def __init__(self, num_embeddings, embedding_dim, padding_idx, embed_scale=1.0):
        super().__init__(num_embeddings, embedding_dim, padding_idx)
        self.embed_scale = embed_scale

    def construct(self, input_ids):
        return F.embedding(input_ids, self.weight, self.padding_idx) * self.embed_scale


def sinusoidal_table(num_embeddings, embedding_dim, padding_idx=None):
    """tensor2tensor's table (sin half, then cos half; frequencies 10000^(-i/(half-1))), computed in float32 as HF
    does, with the padding row zeroed."""
    half_dim = embedding_dim // 2
    scale = np.float32(math.log(10000) / (half_dim - 1))
    freqs = np.exp(np.arange(half_dim, dtype=np.float32) * -scale)
    angles = np.arange(num_embeddings, dtype=np.float32)[:, None] * freqs[None, :]
    table = np.concatenate([np.sin(angles), np.cos(angles)], axis=1)
    if embedding_dim % 2 == 1:
        table = np.concatenate([table, np.zeros((num_embeddings, 1), np.float32)], axis=1)
    if padding_idx is not None:
        table[padding_idx, :] = 0
    return table


def create_position_ids_from_input_ids(input_ids, padding_idx, past_key_values_length=0):
    """Real tokens get positions padding_idx + 1, padding_idx + 2, ... (counting only real tokens, after the cached
    ones); padding tokens get padding_idx, the table's zero row."""
    mask = (input_ids != padding_idx).astype(ms.int32)
    incremental = (F.cumsum(mask, 1) + past_key_values_length) * mask
    return incremental.astype(ms.int64) + padding_idx


class M2M100SinusoidalPositionalEmbedding(nn.Cell):
    """Fixed sinusoidal positions of any length. The table is a constant (HF: a non-persistent buffer, so never in a
    checkpoint), grown on the host when a longer sequence comes in."""

    def __init__(self, num_positions, embedding_dim, padding_idx=None):
        super().__init__()
        self.offset = 2
        self.num_positions = num_positions
        self.embedding_dim = embedding_dim
        self.padding_idx = padding_idx
        self.make_weights(num_positions + self.offset, embedding_dim, padding_idx)

    def make_weights(self, num_embeddings, embedding_dim, padding_idx=None):
        dtype = self.weights.dtype if hasattr(self, "weights") else default_dtype()
        self.weights = Tensor(sinusoidal_table(num_embeddings, embedding_dim, padding_idx)).astype(dtype)

    def cover(self, length):
        """Grows the table (on the host) to hold the positions of a `length`-token sequence."""
        max_pos = self.padding_idx + 1 + length
        if max_pos > self.weights.shape[0]:
            self.make_weights(max_pos + self.offset, self.embedding_dim, self.padding_idx)

    def construct(self, input_ids=None, inputs_embeds=None, past_key_values_length=0):
        """(B, S, D) position embeddings for `input_ids` (padding-aware) or, without ids, for `inputs_embeds`
        (every token counted as real). `past_key_values_length` may be a (1,) tensor (a compiled decode step's
        cache position); the table is then not grown here, the caller has `cover`ed the length beforehand."""
        if input_ids is not None:
            batch_size, seq_len = input_ids.shape
            position_ids = create_position_ids_from_input_ids(input_ids, self.padding_idx, past_key_values_length)
        else:
            batch_size, seq_len = inputs_embeds.shape[:2]
            positions = F.arange(self.padding_idx + 1, seq_len + self.padding_idx + 1).reshape(1, seq_len)
            position_ids = ops.broadcast_to(positions + past_key_values_length, (batch_size, seq_len))
        if not runtime.in_graph() and isinstance(past_key_values_length, int):
            self.cover(seq_len + past_key_values_length)
        return F.embedding(position_ids, self.weights)


class M2M100Attention(nn.Cell):
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


class M2M100EncoderLayer(GradientCheckpointingLayer):
    def __init__(self, config: M2M100Config, layer_idx=None):
        super().__init__()
        self.embed_dim = config.d_model
        self.self_attn = M2M100Attention(self.embed_dim, config.encoder_attention_heads,
                                         dropout=config.attention_dropout, config=config, layer_idx=layer_idx)
        self.self_attn_layer_norm = LayerNorm(self.embed_dim)
        self.dropout = Dropout(config.dropout)
        self.activation_fn = F.get_activation(config.activation_function)
        self.activation_dropout = Dropout(config.activation_dropout)
        self.fc1 = Linear(self.embed_dim, config.encoder_ffn_dim)
        self.fc2 = Linear(config.encoder_ffn_dim, self.embed_dim)
        self.final_layer_norm = LayerNorm(self.embed_dim)

    def construct(self, hidden_states, attention_mask=None):
        """Returns (hidden_states, self-attention weights); pre-norm: LayerNorm, sub-block, residual add."""
        attn_output, attn_weights = self.self_attn(self.self_attn_layer_norm(hidden_states),
                                                   attention_mask=attention_mask)
        hidden_states = hidden_states + self.dropout(attn_output)
        ffn = self.fc2(self.activation_dropout(self.activation_fn(self.fc1(self.final_layer_norm(hidden_states)))))
        hidden_states = hidden_states + self.dropout(ffn)
        if hidden_states.dtype == ms.float16:
            # HF keeps fp16 activations 1000 below the fp16 maximum (inf would poison the next LayerNorm)
            hidden_states = ops.clamp(hidden_states, -_FP16_CLAMP, _FP16_CLAMP)
        return hidden_states, attn_weights


class M2M100DecoderLayer(GradientCheckpointingLayer):
    def __init__(self, config: M2M100Config, layer_idx=None):
        super().__init__()
        self.embed_dim = config.d_model
        self.self_attn = M2M100Attention(self.embed_dim, config.decoder_attention_heads,
                                         dropout=config.attention_dropout, is_decoder=True, is_causal=True,
                                         config=config, layer_idx=layer_idx)
        self.dropout = Dropout(config.dropout)
        self.activation_fn = F.get_activation(config.activation_function)
        self.activation_dropout = Dropout(config.activation_dropout)
        self.self_attn_layer_norm = LayerNorm(self.embed_dim)
        self.encoder_attn = M2M100Attention(self.embed_dim, config.decoder_attention_heads,
                                            dropout=config.attention_dropout, is_decoder=True, config=config,
                                            layer_idx=layer_idx)
        self.encoder_attn_layer_norm = LayerNorm(self.embed_dim)
        self.fc1 = Linear(self.embed_dim, config.decoder_ffn_dim)
        self.fc2 = Linear(config.decoder_ffn_dim, self.embed_dim)
        self.final_layer_norm = LayerNorm(self.embed_dim)

    def construct(self, hidden_states, attention_mask=None, encoder_hidden_states=None, encoder_attention_mask=None,
                  past_key_values=None, cache_position=None):
        """Returns (hidden_states, self-attention weights, cross-attention weights or None)."""
        attn_output, self_weights = self.self_attn(self.self_attn_layer_norm(hidden_states),
                                                   past_key_values=past_key_values, attention_mask=attention_mask,
                                                   cache_position=cache_position)
        hidden_states = hidden_states + self.dropout(attn_output)

        cross_weights = None
        if encoder_hidden_states is not None:
            attn_output, cross_weights = self.encoder_attn(self.encoder_attn_layer_norm(hidden_states),
                                                           key_value_states=encoder_hidden_states,
                                                           past_key_values=past_key_values,
                                                           attention_mask=encoder_attention_mask)
            hidden_states = hidden_states + self.dropout(attn_output)

        ffn = self.fc2(self.activation_dropout(self.activation_fn(self.fc1(self.final_layer_norm(hidden_states)))))
        return hidden_states + self.dropout(ffn), self_weights, cross_weights


class M2M100PreTrainedModel(PreTrainedModel):
    config_class = M2M100Config
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["M2M100EncoderLayer", "M2M100DecoderLayer"]

    def _init_weights(self, cell):
        """HF's scheme with the config's `init_std`; the sinusoidal tables are fixed."""
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


def _encoder_fields(encoder_outputs):
    """(last_hidden_state, hidden_states, attentions) of a given encoder output object or HF-style tuple."""
    if isinstance(encoder_outputs, dict):
        return (encoder_outputs.get("last_hidden_state"), encoder_outputs.get("hidden_states"),
                encoder_outputs.get("attentions"))
    return (encoder_outputs[0], encoder_outputs[1] if len(encoder_outputs) > 1 else None,
            encoder_outputs[2] if len(encoder_outputs) > 2 else None)


class M2M100Encoder(nn.Cell):
    """`config.encoder_layers` pre-norm self-attention layers over scaled token + sinusoidal position embeddings,
    then a final LayerNorm."""

    def __init__(self, config: M2M100Config):
        super().__init__()
        self.config = config
        self.padding_idx = config.pad_token_id
        self.max_source_positions = config.max_position_embeddings
        self.layerdrop = config.encoder_layerdrop
        embed_scale = math.sqrt(config.d_model) if config.scale_embedding else 1.0
        self.embed_tokens = M2M100ScaledWordEmbedding(config.vocab_size, config.d_model, self.padding_idx,
                                                      embed_scale=embed_scale)
        self.embed_positions = M2M100SinusoidalPositionalEmbedding(config.max_position_embeddings, config.d_model,
                                                                   self.padding_idx)
        self.layers = nn.CellList([M2M100EncoderLayer(config, layer_idx=i) for i in range(config.encoder_layers)])
        self.layer_norm = LayerNorm(config.d_model)
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
        positions = self.embed_positions(input_ids, inputs_embeds)
        hidden_states = self.dropout(inputs_embeds + positions.astype(inputs_embeds.dtype))
        attention_mask = create_bidirectional_mask(attention_mask, inputs_embeds.shape[1], inputs_embeds.dtype)

        all_hidden_states = () if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layers:
            # LayerDrop (training only) is not implemented: every layer always runs
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            hidden_states, attn_weights = layer(hidden_states, attention_mask)
            if output_attentions:
                all_attentions += (attn_weights,)
        hidden_states = self.layer_norm(hidden_states)
        if output_hidden_states:
            all_hidden_states += (hidden_states,)
        if not return_dict:
            return hidden_states, all_hidden_states, all_attentions
        fields = {"last_hidden_state": hidden_states, "hidden_states": all_hidden_states,
                  "attentions": all_attentions}
        return model_output(BaseModelOutput, fields, True)


class M2M100Decoder(nn.Cell):
    """`config.decoder_layers` pre-norm layers with causal self-attention and cross-attention to the encoder, then a
    final LayerNorm."""

    def __init__(self, config: M2M100Config):
        super().__init__()
        self.config = config
        self.padding_idx = config.pad_token_id
        self.max_target_positions = config.max_position_embeddings
        self.layerdrop = config.decoder_layerdrop
        embed_scale = math.sqrt(config.d_model) if config.scale_embedding else 1.0
        self.embed_tokens = M2M100ScaledWordEmbedding(config.vocab_size, config.d_model, self.padding_idx,
                                                      embed_scale=embed_scale)
        self.embed_positions = M2M100SinusoidalPositionalEmbedding(config.max_position_embeddings, config.d_model,
                                                                   self.padding_idx)
        self.layers = nn.CellList([M2M100DecoderLayer(config, layer_idx=i) for i in range(config.decoder_layers)])
        self.layer_norm = LayerNorm(config.d_model)
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

        # positions count the decoder's real tokens (padding-aware), continuing after the cached ones: read from
        # `cache_position`, so that a compiled step uses its own step's position; the table (a graph constant) is
        # grown on the host beforehand to every position the cache can hold
        if not runtime.in_graph():
            self.embed_positions.cover(kv_length)
        positions = self.embed_positions(input_ids, inputs_embeds, cache_position[:1])
        hidden_states = self.dropout(inputs_embeds + positions.astype(dtype))

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
        hidden_states = self.layer_norm(hidden_states)
        if output_hidden_states:
            all_hidden_states += (hidden_states,)
        past_key_values = past_key_values if use_cache else None
        return hidden_states, past_key_values, all_hidden_states, all_attentions, all_cross_attentions


class M2M100Model(M2M100PreTrainedModel):
    _tied_weights_keys = {
        "decoder.embed_tokens.weight": "shared.weight",
        "encoder.embed_tokens.weight": "shared.weight",
    }

    def __init__(self, config: M2M100Config):
        super().__init__(config)
        embed_scale = math.sqrt(config.d_model) if config.scale_embedding else 1.0
        self.shared = M2M100ScaledWordEmbedding(config.vocab_size, config.d_model, config.pad_token_id,
                                                embed_scale=embed_scale)
        self.encoder = M2M100Encoder(config)
        self.decoder = M2M100Decoder(config)
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
            input_ids: (B, S) encoder token ids (the tokenizer puts the source language id first); `attention_mask`
                (B, S) marks real tokens with 1.
            decoder_input_ids: (B, T) decoder ids; M2M100 starts them with `eos_token_id`
                (`config.decoder_start_token_id`), then the target language id.
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


class M2M100ForConditionalGeneration(M2M100PreTrainedModel, GenerationMixin):
    # compiled decoding: the decoder reads an EncoderDecoderStaticCache, and the step takes the encoder padding mask
    _supports_static_cache = True
    _decode_step_encoder_mask = True
    base_model_prefix = "model"
    _tied_weights_keys = {
        "model.decoder.embed_tokens.weight": "model.shared.weight",
        "model.encoder.embed_tokens.weight": "model.shared.weight",
        "lm_head.weight": "model.shared.weight",
    }

    def __init__(self, config: M2M100Config):
        super().__init__(config)
        self.model = M2M100Model(config)
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

    def construct(self, input_ids=None, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
                  encoder_outputs=None, past_key_values=None, inputs_embeds=None, decoder_inputs_embeds=None,
                  labels=None, use_cache=None, output_attentions=None, output_hidden_states=None, return_dict=None,
                  cache_position=None, **kwargs):
        r"""
        labels: (B, T) target ids; -100 is ignored by the loss. Without `decoder_input_ids`, they are
            `shift_tokens_right(labels, pad_token_id, decoder_start_token_id)`.
        Other arguments as in `M2M100Model`. Translation: `generate(..., forced_bos_token_id=tokenizer.get_lang_id(
        "fr"))` (M2M100) or `tokenizer.convert_tokens_to_ids("fra_Latn")` (NLLB).
        """
        if labels is not None and decoder_input_ids is None:
            decoder_input_ids = shift_tokens_right(labels, self.config.pad_token_id,
                                                   self.config.decoder_start_token_id)
        encoder_fields, decoder_fields = self.model._encode_decode(
            input_ids, attention_mask, decoder_input_ids, decoder_attention_mask, encoder_outputs, past_key_values,
            inputs_embeds, decoder_inputs_embeds, use_cache, output_attentions, output_hidden_states, cache_position,
        )
        lm_logits = self.lm_head(decoder_fields[0])

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


__all__ = ["M2M100ForConditionalGeneration", "M2M100Model", "M2M100PreTrainedModel"]
