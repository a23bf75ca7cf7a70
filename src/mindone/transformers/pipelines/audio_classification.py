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


class ZeroShotAudioClassificationPipeline(Pipeline):
    """`pipe(audio, candidate_labels=[...], hypothesis_template="This is a sound of {}.")` -> [{"score", "label"}]
    by decreasing score: the softmax over the labels of CLAP's audio-text logits (`logits_per_audio`).

    The audio goes through the model's feature extractor (ClapFeatureExtractor: log-mels and `is_longer`), the
    labels, put in the template, through its tokenizer (padded together); one model call per audio, as HF."""

    task = "zero-shot-audio-classification"

    def __init__(self, model, tokenizer=None, feature_extractor=None, **kwargs):
        if feature_extractor is None or tokenizer is None:
            raise ValueError("zero-shot-audio-classification needs a feature extractor and a tokenizer: pass "
                             "`feature_extractor=` and `tokenizer=`")
        super().__init__(model, tokenizer=tokenizer, feature_extractor=feature_extractor, **kwargs)

    def _sanitize_parameters(self, candidate_labels=None, hypothesis_template=None):
        pre = {}
        if candidate_labels is not None:
            pre["candidate_labels"] = candidate_labels
        if hypothesis_template is not None:
            pre["hypothesis_template"] = hypothesis_template
        return pre, {}

    def preprocess(self, item, candidate_labels=None, hypothesis_template="This is a sound of {}."):
        if not candidate_labels:
            raise ValueError("zero-shot-audio-classification needs `candidate_labels`")
        if isinstance(candidate_labels, str):
            candidate_labels = [candidate_labels]
        rate = self.feature_extractor.sampling_rate
        audio = load_audio(item, rate, type(self).__name__)
        inputs = self.feature_extractor([audio], sampling_rate=rate, return_tensors="np")
        prepared = {"input_features": np.asarray(inputs["input_features"], np.float32)}
        if "is_longer" in inputs:
            prepared["is_longer"] = np.asarray(inputs["is_longer"], np.bool_)
        text = self.tokenizer([hypothesis_template.format(x) for x in candidate_labels], return_tensors="np",
                              padding=True)
        prepared.update({k: np.asarray(text[k], np.int64) for k in ("input_ids", "attention_mask") if k in text})
        prepared["candidate_labels"] = list(candidate_labels)
        return prepared

    def _run_batch(self, parts):
        # every audio has its own label set: one model call per audio
        split = []
        for part in parts:
            inputs = {k: v for k, v in part.items()
                      if k in ("input_features", "is_longer", "input_ids", "attention_mask")}
            outputs = Pipeline._forward(self, inputs)
            split.append({"candidate_labels": part["candidate_labels"], "logits": outputs["logits_per_audio"]})
        return split

    def postprocess(self, model_outputs):
        scores = softmax(model_outputs["logits"][0].astype(np.float32))
        ranked = sorted(zip(scores.tolist(), model_outputs["candidate_labels"]), key=lambda x: -x[0])
        return [{"score": score, "label": label} for score, label in ranked]
