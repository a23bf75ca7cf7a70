from .modeling_siglip2 import (
    Siglip2ForImageClassification,
    Siglip2Model,
    Siglip2PreTrainedModel,
    Siglip2TextModel,
    Siglip2VisionModel,
)
