from .modeling_pvt import PvtForImageClassification, PvtModel, PvtPreTrainedModel
