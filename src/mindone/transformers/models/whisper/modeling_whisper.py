"""Whisper on MindSpore: HF's `modeling_whisper.py` structure, names and outputs; device concerns live in `backend`.

Encoder: two Conv1d + GELU over log-mel features (the second one halves the time axis), fixed sinusoidal positions
(stored in checkpoints as `encoder.embed_positions.weight`, not trained), pre-norm Transformer layers. Decoder: token
embeddings + learned positions, causal self-attention, cross-attention over the encoder output, LM head `proj_out`
tied to the token embeddings. `generate()` is HF's short-form Whisper decoding (audio up to 30 s).
"""

import copy
import logging
import math

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops
from mindspore.common.initializer import Normal
from transformers import WhisperConfig

from ...backend import functional as F
from ...backend import runtime
from ...backend.layers import Conv1d, Dropout, Embedding, LayerNorm, Linear
from ...cache_utils import DynamicCache, EncoderDecoderCache
from ...generation import GenerationMixin
from ...generation.logits_process import WhisperTimeStampLogitsProcessor, _as_numpy
from ...masking_utils import create_causal_mask
from ...modeling_layers import GradientCheckpointingLayer
from ...modeling_outputs import (
    model_output,
    BaseModelOutput,
    BaseModelOutputWithPastAndCrossAttentions,
    Seq2SeqLMOutput,
    Seq2SeqModelOutput,
)
from ...modeling_utils import PreTrainedModel, init_parameter

logger = logging.getLogger(__name__)

_FP16_CLAMP = 65504.0 - 1000


def sinusoids(length, channels, max_timescale=10000):
    """(length, channels) float32 table: sin in the first half of the channels, cos in the second (Whisper's)."""
    if channels % 2 != 0:
        raise ValueError(f"Number of channels has to be divisible by 2 for sinusoidal positional embeddings, got "
                         f"{channels} channels.")
    log_timescale_increment = math.log(max_timescale) / (channels // 2 - 1)
    inv_timescales = np.exp(-log_timescale_increment * np.arange(channels // 2, dtype=np.float32)).astype(np.float32)
    scaled_time = np.arange(length, dtype=np.float32)[:, None] * inv_timescales[None, :]
    return np.concatenate([np.sin(scaled_time), np.cos(scaled_time)], 1).astype(np.float32)


def shift_tokens_right(input_ids, pad_token_id, decoder_start_token_id):
    """decoder_input_ids from labels: prepend decoder_start_token_id, drop the last token, -100 -> pad."""
    if pad_token_id is None:
        raise ValueError("self.model.config.pad_token_id has to be defined.")
    start = F.full((input_ids.shape[0], 1), decoder_start_token_id, input_ids.dtype)
    shifted = F.cat([start, input_ids[:, :-1]], -1)
    return shifted.masked_fill(shifted == -100, pad_token_id)


class WhisperAttention(nn.Cell):
    """Multi-head attention; `k_proj` has no bias. Self-attention (optionally cached) or cross-attention."""

    def __init__(self, embed_dim, num_heads, dropout=0.0, is_decoder=False, bias=True, is_causal=False,
                 layer_idx=None, config=None):
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
        self.layer_idx = layer_idx
        self.k_proj = Linear(embed_dim, embed_dim, bias=False)
        self.v_proj = Linear(embed_dim, embed_dim, bias=bias)
        self.q_proj = Linear(embed_dim, embed_dim, bias=bias)
        self.out_proj = Linear(embed_dim, embed_dim, bias=bias)

    def _project_kv(self, states, batch):
        key_states = self.k_proj(states).reshape(batch, -1, self.num_heads, self.head_dim).swapaxes(1, 2)
        value_states = self.v_proj(states).reshape(batch, -1, self.num_heads, self.head_dim).swapaxes(1, 2)
        return key_states, value_states

    def construct(self, hidden_states, key_value_states=None, past_key_values=None, attention_mask=None,
                  cache_position=None):
        batch, seq_len = hidden_states.shape[:2]
        is_cross_attention = key_value_states is not None
        # Whisper scales the query before the product (as the original code does): the rounding differs from
        # scaling the scores, so the order is kept
        query_states = (self.q_proj(hidden_states) * self.scaling).reshape(
            batch, seq_len, self.num_heads, self.head_dim).swapaxes(1, 2)

        current_states = key_value_states if is_cross_attention else hidden_states
        if past_key_values is None:
            key_states, value_states = self._project_kv(current_states, batch)
        elif is_cross_attention:
            cache = past_key_values.cross_attention_cache
            if past_key_values.is_updated.get(self.layer_idx):
                # the encoder's keys/values were projected at the first decoding step (a host-side flag, so a
                # compiled decode step reads them from the cache without projecting again)
                key_states, value_states = cache.key_cache[self.layer_idx], cache.value_cache[self.layer_idx]
            else:
                slots = F.arange(0, current_states.shape[1], dtype=ms.int64)
                key_states, value_states = cache.update(*self._project_kv(current_states, batch), self.layer_idx,
                                                        {"cache_position": slots})
                past_key_values.is_updated[self.layer_idx] = True
        else:
            key_states, value_states = past_key_values.self_attention_cache.update(
                *self._project_kv(current_states, batch), self.layer_idx, {"cache_position": cache_position})

        attn_output, attn_weights = F.attention(query_states, key_states, value_states, attn_mask=attention_mask,
                                                scale=1.0, dropout_p=self.dropout if self.training else 0.0,
                                                training=self.training)
        attn_output = attn_output.swapaxes(1, 2).reshape(batch, seq_len, -1)
        return self.out_proj(attn_output), attn_weights


class WhisperEncoderLayer(GradientCheckpointingLayer):
    def __init__(self, config: WhisperConfig):
        super().__init__()
        self.embed_dim = config.d_model
        self.self_attn = WhisperAttention(self.embed_dim, config.encoder_attention_heads,
                                          dropout=config.attention_dropout, config=config)
        self.self_attn_layer_norm = LayerNorm(self.embed_dim)
        self.dropout = Dropout(config.dropout)
        self.activation_fn = F.get_activation(config.activation_function)
        self.activation_dropout = Dropout(config.activation_dropout)
        self.fc1 = Linear(self.embed_dim, config.encoder_ffn_dim)
        self.fc2 = Linear(config.encoder_ffn_dim, self.embed_dim)
        self.final_layer_norm = LayerNorm(self.embed_dim)

    def construct(self, hidden_states, attention_mask=None):
        """Returns (hidden_states, self-attention weights)."""
        residual = hidden_states
        hidden_states, attn_weights = self.self_attn(self.self_attn_layer_norm(hidden_states),
                                                     attention_mask=attention_mask)
        hidden_states = residual + self.dropout(hidden_states)

        residual = hidden_states
        hidden_states = self.activation_dropout(self.activation_fn(self.fc1(self.final_layer_norm(hidden_states))))
        hidden_states = residual + self.dropout(self.fc2(hidden_states))
        if hidden_states.dtype == ms.float16:
            hidden_states = ops.clamp(hidden_states, -_FP16_CLAMP, _FP16_CLAMP)
        return hidden_states, attn_weights


class WhisperDecoderLayer(GradientCheckpointingLayer):
    def __init__(self, config: WhisperConfig, layer_idx=None):
        super().__init__()
        self.embed_dim = config.d_model
        self.self_attn = WhisperAttention(self.embed_dim, config.decoder_attention_heads,
                                          dropout=config.attention_dropout, is_decoder=True, is_causal=True,
                                          layer_idx=layer_idx, config=config)
        self.dropout = Dropout(config.dropout)
        self.activation_fn = F.get_activation(config.activation_function)
        self.activation_dropout = Dropout(config.activation_dropout)
        self.self_attn_layer_norm = LayerNorm(self.embed_dim)
        self.encoder_attn = WhisperAttention(self.embed_dim, config.decoder_attention_heads,
                                             dropout=config.attention_dropout, is_decoder=True, layer_idx=layer_idx,
                                             config=config)
        self.encoder_attn_layer_norm = LayerNorm(self.embed_dim)
        self.fc1 = Linear(self.embed_dim, config.decoder_ffn_dim)
        self.fc2 = Linear(config.decoder_ffn_dim, self.embed_dim)
        self.final_layer_norm = LayerNorm(self.embed_dim)

    def construct(self, hidden_states, attention_mask=None, encoder_hidden_states=None, encoder_attention_mask=None,
                  past_key_values=None, cache_position=None):
        """Returns (hidden_states, self-attention weights, cross-attention weights)."""
        residual = hidden_states
        hidden_states, self_weights = self.self_attn(self.self_attn_layer_norm(hidden_states),
                                                     past_key_values=past_key_values, attention_mask=attention_mask,
                                                     cache_position=cache_position)
        hidden_states = residual + self.dropout(hidden_states)

        cross_weights = None
        if encoder_hidden_states is not None:
            residual = hidden_states
            hidden_states, cross_weights = self.encoder_attn(
                self.encoder_attn_layer_norm(hidden_states), key_value_states=encoder_hidden_states,
                past_key_values=past_key_values, attention_mask=encoder_attention_mask)
            hidden_states = residual + self.dropout(hidden_states)

        residual = hidden_states
        hidden_states = self.activation_dropout(self.activation_fn(self.fc1(self.final_layer_norm(hidden_states))))
        hidden_states = residual + self.dropout(self.fc2(hidden_states))
        return hidden_states, self_weights, cross_weights


class WhisperPreTrainedModel(PreTrainedModel):
    config_class = WhisperConfig
    base_model_prefix = "model"
    main_input_name = "input_features"
    supports_gradient_checkpointing = True
    _no_split_modules = ["WhisperEncoderLayer", "WhisperDecoderLayer"]

    def _init_weights(self, cell):
        """HF's scheme: normal(0, config.init_std) for Linear/Conv/Embedding, sinusoids for the encoder positions."""
        std = self.config.init_std
        if isinstance(cell, (Linear, Conv1d)):
            init_parameter(cell.weight, Normal(std))
            if cell.bias is not None:
                init_parameter(cell.bias, "zeros")
        elif isinstance(cell, Embedding) and getattr(cell, "sinusoidal", False):
            cell.weight.set_data(Tensor(sinusoids(*cell.weight.shape)).astype(cell.weight.dtype))
        elif isinstance(cell, Embedding):
            init_parameter(cell.weight, Normal(std))
            if cell.padding_idx is not None:
                data = cell.weight.asnumpy().copy()
                data[cell.padding_idx] = 0
                cell.weight.set_data(Tensor(data))
        elif isinstance(cell, LayerNorm):
            super()._init_weights(cell)

    def _get_feat_extract_output_lengths(self, input_lengths):
        """Output length of the convolutional front end (the second conv has stride 2)."""
        return (input_lengths - 1) // 2 + 1


class WhisperEncoder(WhisperPreTrainedModel):
    """Conv front end + sinusoidal positions + `config.encoder_layers` pre-norm layers."""

    def __init__(self, config: WhisperConfig):
        super().__init__(config)
        embed_dim = config.d_model
        self.num_mel_bins = config.num_mel_bins
        self.padding_idx = config.pad_token_id
        self.max_source_positions = config.max_source_positions
        self.embed_scale = math.sqrt(embed_dim) if config.scale_embedding else 1.0
        self.conv1 = Conv1d(self.num_mel_bins, embed_dim, kernel_size=3, padding=1)
        self.conv2 = Conv1d(embed_dim, embed_dim, kernel_size=3, stride=2, padding=1)
        self.embed_positions = Embedding(self.max_source_positions, embed_dim)
        # fixed sinusoids, as in HF (`requires_grad_(False)`)
        self.embed_positions.sinusoidal = True
        self.embed_positions.weight.requires_grad = False
        self.layers = nn.CellList([WhisperEncoderLayer(config) for _ in range(config.encoder_layers)])
        self.layer_norm = LayerNorm(config.d_model)
        self.dropout = Dropout(config.dropout)
        self.post_init()

    def _freeze_parameters(self):
        for param in self.get_parameters():
            param.requires_grad = False

    def get_input_embeddings(self):
        return self.conv1

    def set_input_embeddings(self, value):
        self.conv1 = value

    def construct(self, input_features, attention_mask=None, head_mask=None, output_attentions=None,
                  output_hidden_states=None, return_dict=None, **kwargs):
        r"""
        Args:
            input_features: (B, num_mel_bins, 2 * max_source_positions) log-mel features (3000 frames = 30 s for
                the released checkpoints), as `WhisperFeatureExtractor` makes them.
            attention_mask: accepted for compatibility and ignored (Whisper attends to the padded frames too).
        """
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        expected_seq_length = self.config.max_source_positions * 2
        if input_features.shape[-1] != expected_seq_length:
            raise ValueError(f"Whisper expects the mel input features to be of length {expected_seq_length}, but "
                             f"found {input_features.shape[-1]}. Make sure to pad the input mel features to "
                             f"{expected_seq_length}.")
        input_features = input_features.astype(self.conv1.weight.dtype)
        inputs_embeds = F.gelu(self.conv1(input_features))
        inputs_embeds = F.gelu(self.conv2(inputs_embeds)).swapaxes(1, 2)
        hidden_states = self.dropout(inputs_embeds + self.embed_positions.weight)

        all_hidden_states = () if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for encoder_layer in self.layers:
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            hidden_states, attn_weights = encoder_layer(hidden_states, None)
            if output_attentions:
                all_attentions += (attn_weights,)
        hidden_states = self.layer_norm(hidden_states)
        if output_hidden_states:
            all_hidden_states += (hidden_states,)
        fields = {"last_hidden_state": hidden_states, "hidden_states": all_hidden_states,
                  "attentions": all_attentions}
        return model_output(BaseModelOutput, fields, return_dict is not False)


class WhisperDecoder(WhisperPreTrainedModel):
    """Token + learned position embeddings, `config.decoder_layers` layers with cross-attention, final norm."""

    main_input_name = "input_ids"

    def __init__(self, config: WhisperConfig):
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.max_target_positions = config.max_target_positions
        self.max_source_positions = config.max_source_positions
        self.embed_scale = math.sqrt(config.d_model) if config.scale_embedding else 1.0
        self.embed_tokens = Embedding(config.vocab_size, config.d_model, self.padding_idx)
        self.embed_positions = Embedding(self.max_target_positions, config.d_model)
        self.layers = nn.CellList([WhisperDecoderLayer(config, layer_idx=i) for i in range(config.decoder_layers)])
        self.layer_norm = LayerNorm(config.d_model)
        self.dropout = Dropout(config.dropout)
        self.post_init()

    def get_input_embeddings(self):
        return self.embed_tokens

    def set_input_embeddings(self, value):
        self.embed_tokens = value

    def construct(self, input_ids=None, attention_mask=None, encoder_hidden_states=None, past_key_values=None,
                  inputs_embeds=None, position_ids=None, use_cache=None, output_attentions=None,
                  output_hidden_states=None, return_dict=None, cache_position=None, **kwargs):
        r"""
        Args:
            input_ids: (B, T) decoder token ids (only the new ones when `past_key_values` holds the rest).
            attention_mask: (B, T_total) 1/0 padding mask of the decoder tokens.
            encoder_hidden_states: (B, S, d_model) encoder output for cross-attention.
            past_key_values: an `EncoderDecoderCache`; created here in PyNative when `use_cache` and none is given.
            position_ids: (B, T) positions of the new tokens (default: cache length + 0..T-1).
        """
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        if past_key_values is None:
            past_key_values = kwargs.get("cache")
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("You cannot specify both decoder_input_ids and decoder_inputs_embeds at the same time")
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
        if position_ids is None:
            positions = self.embed_positions(cache_position)[None]
        else:
            positions = self.embed_positions(position_ids)
        hidden_states = self.dropout(inputs_embeds + positions.astype(dtype))

        if self_cache is not None and self_cache.get_max_cache_shape() is not None:
            kv_length = self_cache.get_max_cache_shape()
        else:
            kv_length = past_seen + seq_len
        causal_mask = create_causal_mask(attention_mask, batch_size, cache_position, kv_length, dtype)

        all_hidden_states = () if output_hidden_states else None
        all_self_attns = () if output_attentions else None
        all_cross_attentions = () if output_attentions and encoder_hidden_states is not None else None
        for decoder_layer in self.layers:
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            hidden_states, self_weights, cross_weights = decoder_layer(
                hidden_states, causal_mask, encoder_hidden_states, None,
                past_key_values if use_cache else None, cache_position)
            if output_attentions:
                all_self_attns += (self_weights,)
                if encoder_hidden_states is not None:
                    all_cross_attentions += (cross_weights,)
        hidden_states = self.layer_norm(hidden_states)
        if output_hidden_states:
            all_hidden_states += (hidden_states,)
        fields = {
            "last_hidden_state": hidden_states,
            "past_key_values": past_key_values if use_cache else None,
            "hidden_states": all_hidden_states,
            "attentions": all_self_attns,
            "cross_attentions": all_cross_attentions,
        }
        return model_output(BaseModelOutputWithPastAndCrossAttentions, fields, return_dict is not False)


def _encoder_fields(encoder_outputs):
    """(last_hidden_state, hidden_states, attentions) of a given encoder output object or HF-style tuple."""
    if isinstance(encoder_outputs, dict):
        return (encoder_outputs.get("last_hidden_state"), encoder_outputs.get("hidden_states"),
                encoder_outputs.get("attentions"))
    return (encoder_outputs[0], encoder_outputs[1] if len(encoder_outputs) > 1 else None,
            encoder_outputs[2] if len(encoder_outputs) > 2 else None)


class WhisperModel(WhisperPreTrainedModel):
    def __init__(self, config: WhisperConfig):
        super().__init__(config)
        self.encoder = WhisperEncoder(config)
        self.decoder = WhisperDecoder(config)
        self.post_init()

    def get_input_embeddings(self):
        return self.decoder.embed_tokens

    def set_input_embeddings(self, value):
        self.decoder.embed_tokens = value

    def get_encoder(self):
        return self.encoder

    def get_decoder(self):
        return self.decoder

    def freeze_encoder(self):
        """Stops gradients to the encoder's parameters (fine-tuning the decoder only)."""
        self.encoder._freeze_parameters()

    def construct(self, input_features=None, attention_mask=None, decoder_input_ids=None,
                  decoder_attention_mask=None, encoder_outputs=None, past_key_values=None,
                  decoder_inputs_embeds=None, decoder_position_ids=None, use_cache=None, output_attentions=None,
                  output_hidden_states=None, return_dict=None, cache_position=None, **kwargs):
        r"""
        Args:
            input_features: (B, num_mel_bins, 3000) log-mel features (`WhisperFeatureExtractor`).
            decoder_input_ids: (B, T) decoder ids, starting with `decoder_start_token_id`.
            encoder_outputs: a previous encoder pass (reused during generation).
            past_key_values: an `EncoderDecoderCache` (HF 5 also calls it `cache=`).
        SpecAugment masking of `input_features` (HF's `apply_spec_augment`, training only) is not implemented.
        """
        if past_key_values is None:
            past_key_values = kwargs.get("cache")
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        if encoder_outputs is None:
            encoder_outputs = self.encoder(input_features, output_attentions=output_attentions,
                                           output_hidden_states=output_hidden_states, return_dict=True)
        enc_last, enc_hidden, enc_attn = _encoder_fields(encoder_outputs)
        decoder_outputs = self.decoder(
            input_ids=decoder_input_ids, attention_mask=decoder_attention_mask, encoder_hidden_states=enc_last,
            past_key_values=past_key_values, inputs_embeds=decoder_inputs_embeds, position_ids=decoder_position_ids,
            use_cache=use_cache, output_attentions=output_attentions, output_hidden_states=output_hidden_states,
            return_dict=True, cache_position=cache_position,
        )
        fields = {
            "last_hidden_state": decoder_outputs["last_hidden_state"],
            "past_key_values": decoder_outputs.get("past_key_values"),
            "decoder_hidden_states": decoder_outputs.get("hidden_states"),
            "decoder_attentions": decoder_outputs.get("attentions"),
            "cross_attentions": decoder_outputs.get("cross_attentions"),
            "encoder_last_hidden_state": enc_last,
            "encoder_hidden_states": enc_hidden,
            "encoder_attentions": enc_attn,
        }
        return model_output(Seq2SeqModelOutput, fields, return_dict is not False)


class WhisperForConditionalGeneration(WhisperPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"proj_out.weight": "model.decoder.embed_tokens.weight"}
    # decode steps run under mindspore.jit with an EncoderDecoderStaticCache (compiled greedy / beam decoding)
    _supports_static_cache = True

    def __init__(self, config: WhisperConfig):
        super().__init__(config)
        self.model = WhisperModel(config)
        self.proj_out = Linear(config.d_model, config.vocab_size, bias=False)
        self.max_target_positions = config.max_target_positions
        self.post_init()

    def get_output_embeddings(self):
        return self.proj_out

    def set_output_embeddings(self, new_embeddings):
        self.proj_out = new_embeddings

    def get_input_embeddings(self):
        return self.model.get_input_embeddings()

    def get_encoder(self):
        return self.model.encoder

    def get_decoder(self):
        return self.model.decoder

    def freeze_encoder(self):
        self.model.encoder._freeze_parameters()

    def construct(self, input_features=None, attention_mask=None, decoder_input_ids=None,
                  decoder_attention_mask=None, encoder_outputs=None, past_key_values=None,
                  decoder_inputs_embeds=None, decoder_position_ids=None, labels=None, use_cache=None,
                  output_attentions=None, output_hidden_states=None, return_dict=None, cache_position=None,
                  **kwargs):
        r"""
        labels: (B, T) target ids; -100 is ignored by the loss. Without decoder inputs, `decoder_input_ids` is
            `labels` shifted right behind `decoder_start_token_id`.
        Other arguments as in `WhisperModel`.
        """
        if labels is not None:
            if labels.shape[1] > self.max_target_positions:
                raise ValueError(f"Labels' sequence length {labels.shape[1]} cannot exceed the maximum allowed length "
                                 f"of {self.max_target_positions} tokens.")
            if decoder_input_ids is None and decoder_inputs_embeds is None:
                decoder_input_ids = shift_tokens_right(labels, self.config.pad_token_id,
                                                       self.config.decoder_start_token_id)
        outputs = self.model(
            input_features, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=decoder_attention_mask, encoder_outputs=encoder_outputs,
            past_key_values=past_key_values if past_key_values is not None else kwargs.get("cache"),
            decoder_inputs_embeds=decoder_inputs_embeds, decoder_position_ids=decoder_position_ids,
            use_cache=use_cache, output_attentions=output_attentions, output_hidden_states=output_hidden_states,
            return_dict=True, cache_position=cache_position,
        )
        lm_logits = self.proj_out(outputs["last_hidden_state"])
        loss = None
        if labels is not None:
            loss = F.cross_entropy(lm_logits.reshape(-1, self.config.vocab_size).astype(ms.float32),
                                   labels.reshape(-1))
        fields = {
            "loss": loss,
            "logits": lm_logits,
            "past_key_values": outputs.get("past_key_values"),
            "decoder_hidden_states": outputs.get("decoder_hidden_states"),
            "decoder_attentions": outputs.get("decoder_attentions"),
            "cross_attentions": outputs.get("cross_attentions"),
            "encoder_last_hidden_state": outputs.get("encoder_last_hidden_state"),
            "encoder_hidden_states": outputs.get("encoder_hidden_states"),
            "encoder_attentions": outputs.get("encoder_attentions"),
        }
        return model_output(Seq2SeqLMOutput, fields, return_dict is not False)

    def prepare_decoder_input_ids_from_labels(self, labels):
        return shift_tokens_right(labels, self.config.pad_token_id, self.config.decoder_start_token_id)

    # ------------------------------------------------------------------------------------------------------------
    # short-form generation (HF's WhisperGenerationMixin for inputs of at most 30 s)
    # ------------------------------------------------------------------------------------------------------------

    @runtime.serialized
    def generate(self, input_features=None, generation_config=None, logits_processor=None, stopping_criteria=None,
                 prefix_allowed_tokens_fn=None, synced_gpus=None, return_timestamps=None, task=None, language=None,
                 is_multilingual=None, prompt_ids=None, return_dict_in_generate=None, attention_mask=None,
                 return_token_timestamps=None, return_segments=False, time_precision=0.02,
                 time_precision_features=0.01, **kwargs):
        """Transcribes (or translates) audio as HF's Whisper `generate` does: one 30 s window (short form), or
        longer features window after window (sequential long form, which predicts timestamps to know where the
        next window starts).

        Args:
            input_features: (B, num_mel_bins, frames) log-mel features; frames > 3000 is long form.
            attention_mask: (B, frames) 1 on real frames (the feature extractor's `return_attention_mask=True`):
                bounds each row's long-form decoding (needed for batches) and the word-timestamp alignment.
            task: "transcribe" or "translate" (multilingual checkpoints).
            language: a language token ("<|fr|>"), code ("fr") or name ("french"); detected when a multilingual
                checkpoint gets none.
            return_timestamps: predict segment timestamp tokens (<|0.00|> ...); always on in long form.
            return_token_timestamps: also return each token's time in seconds, from the cross-attention of the
                generation config's `alignment_heads` aligned to the audio by dynamic time warping (HF's method).
            return_segments: also return the segments ({"start", "end", "tokens", "result"} per row).
            kwargs: generation parameters (`max_new_tokens=`, `num_beams=`, ...) or model inputs
                (`encoder_outputs=`).

        Returns:
            (B, L) int64 tensor of the generated ids after the decoder prompt (<|startoftranscript|>, language,
            task, <|notimestamps|>), without the final <|endoftext|> and right-padded with `pad_token_id`, like
            HF 5 (with timestamps: every window's tokens, concatenated); a dict {"sequences", "token_timestamps",
            "segments"} when token timestamps or segments are asked for; a `GenerateEncoderDecoderOutput` (with
            the prompt) for `return_dict_in_generate=True` without timestamps.
        """
        for name in ("temperature", "compression_ratio_threshold", "logprob_threshold", "no_speech_threshold",
                     "condition_on_prev_tokens", "prompt_condition_type"):
            if isinstance(kwargs.get(name), (list, tuple)) or (name != "temperature" and kwargs.get(name)):
                raise NotImplementedError(f"Whisper's `{name}` (temperature fallback / conditioning on previous "
                                          "windows) is not supported by mindone.transformers yet")
        if prompt_ids is not None:
            raise NotImplementedError("Whisper `prompt_ids` are not supported by mindone.transformers yet")
        if "decoder_input_ids" in kwargs:
            raise ValueError("Passing `decoder_input_ids` is deprecated. Consider passing `prompt_ids` instead.")
        gc = copy.deepcopy(generation_config if generation_config is not None else self.generation_config)
        gen_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if hasattr(gc, k) and k not in ("encoder_outputs",)}
        gc.update(**gen_kwargs)
        if task is not None:
            gc.task = task
        if language is not None:
            gc.language = language
        if is_multilingual is not None:
            gc.is_multilingual = is_multilingual
        segment_frames = 2 * self.config.max_source_positions
        frames = input_features.shape[-1] if input_features is not None else segment_frames
        if return_timestamps is None:
            return_timestamps = getattr(gc, "return_timestamps", None)
        if frames > segment_frames:
            if return_timestamps is False:
                raise ValueError(f"You have passed more than {segment_frames} mel input features (> 30 seconds) "
                                 "which automatically enables long-form generation which requires the model to "
                                 "predict timestamp tokens. Please either pass `return_timestamps=True` or make "
                                 f"sure to pass no more than {segment_frames} mel input features.")
            logger.info("Setting `return_timestamps=True` for long-form generation.")
            return_timestamps = True
        if return_timestamps and not hasattr(gc, "no_timestamps_token_id"):
            raise ValueError("You are trying to return timestamps, but the generation config has no "
                             "`no_timestamps_token_id`.")
        gc.return_timestamps = bool(return_timestamps)
        if return_timestamps or return_token_timestamps or return_segments:
            if input_features is None:
                raise ValueError("Whisper timestamps and segments need `input_features`")
            return _generate_segments(self, _as_numpy(input_features), gc, attention_mask, logits_processor,
                                      stopping_criteria, prefix_allowed_tokens_fn, return_token_timestamps,
                                      return_segments, return_dict_in_generate, time_precision,
                                      time_precision_features, kwargs)
        if input_features is not None:
            batch_size = input_features.shape[0]
            if frames < segment_frames:  # HF pads a shorter window with zeros
                input_features = np.pad(_as_numpy(input_features), ((0, 0), (0, 0), (0, segment_frames - frames)))
        else:
            batch_size = _encoder_fields(kwargs["encoder_outputs"])[0].shape[0]
        if kwargs.get("encoder_outputs") is None:
            kwargs["encoder_outputs"] = self.get_encoder()(Tensor(_as_numpy(input_features)), return_dict=True)
        init_tokens = self._retrieve_init_tokens(gc, batch_size, kwargs["encoder_outputs"])
        if gc.num_return_sequences is not None and gc.num_return_sequences > 1:
            # HF decodes each input num_return_sequences times as separate rows (identical unless sampling)
            repeats, gc.num_return_sequences = gc.num_return_sequences, 1
            init_tokens = np.repeat(init_tokens, repeats, 0)
            enc_last = _encoder_fields(kwargs["encoder_outputs"])[0]
            kwargs["encoder_outputs"] = BaseModelOutput(
                last_hidden_state=Tensor(np.repeat(enc_last.asnumpy(), repeats, 0)))

        # HF: without max_new_tokens, max_length grows by the prompt, capped at max_target_positions
        num_initial = min(self.config.max_target_positions // 2 - 1, init_tokens.shape[1])
        if gc.max_new_tokens is not None:
            if gc.max_new_tokens + init_tokens.shape[1] > self.config.max_target_positions:
                raise ValueError(f"The length of `decoder_input_ids` {init_tokens.shape[1]} plus `max_new_tokens` "
                                 f"{gc.max_new_tokens} exceeds `max_target_positions` "
                                 f"{self.config.max_target_positions}.")
        elif gc.max_length is not None:
            gc.max_length = min(gc.max_length + num_initial, self.config.max_target_positions)

        outputs = super().generate(
            None, generation_config=gc, logits_processor=logits_processor, stopping_criteria=stopping_criteria,
            prefix_allowed_tokens_fn=prefix_allowed_tokens_fn, decoder_input_ids=init_tokens,
            return_dict_in_generate=return_dict_in_generate, **kwargs)
        if return_dict_in_generate or gc.return_dict_in_generate:
            return outputs
        return Tensor(self._strip_prompt_and_eos(_as_numpy(outputs), init_tokens.shape[1], gc))

    @staticmethod
    def _strip_prompt_and_eos(sequences, prompt_length, gc):
        """Generated ids after the prompt, trailing padding and one final EOS removed, right-padded again."""
        pad = gc.pad_token_id if gc.pad_token_id is not None else gc.eos_token_id
        eos = gc.eos_token_id
        eos = eos[0] if isinstance(eos, (list, tuple)) else eos
        rows = []
        for row in sequences[:, prompt_length:]:
            row = list(row)
            if row and row[-1] == pad:
                paddings = sum(1 for t in row if t == pad)
                if pad == eos:
                    paddings -= 1
                if paddings:
                    row = row[:-paddings]
            if row and row[-1] == eos:
                row = row[:-1]
            rows.append(row)
        width = max(len(r) for r in rows)
        return np.array([r + [pad] * (width - len(r)) for r in rows], np.int64).reshape(len(rows), width)

    def _retrieve_init_tokens(self, gc, batch_size, encoder_outputs):
        """(B, P) decoder prompt: <|startoftranscript|> [language] [task] [<|notimestamps|>] from the generation
        config (HF's rules, including the deprecated `forced_decoder_ids`)."""
        init = [gc.decoder_start_token_id]
        task = getattr(gc, "task", None)
        language = getattr(gc, "language", None)
        if task is None and language is None:
            forced = getattr(gc, "forced_decoder_ids", None) or getattr(self.config, "forced_decoder_ids", None)
            if forced and forced[0][0] == 1:
                position = 1
                while forced and forced[0][0] == position:
                    init.append(forced[0][1])
                    forced = forced[1:]
                    position += 1
                if forced:
                    raise ValueError(f"You are using token ids in `forced_decoder_ids` that do not seem to correctly "
                                     f"follow the prompt pattern of Whisper: {forced}.")
        lang_undefined = len(init) <= 1 or init[1] is None
        rows = [list(init) for _ in range(batch_size)]
        lang_ids = None
        if language is not None:
            languages = list(language) if isinstance(language, (list, tuple)) else [language] * batch_size
            if len(languages) != batch_size:
                raise ValueError(f"When passing a list of languages, the length of the list must match the batch "
                                 f"size. Expected length of {batch_size}, but got {len(languages)} languages.")
            lang_ids = [_language_to_id(gc, lang) for lang in languages]
        elif hasattr(gc, "lang_to_id") and lang_undefined:
            lang_ids = self.detect_language(encoder_outputs=encoder_outputs, generation_config=gc)
        if lang_ids is not None:
            for row, lang_id in zip(rows, lang_ids):
                if len(row) > 1:
                    row[1] = int(lang_id)
                else:
                    row.append(int(lang_id))
        for i, row in enumerate(rows):
            if task is not None:
                if task not in ("transcribe", "translate"):
                    raise ValueError(f"The `{task}` task is not supported. The task should be one of "
                                     "['translate', 'transcribe']")
                task_ids = set(gc.task_to_id.values())
                task_id = gc.task_to_id[task]
                if any(t in task_ids for t in row):
                    row = [task_id if t in task_ids else t for t in row]
                else:
                    row.append(task_id)
            elif language is not None and hasattr(gc, "task_to_id"):
                if not any(t in row for t in gc.task_to_id.values()):
                    row.append(gc.task_to_id["transcribe"])
            if hasattr(gc, "no_timestamps_token_id"):
                if not getattr(gc, "return_timestamps", False) and row[-1] != gc.no_timestamps_token_id:
                    row.append(gc.no_timestamps_token_id)
                elif getattr(gc, "return_timestamps", False) and row[-1] == gc.no_timestamps_token_id:
                    row = row[:-1]  # timestamps asked for: a forced <|notimestamps|> is dropped (as HF)
            rows[i] = [t for t in row if t is not None]
        return np.asarray(rows, np.int64)

    def detect_language(self, input_features=None, encoder_outputs=None, generation_config=None):
        """(B,) ids of the most likely language token after <|startoftranscript|>."""
        gc = generation_config if generation_config is not None else self.generation_config
        if encoder_outputs is None:
            encoder_outputs = self.get_encoder()(Tensor(_as_numpy(input_features)), return_dict=True)
        enc_last = _encoder_fields(encoder_outputs)[0]
        batch = enc_last.shape[0]
        start = Tensor(np.full((batch, 1), gc.decoder_start_token_id, np.int64))
        logits = self(encoder_outputs=encoder_outputs, decoder_input_ids=start, use_cache=False,
                      return_dict=True)["logits"][:, -1].astype(ms.float32).asnumpy()
        lang_ids = np.asarray(sorted(gc.lang_to_id.values()), np.int64)
        allowed = np.full(logits.shape[-1], -np.inf, np.float32)
        allowed[lang_ids] = 0
        return (logits + allowed).argmax(-1)


# ----------------------------------------------------------------------------------------------------------------
# timestamps and long form (HF's WhisperGenerationMixin segment loop; bookkeeping on the host in numpy)
# ----------------------------------------------------------------------------------------------------------------

_INPUT_STRIDE = 2  # encoder frames per decoder timestamp step: conv1 stride 1 x conv2 stride 2


def _generate_segments(model, features, gc, attention_mask, logits_processor, stopping_criteria,
                       prefix_allowed_tokens_fn, return_token_timestamps, return_segments, return_dict_in_generate,
                       time_precision, time_precision_features, kwargs):
    """Decodes 30 s windows in turn (one window for short form): each window's output is split into segments at
    its timestamp tokens, and the next window starts at the last complete segment's end (HF's algorithm)."""
    segment_frames = _INPUT_STRIDE * model.config.max_source_positions
    batch_size, total_frames = features.shape[0], features.shape[-1]
    is_shortform = total_frames <= segment_frames
    mask = _as_numpy(attention_mask) if attention_mask is not None else None
    if return_token_timestamps:
        if not hasattr(gc, "alignment_heads"):
            raise ValueError("Model generation config has no `alignment_heads`, token-level timestamps not "
                             "available.")
        gc.return_dict_in_generate = True
        gc.output_attentions = True
        gc.output_scores = True
        if mask is None:
            logger.warning("When setting `return_token_timestamps` to `True`, make sure to pass an `attention_mask` "
                           "to get precise token-level timestamps.")
    num_frames = mask.sum(-1).astype(np.int64) if (return_token_timestamps and mask is not None) else None
    if batch_size > 1 and not is_shortform:
        if mask is None:
            raise ValueError("When doing batched long-form audio transcription, make sure to pass an "
                             "`attention_mask`.")
        max_frames = mask.sum(-1).astype(np.int64)
    else:
        max_frames = np.full((batch_size,), total_frames, np.int64)
    seek = np.zeros((batch_size,), np.int64)
    timestamp_begin = gc.no_timestamps_token_id + 1 if hasattr(gc, "no_timestamps_token_id") \
        else model.config.vocab_size + 1

    first_window = _window(features, seek, np.minimum(max_frames, segment_frames), segment_frames,
                           list(range(batch_size)))
    needs_encoder = hasattr(gc, "lang_to_id") and getattr(gc, "language", None) is None
    encoder_outputs = model.get_encoder()(Tensor(first_window), return_dict=True) if needs_encoder else None
    init_tokens = model._retrieve_init_tokens(gc, batch_size, encoder_outputs)
    begin_index = init_tokens.shape[1]
    processors = list(logits_processor or [])
    if gc.return_timestamps:
        processors.append(WhisperTimeStampLogitsProcessor(gc, begin_index=begin_index))
    segments = [[] for _ in range(batch_size)]
    while (seek < max_frames).any():
        active = [i for i in range(batch_size) if seek[i] < max_frames[i]]
        time_offset = seek.astype(np.float64) * time_precision / _INPUT_STRIDE
        window_frames = np.minimum(max_frames - seek, segment_frames)
        decoder_input_ids = init_tokens[active]
        _set_max_length(model.config, decoder_input_ids, gc)
        window = Tensor(_window(features, seek, window_frames, segment_frames, active))
        outputs = GenerationMixin.generate(
            model, None, generation_config=gc, logits_processor=processors, stopping_criteria=stopping_criteria,
            prefix_allowed_tokens_fn=prefix_allowed_tokens_fn, decoder_input_ids=decoder_input_ids,
            encoder_outputs=model.get_encoder()(window, return_dict=True), **kwargs)
        sequences = _as_numpy(outputs["sequences"] if isinstance(outputs, dict) else outputs)
        token_timestamps = None
        if return_token_timestamps:
            frames = None
            if num_frames is not None:
                frames = (num_frames - seek)[active]
            token_timestamps = _extract_token_timestamps(model.config, outputs, gc.alignment_heads, time_precision,
                                                         frames, begin_index)
        for row, i in enumerate(active):
            tokens = _strip_padding(sequences[row, begin_index:], gc)
            result = {"sequences": sequences[row]}
            if token_timestamps is not None:
                result["token_timestamps"] = token_timestamps[row]
            new_segments, offset = _split_segments(tokens, result, time_offset[i], timestamp_begin, window_frames[i],
                                                   time_precision, time_precision_features, begin_index)
            seek[i] += offset
            segments[i] += new_segments

    rows = [np.concatenate([seg["tokens"] for seg in row]) if row else np.zeros((0,), np.int64)
            for row in segments]
    width = max(len(r) for r in rows)
    pad = gc.pad_token_id
    sequences = np.stack([np.concatenate([r, np.full(width - len(r), pad, np.int64)]) for r in rows])
    if return_dict_in_generate and not return_token_timestamps:
        logger.warning("You have passed `return_dict_in_generate=True` and `return_timestamps=True`, this "
                       "automatically sets `return_segments=True` to access the results of the underlying calls to "
                       "GenerationMixin's generate in the returned `segments`.")
        return_segments = True
    if not return_segments and not return_token_timestamps:
        return Tensor(sequences)
    out = {"sequences": Tensor(sequences)}
    if return_token_timestamps:
        stamps = []
        for row in segments:
            # as HF: the windows' own times (without the window's offset; the segments carry the offset)
            t = np.concatenate([seg["result"]["token_timestamps"][seg["idxs"][0]:seg["idxs"][1]] for seg in row]) \
                if row else np.zeros((0,), np.float32)
            fill = t[-1] if len(t) else 0.0
            stamps.append(np.concatenate([t, np.full(width - len(t), fill, t.dtype)]))
        out["token_timestamps"] = Tensor(np.stack(stamps).astype(np.float32))
    if return_segments:
        out["segments"] = segments
    return out


def _window(features, seek, window_frames, segment_frames, rows):
    """(len(rows), mel, segment_frames) features from each row's seek position, zero-padded as HF pads them."""
    windows = []
    for i in rows:
        part = features[i:i + 1, :, seek[i]:seek[i] + window_frames[i]]
        if part.shape[-1] < segment_frames:
            part = np.pad(part, ((0, 0), (0, 0), (0, segment_frames - part.shape[-1])))
        windows.append(part)
    return np.ascontiguousarray(np.concatenate(windows, 0).astype(np.float32))


def _set_max_length(config, decoder_input_ids, gc):
    """HF's per-window length rule: max_length grows by the prompt (capped at max_target_positions), or
    max_new_tokens shrinks to fit."""
    prompt = decoder_input_ids.shape[-1]
    if (gc.max_new_tokens or 0) + prompt > config.max_target_positions:
        raise ValueError(f"The length of `decoder_input_ids` {prompt} plus `max_new_tokens` {gc.max_new_tokens} "
                         f"exceeds `max_target_positions` {config.max_target_positions}.")
    num_initial = min(config.max_target_positions // 2 - 1, prompt)
    if gc.max_length is not None and gc.max_new_tokens is None:
        gc.max_length = min(gc.max_length + num_initial, config.max_target_positions)


def _strip_padding(tokens, gc):
    """A window's generated ids without the right padding and the final EOS."""
    tokens = np.asarray(tokens, np.int64)
    pad, eos = gc.pad_token_id, gc.eos_token_id
    eos = eos[0] if isinstance(eos, (list, tuple)) else eos
    if len(tokens) and tokens[-1] == pad:
        paddings = int((tokens == pad).sum()) - (1 if pad == eos else 0)
        if paddings:
            tokens = tokens[:-paddings]
    if len(tokens) and tokens[-1] == eos:
        tokens = tokens[:-1]
    return tokens


def _split_segments(tokens, result, time_offset, timestamp_begin, window_frames, time_precision,
                    time_precision_features, prompt_length):
    """(segments, frames to advance): the window's ids split after each pair of consecutive timestamp tokens, with
    start/end times in seconds (HF's `_retrieve_segment`)."""
    is_timestamp = [t >= timestamp_begin for t in tokens.tolist()]
    single_timestamp_ending = is_timestamp[-2:] == [False, True]
    cuts = [i + 1 for i in range(len(is_timestamp) - 1) if is_timestamp[i] and is_timestamp[i + 1]]
    stamps = result.get("token_timestamps")

    def segment(start, end, lo, hi):
        seg = {"start": time_offset + start * time_precision, "end": time_offset + end * time_precision,
               "tokens": tokens[lo:hi], "idxs": (prompt_length + lo, prompt_length + hi), "result": result}
        if stamps is not None:
            seg["token_timestamps"] = stamps[prompt_length + lo:prompt_length + hi] + time_offset
        return seg

    if cuts:
        if single_timestamp_ending:
            cuts.append(len(tokens))
        else:
            cuts[-1] += 1  # the last timestamp stays in the last segment: it was not a single ending
        segments, last = [], 0
        for n, cut in enumerate(cuts):
            piece = tokens[last:cut]
            end_index = -1 if n < len(cuts) - 1 or single_timestamp_ending else -2
            segments.append(segment(float(piece[0] - timestamp_begin), float(piece[end_index] - timestamp_begin),
                                    last, cut))
            last = cut
        if single_timestamp_ending:
            offset = window_frames  # nothing is said after the last timestamp
        else:
            # the words after the last complete segment are decoded again from its end, in the next window
            offset = int(tokens[last - 2] - timestamp_begin) * _INPUT_STRIDE
        return segments, offset
    positions = [i for i, flag in enumerate(is_timestamp) if flag]
    end = int(window_frames * time_precision_features / time_precision)
    if positions and tokens[positions[-1]] != timestamp_begin:
        end = float(tokens[positions[-1]] - timestamp_begin)
    return [segment(0.0, end, 0, len(tokens))], window_frames


def _median_filter(x, width):
    """Median over a sliding window of `width` (odd) along the last axis, edges reflected (HF's)."""
    if width <= 0 or width % 2 != 1:
        raise ValueError("`filter_width` should be an odd number")
    half = width // 2
    if x.shape[-1] <= half:
        return x
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(half, half)], mode="reflect")
    windows = np.lib.stride_tricks.sliding_window_view(padded, width, axis=-1)
    return np.sort(windows, -1)[..., half]


def _dynamic_time_warping(cost_matrix):
    """(text indices, time indices) of the cheapest monotonic path through (tokens, frames) costs; ties go to the
    diagonal / vertical / horizontal move in HF's order."""
    rows, cols = cost_matrix.shape
    cost = np.full((rows + 1, cols + 1), np.inf, np.float32)
    trace = -np.ones((rows + 1, cols + 1), np.float32)
    cost[0, 0] = 0
    for j in range(1, cols + 1):
        for i in range(1, rows + 1):
            c0, c1, c2 = cost[i - 1, j - 1], cost[i - 1, j], cost[i, j - 1]
            if c0 < c1 and c0 < c2:
                c, t = c0, 0
            elif c1 < c0 and c1 < c2:
                c, t = c1, 1
            else:
                c, t = c2, 2
            cost[i, j] = cost_matrix[i - 1, j - 1] + c
            trace[i, j] = t
    i, j = rows, cols
    trace[0, :] = 2
    trace[:, 0] = 1
    text, time = [], []
    while i > 0 or j > 0:
        text.append(i - 1)
        time.append(j - 1)
        if trace[i, j] == 0:
            i, j = i - 1, j - 1
        elif trace[i, j] == 1:
            i -= 1
        else:
            j -= 1
    return np.array(text[::-1]), np.array(time[::-1])


def _extract_token_timestamps(config, outputs, alignment_heads, time_precision, num_frames, num_input_ids):
    """(B, L) time in seconds of each token of `outputs.sequences`: the alignment heads' cross-attention
    (standardised over tokens, median-filtered over frames, averaged over heads) aligned to the frames by DTW;
    prompt tokens get 0 and the last token repeats its predecessor's time (HF's method)."""
    steps = outputs["cross_attentions"]
    layers = [np.concatenate([_as_numpy(step[l]).astype(np.float32) for step in steps], 2)
              for l in range(config.decoder_layers)]
    weights = np.stack([layers[l][:, h] for l, h in alignment_heads], 1)  # (B, heads, tokens, frames)
    weight_length = None
    beam_indices = outputs.get("beam_indices") if hasattr(outputs, "get") else None
    if beam_indices is not None:
        beam_indices = _as_numpy(beam_indices)
        weight_length = int((beam_indices != -1).sum(-1).max())
        beam_indices = beam_indices[:, :weight_length]
        if num_input_ids > 1:
            weight_length += num_input_ids - 1
            beam_indices = np.concatenate([np.repeat(beam_indices[:, :1], num_input_ids - 1, 1), beam_indices], 1)
        beam_indices = np.where(beam_indices == -1, 0, beam_indices)
        weights = np.stack([weights[beam_indices[:, i], :, i, :] for i in range(beam_indices.shape[1])], 2)
    input_length = weight_length or layers[0].shape[2]
    batch = _as_numpy(outputs["sequences"]).shape[0]
    timestamps = np.zeros((batch, input_length + 1), np.float32)
    if num_frames is not None:
        num_frames = np.asarray(num_frames).reshape(-1)
        num_frames = np.repeat(num_frames, batch // len(num_frames))
    weights = weights[:, :, num_input_ids:, :]
    if weights.shape[2] == 0:
        return timestamps
    for b in range(batch):
        matrix = weights[b] if num_frames is None else weights[b, ..., :num_frames[b] // 2]
        std = matrix.std(-2, keepdims=True)
        matrix = (matrix - matrix.mean(-2, keepdims=True)) / std
        matrix = _median_filter(matrix, config.median_filter_width).mean(0)
        text_indices, time_indices = _dynamic_time_warping(-matrix.astype(np.float64))
        jumps = np.pad(np.diff(text_indices), (1, 0), constant_values=1).astype(bool)
        jump_times = time_indices[jumps] * time_precision
        timestamps[b] = np.concatenate([np.zeros(num_input_ids), jump_times, jump_times[-1:]])
    return timestamps


def _language_to_id(gc, language):
    from transformers.models.whisper.tokenization_whisper import TO_LANGUAGE_CODE

    language = language.lower()
    if language in gc.lang_to_id:
        token = language
    elif language in TO_LANGUAGE_CODE:
        token = f"<|{TO_LANGUAGE_CODE[language]}|>"
    elif language in TO_LANGUAGE_CODE.values():
        token = f"<|{language}|>"
    else:
        raise ValueError(f"Unsupported language: {language}.")
    if token not in gc.lang_to_id:
        raise ValueError(f"{token} is not supported by this specific model as it is not in the "
                         "`generation_config.lang_to_id`. (You should just add it to the generation config)")
    return gc.lang_to_id[token]


__all__ = ["WhisperForConditionalGeneration", "WhisperModel", "WhisperPreTrainedModel"]
