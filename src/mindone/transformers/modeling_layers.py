"""Building blocks shared by decoder-only families: the checkpointing marker and HF's generic task heads.

A family declares e.g. `class MistralForSequenceClassification(GenericForSequenceClassification,
MistralPreTrainedModel): _base_model_class = MistralModel`, exactly as HF composes its generic heads.
"""

import mindspore as ms
from mindspore import nn, ops

from .backend import functional as F
from .backend.layers import Dropout, Linear
from .cache_utils import Cache
from .loss_utils import question_answering_loss, sequence_classification_loss, token_classification_loss
from .modeling_outputs import (
    model_output,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutputWithPast,
    TokenClassifierOutput,
)

logger = __import__("logging").getLogger(__name__)


class GradientCheckpointingLayer(nn.Cell):
    """A layer whose activations `gradient_checkpointing_enable()` recomputes in the backward pass.

    While it is recomputed in training, a KV cache handed to it is dropped (HF: "Caching is incompatible with gradient
    checkpointing", `use_cache=False` with a warning): the backward pass replays the layer's forward, which would
    append the keys/values to the cache a second time and attend over twice the sequence. Only PyNative can hold a
    growing cache; a compiled (graph) forward never builds one, so there is nothing to drop there.
    """

    _is_checkpointing_layer = True

    def __call__(self, *args, **kwargs):
        if self.training and getattr(self, "_recompute_cell", None) is not None:
            dropped = False
            if any(isinstance(a, Cache) for a in args):
                args = tuple(None if isinstance(a, Cache) else a for a in args)
                dropped = True
            for key, value in list(kwargs.items()):
                if isinstance(value, Cache) or (key == "use_cache" and value):
                    kwargs[key] = None if isinstance(value, Cache) else False
                    dropped = True
            if dropped and not GradientCheckpointingLayer._warned_cache:
                GradientCheckpointingLayer._warned_cache = True
                logger.warning("Caching is incompatible with gradient checkpointing in %s (the backward pass replays "
                               "the layer). Setting `use_cache=False`.", type(self).__name__)
        return super().__call__(*args, **kwargs)

    _warned_cache = False


def last_non_pad_logits(logits, input_ids, inputs_embeds, pad_token_id):
    """(B, S, L) -> (B, L): each row's logits at its last non-pad token (HF's decoder sequence-classification pooling;
    the last position when there is no pad token or only `inputs_embeds`)."""
    batch_size = input_ids.shape[0] if input_ids is not None else inputs_embeds.shape[0]
    if pad_token_id is None and batch_size != 1:
        raise ValueError("Cannot handle batch sizes > 1 if no padding token is defined.")
    if pad_token_id is None or input_ids is None:
        last_non_pad = ops.fill(ms.int32, (batch_size,), logits.shape[1] - 1)
    else:
        non_pad = (input_ids != pad_token_id).astype(ms.int32)
        positions = F.arange(input_ids.shape[-1], dtype=ms.int32)
        last_non_pad = F.argmax(positions * non_pad, -1).astype(ms.int32)
    return ops.gather_elements(
        logits, 1, ops.broadcast_to(last_non_pad[:, None, None], (batch_size, 1, logits.shape[-1]))
    ).squeeze(1)


class GenericForSequenceClassification:
    """Scores the last non-padding token of each row (HF's rule: the rightmost token != pad_token_id)."""

    base_model_prefix = "model"
    _base_model_class = None

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        setattr(self, self.base_model_prefix, self._base_model_class(config))
        self.score = Linear(config.hidden_size, self.num_labels, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return getattr(self, self.base_model_prefix).get_input_embeddings()

    def construct(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                  inputs_embeds=None, labels=None, use_cache=None, output_attentions=None,
                  output_hidden_states=None, return_dict=None, **kwargs):
        return_dict = return_dict if return_dict is not None else True
        outputs = getattr(self, self.base_model_prefix)(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
            past_key_values=past_key_values, inputs_embeds=inputs_embeds, use_cache=use_cache,
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


class GenericForTokenClassification:
    base_model_prefix = "model"
    _base_model_class = None

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        setattr(self, self.base_model_prefix, self._base_model_class(config))
        if getattr(config, "classifier_dropout", None) is not None:
            classifier_dropout = config.classifier_dropout
        elif getattr(config, "hidden_dropout", None) is not None:
            classifier_dropout = config.hidden_dropout
        else:
            classifier_dropout = 0.1
        self.dropout = Dropout(classifier_dropout)
        self.score = Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def get_input_embeddings(self):
        return getattr(self, self.base_model_prefix).get_input_embeddings()

    def construct(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                  inputs_embeds=None, labels=None, use_cache=None, output_attentions=None,
                  output_hidden_states=None, return_dict=None, **kwargs):
        return_dict = return_dict if return_dict is not None else True
        outputs = getattr(self, self.base_model_prefix)(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
            past_key_values=past_key_values, inputs_embeds=inputs_embeds, use_cache=use_cache,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states, return_dict=True,
        )
        logits = self.score(self.dropout(outputs["last_hidden_state"]))
        loss = None
        if labels is not None:
            loss = token_classification_loss(logits, labels, self.num_labels)
        return model_output(TokenClassifierOutput, {
            "loss": loss,
            "logits": logits,
            "hidden_states": outputs.get("hidden_states"),
            "attentions": outputs.get("attentions"),
        }, return_dict)


class GenericForQuestionAnswering:
    base_model_prefix = "model"
    _base_model_class = None

    def __init__(self, config):
        super().__init__(config)
        setattr(self, self.base_model_prefix, self._base_model_class(config))
        self.qa_outputs = Linear(config.hidden_size, 2)
        self.post_init()

    def get_input_embeddings(self):
        return getattr(self, self.base_model_prefix).get_input_embeddings()

    def construct(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                  inputs_embeds=None, start_positions=None, end_positions=None, output_attentions=None,
                  output_hidden_states=None, return_dict=None, **kwargs):
        return_dict = return_dict if return_dict is not None else True
        outputs = getattr(self, self.base_model_prefix)(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
            past_key_values=past_key_values, inputs_embeds=inputs_embeds,
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
