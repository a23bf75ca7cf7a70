from .modeling_perceiver import (
    PerceiverForMaskedLM,
    PerceiverForSequenceClassification,
    PerceiverModel,
    PerceiverPreTrainedModel,
)
