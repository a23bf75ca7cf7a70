"""Gemma 3 (text) on MindSpore: Gemma's scaled embeddings and (1 + weight) RMSNorms, plus RMSNorm on each query/key
head, norms before *and* after both the attention and the MLP, sliding-window attention on the layers
`config.layer_types` marks (with their own RoPE base), scores scaled by `query_pre_attn_scalar ** -0.5`, and optional
tanh soft-capping of the final logits. `attn_logit_softcapping` is accepted but not applied, exactly as HF's Gemma3
(only Gemma2 caps attention scores). HF's structure, names and outputs; device concerns live in `backend`."""

import mindspore as ms
from mindspore import Tensor, nn
from transformers import Gemma3TextConfig

from ...backend import functional as F
from ...backend import runtime
from ...backend.layers import Embedding, Linear, new_parameter
from ...cache_utils import DynamicCache
from ...generation import GenerationMixin
from ...loss_utils import causal_lm_loss
from ...masking_utils import create_causal_mask
from ...modeling_layers import GenericForSequenceClassification, GradientCheckpointingLayer
from ...modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast, model_output
from ...modeling_rope_utils import compute_rope_parameters
from ...modeling_utils import PreTrainedModel, init_parameter


class Gemma3TextScaledWordEmbedding(Embedding):
    """Embedding rows multiplied by `embed_scale` (sqrt(hidden_size)) rounded to the weight's dtype, as HF does."""

    def __init__(self, num_embeddings, embedding_dim, padding_idx, embed_scale=1.0):
        super().__init__(num_embeddings, embedding_dim, padding_idx)
        self.scalar_embed_scale = embed_scale

    def construct(self, input_ids):
        scale = Tensor(self.scalar_embed_scale, ms.float32).astype(self.weight.dtype)
        return F.embedding(input_ids, self.weight, self.padding_idx) * scale


class Gemma3RMSNorm(nn.Cell):
    """x / rms(x) * (1 + weight) in float32, cast back once (checkpoints store weight - 1; zeros init)."""

    def __init__(self, hidden_size, eps=1e-6):
        super().__init__()
        self.weight = new_parameter((hidden_size,), "zeros")
        self.eps = eps

    def construct(self, x):
        output = F.rms_norm(x.astype(ms.float32), None, self.eps) * (1.0 + self.weight.astype(ms.float32))
        return output.astype(x.dtype)


class _RopeConfigView:
    """The config as the RoPE table functions expect it, with one layer type's `rope_parameters`."""

    def __init__(self, config, rope_parameters):
        self._config = config
        self.rope_parameters = rope_parameters

    def __getattr__(self, name):
        return getattr(self._config, name)


class Gemma3RotaryEmbedding(nn.Cell):
    """cos/sin tables per attention type: sliding layers use their own (local) RoPE parameters."""

    def __init__(self, config: Gemma3TextConfig):
        super().__init__()
        self.layer_types = sorted(set(config.layer_types))
        self.inv_freq = {}
        self.attention_scaling = {}
        for layer_type in self.layer_types:
            params = config.rope_parameters[layer_type]
            if params.get("rope_type", "default") == "dynamic":
                raise NotImplementedError("Gemma3 with rope_type='dynamic' is not implemented in mindone.transformers")
            inv_freq, scaling = compute_rope_parameters(_RopeConfigView(config, params))
            self.inv_freq[layer_type] = Tensor(inv_freq)
            self.attention_scaling[layer_type] = scaling

    def construct(self, x, position_ids, layer_type):
        freqs = position_ids[..., None].astype(ms.float32) * self.inv_freq[layer_type]
        emb = F.cat([freqs, freqs], -1)
        cos = emb.cos() * self.attention_scaling[layer_type]
        sin = emb.sin() * self.attention_scaling[layer_type]
        return cos.astype(x.dtype), sin.astype(x.dtype)


def rotate_half(x):
    half = x.shape[-1] // 2
    return F.cat([-x[..., half:], x[..., :half]], -1)


def apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1):
    cos = cos.unsqueeze(unsqueeze_dim)
    sin = sin.unsqueeze(unsqueeze_dim)
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


class Gemma3MLP(nn.Cell):
    def __init__(self, config: Gemma3TextConfig):
        super().__init__()
        self.hidden_size = config.hidden_size
        self.intermediate_size = config.intermediate_size
        self.gate_proj = Linear(self.hidden_size, self.intermediate_size, bias=False)
        self.up_proj = Linear(self.hidden_size, self.intermediate_size, bias=False)
        self.down_proj = Linear(self.intermediate_size, self.hidden_size, bias=False)
        self.act_fn = F.get_activation(config.hidden_activation)

    def construct(self, x):
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class Gemma3Attention(nn.Cell):
    def __init__(self, config: Gemma3TextConfig, layer_idx: int):
        super().__init__()
        self.layer_type = config.layer_types[layer_idx]
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.num_key_value_groups = config.num_attention_heads // config.num_key_value_heads
        self.scaling = config.query_pre_attn_scalar ** -0.5
        self.attention_dropout = config.attention_dropout
        self.q_proj = Linear(config.hidden_size, config.num_attention_heads * self.head_dim, bias=config.attention_bias)
        self.k_proj = Linear(config.hidden_size, config.num_key_value_heads * self.head_dim,
                             bias=config.attention_bias)
        self.v_proj = Linear(config.hidden_size, config.num_key_value_heads * self.head_dim,
                             bias=config.attention_bias)
        self.o_proj = Linear(config.num_attention_heads * self.head_dim, config.hidden_size, bias=config.attention_bias)
        # kept for HF's attribute set, but (as in HF's Gemma3, unlike Gemma2) never applied to the scores
        self.attn_logit_softcapping = config.attn_logit_softcapping
        self.is_sliding = self.layer_type == "sliding_attention"
        self.sliding_window = config.sliding_window if self.is_sliding else None
        # normalised over the head dim only, per head
        self.q_norm = Gemma3RMSNorm(self.head_dim, eps=config.rms_norm_eps)
        self.k_norm = Gemma3RMSNorm(self.head_dim, eps=config.rms_norm_eps)

    def construct(self, hidden_states, position_embeddings, attention_mask=None, past_key_values=None,
                  cache_position=None):
        batch, seq_len = hidden_states.shape[:2]
        # (B, S, H*D) -> (B, H, S, D); swapaxes because Tensor.transpose(1, 2) fails inside jit on CPU
        query_states = self.q_proj(hidden_states).reshape(batch, seq_len, -1, self.head_dim).swapaxes(1, 2)
        key_states = self.k_proj(hidden_states).reshape(batch, seq_len, -1, self.head_dim).swapaxes(1, 2)
        value_states = self.v_proj(hidden_states).reshape(batch, seq_len, -1, self.head_dim).swapaxes(1, 2)
        query_states = self.q_norm(query_states)
        key_states = self.k_norm(key_states)

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


class Gemma3DecoderLayer(GradientCheckpointingLayer):
    def __init__(self, config: Gemma3TextConfig, layer_idx: int):
        super().__init__()
        self.hidden_size = config.hidden_size
        self.layer_idx = layer_idx
        self.attention_type = config.layer_types[layer_idx]
        self.self_attn = Gemma3Attention(config=config, layer_idx=layer_idx)
        self.mlp = Gemma3MLP(config)
        self.input_layernorm = Gemma3RMSNorm(self.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = Gemma3RMSNorm(self.hidden_size, eps=config.rms_norm_eps)
        self.pre_feedforward_layernorm = Gemma3RMSNorm(self.hidden_size, eps=config.rms_norm_eps)
        self.post_feedforward_layernorm = Gemma3RMSNorm(self.hidden_size, eps=config.rms_norm_eps)

    def construct(self, hidden_states, position_embeddings, attention_mask=None, past_key_values=None,
                  cache_position=None):
        residual = hidden_states
        hidden_states = self.input_layernorm(hidden_states)
        hidden_states, attn_weights = self.self_attn(
            hidden_states, position_embeddings, attention_mask, past_key_values, cache_position
        )
        hidden_states = self.post_attention_layernorm(hidden_states)
        hidden_states = residual + hidden_states

        residual = hidden_states
        hidden_states = self.pre_feedforward_layernorm(hidden_states)
        hidden_states = self.mlp(hidden_states)
        hidden_states = self.post_feedforward_layernorm(hidden_states)
        hidden_states = residual + hidden_states
        return hidden_states, attn_weights


class Gemma3PreTrainedModel(PreTrainedModel):
    config_class = Gemma3TextConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["Gemma3DecoderLayer"]

    def _init_weights(self, cell):
        super()._init_weights(cell)
        # the norm multiplies by (1 + weight): zeros are the identity
        if isinstance(cell, Gemma3RMSNorm):
            init_parameter(cell.weight, "zeros")


class Gemma3TextModel(Gemma3PreTrainedModel):
    def __init__(self, config: Gemma3TextConfig):
        super().__init__(config)
        if config.use_bidirectional_attention:
            raise NotImplementedError("Gemma3 with use_bidirectional_attention=True is not implemented in "
                                      "mindone.transformers")
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        self.embed_tokens = Gemma3TextScaledWordEmbedding(config.vocab_size, config.hidden_size, self.padding_idx,
                                                          embed_scale=config.hidden_size ** 0.5)
        self.layers = nn.CellList([Gemma3DecoderLayer(config, i) for i in range(config.num_hidden_layers)])
        self.norm = Gemma3RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = Gemma3RotaryEmbedding(config)
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
        # the caches keep every position; a sliding layer's window is its mask
        causal_masks = {"full_attention": create_causal_mask(attention_mask, batch_size, cache_position, kv_length,
                                                             inputs_embeds.dtype)}
        if "sliding_attention" in self.config.layer_types:
            causal_masks["sliding_attention"] = create_causal_mask(attention_mask, batch_size, cache_position,
                                                                   kv_length, inputs_embeds.dtype,
                                                                   sliding_window=self.config.sliding_window)

        hidden_states = inputs_embeds
        position_embeddings = {}
        for layer_type in self.rotary_emb.layer_types:
            position_embeddings[layer_type] = self.rotary_emb(hidden_states, position_ids, layer_type)

        all_hidden_states = () if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for decoder_layer in self.layers:
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            hidden_states, attn_weights = decoder_layer(
                hidden_states, position_embeddings[decoder_layer.attention_type],
                causal_masks[decoder_layer.attention_type], past_key_values, cache_position
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


class Gemma3ForCausalLM(Gemma3PreTrainedModel, GenerationMixin):
    _supports_static_cache = True  # forward runs under mindspore.jit with a StaticCache (compiled decoding)
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: Gemma3TextConfig):
        super().__init__(config)
        self.model = Gemma3TextModel(config)
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
        cap = self.config.final_logit_softcapping
        if cap is not None:
            logits = F.tanh(logits / cap) * cap

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


class Gemma3TextForSequenceClassification(GenericForSequenceClassification, Gemma3PreTrainedModel):
    _base_model_class = Gemma3TextModel


__all__ = [
    "Gemma3ForCausalLM",
    "Gemma3TextModel",
    "Gemma3PreTrainedModel",
    "Gemma3TextForSequenceClassification",
]
