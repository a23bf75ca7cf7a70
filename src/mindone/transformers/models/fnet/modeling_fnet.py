"""FNet on MindSpore: HF's `modeling_fnet.py` structure, names and outputs; device concerns live in `backend`.

FNet is BERT with the self-attention sublayer replaced by an unparametrised token mixing: the real part of the 2-D
discrete Fourier transform over the sequence and hidden axes (`F.fft2_real`). There is no attention, so no attention
mask: padding tokens are mixed in like any other token (as in HF). The embeddings add a dense projection after their
LayerNorm. Positions are absolute, 0 .. S-1.
"""

from dataclasses import dataclass
from typing import Any, Optional, Tuple

import mindspore as ms
from mindspore import nn
from transformers import FNetConfig

from ...backend import functional as F
from ...backend.layers import Dropout, Embedding, LayerNorm, Linear, new_parameter
from ...loss_utils import fixed_cross_entropy, masked_lm_loss, question_answering_loss, sequence_classification_loss
from ...loss_utils import token_classification_loss
from ...modeling_layers import GradientCheckpointingLayer
from ...modeling_outputs import (
    model_output,
    BaseModelOutputWithPooling,
    MaskedLMOutput,
    ModelOutput,
    MultipleChoiceModelOutput,
    NextSentencePredictorOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from ...modeling_utils import PreTrainedModel, init_parameter


class FNetEmbeddings(nn.Cell):
    """word + position + token-type embeddings, LayerNorm, a dense projection, dropout."""

    def __init__(self, config):
        super().__init__()
        self.word_embeddings = Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.projection = Linear(config.hidden_size, config.hidden_size)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def construct(self, input_ids=None, token_type_ids=None, position_ids=None, inputs_embeds=None):
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        batch_size, seq_length = inputs_embeds.shape[:2]
        if position_ids is None:
            position_ids = F.arange(0, seq_length)[None, :]
        if token_type_ids is None:
            token_type_ids = F.full((batch_size, seq_length), 0, ms.int64)
        embeddings = inputs_embeds + self.token_type_embeddings(token_type_ids)
        embeddings = embeddings + self.position_embeddings(position_ids)
        return self.dropout(self.projection(self.LayerNorm(embeddings)))


class FNetBasicFourierTransform(nn.Cell):
    """Re(FFT_2D(x)) over (sequence, hidden). HF's TPU option (`use_tpu_fourier_optimizations`) computes the same
    transform as DFT matmuls; here the backend picks the kernel, so both settings run the one op."""

    def construct(self, hidden_states):
        return F.fft2_real(hidden_states)


class FNetBasicOutput(nn.Cell):
    def __init__(self, config):
        super().__init__()
        self.LayerNorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def construct(self, hidden_states, input_tensor):
        return self.LayerNorm(input_tensor + hidden_states)


class FNetFourierTransform(nn.Cell):
    def __init__(self, config):
        super().__init__()
        self.self = FNetBasicFourierTransform()
        self.output = FNetBasicOutput(config)

    def construct(self, hidden_states):
        return self.output(self.self(hidden_states), hidden_states)


class FNetIntermediate(nn.Cell):
    def __init__(self, config):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.intermediate_size)
        self.intermediate_act_fn = F.get_activation(config.hidden_act)

    def construct(self, hidden_states):
        return self.intermediate_act_fn(self.dense(hidden_states))


class FNetOutput(nn.Cell):
    def __init__(self, config):
        super().__init__()
        self.dense = Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def construct(self, hidden_states, input_tensor):
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + input_tensor)


class FNetLayer(GradientCheckpointingLayer):
    """Fourier mixing + residual LayerNorm, then the feed-forward block + residual LayerNorm."""

    def __init__(self, config):
        super().__init__()
        self.fourier = FNetFourierTransform(config)
        self.intermediate = FNetIntermediate(config)
        self.output = FNetOutput(config)

    def construct(self, hidden_states):
        fourier_output = self.fourier(hidden_states)
        return self.output(self.intermediate(fourier_output), fourier_output)


class FNetEncoder(nn.Cell):
    def __init__(self, config):
        super().__init__()
        self.layer = nn.CellList([FNetLayer(config) for _ in range(config.num_hidden_layers)])

    def construct(self, hidden_states, output_hidden_states=False):
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        for layer in self.layer:
            hidden_states = layer(hidden_states)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
        return hidden_states, all_hidden_states


class FNetPooler(nn.Cell):
    """tanh(dense(first token))."""

    def __init__(self, config):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)

    def construct(self, hidden_states):
        return F.tanh(self.dense(hidden_states[:, 0]))


class FNetPredictionHeadTransform(nn.Cell):
    def __init__(self, config):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)
        self.transform_act_fn = F.get_activation(config.hidden_act)
        self.LayerNorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def construct(self, hidden_states):
        return self.LayerNorm(self.transform_act_fn(self.dense(hidden_states)))


class FNetLMPredictionHead(nn.Cell):
    def __init__(self, config):
        super().__init__()
        self.transform = FNetPredictionHeadTransform(config)
        self.decoder = Linear(config.hidden_size, config.vocab_size)
        # HF keeps the output bias as its own parameter too, tied to decoder.bias
        self.bias = new_parameter((config.vocab_size,), "zeros")

    def construct(self, hidden_states):
        return self.decoder(self.transform(hidden_states))


class FNetOnlyMLMHead(nn.Cell):
    def __init__(self, config):
        super().__init__()
        self.predictions = FNetLMPredictionHead(config)

    def construct(self, sequence_output):
        return self.predictions(sequence_output)


class FNetOnlyNSPHead(nn.Cell):
    def __init__(self, config):
        super().__init__()
        self.seq_relationship = Linear(config.hidden_size, 2)

    def construct(self, pooled_output):
        return self.seq_relationship(pooled_output)


class FNetPreTrainingHeads(nn.Cell):
    def __init__(self, config):
        super().__init__()
        self.predictions = FNetLMPredictionHead(config)
        self.seq_relationship = Linear(config.hidden_size, 2)

    def construct(self, sequence_output, pooled_output):
        return self.predictions(sequence_output), self.seq_relationship(pooled_output)


class FNetPreTrainedModel(PreTrainedModel):
    config_class = FNetConfig
    base_model_prefix = "fnet"
    supports_gradient_checkpointing = True

    def _init_weights(self, cell):
        super()._init_weights(cell)
        if isinstance(cell, FNetLMPredictionHead):
            init_parameter(cell.bias, "zeros")


@dataclass
class FNetForPreTrainingOutput(ModelOutput):
    loss: Any = None
    prediction_logits: Any = None
    seq_relationship_logits: Any = None
    hidden_states: Optional[Tuple[Any, ...]] = None


class FNetModel(FNetPreTrainedModel):
    """The FNet encoder; `pooler_output` is tanh(dense(first token))."""

    def __init__(self, config: FNetConfig, add_pooling_layer=True):
        super().__init__(config)
        self.embeddings = FNetEmbeddings(config)
        self.encoder = FNetEncoder(config)
        self.pooler = FNetPooler(config) if add_pooling_layer else None
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value):
        self.embeddings.word_embeddings = value

    def construct(self, input_ids=None, token_type_ids=None, position_ids=None, inputs_embeds=None,
                  output_hidden_states=None, return_dict=None, **kwargs):
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        seq_length = (input_ids if input_ids is not None else inputs_embeds).shape[1]
        if (self.config.use_tpu_fourier_optimizations and seq_length <= 4096
                and self.config.tpu_short_seq_length != seq_length):
            raise ValueError("The `tpu_short_seq_length` in FNetConfig should be set equal to the sequence length "
                             "being passed to the model when using TPU optimizations.")
        embedding_output = self.embeddings(input_ids=input_ids, token_type_ids=token_type_ids,
                                           position_ids=position_ids, inputs_embeds=inputs_embeds)
        sequence_output, all_hidden = self.encoder(embedding_output, output_hidden_states)
        pooled_output = self.pooler(sequence_output) if self.pooler is not None else None
        return model_output(BaseModelOutputWithPooling, {
            "last_hidden_state": sequence_output,
            "pooler_output": pooled_output,
            "hidden_states": all_hidden,
        }, return_dict is None or return_dict)


_LM_TIES = {
    "cls.predictions.decoder.weight": "fnet.embeddings.word_embeddings.weight",
    "cls.predictions.decoder.bias": "cls.predictions.bias",
}


class FNetForPreTraining(FNetPreTrainedModel):
    """Masked LM + next-sentence heads; the loss needs both `labels` and `next_sentence_label`."""

    _tied_weights_keys = _LM_TIES

    def __init__(self, config):
        super().__init__(config)
        self.fnet = FNetModel(config)
        self.cls = FNetPreTrainingHeads(config)
        self.post_init()

    def get_output_embeddings(self):
        return self.cls.predictions.decoder

    def set_output_embeddings(self, new_embeddings):
        self.cls.predictions.decoder = new_embeddings

    def construct(self, input_ids=None, token_type_ids=None, position_ids=None, inputs_embeds=None, labels=None,
                  next_sentence_label=None, output_hidden_states=None, return_dict=None, **kwargs):
        return_dict = return_dict if return_dict is not None else True
        outputs = self.fnet(input_ids, token_type_ids=token_type_ids, position_ids=position_ids,
                            inputs_embeds=inputs_embeds, output_hidden_states=output_hidden_states)
        prediction_scores, seq_relationship_score = self.cls(outputs["last_hidden_state"], outputs["pooler_output"])
        total_loss = None
        if labels is not None and next_sentence_label is not None:
            total_loss = masked_lm_loss(prediction_scores, labels, self.config.vocab_size) + fixed_cross_entropy(
                seq_relationship_score.reshape(-1, 2), next_sentence_label.reshape(-1))
        return model_output(FNetForPreTrainingOutput, {
            "loss": total_loss,
            "prediction_logits": prediction_scores,
            "seq_relationship_logits": seq_relationship_score,
            "hidden_states": outputs.get("hidden_states"),
        }, return_dict)


class FNetForMaskedLM(FNetPreTrainedModel):
    _tied_weights_keys = _LM_TIES

    def __init__(self, config):
        super().__init__(config)
        self.fnet = FNetModel(config)
        self.cls = FNetOnlyMLMHead(config)
        self.post_init()

    def get_output_embeddings(self):
        return self.cls.predictions.decoder

    def set_output_embeddings(self, new_embeddings):
        self.cls.predictions.decoder = new_embeddings

    def construct(self, input_ids=None, token_type_ids=None, position_ids=None, inputs_embeds=None, labels=None,
                  output_hidden_states=None, return_dict=None, **kwargs):
        return_dict = return_dict if return_dict is not None else True
        outputs = self.fnet(input_ids, token_type_ids=token_type_ids, position_ids=position_ids,
                            inputs_embeds=inputs_embeds, output_hidden_states=output_hidden_states)
        prediction_scores = self.cls(outputs["last_hidden_state"])
        loss = masked_lm_loss(prediction_scores, labels, self.config.vocab_size) if labels is not None else None
        return model_output(MaskedLMOutput, {
            "loss": loss,
            "logits": prediction_scores,
            "hidden_states": outputs.get("hidden_states"),
        }, return_dict)


class FNetForNextSentencePrediction(FNetPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.fnet = FNetModel(config)
        self.cls = FNetOnlyNSPHead(config)
        self.post_init()

    def construct(self, input_ids=None, token_type_ids=None, position_ids=None, inputs_embeds=None, labels=None,
                  output_hidden_states=None, return_dict=None, **kwargs):
        return_dict = return_dict if return_dict is not None else True
        outputs = self.fnet(input_ids, token_type_ids=token_type_ids, position_ids=position_ids,
                            inputs_embeds=inputs_embeds, output_hidden_states=output_hidden_states)
        seq_relationship_scores = self.cls(outputs["pooler_output"])
        loss = None
        if labels is not None:
            loss = fixed_cross_entropy(seq_relationship_scores.reshape(-1, 2), labels.reshape(-1))
        return model_output(NextSentencePredictorOutput, {
            "loss": loss,
            "logits": seq_relationship_scores,
            "hidden_states": outputs.get("hidden_states"),
        }, return_dict)


class FNetForSequenceClassification(FNetPreTrainedModel):
    """dropout -> linear on the pooled output."""

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.fnet = FNetModel(config)
        self.dropout = Dropout(config.hidden_dropout_prob)
        self.classifier = Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def construct(self, input_ids=None, token_type_ids=None, position_ids=None, inputs_embeds=None, labels=None,
                  output_hidden_states=None, return_dict=None, **kwargs):
        return_dict = return_dict if return_dict is not None else True
        outputs = self.fnet(input_ids, token_type_ids=token_type_ids, position_ids=position_ids,
                            inputs_embeds=inputs_embeds, output_hidden_states=output_hidden_states)
        logits = self.classifier(self.dropout(outputs["pooler_output"]))
        loss = sequence_classification_loss(labels, logits, self.config) if labels is not None else None
        return model_output(SequenceClassifierOutput, {
            "loss": loss,
            "logits": logits,
            "hidden_states": outputs.get("hidden_states"),
        }, return_dict)


class FNetForMultipleChoice(FNetPreTrainedModel):
    """Inputs of shape (B, num_choices, S); one score per choice from the pooled output."""

    def __init__(self, config):
        super().__init__(config)
        self.fnet = FNetModel(config)
        self.dropout = Dropout(config.hidden_dropout_prob)
        self.classifier = Linear(config.hidden_size, 1)
        self.post_init()

    def construct(self, input_ids=None, token_type_ids=None, position_ids=None, inputs_embeds=None, labels=None,
                  output_hidden_states=None, return_dict=None, **kwargs):
        return_dict = return_dict if return_dict is not None else True
        num_choices = input_ids.shape[1] if input_ids is not None else inputs_embeds.shape[1]

        def flat(x):
            return None if x is None else x.reshape((-1,) + tuple(x.shape[2:]))

        outputs = self.fnet(flat(input_ids), token_type_ids=flat(token_type_ids), position_ids=flat(position_ids),
                            inputs_embeds=flat(inputs_embeds), output_hidden_states=output_hidden_states)
        logits = self.classifier(self.dropout(outputs["pooler_output"])).reshape(-1, num_choices)
        loss = fixed_cross_entropy(logits, labels) if labels is not None else None
        return model_output(MultipleChoiceModelOutput, {
            "loss": loss,
            "logits": logits,
            "hidden_states": outputs.get("hidden_states"),
        }, return_dict)


class FNetForTokenClassification(FNetPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.fnet = FNetModel(config)
        self.dropout = Dropout(config.hidden_dropout_prob)
        self.classifier = Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def construct(self, input_ids=None, token_type_ids=None, position_ids=None, inputs_embeds=None, labels=None,
                  output_hidden_states=None, return_dict=None, **kwargs):
        return_dict = return_dict if return_dict is not None else True
        outputs = self.fnet(input_ids, token_type_ids=token_type_ids, position_ids=position_ids,
                            inputs_embeds=inputs_embeds, output_hidden_states=output_hidden_states)
        logits = self.classifier(self.dropout(outputs["last_hidden_state"]))
        loss = token_classification_loss(logits, labels, self.num_labels) if labels is not None else None
        return model_output(TokenClassifierOutput, {
            "loss": loss,
            "logits": logits,
            "hidden_states": outputs.get("hidden_states"),
        }, return_dict)


class FNetForQuestionAnswering(FNetPreTrainedModel):
    """Span start/end logits for extractive QA."""

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.fnet = FNetModel(config)
        self.qa_outputs = Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def construct(self, input_ids=None, token_type_ids=None, position_ids=None, inputs_embeds=None,
                  start_positions=None, end_positions=None, output_hidden_states=None, return_dict=None, **kwargs):
        return_dict = return_dict if return_dict is not None else True
        outputs = self.fnet(input_ids, token_type_ids=token_type_ids, position_ids=position_ids,
                            inputs_embeds=inputs_embeds, output_hidden_states=output_hidden_states)
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
        }, return_dict)


__all__ = [
    "FNetForMaskedLM",
    "FNetForMultipleChoice",
    "FNetForNextSentencePrediction",
    "FNetForPreTraining",
    "FNetForQuestionAnswering",
    "FNetForSequenceClassification",
    "FNetForTokenClassification",
    "FNetModel",
    "FNetPreTrainedModel",
]
