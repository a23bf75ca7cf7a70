from .modeling_data2vec_vision import (
    Data2VecVisionForImageClassification,
    Data2VecVisionModel,
    Data2VecVisionPreTrainedModel,
)
