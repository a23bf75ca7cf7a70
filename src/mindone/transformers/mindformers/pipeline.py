"""MindFormers' `pipeline(task="text_generation", model=..., max_length=...)` on our pipelines.

Task names are MindFormers' (underscores); each maps to our HF-style pipeline of the same task. text_generation
answers as MindFormers does, one `{"text_generation_text": [text]}` per input (the prompt and its continuation,
the same text as our pipeline's "generated_text"), in a list even for a single input; the other tasks answer with
our (HF's) records, whose keys MindFormers' pipelines share ("label"/"score", "answer", "token_str", ...).
"""

from ..pipelines import pipeline as hf_pipeline

# MindFormers task -> our (HF) task
TASKS = {
    "text_generation": "text-generation",
    "text_classification": "text-classification",
    "token_classification": "token-classification",
    "question_answering": "question-answering",
    "fill_mask": "fill-mask",
    "translation": "translation",
    "image_classification": "image-classification",
    "zero_shot_image_classification": "zero-shot-image-classification",
    "image_to_text_generation": "image-to-text",
    "feature_extraction": "feature-extraction",
}


class TextGenerationPipeline:
    """Wraps our text-generation pipeline; calls return `[{"text_generation_text": [text, ...]}, ...]`."""

    def __init__(self, pipe):
        self.pipe = pipe
        self.model = pipe.model
        self.tokenizer = pipe.tokenizer

    def __call__(self, inputs, **kwargs):
        prompts = [inputs] if isinstance(inputs, str) else list(inputs)
        if not all(isinstance(p, str) for p in prompts):
            raise TypeError("text_generation takes a string or a list of strings")
        outputs = self.pipe(prompts, **kwargs)
        return [{"text_generation_text": [o["generated_text"] for o in out]} for out in outputs]


def pipeline(task=None, model=None, tokenizer=None, image_processor=None, audio_processor=None, backend="ms",
             **kwargs):
    """MindFormers' `pipeline`: `task` is a MindFormers task name ("text_generation", "text_classification",
    ...; HF's hyphenated names are accepted too), `model` a checkpoint directory or a model of this package,
    `kwargs` default call arguments (max_length, do_sample, top_k, ...) and our pipeline's options (batch_size)."""
    if backend != "ms":
        raise ValueError(f"backend={backend!r}: only 'ms' exists")
    if audio_processor is not None:
        raise ValueError("audio_processor: pass feature_extractor= to mindone.transformers.pipeline for audio tasks")
    if task in TASKS:
        hf_task = TASKS[task]
    elif task in TASKS.values():
        hf_task = task
    else:
        raise KeyError(f"task={task!r}: supported MindFormers tasks are {sorted(TASKS)}")
    if image_processor is not None:
        kwargs["image_processor"] = image_processor
    pipe = hf_pipeline(hf_task, model=model, tokenizer=tokenizer, **kwargs)
    if task == "text_generation":
        return TextGenerationPipeline(pipe)
    return pipe
