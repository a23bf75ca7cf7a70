"""DistilBERT on MindSpore: HF's `modeling_distilbert.py` structure, names and outputs; device concerns live in
`backend`.

A 6-layer BERT without token types or pooler: post-norm blocks `attention.{q,k,v,out}_lin` -> `sa_layer_norm`
-> `ffn.lin1/lin2` -> `output_layer_norm`, and learned or fixed sinusoidal (`sinusoidal_pos_embds`) positions.
"""

import numpy as np
import mindspore as ms
from mindspore import nn
from transformers import DistilBertConfig

from ...backend import functional as F
from ...backend.layers import Dropout, Embedding, LayerNorm, Linear
from ...loss_utils import fixed_cross_entropy, masked_lm_loss, question_answering_loss
from ...loss_utils import sequence_classification_loss, token_classification_loss
from ...masking_utils import create_bidirectional_mask
from ...modeling_layers import GradientCheckpointingLayer
from ...modeling_outputs import (
    model_output,
    BaseModelOutput,
    MaskedLMOutput,
    MultipleChoiceModelOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from ...modeling_utils import PreTrainedModel

# DistilBERT hard-codes its LayerNorm epsilon (the config has no layer_norm_eps)
_LN_EPS = 1e-12


def sinusoidal_position_table(n_pos, dim):
    """(n_pos, dim) float32: sin on even columns, cos on odd ones, frequency 10000^(-2*(j//2)/dim) (float64 math,
    as HF computes it in numpy)."""
    j = np.arange(dim)
    angles = np.arange(n_pos)[:, None] / np.power(10000, 2 * (j // 2) / dim)[None, :]
    table = np.empty((n_pos, dim), np.float32)
    table[:, 0::2] = np.sin(angles[:, 0::2])
    table[:, 1::2] = np.cos(angles[:, 1::2])
    return table


class Embeddings(nn.Cell):
    """word + position embeddings, then LayerNorm and dropout (no token types)."""

    def __init__(self, config):
        super().__init__()
        self.word_embeddings = Embedding(config.vocab_size, config.dim, padding_idx=config.pad_token_id)
        self.position_embeddings = Embedding(config.max_position_embeddings, config.dim)
        # marks the table `_init_weights` fills with sines (initialisation runs per owning cell, parents first)
        self.position_embeddings.sinusoidal = config.sinusoidal_pos_embds
        self.LayerNorm = LayerNorm(config.dim, eps=_LN_EPS)
        self.dropout = Dropout(config.dropout)

    def construct(self, input_ids=None, inputs_embeds=None, position_ids=None):
        if input_ids is not None:
            inputs_embeds = self.word_embeddings(input_ids)
        seq_length = inputs_embeds.shape[1]
        if position_ids is None:
            position_ids = F.arange(seq_length)[None, :]
        embeddings = inputs_embeds + self.position_embeddings(position_ids)
        return self.dropout(self.LayerNorm(embeddings))


class DistilBertSelfAttention(nn.Cell):
    def __init__(self, config):
        super().__init__()
        if config.dim % config.n_heads != 0:
            raise ValueError(f"self.n_heads: {config.n_heads} must divide self.dim: {config.dim} evenly")
        self.n_heads = config.n_heads
        self.dim = config.dim
        self.attention_head_size = self.dim // self.n_heads
        self.scaling = self.attention_head_size ** -0.5
        self.q_lin = Linear(config.dim, config.dim)
        self.k_lin = Linear(config.dim, config.dim)
        self.v_lin = Linear(config.dim, config.dim)
        self.out_lin = Linear(config.dim, config.dim)
        self.dropout_prob = config.attention_dropout

    def _heads(self, x):
        # (B, S, H*D) -> (B, H, S, D); swapaxes because Tensor.transpose(1, 2) fails inside jit on CPU
        return x.reshape(x.shape[0], x.shape[1], -1, self.attention_head_size).swapaxes(1, 2)

    def construct(self, hidden_states, attention_mask=None):
        batch, seq_len = hidden_states.shape[:2]
        query = self._heads(self.q_lin(hidden_states))
        key = self._heads(self.k_lin(hidden_states))
        value = self._heads(self.v_lin(hidden_states))
        attn_output, attn_weights = F.attention(query, key, value, attn_mask=attention_mask, scale=self.scaling,
                                                dropout_p=self.dropout_prob, training=self.training)
        attn_output = attn_output.swapaxes(1, 2).reshape(batch, seq_len, -1)
        return self.out_lin(attn_output), attn_weights


class FFN(nn.Cell):
    def __init__(self, config):
        super().__init__()
        self.dropout = Dropout(config.dropout)
        self.lin1 = Linear(config.dim, config.hidden_dim)
        self.lin2 = Linear(config.hidden_dim, config.dim)
        self.activation = F.get_activation(config.activation)

    def construct(self, hidden_states):
        return self.dropout(self.lin2(self.activation(self.lin1(hidden_states))))


class TransformerBlock(GradientCheckpointingLayer):
    """Post-norm block: LN(x + attention(x)), then LN(h + ffn(h))."""

    def __init__(self, config):
        super().__init__()
        self.attention = DistilBertSelfAttention(config)
        self.sa_layer_norm = LayerNorm(config.dim, eps=_LN_EPS)
        self.ffn = FFN(config)
        self.output_layer_norm = LayerNorm(config.dim, eps=_LN_EPS)

    def construct(self, hidden_states, attention_mask=None):
        attention_output, attn_weights = self.attention(hidden_states, attention_mask)
        attention_output = self.sa_layer_norm(attention_output + hidden_states)
        ffn_output = self.output_layer_norm(self.ffn(attention_output) + attention_output)
        return ffn_output, attn_weights


class Transformer(nn.Cell):
    def __init__(self, config):
        super().__init__()
        self.n_layers = config.n_layers
        self.layer = nn.CellList([TransformerBlock(config) for _ in range(config.n_layers)])

    def construct(self, hidden_states, attention_mask=None, output_attentions=False, output_hidden_states=False):
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layer:
            hidden_states, attn_weights = layer(hidden_states, attention_mask)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            if output_attentions:
                all_attentions += (attn_weights,)
        return hidden_states, all_hidden_states, all_attentions


class DistilBertPreTrainedModel(PreTrainedModel):
    config_class = DistilBertConfig
    base_model_prefix = "distilbert"
    supports_gradient_checkpointing = True

    def _init_weights(self, cell):
        super()._init_weights(cell)
        if isinstance(cell, Embedding) and getattr(cell, "sinusoidal", False):
            weight = cell.weight
            table = sinusoidal_position_table(self.config.max_position_embeddings, self.config.dim)
            weight.set_data(ms.Tensor(table).astype(weight.dtype))


class DistilBertModel(DistilBertPreTrainedModel):
    def __init__(self, config: DistilBertConfig):
        super().__init__(config)
        self.embeddings = Embeddings(config)
        self.transformer = Transformer(config)
        self.post_init()

    def get_position_embeddings(self):
        return self.embeddings.position_embeddings

    def get_input_embeddings(self):
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, new_embeddings):
        self.embeddings.word_embeddings = new_embeddings

    def construct(self, input_ids=None, attention_mask=None, inputs_embeds=None, position_ids=None,
                  output_attentions=None, output_hidden_states=None, return_dict=None, **kwargs):
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        embeddings = self.embeddings(input_ids, inputs_embeds, position_ids)
        mask = create_bidirectional_mask(attention_mask, embeddings.shape[1], embeddings.dtype)
        hidden_states, all_hidden, all_attn = self.transformer(embeddings, mask, output_attentions,
                                                               output_hidden_states)
        return model_output(BaseModelOutput, {
            "last_hidden_state": hidden_states,
            "hidden_states": all_hidden,
            "attentions": all_attn,
        }, return_dict is None or return_dict)


class DistilBertForMaskedLM(DistilBertPreTrainedModel):
    _tied_weights_keys = {"vocab_projector.weight": "distilbert.embeddings.word_embeddings.weight"}

    def __init__(self, config):
        super().__init__(config)
        self.activation = F.get_activation(config.activation)
        self.distilbert = DistilBertModel(config)
        self.vocab_transform = Linear(config.dim, config.dim)
        self.vocab_layer_norm = LayerNorm(config.dim, eps=_LN_EPS)
        self.vocab_projector = Linear(config.dim, config.vocab_size)
        self.post_init()

    def get_position_embeddings(self):
        return self.distilbert.get_position_embeddings()

    def get_output_embeddings(self):
        return self.vocab_projector

    def set_output_embeddings(self, new_embeddings):
        self.vocab_projector = new_embeddings

    def construct(self, input_ids=None, attention_mask=None, inputs_embeds=None, labels=None, position_ids=None,
                  output_attentions=None, output_hidden_states=None, return_dict=None, **kwargs):
        return_dict = return_dict if return_dict is not None else True
        outputs = self.distilbert(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                                  position_ids=position_ids, output_attentions=output_attentions,
                                  output_hidden_states=output_hidden_states)
        hidden_states = self.activation(self.vocab_transform(outputs["last_hidden_state"]))
        prediction_logits = self.vocab_projector(self.vocab_layer_norm(hidden_states))
        loss = None
        if labels is not None:
            loss = masked_lm_loss(prediction_logits, labels, prediction_logits.shape[-1])
        return model_output(MaskedLMOutput, {
            "loss": loss,
            "logits": prediction_logits,
            "hidden_states": outputs.get("hidden_states"),
            "attentions": outputs.get("attentions"),
        }, return_dict)


class DistilBertForSequenceClassification(DistilBertPreTrainedModel):
    """pre_classifier -> ReLU -> dropout -> classifier on the first token."""

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.distilbert = DistilBertModel(config)
        self.pre_classifier = Linear(config.dim, config.dim)
        self.classifier = Linear(config.dim, config.num_labels)
        self.dropout = Dropout(config.seq_classif_dropout)
        self.post_init()

    def get_position_embeddings(self):
        return self.distilbert.get_position_embeddings()

    def construct(self, input_ids=None, attention_mask=None, inputs_embeds=None, labels=None, position_ids=None,
                  output_attentions=None, output_hidden_states=None, return_dict=None, **kwargs):
        return_dict = return_dict if return_dict is not None else True
        outputs = self.distilbert(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                                  position_ids=position_ids, output_attentions=output_attentions,
                                  output_hidden_states=output_hidden_states)
        pooled_output = F.relu(self.pre_classifier(outputs["last_hidden_state"][:, 0]))
        logits = self.classifier(self.dropout(pooled_output))
        loss = sequence_classification_loss(labels, logits, self.config) if labels is not None else None
        return model_output(SequenceClassifierOutput, {
            "loss": loss,
            "logits": logits,
            "hidden_states": outputs.get("hidden_states"),
            "attentions": outputs.get("attentions"),
        }, return_dict)


class DistilBertForQuestionAnswering(DistilBertPreTrainedModel):
    """Span start/end logits for extractive QA (`config.num_labels` must be 2)."""

    def __init__(self, config):
        super().__init__(config)
        if config.num_labels != 2:
            raise ValueError(f"config.num_labels should be 2, but it is {config.num_labels}")
        self.distilbert = DistilBertModel(config)
        self.qa_outputs = Linear(config.dim, config.num_labels)
        self.dropout = Dropout(config.qa_dropout)
        self.post_init()

    def get_position_embeddings(self):
        return self.distilbert.get_position_embeddings()

    def construct(self, input_ids=None, attention_mask=None, inputs_embeds=None, start_positions=None,
                  end_positions=None, position_ids=None, output_attentions=None, output_hidden_states=None,
                  return_dict=None, **kwargs):
        return_dict = return_dict if return_dict is not None else True
        outputs = self.distilbert(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                                  position_ids=position_ids, output_attentions=output_attentions,
                                  output_hidden_states=output_hidden_states)
        logits = self.qa_outputs(self.dropout(outputs["last_hidden_state"]))
        start_logits, end_logits = logits[..., 0], logits[..., 1]
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


class DistilBertForTokenClassification(DistilBertPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.distilbert = DistilBertModel(config)
        self.dropout = Dropout(config.dropout)
        self.classifier = Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def get_position_embeddings(self):
        return self.distilbert.get_position_embeddings()

    def construct(self, input_ids=None, attention_mask=None, inputs_embeds=None, labels=None, position_ids=None,
                  output_attentions=None, output_hidden_states=None, return_dict=None, **kwargs):
        return_dict = return_dict if return_dict is not None else True
        outputs = self.distilbert(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                                  position_ids=position_ids, output_attentions=output_attentions,
                                  output_hidden_states=output_hidden_states)
        logits = self.classifier(self.dropout(outputs["last_hidden_state"]))
        loss = token_classification_loss(logits, labels, self.num_labels) if labels is not None else None
        return model_output(TokenClassifierOutput, {
            "loss": loss,
            "logits": logits,
            "hidden_states": outputs.get("hidden_states"),
            "attentions": outputs.get("attentions"),
        }, return_dict)


class DistilBertForMultipleChoice(DistilBertPreTrainedModel):
    """Inputs of shape (B, num_choices, S); pre_classifier -> ReLU -> dropout -> one score per choice."""

    def __init__(self, config):
        super().__init__(config)
        self.distilbert = DistilBertModel(config)
        self.pre_classifier = Linear(config.dim, config.dim)
        self.classifier = Linear(config.dim, 1)
        self.dropout = Dropout(config.seq_classif_dropout)
        self.post_init()

    def get_position_embeddings(self):
        return self.distilbert.get_position_embeddings()

    def construct(self, input_ids=None, attention_mask=None, inputs_embeds=None, labels=None, position_ids=None,
                  output_attentions=None, output_hidden_states=None, return_dict=None, **kwargs):
        return_dict = return_dict if return_dict is not None else True
        num_choices = input_ids.shape[1] if input_ids is not None else inputs_embeds.shape[1]

        def flat(x):
            return None if x is None else x.reshape((-1,) + tuple(x.shape[2:]))

        # HF flattens ids, mask and embeddings but passes position_ids through unchanged
        outputs = self.distilbert(input_ids=flat(input_ids), attention_mask=flat(attention_mask),
                                  inputs_embeds=flat(inputs_embeds), position_ids=position_ids,
                                  output_attentions=output_attentions, output_hidden_states=output_hidden_states)
        pooled_output = F.relu(self.pre_classifier(outputs["last_hidden_state"][:, 0]))
        logits = self.classifier(self.dropout(pooled_output)).reshape(-1, num_choices)
        loss = fixed_cross_entropy(logits, labels) if labels is not None else None
        return model_output(MultipleChoiceModelOutput, {
            "loss": loss,
            "logits": logits,
            "hidden_states": outputs.get("hidden_states"),
            "attentions": outputs.get("attentions"),
        }, return_dict)


__all__ = [
    "DistilBertForMaskedLM",
    "DistilBertForMultipleChoice",
    "DistilBertForQuestionAnswering",
    "DistilBertForSequenceClassification",
    "DistilBertForTokenClassification",
    "DistilBertModel",
    "DistilBertPreTrainedModel",
]
