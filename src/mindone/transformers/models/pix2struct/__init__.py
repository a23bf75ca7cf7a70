from .modeling_pix2struct import (
    Pix2StructForConditionalGeneration,
    Pix2StructPreTrainedModel,
    Pix2StructTextModel,
    Pix2StructVisionModel,
)
