from .modeling_cvt import CvtForImageClassification, CvtModel, CvtPreTrainedModel
