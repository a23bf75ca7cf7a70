from .modeling_dpt import DPTForDepthEstimation, DPTForSemanticSegmentation, DPTModel, DPTPreTrainedModel
