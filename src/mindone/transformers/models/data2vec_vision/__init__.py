from .modeling_data2vec_vision import (
    Data2VecVisionForImageClassification,
    Data2VecVisionForSemanticSegmentation,
    Data2VecVisionModel,
    Data2VecVisionPreTrainedModel,
)
