"""Phi (phi-1, phi-1.5, phi-2) on MindSpore: HF's `modeling_phi.py` structure, names and outputs; device concerns live
in `backend`.

Phi is a parallel-residual decoder: each layer normalises once and adds attention and MLP outputs to the residual
side by side. LayerNorms with biases, biased q/k/v/dense projections, an optional LayerNorm on each query/key head
(`qk_layernorm`), RoPE on the first `partial_rotary_factor` of each head, and an LM head with a bias.
"""

import mindspore as ms
from mindspore import Tensor, nn
from transformers import PhiConfig

from ...backend import functional as F
from ...backend import runtime
from ...backend.layers import Dropout, Embedding, LayerNorm, Linear
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
from ...modeling_utils import PreTrainedModel


class PhiRotaryEmbedding(nn.Cell):
    """cos/sin tables (rotary features only) for the given positions; the frequencies are a constant, not a weight."""

    def __init__(self, config: PhiConfig):
        super().__init__()
        self.config = config
        self.rope_type = config.rope_parameters.get("rope_type", "default")
        inv_freq, self.attention_scaling = compute_rope_parameters(config)
        self.inv_freq = Tensor(inv_freq)
        if self.rope_type == "dynamic":
            raise ValueError("PhiRotaryEmbedding: rope_type 'dynamic' is not supported (the phi-1/1.5/2 checkpoints "
                             "use the default RoPE)")

    def construct(self, x, position_ids):
        freqs = position_ids.reshape(position_ids.shape + (1,)).astype(ms.float32) * self.inv_freq
        emb = F.cat([freqs, freqs], -1)
        cos, sin = emb.cos(), emb.sin()
        if self.attention_scaling != 1.0:
            cos, sin = cos * self.attention_scaling, sin * self.attention_scaling
        return cos.astype(x.dtype), sin.astype(x.dtype)


class PhiAttention(nn.Cell):
    def __init__(self, config: PhiConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.num_key_value_groups = config.num_attention_heads // config.num_key_value_heads
        self.scaling = self.head_dim ** -0.5
        self.attention_dropout = config.attention_dropout
        self.q_proj = Linear(config.hidden_size, config.num_attention_heads * self.head_dim, bias=True)
        self.k_proj = Linear(config.hidden_size, config.num_key_value_heads * self.head_dim, bias=True)
        self.v_proj = Linear(config.hidden_size, config.num_key_value_heads * self.head_dim, bias=True)
        self.dense = Linear(config.num_attention_heads * self.head_dim, config.hidden_size, bias=True)
        self.rotary_ndims = int(self.head_dim * config.rope_parameters["partial_rotary_factor"])
        self.qk_layernorm = config.qk_layernorm
        if self.qk_layernorm:
            self.q_layernorm = LayerNorm(config.hidden_size // config.num_attention_heads, eps=config.layer_norm_eps)
            self.k_layernorm = LayerNorm(config.hidden_size // config.num_attention_heads, eps=config.layer_norm_eps)

    def construct(self, hidden_states, position_embeddings, attention_mask=None, past_key_values=None,
                  cache_position=None):
        batch, seq_len = hidden_states.shape[:2]
        query_states = self.q_proj(hidden_states).reshape(batch, seq_len, -1, self.head_dim)
        key_states = self.k_proj(hidden_states).reshape(batch, seq_len, -1, self.head_dim)
        value_states = self.v_proj(hidden_states).reshape(batch, seq_len, -1, self.head_dim).swapaxes(1, 2)
        if self.qk_layernorm:
            query_states = self.q_layernorm(query_states)
            key_states = self.k_layernorm(key_states)

        # partial RoPE as one matmul per tensor (B, S, H, D) -> (B, H, S, D): the rotation matrices rotate the first
        # rotary_ndims features and pass the rest through; the queries' also carries self.scaling
        query_rotation, key_rotation = position_embeddings
        query_states = F.apply_rotary_matrix(query_states, query_rotation)
        key_states = F.apply_rotary_matrix(key_states, key_rotation)

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
        attn_output = attn_output.swapaxes(1, 2).reshape(batch, seq_len, -1)
        return self.dense(attn_output), attn_weights


class PhiMLP(nn.Cell):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.activation_fn = F.get_activation(config.hidden_act)
        self.fc1 = Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = Linear(config.intermediate_size, config.hidden_size)

    def construct(self, hidden_states):
        return self.fc2(self.activation_fn(self.fc1(hidden_states)))


class PhiDecoderLayer(GradientCheckpointingLayer):
    def __init__(self, config: PhiConfig, layer_idx: int):
        super().__init__()
        self.self_attn = PhiAttention(config, layer_idx=layer_idx)
        self.mlp = PhiMLP(config)
        self.input_layernorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.resid_dropout = Dropout(config.resid_pdrop)

    def construct(self, hidden_states, position_embeddings, attention_mask=None, past_key_values=None,
                  cache_position=None):
        residual = hidden_states
        hidden_states = self.input_layernorm(hidden_states)
        attn_outputs, attn_weights = self.self_attn(
            hidden_states, position_embeddings, attention_mask, past_key_values, cache_position
        )
        attn_outputs = self.resid_dropout(attn_outputs)
        # parallel residual: attention and MLP both read the same normalised input
        feed_forward_hidden_states = self.resid_dropout(self.mlp(hidden_states))
        return attn_outputs + feed_forward_hidden_states + residual, attn_weights


class PhiPreTrainedModel(PreTrainedModel):
    config_class = PhiConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["PhiDecoderLayer"]


class PhiModel(PhiPreTrainedModel):
    def __init__(self, config: PhiConfig):
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        self.embed_tokens = Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.CellList([PhiDecoderLayer(config, i) for i in range(config.num_hidden_layers)])
        self.rotary_emb = PhiRotaryEmbedding(config=config)
        self.embed_dropout = Dropout(config.embd_pdrop)
        self.final_layernorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
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

        hidden_states = self.embed_dropout(inputs_embeds)
        cos, sin = self.rotary_emb(hidden_states, position_ids)
        key_rotation = F.rotary_matrix(cos, sin, head_dim=self.head_dim)
        position_embeddings = (key_rotation * (self.head_dim ** -0.5), key_rotation)

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

        hidden_states = self.final_layernorm(hidden_states)
        if output_hidden_states:
            all_hidden_states += (hidden_states,)

        return model_output(BaseModelOutputWithPast, {
            "last_hidden_state": hidden_states,
            "past_key_values": past_key_values if use_cache else None,
            "hidden_states": all_hidden_states,
            "attentions": all_attentions,
        }, return_dict)


class PhiForCausalLM(PhiPreTrainedModel, GenerationMixin):
    _supports_static_cache = True  # forward runs under mindspore.jit with a StaticCache (compiled decoding)
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: PhiConfig):
        super().__init__(config)
        self.model = PhiModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = Linear(config.hidden_size, config.vocab_size, bias=True)
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


class PhiForSequenceClassification(GenericForSequenceClassification, PhiPreTrainedModel):
    _base_model_class = PhiModel


class PhiForTokenClassification(GenericForTokenClassification, PhiPreTrainedModel):
    _base_model_class = PhiModel


__all__ = [
    "PhiPreTrainedModel",
    "PhiModel",
    "PhiForCausalLM",
    "PhiForSequenceClassification",
    "PhiForTokenClassification",
]
