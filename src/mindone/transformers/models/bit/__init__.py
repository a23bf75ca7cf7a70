from .modeling_bit import BitBackbone, BitForImageClassification, BitModel, BitPreTrainedModel
