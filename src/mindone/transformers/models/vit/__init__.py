from .modeling_vit import ViTForImageClassification, ViTModel, ViTPreTrainedModel
