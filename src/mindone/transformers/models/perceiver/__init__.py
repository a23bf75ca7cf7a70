from .modeling_perceiver import (
    PerceiverForImageClassificationFourier,
    PerceiverForImageClassificationLearned,
    PerceiverForMaskedLM,
    PerceiverForSequenceClassification,
    PerceiverModel,
    PerceiverPreTrainedModel,
)
