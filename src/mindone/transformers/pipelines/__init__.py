"""`pipeline(task, model=...)`: HF's pipeline API on our models, with `transformers`' tokenizers.

    from mindone.transformers import pipeline
    classifier = pipeline("text-classification", model="path/to/checkpoint")
    classifier("I love this!")  # [{"label": "POSITIVE", "score": 0.99...}]
"""

import logging
import os

from ..models.auto.modeling_auto import MODEL_FAMILIES, TASKS, model_class, supported_model_types
from .audio_classification import AudioClassificationPipeline, ZeroShotAudioClassificationPipeline
from .automatic_speech_recognition import AutomaticSpeechRecognitionPipeline
from .base import Pipeline
from .text import (
    FeatureExtractionPipeline,
    FillMaskPipeline,
    QuestionAnsweringPipeline,
    TextClassificationPipeline,
    TokenClassificationPipeline,
    ZeroShotClassificationPipeline,
)
from .text2text_generation import SummarizationPipeline, Text2TextGenerationPipeline, TranslationPipeline
from .image_text_to_text import ImageTextToTextPipeline
from .text_generation import TextGenerationPipeline
from .vision import (
    DepthEstimationPipeline,
    ImageClassificationPipeline,
    ImageFeatureExtractionPipeline,
    ImageSegmentationPipeline,
    ImageToTextPipeline,
    ObjectDetectionPipeline,
    ZeroShotImageClassificationPipeline,
)

logger = logging.getLogger(__name__)

# task -> (pipeline class, model task of the auto classes)
SUPPORTED_TASKS = {
    "feature-extraction": (FeatureExtractionPipeline, "base"),
    "text-classification": (TextClassificationPipeline, "sequence-classification"),
    "fill-mask": (FillMaskPipeline, "masked-lm"),
    "token-classification": (TokenClassificationPipeline, "token-classification"),
    "question-answering": (QuestionAnsweringPipeline, "question-answering"),
    "zero-shot-classification": (ZeroShotClassificationPipeline, "sequence-classification"),
    "text-generation": (TextGenerationPipeline, "causal-lm"),
    "automatic-speech-recognition": (AutomaticSpeechRecognitionPipeline, "speech-seq2seq"),
    "audio-classification": (AudioClassificationPipeline, "audio-classification"),
    # HF's pipeline loads the model with AutoModel (there is no AutoModelForZeroShotAudioClassification)
    "zero-shot-audio-classification": (ZeroShotAudioClassificationPipeline, "base"),
    "text2text-generation": (Text2TextGenerationPipeline, "seq2seq-lm"),
    "summarization": (SummarizationPipeline, "seq2seq-lm"),
    "translation": (TranslationPipeline, "seq2seq-lm"),
    "image-classification": (ImageClassificationPipeline, "image-classification"),
    "image-feature-extraction": (ImageFeatureExtractionPipeline, "base"),
    "zero-shot-image-classification": (ZeroShotImageClassificationPipeline, "zero-shot-image-classification"),
    "image-text-to-text": (ImageTextToTextPipeline, "image-text-to-text"),
    "image-to-text": (ImageToTextPipeline, "image-text-to-text"),
    "image-segmentation": (ImageSegmentationPipeline, "semantic-segmentation"),
    "object-detection": (ObjectDetectionPipeline, "object-detection"),
    "depth-estimation": (DepthEstimationPipeline, "depth-estimation"),
}
# pipelines that are told their task name ("translation_en_to_de" selects T5's task_specific_params entry)
_TASK_AWARE = (Text2TextGenerationPipeline,)
# pipelines fed by an image processor instead of a tokenizer
_IMAGE_TASKS = (ImageClassificationPipeline, ImageFeatureExtractionPipeline, ZeroShotImageClassificationPipeline,
                ImageToTextPipeline, ImageSegmentationPipeline, ObjectDetectionPipeline, DepthEstimationPipeline)
# image tasks that also tokenize text (or decode it)
_IMAGE_TEXT_TASKS = (ZeroShotImageClassificationPipeline, ImageToTextPipeline)
# pipelines fed by a feature extractor (no tokenizer, unless also listed in _AUDIO_TEXT_TASKS)
_AUDIO_TASKS = (AudioClassificationPipeline, ZeroShotAudioClassificationPipeline)
_AUDIO_TEXT_TASKS = (ZeroShotAudioClassificationPipeline,)
# automatic-speech-recognition runs CTC models (AutoModelForCTC) as well as Whisper (AutoModelForSpeechSeq2Seq)
_ASR_MODEL_TASKS = ("speech-seq2seq", "ctc")
TASK_ALIASES = {"sentiment-analysis": "text-classification", "ner": "token-classification"}
# models HF's pipeline runs for a task although the task's auto class does not list their model_type: it falls back
# to the class named in `config.architectures` (logging that the model is not supported) and the outputs it reads are
# there
_ARCHITECTURE_FALLBACKS = {"zero-shot-image-classification": ("VisionTextDualEncoderModel",)}


def pipeline(task, model=None, tokenizer=None, feature_extractor=None, image_processor=None, dtype=None, torch_dtype=None, batch_size=1,
             model_kwargs=None, trust_remote_code=None, device=None, device_map=None, processor=None, **kwargs):
    """Builds the pipeline for `task` around `model` (a directory / hub id, or one of our models).

    Args:
        task: a key of SUPPORTED_TASKS, an alias ("sentiment-analysis", "ner") or "translation_xx_to_yy".
        model: checkpoint directory or hub repo id, or an instantiated model of this package. For
            automatic-speech-recognition, a CTranslate2 Whisper directory (model.bin, config.json, tokenizer.json)
            too: it is converted once to an HF directory under ~/.cache/mindone-transformers/converted/ (logged;
            `mindone-transformers convert-ct2-whisper SRC DST` converts explicitly).
        tokenizer: a `transformers` tokenizer or where to load it from (default: the model's directory).
        feature_extractor: for automatic-speech-recognition, a `transformers` feature extractor or where to load
            it from (default: the model's directory).
        image_processor: for the image tasks, a `transformers` image processor or where to load it from (default:
            the model's directory).
        processor: for image-text-to-text, a `transformers` processor (tokenizer + image processor) or where to
            load it from (default: the model's directory).
        dtype: "auto", "float32", "float16" ... as in `from_pretrained` (`torch_dtype` is accepted too).
        batch_size: inputs run through the model together.
        kwargs: default call arguments of the pipeline (e.g. `top_k`, `aggregation_strategy`).
    """
    task = TASK_ALIASES.get(task, task)
    full_task = task
    if task.startswith("translation_"):
        task = "translation"
    if task not in SUPPORTED_TASKS:
        raise KeyError(f"Unknown task {task!r}; available tasks: {sorted(SUPPORTED_TASKS) + sorted(TASK_ALIASES)}")
    if model is None:
        raise ValueError(f"pipeline({task!r}) needs `model=` (a checkpoint directory, hub id or model): there is no "
                         "default checkpoint offline")
    pipeline_cls, model_task = SUPPORTED_TASKS[task]
    dtype = dtype if dtype is not None else torch_dtype
    tokenizer_kwargs = {}
    if isinstance(model, (str, os.PathLike)):
        from transformers import AutoConfig

        path = os.fspath(model)
        if pipeline_cls is AutomaticSpeechRecognitionPipeline and os.path.isdir(path):
            from ..weights.ct2_whisper import converted_ct2_whisper_dir, is_ct2_whisper_dir

            if is_ct2_whisper_dir(path):
                path = converted_ct2_whisper_dir(path)
        # as HF: model_kwargs reach the config and the tokenizer too (a `gguf_file` is read by all three)
        config_kwargs = {k: v for k, v in (model_kwargs or {}).items() if k not in ("dtype", "torch_dtype")}
        config = AutoConfig.from_pretrained(path, **config_kwargs)
        model_task = _model_task_for(pipeline_cls, config.model_type, model_task)
        model_cls = _architecture_fallback(config, task, model_task)
        if model_cls is None:
            _check_model_type(config.model_type, task, model_task)
            model_cls = model_class(config.model_type, model_task, getattr(config, "architectures", None))
        load_kwargs = dict(model_kwargs or {})
        if dtype is not None:
            load_kwargs["dtype"] = dtype
        model = model_cls.from_pretrained(path, config=config, **load_kwargs)
        if pipeline_cls is ImageTextToTextPipeline:
            return _image_text_to_text(model, processor if processor is not None else path, batch_size, kwargs)
        if issubclass(pipeline_cls, _IMAGE_TASKS):
            image_processor = image_processor if image_processor is not None else path
        if (not issubclass(pipeline_cls, _IMAGE_TASKS + _AUDIO_TASKS)
                or issubclass(pipeline_cls, _IMAGE_TEXT_TASKS + _AUDIO_TEXT_TASKS)):
            tokenizer = tokenizer if tokenizer is not None else path
            tokenizer_kwargs = config_kwargs
        if (pipeline_cls is AutomaticSpeechRecognitionPipeline or issubclass(pipeline_cls, _AUDIO_TASKS)) \
                and feature_extractor is None:
            feature_extractor = path
    else:
        model_task = _model_task_for(pipeline_cls, getattr(model.config, "model_type", None), model_task)
        _check_model_instance(model, task, model_task)
        if pipeline_cls is ImageTextToTextPipeline:
            processor = processor if processor is not None else getattr(model, "name_or_path", None) or None
            return _image_text_to_text(model, processor, batch_size, kwargs)
        if issubclass(pipeline_cls, _IMAGE_TASKS) and image_processor is None:
            image_processor = getattr(model, "name_or_path", None) or None
        if (not issubclass(pipeline_cls, _IMAGE_TASKS + _AUDIO_TASKS)
                or issubclass(pipeline_cls, _IMAGE_TEXT_TASKS + _AUDIO_TEXT_TASKS)) and tokenizer is None:
            tokenizer = getattr(model, "name_or_path", None) or None
    if issubclass(pipeline_cls, _IMAGE_TASKS):
        if isinstance(image_processor, (str, os.PathLike)):
            from transformers import AutoImageProcessor

            image_processor = AutoImageProcessor.from_pretrained(os.fspath(image_processor))
        if issubclass(pipeline_cls, _IMAGE_TEXT_TASKS):
            if isinstance(tokenizer, (str, os.PathLike)):
                from transformers import AutoTokenizer

                tokenizer = AutoTokenizer.from_pretrained(os.fspath(tokenizer))
            if tokenizer is None:
                raise ValueError(f"pipeline({task!r}) needs a tokenizer: pass `tokenizer=`")
            kwargs["tokenizer"] = tokenizer
        return pipeline_cls(model, image_processor=image_processor, batch_size=batch_size, **kwargs)
    if issubclass(pipeline_cls, _AUDIO_TASKS):
        if feature_extractor is None:
            feature_extractor = getattr(model, "name_or_path", None) or None
        if isinstance(feature_extractor, (str, os.PathLike)):
            from transformers import AutoFeatureExtractor

            feature_extractor = AutoFeatureExtractor.from_pretrained(os.fspath(feature_extractor))
        if issubclass(pipeline_cls, _AUDIO_TEXT_TASKS):
            if isinstance(tokenizer, (str, os.PathLike)):
                from transformers import AutoTokenizer

                tokenizer = AutoTokenizer.from_pretrained(os.fspath(tokenizer))
            if tokenizer is None:
                raise ValueError(f"pipeline({task!r}) needs a tokenizer: pass `tokenizer=`")
            kwargs["tokenizer"] = tokenizer
        return pipeline_cls(model, feature_extractor=feature_extractor, batch_size=batch_size, **kwargs)
    if isinstance(tokenizer, (str, os.PathLike)):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(os.fspath(tokenizer), **tokenizer_kwargs)
    if tokenizer is None:
        raise ValueError(f"pipeline({task!r}) needs a tokenizer: pass `tokenizer=`")
    if pipeline_cls is AutomaticSpeechRecognitionPipeline:
        if feature_extractor is None:
            feature_extractor = getattr(model, "name_or_path", None) or None
        if isinstance(feature_extractor, (str, os.PathLike)):
            from transformers import AutoFeatureExtractor

            feature_extractor = AutoFeatureExtractor.from_pretrained(os.fspath(feature_extractor))
        kwargs["feature_extractor"] = feature_extractor
    if issubclass(pipeline_cls, _TASK_AWARE):
        kwargs["task"] = full_task
    return pipeline_cls(model, tokenizer=tokenizer, batch_size=batch_size, **kwargs)


def _image_text_to_text(model, processor, batch_size, kwargs):
    if isinstance(processor, (str, os.PathLike)):
        from transformers import AutoProcessor

        processor = AutoProcessor.from_pretrained(os.fspath(processor))
    if processor is None:
        raise ValueError("pipeline('image-text-to-text') needs the model's processor: pass `processor=`")
    # decoder-only models generate batched prompts left-padded (as HF's pipeline sets it)
    if getattr(processor.tokenizer, "padding_side", None) == "right":
        processor.tokenizer.padding_side = "left"
    return ImageTextToTextPipeline(model, processor=processor, batch_size=batch_size, **kwargs)


def _model_task_for(pipeline_cls, model_type, model_task):
    """The auto-class task a model of `model_type` serves the pipeline with (CTC models for speech recognition)."""
    if pipeline_cls is AutomaticSpeechRecognitionPipeline:
        for candidate in _ASR_MODEL_TASKS:
            if model_type in supported_model_types(candidate):
                return candidate
    return model_task


def _check_model_type(model_type, task, model_task):
    if model_type not in supported_model_types(model_task):
        raise ValueError(f"The model_type {model_type!r} is not supported for task {task!r} (it needs a "
                         f"{TASKS[model_task]} model). Supported model types: "
                         f"{', '.join(supported_model_types(model_task))}")


def _architecture_fallback(config, task, model_task):
    """The class of `config.architectures` that HF's pipeline would fall back to for `task`, or None."""
    if config.model_type in supported_model_types(model_task):
        return None
    names = [n for n in (getattr(config, "architectures", None) or ()) if n in _ARCHITECTURE_FALLBACKS.get(task, ())]
    if not names:
        return None
    import mindone.transformers as package

    return getattr(package, names[0])


def _check_model_instance(model, task, model_task):
    model_type = getattr(model.config, "model_type", None)
    if type(model).__name__ in _ARCHITECTURE_FALLBACKS.get(task, ()):
        return
    expected = MODEL_FAMILIES.get(model_type, {}).get(model_task)
    if isinstance(expected, tuple):  # several HF classes serve this task for the family
        expected = type(model).__name__ if type(model).__name__ in expected else expected[0]
    if expected is not None and type(model).__name__ != expected:
        raise ValueError(f"Task {task!r} needs a {expected} ({TASKS[model_task]}) model, got "
                         f"{type(model).__name__}")
    if expected is None:
        _check_model_type(model_type, task, model_task)


__all__ = ["pipeline", "Pipeline", "SUPPORTED_TASKS"] + [cls.__name__ for cls, _ in SUPPORTED_TASKS.values()]
