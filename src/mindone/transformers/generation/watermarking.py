"""Watermark detectors with HF's names and results: `WatermarkDetector` (green-list z-test for text made with
`WatermarkLogitsProcessor`) and `SynthIDTextWatermarkDetector` (g-values and masks for a SynthID Bayesian detector).

The trained `BayesianDetectorModel` of HF is a torch module and is not provided here; `SynthIDTextWatermarkDetector`
takes any callable `detector_module(g_values, mask)`.
"""

import collections
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

import numpy as np
from mindspore import Tensor

from .logits_process import SynthIDTextWatermarkLogitsProcessor, WatermarkLogitsProcessor, _as_numpy


@dataclass
class WatermarkDetectorOutput:
    """Per-row results of `WatermarkDetector` (numpy arrays of shape (B,))."""

    num_tokens_scored: Optional[np.ndarray] = None
    num_green_tokens: Optional[np.ndarray] = None
    green_fraction: Optional[np.ndarray] = None
    z_score: Optional[np.ndarray] = None
    p_value: Optional[np.ndarray] = None
    prediction: Optional[np.ndarray] = None
    confidence: Optional[np.ndarray] = None


class WatermarkDetector:
    """Detects text watermarked by `WatermarkLogitsProcessor` (or HF's) with the same settings: counts tokens in the
    green list seeded by their context, and z-tests the count against `greenlist_ratio`.

    Args:
        model_config: the generating model's config (vocab_size, bos / decoder start token).
        device: accepted for HF compatibility.
        watermarking_config: the `transformers.WatermarkingConfig` (or its dict) used to generate.
        ignore_repeated_ngrams: count each distinct n-gram once.
        max_cache_size: LRU cache size of green-list lookups.
    """

    def __init__(self, model_config, device, watermarking_config, ignore_repeated_ngrams=False, max_cache_size=128):
        if not isinstance(watermarking_config, dict):
            watermarking_config = watermarking_config.to_dict()
        self.bos_token_id = (model_config.bos_token_id if not model_config.is_encoder_decoder
                             else model_config.decoder_start_token_id)
        self.greenlist_ratio = watermarking_config["greenlist_ratio"]
        self.ignore_repeated_ngrams = ignore_repeated_ngrams
        self.processor = WatermarkLogitsProcessor(vocab_size=model_config.vocab_size, device=device,
                                                  **watermarking_config)
        self._get_ngram_score_cached = lru_cache(maxsize=max_cache_size)(self._get_ngram_score)

    def _get_ngram_score(self, prefix, target):
        return target in self.processor._get_greenlist_ids(np.asarray(prefix, np.int64))

    def _score_ngrams_in_passage(self, input_ids):
        batch, length = input_ids.shape
        selfhash = int(self.processor.seeding_scheme == "selfhash")
        n = self.processor.context_width + 1 - selfhash
        scored = np.zeros(batch)
        green = np.zeros(batch)
        for row in range(batch):
            ngrams = [tuple(input_ids[row, i:i + n].tolist()) for i in range(length - n + 1)]
            frequencies = collections.Counter(ngrams)
            is_green = {ngram: self._get_ngram_score_cached(ngram if selfhash else ngram[:-1], ngram[-1])
                        for ngram in frequencies}
            if self.ignore_repeated_ngrams:
                scored[row] = len(frequencies)
                green[row] = sum(is_green.values())
            else:
                scored[row] = sum(frequencies.values())
                green[row] = sum(count * is_green[ngram] for ngram, count in frequencies.items())
        return scored, green

    def _compute_z_score(self, green_token_count, total_num_tokens):
        expected = self.greenlist_ratio
        return (green_token_count - expected * total_num_tokens) / np.sqrt(
            total_num_tokens * expected * (1 - expected))

    def _compute_pval(self, x, loc=0, scale=1):
        z = (np.asarray(x, np.float64) - loc) / scale
        return np.vectorize(lambda v: 0.5 * math.erfc(v / math.sqrt(2)))(z).astype(np.float32)

    def __call__(self, input_ids, z_threshold=3.0, return_dict=False):
        """Predictions (B,) bool: z-score > `z_threshold`; a `WatermarkDetectorOutput` with `return_dict=True`.
        `input_ids` (B, L): the generated text, preferably without the prompt; a leading BOS is dropped."""
        ids = np.asarray(_as_numpy(input_ids)).astype(np.int64)
        has_bos = ids[:, 0] == self.bos_token_id
        if has_bos.any() != has_bos.all():
            raise ValueError("Some batch contains inconsistent leading BOS token. Make sure to prepare input with the "
                             "same tokenization parameters.")
        if ids[0, 0] == self.bos_token_id:
            ids = ids[:, 1:]
        if ids.shape[-1] - self.processor.context_width < 1:
            raise ValueError(f"Must have at least `1` token to score after the first min_prefix_len="
                             f"{self.processor.context_width} tokens required by the seeding scheme.")
        scored, green = self._score_ngrams_in_passage(ids)
        z_score = self._compute_z_score(green, scored)
        prediction = z_score > z_threshold
        if not return_dict:
            return prediction
        p_value = self._compute_pval(z_score)
        return WatermarkDetectorOutput(num_tokens_scored=scored, num_green_tokens=green, green_fraction=green / scored,
                                       z_score=z_score, p_value=p_value, prediction=prediction,
                                       confidence=1 - p_value)


class SynthIDTextWatermarkDetector:
    """Runs a SynthID detector on generated ids: g-values of every n-gram, masked where the context repeats or after
    the first EOS, passed to `detector_module(g_values, mask)`.

    Args:
        detector_module: a callable scoring (B, N, depth) g-values with a (B, N) mask (e.g. a trained Bayesian
            detector).
        logits_processor: the `SynthIDTextWatermarkLogitsProcessor` used to generate (same keys).
        tokenizer: provides `eos_token_id`.
    """

    def __init__(self, detector_module, logits_processor: SynthIDTextWatermarkLogitsProcessor, tokenizer):
        self.detector_module = detector_module
        self.logits_processor = logits_processor
        self.tokenizer = tokenizer

    def __call__(self, tokenized_outputs):
        processor = self.logits_processor
        eos_mask = processor.compute_eos_token_mask(tokenized_outputs, self.tokenizer.eos_token_id).asnumpy()
        repetition_mask = processor.compute_context_repetition_mask(tokenized_outputs).asnumpy()
        mask = Tensor(repetition_mask & eos_mask[:, processor.ngram_len - 1:])
        return self.detector_module(processor.compute_g_values(tokenized_outputs), mask)


__all__ = ["WatermarkDetector", "WatermarkDetectorOutput", "SynthIDTextWatermarkDetector"]
