from .modeling_siglip import (
    SiglipForImageClassification,
    SiglipModel,
    SiglipPreTrainedModel,
    SiglipTextModel,
    SiglipVisionModel,
)
