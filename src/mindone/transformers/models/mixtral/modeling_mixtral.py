"""Mixtral on MindSpore: Mistral's attention with a sparse mixture-of-experts MLP in every layer (a linear router
picks `num_experts_per_tok` of `num_local_experts` SwiGLU experts per token), router logits and the auxiliary
load-balancing loss. HF 5's structure, names (stacked `experts.gate_up_proj` / `experts.down_proj`) and outputs;
device concerns live in `backend`."""

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops
from mindspore.common.initializer import Normal
from transformers import MixtralConfig

from ...backend import functional as F
from ...backend import runtime
from ...backend.layers import Embedding, Linear
from ...backend.layers import new_parameter
from ...cache_utils import DynamicCache
from ...generation import GenerationMixin
from ...loss_utils import causal_lm_loss, load_balancing_loss
from ...masking_utils import create_causal_mask
from ...modeling_layers import (
    GenericForQuestionAnswering,
    GenericForSequenceClassification,
    GenericForTokenClassification,
    GradientCheckpointingLayer,
)
from ...modeling_outputs import MoeCausalLMOutputWithPast, MoeModelOutputWithPast, model_output
from ...modeling_rope_utils import compute_rope_parameters
from ...modeling_utils import PreTrainedModel, init_parameter
from ...weights import ExpertLayout, fuse_experts, split_experts


class MixtralRMSNorm(nn.Cell):
    def __init__(self, hidden_size, eps=1e-6):
        super().__init__()
        self.weight = new_parameter((hidden_size,), "ones")
        self.variance_epsilon = eps

    def construct(self, hidden_states):
        return F.rms_norm(hidden_states, self.weight, self.variance_epsilon)


class MixtralRotaryEmbedding(nn.Cell):
    """cos/sin tables for the given positions; the frequencies are a constant, not a checkpoint weight."""

    def __init__(self, config: MixtralConfig):
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
        freqs = position_ids[..., None].astype(ms.float32) * inv_freq
        emb = F.cat([freqs, freqs], -1)
        cos = emb.cos() * self.attention_scaling
        sin = emb.sin() * self.attention_scaling
        return cos.astype(x.dtype), sin.astype(x.dtype)


def rotate_half(x):
    half = x.shape[-1] // 2
    return F.cat([-x[..., half:], x[..., :half]], -1)


def apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1):
    cos = cos.unsqueeze(unsqueeze_dim)
    sin = sin.unsqueeze(unsqueeze_dim)
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


class MixtralExperts(nn.Cell):
    """All experts' SwiGLU weights as two stacked parameters (HF 5's layout and checkpoint keys).

    Dispatch (`F.routed_swiglu_experts`): static shapes, one graph per input shape. A decode step's few tokens
    run only their picked experts (their weights gathered); longer inputs run every expert on every token as one
    batched matmul with a combine matrix that is zero off each token's top-k (num_experts / top_k times the
    expert FLOPs, the exact gradients of HF's sparse loop).
    """

    def __init__(self, config: MixtralConfig):
        super().__init__()
        self.num_experts = config.num_local_experts
        self.hidden_dim = config.hidden_size
        self.intermediate_dim = config.intermediate_size
        self.gate_up_proj = new_parameter((self.num_experts, 2 * self.intermediate_dim, self.hidden_dim), "normal")
        self.down_proj = new_parameter((self.num_experts, self.hidden_dim, self.intermediate_dim), "normal")
        self.act_fn = F.get_activation(config.hidden_act)
        self.expert_ids = Tensor(np.arange(self.num_experts, dtype=np.int64))

    def construct(self, hidden_states, top_k_index, top_k_weights):
        """hidden_states (T, H), top_k_index (T, k), top_k_weights (T, k) -> (T, H)."""
        return F.routed_swiglu_experts(hidden_states, self.gate_up_proj, self.down_proj, top_k_index, top_k_weights,
                                       self.act_fn, self.expert_ids)


class MixtralTopKRouter(nn.Cell):
    """Softmax (float32) over all experts, top-k, then the k weights renormalised to sum to 1."""

    def __init__(self, config):
        super().__init__()
        self.top_k = config.num_experts_per_tok
        self.num_experts = config.num_local_experts
        self.hidden_dim = config.hidden_size
        self.weight = new_parameter((self.num_experts, self.hidden_dim), "normal")

    def construct(self, hidden_states):
        hidden_states = hidden_states.reshape(-1, self.hidden_dim)
        router_logits = F.linear(hidden_states, self.weight)  # (T, E) in the model dtype
        router_probs = F.softmax(router_logits.astype(ms.float32), -1)
        top_value, top_index = F.topk(router_probs, self.top_k)
        top_value = top_value / top_value.sum(-1, keepdims=True)
        return router_logits, top_value, top_index


class MixtralSparseMoeBlock(nn.Cell):
    def __init__(self, config):
        super().__init__()
        self.top_k = config.num_experts_per_tok
        self.jitter_noise = config.router_jitter_noise
        self.gate = MixtralTopKRouter(config)
        self.experts = MixtralExperts(config)

    def construct(self, hidden_states):
        """(B, S, H) -> ((B, S, H), router logits (B * S, E))."""
        batch_size, seq_len, hidden_dim = hidden_states.shape
        if self.training and self.jitter_noise > 0:
            # HF's multiplicative jitter on the router and expert input during training
            noise = ops.uniform(hidden_states.shape, Tensor(1.0 - self.jitter_noise, ms.float32),
                                Tensor(1.0 + self.jitter_noise, ms.float32))
            hidden_states = hidden_states * noise.astype(hidden_states.dtype)
        hidden_states = hidden_states.reshape(-1, hidden_dim)
        router_logits, top_k_weights, top_k_index = self.gate(hidden_states)
        hidden_states = self.experts(hidden_states, top_k_index, top_k_weights)
        return hidden_states.reshape(batch_size, seq_len, hidden_dim), router_logits


class MixtralAttention(nn.Cell):
    def __init__(self, config: MixtralConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.num_heads = config.num_attention_heads
        self.num_key_value_heads = config.num_key_value_heads
        self.num_key_value_groups = config.num_attention_heads // config.num_key_value_heads
        self.scaling = self.head_dim ** -0.5
        self.attention_dropout = config.attention_dropout
        self.q_proj = Linear(config.hidden_size, self.num_heads * self.head_dim, bias=False)
        self.k_proj = Linear(config.hidden_size, self.num_key_value_heads * self.head_dim, bias=False)
        self.v_proj = Linear(config.hidden_size, self.num_key_value_heads * self.head_dim, bias=False)
        self.o_proj = Linear(self.num_heads * self.head_dim, config.hidden_size, bias=False)

    def construct(self, hidden_states, position_embeddings, attention_mask=None, past_key_values=None,
                  cache_position=None):
        batch, seq_len = hidden_states.shape[:2]
        # (B, S, H*D) -> (B, H, S, D); swapaxes because Tensor.transpose(1, 2) fails inside jit on CPU
        query_states = self.q_proj(hidden_states).reshape(batch, seq_len, -1, self.head_dim).swapaxes(1, 2)
        key_states = self.k_proj(hidden_states).reshape(batch, seq_len, -1, self.head_dim).swapaxes(1, 2)
        value_states = self.v_proj(hidden_states).reshape(batch, seq_len, -1, self.head_dim).swapaxes(1, 2)

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


class MixtralDecoderLayer(GradientCheckpointingLayer):
    def __init__(self, config: MixtralConfig, layer_idx: int):
        super().__init__()
        self.hidden_size = config.hidden_size
        self.self_attn = MixtralAttention(config=config, layer_idx=layer_idx)
        self.mlp = MixtralSparseMoeBlock(config)
        self.input_layernorm = MixtralRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = MixtralRMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def construct(self, hidden_states, position_embeddings, attention_mask=None, past_key_values=None,
                  cache_position=None):
        residual = hidden_states
        hidden_states = self.input_layernorm(hidden_states)
        hidden_states, attn_weights = self.self_attn(
            hidden_states, position_embeddings, attention_mask, past_key_values, cache_position
        )
        hidden_states = residual + hidden_states

        residual = hidden_states
        hidden_states = self.post_attention_layernorm(hidden_states)
        hidden_states, router_logits = self.mlp(hidden_states)
        hidden_states = residual + hidden_states
        return hidden_states, attn_weights, router_logits


# checkpoints name the block `block_sparse_moe` and store experts one by one as w1 (gate) / w3 (up) / w2 (down)
_EXPERT_LAYOUT = ExpertLayout(gate="w1", up="w3", down="w2", renames=[(".block_sparse_moe.", ".mlp.")])


class MixtralPreTrainedModel(PreTrainedModel):
    config_class = MixtralConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["MixtralDecoderLayer"]

    def _init_weights(self, cell):
        super()._init_weights(cell)
        std = self.config.initializer_range
        if isinstance(cell, MixtralRMSNorm):
            init_parameter(cell.weight, "ones")
        elif isinstance(cell, MixtralExperts):
            init_parameter(cell.gate_up_proj, Normal(std))
            init_parameter(cell.down_proj, Normal(std))
        elif isinstance(cell, MixtralTopKRouter):
            init_parameter(cell.weight, Normal(std))

    def _convert_checkpoint(self, stream):
        return fuse_experts(stream, _EXPERT_LAYOUT, self.config.num_local_experts)

    def _revert_checkpoint(self, state_dict):
        return split_experts(state_dict, _EXPERT_LAYOUT)


class MixtralModel(MixtralPreTrainedModel):
    def __init__(self, config: MixtralConfig):
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        self.embed_tokens = Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.CellList([MixtralDecoderLayer(config, i) for i in range(config.num_hidden_layers)])
        self.norm = MixtralRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = MixtralRotaryEmbedding(config=config)
        self.post_init()

    def get_input_embeddings(self):
        return self.embed_tokens

    def set_input_embeddings(self, value):
        self.embed_tokens = value

    def construct(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                  inputs_embeds=None, use_cache=None, output_attentions=None, output_hidden_states=None,
                  return_dict=None, cache_position=None, output_router_logits=None, **kwargs):
        output_router_logits = (
            output_router_logits if output_router_logits is not None else self.config.output_router_logits
        )
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
        all_router_logits = () if output_router_logits else None
        for decoder_layer in self.layers:
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            hidden_states, attn_weights, router_logits = decoder_layer(
                hidden_states, position_embeddings, causal_mask, past_key_values, cache_position
            )
            if output_attentions:
                all_attentions += (attn_weights,)
            if output_router_logits:
                all_router_logits += (router_logits,)

        hidden_states = self.norm(hidden_states)
        if output_hidden_states:
            all_hidden_states += (hidden_states,)

        return model_output(MoeModelOutputWithPast, {
            "last_hidden_state": hidden_states,
            "past_key_values": past_key_values if use_cache else None,
            "hidden_states": all_hidden_states,
            "attentions": all_attentions,
            "router_logits": all_router_logits,
        }, return_dict)


class MixtralForCausalLM(MixtralPreTrainedModel, GenerationMixin):
    _supports_static_cache = True  # forward runs under mindspore.jit with a StaticCache (compiled decoding)
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config):
        super().__init__(config)
        self.model = MixtralModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = Linear(config.hidden_size, config.vocab_size, bias=False)
        self.router_aux_loss_coef = config.router_aux_loss_coef
        self.num_experts = config.num_local_experts
        self.num_experts_per_tok = config.num_experts_per_tok
        self.post_init()

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    def construct(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                  inputs_embeds=None, labels=None, use_cache=None, output_attentions=None,
                  output_hidden_states=None, return_dict=None, cache_position=None, logits_to_keep=0,
                  output_router_logits=None, **kwargs):
        r"""
        labels: (B, S) token ids for the next-token loss; -100 positions are ignored. Labels are shifted inside.
        logits_to_keep: if > 0, logits only for the last `logits_to_keep` positions (generation needs one).
        output_router_logits: return every layer's router logits and the load-balancing `aux_loss`; with labels,
            `router_aux_loss_coef * aux_loss` is added to `loss` (default: config.output_router_logits).
        """
        return_dict = return_dict if return_dict is not None else True
        output_router_logits = (
            output_router_logits if output_router_logits is not None else self.config.output_router_logits
        )
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
            output_router_logits=output_router_logits,
        )
        hidden_states = outputs["last_hidden_state"]
        if logits_to_keep > 0:
            hidden_states = hidden_states[:, -logits_to_keep:, :]
        logits = self.lm_head(hidden_states)

        loss = None
        if labels is not None:
            loss = causal_lm_loss(logits, labels, self.config.vocab_size, kwargs.get("num_items_in_batch"))

        aux_loss = None
        if output_router_logits:
            aux_loss = load_balancing_loss(outputs["router_logits"], self.num_experts, self.num_experts_per_tok,
                                           attention_mask)
            if labels is not None:
                loss = loss + self.router_aux_loss_coef * aux_loss

        return model_output(MoeCausalLMOutputWithPast, {
            "loss": loss,
            "aux_loss": aux_loss,
            "logits": logits,
            "past_key_values": outputs.get("past_key_values"),
            "hidden_states": outputs.get("hidden_states"),
            "attentions": outputs.get("attentions"),
            "router_logits": outputs.get("router_logits"),
        }, return_dict)


class MixtralForSequenceClassification(GenericForSequenceClassification, MixtralPreTrainedModel):
    _base_model_class = MixtralModel


class MixtralForTokenClassification(GenericForTokenClassification, MixtralPreTrainedModel):
    _base_model_class = MixtralModel


class MixtralForQuestionAnswering(GenericForQuestionAnswering, MixtralPreTrainedModel):
    _base_model_class = MixtralModel


__all__ = [
    "MixtralForCausalLM",
    "MixtralModel",
    "MixtralPreTrainedModel",
    "MixtralForSequenceClassification",
    "MixtralForQuestionAnswering",
    "MixtralForTokenClassification",
]
