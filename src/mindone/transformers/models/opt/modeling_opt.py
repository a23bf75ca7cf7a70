"""OPT on MindSpore: HF's `modeling_opt.py` structure, names and outputs; device concerns live in `backend`.

OPT is a decoder with learned absolute positions counted over the attention mask (a left-padded row starts at
position 0 at its first real token) and offset by 2 in the table, pre-norm (or, for opt-350m, post-norm) layers, and
for opt-350m a word-embedding size different from the hidden size (`project_in` / `project_out`).
"""

import mindspore as ms
from mindspore import nn
from transformers import OPTConfig

from ...backend import functional as F
from ...backend import runtime
from ...backend.layers import Dropout, Embedding, LayerNorm, Linear
from ...cache_utils import DynamicCache
from ...generation import GenerationMixin
from ...loss_utils import causal_lm_loss, question_answering_loss, sequence_classification_loss
from ...masking_utils import create_causal_mask
from ...modeling_layers import GradientCheckpointingLayer, last_non_pad_logits
from ...modeling_outputs import (
    BaseModelOutputWithPast,
    CausalLMOutputWithPast,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutputWithPast,
    model_output,
)
from ...modeling_utils import PreTrainedModel


class OPTLearnedPositionalEmbedding(Embedding):
    """Learned positions; OPT reserves the first 2 rows of the table (a fairseq convention), so row = position + 2."""

    def __init__(self, num_embeddings: int, embedding_dim: int):
        self.offset = 2
        super().__init__(num_embeddings + self.offset, embedding_dim)

    def construct(self, position_ids):
        return super().construct(position_ids + self.offset)


class OPTAttention(nn.Cell):
    def __init__(self, config: OPTConfig, layer_idx=None):
        super().__init__()
        self.config = config
        self.embed_dim = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.dropout = config.attention_dropout
        self.enable_bias = config.enable_bias
        self.layer_idx = layer_idx
        self.head_dim = self.embed_dim // self.num_heads
        if self.head_dim * self.num_heads != self.embed_dim:
            raise ValueError(f"embed_dim must be divisible by num_heads (got `embed_dim`: {self.embed_dim} and "
                             f"`num_heads`: {self.num_heads}).")
        self.scaling = self.head_dim ** -0.5
        self.k_proj = Linear(self.embed_dim, self.embed_dim, bias=self.enable_bias)
        self.v_proj = Linear(self.embed_dim, self.embed_dim, bias=self.enable_bias)
        self.q_proj = Linear(self.embed_dim, self.embed_dim, bias=self.enable_bias)
        self.out_proj = Linear(self.embed_dim, self.embed_dim, bias=self.enable_bias)

    def construct(self, hidden_states, attention_mask=None, past_key_values=None, cache_position=None):
        batch, seq_len = hidden_states.shape[:2]
        # (B, S, H*D) -> (B, H, S, D); swapaxes because Tensor.transpose(1, 2) fails inside jit on CPU.
        # OPT scales the queries, not the scores
        query_states = (self.q_proj(hidden_states) * self.scaling).reshape(batch, seq_len, -1, self.head_dim)
        query_states = query_states.swapaxes(1, 2)
        key_states = self.k_proj(hidden_states).reshape(batch, seq_len, -1, self.head_dim).swapaxes(1, 2)
        value_states = self.v_proj(hidden_states).reshape(batch, seq_len, -1, self.head_dim).swapaxes(1, 2)

        if past_key_values is not None:
            key_states, value_states = past_key_values.update(
                key_states, value_states, self.layer_idx, {"cache_position": cache_position}
            )

        attn_output, attn_weights = F.attention(
            query_states, key_states, value_states, attn_mask=attention_mask, scale=1.0,
            dropout_p=self.dropout if self.training else 0.0, training=self.training,
        )
        attn_output = attn_output.swapaxes(1, 2).reshape(batch, seq_len, -1)
        return self.out_proj(attn_output), attn_weights


class OPTDecoderLayer(GradientCheckpointingLayer):
    def __init__(self, config: OPTConfig, layer_idx=None):
        super().__init__()
        self.embed_dim = config.hidden_size
        self.self_attn = OPTAttention(config=config, layer_idx=layer_idx)
        self.do_layer_norm_before = config.do_layer_norm_before
        self.dropout = Dropout(config.dropout)
        self.activation_fn = F.get_activation(config.activation_function)
        self.self_attn_layer_norm = LayerNorm(self.embed_dim, elementwise_affine=config.layer_norm_elementwise_affine)
        self.fc1 = Linear(self.embed_dim, config.ffn_dim, bias=config.enable_bias)
        self.fc2 = Linear(config.ffn_dim, self.embed_dim, bias=config.enable_bias)
        self.final_layer_norm = LayerNorm(self.embed_dim, elementwise_affine=config.layer_norm_elementwise_affine)

    def construct(self, hidden_states, attention_mask=None, past_key_values=None, cache_position=None):
        # do_layer_norm_before: pre-norm (every OPT but opt-350m); otherwise each norm follows its residual add
        residual = hidden_states
        if self.do_layer_norm_before:
            hidden_states = self.self_attn_layer_norm(hidden_states)
        hidden_states, attn_weights = self.self_attn(hidden_states, attention_mask, past_key_values, cache_position)
        hidden_states = residual + self.dropout(hidden_states)
        if not self.do_layer_norm_before:
            hidden_states = self.self_attn_layer_norm(hidden_states)

        residual = hidden_states
        if self.do_layer_norm_before:
            hidden_states = self.final_layer_norm(hidden_states)
        hidden_states = self.fc2(self.activation_fn(self.fc1(hidden_states)))
        hidden_states = residual + self.dropout(hidden_states)
        if not self.do_layer_norm_before:
            hidden_states = self.final_layer_norm(hidden_states)
        return hidden_states, attn_weights


class OPTPreTrainedModel(PreTrainedModel):
    config_class = OPTConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["OPTDecoderLayer"]


class OPTDecoder(OPTPreTrainedModel):
    def __init__(self, config: OPTConfig):
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.max_target_positions = config.max_position_embeddings
        self.vocab_size = config.vocab_size
        self.embed_tokens = Embedding(config.vocab_size, config.word_embed_proj_dim, self.padding_idx)
        self.embed_positions = OPTLearnedPositionalEmbedding(config.max_position_embeddings, config.hidden_size)
        self.project_out = None
        self.project_in = None
        if config.word_embed_proj_dim != config.hidden_size:
            self.project_out = Linear(config.hidden_size, config.word_embed_proj_dim, bias=False)
            self.project_in = Linear(config.word_embed_proj_dim, config.hidden_size, bias=False)
        self.final_layer_norm = None
        if config.do_layer_norm_before and not config._remove_final_layer_norm:
            self.final_layer_norm = LayerNorm(config.hidden_size,
                                              elementwise_affine=config.layer_norm_elementwise_affine)
        self.layers = nn.CellList([OPTDecoderLayer(config, layer_idx=i) for i in range(config.num_hidden_layers)])
        self.post_init()

    def get_input_embeddings(self):
        return self.embed_tokens

    def set_input_embeddings(self, value):
        self.embed_tokens = value

    def construct(self, input_ids=None, attention_mask=None, past_key_values=None, inputs_embeds=None,
                  use_cache=None, position_ids=None, output_attentions=None, output_hidden_states=None,
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
            if attention_mask is None:
                position_ids = cache_position.reshape(1, -1)
            else:
                # count real tokens: padding gets -1, the first real token 0
                mask = attention_mask.astype(ms.int64)
                position_ids = F.cumsum(mask, 1) * mask - 1
                position_ids = position_ids[:, position_ids.shape[1] - seq_len:]

        if past_key_values is not None and past_key_values.get_max_cache_shape() is not None:
            kv_length = past_key_values.get_max_cache_shape()
        elif past_key_values is not None:
            kv_length = past_key_values.get_seq_length() + seq_len
        else:
            kv_length = seq_len
        causal_mask = create_causal_mask(attention_mask, batch_size, cache_position, kv_length, inputs_embeds.dtype)

        pos_embeds = self.embed_positions(position_ids)
        if self.project_in is not None:
            inputs_embeds = self.project_in(inputs_embeds)
        hidden_states = inputs_embeds + pos_embeds.astype(inputs_embeds.dtype)

        all_hidden_states = () if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for decoder_layer in self.layers:
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            hidden_states, attn_weights = decoder_layer(hidden_states, causal_mask, past_key_values, cache_position)
            if output_attentions:
                all_attentions += (attn_weights,)

        if self.final_layer_norm is not None:
            hidden_states = self.final_layer_norm(hidden_states)
        if self.project_out is not None:
            hidden_states = self.project_out(hidden_states)
        if output_hidden_states:
            all_hidden_states += (hidden_states,)

        return model_output(BaseModelOutputWithPast, {
            "last_hidden_state": hidden_states,
            "past_key_values": past_key_values if use_cache else None,
            "hidden_states": all_hidden_states,
            "attentions": all_attentions,
        }, return_dict)


class OPTModel(OPTPreTrainedModel):
    def __init__(self, config: OPTConfig):
        super().__init__(config)
        self.decoder = OPTDecoder(config)
        self.post_init()

    def get_input_embeddings(self):
        return self.decoder.embed_tokens

    def set_input_embeddings(self, value):
        self.decoder.embed_tokens = value

    def construct(self, input_ids=None, attention_mask=None, past_key_values=None, inputs_embeds=None,
                  use_cache=None, position_ids=None, output_attentions=None, output_hidden_states=None,
                  return_dict=None, cache_position=None, **kwargs):
        return self.decoder(
            input_ids=input_ids, attention_mask=attention_mask, past_key_values=past_key_values,
            inputs_embeds=inputs_embeds, use_cache=use_cache, position_ids=position_ids,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states, return_dict=return_dict,
            cache_position=cache_position,
        )


class OPTForCausalLM(OPTPreTrainedModel, GenerationMixin):
    _supports_static_cache = True  # forward runs under mindspore.jit with a StaticCache (compiled decoding)
    _tied_weights_keys = {"lm_head.weight": "model.decoder.embed_tokens.weight"}

    def __init__(self, config: OPTConfig):
        super().__init__(config)
        self.model = OPTModel(config)
        self.lm_head = Linear(config.word_embed_proj_dim, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.decoder.embed_tokens

    def set_input_embeddings(self, value):
        self.model.decoder.embed_tokens = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    def construct(self, input_ids=None, attention_mask=None, past_key_values=None, inputs_embeds=None, labels=None,
                  use_cache=None, position_ids=None, output_attentions=None, output_hidden_states=None,
                  return_dict=None, cache_position=None, logits_to_keep=0, **kwargs):
        r"""
        labels: (B, S) token ids for the next-token loss; -100 positions are ignored. Labels are shifted inside.
        logits_to_keep: if > 0, logits only for the last `logits_to_keep` positions (generation needs one).
        """
        return_dict = return_dict if return_dict is not None else True
        outputs = self.model.decoder(
            input_ids=input_ids, attention_mask=attention_mask, past_key_values=past_key_values,
            inputs_embeds=inputs_embeds, use_cache=use_cache, position_ids=position_ids,
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


class OPTForSequenceClassification(OPTPreTrainedModel):
    """Scores the last non-padding token of each row (the rightmost token != pad_token_id)."""

    def __init__(self, config: OPTConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = OPTModel(config)
        self.score = Linear(config.word_embed_proj_dim, self.num_labels, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.decoder.embed_tokens

    def construct(self, input_ids=None, attention_mask=None, past_key_values=None, inputs_embeds=None, labels=None,
                  use_cache=None, position_ids=None, output_attentions=None, output_hidden_states=None,
                  return_dict=None, **kwargs):
        return_dict = return_dict if return_dict is not None else True
        outputs = self.model(
            input_ids=input_ids, attention_mask=attention_mask, past_key_values=past_key_values,
            inputs_embeds=inputs_embeds, use_cache=use_cache, position_ids=position_ids,
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


class OPTForQuestionAnswering(OPTPreTrainedModel):
    def __init__(self, config: OPTConfig):
        super().__init__(config)
        self.model = OPTModel(config)
        self.qa_outputs = Linear(config.word_embed_proj_dim, 2)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.decoder.embed_tokens

    def construct(self, input_ids=None, attention_mask=None, past_key_values=None, inputs_embeds=None,
                  start_positions=None, end_positions=None, use_cache=None, position_ids=None,
                  output_attentions=None, output_hidden_states=None, return_dict=None, **kwargs):
        return_dict = return_dict if return_dict is not None else True
        outputs = self.model(
            input_ids=input_ids, attention_mask=attention_mask, past_key_values=past_key_values,
            inputs_embeds=inputs_embeds, use_cache=use_cache, position_ids=position_ids,
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
    "OPTForCausalLM",
    "OPTModel",
    "OPTPreTrainedModel",
    "OPTForSequenceClassification",
    "OPTForQuestionAnswering",
]
