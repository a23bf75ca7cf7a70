"""GPT-2 on MindSpore: HF's `modeling_gpt2.py` structure, names and outputs; device concerns live in `backend`.

GPT-2 is a pre-norm decoder with learned absolute positions (`wpe`), fused q/k/v projections and HF's `Conv1D`
layers (weights stored (in, out), the transpose of a Linear), an LM head tied to the token embeddings and, with
`config.add_cross_attention`, cross-attention over an encoder's output (decoder of an encoder-decoder model).
"""

import mindspore as ms
import numpy as np
from mindspore import nn, ops
from transformers import GPT2Config

from ...backend import functional as F
from ...backend import runtime
from ...backend.layers import Dropout, Embedding, LayerNorm, Linear, new_parameter
from ...cache_utils import DynamicCache, EncoderDecoderCache
from ...generation import GenerationMixin
from ...loss_utils import causal_lm_loss, question_answering_loss, sequence_classification_loss
from ...loss_utils import token_classification_loss
from ...masking_utils import create_bidirectional_mask, create_causal_mask
from ...modeling_layers import GradientCheckpointingLayer, last_non_pad_logits
from ...modeling_outputs import (
    model_output,
    BaseModelOutputWithPastAndCrossAttentions,
    CausalLMOutputWithCrossAttentions,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutputWithPast,
    TokenClassifierOutput,
)
from ...modeling_utils import PreTrainedModel, init_parameter


class Conv1D(nn.Cell):
    """HF's `Conv1D`: a linear layer whose weight is stored (in_features, out_features), y = x @ W + b."""

    def __init__(self, nf, nx):
        super().__init__()
        self.nf = nf
        self.nx = nx
        self.weight = new_parameter((nx, nf), "normal")
        self.bias = new_parameter((nf,), "zeros")

    def construct(self, x):
        shape = x.shape
        out = F.matmul(x.reshape(-1, shape[-1]), self.weight) + self.bias
        return out.reshape(shape[:-1] + (self.nf,))

    def extend_repr(self):
        return f"nf={self.nf}, nx={self.nx}"


class GPT2Attention(nn.Cell):
    def __init__(self, config, is_cross_attention=False, layer_idx=None):
        super().__init__()
        self.config = config
        self.embed_dim = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = self.embed_dim // self.num_heads
        self.split_size = self.embed_dim
        if self.head_dim * self.num_heads != self.embed_dim:
            raise ValueError(f"`embed_dim` must be divisible by num_heads (got `embed_dim`: {self.embed_dim} and "
                             f"`num_heads`: {self.num_heads}).")
        self.layer_idx = layer_idx
        self.is_cross_attention = is_cross_attention
        self.reorder_and_upcast_attn = config.reorder_and_upcast_attn
        # one factor for both options: 1/sqrt(head_dim) and (GPT-2 "mistral" variants) 1/(layer_idx + 1)
        self.scaling = 1.0
        if config.scale_attn_weights:
            self.scaling = self.head_dim ** -0.5
        if config.scale_attn_by_inverse_layer_idx:
            self.scaling /= float(layer_idx + 1)
        if is_cross_attention:
            # queries from the decoder, keys and values from the encoder output
            self.c_attn = Conv1D(2 * self.embed_dim, self.embed_dim)
            self.q_attn = Conv1D(self.embed_dim, self.embed_dim)
        else:
            self.c_attn = Conv1D(3 * self.embed_dim, self.embed_dim)
        self.c_proj = Conv1D(self.embed_dim, self.embed_dim)
        self.attn_dropout_p = config.attn_pdrop
        self.resid_dropout = Dropout(config.resid_pdrop)

    def construct(self, hidden_states, attention_mask=None, past_key_values=None, cache_position=None,
                  encoder_hidden_states=None):
        batch, seq_len = hidden_states.shape[:2]
        d = self.split_size
        # (B, S, H*D) -> (B, H, S, D); swapaxes because Tensor.transpose(1, 2) fails inside jit on CPU
        if self.is_cross_attention:
            query_states = self.q_attn(hidden_states).reshape(batch, seq_len, -1, self.head_dim).swapaxes(1, 2)
            # an encoder-decoder cache keeps the encoder's keys/values from the first step on; `is_updated` is a
            # host-side flag, so a compiled decode step reads them from the cache without projecting again
            cross_cache = getattr(past_key_values, "cross_attention_cache", None)
            if cross_cache is not None and past_key_values.is_updated.get(self.layer_idx):
                key_states = cross_cache.key_cache[self.layer_idx]
                value_states = cross_cache.value_cache[self.layer_idx]
            else:
                kv = self.c_attn(encoder_hidden_states)
                enc_len = encoder_hidden_states.shape[1]
                key_states = kv[..., :d].reshape(batch, enc_len, -1, self.head_dim).swapaxes(1, 2)
                value_states = kv[..., d:].reshape(batch, enc_len, -1, self.head_dim).swapaxes(1, 2)
                if cross_cache is not None:
                    slots = F.arange(0, enc_len, dtype=ms.int64)
                    key_states, value_states = cross_cache.update(key_states, value_states, self.layer_idx,
                                                                  {"cache_position": slots})
                    past_key_values.is_updated[self.layer_idx] = True
        else:
            qkv = self.c_attn(hidden_states)
            query_states = qkv[..., :d].reshape(batch, seq_len, -1, self.head_dim).swapaxes(1, 2)
            key_states = qkv[..., d:2 * d].reshape(batch, seq_len, -1, self.head_dim).swapaxes(1, 2)
            value_states = qkv[..., 2 * d:].reshape(batch, seq_len, -1, self.head_dim).swapaxes(1, 2)

        if past_key_values is not None and not self.is_cross_attention:
            # an EncoderDecoderCache passes this to its self-attention part
            key_states, value_states = past_key_values.update(
                key_states, value_states, self.layer_idx, {"cache_position": cache_position}
            )

        dtype = query_states.dtype
        if self.reorder_and_upcast_attn:
            # HF's option for fp16 training: scores (and here the whole attention) in float32
            query_states, key_states = query_states.astype(ms.float32), key_states.astype(ms.float32)
            value_states = value_states.astype(ms.float32)
            if attention_mask is not None:
                attention_mask = attention_mask.astype(ms.float32)
        attn_output, attn_weights = F.attention(
            query_states, key_states, value_states, attn_mask=attention_mask, scale=self.scaling,
            dropout_p=self.attn_dropout_p if self.training else 0.0, training=self.training,
        )
        attn_output = attn_output.astype(dtype).swapaxes(1, 2).reshape(batch, seq_len, -1)
        attn_output = self.resid_dropout(self.c_proj(attn_output))
        return attn_output, attn_weights


class GPT2MLP(nn.Cell):
    def __init__(self, intermediate_size, config):
        super().__init__()
        embed_dim = config.hidden_size
        self.c_fc = Conv1D(intermediate_size, embed_dim)
        self.c_proj = Conv1D(embed_dim, intermediate_size)
        self.act = F.get_activation(config.activation_function)
        self.dropout = Dropout(config.resid_pdrop)

    def construct(self, hidden_states):
        return self.dropout(self.c_proj(self.act(self.c_fc(hidden_states))))


class GPT2Block(GradientCheckpointingLayer):
    def __init__(self, config, layer_idx=None):
        super().__init__()
        hidden_size = config.hidden_size
        inner_dim = config.n_inner if config.n_inner is not None else 4 * hidden_size
        self.ln_1 = LayerNorm(hidden_size, eps=config.layer_norm_epsilon)
        self.attn = GPT2Attention(config=config, layer_idx=layer_idx)
        self.ln_2 = LayerNorm(hidden_size, eps=config.layer_norm_epsilon)
        self.add_cross_attention = config.add_cross_attention
        if config.add_cross_attention:
            self.crossattention = GPT2Attention(config=config, is_cross_attention=True, layer_idx=layer_idx)
            self.ln_cross_attn = LayerNorm(hidden_size, eps=config.layer_norm_epsilon)
        self.mlp = GPT2MLP(inner_dim, config)

    def construct(self, hidden_states, attention_mask=None, past_key_values=None, cache_position=None,
                  encoder_hidden_states=None, encoder_attention_mask=None):
        residual = hidden_states
        attn_output, attn_weights = self.attn(self.ln_1(hidden_states), attention_mask, past_key_values,
                                              cache_position)
        hidden_states = attn_output + residual
        cross_weights = None
        if encoder_hidden_states is not None:
            if not self.add_cross_attention:
                raise ValueError("encoder_hidden_states were passed but the model has no cross-attention layers "
                                 "(set config.add_cross_attention=True)")
            cross_output, cross_weights = self.crossattention(self.ln_cross_attn(hidden_states),
                                                              encoder_attention_mask, past_key_values, None,
                                                              encoder_hidden_states)
            hidden_states = hidden_states + cross_output
        hidden_states = hidden_states + self.mlp(self.ln_2(hidden_states))
        return hidden_states, attn_weights, cross_weights


class GPT2PreTrainedModel(PreTrainedModel):
    config_class = GPT2Config
    base_model_prefix = "transformer"
    supports_gradient_checkpointing = True
    _no_split_modules = ["GPT2Block"]
    # old checkpoints carry the causal-mask buffers `attn.bias` / `attn.masked_bias`; masks are built per call
    _keys_to_ignore_on_load_unexpected = [r"attn\.bias$", r"attn\.masked_bias$", r"crossattention\.bias$"]

    def _init_weights(self, cell):
        super()._init_weights(cell)
        std = self.config.initializer_range
        if isinstance(cell, Conv1D):
            init_parameter(cell.weight, ms.common.initializer.Normal(std))
            init_parameter(cell.bias, "zeros")
        if isinstance(cell, (GPT2Attention, GPT2MLP)):
            # GPT-2's scheme: residual projections scaled by 1/sqrt(2 * n_layer)
            init_parameter(cell.c_proj.weight,
                           ms.common.initializer.Normal(std / (2 * self.config.n_layer) ** 0.5))


class GPT2Model(GPT2PreTrainedModel):
    def __init__(self, config: GPT2Config):
        super().__init__(config)
        self.embed_dim = config.hidden_size
        self.wte = Embedding(config.vocab_size, self.embed_dim)
        self.wpe = Embedding(config.max_position_embeddings, self.embed_dim)
        self.drop = Dropout(config.embd_pdrop)
        self.h = nn.CellList([GPT2Block(config, layer_idx=i) for i in range(config.num_hidden_layers)])
        self.ln_f = LayerNorm(self.embed_dim, eps=config.layer_norm_epsilon)
        self.post_init()

    def get_input_embeddings(self):
        return self.wte

    def set_input_embeddings(self, new_embeddings):
        self.wte = new_embeddings

    def construct(self, input_ids=None, past_key_values=None, attention_mask=None, token_type_ids=None,
                  position_ids=None, inputs_embeds=None, encoder_hidden_states=None, encoder_attention_mask=None,
                  use_cache=None, output_attentions=None, output_hidden_states=None, return_dict=None,
                  cache_position=None, **kwargs):
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        use_cache = use_cache if use_cache is not None else self.config.use_cache
        return_dict = return_dict if return_dict is not None else True
        if input_ids is not None and inputs_embeds is not None:
            raise ValueError("You cannot specify both input_ids and inputs_embeds at the same time")
        if input_ids is None and inputs_embeds is None:
            raise ValueError("You have to specify either input_ids or inputs_embeds")

        if inputs_embeds is None:
            inputs_embeds = self.wte(input_ids)
        batch_size, seq_len = inputs_embeds.shape[:2]

        if use_cache and not runtime.in_graph():
            # a growing cache only exists in PyNative; compiled decoding passes a StaticCache
            if past_key_values is None:
                past_key_values = DynamicCache(config=self.config)
            if encoder_hidden_states is not None and not isinstance(past_key_values, EncoderDecoderCache):
                # as HF: with cross-attention layers the cache also holds the encoder's keys/values
                past_key_values = EncoderDecoderCache(past_key_values, DynamicCache(config=self.config))
        if cache_position is None:
            past_seen = past_key_values.get_seq_length() if past_key_values is not None else 0
            cache_position = F.arange(past_seen, past_seen + seq_len, dtype=ms.int64)
        if position_ids is None:
            position_ids = cache_position[None, :]

        hidden_states = inputs_embeds + self.wpe(position_ids).astype(inputs_embeds.dtype)
        if token_type_ids is not None:
            # GPT-2 has no token-type table: token types index the word embeddings
            hidden_states = hidden_states + self.wte(token_type_ids)
        hidden_states = self.drop(hidden_states)

        if past_key_values is not None and past_key_values.get_max_cache_shape() is not None:
            kv_length = past_key_values.get_max_cache_shape()
        elif past_key_values is not None:
            kv_length = past_key_values.get_seq_length() + seq_len
        else:
            kv_length = seq_len
        causal_mask = create_causal_mask(attention_mask, batch_size, cache_position, kv_length, inputs_embeds.dtype)
        encoder_mask = None
        if encoder_hidden_states is not None and encoder_attention_mask is not None:
            encoder_mask = create_bidirectional_mask(encoder_attention_mask, seq_len, inputs_embeds.dtype)

        all_hidden_states = () if output_hidden_states else None
        all_attentions = () if output_attentions else None
        all_cross = () if output_attentions and encoder_hidden_states is not None else None
        for block in self.h:
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            hidden_states, attn_weights, cross_weights = block(hidden_states, causal_mask, past_key_values,
                                                               cache_position, encoder_hidden_states, encoder_mask)
            if output_attentions:
                all_attentions += (attn_weights,)
                if all_cross is not None:
                    all_cross += (cross_weights,)

        hidden_states = self.ln_f(hidden_states)
        if output_hidden_states:
            all_hidden_states += (hidden_states,)

        return model_output(BaseModelOutputWithPastAndCrossAttentions, {
            "last_hidden_state": hidden_states,
            "past_key_values": past_key_values if use_cache else None,
            "hidden_states": all_hidden_states,
            "attentions": all_attentions,
            "cross_attentions": all_cross,
        }, return_dict)


class GPT2LMHeadModel(GPT2PreTrainedModel, GenerationMixin):
    _supports_static_cache = True  # forward runs under mindspore.jit with a StaticCache (compiled decoding)
    # as the decoder of an encoder-decoder model, the cross-attention reads the encoder's keys/values from an
    # EncoderDecoderStaticCache, so that model's decoding compiles too
    _caches_cross_attention = True
    _tied_weights_keys = {"lm_head.weight": "transformer.wte.weight"}

    def __init__(self, config: GPT2Config):
        super().__init__(config)
        self.transformer = GPT2Model(config)
        self.lm_head = Linear(config.n_embd, config.vocab_size, bias=False)
        self.post_init()

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    def generate(self, *args, **kwargs):
        if kwargs.get("token_type_ids") is not None or kwargs.get("encoder_hidden_states") is not None:
            # the compiled decode step feeds ids, mask and positions only: token types and encoder states need the
            # eager loop
            kwargs.setdefault("cache_implementation", "dynamic")
        return super().generate(*args, **kwargs)

    def prepare_inputs_for_generation(self, input_ids, past_key_values=None, **kwargs):
        token_type_ids = kwargs.pop("token_type_ids", None)
        model_inputs = super().prepare_inputs_for_generation(input_ids, past_key_values=past_key_values, **kwargs)
        if token_type_ids is not None:
            if not isinstance(token_type_ids, ms.Tensor):
                token_type_ids = ms.Tensor(np.asarray(token_type_ids, np.int64))
            # token types cover the prompt; generated tokens repeat the last type (as HF extends them)
            new = model_inputs["input_ids"].shape[1] if model_inputs.get("input_ids") is not None \
                else model_inputs["inputs_embeds"].shape[1]
            total = input_ids.shape[1]
            if token_type_ids.shape[1] < total:
                extra = ops.broadcast_to(token_type_ids[:, -1:], (token_type_ids.shape[0],
                                                                   total - token_type_ids.shape[1]))
                token_type_ids = F.cat([token_type_ids, extra], -1)
            model_inputs["token_type_ids"] = token_type_ids[:, total - new:total]
        return model_inputs

    def construct(self, input_ids=None, past_key_values=None, attention_mask=None, token_type_ids=None,
                  position_ids=None, inputs_embeds=None, encoder_hidden_states=None, encoder_attention_mask=None,
                  labels=None, use_cache=None, output_attentions=None, output_hidden_states=None, return_dict=None,
                  cache_position=None, logits_to_keep=0, **kwargs):
        r"""
        labels: (B, S) token ids for the next-token loss; -100 positions are ignored. Labels are shifted inside.
        logits_to_keep: if > 0, logits only for the last `logits_to_keep` positions (generation needs one).
        """
        return_dict = return_dict if return_dict is not None else True
        outputs = self.transformer(
            input_ids=input_ids, past_key_values=past_key_values, attention_mask=attention_mask,
            token_type_ids=token_type_ids, position_ids=position_ids, inputs_embeds=inputs_embeds,
            encoder_hidden_states=encoder_hidden_states, encoder_attention_mask=encoder_attention_mask,
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

        return model_output(CausalLMOutputWithCrossAttentions, {
            "loss": loss,
            "logits": logits,
            "past_key_values": outputs.get("past_key_values"),
            "hidden_states": outputs.get("hidden_states"),
            "attentions": outputs.get("attentions"),
            "cross_attentions": outputs.get("cross_attentions"),
        }, return_dict)


class GPT2ForSequenceClassification(GPT2PreTrainedModel):
    """Scores the last non-padding token of each row (the rightmost token != pad_token_id)."""

    def __init__(self, config: GPT2Config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.transformer = GPT2Model(config)
        self.score = Linear(config.n_embd, self.num_labels, bias=False)
        self.post_init()

    def construct(self, input_ids=None, past_key_values=None, attention_mask=None, token_type_ids=None,
                  position_ids=None, inputs_embeds=None, labels=None, use_cache=None, output_attentions=None,
                  output_hidden_states=None, return_dict=None, cache_position=None, **kwargs):
        return_dict = return_dict if return_dict is not None else True
        outputs = self.transformer(
            input_ids=input_ids, past_key_values=past_key_values, attention_mask=attention_mask,
            token_type_ids=token_type_ids, position_ids=position_ids, inputs_embeds=inputs_embeds, use_cache=use_cache,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states, return_dict=True,
            cache_position=cache_position,
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


class GPT2ForTokenClassification(GPT2PreTrainedModel):
    def __init__(self, config: GPT2Config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.transformer = GPT2Model(config)
        if getattr(config, "classifier_dropout", None) is not None:
            classifier_dropout = config.classifier_dropout
        elif getattr(config, "hidden_dropout", None) is not None:
            classifier_dropout = config.hidden_dropout
        else:
            classifier_dropout = 0.1
        self.dropout = Dropout(classifier_dropout)
        self.classifier = Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def construct(self, input_ids=None, past_key_values=None, attention_mask=None, token_type_ids=None,
                  position_ids=None, inputs_embeds=None, labels=None, use_cache=None, output_attentions=None,
                  output_hidden_states=None, return_dict=None, cache_position=None, **kwargs):
        return_dict = return_dict if return_dict is not None else True
        outputs = self.transformer(
            input_ids=input_ids, past_key_values=past_key_values, attention_mask=attention_mask,
            token_type_ids=token_type_ids, position_ids=position_ids, inputs_embeds=inputs_embeds, use_cache=use_cache,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states, return_dict=True,
            cache_position=cache_position,
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


class GPT2ForQuestionAnswering(GPT2PreTrainedModel):
    def __init__(self, config: GPT2Config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.transformer = GPT2Model(config)
        self.qa_outputs = Linear(config.hidden_size, 2)
        self.post_init()

    def construct(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                  inputs_embeds=None, start_positions=None, end_positions=None, output_attentions=None,
                  output_hidden_states=None, return_dict=None, **kwargs):
        return_dict = return_dict if return_dict is not None else True
        outputs = self.transformer(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
            position_ids=position_ids, inputs_embeds=inputs_embeds, use_cache=False,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states, return_dict=True,
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
    "GPT2ForQuestionAnswering",
    "GPT2ForSequenceClassification",
    "GPT2ForTokenClassification",
    "GPT2LMHeadModel",
    "GPT2Model",
    "GPT2PreTrainedModel",
]
