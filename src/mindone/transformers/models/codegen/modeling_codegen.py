"""GPT-J on MindSpore: HF's `modeling_codegen.py` structure, names and outputs; device concerns live in `backend`.

GPT-J is a parallel-residual decoder (attention and MLP read the same LayerNorm output) with bias-free q/k/v/out
projections, GPT-J's interleaved RoPE ("rotate every two": feature pairs (2i, 2i+1)) on the first `rotary_dim`
features of each head, attention scores in float32, and an LM head with a bias.
"""

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops
from transformers import CodeGenConfig

from ...backend import functional as F
from ...backend import runtime
from ...backend.layers import Dropout, Embedding, LayerNorm, Linear
from ...cache_utils import DynamicCache
from ...generation import GenerationMixin
from ...loss_utils import causal_lm_loss
from ...masking_utils import create_causal_mask
from ...modeling_layers import GradientCheckpointingLayer
from ...modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast, model_output
from ...modeling_rope_utils import float32_power
from ...modeling_utils import PreTrainedModel


class CodeGenRotaryEmbedding(nn.Cell):
    """float32 sin/cos tables of the first `rotary_dim` features for the given positions, each frequency repeated for its two
    features (the interleaved layout); the frequencies are a constant, not a checkpoint weight."""

    def __init__(self, config: CodeGenConfig):
        super().__init__()
        self.pos_embd_dim = config.rotary_dim or config.hidden_size // config.num_attention_heads
        dim = self.pos_embd_dim
        exponents = np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / np.float32(dim)
        self.inv_freq = Tensor((np.float32(1.0) / float32_power(10000.0, exponents)).astype(np.float32))

    def construct(self, x, position_ids):
        freqs = position_ids.reshape(position_ids.shape + (1,)).astype(ms.float32) * self.inv_freq
        # (..., R/2) -> (..., R): f0 f0 f1 f1 ...
        freqs = ops.broadcast_to(freqs.reshape(freqs.shape + (1,)), freqs.shape + (2,)).reshape(
            freqs.shape[:-1] + (self.pos_embd_dim,))
        return freqs.sin(), freqs.cos()  # float32: the original implementation rotates in float32


class CodeGenAttention(nn.Cell):
    def __init__(self, config: CodeGenConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.embed_dim = config.hidden_size
        self.num_attention_heads = config.num_attention_heads
        self.head_dim = self.embed_dim // self.num_attention_heads
        if self.head_dim * self.num_attention_heads != self.embed_dim:
            raise ValueError(f"embed_dim must be divisible by num_attention_heads (got `embed_dim`: {self.embed_dim} "
                             f"and `num_attention_heads`: {self.num_attention_heads}).")
        self.scaling = self.head_dim ** -0.5
        self.attention_dropout = config.attn_pdrop
        self.rotary_dim = config.rotary_dim
        self.out_proj = Linear(self.embed_dim, self.embed_dim, bias=False)
        self.resid_dropout = Dropout(config.resid_pdrop)
        self.qkv_proj = Linear(self.embed_dim, self.embed_dim * 3, bias=False)
        # the fused projection is interleaved across the 4 model-parallel shards CodeGen was trained with
        self.mp_num = 4

    def construct(self, hidden_states, position_embeddings, attention_mask=None, past_key_values=None,
                  cache_position=None):
        batch, seq_len = hidden_states.shape[:2]
        dtype = hidden_states.dtype
        # (B, S, 4, 3 * E/4): per shard [query; value; key]
        local_dim = self.embed_dim // self.mp_num
        qkv = self.qkv_proj(hidden_states).reshape(batch, seq_len, self.mp_num, 3 * local_dim)
        query = qkv[..., :local_dim].reshape(batch, seq_len, -1, self.head_dim)
        value = qkv[..., local_dim:2 * local_dim].reshape(batch, seq_len, -1, self.head_dim).swapaxes(1, 2)
        key = qkv[..., 2 * local_dim:].reshape(batch, seq_len, -1, self.head_dim)
        # interleaved partial RoPE in float32 as one matmul per tensor (B, S, H, D) -> (B, H, S, D); the queries'
        # rotation also carries self.scaling
        query_rotation, key_rotation = position_embeddings
        query = F.apply_rotary_matrix(query.astype(ms.float32), query_rotation).astype(dtype)
        key = F.apply_rotary_matrix(key.astype(ms.float32), key_rotation).astype(dtype)

        if past_key_values is not None:
            key, value = past_key_values.update(key, value, self.layer_idx, {"cache_position": cache_position})

        # CodeGen computes the scores in float32 (fp16 scores of this model overflow)
        if attention_mask is not None:
            attention_mask = attention_mask.astype(ms.float32)
        attn_output, attn_weights = F.attention(
            query.astype(ms.float32), key.astype(ms.float32), value.astype(ms.float32), attn_mask=attention_mask,
            scale=1.0,  # self.scaling is folded into the query rotation
            dropout_p=self.attention_dropout if self.training else 0.0, training=self.training,
        )
        attn_output = attn_output.astype(dtype).swapaxes(1, 2).reshape(batch, seq_len, -1)
        return self.resid_dropout(self.out_proj(attn_output)), attn_weights


class CodeGenMLP(nn.Cell):
    def __init__(self, intermediate_size, config):
        super().__init__()
        embed_dim = config.n_embd
        self.fc_in = Linear(embed_dim, intermediate_size)
        self.fc_out = Linear(intermediate_size, embed_dim)
        self.act = F.get_activation(config.activation_function)
        self.dropout = Dropout(config.resid_pdrop)

    def construct(self, hidden_states):
        return self.dropout(self.fc_out(self.act(self.fc_in(hidden_states))))


class CodeGenBlock(GradientCheckpointingLayer):
    def __init__(self, config: CodeGenConfig, layer_idx: int):
        super().__init__()
        inner_dim = config.n_inner if config.n_inner is not None else 4 * config.n_embd
        self.ln_1 = LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = CodeGenAttention(config, layer_idx)
        self.mlp = CodeGenMLP(inner_dim, config)

    def construct(self, hidden_states, position_embeddings, attention_mask=None, past_key_values=None,
                  cache_position=None):
        residual = hidden_states
        hidden_states = self.ln_1(hidden_states)
        attn_output, attn_weights = self.attn(hidden_states, position_embeddings, attention_mask, past_key_values,
                                              cache_position)
        # parallel residual: attention and MLP both read the same normalised input
        return attn_output + self.mlp(hidden_states) + residual, attn_weights


class CodeGenPreTrainedModel(PreTrainedModel):
    config_class = CodeGenConfig
    base_model_prefix = "transformer"
    supports_gradient_checkpointing = True
    _no_split_modules = ["CodeGenBlock"]
    # old checkpoints carry the causal-mask buffers; masks are built per call
    _keys_to_ignore_on_load_unexpected = [r"attn\.bias$", r"attn\.masked_bias$"]


class CodeGenModel(CodeGenPreTrainedModel):
    def __init__(self, config: CodeGenConfig):
        super().__init__(config)
        self.embed_dim = config.n_embd
        self.vocab_size = config.vocab_size
        self.wte = Embedding(config.vocab_size, self.embed_dim)
        self.drop = Dropout(config.embd_pdrop)
        self.h = nn.CellList([CodeGenBlock(config, layer_idx=i) for i in range(config.n_layer)])
        self.ln_f = LayerNorm(self.embed_dim, eps=config.layer_norm_epsilon)
        self.rotary_emb = CodeGenRotaryEmbedding(config)
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.post_init()

    def get_input_embeddings(self):
        return self.wte

    def set_input_embeddings(self, new_embeddings):
        self.wte = new_embeddings

    def construct(self, input_ids=None, past_key_values=None, attention_mask=None, token_type_ids=None,
                  position_ids=None, inputs_embeds=None, use_cache=None, output_attentions=None,
                  output_hidden_states=None, return_dict=None, cache_position=None, **kwargs):
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        use_cache = use_cache if use_cache is not None else self.config.use_cache
        return_dict = return_dict if return_dict is not None else True
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")

        if inputs_embeds is None:
            inputs_embeds = self.wte(input_ids)
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
        if token_type_ids is not None:
            # GPT-J has no token-type table: token types index the word embeddings
            hidden_states = hidden_states + self.wte(token_type_ids.reshape(-1, seq_len))
        hidden_states = self.drop(hidden_states)
        sin, cos = self.rotary_emb(hidden_states, position_ids)
        key_rotation = F.rotary_matrix(cos, sin, head_dim=self.head_dim, interleaved=True)
        position_embeddings = (key_rotation * (self.head_dim ** -0.5), key_rotation)

        all_hidden_states = () if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for block in self.h:
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            hidden_states, attn_weights = block(hidden_states, position_embeddings, causal_mask, past_key_values,
                                                cache_position)
            if output_attentions:
                all_attentions += (attn_weights,)

        hidden_states = self.ln_f(hidden_states)
        if output_hidden_states:
            all_hidden_states += (hidden_states,)

        return model_output(BaseModelOutputWithPast, {
            "last_hidden_state": hidden_states,
            "past_key_values": past_key_values if use_cache else None,
            "hidden_states": all_hidden_states,
            "attentions": all_attentions,
        }, return_dict)


class CodeGenForCausalLM(CodeGenPreTrainedModel, GenerationMixin):
    _supports_static_cache = True  # forward runs under mindspore.jit with a StaticCache (compiled decoding)
    _tied_weights_keys = {"lm_head.weight": "transformer.wte.weight"}

    def __init__(self, config: CodeGenConfig):
        super().__init__(config)
        self.transformer = CodeGenModel(config)
        self.lm_head = Linear(config.n_embd, config.vocab_size)
        self.post_init()

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    def construct(self, input_ids=None, past_key_values=None, attention_mask=None, token_type_ids=None,
                  position_ids=None, inputs_embeds=None, labels=None, use_cache=None, output_attentions=None,
                  output_hidden_states=None, return_dict=None, cache_position=None, logits_to_keep=0, **kwargs):
        r"""
        labels: (B, S) token ids for the next-token loss; -100 positions are ignored. Labels are shifted inside.
        logits_to_keep: if > 0, logits only for the last `logits_to_keep` positions (generation needs one).
        """
        return_dict = return_dict if return_dict is not None else True
        outputs = self.transformer(
            input_ids=input_ids, past_key_values=past_key_values, attention_mask=attention_mask,
            token_type_ids=token_type_ids, position_ids=position_ids, inputs_embeds=inputs_embeds,
            use_cache=use_cache, output_attentions=output_attentions, output_hidden_states=output_hidden_states,
            return_dict=True, cache_position=cache_position,
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


__all__ = [
    "CodeGenForCausalLM",
    "CodeGenModel",
    "CodeGenPreTrainedModel",
]
