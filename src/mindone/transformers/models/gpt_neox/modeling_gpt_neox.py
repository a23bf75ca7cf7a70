"""GPT-NeoX (Pythia, GPT-NeoX-20B, ...) on MindSpore: HF's `modeling_gpt_neox.py` structure, names and outputs; device
concerns live in `backend`.

GPT-NeoX is a pre-norm decoder with one fused `query_key_value` projection laid out per head ([q_h; k_h; v_h] for
each head h, not [all q; all k; all v]), RoPE on the first `partial_rotary_factor` of each head (Pythia: 1/4), and
by default a parallel residual: attention and MLP read separately normalised copies of the same input.
"""

import mindspore as ms
from mindspore import Tensor, nn
from transformers import GPTNeoXConfig

from ...backend import functional as F
from ...backend import runtime
from ...backend.layers import Dropout, Embedding, LayerNorm, Linear
from ...cache_utils import DynamicCache
from ...generation import GenerationMixin
from ...loss_utils import (
    causal_lm_loss,
    question_answering_loss,
    sequence_classification_loss,
    token_classification_loss,
)
from ...masking_utils import create_causal_mask
from ...modeling_layers import GradientCheckpointingLayer, last_non_pad_logits
from ...modeling_outputs import (
    BaseModelOutputWithPast,
    CausalLMOutputWithPast,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutputWithPast,
    TokenClassifierOutput,
    model_output,
)
from ...modeling_rope_utils import compute_rope_parameters
from ...modeling_utils import PreTrainedModel


class GPTNeoXMLP(nn.Cell):
    def __init__(self, config):
        super().__init__()
        self.dense_h_to_4h = Linear(config.hidden_size, config.intermediate_size)
        self.dense_4h_to_h = Linear(config.intermediate_size, config.hidden_size)
        self.act = F.get_activation(config.hidden_act)

    def construct(self, hidden_states):
        return self.dense_4h_to_h(self.act(self.dense_h_to_4h(hidden_states)))


class GPTNeoXRotaryEmbedding(nn.Cell):
    """cos/sin tables (rotary features only) for the given positions; the frequencies are a constant, not a weight."""

    def __init__(self, config: GPTNeoXConfig):
        super().__init__()
        self.config = config
        self.rope_type = config.rope_parameters.get("rope_type", "default")
        if self.rope_type == "dynamic":
            raise ValueError("GPTNeoXRotaryEmbedding: rope_type 'dynamic' is not supported")
        inv_freq, self.attention_scaling = compute_rope_parameters(config)
        self.inv_freq = Tensor(inv_freq)

    def construct(self, x, position_ids):
        freqs = position_ids.reshape(position_ids.shape + (1,)).astype(ms.float32) * self.inv_freq
        emb = F.cat([freqs, freqs], -1)
        cos, sin = emb.cos(), emb.sin()
        if self.attention_scaling != 1.0:
            cos, sin = cos * self.attention_scaling, sin * self.attention_scaling
        return cos.astype(x.dtype), sin.astype(x.dtype)


class GPTNeoXAttention(nn.Cell):
    def __init__(self, config, layer_idx=None):
        super().__init__()
        self.config = config
        self.head_size = config.hidden_size // config.num_attention_heads
        self.attention_dropout = config.attention_dropout
        partial_rotary_factor = config.rope_parameters.get("partial_rotary_factor", 1.0)
        self.rotary_ndims = int(self.head_size * partial_rotary_factor)
        self.scaling = self.head_size ** -0.5
        self.layer_idx = layer_idx
        self.query_key_value = Linear(config.hidden_size, 3 * config.hidden_size, bias=config.attention_bias)
        self.dense = Linear(config.hidden_size, config.hidden_size, bias=config.attention_bias)

    def construct(self, hidden_states, position_embeddings, attention_mask=None, past_key_values=None,
                  cache_position=None):
        batch, seq_len = hidden_states.shape[:2]
        d = self.head_size
        # per head: [query; key; value] (B, S, H, 3D)
        qkv = self.query_key_value(hidden_states).reshape(batch, seq_len, -1, 3 * d)
        # partial RoPE as one matmul per tensor (B, S, H, D) -> (B, H, S, D): the rotation matrices rotate the first
        # rotary_ndims features and pass the rest through; the queries' also carries self.scaling
        query_rotation, key_rotation = position_embeddings
        query_states = F.apply_rotary_matrix(qkv[..., :d], query_rotation)
        key_states = F.apply_rotary_matrix(qkv[..., d:2 * d], key_rotation)
        value_states = qkv[..., 2 * d:].swapaxes(1, 2)

        if past_key_values is not None:
            key_states, value_states = past_key_values.update(
                key_states, value_states, self.layer_idx, {"cache_position": cache_position}
            )

        attn_output, attn_weights = F.attention(
            query_states, key_states, value_states, attn_mask=attention_mask,
            scale=1.0,  # self.scaling is folded into the query rotation
            dropout_p=self.attention_dropout if self.training else 0.0, training=self.training,
        )
        attn_output = attn_output.swapaxes(1, 2).reshape(batch, seq_len, -1)
        return self.dense(attn_output), attn_weights


class GPTNeoXLayer(GradientCheckpointingLayer):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.use_parallel_residual = config.use_parallel_residual
        self.input_layernorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_attention_layernorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_attention_dropout = Dropout(config.hidden_dropout)
        self.post_mlp_dropout = Dropout(config.hidden_dropout)
        self.attention = GPTNeoXAttention(config, layer_idx)
        self.mlp = GPTNeoXMLP(config)

    def construct(self, hidden_states, position_embeddings, attention_mask=None, past_key_values=None,
                  cache_position=None):
        attn_output, attn_weights = self.attention(
            self.input_layernorm(hidden_states), position_embeddings, attention_mask, past_key_values, cache_position
        )
        attn_output = self.post_attention_dropout(attn_output)
        if self.use_parallel_residual:
            # x + attn(ln1(x)) + mlp(ln2(x))
            mlp_output = self.post_mlp_dropout(self.mlp(self.post_attention_layernorm(hidden_states)))
            hidden_states = mlp_output + attn_output + hidden_states
        else:
            # x = x + attn(ln1(x)); x + mlp(ln2(x))
            attn_output = attn_output + hidden_states
            mlp_output = self.post_mlp_dropout(self.mlp(self.post_attention_layernorm(attn_output)))
            hidden_states = mlp_output + attn_output
        return hidden_states, attn_weights


class GPTNeoXPreTrainedModel(PreTrainedModel):
    config_class = GPTNeoXConfig
    base_model_prefix = "gpt_neox"
    supports_gradient_checkpointing = True
    _no_split_modules = ["GPTNeoXLayer"]
    # old checkpoints carry the causal-mask buffers; masks are built per call
    _keys_to_ignore_on_load_unexpected = [r"attention\.bias$", r"attention\.masked_bias$"]


class GPTNeoXModel(GPTNeoXPreTrainedModel):
    def __init__(self, config: GPTNeoXConfig):
        super().__init__(config)
        self.config = config
        self.embed_in = Embedding(config.vocab_size, config.hidden_size)
        self.emb_dropout = Dropout(config.hidden_dropout)
        self.layers = nn.CellList([GPTNeoXLayer(config, i) for i in range(config.num_hidden_layers)])
        self.final_layer_norm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.rotary_emb = GPTNeoXRotaryEmbedding(config=config)
        self.head_size = config.hidden_size // config.num_attention_heads
        self.post_init()

    def get_input_embeddings(self):
        return self.embed_in

    def set_input_embeddings(self, value):
        self.embed_in = value

    def construct(self, input_ids=None, attention_mask=None, position_ids=None, inputs_embeds=None,
                  past_key_values=None, use_cache=None, output_attentions=None, output_hidden_states=None,
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
            inputs_embeds = self.embed_in(input_ids)
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

        hidden_states = self.emb_dropout(inputs_embeds)
        cos, sin = self.rotary_emb(hidden_states, position_ids)
        key_rotation = F.rotary_matrix(cos, sin, head_dim=self.head_size)
        position_embeddings = (key_rotation * (self.head_size ** -0.5), key_rotation)

        all_hidden_states = () if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layers:
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            hidden_states, attn_weights = layer(
                hidden_states, position_embeddings, causal_mask, past_key_values, cache_position
            )
            if output_attentions:
                all_attentions += (attn_weights,)

        hidden_states = self.final_layer_norm(hidden_states)
        if output_hidden_states:
            all_hidden_states += (hidden_states,)

        return model_output(BaseModelOutputWithPast, {
            "last_hidden_state": hidden_states,
            "past_key_values": past_key_values if use_cache else None,
            "hidden_states": all_hidden_states,
            "attentions": all_attentions,
        }, return_dict)


class GPTNeoXForCausalLM(GPTNeoXPreTrainedModel, GenerationMixin):
    _supports_static_cache = True  # forward runs under mindspore.jit with a StaticCache (compiled decoding)
    _tied_weights_keys = {"lm_head.weight": "gpt_neox.embed_in.weight"}

    def __init__(self, config: GPTNeoXConfig):
        super().__init__(config)
        self.gpt_neox = GPTNeoXModel(config)
        self.lm_head = Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    @classmethod
    def _fix_checkpoint_key(cls, key: str) -> str:
        # checkpoints written before transformers 5 call the LM head `embed_out`
        if key.startswith("embed_out."):
            key = "lm_head." + key[len("embed_out."):]
        return super()._fix_checkpoint_key(key)

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    def construct(self, input_ids=None, attention_mask=None, position_ids=None, inputs_embeds=None,
                  past_key_values=None, labels=None, use_cache=None, output_attentions=None,
                  output_hidden_states=None, return_dict=None, cache_position=None, logits_to_keep=0, **kwargs):
        r"""
        labels: (B, S) token ids for the next-token loss; -100 positions are ignored. Labels are shifted inside.
        logits_to_keep: if > 0, logits only for the last `logits_to_keep` positions (generation needs one).
        """
        return_dict = return_dict if return_dict is not None else True
        outputs = self.gpt_neox(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
            inputs_embeds=inputs_embeds, past_key_values=past_key_values, use_cache=use_cache,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states, return_dict=True,
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


class GPTNeoXForSequenceClassification(GPTNeoXPreTrainedModel):
    """Scores the last non-padding token of each row (the rightmost token != pad_token_id)."""

    def __init__(self, config: GPTNeoXConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.gpt_neox = GPTNeoXModel(config)
        self.score = Linear(config.hidden_size, self.num_labels, bias=False)
        self.post_init()

    def construct(self, input_ids=None, attention_mask=None, position_ids=None, inputs_embeds=None,
                  past_key_values=None, labels=None, use_cache=None, output_attentions=None,
                  output_hidden_states=None, return_dict=None, **kwargs):
        return_dict = return_dict if return_dict is not None else True
        outputs = self.gpt_neox(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
            inputs_embeds=inputs_embeds, past_key_values=past_key_values, use_cache=use_cache,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states, return_dict=True,
        )
        logits = self.score(outputs["last_hidden_state"])
        pooled_logits = last_non_pad_logits(logits, input_ids, inputs_embeds, self.config.pad_token_id)
        loss = None
        if labels is not None:
            loss = sequence_classification_loss(labels, pooled_logits, self.config)
        return model_output(SequenceClassifierOutputWithPast, {
            "loss": loss,
            "logits": pooled_logits,
            "past_key_values": outputs.get("past_key_values"),
            "hidden_states": outputs.get("hidden_states"),
            "attentions": outputs.get("attentions"),
        }, return_dict)


class GPTNeoXForTokenClassification(GPTNeoXPreTrainedModel):
    def __init__(self, config: GPTNeoXConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.gpt_neox = GPTNeoXModel(config)
        self.dropout = Dropout(config.classifier_dropout)
        self.classifier = Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def construct(self, input_ids=None, past_key_values=None, attention_mask=None, token_type_ids=None,
                  position_ids=None, inputs_embeds=None, labels=None, use_cache=None, output_attentions=None,
                  output_hidden_states=None, return_dict=None, **kwargs):
        return_dict = return_dict if return_dict is not None else True
        outputs = self.gpt_neox(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
            inputs_embeds=inputs_embeds, past_key_values=past_key_values, use_cache=use_cache,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states, return_dict=True,
        )
        logits = self.classifier(self.dropout(outputs["last_hidden_state"]))
        loss = None
        if labels is not None:
            loss = token_classification_loss(logits, labels, self.num_labels)
        return model_output(TokenClassifierOutput, {
            "loss": loss,
            "logits": logits,
            "hidden_states": outputs.get("hidden_states"),
            "attentions": outputs.get("attentions"),
        }, return_dict)


class GPTNeoXForQuestionAnswering(GPTNeoXPreTrainedModel):
    def __init__(self, config: GPTNeoXConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.gpt_neox = GPTNeoXModel(config)
        self.qa_outputs = Linear(config.hidden_size, 2)
        self.post_init()

    def construct(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                  inputs_embeds=None, start_positions=None, end_positions=None, output_attentions=None,
                  output_hidden_states=None, return_dict=None, **kwargs):
        return_dict = return_dict if return_dict is not None else True
        outputs = self.gpt_neox(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
            inputs_embeds=inputs_embeds, use_cache=False, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states, return_dict=True,
        )
        logits = self.qa_outputs(outputs["last_hidden_state"])
        start_logits = logits[..., 0]
        end_logits = logits[..., 1]
        loss = None
        if start_positions is not None and end_positions is not None:
            loss = question_answering_loss(start_logits, end_logits, start_positions, end_positions)
        return model_output(QuestionAnsweringModelOutput, {
            "loss": loss,
            "start_logits": start_logits,
            "end_logits": end_logits,
            "hidden_states": outputs.get("hidden_states"),
            "attentions": outputs.get("attentions"),
        }, return_dict)


__all__ = [
    "GPTNeoXForCausalLM",
    "GPTNeoXForQuestionAnswering",
    "GPTNeoXForSequenceClassification",
    "GPTNeoXForTokenClassification",
    "GPTNeoXLayer",
    "GPTNeoXModel",
    "GPTNeoXPreTrainedModel",
]
