"""Llama on MindSpore: HF's `modeling_llama.py` structure, names and outputs; device concerns live in `backend`."""

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops
from transformers import LlamaConfig

from ...backend import functional as F
from ...backend import quantization, runtime
from ...backend.layers import Embedding, Linear
from ...backend.layers import new_parameter
from ...cache_utils import DynamicCache, StaticCache
from ...generation import GenerationMixin
from ...loss_utils import causal_lm_head_loss
from ...masking_utils import create_causal_mask
from ...modeling_layers import (
    GenericForQuestionAnswering,
    GenericForSequenceClassification,
    GenericForTokenClassification,
    GradientCheckpointingLayer,
)
from ...modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast, model_output
from ...modeling_rope_utils import compute_rope_parameters
from ...modeling_utils import PreTrainedModel, init_parameter


class LlamaRMSNorm(nn.Cell):
    def __init__(self, hidden_size, eps=1e-6):
        super().__init__()
        self.weight = new_parameter((hidden_size,), "ones")
        self.variance_epsilon = eps

    def construct(self, hidden_states):
        return F.rms_norm(hidden_states, self.weight, self.variance_epsilon)


class LlamaRotaryEmbedding(nn.Cell):
    """cos/sin tables for the given positions; the frequencies are a constant, not a checkpoint weight."""

    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.config = config
        self.rope_type = config.rope_parameters.get("rope_type", "default")
        inv_freq, self.attention_scaling = compute_rope_parameters(config)
        self.inv_freq = Tensor(inv_freq)
        if self.rope_type == "dynamic":
            dim = inv_freq.shape[0] * 2
            self.rope_theta = float(config.rope_parameters["rope_theta"])
            self.rope_factor = float(config.rope_parameters["factor"])
            self.ntk_power = dim / (dim - 2)
            self.freq_exponents = Tensor(np.arange(0, dim, 2).astype(np.float32) / np.float32(dim))

    def _dynamic_inv_freq(self, position_ids):
        # Dynamic NTK: the base grows once the longest position passes max_position_embeddings. Computed from the
        # positions each call (no host sync, so it also compiles); equals HF's cached update for growing sequences.
        max_pos = float(self.config.max_position_embeddings)
        seq_len = ops.maximum(position_ids.max().astype(ms.float32) + 1.0, Tensor(max_pos, ms.float32))
        base = self.rope_theta * ((self.rope_factor * seq_len / max_pos) - (self.rope_factor - 1)) ** self.ntk_power
        return 1.0 / ops.pow(base, self.freq_exponents)

    def construct(self, x, position_ids):
        inv_freq = self._dynamic_inv_freq(position_ids) if self.rope_type == "dynamic" else self.inv_freq
        freqs = position_ids.reshape(position_ids.shape + (1,)).astype(ms.float32) * inv_freq
        emb = F.cat([freqs, freqs], -1)
        cos, sin = emb.cos(), emb.sin()
        if self.attention_scaling != 1.0:
            cos, sin = cos * self.attention_scaling, sin * self.attention_scaling
        return cos.astype(x.dtype), sin.astype(x.dtype)


def rotary_position_embeddings(cos, sin, scaling):
    """HF's (cos, sin) tables as the (query, key) rotation matrices every layer applies with one matmul each: RoPE is
    `x @ R` (see `F.rotary_matrix`), and the queries' matrix also carries the attention scale."""
    key_rotation = F.rotary_matrix(cos, sin)
    return key_rotation * scaling, key_rotation


class LlamaMLP(nn.Cell):
    # set by quantizers (quantization.mark_fusable_projections) when gate_proj / up_proj are packed alike
    fuse_quantized_gate_up = False
    # and down_proj too (no bias, same bits): the decoder layer adds the residual in the same kernel call
    fuse_quantized_mlp = False

    def __init__(self, config):
        super().__init__()
        self.hidden_size = config.hidden_size
        self.hidden_act = config.hidden_act
        self.intermediate_size = config.intermediate_size
        self.gate_proj = Linear(self.hidden_size, self.intermediate_size, bias=config.mlp_bias)
        self.up_proj = Linear(self.hidden_size, self.intermediate_size, bias=config.mlp_bias)
        self.down_proj = Linear(self.intermediate_size, self.hidden_size, bias=config.mlp_bias)
        self.act_fn = F.get_activation(config.hidden_act)

    def construct(self, x):
        if self.fuse_quantized_gate_up:
            return self.down_proj(quantization.fused_silu_gate_up(x, self.gate_proj, self.up_proj, self.act_fn))
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class LlamaAttention(nn.Cell):
    # set by quantizers (quantization.mark_fusable_projections) when q_proj / k_proj / v_proj are packed alike
    fuse_quantized_qkv = False

    def __init__(self, config: LlamaConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.num_heads = config.num_attention_heads
        self.num_key_value_heads = config.num_key_value_heads
        self.num_key_value_groups = config.num_attention_heads // config.num_key_value_heads
        self.scaling = self.head_dim ** -0.5
        self.attention_dropout = config.attention_dropout
        self.q_proj = Linear(config.hidden_size, self.num_heads * self.head_dim, bias=config.attention_bias)
        self.k_proj = Linear(config.hidden_size, self.num_key_value_heads * self.head_dim, bias=config.attention_bias)
        self.v_proj = Linear(config.hidden_size, self.num_key_value_heads * self.head_dim, bias=config.attention_bias)
        self.o_proj = Linear(self.num_heads * self.head_dim, config.hidden_size, bias=config.attention_bias)

    def construct(self, hidden_states, position_embeddings, attention_mask=None, past_key_values=None,
                  cache_position=None):
        batch, seq_len = hidden_states.shape[:2]
        # (B, S, H*D) -> (B, S, H, D) -> RoPE -> (B, H, S, D); swapaxes because Tensor.transpose(1, 2) fails inside
        # jit on CPU. position_embeddings are per-position rotation matrices (B or 1, S, D, D), the queries' scaled
        # by self.scaling (`rotary_position_embeddings`)
        query_rotation, key_rotation = position_embeddings
        if self.fuse_quantized_qkv:
            query_states, key_states, value_states = quantization.fused_projections(hidden_states, self.q_proj,
                                                                                    self.k_proj, self.v_proj)
        else:
            query_states = self.q_proj(hidden_states)
            key_states = self.k_proj(hidden_states)
            value_states = self.v_proj(hidden_states)
        query_states = F.apply_rotary_matrix(query_states.reshape(batch, seq_len, -1, self.head_dim), query_rotation)
        key_states = F.apply_rotary_matrix(key_states.reshape(batch, seq_len, -1, self.head_dim), key_rotation)
        value_states = F.swap_axes(value_states.reshape(batch, seq_len, -1, self.head_dim), 1, 2)

        if past_key_values is not None:
            key_states, value_states = past_key_values.update(
                key_states, value_states, self.layer_idx, {"cache_position": cache_position}
            )

        attn_output, attn_weights = F.attention(
            query_states,
            key_states,  # F.attention groups query heads over the kv heads (GQA)
            value_states,
            attn_mask=attention_mask,
            scale=1.0,  # self.scaling is folded into the query rotation
            dropout_p=self.attention_dropout if self.training else 0.0,
            training=self.training,
        )
        attn_output = F.swap_axes(attn_output, 1, 2).reshape(batch, seq_len, -1)
        return self.o_proj(attn_output), attn_weights


class LlamaDecoderLayer(GradientCheckpointingLayer):
    # set by quantizers (quantization.mark_fusable_projections) when the attention's and the MLP's projections are
    # packed alike without bias: a decode step with int8 activations then runs the layer as two native calls around
    # the cache write (quantization.fused_decoder_layer_ok)
    fuse_quantized_layer = False

    def __init__(self, config: LlamaConfig, layer_idx: int):
        super().__init__()
        self.hidden_size = config.hidden_size
        self.self_attn = LlamaAttention(config=config, layer_idx=layer_idx)
        self.mlp = LlamaMLP(config)
        self.input_layernorm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def construct(self, hidden_states, position_embeddings, attention_mask=None, past_key_values=None,
                  cache_position=None, output_attentions=False):
        if self.fuse_quantized_layer and quantization.fused_decoder_layer_ok(
                self, hidden_states, position_embeddings, attention_mask, output_attentions):
            layer_idx = self.self_attn.layer_idx
            if (isinstance(past_key_values, StaticCache) and past_key_values.key_cache is not None
                    and quantization.fused_cache_write_ok(self, hidden_states, past_key_values.key_cache[layer_idx],
                                                          past_key_values.value_cache[layer_idx], cache_position,
                                                          attention_mask)):
                # the cache write inside the call (declared in place: the attention below reads the written storage)
                key_states, value_states = past_key_values.key_cache[layer_idx], past_key_values.value_cache[layer_idx]
                query_states = quantization.fused_attention_input_to_cache(
                    self, hidden_states, position_embeddings, key_states, value_states, cache_position)
                return quantization.fused_attention_output_mlp(
                    self, query_states, key_states, value_states, attention_mask, hidden_states), None
            query_states, key_states, value_states = quantization.fused_attention_input(
                self, hidden_states, position_embeddings)
            if past_key_values is not None:
                key_states, value_states = past_key_values.update(
                    key_states, value_states, layer_idx, {"cache_position": cache_position}
                )
            return quantization.fused_attention_output_mlp(
                self, query_states, key_states, value_states, attention_mask, hidden_states), None
        residual = hidden_states
        hidden_states = self.input_layernorm(hidden_states)
        hidden_states, attn_weights = self.self_attn(
            hidden_states, position_embeddings, attention_mask, past_key_values, cache_position
        )
        hidden_states = residual + hidden_states

        residual = hidden_states
        hidden_states = self.post_attention_layernorm(hidden_states)
        if self.mlp.fuse_quantized_mlp:
            return quantization.fused_mlp_residual(hidden_states, self.mlp, residual), attn_weights
        hidden_states = self.mlp(hidden_states)
        hidden_states = residual + hidden_states
        return hidden_states, attn_weights


class LlamaPreTrainedModel(PreTrainedModel):
    config_class = LlamaConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["LlamaDecoderLayer"]

    def _init_weights(self, cell):
        super()._init_weights(cell)
        if isinstance(cell, LlamaRMSNorm):
            init_parameter(cell.weight, "ones")


class LlamaModel(LlamaPreTrainedModel):
    def __init__(self, config: LlamaConfig):
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        self.embed_tokens = Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.CellList([LlamaDecoderLayer(config, i) for i in range(config.num_hidden_layers)])
        self.norm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = LlamaRotaryEmbedding(config=config)
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.query_scaling = head_dim ** -0.5  # LlamaAttention.scaling, applied with the query rotation
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
        causal_mask = create_causal_mask(attention_mask, batch_size, cache_position, kv_length, inputs_embeds.dtype)

        hidden_states = inputs_embeds
        cos, sin = self.rotary_emb(hidden_states, position_ids)
        position_embeddings = rotary_position_embeddings(cos, sin, self.query_scaling)

        all_hidden_states = () if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for decoder_layer in self.layers:
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            hidden_states, attn_weights = decoder_layer(
                hidden_states, position_embeddings, causal_mask, past_key_values, cache_position, output_attentions
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


class LlamaForCausalLM(LlamaPreTrainedModel, GenerationMixin):
    _supports_static_cache = True  # forward runs under mindspore.jit with a StaticCache (compiled decoding)
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config):
        super().__init__(config)
        self.model = LlamaModel(config)
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
            loss = causal_lm_head_loss(hidden_states, self.lm_head, logits, labels, self.config.vocab_size,
                                       kwargs.get("num_items_in_batch"), self.training)

        return model_output(CausalLMOutputWithPast, {
            "loss": loss,
            "logits": logits,
            "past_key_values": outputs.get("past_key_values"),
            "hidden_states": outputs.get("hidden_states"),
            "attentions": outputs.get("attentions"),
        }, return_dict)


class LlamaForSequenceClassification(GenericForSequenceClassification, LlamaPreTrainedModel):
    _base_model_class = LlamaModel


class LlamaForTokenClassification(GenericForTokenClassification, LlamaPreTrainedModel):
    _base_model_class = LlamaModel


class LlamaForQuestionAnswering(GenericForQuestionAnswering, LlamaPreTrainedModel):
    base_model_prefix = "transformer"  # HF keeps this name for old checkpoints
    _base_model_class = LlamaModel


__all__ = [
    "LlamaForCausalLM",
    "LlamaModel",
    "LlamaPreTrainedModel",
    "LlamaForSequenceClassification",
    "LlamaForQuestionAnswering",
    "LlamaForTokenClassification",
]
