"""mT5 on MindSpore: the T5 v1.1 architecture (gated-GELU, untied LM head) with a multilingual vocabulary.

HF's mT5 classes are T5 copies that differ only in their config class, so ours subclass the T5 ones
(`models/t5/modeling_t5.py`); checkpoint keys, forward signatures and outputs are T5's.
"""

from transformers import MT5Config

from ..t5.modeling_t5 import (
    T5EncoderModel,
    T5ForConditionalGeneration,
    T5ForQuestionAnswering,
    T5ForSequenceClassification,
    T5ForTokenClassification,
    T5Model,
    T5PreTrainedModel,
)


class MT5PreTrainedModel(T5PreTrainedModel):
    config_class = MT5Config
    _no_split_modules = ["MT5Block", "T5Block"]


class MT5Model(T5Model, MT5PreTrainedModel):
    config_class = MT5Config


class MT5ForConditionalGeneration(T5ForConditionalGeneration, MT5PreTrainedModel):
    config_class = MT5Config

    def __init__(self, config: MT5Config):
        super().__init__(config)
        # mT5 never rescales the decoder output before the LM head (its configs force tie_word_embeddings=True, so
        # T5's "tied means v1.0" rule does not apply)
        self.scale_decoder_outputs = bool(getattr(config, "scale_decoder_outputs", False))


class MT5EncoderModel(T5EncoderModel, MT5PreTrainedModel):
    config_class = MT5Config


class MT5ForSequenceClassification(T5ForSequenceClassification, MT5PreTrainedModel):
    config_class = MT5Config


class MT5ForTokenClassification(T5ForTokenClassification, MT5PreTrainedModel):
    config_class = MT5Config


class MT5ForQuestionAnswering(T5ForQuestionAnswering, MT5PreTrainedModel):
    config_class = MT5Config
