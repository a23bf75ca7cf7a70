from .modeling_umt5 import (
    UMT5EncoderModel,
    UMT5ForConditionalGeneration,
    UMT5ForQuestionAnswering,
    UMT5ForSequenceClassification,
    UMT5ForTokenClassification,
    UMT5Model,
    UMT5PreTrainedModel,
)
