"""LUKE on MindSpore: HF's `modeling_luke.py` structure, names and outputs; device concerns live in `backend`.

LUKE is RoBERTa with a second input stream of *entities* (`entity_ids` from an entity vocabulary). An entity's
embedding is its entity-vocabulary row (optionally projected from `entity_emb_size`) plus the mean of the position
embeddings of its mention's tokens (`entity_position_ids`, -1 = no token) plus a token type. Words and entities share
one transformer: they attend to each other, and with `use_entity_aware_attention` the query projection depends on
the (query kind, key kind) pair: word->word `query`, word->entity `w2e_query`, entity->word `e2w_query`,
entity->entity `e2e_query` (keys and values are shared).
"""

import math
from dataclasses import dataclass
from typing import Any, Optional, Tuple

import mindspore as ms
from mindspore import nn, ops
from transformers import LukeConfig

from ...backend import functional as F
from ...backend.layers import Dropout, Embedding, LayerNorm, Linear, new_parameter
from ...loss_utils import fixed_cross_entropy, question_answering_loss, sequence_classification_loss
from ...masking_utils import create_bidirectional_mask
from ...modeling_layers import GradientCheckpointingLayer
from ...modeling_outputs import ModelOutput, model_output
from ...modeling_utils import PreTrainedModel


@dataclass
class BaseLukeModelOutputWithPooling(ModelOutput):
    last_hidden_state: Any = None
    pooler_output: Any = None
    hidden_states: Optional[Tuple[Any, ...]] = None
    attentions: Optional[Tuple[Any, ...]] = None
    entity_last_hidden_state: Any = None
    entity_hidden_states: Optional[Tuple[Any, ...]] = None


@dataclass
class BaseLukeModelOutput(ModelOutput):
    last_hidden_state: Any = None
    hidden_states: Optional[Tuple[Any, ...]] = None
    attentions: Optional[Tuple[Any, ...]] = None
    entity_last_hidden_state: Any = None
    entity_hidden_states: Optional[Tuple[Any, ...]] = None


@dataclass
class LukeMaskedLMOutput(ModelOutput):
    loss: Any = None
    mlm_loss: Any = None
    mep_loss: Any = None
    logits: Any = None
    entity_logits: Any = None
    hidden_states: Optional[Tuple[Any, ...]] = None
    entity_hidden_states: Optional[Tuple[Any, ...]] = None
    attentions: Optional[Tuple[Any, ...]] = None


@dataclass
class _LukeClassifierOutput(ModelOutput):
    loss: Any = None
    logits: Any = None
    hidden_states: Optional[Tuple[Any, ...]] = None
    entity_hidden_states: Optional[Tuple[Any, ...]] = None
    attentions: Optional[Tuple[Any, ...]] = None


class EntityClassificationOutput(_LukeClassifierOutput):
    pass


class EntityPairClassificationOutput(_LukeClassifierOutput):
    pass


class EntitySpanClassificationOutput(_LukeClassifierOutput):
    pass


class LukeSequenceClassifierOutput(_LukeClassifierOutput):
    pass


class LukeTokenClassifierOutput(_LukeClassifierOutput):
    pass


class LukeMultipleChoiceModelOutput(_LukeClassifierOutput):
    pass


@dataclass
class LukeQuestionAnsweringModelOutput(ModelOutput):
    loss: Any = None
    start_logits: Any = None
    end_logits: Any = None
    hidden_states: Optional[Tuple[Any, ...]] = None
    entity_hidden_states: Optional[Tuple[Any, ...]] = None
    attentions: Optional[Tuple[Any, ...]] = None


def create_position_ids_from_input_ids(input_ids, padding_idx):
    """Real tokens get positions padding_idx + 1, padding_idx + 2, ...; padding tokens get padding_idx."""
    mask = (input_ids != padding_idx).astype(ms.int32)
    return (F.cumsum(mask, 1) * mask).astype(ms.int64) + padding_idx


class LukeEmbeddings(nn.Cell):
    """RoBERTa's word embeddings (positions counted from padding_idx + 1 over real tokens)."""

    def __init__(self, config):
        super().__init__()
        self.padding_idx = config.pad_token_id
        self.word_embeddings = Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = Embedding(config.max_position_embeddings, config.hidden_size,
                                             padding_idx=config.pad_token_id)
        self.token_type_embeddings = Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def construct(self, input_ids=None, token_type_ids=None, position_ids=None, inputs_embeds=None):
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        batch_size, seq_length = inputs_embeds.shape[:2]
        if position_ids is None:
            if input_ids is not None:
                position_ids = create_position_ids_from_input_ids(input_ids, self.padding_idx)
            else:
                positions = F.arange(self.padding_idx + 1, seq_length + self.padding_idx + 1).reshape(1, seq_length)
                position_ids = ops.broadcast_to(positions, (batch_size, seq_length))
        if token_type_ids is None:
            token_type_ids = F.full((batch_size, seq_length), 0, ms.int64)
        embeddings = inputs_embeds + self.position_embeddings(position_ids) + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(embeddings))


class LukeEntityEmbeddings(nn.Cell):
    """Entity row (projected to hidden if `entity_emb_size` differs) + mean position embedding of the mention's
    tokens (`entity_position_ids` (B, E, max_mention_length), -1 = unused slot) + token type."""

    def __init__(self, config: LukeConfig):
        super().__init__()
        self.config = config
        self.entity_embeddings = Embedding(config.entity_vocab_size, config.entity_emb_size, padding_idx=0)
        if config.entity_emb_size != config.hidden_size:
            self.entity_embedding_dense = Linear(config.entity_emb_size, config.hidden_size, bias=False)
        self.position_embeddings = Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def construct(self, entity_ids, position_ids, token_type_ids=None):
        if token_type_ids is None:
            token_type_ids = ops.zeros(entity_ids.shape, ms.int64)
        entity_embeddings = self.entity_embeddings(entity_ids)
        if self.config.entity_emb_size != self.config.hidden_size:
            entity_embeddings = self.entity_embedding_dense(entity_embeddings)
        used = (position_ids != -1).astype(entity_embeddings.dtype)[..., None]
        position_embeddings = self.position_embeddings(ops.clamp(position_ids, min=0)) * used
        position_embeddings = position_embeddings.sum(-2) / ops.clamp(used.sum(-2), min=1e-7)
        embeddings = entity_embeddings + position_embeddings + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(embeddings))


class LukeSelfAttention(nn.Cell):
    def __init__(self, config):
        super().__init__()
        if config.hidden_size % config.num_attention_heads != 0 and not hasattr(config, "embedding_size"):
            raise ValueError(f"The hidden size {config.hidden_size} is not a multiple of the number of attention "
                             f"heads {config.num_attention_heads}.")
        self.num_attention_heads = config.num_attention_heads
        self.attention_head_size = int(config.hidden_size / config.num_attention_heads)
        self.all_head_size = self.num_attention_heads * self.attention_head_size
        self.use_entity_aware_attention = config.use_entity_aware_attention
        self.query = Linear(config.hidden_size, self.all_head_size)
        self.key = Linear(config.hidden_size, self.all_head_size)
        self.value = Linear(config.hidden_size, self.all_head_size)
        if self.use_entity_aware_attention:
            self.w2e_query = Linear(config.hidden_size, self.all_head_size)
            self.e2w_query = Linear(config.hidden_size, self.all_head_size)
            self.e2e_query = Linear(config.hidden_size, self.all_head_size)
        self.dropout = Dropout(config.attention_probs_dropout_prob)

    def transpose_for_scores(self, x):
        # swapaxes because Tensor.transpose(1, 2) fails inside jit on CPU
        return x.reshape(x.shape[0], x.shape[1], self.num_attention_heads, self.attention_head_size).swapaxes(1, 2)

    def construct(self, word_hidden_states, entity_hidden_states, attention_mask=None):
        word_size = word_hidden_states.shape[1]
        if entity_hidden_states is None:
            concat = word_hidden_states
        else:
            concat = F.cat([word_hidden_states, entity_hidden_states], 1)
        key = self.transpose_for_scores(self.key(concat))
        value = self.transpose_for_scores(self.value(concat))
        if self.use_entity_aware_attention and entity_hidden_states is not None:
            word_keys, entity_keys = key[:, :, :word_size, :], key[:, :, word_size:, :]

            def scores(projection, states, keys):
                return F.matmul(self.transpose_for_scores(projection(states)), keys.swapaxes(-1, -2))

            word_scores = F.cat([scores(self.query, word_hidden_states, word_keys),
                                 scores(self.w2e_query, word_hidden_states, entity_keys)], 3)
            entity_scores = F.cat([scores(self.e2w_query, entity_hidden_states, word_keys),
                                   scores(self.e2e_query, entity_hidden_states, entity_keys)], 3)
            attention_scores = F.cat([word_scores, entity_scores], 2)
        else:
            attention_scores = F.matmul(self.transpose_for_scores(self.query(concat)), key.swapaxes(-1, -2))
        attention_scores = attention_scores / math.sqrt(self.attention_head_size)
        if attention_mask is not None:
            attention_scores = attention_scores + attention_mask
        probs = F.softmax(attention_scores, -1)
        context = F.matmul(self.dropout(probs), value).swapaxes(1, 2)
        context = context.reshape(context.shape[0], context.shape[1], self.all_head_size)
        return context, probs


class LukeSelfOutput(nn.Cell):
    def __init__(self, config):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def construct(self, hidden_states, input_tensor):
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + input_tensor)


class LukeAttention(nn.Cell):
    """Works on the concatenated [words; entities] sequence (what the residual LayerNorm sees too)."""

    def __init__(self, config):
        super().__init__()
        self.self = LukeSelfAttention(config)
        self.output = LukeSelfOutput(config)

    def construct(self, word_hidden_states, entity_hidden_states, attention_mask=None):
        context, probs = self.self(word_hidden_states, entity_hidden_states, attention_mask)
        if entity_hidden_states is None:
            concat = word_hidden_states
        else:
            concat = F.cat([word_hidden_states, entity_hidden_states], 1)
        return self.output(context, concat), probs


class LukeIntermediate(nn.Cell):
    def __init__(self, config):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.intermediate_size)
        self.intermediate_act_fn = F.get_activation(config.hidden_act)

    def construct(self, hidden_states):
        return self.intermediate_act_fn(self.dense(hidden_states))


class LukeOutput(nn.Cell):
    def __init__(self, config):
        super().__init__()
        self.dense = Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def construct(self, hidden_states, input_tensor):
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + input_tensor)


class LukeLayer(GradientCheckpointingLayer):
    def __init__(self, config):
        super().__init__()
        self.attention = LukeAttention(config)
        self.intermediate = LukeIntermediate(config)
        self.output = LukeOutput(config)

    def construct(self, word_hidden_states, entity_hidden_states, attention_mask=None):
        word_size = word_hidden_states.shape[1]
        attention_output, probs = self.attention(word_hidden_states, entity_hidden_states, attention_mask)
        layer_output = self.output(self.intermediate(attention_output), attention_output)
        entity_output = None if entity_hidden_states is None else layer_output[:, word_size:, :]
        return layer_output[:, :word_size, :], entity_output, probs


class LukeEncoder(nn.Cell):
    def __init__(self, config):
        super().__init__()
        self.layer = nn.CellList([LukeLayer(config) for _ in range(config.num_hidden_layers)])

    def construct(self, word_hidden_states, entity_hidden_states, attention_mask=None, output_attentions=False,
                  output_hidden_states=False):
        has_entities = entity_hidden_states is not None
        all_words = (word_hidden_states,) if output_hidden_states else None
        all_entities = (entity_hidden_states,) if output_hidden_states and has_entities else None
        all_attentions = () if output_attentions else None
        for layer in self.layer:
            word_hidden_states, entity_hidden_states, probs = layer(word_hidden_states, entity_hidden_states,
                                                                    attention_mask)
            if output_hidden_states:
                all_words += (word_hidden_states,)
                if has_entities:
                    all_entities += (entity_hidden_states,)
            if output_attentions:
                all_attentions += (probs,)
        return word_hidden_states, entity_hidden_states, all_words, all_entities, all_attentions


class LukePooler(nn.Cell):
    """tanh(dense(first token))."""

    def __init__(self, config):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)

    def construct(self, hidden_states):
        return F.tanh(self.dense(hidden_states[:, 0]))


class EntityPredictionHeadTransform(nn.Cell):
    def __init__(self, config):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.entity_emb_size)
        self.transform_act_fn = F.get_activation(config.hidden_act)
        self.LayerNorm = LayerNorm(config.entity_emb_size, eps=config.layer_norm_eps)

    def construct(self, hidden_states):
        return self.LayerNorm(self.transform_act_fn(self.dense(hidden_states)))


class EntityPredictionHead(nn.Cell):
    """Entity logits: transform -> decoder (tied to the entity embeddings) + its own bias."""

    def __init__(self, config):
        super().__init__()
        self.transform = EntityPredictionHeadTransform(config)
        self.decoder = Linear(config.entity_emb_size, config.entity_vocab_size, bias=False)
        self.bias = new_parameter((config.entity_vocab_size,), "zeros")

    def construct(self, hidden_states):
        return self.decoder(self.transform(hidden_states)) + self.bias


class LukeLMHead(nn.Cell):
    """dense -> GELU -> LayerNorm -> decoder, with HF's separate `bias` parameter tied to `decoder.bias`."""

    def __init__(self, config):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)
        self.layer_norm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = Linear(config.hidden_size, config.vocab_size)
        self.bias = new_parameter((config.vocab_size,), "zeros")

    def construct(self, features):
        return self.decoder(self.layer_norm(F.gelu(self.dense(features))))


class LukePreTrainedModel(PreTrainedModel):
    config_class = LukeConfig
    base_model_prefix = "luke"
    supports_gradient_checkpointing = True


class LukeModel(LukePreTrainedModel):
    """Word and (optional) entity streams through one encoder; the pooler reads the first word."""

    def __init__(self, config: LukeConfig, add_pooling_layer=True):
        super().__init__(config)
        self.embeddings = LukeEmbeddings(config)
        self.entity_embeddings = LukeEntityEmbeddings(config)
        self.encoder = LukeEncoder(config)
        self.pooler = LukePooler(config) if add_pooling_layer else None
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value):
        self.embeddings.word_embeddings = value

    def get_entity_embeddings(self):
        return self.entity_embeddings.entity_embeddings

    def set_entity_embeddings(self, value):
        self.entity_embeddings.entity_embeddings = value

    def construct(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, entity_ids=None,
                  entity_attention_mask=None, entity_token_type_ids=None, entity_position_ids=None,
                  inputs_embeds=None, output_attentions=None, output_hidden_states=None, return_dict=None,
                  **kwargs):
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        if input_ids is not None and inputs_embeds is not None:
            raise ValueError("You cannot specify both input_ids and inputs_embeds at the same time")
        if input_ids is None and inputs_embeds is None:
            raise ValueError("You have to specify either input_ids or inputs_embeds")
        batch_size, seq_length = input_ids.shape if input_ids is not None else inputs_embeds.shape[:2]
        if attention_mask is None:
            attention_mask = F.full((batch_size, seq_length), 1, ms.int64)
        word_embedding_output = self.embeddings(input_ids=input_ids, position_ids=position_ids,
                                                token_type_ids=token_type_ids, inputs_embeds=inputs_embeds)
        entity_embedding_output = None
        if entity_ids is not None:
            if entity_attention_mask is None:
                entity_attention_mask = F.full(entity_ids.shape, 1, ms.int64)
            # words and entities are one key sequence: [words; entities]
            attention_mask = F.cat([attention_mask.astype(ms.int64), entity_attention_mask.astype(ms.int64)], -1)
            entity_embedding_output = self.entity_embeddings(entity_ids, entity_position_ids, entity_token_type_ids)
        mask = create_bidirectional_mask(attention_mask, attention_mask.shape[-1], word_embedding_output.dtype)
        sequence_output, entity_output, all_words, all_entities, all_attn = self.encoder(
            word_embedding_output, entity_embedding_output, mask, output_attentions, output_hidden_states)
        pooled_output = self.pooler(sequence_output) if self.pooler is not None else None
        return model_output(BaseLukeModelOutputWithPooling, {
            "last_hidden_state": sequence_output,
            "pooler_output": pooled_output,
            "hidden_states": all_words,
            "attentions": all_attn,
            "entity_last_hidden_state": entity_output,
            "entity_hidden_states": all_entities,
        }, return_dict is None or return_dict)


def _classifier_dropout(config):
    return config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob


def _classification_loss(logits, labels, single_label_ndim):
    """Cross-entropy for integer class labels of rank `single_label_ndim`; otherwise multi-label BCE (HF's rule)."""
    if labels.ndim == single_label_ndim:
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
    return F.binary_cross_entropy_with_logits(logits.reshape(-1), labels.reshape(-1).astype(logits.dtype))


class LukeForMaskedLM(LukePreTrainedModel):
    """Masked-word logits (`labels`) and masked-entity logits (`entity_labels`); loss = their sum."""

    _tied_weights_keys = {
        "entity_predictions.decoder.weight": "luke.entity_embeddings.entity_embeddings.weight",
        "lm_head.bias": "lm_head.decoder.bias",
    }

    def __init__(self, config):
        super().__init__(config)
        self.luke = LukeModel(config)
        self.lm_head = LukeLMHead(config)
        self.entity_predictions = EntityPredictionHead(config)
        self.post_init()

    def get_output_embeddings(self):
        return self.lm_head.decoder

    def set_output_embeddings(self, new_embeddings):
        self.lm_head.decoder = new_embeddings

    def construct(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, entity_ids=None,
                  entity_attention_mask=None, entity_token_type_ids=None, entity_position_ids=None, labels=None,
                  entity_labels=None, inputs_embeds=None, output_attentions=None, output_hidden_states=None,
                  return_dict=None, **kwargs):
        return_dict = return_dict if return_dict is not None else True
        outputs = self.luke(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                            position_ids=position_ids, inputs_embeds=inputs_embeds,
                            output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                            entity_ids=entity_ids, entity_attention_mask=entity_attention_mask,
                            entity_token_type_ids=entity_token_type_ids, entity_position_ids=entity_position_ids)
        logits = self.lm_head(outputs["last_hidden_state"])
        loss = mlm_loss = mep_loss = entity_logits = None
        if labels is not None:
            mlm_loss = F.cross_entropy(logits.reshape(-1, self.config.vocab_size), labels.reshape(-1))
            loss = mlm_loss
        if outputs.get("entity_last_hidden_state") is not None:
            entity_logits = self.entity_predictions(outputs["entity_last_hidden_state"])
            if entity_labels is not None:
                mep_loss = F.cross_entropy(entity_logits.reshape(-1, self.config.entity_vocab_size),
                                           entity_labels.reshape(-1))
                loss = mep_loss if loss is None else loss + mep_loss
        return model_output(LukeMaskedLMOutput, {
            "loss": loss,
            "mlm_loss": mlm_loss,
            "mep_loss": mep_loss,
            "logits": logits,
            "entity_logits": entity_logits,
            "hidden_states": outputs.get("hidden_states"),
            "entity_hidden_states": outputs.get("entity_hidden_states"),
            "attentions": outputs.get("attentions"),
        }, return_dict)


class _LukeHead(LukePreTrainedModel):
    """Shared forward plumbing of the heads: run LUKE, then `self._logits(outputs, **head inputs)`."""

    output_class = None

    def _run(self, input_ids, attention_mask, token_type_ids, position_ids, entity_ids, entity_attention_mask,
             entity_token_type_ids, entity_position_ids, inputs_embeds, output_attentions, output_hidden_states):
        return self.luke(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                         position_ids=position_ids, inputs_embeds=inputs_embeds, output_attentions=output_attentions,
                         output_hidden_states=output_hidden_states, entity_ids=entity_ids,
                         entity_attention_mask=entity_attention_mask, entity_token_type_ids=entity_token_type_ids,
                         entity_position_ids=entity_position_ids)

    def _output(self, outputs, fields, return_dict):
        fields.update({"hidden_states": outputs.get("hidden_states"),
                       "entity_hidden_states": outputs.get("entity_hidden_states"),
                       "attentions": outputs.get("attentions")})
        return model_output(self.output_class, fields, return_dict)


class LukeForEntityClassification(_LukeHead):
    """Classifies the first entity (e.g. entity typing)."""

    output_class = EntityClassificationOutput

    def __init__(self, config):
        super().__init__(config)
        self.luke = LukeModel(config)
        self.num_labels = config.num_labels
        self.dropout = Dropout(config.hidden_dropout_prob)
        self.classifier = Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def construct(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, entity_ids=None,
                  entity_attention_mask=None, entity_token_type_ids=None, entity_position_ids=None,
                  inputs_embeds=None, labels=None, output_attentions=None, output_hidden_states=None,
                  return_dict=None, **kwargs):
        outputs = self._run(input_ids, attention_mask, token_type_ids, position_ids, entity_ids,
                            entity_attention_mask, entity_token_type_ids, entity_position_ids, inputs_embeds,
                            output_attentions, output_hidden_states)
        logits = self.classifier(self.dropout(outputs["entity_last_hidden_state"][:, 0, :]))
        loss = _classification_loss(logits, labels, 1) if labels is not None else None
        return self._output(outputs, {"loss": loss, "logits": logits}, return_dict is None or return_dict)


class LukeForEntityPairClassification(_LukeHead):
    """Classifies the pair (first entity, second entity) (e.g. relation classification)."""

    output_class = EntityPairClassificationOutput

    def __init__(self, config):
        super().__init__(config)
        self.luke = LukeModel(config)
        self.num_labels = config.num_labels
        self.dropout = Dropout(config.hidden_dropout_prob)
        self.classifier = Linear(config.hidden_size * 2, config.num_labels, bias=False)
        self.post_init()

    def construct(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, entity_ids=None,
                  entity_attention_mask=None, entity_token_type_ids=None, entity_position_ids=None,
                  inputs_embeds=None, labels=None, output_attentions=None, output_hidden_states=None,
                  return_dict=None, **kwargs):
        outputs = self._run(input_ids, attention_mask, token_type_ids, position_ids, entity_ids,
                            entity_attention_mask, entity_token_type_ids, entity_position_ids, inputs_embeds,
                            output_attentions, output_hidden_states)
        entities = outputs["entity_last_hidden_state"]
        logits = self.classifier(self.dropout(F.cat([entities[:, 0, :], entities[:, 1, :]], 1)))
        loss = _classification_loss(logits, labels, 1) if labels is not None else None
        return self._output(outputs, {"loss": loss, "logits": logits}, return_dict is None or return_dict)


class LukeForEntitySpanClassification(_LukeHead):
    """Classifies every entity span from [start word; end word; entity] states (e.g. named-entity recognition)."""

    output_class = EntitySpanClassificationOutput

    def __init__(self, config):
        super().__init__(config)
        self.luke = LukeModel(config)
        self.num_labels = config.num_labels
        self.dropout = Dropout(config.hidden_dropout_prob)
        self.classifier = Linear(config.hidden_size * 3, config.num_labels)
        self.post_init()

    def construct(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, entity_ids=None,
                  entity_attention_mask=None, entity_token_type_ids=None, entity_position_ids=None,
                  entity_start_positions=None, entity_end_positions=None, inputs_embeds=None, labels=None,
                  output_attentions=None, output_hidden_states=None, return_dict=None, **kwargs):
        outputs = self._run(input_ids, attention_mask, token_type_ids, position_ids, entity_ids,
                            entity_attention_mask, entity_token_type_ids, entity_position_ids, inputs_embeds,
                            output_attentions, output_hidden_states)
        words = outputs["last_hidden_state"]
        hidden = words.shape[-1]

        def gather(positions):
            index = ops.broadcast_to(positions.astype(ms.int64)[..., None], positions.shape + (hidden,))
            return ops.gather_elements(words, 1, index)

        features = F.cat([gather(entity_start_positions), gather(entity_end_positions),
                          outputs["entity_last_hidden_state"]], 2)
        logits = self.classifier(self.dropout(features))
        loss = _classification_loss(logits, labels, 2) if labels is not None else None
        return self._output(outputs, {"loss": loss, "logits": logits}, return_dict is None or return_dict)


class LukeForSequenceClassification(_LukeHead):
    """dropout -> linear on the pooled first token."""

    output_class = LukeSequenceClassifierOutput

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.luke = LukeModel(config)
        self.dropout = Dropout(_classifier_dropout(config))
        self.classifier = Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def construct(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, entity_ids=None,
                  entity_attention_mask=None, entity_token_type_ids=None, entity_position_ids=None,
                  inputs_embeds=None, labels=None, output_attentions=None, output_hidden_states=None,
                  return_dict=None, **kwargs):
        outputs = self._run(input_ids, attention_mask, token_type_ids, position_ids, entity_ids,
                            entity_attention_mask, entity_token_type_ids, entity_position_ids, inputs_embeds,
                            output_attentions, output_hidden_states)
        logits = self.classifier(self.dropout(outputs["pooler_output"]))
        loss = sequence_classification_loss(labels, logits, self.config) if labels is not None else None
        return self._output(outputs, {"loss": loss, "logits": logits}, return_dict is None or return_dict)


class LukeForTokenClassification(_LukeHead):
    output_class = LukeTokenClassifierOutput

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.luke = LukeModel(config, add_pooling_layer=False)
        self.dropout = Dropout(_classifier_dropout(config))
        self.classifier = Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def construct(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, entity_ids=None,
                  entity_attention_mask=None, entity_token_type_ids=None, entity_position_ids=None,
                  inputs_embeds=None, labels=None, output_attentions=None, output_hidden_states=None,
                  return_dict=None, **kwargs):
        outputs = self._run(input_ids, attention_mask, token_type_ids, position_ids, entity_ids,
                            entity_attention_mask, entity_token_type_ids, entity_position_ids, inputs_embeds,
                            output_attentions, output_hidden_states)
        logits = self.classifier(self.dropout(outputs["last_hidden_state"]))
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.reshape(-1, self.num_labels), labels.reshape(-1))
        return self._output(outputs, {"loss": loss, "logits": logits}, return_dict is None or return_dict)


class LukeForQuestionAnswering(_LukeHead):
    output_class = LukeQuestionAnsweringModelOutput

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.luke = LukeModel(config, add_pooling_layer=False)
        self.qa_outputs = Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def construct(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, entity_ids=None,
                  entity_attention_mask=None, entity_token_type_ids=None, entity_position_ids=None,
                  inputs_embeds=None, start_positions=None, end_positions=None, output_attentions=None,
                  output_hidden_states=None, return_dict=None, **kwargs):
        outputs = self._run(input_ids, attention_mask, token_type_ids, position_ids, entity_ids,
                            entity_attention_mask, entity_token_type_ids, entity_position_ids, inputs_embeds,
                            output_attentions, output_hidden_states)
        logits = self.qa_outputs(outputs["last_hidden_state"])
        start_logits, end_logits = logits[..., 0], logits[..., 1]
        loss = None
        if start_positions is not None and end_positions is not None:
            loss = question_answering_loss(start_logits, end_logits, start_positions, end_positions)
        return self._output(outputs, {"loss": loss, "start_logits": start_logits, "end_logits": end_logits},
                            return_dict is None or return_dict)


class LukeForMultipleChoice(_LukeHead):
    """Inputs of shape (B, num_choices, ...); one score per choice from the pooled output."""

    output_class = LukeMultipleChoiceModelOutput

    def __init__(self, config):
        super().__init__(config)
        self.luke = LukeModel(config)
        self.dropout = Dropout(_classifier_dropout(config))
        self.classifier = Linear(config.hidden_size, 1)
        self.post_init()

    def construct(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, entity_ids=None,
                  entity_attention_mask=None, entity_token_type_ids=None, entity_position_ids=None,
                  inputs_embeds=None, labels=None, output_attentions=None, output_hidden_states=None,
                  return_dict=None, **kwargs):
        num_choices = input_ids.shape[1] if input_ids is not None else inputs_embeds.shape[1]

        def flat(x):
            return None if x is None else x.reshape((-1,) + tuple(x.shape[2:]))

        outputs = self._run(flat(input_ids), flat(attention_mask), flat(token_type_ids), flat(position_ids),
                            flat(entity_ids), flat(entity_attention_mask), flat(entity_token_type_ids),
                            flat(entity_position_ids), flat(inputs_embeds), output_attentions, output_hidden_states)
        logits = self.classifier(self.dropout(outputs["pooler_output"])).reshape(-1, num_choices)
        loss = fixed_cross_entropy(logits, labels) if labels is not None else None
        return self._output(outputs, {"loss": loss, "logits": logits}, return_dict is None or return_dict)


__all__ = [
    "LukeForEntityClassification",
    "LukeForEntityPairClassification",
    "LukeForEntitySpanClassification",
    "LukeForMultipleChoice",
    "LukeForQuestionAnswering",
    "LukeForSequenceClassification",
    "LukeForTokenClassification",
    "LukeForMaskedLM",
    "LukeModel",
    "LukePreTrainedModel",
]
