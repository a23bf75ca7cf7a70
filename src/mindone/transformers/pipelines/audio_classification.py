"""audio-classification: audio -> feature extractor -> sequence classifier -> [{"score", "label"}] (HF's format).

Inputs as for automatic-speech-recognition (samples, {"raw"/"array", "sampling_rate"} dict, WAV path or bytes).
"""

import numpy as np

from .automatic_speech_recognition import load_audio
from .base import Pipeline, sigmoid, softmax


class AudioClassificationPipeline(Pipeline):
    """Classifies a waveform: the `top_k` labels (default: all) by score, scores after `function_to_apply`
    ("softmax" by default, "sigmoid" for multi-label models, "none" for regression)."""

    task = "audio-classification"

    def __init__(self, model, feature_extractor=None, **kwargs):
        if feature_extractor is None:
            raise ValueError("audio-classification needs a feature extractor: pass `feature_extractor=`")
        super().__init__(model, feature_extractor=feature_extractor, **kwargs)

    def _is_single(self, inputs):
        return len(inputs) > 0 and np.isscalar(inputs[0])

    def _sanitize_parameters(self, top_k=None, function_to_apply=None, **kwargs):
        if kwargs:
            raise TypeError(f"{type(self).__name__} got unexpected arguments: {sorted(kwargs)}")
        num_labels = self.model.config.num_labels
        post = {"top_k": num_labels if top_k is None else min(top_k, num_labels)}
        if function_to_apply is not None:
            if function_to_apply not in ("softmax", "sigmoid", "none"):
                raise ValueError(f"Invalid value for `function_to_apply`: {function_to_apply}. Valid options are "
                                 "['softmax', 'sigmoid', 'none']")
            post["function_to_apply"] = function_to_apply
        return {}, post

    def preprocess(self, item):
        rate = self.feature_extractor.sampling_rate
        audio = load_audio(item, rate, type(self).__name__)
        processed = self.feature_extractor(audio, sampling_rate=rate, return_tensors="np")
        return {k: np.asarray(v, np.float32 if k == "input_values" else np.int64) for k, v in processed.items()
                if k in ("input_values", "attention_mask")}

    def _model_input_names(self):
        # one waveform per model call unless they have the same length: HF pads nothing either (batch_size 1)
        return ()

    def _extra_model_inputs(self):
        return ("input_values", "attention_mask")

    def _run_group(self, prepared):
        # waveforms of different lengths cannot share a batch without changing group-norm models' outputs
        return [self._run_batch([p])[0] for p in prepared]

    def postprocess(self, model_outputs, top_k=5, function_to_apply=None):
        if function_to_apply is None:
            problem_type = self.model.config.problem_type
            function_to_apply = {"regression": "none", "multi_label_classification": "sigmoid"}.get(problem_type,
                                                                                                   "softmax")
        logits = model_outputs["logits"][0].astype(np.float32)
        if function_to_apply == "softmax":
            probs = softmax(logits)
        elif function_to_apply == "sigmoid":
            probs = sigmoid(logits)
        else:
            probs = logits
        ids = np.argsort(-probs, kind="stable")[:top_k]
        return [{"score": float(probs[i]), "label": self.model.config.id2label[int(i)]} for i in ids]
