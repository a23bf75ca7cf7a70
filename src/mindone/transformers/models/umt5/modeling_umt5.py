"""UMT5 on MindSpore: T5 v1.1 where every block (not only the first) owns its relative position bias.

The per-block bias is switched on in `T5Stack` by `config.model_type == "umt5"`; everything else (keys, forward
signatures, outputs, the `scale_decoder_outputs` LM-head rescale) is T5's, so ours subclass the T5 classes.
"""

from transformers import UMT5Config

from ..t5.modeling_t5 import (
    T5EncoderModel,
    T5ForConditionalGeneration,
    T5ForQuestionAnswering,
    T5ForSequenceClassification,
    T5ForTokenClassification,
    T5Model,
    T5PreTrainedModel,
)


class UMT5PreTrainedModel(T5PreTrainedModel):
    config_class = UMT5Config
    _no_split_modules = ["UMT5Block", "T5Block"]


class UMT5Model(T5Model, UMT5PreTrainedModel):
    config_class = UMT5Config


class UMT5ForConditionalGeneration(T5ForConditionalGeneration, UMT5PreTrainedModel):
    config_class = UMT5Config


class UMT5EncoderModel(T5EncoderModel, UMT5PreTrainedModel):
    config_class = UMT5Config


class UMT5ForSequenceClassification(T5ForSequenceClassification, UMT5PreTrainedModel):
    config_class = UMT5Config


class UMT5ForTokenClassification(T5ForTokenClassification, UMT5PreTrainedModel):
    config_class = UMT5Config


class UMT5ForQuestionAnswering(T5ForQuestionAnswering, UMT5PreTrainedModel):
    config_class = UMT5Config
