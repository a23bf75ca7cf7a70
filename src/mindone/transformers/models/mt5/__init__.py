from .modeling_mt5 import (
    MT5EncoderModel,
    MT5ForConditionalGeneration,
    MT5ForQuestionAnswering,
    MT5ForSequenceClassification,
    MT5ForTokenClassification,
    MT5Model,
    MT5PreTrainedModel,
)
