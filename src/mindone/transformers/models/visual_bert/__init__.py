from .modeling_visual_bert import (
    VisualBertForMultipleChoice,
    VisualBertForPreTraining,
    VisualBertForQuestionAnswering,
    VisualBertForRegionToPhraseAlignment,
    VisualBertForVisualReasoning,
    VisualBertLayer,
    VisualBertModel,
    VisualBertPreTrainedModel,
)
