"""VisualBERT on MindSpore: HF's `modeling_visual_bert.py` checkpoint keys, signatures and outputs.

A BERT encoder (layers, pooler and pre-training heads shared with models/bert) over the text tokens followed by
visual tokens: `visual_embeds` (region features from an external detector, an input) are projected to the hidden
size and get their own token-type and position embeddings (position 0, or the mean position of the words given by
`image_text_alignment`). Heads: pre-training (masked LM + sentence-image matching), VQA (KL loss on soft scores at
the last text token), visual reasoning (NLVR2), multiple choice (VCR), region-to-phrase alignment (Flickr30k).
"""

from dataclasses import dataclass
from typing import Any, Optional, Tuple

import mindspore as ms
from mindspore import nn, ops
from transformers import VisualBertConfig

from ...backend import functional as F
from ...backend.layers import Dropout, Embedding, LayerNorm, Linear
from ...loss_utils import fixed_cross_entropy, masked_lm_loss
from ...masking_utils import create_bidirectional_mask
from ...modeling_layers import GradientCheckpointingLayer
from ...modeling_outputs import (
    BaseModelOutputWithPooling,
    ModelOutput,
    MultipleChoiceModelOutput,
    SequenceClassifierOutput,
    model_output,
)
from ...modeling_utils import PreTrainedModel, init_parameter
from ..bert.modeling_bert import (
    BertAttention,
    BertIntermediate,
    BertLMPredictionHead,
    BertOutput,
    BertPooler,
    BertPreTrainingHeads,
)


@dataclass
class VisualBertForPreTrainingOutput(ModelOutput):
    loss: Any = None
    prediction_logits: Any = None
    seq_relationship_logits: Any = None
    hidden_states: Optional[Tuple[Any, ...]] = None
    attentions: Optional[Tuple[Any, ...]] = None


class VisualBertEmbeddings(nn.Cell):
    """BERT's text embeddings, then the visual tokens (projected features + visual token type + visual position)
    appended; LayerNorm and dropout over the whole sequence."""

    def __init__(self, config):
        super().__init__()
        self.word_embeddings = Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)
        self.visual_token_type_embeddings = Embedding(config.type_vocab_size, config.hidden_size)
        self.visual_position_embeddings = Embedding(config.max_position_embeddings, config.hidden_size)
        self.visual_projection = Linear(config.visual_embedding_dim, config.hidden_size)

    def _aligned_positions(self, image_text_alignment, visual_length, dtype):
        """(B, V, hidden): each visual token's mean position embedding over the word positions it is aligned to
        (-1 = no word; a token with none gets 0, as HF's division by a count clamped to 1)."""
        mask = (image_text_alignment != -1).astype(ms.int64)
        positions = self.position_embeddings(image_text_alignment * mask)
        mask = mask.astype(dtype)
        summed = (positions * mask[..., None]).sum(2)
        count = mask.sum(2)
        count = F.where(count == 0, ops.ones_like(count), count)
        summed = summed / count[..., None]
        if summed.shape[1] < visual_length:
            raise ValueError(f"Visual position embeddings length: {summed.shape[1]} should be the same as "
                             f"`visual_embeds` length: {visual_length}")
        return summed[:, :visual_length]

    def construct(self, input_ids=None, token_type_ids=None, position_ids=None, inputs_embeds=None,
                  visual_embeds=None, visual_token_type_ids=None, image_text_alignment=None):
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        batch_size, seq_length = inputs_embeds.shape[:2]
        if position_ids is None:
            position_ids = F.arange(0, seq_length)[None]
        if token_type_ids is None:
            token_type_ids = F.full((batch_size, seq_length), 0, ms.int64)
        embeddings = inputs_embeds + self.token_type_embeddings(token_type_ids)
        embeddings = embeddings + self.position_embeddings(position_ids)
        if visual_embeds is not None:
            visual_shape = visual_embeds.shape[:-1]
            if visual_token_type_ids is None:
                visual_token_type_ids = F.full(visual_shape, 1, ms.int64)
            projected = self.visual_projection(visual_embeds.astype(self.visual_projection.weight.dtype))
            visual_positions = self.visual_position_embeddings(F.full(visual_shape, 0, ms.int64))
            if image_text_alignment is not None:
                visual_positions = visual_positions + self._aligned_positions(image_text_alignment, visual_shape[1],
                                                                              embeddings.dtype)
            visual = projected + visual_positions + self.visual_token_type_embeddings(visual_token_type_ids)
            embeddings = ops.cat((embeddings, visual.astype(embeddings.dtype)), 1)
        return self.dropout(self.LayerNorm(embeddings))


class VisualBertLayer(GradientCheckpointingLayer):
    """A BERT encoder layer (self-attention only)."""

    def __init__(self, config):
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)

    def construct(self, hidden_states, attention_mask=None):
        attention_output, weights = self.attention(hidden_states, attention_mask)
        return self.output(self.intermediate(attention_output), attention_output), weights


class VisualBertEncoder(nn.Cell):
    def __init__(self, config):
        super().__init__()
        self.layer = nn.CellList([VisualBertLayer(config) for _ in range(config.num_hidden_layers)])

    def construct(self, hidden_states, attention_mask=None, output_attentions=False, output_hidden_states=False):
        all_hidden = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layer:
            hidden_states, weights = layer(hidden_states, attention_mask)
            if output_hidden_states:
                all_hidden += (hidden_states,)
            if output_attentions:
                all_attentions += (weights,)
        return hidden_states, all_hidden, all_attentions


class VisualBertPreTrainedModel(PreTrainedModel):
    config_class = VisualBertConfig
    base_model_prefix = "visual_bert"
    supports_gradient_checkpointing = True

    def _init_weights(self, cell):
        super()._init_weights(cell)
        if isinstance(cell, BertLMPredictionHead):
            init_parameter(cell.bias, "zeros")

    def _base(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, inputs_embeds=None,
              visual_embeds=None, visual_attention_mask=None, visual_token_type_ids=None, image_text_alignment=None,
              output_attentions=None, output_hidden_states=None):
        return self.visual_bert._forward(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
                                         visual_embeds, visual_attention_mask, visual_token_type_ids,
                                         image_text_alignment, output_attentions, output_hidden_states)


class VisualBertModel(VisualBertPreTrainedModel):
    def __init__(self, config: VisualBertConfig, add_pooling_layer=True):
        super().__init__(config)
        self.embeddings = VisualBertEmbeddings(config)
        self.encoder = VisualBertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        self.bypass_transformer = config.bypass_transformer
        if self.bypass_transformer:
            self.additional_layer = VisualBertLayer(config)
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value):
        self.embeddings.word_embeddings = value

    def _forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                 inputs_embeds=None, visual_embeds=None, visual_attention_mask=None, visual_token_type_ids=None,
                 image_text_alignment=None, output_attentions=None, output_hidden_states=None):
        """(last hidden state, pooled, hidden states, attentions) over the text then visual tokens."""
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        if input_ids is not None and inputs_embeds is not None:
            raise ValueError("You cannot specify both input_ids and inputs_embeds at the same time")
        if input_ids is None and inputs_embeds is None:
            raise ValueError("You have to specify either input_ids or inputs_embeds")
        if self.bypass_transformer and visual_embeds is not None:
            # transformers 5.25's own bypass path fails (it indexes the (B, 1, 1, S) mask with the text length and
            # returns an undefined `encoder_outputs`): there is no reference output to match
            raise NotImplementedError("VisualBERT with `config.bypass_transformer=True` is not supported (its "
                                      "transformers 5.25 reference implementation does not run)")
        embeddings = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds, visual_embeds,
                                     visual_token_type_ids, image_text_alignment)
        batch_size, total_length = embeddings.shape[:2]
        text_shape = (batch_size, total_length if visual_embeds is None else total_length - visual_embeds.shape[1])
        if attention_mask is None:
            attention_mask = F.full(text_shape, 1, ms.int64)
        combined = attention_mask.astype(ms.int64)
        if visual_embeds is not None:
            if visual_attention_mask is None:
                visual_attention_mask = F.full(visual_embeds.shape[:-1], 1, ms.int64)
            combined = ops.cat((combined, visual_attention_mask.astype(ms.int64)), -1)
        mask = create_bidirectional_mask(combined, total_length, embeddings.dtype)
        last, hidden, attentions = self.encoder(embeddings, mask, output_attentions, output_hidden_states)
        pooled = self.pooler(last) if self.pooler is not None else None
        return last, pooled, hidden, attentions

    def construct(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                  inputs_embeds=None, visual_embeds=None, visual_attention_mask=None, visual_token_type_ids=None,
                  image_text_alignment=None, output_attentions=None, output_hidden_states=None, return_dict=None,
                  **kwargs):
        r"""
        Args:
            visual_embeds: (B, V, visual_embedding_dim) region features (e.g. from a detector).
            visual_attention_mask: (B, V) 1 for real regions (default: all).
            visual_token_type_ids: (B, V) (default: all 1, as the authors).
            image_text_alignment: (B, V, A) word positions each region is aligned to, -1 for none.
        Returns `last_hidden_state` (B, S + V, hidden), `pooler_output` and, when asked, `hidden_states` and
        `attentions`.
        """
        last, pooled, hidden, attentions = self._forward(input_ids, attention_mask, token_type_ids, position_ids,
                                                         inputs_embeds, visual_embeds, visual_attention_mask,
                                                         visual_token_type_ids, image_text_alignment,
                                                         output_attentions, output_hidden_states)
        # a literal dict: graph mode needs constant keys (dict(zip(...)) gives it none)
        fields = {"last_hidden_state": last, "pooler_output": pooled, "hidden_states": hidden,
                  "attentions": attentions}
        return model_output(BaseModelOutputWithPooling, fields, return_dict is not False)


_LM_TIES = {
    "cls.predictions.decoder.weight": "visual_bert.embeddings.word_embeddings.weight",
    "cls.predictions.decoder.bias": "cls.predictions.bias",
}


class VisualBertForPreTraining(VisualBertPreTrainedModel):
    _tied_weights_keys = _LM_TIES

    def __init__(self, config: VisualBertConfig):
        super().__init__(config)
        self.visual_bert = VisualBertModel(config)
        self.cls = BertPreTrainingHeads(config)
        self.post_init()

    def get_output_embeddings(self):
        return self.cls.predictions.decoder

    def set_output_embeddings(self, new_embeddings):
        self.cls.predictions.decoder = new_embeddings
        self.cls.predictions.bias = new_embeddings.bias

    def construct(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                  inputs_embeds=None, visual_embeds=None, visual_attention_mask=None, visual_token_type_ids=None,
                  image_text_alignment=None, output_attentions=None, output_hidden_states=None, return_dict=None,
                  labels=None, sentence_image_labels=None, **kwargs):
        r"""
        Args:
            labels: (B, S + V) masked-LM targets over the text and visual positions (-100 ignored).
            sentence_image_labels: (B,) 1 if the text matches the image.
        Returns `loss` (masked LM, plus sentence-image cross-entropy when its labels are given),
        `prediction_logits`, `seq_relationship_logits`.
        """
        if labels is not None:
            total_size = attention_mask.shape[-1] + visual_attention_mask.shape[-1]
            if labels.shape[-1] != total_size:
                raise ValueError("The labels provided should have same sequence length as total attention mask. "
                                 f"Found labels with sequence length {labels.shape[-1]}, expected {total_size}.")
        last, pooled, hidden, attentions = self._base(
            input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds, visual_embeds,
            visual_attention_mask, visual_token_type_ids, image_text_alignment, output_attentions,
            output_hidden_states)
        prediction_scores, seq_relationship_score = self.cls(last, pooled)
        loss = None
        if labels is not None:
            loss = masked_lm_loss(prediction_scores, labels, self.config.vocab_size)
            if sentence_image_labels is not None:
                loss = loss + fixed_cross_entropy(seq_relationship_score.reshape(-1, 2),
                                                  sentence_image_labels.reshape(-1))
        fields = {"loss": loss, "prediction_logits": prediction_scores,
                  "seq_relationship_logits": seq_relationship_score, "hidden_states": hidden,
                  "attentions": attentions}
        return model_output(VisualBertForPreTrainingOutput, fields, return_dict is not False)


def _flat(x):
    """(B, choices, ...) -> (B * choices, ...), or None."""
    return None if x is None else x.reshape((-1,) + tuple(x.shape[2:]))


class VisualBertForMultipleChoice(VisualBertPreTrainedModel):
    def __init__(self, config: VisualBertConfig):
        super().__init__(config)
        self.visual_bert = VisualBertModel(config)
        self.dropout = Dropout(config.hidden_dropout_prob)
        self.cls = Linear(config.hidden_size, 1)
        self.post_init()

    def construct(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                  inputs_embeds=None, visual_embeds=None, visual_attention_mask=None, visual_token_type_ids=None,
                  image_text_alignment=None, output_attentions=None, output_hidden_states=None, return_dict=None,
                  labels=None, **kwargs):
        r"""
        Args:
            input_ids, attention_mask, ...: (B, num_choices, S); visual_embeds: (B, num_choices, V, dim).
            labels: (B,) index of the correct choice.
        """
        num_choices = input_ids.shape[1] if input_ids is not None else inputs_embeds.shape[1]
        _, pooled, hidden, attentions = self._base(
            _flat(input_ids), _flat(attention_mask), _flat(token_type_ids), _flat(position_ids),
            _flat(inputs_embeds), _flat(visual_embeds), _flat(visual_attention_mask), _flat(visual_token_type_ids),
            image_text_alignment, output_attentions, output_hidden_states)
        logits = self.cls(self.dropout(pooled)).reshape(-1, num_choices)
        loss = fixed_cross_entropy(logits, labels) if labels is not None else None
        fields = {"loss": loss, "logits": logits, "hidden_states": hidden, "attentions": attentions}
        return model_output(MultipleChoiceModelOutput, fields, return_dict is not False)


class VisualBertForQuestionAnswering(VisualBertPreTrainedModel):
    def __init__(self, config: VisualBertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.visual_bert = VisualBertModel(config)
        self.dropout = Dropout(config.hidden_dropout_prob)
        self.cls = Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def construct(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                  inputs_embeds=None, visual_embeds=None, visual_attention_mask=None, visual_token_type_ids=None,
                  image_text_alignment=None, output_attentions=None, output_hidden_states=None, return_dict=None,
                  labels=None, **kwargs):
        r"""
        Args:
            attention_mask: required: the answer is read at the last text token before [SEP] (position
                `attention_mask.sum(1) - 2`, as the original code).
            labels: (B, num_labels) answer scores; the loss is the batch-mean KL divergence to log-softmax(logits).
        Returns `logits` (B, num_labels), log-probabilities when `labels` are given (as HF).
        """
        if attention_mask is None:
            raise ValueError("VisualBertForQuestionAnswering needs `attention_mask`: the answer token is the last "
                             "text token before [SEP]")
        index = attention_mask.astype(ms.int32).sum(1) - 2
        last, _, hidden, attentions = self._base(
            input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds, visual_embeds,
            visual_attention_mask, visual_token_type_ids, image_text_alignment, output_attentions,
            output_hidden_states)
        gather_index = ops.broadcast_to(index.reshape(-1, 1, 1), (last.shape[0], 1, last.shape[-1]))
        pooled = ops.gather_elements(last, 1, gather_index)
        logits = self.cls(self.dropout(pooled)).reshape(-1, self.num_labels)
        loss = None
        if labels is not None:
            # as HF: with labels the returned logits are the log-probabilities
            logits, loss = F.log_softmax_kl_div(logits, labels)
        fields = {"loss": loss, "logits": logits, "hidden_states": hidden, "attentions": attentions}
        return model_output(SequenceClassifierOutput, fields, return_dict is not False)


class VisualBertForVisualReasoning(VisualBertPreTrainedModel):
    def __init__(self, config: VisualBertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.visual_bert = VisualBertModel(config)
        self.dropout = Dropout(config.hidden_dropout_prob)
        self.cls = Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def construct(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                  inputs_embeds=None, visual_embeds=None, visual_attention_mask=None, visual_token_type_ids=None,
                  image_text_alignment=None, output_attentions=None, output_hidden_states=None, return_dict=None,
                  labels=None, **kwargs):
        r"""
        Args:
            labels: (B,) class index (NLVR2: whether the statement holds for the image pair).
        """
        _, pooled, hidden, attentions = self._base(
            input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds, visual_embeds,
            visual_attention_mask, visual_token_type_ids, image_text_alignment, output_attentions,
            output_hidden_states)
        logits = self.cls(self.dropout(pooled))
        loss = fixed_cross_entropy(logits, labels.reshape(-1)) if labels is not None else None
        fields = {"loss": loss, "logits": logits, "hidden_states": hidden, "attentions": attentions}
        return model_output(SequenceClassifierOutput, fields, return_dict is not False)


class VisualBertRegionToPhraseAttention(nn.Cell):
    """Single-head scaled dot-product scores between selected text positions and the visual tokens (masked)."""

    def __init__(self, config):
        super().__init__()
        if config.hidden_size % config.num_attention_heads != 0:
            raise ValueError(f"The hidden size ({config.hidden_size}) is not a multiple of the number of attention "
                             f"heads ({config.num_attention_heads})")
        self.num_attention_heads = 1
        self.attention_head_size = config.hidden_size // config.num_attention_heads
        self.all_head_size = self.attention_head_size
        self.query = Linear(config.hidden_size, self.all_head_size)
        self.key = Linear(config.hidden_size, self.all_head_size)
        self.value = Linear(config.hidden_size, self.all_head_size)  # in the checkpoint, unused (as in HF)

    def construct(self, query, key, attention_mask):
        mask = attention_mask.astype(query.dtype)[:, None, :]
        mask = (1.0 - mask) * F.finfo_min(query.dtype)
        scores = ops.matmul(self.query(query), self.key(key).swapaxes(1, 2))
        return scores / (self.attention_head_size ** 0.5) + mask


class VisualBertForRegionToPhraseAlignment(VisualBertPreTrainedModel):
    _tied_weights_keys = _LM_TIES

    def __init__(self, config: VisualBertConfig):
        super().__init__(config)
        self.visual_bert = VisualBertModel(config)
        self.dropout = Dropout(config.hidden_dropout_prob)
        self.cls = BertPreTrainingHeads(config)
        self.attention = VisualBertRegionToPhraseAttention(config)
        self.post_init()

    def construct(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                  inputs_embeds=None, visual_embeds=None, visual_attention_mask=None, visual_token_type_ids=None,
                  region_to_phrase_position=None, image_text_alignment=None, output_attentions=None,
                  output_hidden_states=None, return_dict=None, labels=None, **kwargs):
        r"""
        Args:
            region_to_phrase_position: (B, P) sequence positions of the phrases to align (-1 = padding -> 0).
            attention_mask, visual_attention_mask: required (the visual tokens follow the text ones).
            labels: (B, P, V) target distribution over the regions; batch-mean KL to log-softmax(logits).
        Returns `logits` (B, P, V): each phrase's scores over the regions.
        """
        if region_to_phrase_position is None:
            raise ValueError("`region_to_phrase_position` should not be None when using Flickr Model.")
        last, _, hidden, attentions = self._base(
            input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds, visual_embeds,
            visual_attention_mask, visual_token_type_ids, image_text_alignment, output_attentions,
            output_hidden_states)
        positions = region_to_phrase_position * (region_to_phrase_position != -1).astype(
            region_to_phrase_position.dtype)
        gather_index = ops.broadcast_to(positions[..., None].astype(ms.int32),
                                        positions.shape + (last.shape[-1],))
        selected = ops.gather_elements(last, 1, gather_index)
        visual_features = last[:, attention_mask.shape[1]:]
        if visual_features.shape[1] != visual_attention_mask.shape[1]:
            raise ValueError(f"Visual features length :{visual_features.shape[1]} should be the same as visual "
                             f"attention mask length: {visual_attention_mask.shape[1]}.")
        logits = self.attention(selected, visual_features, visual_attention_mask)
        loss = F.log_softmax_kl_div(logits, labels)[1] if labels is not None else None
        fields = {"loss": loss, "logits": logits, "hidden_states": hidden, "attentions": attentions}
        return model_output(SequenceClassifierOutput, fields, return_dict is not False)


__all__ = ["VisualBertForMultipleChoice", "VisualBertForPreTraining", "VisualBertForQuestionAnswering",
           "VisualBertForRegionToPhraseAlignment", "VisualBertForVisualReasoning", "VisualBertLayer",
           "VisualBertModel", "VisualBertPreTrainedModel"]
