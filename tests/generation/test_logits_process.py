"""Every logits processor against the torch `transformers` processor of the same name on the same random inputs."""

import math

import numpy as np
import pytest
import torch
import transformers.generation.logits_process as hf

import mindspore as ms
from mindone.transformers.generation import logits_process as ours

VOCAB = 50
BATCH = 3
BAR = 1e-6


def random_case(seed, length=12, with_inf=False):
    rng = np.random.RandomState(seed)
    scores = (rng.randn(BATCH, VOCAB) * 3).astype(np.float32)
    if with_inf:
        scores[0, :5] = -np.inf
    ids = rng.randint(0, VOCAB, (BATCH, length)).astype(np.int64)
    if length >= 8:
        ids[1, -4:] = ids[1, 2:6]  # a repeated n-gram
    return ids, scores


# name -> (our factory, HF factory, input options); both sides get the same constructor arguments
CASES = {
    "temperature": (lambda m: m.TemperatureLogitsWarper(0.7), {}),
    "top_k": (lambda m: m.TopKLogitsWarper(top_k=7), {}),
    "top_k_min_keep": (lambda m: m.TopKLogitsWarper(top_k=2, min_tokens_to_keep=5), {}),
    "top_p": (lambda m: m.TopPLogitsWarper(top_p=0.8), {}),
    "top_p_min_keep": (lambda m: m.TopPLogitsWarper(top_p=0.05, min_tokens_to_keep=3), {}),
    "top_p_with_inf": (lambda m: m.TopPLogitsWarper(top_p=0.9), {"with_inf": True}),
    "min_p": (lambda m: m.MinPLogitsWarper(min_p=0.1), {}),
    "min_p_min_keep": (lambda m: m.MinPLogitsWarper(min_p=0.9, min_tokens_to_keep=4), {}),
    "typical": (lambda m: m.TypicalLogitsWarper(mass=0.7), {}),
    "typical_with_inf": (lambda m: m.TypicalLogitsWarper(mass=0.5, min_tokens_to_keep=2), {"with_inf": True}),
    "epsilon": (lambda m: m.EpsilonLogitsWarper(epsilon=0.02), {}),
    "epsilon_min_keep": (lambda m: m.EpsilonLogitsWarper(epsilon=0.5, min_tokens_to_keep=3), {}),
    "eta": (lambda m: m.EtaLogitsWarper(epsilon=0.05), {}),
    "eta_with_inf": (lambda m: m.EtaLogitsWarper(epsilon=0.3, min_tokens_to_keep=2), {"with_inf": True}),
    "repetition_penalty": (lambda m: m.RepetitionPenaltyLogitsProcessor(1.3), {}),
    "repetition_penalty_ignore_int": (lambda m: m.RepetitionPenaltyLogitsProcessor(1.3, prompt_ignore_length=5), {}),
    "repetition_penalty_ignore_rows": (lambda m: m.RepetitionPenaltyLogitsProcessor(
        0.8, prompt_ignore_length=_lengths(m)), {}),
    "encoder_repetition_penalty": (lambda m: m.EncoderRepetitionPenaltyLogitsProcessor(
        1.5, _encoder_ids(m)), {}),
    "no_repeat_ngram": (lambda m: m.NoRepeatNGramLogitsProcessor(2), {}),
    "no_repeat_ngram_3": (lambda m: m.NoRepeatNGramLogitsProcessor(3), {}),
    "no_repeat_ngram_too_long": (lambda m: m.NoRepeatNGramLogitsProcessor(20), {}),
    "bad_words": (lambda m: m.NoBadWordsLogitsProcessor([[3], [4, 5], [7, 8, 9]], eos_token_id=3), {}),
    "sequence_bias": (lambda m: m.SequenceBiasLogitsProcessor({(3,): 2.0, (4, 5): -1.5, (1, 2, 6): 4.0}), {}),
    "sequence_bias_list": (lambda m: m.SequenceBiasLogitsProcessor([[[3], 1.0], [[7, 8], -2.0]]), {}),
    "min_length_active": (lambda m: m.MinLengthLogitsProcessor(20, [2, 3]), {}),
    "min_length_inactive": (lambda m: m.MinLengthLogitsProcessor(5, 2), {}),
    "min_new_tokens": (lambda m: m.MinNewTokensLengthLogitsProcessor(8, 6, 2), {}),
    "forced_bos": (lambda m: m.ForcedBOSTokenLogitsProcessor(4), {"length": 1}),
    "forced_bos_later": (lambda m: m.ForcedBOSTokenLogitsProcessor(4), {}),
    "forced_eos": (lambda m: m.ForcedEOSTokenLogitsProcessor(13, [2, 6]), {}),
    "inf_nan_remove": (lambda m: m.InfNanRemoveLogitsProcessor(), {"with_inf": True}),
    "exponential_decay": (lambda m: m.ExponentialDecayLengthPenalty((2, 1.5), [2, 9], 6), {"with_inf": True}),
    "suppress_tokens": (lambda m: m.SuppressTokensLogitsProcessor([1, 4, 49]), {}),
    "suppress_at_begin": (lambda m: m.SuppressTokensAtBeginLogitsProcessor([1, 4], 12), {}),
    "suppress_at_begin_later": (lambda m: m.SuppressTokensAtBeginLogitsProcessor([1, 4], 3), {}),
    "logit_normalization": (lambda m: m.LogitNormalization(), {}),
    "prefix_constrained": (lambda m: m.PrefixConstrainedLogitsProcessor(
        lambda batch_id, sent: [int(sent[-1]) % VOCAB, batch_id + 1], 1), {}),
}


def _lengths(module):
    values = np.array([0, 3, 12])
    return torch.tensor(values) if module is hf else ms.Tensor(values)


def _encoder_ids(module):
    values = np.random.RandomState(7).randint(0, VOCAB, (BATCH, 6)).astype(np.int64)
    return torch.tensor(values) if module is hf else ms.Tensor(values)


def to_np(x):
    return x.asnumpy() if isinstance(x, ms.Tensor) else x.numpy()


def assert_scores_equal(got, want):
    got, want = to_np(got), to_np(want)
    assert got.shape == want.shape
    assert np.array_equal(np.isinf(got) & (got < 0), np.isinf(want) & (want < 0)), "different tokens filtered"
    finite = np.isfinite(want)
    assert np.array_equal(finite, np.isfinite(got))
    if finite.any():
        scale = max(np.abs(want[finite].astype(np.float64)).mean(), 1.0)
        assert np.abs(got[finite] - want[finite]).max() / scale <= BAR


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("seed", [0, 1])
def test_processor_matches_torch(name, seed):
    factory, options = CASES[name]
    ids, scores = random_case(seed, options.get("length", 12), options.get("with_inf", False))
    want = factory(hf)(torch.tensor(ids), torch.tensor(scores))
    got = factory(ours)(ms.Tensor(ids), ms.Tensor(scores))
    assert_scores_equal(got, want)


def test_processor_list_applies_in_order_and_passes_extra_kwargs():
    ids, scores = random_case(3)

    class AddStep(ours.LogitsProcessor):
        def __call__(self, input_ids, scores, step):
            return scores + step

    chain = ours.LogitsProcessorList([ours.TemperatureLogitsWarper(0.5), AddStep()])
    out = chain(ms.Tensor(ids), ms.Tensor(scores), step=1.0)
    np.testing.assert_allclose(out.asnumpy(), scores / 0.5 + 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="required parameters"):
        chain(ms.Tensor(ids), ms.Tensor(scores))


@pytest.mark.parametrize("make, message", [
    (lambda: ours.TemperatureLogitsWarper(0.0), "strictly positive float"),
    (lambda: ours.TopKLogitsWarper(0), "strictly positive integer"),
    (lambda: ours.TopPLogitsWarper(1.5), "float > 0 and < 1"),
    (lambda: ours.MinPLogitsWarper(2.0), r"\[0, 1\] interval"),
    (lambda: ours.TypicalLogitsWarper(1.0), "typical_p"),
    (lambda: ours.EpsilonLogitsWarper(0.0), "epsilon_cutoff"),
    (lambda: ours.EtaLogitsWarper(1.0), "eta_cutoff"),
    (lambda: ours.RepetitionPenaltyLogitsProcessor(0.0), "strictly positive float"),
    (lambda: ours.NoRepeatNGramLogitsProcessor(0), "strictly positive integer"),
    (lambda: ours.NoBadWordsLogitsProcessor([]), "non-empty list"),
    (lambda: ours.SequenceBiasLogitsProcessor({(1,): 1}), "floats as values"),
    (lambda: ours.MinLengthLogitsProcessor(-1, 2), "non-negative integer"),
    (lambda: ours.ForcedEOSTokenLogitsProcessor(10, -1), "positive integers"),
])
def test_processor_argument_errors_like_hf(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_sequence_bias_rejects_out_of_vocabulary_tokens():
    ids, scores = random_case(0)
    with pytest.raises(ValueError, match="vocabulary size is 50"):
        ours.SequenceBiasLogitsProcessor({(VOCAB + 1,): 1.0})(ms.Tensor(ids), ms.Tensor(scores))


def test_temperature_keeps_inputs_unmodified():
    ids, scores = random_case(0)
    tensor = ms.Tensor(scores)
    ours.RepetitionPenaltyLogitsProcessor(2.0)(ms.Tensor(ids), tensor)
    assert np.array_equal(tensor.asnumpy(), scores)
    assert not math.isnan(float(tensor.asnumpy().sum()))
