"""Phi-3 on MindSpore: HF's `modeling_phi3.py` structure, names and outputs; device concerns live in `backend`.

Phi-3 is Llama with fused projections (`qkv_proj` = [q; k; v], `gate_up_proj` = [gate; up]), RoPE on the first
`partial_rotary_factor` of each head, an optional sliding window, and LongRoPE (short factors up to
`original_max_position_embeddings`, long factors beyond).
"""

import mindspore as ms
from mindspore import Tensor, nn, ops
from transformers import Phi3Config

from ...backend import functional as F
from ...backend import runtime
from ...backend.layers import Dropout, Embedding, Linear, new_parameter
from ...cache_utils import DynamicCache
from ...generation import GenerationMixin
from ...loss_utils import causal_lm_loss
from ...masking_utils import create_causal_mask
from ...modeling_layers import (
    GenericForSequenceClassification,
    GenericForTokenClassification,
    GradientCheckpointingLayer,
)
from ...modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast, model_output
from ...modeling_rope_utils import compute_rope_parameters
from ...modeling_utils import PreTrainedModel, init_parameter


class Phi3MLP(nn.Cell):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.intermediate_size = config.intermediate_size
        self.gate_up_proj = Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.down_proj = Linear(config.intermediate_size, config.hidden_size, bias=False)
        self.activation_fn = F.get_activation(config.hidden_act)

    def construct(self, hidden_states):
        gate_up = self.gate_up_proj(hidden_states)
        gate = gate_up[..., :self.intermediate_size]
        up = gate_up[..., self.intermediate_size:]
        return self.down_proj(up * self.activation_fn(gate))


class Phi3RotaryEmbedding(nn.Cell):
    """cos/sin tables for the given positions; the frequencies are a constant, not a checkpoint weight."""

    def __init__(self, config: Phi3Config):
        super().__init__()
        self.config = config
        self.rope_type = config.rope_parameters.get("rope_type", "default")
        inv_freq, self.attention_scaling = compute_rope_parameters(config)
        self.inv_freq = Tensor(inv_freq)
        if self.rope_type == "longrope":
            params = config.rope_parameters
            self.original_max_position_embeddings = int(
                params.get("original_max_position_embeddings") or config.original_max_position_embeddings)
            self.long_inv_freq = Tensor(compute_rope_parameters(
                config, seq_len=self.original_max_position_embeddings + 1)[0])

    def construct(self, x, position_ids):
        inv_freq = self.inv_freq
        if self.rope_type == "longrope":
            # the long factors once the longest position passes the original context (HF's per-call switch);
            # a tensor select, so it also compiles
            seq_len = position_ids.max() + 1
            inv_freq = ops.where(seq_len > self.original_max_position_embeddings, self.long_inv_freq, self.inv_freq)
        freqs = position_ids[..., None].astype(ms.float32) * inv_freq
        emb = F.cat([freqs, freqs], -1)
        cos = emb.cos() * self.attention_scaling
        sin = emb.sin() * self.attention_scaling
        return cos.astype(x.dtype), sin.astype(x.dtype)


def rotate_half(x):
    half = x.shape[-1] // 2
    return F.cat([-x[..., half:], x[..., :half]], -1)


def apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1):
    """RoPE on the first cos.shape[-1] features of each head; the rest (partial_rotary_factor < 1) pass through."""
    cos = cos.unsqueeze(unsqueeze_dim)
    sin = sin.unsqueeze(unsqueeze_dim)
    rotary_dim = cos.shape[-1]
    if rotary_dim == q.shape[-1]:
        return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
    q_rot, q_pass = q[..., :rotary_dim], q[..., rotary_dim:]
    k_rot, k_pass = k[..., :rotary_dim], k[..., rotary_dim:]
    q_embed = F.cat([q_rot * cos + rotate_half(q_rot) * sin, q_pass], -1)
    k_embed = F.cat([k_rot * cos + rotate_half(k_rot) * sin, k_pass], -1)
    return q_embed, k_embed


class Phi3Attention(nn.Cell):
    def __init__(self, config: Phi3Config, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.num_heads = config.num_attention_heads
        self.num_key_value_heads = config.num_key_value_heads
        self.num_key_value_groups = config.num_attention_heads // config.num_key_value_heads
        self.scaling = self.head_dim ** -0.5
        self.attention_dropout = config.attention_dropout
        op_size = self.num_heads * self.head_dim + 2 * (self.num_key_value_heads * self.head_dim)
        self.o_proj = Linear(self.num_heads * self.head_dim, config.hidden_size, bias=False)
        self.qkv_proj = Linear(config.hidden_size, op_size, bias=False)

    def construct(self, hidden_states, position_embeddings, attention_mask=None, past_key_values=None,
                  cache_position=None):
        batch, seq_len = hidden_states.shape[:2]
        qkv = self.qkv_proj(hidden_states)
        query_pos = self.num_heads * self.head_dim
        kv_size = self.num_key_value_heads * self.head_dim
        # (B, S, H*D) -> (B, H, S, D); swapaxes because Tensor.transpose(1, 2) fails inside jit on CPU
        query_states = qkv[..., :query_pos].reshape(batch, seq_len, -1, self.head_dim).swapaxes(1, 2)
        key_states = qkv[..., query_pos:query_pos + kv_size].reshape(batch, seq_len, -1, self.head_dim).swapaxes(1, 2)
        value_states = qkv[..., query_pos + kv_size:].reshape(batch, seq_len, -1, self.head_dim).swapaxes(1, 2)

        cos, sin = position_embeddings
        query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin)

        if past_key_values is not None:
            key_states, value_states = past_key_values.update(
                key_states, value_states, self.layer_idx, {"cache_position": cache_position}
            )

        attn_output, attn_weights = F.attention(
            query_states,
            key_states,  # F.attention groups query heads over the kv heads (GQA)
            value_states,
            attn_mask=attention_mask,
            scale=self.scaling,
            dropout_p=self.attention_dropout if self.training else 0.0,
            training=self.training,
        )
        attn_output = attn_output.swapaxes(1, 2).reshape(batch, seq_len, -1)
        return self.o_proj(attn_output), attn_weights


class Phi3RMSNorm(nn.Cell):
    def __init__(self, hidden_size, eps=1e-6):
        super().__init__()
        self.weight = new_parameter((hidden_size,), "ones")
        self.variance_epsilon = eps

    def construct(self, hidden_states):
        return F.rms_norm(hidden_states, self.weight, self.variance_epsilon)


class Phi3DecoderLayer(GradientCheckpointingLayer):
    def __init__(self, config: Phi3Config, layer_idx: int):
        super().__init__()
        self.hidden_size = config.hidden_size
        self.self_attn = Phi3Attention(config=config, layer_idx=layer_idx)
        self.mlp = Phi3MLP(config)
        self.input_layernorm = Phi3RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = Phi3RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.resid_attn_dropout = Dropout(config.resid_pdrop)
        self.resid_mlp_dropout = Dropout(config.resid_pdrop)

    def construct(self, hidden_states, position_embeddings, attention_mask=None, past_key_values=None,
                  cache_position=None):
        residual = hidden_states
        hidden_states = self.input_layernorm(hidden_states)
        hidden_states, attn_weights = self.self_attn(
            hidden_states, position_embeddings, attention_mask, past_key_values, cache_position
        )
        hidden_states = residual + self.resid_attn_dropout(hidden_states)

        residual = hidden_states
        hidden_states = self.mlp(self.post_attention_layernorm(hidden_states))
        hidden_states = residual + self.resid_mlp_dropout(hidden_states)
        return hidden_states, attn_weights


class Phi3PreTrainedModel(PreTrainedModel):
    config_class = Phi3Config
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["Phi3DecoderLayer"]

    def _init_weights(self, cell):
        super()._init_weights(cell)
        if isinstance(cell, Phi3RMSNorm):
            init_parameter(cell.weight, "ones")


class Phi3Model(Phi3PreTrainedModel):
    def __init__(self, config: Phi3Config):
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        self.embed_tokens = Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.CellList([Phi3DecoderLayer(config, i) for i in range(config.num_hidden_layers)])
        self.norm = Phi3RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = Phi3RotaryEmbedding(config=config)
        self.post_init()

    def get_input_embeddings(self):
        return self.embed_tokens

    def set_input_embeddings(self, value):
        self.embed_tokens = value

    def construct(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                  inputs_embeds=None, use_cache=None, output_attentions=None, output_hidden_states=None,
                  return_dict=None, cache_position=None, **kwargs):
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        use_cache = use_cache if use_cache is not None else self.config.use_cache
        return_dict = return_dict if return_dict is not None else True
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")

        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        batch_size, seq_len = inputs_embeds.shape[:2]

        if use_cache and past_key_values is None and not runtime.in_graph():
            # a growing cache only exists in PyNative; compiled decoding passes a StaticCache
            past_key_values = DynamicCache(config=self.config)
        if cache_position is None:
            past_seen = past_key_values.get_seq_length() if past_key_values is not None else 0
            cache_position = F.arange(past_seen, past_seen + seq_len, dtype=ms.int64)
        if position_ids is None:
            position_ids = cache_position[None, :]

        if past_key_values is not None and past_key_values.get_max_cache_shape() is not None:
            kv_length = past_key_values.get_max_cache_shape()
        elif past_key_values is not None:
            kv_length = past_key_values.get_seq_length() + seq_len
        else:
            kv_length = seq_len
        causal_mask = create_causal_mask(attention_mask, batch_size, cache_position, kv_length, inputs_embeds.dtype,
                                         sliding_window=self.config.sliding_window)

        hidden_states = inputs_embeds
        position_embeddings = self.rotary_emb(hidden_states, position_ids)

        all_hidden_states = () if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for decoder_layer in self.layers:
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            hidden_states, attn_weights = decoder_layer(
                hidden_states, position_embeddings, causal_mask, past_key_values, cache_position
            )
            if output_attentions:
                all_attentions += (attn_weights,)

        hidden_states = self.norm(hidden_states)
        if output_hidden_states:
            all_hidden_states += (hidden_states,)

        return model_output(BaseModelOutputWithPast, {
            "last_hidden_state": hidden_states,
            "past_key_values": past_key_values if use_cache else None,
            "hidden_states": all_hidden_states,
            "attentions": all_attentions,
        }, return_dict)


class Phi3ForCausalLM(Phi3PreTrainedModel, GenerationMixin):
    _supports_static_cache = True  # forward runs under mindspore.jit with a StaticCache (compiled decoding)
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config):
        super().__init__(config)
        self.model = Phi3Model(config)
        self.vocab_size = config.vocab_size
        self.lm_head = Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    def construct(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                  inputs_embeds=None, labels=None, use_cache=None, output_attentions=None,
                  output_hidden_states=None, return_dict=None, cache_position=None, logits_to_keep=0, **kwargs):
        r"""
        labels: (B, S) token ids for the next-token loss; -100 positions are ignored. Labels are shifted inside.
        logits_to_keep: if > 0, logits only for the last `logits_to_keep` positions (generation needs one).
        """
        return_dict = return_dict if return_dict is not None else True
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            cache_position=cache_position,
        )
        hidden_states = outputs["last_hidden_state"]
        if logits_to_keep > 0:
            hidden_states = hidden_states[:, -logits_to_keep:, :]
        logits = self.lm_head(hidden_states)

        loss = None
        if labels is not None:
            loss = causal_lm_loss(logits, labels, self.config.vocab_size, kwargs.get("num_items_in_batch"))

        return model_output(CausalLMOutputWithPast, {
            "loss": loss,
            "logits": logits,
            "past_key_values": outputs.get("past_key_values"),
            "hidden_states": outputs.get("hidden_states"),
            "attentions": outputs.get("attentions"),
        }, return_dict)


class Phi3ForSequenceClassification(GenericForSequenceClassification, Phi3PreTrainedModel):
    _base_model_class = Phi3Model


class Phi3ForTokenClassification(GenericForTokenClassification, Phi3PreTrainedModel):
    _base_model_class = Phi3Model


__all__ = [
    "Phi3PreTrainedModel",
    "Phi3Model",
    "Phi3ForCausalLM",
    "Phi3ForSequenceClassification",
    "Phi3ForTokenClassification",
]
