"""RoBERTa-PreLayerNorm on MindSpore: HF's `modeling_roberta_prelayernorm.py` structure, names and outputs; device
concerns live in `backend`.

RoBERTa with pre-LayerNorm layers (Fairseq's `--encoder-normalize-before`): each block normalises its input, the
residual adds the un-normalised input, and one final LayerNorm (`roberta_prelayernorm.LayerNorm`) closes the encoder.
The embeddings keep their LayerNorm. Positions follow RoBERTa's rule (real tokens count from `padding_idx + 1`,
padding tokens keep `padding_idx`).
"""

import logging

import mindspore as ms
from mindspore import nn
from transformers import RobertaPreLayerNormConfig

from ...backend import functional as F
from ...backend import runtime
from ...backend.layers import Dropout, Embedding, LayerNorm, Linear, new_parameter
from ...cache_utils import DynamicCache
from ...generation import GenerationMixin
from ...loss_utils import causal_lm_loss, fixed_cross_entropy, masked_lm_loss, question_answering_loss
from ...loss_utils import sequence_classification_loss, token_classification_loss
from ...masking_utils import create_bidirectional_mask, create_causal_mask
from ...modeling_layers import GradientCheckpointingLayer
from ...modeling_outputs import (
    model_output,
    BaseModelOutputWithPoolingAndCrossAttentions,
    CausalLMOutputWithCrossAttentions,
    MaskedLMOutput,
    MultipleChoiceModelOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from ...modeling_utils import PreTrainedModel, init_parameter

logger = logging.getLogger(__name__)


def create_position_ids_from_input_ids(input_ids, padding_idx, past_key_values_length=0):
    """Real tokens get positions padding_idx + 1, padding_idx + 2, ... (counting only real tokens, after the cached
    ones); padding tokens get padding_idx, whose embedding row is the padding row."""
    mask = (input_ids != padding_idx).astype(ms.int32)
    incremental = (F.cumsum(mask, 1) + past_key_values_length) * mask
    return incremental.astype(ms.int64) + padding_idx


def create_position_ids_from_inputs_embeds(inputs_embeds, padding_idx):
    """Without ids padding cannot be seen: every position is real, so positions are padding_idx + 1 .. + S."""
    batch_size, seq_length = inputs_embeds.shape[:2]
    positions = F.arange(padding_idx + 1, seq_length + padding_idx + 1)[None, :]
    return ms.ops.broadcast_to(positions, (batch_size, seq_length))


class RobertaPreLayerNormEmbeddings(nn.Cell):
    """word + position (from padding_idx) + token-type embeddings, then LayerNorm and dropout."""

    def __init__(self, config):
        super().__init__()
        self.padding_idx = config.pad_token_id
        self.word_embeddings = Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = Embedding(config.max_position_embeddings, config.hidden_size,
                                             padding_idx=config.pad_token_id)
        self.token_type_embeddings = Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def construct(self, input_ids=None, token_type_ids=None, position_ids=None, inputs_embeds=None,
                  past_key_values_length=0):
        if position_ids is None:
            if input_ids is not None:
                position_ids = create_position_ids_from_input_ids(input_ids, self.padding_idx, past_key_values_length)
            else:
                position_ids = create_position_ids_from_inputs_embeds(inputs_embeds, self.padding_idx)
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        batch_size, seq_length = inputs_embeds.shape[:2]
        if token_type_ids is None:
            token_type_ids = F.full((batch_size, seq_length), 0, ms.int64)
        embeddings = inputs_embeds + self.token_type_embeddings(token_type_ids)
        embeddings = embeddings + self.position_embeddings(position_ids)
        return self.dropout(self.LayerNorm(embeddings))


class RobertaPreLayerNormSelfAttention(nn.Cell):
    """Multi-head attention; with `encoder_hidden_states` the keys/values come from the encoder (cross-attention)."""

    def __init__(self, config, layer_idx=None):
        super().__init__()
        if config.hidden_size % config.num_attention_heads != 0:
            raise ValueError(f"The hidden size ({config.hidden_size}) is not a multiple of the number of attention "
                             f"heads ({config.num_attention_heads})")
        self.num_attention_heads = config.num_attention_heads
        self.attention_head_size = config.hidden_size // config.num_attention_heads
        self.all_head_size = self.num_attention_heads * self.attention_head_size
        self.scaling = self.attention_head_size ** -0.5
        self.query = Linear(config.hidden_size, self.all_head_size)
        self.key = Linear(config.hidden_size, self.all_head_size)
        self.value = Linear(config.hidden_size, self.all_head_size)
        self.dropout_prob = config.attention_probs_dropout_prob
        self.layer_idx = layer_idx

    def _heads(self, x):
        # (B, S, H*D) -> (B, H, S, D); swapaxes because Tensor.transpose(1, 2) fails inside jit on CPU
        return x.reshape(x.shape[0], x.shape[1], -1, self.attention_head_size).swapaxes(1, 2)

    def construct(self, hidden_states, attention_mask=None, encoder_hidden_states=None, past_key_values=None):
        batch, seq_len = hidden_states.shape[:2]
        query = self._heads(self.query(hidden_states))
        kv_source = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        key = self._heads(self.key(kv_source))
        value = self._heads(self.value(kv_source))
        if past_key_values is not None and encoder_hidden_states is None:
            key, value = past_key_values.update(key, value, self.layer_idx)
        attn_output, attn_weights = F.attention(query, key, value, attn_mask=attention_mask, scale=self.scaling,
                                       dropout_p=self.dropout_prob, training=self.training)
        return attn_output.swapaxes(1, 2).reshape(batch, seq_len, -1), attn_weights


class RobertaPreLayerNormSelfOutput(nn.Cell):
    """dense + dropout + residual; no LayerNorm after the sum (it moved before the attention)."""

    def __init__(self, config):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def construct(self, hidden_states, input_tensor):
        return self.dropout(self.dense(hidden_states)) + input_tensor


class RobertaPreLayerNormAttention(nn.Cell):
    """LayerNorm -> attention -> dense -> + the un-normalised input. For cross-attention only the queries' side
    (the decoder states) is normalised here; the encoder states come in as they are."""

    def __init__(self, config, layer_idx=None):
        super().__init__()
        self.self = RobertaPreLayerNormSelfAttention(config, layer_idx=layer_idx)
        self.output = RobertaPreLayerNormSelfOutput(config)
        self.LayerNorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def construct(self, hidden_states, attention_mask=None, encoder_hidden_states=None, past_key_values=None):
        attn_output, attn_weights = self.self(self.LayerNorm(hidden_states), attention_mask, encoder_hidden_states,
                                              past_key_values)
        return self.output(attn_output, hidden_states), attn_weights


class RobertaPreLayerNormIntermediate(nn.Cell):
    """LayerNorm -> dense -> activation (the feed-forward block's pre-norm lives here)."""

    def __init__(self, config):
        super().__init__()
        self.LayerNorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dense = Linear(config.hidden_size, config.intermediate_size)
        self.intermediate_act_fn = F.get_activation(config.hidden_act)

    def construct(self, hidden_states):
        return self.intermediate_act_fn(self.dense(self.LayerNorm(hidden_states)))


class RobertaPreLayerNormOutput(nn.Cell):
    def __init__(self, config):
        super().__init__()
        self.dense = Linear(config.intermediate_size, config.hidden_size)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def construct(self, hidden_states, input_tensor):
        return self.dropout(self.dense(hidden_states)) + input_tensor


class RobertaPreLayerNormLayer(GradientCheckpointingLayer):
    def __init__(self, config, layer_idx=None):
        super().__init__()
        self.attention = RobertaPreLayerNormAttention(config, layer_idx=layer_idx)
        self.is_decoder = config.is_decoder
        self.add_cross_attention = config.add_cross_attention
        if self.add_cross_attention:
            if not self.is_decoder:
                raise ValueError("RobertaPreLayerNormLayer: cross-attention needs config.is_decoder=True")
            self.crossattention = RobertaPreLayerNormAttention(config, layer_idx=layer_idx)
        self.intermediate = RobertaPreLayerNormIntermediate(config)
        self.output = RobertaPreLayerNormOutput(config)

    def construct(self, hidden_states, attention_mask=None, encoder_hidden_states=None, encoder_attention_mask=None,
                  past_key_values=None):
        attention_output, self_weights = self.attention(hidden_states, attention_mask, None, past_key_values)
        cross_weights = None
        if self.is_decoder and encoder_hidden_states is not None:
            if not self.add_cross_attention:
                raise ValueError("encoder_hidden_states were passed but the model has no cross-attention layers "
                                 "(set config.add_cross_attention=True)")
            attention_output, cross_weights = self.crossattention(attention_output, encoder_attention_mask,
                                                         encoder_hidden_states)
        layer_output = self.output(self.intermediate(attention_output), attention_output)
        return layer_output, self_weights, cross_weights


class RobertaPreLayerNormEncoder(nn.Cell):
    def __init__(self, config):
        super().__init__()
        self.layer = nn.CellList([RobertaPreLayerNormLayer(config, layer_idx=i) for i in range(config.num_hidden_layers)])

    def construct(self, hidden_states, attention_mask=None, encoder_hidden_states=None, encoder_attention_mask=None,
                  past_key_values=None, output_attentions=False, output_hidden_states=False):
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        all_cross = () if output_attentions and encoder_hidden_states is not None else None
        for layer in self.layer:
            hidden_states, self_weights, cross_weights = layer(hidden_states, attention_mask, encoder_hidden_states,
                                                      encoder_attention_mask, past_key_values)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            if output_attentions:
                all_attentions += (self_weights,)
                if all_cross is not None:
                    all_cross += (cross_weights,)
        return hidden_states, all_hidden_states, all_attentions, all_cross


class RobertaPreLayerNormPooler(nn.Cell):
    """tanh(dense(first token)): the [CLS] summary used by the sequence-level heads."""

    def __init__(self, config):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)

    def construct(self, hidden_states):
        return F.tanh(self.dense(hidden_states[:, 0]))


class RobertaPreLayerNormLMHead(nn.Cell):
    """dense -> GELU -> LayerNorm -> decoder (tied to the word embeddings) with its own bias."""

    def __init__(self, config):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)
        self.layer_norm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = Linear(config.hidden_size, config.vocab_size)
        # HF keeps the output bias as its own parameter too, tied to decoder.bias
        self.bias = new_parameter((config.vocab_size,), "zeros")

    def construct(self, features):
        return self.decoder(self.layer_norm(F.gelu(self.dense(features))))


def _classifier_dropout(config):
    return config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob


class RobertaPreLayerNormClassificationHead(nn.Cell):
    """Sentence-level head on the first (<s>) token: dropout -> dense -> tanh -> dropout -> out_proj."""

    def __init__(self, config):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)
        self.dropout = Dropout(_classifier_dropout(config))
        self.out_proj = Linear(config.hidden_size, config.num_labels)

    def construct(self, features):
        x = self.dropout(features[:, 0, :])
        x = self.dropout(F.tanh(self.dense(x)))
        return self.out_proj(x)


class RobertaPreLayerNormPreTrainedModel(PreTrainedModel):
    config_class = RobertaPreLayerNormConfig
    base_model_prefix = "roberta_prelayernorm"
    supports_gradient_checkpointing = True

    def _init_weights(self, cell):
        super()._init_weights(cell)
        if isinstance(cell, RobertaPreLayerNormLMHead):
            init_parameter(cell.bias, "zeros")


class RobertaPreLayerNormModel(RobertaPreLayerNormPreTrainedModel):
    """Encoder (bidirectional) or, with `config.is_decoder`, a causal decoder with optional cross-attention."""

    def __init__(self, config: RobertaPreLayerNormConfig, add_pooling_layer=True):
        super().__init__(config)
        self.embeddings = RobertaPreLayerNormEmbeddings(config)
        self.encoder = RobertaPreLayerNormEncoder(config)
        # pre-norm layers leave their output un-normalised: one LayerNorm closes the stack
        self.LayerNorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.pooler = RobertaPreLayerNormPooler(config) if add_pooling_layer else None
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value):
        self.embeddings.word_embeddings = value

    def construct(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                  inputs_embeds=None, encoder_hidden_states=None, encoder_attention_mask=None, past_key_values=None,
                  use_cache=None, output_attentions=None, output_hidden_states=None, return_dict=None,
                  cache_position=None, **kwargs):
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        is_decoder = self.config.is_decoder
        use_cache = (use_cache if use_cache is not None else self.config.use_cache) if is_decoder else False
        if use_cache and past_key_values is None and not runtime.in_graph():
            past_key_values = DynamicCache(config=self.config)
        past_length = past_key_values.get_seq_length() if past_key_values is not None else 0

        embedding_output = self.embeddings(input_ids=input_ids, token_type_ids=token_type_ids,
                                           position_ids=position_ids, inputs_embeds=inputs_embeds,
                                           past_key_values_length=past_length)
        batch_size, seq_len = embedding_output.shape[:2]
        dtype = embedding_output.dtype
        if is_decoder:
            if cache_position is None:
                cache_position = F.arange(past_length, past_length + seq_len)
            mask = create_causal_mask(attention_mask, batch_size, cache_position, past_length + seq_len, dtype)
        else:
            mask = create_bidirectional_mask(attention_mask, seq_len, dtype)
        encoder_mask = None
        if encoder_attention_mask is not None:
            encoder_mask = create_bidirectional_mask(encoder_attention_mask, seq_len, dtype)

        sequence_output, all_hidden, all_attn, all_cross = self.encoder(
            embedding_output, mask, encoder_hidden_states, encoder_mask, past_key_values,
            output_attentions, output_hidden_states,
        )
        sequence_output = self.LayerNorm(sequence_output)
        if all_hidden is not None:
            # HF reports the normalised output as the last hidden state
            all_hidden = all_hidden[:-1] + (sequence_output,)
        pooled_output = self.pooler(sequence_output) if self.pooler is not None else None
        return model_output(BaseModelOutputWithPoolingAndCrossAttentions, {
            "last_hidden_state": sequence_output,
            "pooler_output": pooled_output,
            "past_key_values": past_key_values if use_cache else None,
            "hidden_states": all_hidden,
            "attentions": all_attn,
            "cross_attentions": all_cross,
        }, return_dict is None or return_dict)


_LM_TIES = {
    "lm_head.decoder.weight": "roberta_prelayernorm.embeddings.word_embeddings.weight",
    "lm_head.decoder.bias": "lm_head.bias",
}


class RobertaPreLayerNormForCausalLM(RobertaPreLayerNormPreTrainedModel, GenerationMixin):
    """RoBERTa as a causal decoder (`config.is_decoder=True`), with `generate()`."""

    _tied_weights_keys = _LM_TIES

    def __init__(self, config):
        super().__init__(config)
        if not config.is_decoder:
            logger.warning("If you want to use `RobertaPreLayerNormForCausalLM` as a standalone, add `is_decoder=True.`")
        self.roberta_prelayernorm = RobertaPreLayerNormModel(config, add_pooling_layer=False)
        self.lm_head = RobertaPreLayerNormLMHead(config)
        self.post_init()

    def get_output_embeddings(self):
        return self.lm_head.decoder

    def set_output_embeddings(self, new_embeddings):
        self.lm_head.decoder = new_embeddings

    def construct(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                  inputs_embeds=None, encoder_hidden_states=None, encoder_attention_mask=None, labels=None,
                  past_key_values=None, use_cache=None, output_attentions=None, output_hidden_states=None,
                  return_dict=None, cache_position=None, logits_to_keep=0, **kwargs):
        return_dict = return_dict if return_dict is not None else True
        if labels is not None:
            use_cache = False
        outputs = self.roberta_prelayernorm(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                               position_ids=position_ids, inputs_embeds=inputs_embeds,
                               encoder_hidden_states=encoder_hidden_states,
                               encoder_attention_mask=encoder_attention_mask,
                               past_key_values=past_key_values, use_cache=use_cache,
                               output_attentions=output_attentions,
                               output_hidden_states=output_hidden_states, cache_position=cache_position)
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


class RobertaPreLayerNormForMaskedLM(RobertaPreLayerNormPreTrainedModel):
    _tied_weights_keys = _LM_TIES

    def __init__(self, config):
        super().__init__(config)
        if config.is_decoder:
            logger.warning("If you want to use `RobertaPreLayerNormForMaskedLM` make sure `config.is_decoder=False` for "
                           "bi-directional self-attention.")
        self.roberta_prelayernorm = RobertaPreLayerNormModel(config, add_pooling_layer=False)
        self.lm_head = RobertaPreLayerNormLMHead(config)
        self.post_init()

    def get_output_embeddings(self):
        return self.lm_head.decoder

    def set_output_embeddings(self, new_embeddings):
        self.lm_head.decoder = new_embeddings

    def construct(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                  inputs_embeds=None, encoder_hidden_states=None, encoder_attention_mask=None, labels=None,
                  output_attentions=None, output_hidden_states=None, return_dict=None, **kwargs):
        return_dict = return_dict if return_dict is not None else True
        outputs = self.roberta_prelayernorm(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                               position_ids=position_ids, inputs_embeds=inputs_embeds,
                               encoder_hidden_states=encoder_hidden_states,
                               encoder_attention_mask=encoder_attention_mask,
                               output_attentions=output_attentions,
                               output_hidden_states=output_hidden_states)
        prediction_scores = self.lm_head(outputs["last_hidden_state"])
        loss = None
        if labels is not None:
            loss = masked_lm_loss(prediction_scores, labels, self.config.vocab_size)
        return model_output(MaskedLMOutput, {
            "loss": loss,
            "logits": prediction_scores,
            "hidden_states": outputs.get("hidden_states"),
            "attentions": outputs.get("attentions"),
        }, return_dict)


class RobertaPreLayerNormForSequenceClassification(RobertaPreLayerNormPreTrainedModel):
    """`RobertaPreLayerNormClassificationHead` on the first token (no pooler)."""

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.roberta_prelayernorm = RobertaPreLayerNormModel(config, add_pooling_layer=False)
        self.classifier = RobertaPreLayerNormClassificationHead(config)
        self.post_init()

    def construct(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                  inputs_embeds=None, labels=None, output_attentions=None, output_hidden_states=None,
                  return_dict=None, **kwargs):
        return_dict = return_dict if return_dict is not None else True
        outputs = self.roberta_prelayernorm(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                               position_ids=position_ids, inputs_embeds=inputs_embeds,
                               output_attentions=output_attentions,
                               output_hidden_states=output_hidden_states)
        logits = self.classifier(outputs["last_hidden_state"])
        loss = sequence_classification_loss(labels, logits, self.config) if labels is not None else None
        return model_output(SequenceClassifierOutput, {
            "loss": loss,
            "logits": logits,
            "hidden_states": outputs.get("hidden_states"),
            "attentions": outputs.get("attentions"),
        }, return_dict)


class RobertaPreLayerNormForMultipleChoice(RobertaPreLayerNormPreTrainedModel):
    """Inputs of shape (B, num_choices, S); one score per choice from the pooled output."""

    def __init__(self, config):
        super().__init__(config)
        self.roberta_prelayernorm = RobertaPreLayerNormModel(config)
        self.dropout = Dropout(config.hidden_dropout_prob)
        self.classifier = Linear(config.hidden_size, 1)
        self.post_init()

    def construct(self, input_ids=None, token_type_ids=None, attention_mask=None, labels=None, position_ids=None,
                  inputs_embeds=None, output_attentions=None, output_hidden_states=None, return_dict=None,
                  **kwargs):
        return_dict = return_dict if return_dict is not None else True
        num_choices = input_ids.shape[1] if input_ids is not None else inputs_embeds.shape[1]

        def flat(x):
            return None if x is None else x.reshape((-1,) + tuple(x.shape[2:]))

        outputs = self.roberta_prelayernorm(flat(input_ids), attention_mask=flat(attention_mask),
                               token_type_ids=flat(token_type_ids), position_ids=flat(position_ids),
                               inputs_embeds=flat(inputs_embeds), output_attentions=output_attentions,
                               output_hidden_states=output_hidden_states)
        logits = self.classifier(self.dropout(outputs["pooler_output"])).reshape(-1, num_choices)
        loss = fixed_cross_entropy(logits, labels) if labels is not None else None
        return model_output(MultipleChoiceModelOutput, {
            "loss": loss,
            "logits": logits,
            "hidden_states": outputs.get("hidden_states"),
            "attentions": outputs.get("attentions"),
        }, return_dict)


class RobertaPreLayerNormForTokenClassification(RobertaPreLayerNormPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.roberta_prelayernorm = RobertaPreLayerNormModel(config, add_pooling_layer=False)
        self.dropout = Dropout(_classifier_dropout(config))
        self.classifier = Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def construct(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                  inputs_embeds=None, labels=None, output_attentions=None, output_hidden_states=None,
                  return_dict=None, **kwargs):
        return_dict = return_dict if return_dict is not None else True
        outputs = self.roberta_prelayernorm(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                               position_ids=position_ids, inputs_embeds=inputs_embeds,
                               output_attentions=output_attentions,
                               output_hidden_states=output_hidden_states)
        logits = self.classifier(self.dropout(outputs["last_hidden_state"]))
        loss = token_classification_loss(logits, labels, self.num_labels) if labels is not None else None
        return model_output(TokenClassifierOutput, {
            "loss": loss,
            "logits": logits,
            "hidden_states": outputs.get("hidden_states"),
            "attentions": outputs.get("attentions"),
        }, return_dict)


class RobertaPreLayerNormForQuestionAnswering(RobertaPreLayerNormPreTrainedModel):
    """Span start/end logits for extractive QA."""

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.roberta_prelayernorm = RobertaPreLayerNormModel(config, add_pooling_layer=False)
        self.qa_outputs = Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def construct(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                  inputs_embeds=None, start_positions=None, end_positions=None, output_attentions=None,
                  output_hidden_states=None, return_dict=None, **kwargs):
        return_dict = return_dict if return_dict is not None else True
        outputs = self.roberta_prelayernorm(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                               position_ids=position_ids, inputs_embeds=inputs_embeds,
                               output_attentions=output_attentions,
                               output_hidden_states=output_hidden_states)
        logits = self.qa_outputs(outputs["last_hidden_state"])
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


__all__ = [
    "RobertaPreLayerNormForCausalLM",
    "RobertaPreLayerNormForMaskedLM",
    "RobertaPreLayerNormForMultipleChoice",
    "RobertaPreLayerNormForQuestionAnswering",
    "RobertaPreLayerNormForSequenceClassification",
    "RobertaPreLayerNormForTokenClassification",
    "RobertaPreLayerNormModel",
    "RobertaPreLayerNormPreTrainedModel",
]
