"""mindone.transformers: Hugging Face Transformers models on MindSpore.

`from mindone.transformers import LlamaForCausalLM` works like `from transformers import LlamaForCausalLM`.
Names are imported lazily (a model file is loaded on first use), and nothing here imports torch.
"""

import importlib

__version__ = "0.1.0"

# public name -> module (relative to this package) that defines it
_LAZY = {
    "PreTrainedModel": "modeling_utils",
    "DynamicCache": "cache_utils",
    "Cache": "cache_utils",
    "StaticCache": "cache_utils",
    "EncoderDecoderCache": "cache_utils",
    "GenerationMixin": "generation",
    "TextStreamer": "generation",
    "TextIteratorStreamer": "generation",
    "BaseStreamer": "generation",
    "LogitsProcessor": "generation",
    "LogitsProcessorList": "generation",
    "StoppingCriteria": "generation",
    "StoppingCriteriaList": "generation",
    "MaxLengthCriteria": "generation",
    "MaxTimeCriteria": "generation",
    "EosTokenCriteria": "generation",
    "StopStringCriteria": "generation",
    "TemperatureLogitsWarper": "generation",
    "TopKLogitsWarper": "generation",
    "TopPLogitsWarper": "generation",
    "MinPLogitsWarper": "generation",
    "TypicalLogitsWarper": "generation",
    "EpsilonLogitsWarper": "generation",
    "EtaLogitsWarper": "generation",
    "RepetitionPenaltyLogitsProcessor": "generation",
    "EncoderRepetitionPenaltyLogitsProcessor": "generation",
    "NoRepeatNGramLogitsProcessor": "generation",
    "NoBadWordsLogitsProcessor": "generation",
    "SequenceBiasLogitsProcessor": "generation",
    "MinLengthLogitsProcessor": "generation",
    "MinNewTokensLengthLogitsProcessor": "generation",
    "ForcedBOSTokenLogitsProcessor": "generation",
    "ForcedEOSTokenLogitsProcessor": "generation",
    "SuppressTokensLogitsProcessor": "generation",
    "SuppressTokensAtBeginLogitsProcessor": "generation",
    "ExponentialDecayLengthPenalty": "generation",
    "InfNanRemoveLogitsProcessor": "generation",
    "LogitNormalization": "generation",
    "PrefixConstrainedLogitsProcessor": "generation",
    "Trainer": "trainer",
    "TrainingArguments": "trainer",
    "TrainerCallback": "trainer",
    "TrainerState": "trainer",
    "TrainerControl": "trainer",
    "DefaultFlowCallback": "trainer",
    "ProgressCallback": "trainer",
    "PrinterCallback": "trainer",
    "EarlyStoppingCallback": "trainer",
    "EvalPrediction": "trainer",
    "get_scheduler": "trainer",
    "set_seed": "trainer",
    "AutoModel": "models.auto.modeling_auto",
    "AutoModelForCausalLM": "models.auto.modeling_auto",
    "AutoModelForSeq2SeqLM": "models.auto.modeling_auto",
    "AutoModelForMaskedLM": "models.auto.modeling_auto",
    "AutoModelForSequenceClassification": "models.auto.modeling_auto",
    "AutoModelForTokenClassification": "models.auto.modeling_auto",
    "AutoModelForQuestionAnswering": "models.auto.modeling_auto",
    "AutoModelForImageClassification": "models.auto.modeling_auto",
    "AutoModelForZeroShotImageClassification": "models.auto.modeling_auto",
    "AutoModelForSpeechSeq2Seq": "models.auto.modeling_auto",
    "AutoModelForTextEncoding": "models.auto.modeling_auto",
    "AutoModelForCTC": "models.auto.modeling_auto",
    "AutoModelForAudioClassification": "models.auto.modeling_auto",
    "AutoModelForAudioFrameClassification": "models.auto.modeling_auto",
    "AutoModelForAudioXVector": "models.auto.modeling_auto",
    "pipeline": "pipelines",
    "Pipeline": "pipelines",
    "tensor_interop": None,
}

# model family -> its public classes; a family's module is models/<family>/modeling_<family>.py
_MODEL_FAMILIES = {
    "llama": ["LlamaModel", "LlamaForCausalLM", "LlamaForSequenceClassification", "LlamaForTokenClassification",
              "LlamaForQuestionAnswering", "LlamaPreTrainedModel"],
    "t5": ["T5Model", "T5EncoderModel", "T5ForConditionalGeneration", "T5ForSequenceClassification",
           "T5ForTokenClassification", "T5ForQuestionAnswering", "T5PreTrainedModel"],
    "clip": ["CLIPModel", "CLIPTextModel", "CLIPTextModelWithProjection", "CLIPVisionModel",
             "CLIPVisionModelWithProjection", "CLIPPreTrainedModel"],
    "bert": ["BertModel", "BertForPreTraining", "BertLMHeadModel", "BertForMaskedLM", "BertForNextSentencePrediction",
             "BertForSequenceClassification", "BertForMultipleChoice", "BertForTokenClassification",
             "BertForQuestionAnswering", "BertPreTrainedModel"],
    "mistral": ["MistralModel", "MistralForCausalLM", "MistralForSequenceClassification",
                "MistralForTokenClassification", "MistralForQuestionAnswering", "MistralPreTrainedModel"],
    "qwen2": ["Qwen2Model", "Qwen2ForCausalLM", "Qwen2ForSequenceClassification", "Qwen2ForTokenClassification",
              "Qwen2ForQuestionAnswering", "Qwen2PreTrainedModel"],
    "qwen3": ["Qwen3Model", "Qwen3ForCausalLM", "Qwen3ForSequenceClassification", "Qwen3ForTokenClassification",
              "Qwen3ForQuestionAnswering", "Qwen3PreTrainedModel"],
    "mixtral": ["MixtralModel", "MixtralForCausalLM", "MixtralForSequenceClassification",
                "MixtralForTokenClassification", "MixtralForQuestionAnswering", "MixtralPreTrainedModel"],
    "qwen2_moe": ["Qwen2MoeModel", "Qwen2MoeForCausalLM", "Qwen2MoeForSequenceClassification",
                  "Qwen2MoeForTokenClassification", "Qwen2MoeForQuestionAnswering", "Qwen2MoePreTrainedModel"],
    "qwen3_moe": ["Qwen3MoeModel", "Qwen3MoeForCausalLM", "Qwen3MoeForSequenceClassification",
                  "Qwen3MoeForTokenClassification", "Qwen3MoeForQuestionAnswering", "Qwen3MoePreTrainedModel"],
    "mt5": ["MT5Model", "MT5EncoderModel", "MT5ForConditionalGeneration", "MT5ForSequenceClassification",
            "MT5ForTokenClassification", "MT5ForQuestionAnswering", "MT5PreTrainedModel"],
    "umt5": ["UMT5Model", "UMT5EncoderModel", "UMT5ForConditionalGeneration", "UMT5ForSequenceClassification",
             "UMT5ForTokenClassification", "UMT5ForQuestionAnswering", "UMT5PreTrainedModel"],
    "gemma": ["GemmaModel", "GemmaForCausalLM", "GemmaForSequenceClassification", "GemmaForTokenClassification",
              "GemmaPreTrainedModel"],
    "gemma3": ["Gemma3TextModel", "Gemma3ForCausalLM", "Gemma3TextForSequenceClassification", "Gemma3PreTrainedModel"],
    "whisper": ["WhisperModel", "WhisperForConditionalGeneration", "WhisperPreTrainedModel"],
    "data2vec_audio": ["Data2VecAudioModel", "Data2VecAudioForCTC", "Data2VecAudioForSequenceClassification",
                       "Data2VecAudioForAudioFrameClassification", "Data2VecAudioForXVector",
                       "Data2VecAudioPreTrainedModel"],
    "wav2vec2": ["Wav2Vec2Model", "Wav2Vec2ForCTC", "Wav2Vec2ForSequenceClassification",
                 "Wav2Vec2ForAudioFrameClassification", "Wav2Vec2ForXVector", "Wav2Vec2ForPreTraining",
                 "Wav2Vec2PreTrainedModel"],
    "roberta": ["RobertaModel", "RobertaForCausalLM", "RobertaForMaskedLM", "RobertaForSequenceClassification",
                "RobertaForMultipleChoice", "RobertaForTokenClassification", "RobertaForQuestionAnswering",
                "RobertaPreTrainedModel"],
    "distilbert": ["DistilBertModel", "DistilBertForMaskedLM", "DistilBertForSequenceClassification",
                   "DistilBertForMultipleChoice", "DistilBertForTokenClassification",
                   "DistilBertForQuestionAnswering", "DistilBertPreTrainedModel"],
    "gpt2": ["GPT2Model", "GPT2LMHeadModel", "GPT2ForSequenceClassification", "GPT2ForTokenClassification",
             "GPT2ForQuestionAnswering", "GPT2PreTrainedModel"],
    "phi3": ["Phi3Model", "Phi3ForCausalLM", "Phi3ForSequenceClassification", "Phi3ForTokenClassification",
             "Phi3PreTrainedModel"],
    "phi": ["PhiModel", "PhiForCausalLM", "PhiForSequenceClassification", "PhiForTokenClassification",
            "PhiPreTrainedModel"],
    "gpt_neox": ["GPTNeoXModel", "GPTNeoXForCausalLM", "GPTNeoXForSequenceClassification",
                 "GPTNeoXForTokenClassification", "GPTNeoXForQuestionAnswering", "GPTNeoXPreTrainedModel"],
    "opt": ["OPTModel", "OPTForCausalLM", "OPTForSequenceClassification", "OPTForQuestionAnswering",
            "OPTPreTrainedModel"],
    "gptj": ["GPTJModel", "GPTJForCausalLM", "GPTJForSequenceClassification", "GPTJForQuestionAnswering",
             "GPTJPreTrainedModel"],
    "codegen": ["CodeGenModel", "CodeGenForCausalLM", "CodeGenPreTrainedModel"],
    "ctrl": ["CTRLModel", "CTRLLMHeadModel", "CTRLForSequenceClassification", "CTRLPreTrainedModel"],
    "vit": ["ViTModel", "ViTForImageClassification", "ViTPreTrainedModel"],
    "dinov2": ["Dinov2Model", "Dinov2ForImageClassification", "Dinov2PreTrainedModel"],
    "convnextv2": ["ConvNextV2Model", "ConvNextV2ForImageClassification", "ConvNextV2PreTrainedModel"],
    "bart": ["BartModel", "BartForConditionalGeneration", "BartForSequenceClassification", "BartForQuestionAnswering",
             "BartPreTrainedModel"],
    "vision_text_dual_encoder": ["VisionTextDualEncoderModel"],
    "roberta_prelayernorm": ["RobertaPreLayerNormModel", "RobertaPreLayerNormForCausalLM",
                             "RobertaPreLayerNormForMaskedLM", "RobertaPreLayerNormForSequenceClassification",
                             "RobertaPreLayerNormForMultipleChoice", "RobertaPreLayerNormForTokenClassification",
                             "RobertaPreLayerNormForQuestionAnswering", "RobertaPreLayerNormPreTrainedModel"],
    "data2vec_text": ["Data2VecTextModel", "Data2VecTextForCausalLM", "Data2VecTextForMaskedLM",
                      "Data2VecTextForSequenceClassification", "Data2VecTextForMultipleChoice",
                      "Data2VecTextForTokenClassification", "Data2VecTextForQuestionAnswering",
                      "Data2VecTextPreTrainedModel"],
    "fnet": ["FNetModel", "FNetForPreTraining", "FNetForMaskedLM", "FNetForNextSentencePrediction",
             "FNetForSequenceClassification", "FNetForMultipleChoice", "FNetForTokenClassification",
             "FNetForQuestionAnswering", "FNetPreTrainedModel"],
    "lilt": ["LiltModel", "LiltForSequenceClassification", "LiltForTokenClassification", "LiltForQuestionAnswering",
             "LiltPreTrainedModel"],
    "canine": ["CanineModel", "CanineForSequenceClassification", "CanineForMultipleChoice",
               "CanineForTokenClassification", "CanineForQuestionAnswering", "CanineLayer", "CaninePreTrainedModel"],
    "luke": ["LukeModel", "LukeForMaskedLM", "LukeForEntityClassification", "LukeForEntityPairClassification",
             "LukeForEntitySpanClassification", "LukeForSequenceClassification", "LukeForMultipleChoice",
             "LukeForTokenClassification", "LukeForQuestionAnswering", "LukePreTrainedModel"],
    "cpmant": ["CpmAntModel", "CpmAntForCausalLM", "CpmAntPreTrainedModel"],
    "m2m_100": ["M2M100Model", "M2M100ForConditionalGeneration", "M2M100PreTrainedModel"],
    "blenderbot_small": ["BlenderbotSmallModel", "BlenderbotSmallForConditionalGeneration",
                         "BlenderbotSmallForCausalLM", "BlenderbotSmallPreTrainedModel"],
    "siglip": ["SiglipModel", "SiglipTextModel", "SiglipVisionModel", "SiglipForImageClassification",
               "SiglipPreTrainedModel"],
    "siglip2": ["Siglip2Model", "Siglip2TextModel", "Siglip2VisionModel", "Siglip2ForImageClassification",
                "Siglip2PreTrainedModel"],
}
for _family, _names in _MODEL_FAMILIES.items():
    for _name in _names:
        _LAZY[_name] = f"models.{_family}.modeling_{_family}"

# configs, tokenizers and processors come from transformers itself
_FROM_TRANSFORMERS = ("AutoConfig", "AutoTokenizer", "AutoProcessor", "AutoImageProcessor", "AutoFeatureExtractor",
                      "GenerationConfig", "LlamaConfig", "PretrainedConfig", "PreTrainedConfig")


def __getattr__(name):
    if name in _LAZY and _LAZY[name] is None:  # a submodule
        value = importlib.import_module(f".{name}", __name__)
    elif name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    elif name in _FROM_TRANSFORMERS:
        value = getattr(importlib.import_module("transformers"), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | set(_FROM_TRANSFORMERS))
