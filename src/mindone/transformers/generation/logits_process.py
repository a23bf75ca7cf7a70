"""Logits processors with HF's names, arguments and math, on MindSpore tensors.

Each processor is called as `processor(input_ids, scores) -> scores` with `input_ids` (B, L) int64 and `scores`
(B, V) float32 tensors, and returns new scores (inputs are never modified). Decisions that depend on token ids
(n-gram bans, sequence biases, forced tokens) are made on the host with numpy, because they are tiny integer
computations that MindSpore would dispatch as dozens of kernels; the resulting (B, V) masks are applied on device.
"""

import functools
import inspect
import logging
import math

import mindspore as ms
import numpy as np
from mindspore import Tensor, ops

from ..backend import functional as F

logger = logging.getLogger(__name__)

NEG_INF = float("-inf")


def _as_numpy(x):
    if isinstance(x, (Tensor, ms.Parameter)):
        return x.asnumpy()
    return np.asarray(x)


def _as_id_list(token_ids):
    """An int, a list of ints or a tensor of ids -> list of ints."""
    if token_ids is None:
        return None
    if isinstance(token_ids, (Tensor, np.ndarray)):
        return [int(t) for t in _as_numpy(token_ids).reshape(-1)]
    if isinstance(token_ids, (int, np.integer)):
        return [int(token_ids)]
    return [int(t) for t in token_ids]


def _vocab_mask(vocab_size, token_ids):
    """(V,) bool tensor, True at `token_ids` (ids outside the vocabulary are ignored, like torch.isin)."""
    return Tensor(_vocab_mask_array(vocab_size, tuple(token_ids)))


def _vocab_mask_array(vocab_size, token_ids):
    mask = np.zeros((vocab_size,), np.bool_)
    ids = np.asarray([t for t in token_ids if 0 <= t < vocab_size], np.int64)
    mask[ids] = True
    return mask


@functools.lru_cache(maxsize=16)
def _token_mask(shape, token_ids):
    """(B, V) bool tensor, True at `token_ids` in every row; cached, as the EOS masks are the same at every step."""
    return Tensor(np.ascontiguousarray(np.broadcast_to(_vocab_mask_array(shape[-1], token_ids), shape)))


@functools.lru_cache(maxsize=16)
def _scalar(value, dtype):
    return Tensor(value, dtype)


def _fill(scores, mask, value=NEG_INF):
    """scores.masked_fill(mask, value): on CPU in NumPy (`F.masked_fill_on_host`); elsewhere with the mask at the
    scores' full shape and the value as a cached tensor:
    MindSpore's CPU MaskedFill on a 49152-wide row took ~0.7 ms with a broadcast (V,) mask and a float value against
    ~0.1 ms this way (measured)."""
    filled = F.masked_fill_on_host(scores, mask, value)
    if filled is not None:
        return filled
    if mask.shape != scores.shape:
        mask = ops.broadcast_to(mask, scores.shape)
    return scores.masked_fill(mask, _scalar(value, scores.dtype))


def _fill_tokens(scores, token_ids, value=NEG_INF):
    """`value` at `token_ids` in every row of scores (B, V)."""
    filled = F.masked_fill_on_host(scores, _vocab_mask_array(scores.shape[-1], tuple(token_ids)), value)
    if filled is not None:
        return filled
    return _fill(scores, _token_mask(tuple(scores.shape), tuple(token_ids)), value)


def _kth_largest(scores, k):
    """(B, 1) k-th largest score per row."""
    return F.topk(scores, k)[0][..., -1:]


def _unsort(sorted_mask, sorted_indices):
    """Scatters a per-sorted-position bool mask back to vocabulary order."""
    return ops.tensor_scatter_elements(sorted_mask, sorted_indices, sorted_mask, 1)


def _check_min_tokens(min_tokens_to_keep):
    if not isinstance(min_tokens_to_keep, int) or min_tokens_to_keep < 1:
        raise ValueError(f"`min_tokens_to_keep` has to be a positive integer, but is {min_tokens_to_keep}")


def _check_cutoff(name, epsilon, min_tokens_to_keep):
    """(epsilon, min_tokens_to_keep) of the epsilon/eta warpers, validated as HF does."""
    epsilon = float(epsilon)
    if epsilon <= 0 or epsilon >= 1:
        raise ValueError(f"`{name}` has to be a float > 0 and < 1, but is {epsilon}")
    if int(min_tokens_to_keep) < 1:
        raise ValueError(f"`min_tokens_to_keep` has to be a strictly positive integer, but is {min_tokens_to_keep}")
    return epsilon, int(min_tokens_to_keep)


def _check_eos(eos_token_id):
    ids = _as_id_list(eos_token_id)
    if any(t < 0 for t in ids):
        raise ValueError(f"`eos_token_id` has to be a list of positive integers, but is {eos_token_id}")
    return ids


class LogitsProcessor:
    """Base class: `__call__(input_ids, scores) -> scores`."""

    def __call__(self, input_ids, scores):
        raise NotImplementedError(f"{self.__class__} is an abstract class. Only classes inheriting this class can "
                                  "be called.")


def _call_parameters(processor):
    """Parameter names of `processor.__call__`; looked up once per processor class (every decoding step asks)."""
    if isinstance(processor, LogitsProcessor):
        return _class_call_parameters(type(processor))
    return list(inspect.signature(processor.__call__).parameters)


@functools.lru_cache(maxsize=None)
def _class_call_parameters(cls):
    return [name for name in inspect.signature(cls.__call__).parameters][1:]  # without self


class LogitsProcessorList(list):
    """Applies its processors in order; processors whose `__call__` takes extra arguments get them from kwargs."""

    def __call__(self, input_ids, scores, **kwargs):
        for processor in self:
            params = _call_parameters(processor)
            if len(params) > 2:
                if not all(arg in kwargs for arg in params[2:]):
                    raise ValueError(f"Make sure that all the required parameters: {params} for "
                                     f"{processor.__class__} are passed to the logits processor.")
                scores = processor(input_ids, scores, **kwargs)
            else:
                scores = processor(input_ids, scores)
        return scores


# ------------------------------------------------------------------------------------------------------------------
# Processors applied in every decoding strategy
# ------------------------------------------------------------------------------------------------------------------


class MinLengthLogitsProcessor(LogitsProcessor):
    """EOS gets -inf while the whole sequence (prompt included) is shorter than `min_length`."""

    def __init__(self, min_length, eos_token_id, device="cpu"):
        if not isinstance(min_length, int) or min_length < 0:
            raise ValueError(f"`min_length` has to be a non-negative integer, but is {min_length}")
        self.min_length = min_length
        self.eos_token_id = _as_id_list(eos_token_id)

    def __call__(self, input_ids, scores):
        if input_ids.shape[-1] < self.min_length:
            return _fill_tokens(scores, self.eos_token_id)
        return scores


class MinNewTokensLengthLogitsProcessor(LogitsProcessor):
    """EOS gets -inf until `min_new_tokens` tokens follow the first `prompt_length_to_skip` ones."""

    def __init__(self, prompt_length_to_skip, min_new_tokens, eos_token_id, device="cpu"):
        for name, value in (("prompt_length_to_skip", prompt_length_to_skip), ("min_new_tokens", min_new_tokens)):
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"`{name}` has to be a positive integer, but is {value}")
        self.prompt_length_to_skip = prompt_length_to_skip
        self.min_new_tokens = min_new_tokens
        self.eos_token_id = _as_id_list(eos_token_id)

    def __call__(self, input_ids, scores):
        if input_ids.shape[-1] - self.prompt_length_to_skip < self.min_new_tokens:
            return _fill_tokens(scores, self.eos_token_id)
        return scores


class RepetitionPenaltyLogitsProcessor(LogitsProcessor):
    """Scores of tokens already in the sequence are divided by `penalty` (multiplied when negative).

    `prompt_ignore_length` (int, or a (B,) tensor of per-row left-padding lengths) excludes leading positions.
    """

    def __init__(self, penalty, prompt_ignore_length=None):
        if not isinstance(penalty, float) or not penalty > 0:
            raise ValueError(f"`penalty` has to be a strictly positive float, but is {penalty}")
        if isinstance(prompt_ignore_length, int) and prompt_ignore_length < 0:
            raise ValueError(f"`prompt_ignore_length` has to be a positive integer, but is {prompt_ignore_length}")
        if prompt_ignore_length is not None and not isinstance(prompt_ignore_length, int):
            prompt_ignore_length = _as_numpy(prompt_ignore_length)
            if prompt_ignore_length.ndim != 1:
                raise ValueError("`prompt_ignore_length` must be 1D")
        self.penalty = penalty
        self.prompt_ignore_length = prompt_ignore_length

    def __call__(self, input_ids, scores):
        vocab_size = scores.shape[-1]
        ids = _as_numpy(input_ids).astype(np.int64)
        if ids.ndim == 1:
            ids = ids[:, None]
        if isinstance(self.prompt_ignore_length, int):
            ids = ids[:, self.prompt_ignore_length:]
        elif self.prompt_ignore_length is not None:
            if ids.shape[0] != self.prompt_ignore_length.shape[0]:
                raise ValueError("Incompatible `prompt_ignore_length` batch size")
            ignored = np.arange(ids.shape[1])[None, :] < self.prompt_ignore_length[:, None]
            ids = np.where(ignored, vocab_size, ids)
        # an extra column absorbs ignored positions (id == vocab_size) and is cut off again
        ids = Tensor(np.minimum(ids, vocab_size))
        padded = F.cat([scores, ops.zeros((scores.shape[0], 1), scores.dtype)], -1)
        picked = ops.gather_elements(padded, 1, ids)
        picked = ops.where(picked < 0, picked * self.penalty, picked / self.penalty)
        return ops.tensor_scatter_elements(padded, ids, picked, 1)[:, :vocab_size]


class EncoderRepetitionPenaltyLogitsProcessor(LogitsProcessor):
    """Tokens of the encoder input get their scores multiplied by `penalty` (hallucination penalty)."""

    def __init__(self, penalty, encoder_input_ids):
        if not isinstance(penalty, float) or not penalty > 0:
            raise ValueError(f"`penalty` has to be a strictly positive float, but is {penalty}")
        self.penalty = 1 / penalty
        self.encoder_input_ids = _as_numpy(encoder_input_ids).astype(np.int64)

    def __call__(self, input_ids, scores):
        ids = self.encoder_input_ids
        if scores.shape[0] > ids.shape[0]:
            ids = np.repeat(ids, scores.shape[0] // ids.shape[0], axis=0)
        ids = Tensor(ids)
        picked = ops.gather_elements(scores, 1, ids)
        picked = ops.where(picked < 0, picked * self.penalty, picked / self.penalty)
        return ops.tensor_scatter_elements(scores, ids, picked, 1)


class NoRepeatNGramLogitsProcessor(LogitsProcessor):
    """Bans every token that would repeat an n-gram of size `ngram_size` already in the sequence."""

    def __init__(self, ngram_size):
        if not isinstance(ngram_size, int) or ngram_size <= 0:
            raise ValueError(f"`ngram_size` has to be a strictly positive integer, but is {ngram_size}")
        self.ngram_size = ngram_size

    def __call__(self, input_ids, scores):
        ids = _as_numpy(input_ids)
        cur_len = ids.shape[-1]
        if cur_len < self.ngram_size:
            return scores
        n = self.ngram_size
        windows = np.lib.stride_tricks.sliding_window_view(ids, n, axis=1)  # (B, L-n+1, n)
        prefix = ids[:, cur_len + 1 - n:]
        matches = (windows[..., :-1] == prefix[:, None, :]).all(-1)
        banned = np.zeros((ids.shape[0], scores.shape[-1] + 1), np.bool_)
        rows = np.repeat(np.arange(ids.shape[0])[:, None], windows.shape[1], 1)
        targets = np.where(matches, np.minimum(windows[..., -1], scores.shape[-1]), scores.shape[-1])
        banned[rows, targets] = True
        return _fill(scores, Tensor(banned[:, :-1]))


class SequenceBiasLogitsProcessor(LogitsProcessor):
    """Adds a bias to a token when it would complete one of the given token sequences.

    `sequence_bias`: {tuple of ids: float} or [[ids, float], ...].
    """

    def __init__(self, sequence_bias):
        self.sequence_bias = sequence_bias
        self._validate_arguments()
        if isinstance(self.sequence_bias, list):
            self.sequence_bias = {tuple(ids): bias for ids, bias in self.sequence_bias}
        self._prepared_for = None

    def _validate_arguments(self):
        bias = self.sequence_bias
        if (not isinstance(bias, dict) and not isinstance(bias, list)) or len(bias) == 0:
            raise ValueError(f"`sequence_bias` has to be a non-empty dictionary, or non-empty list of lists but is "
                             f"{bias}.")
        if isinstance(bias, dict):
            if any(not isinstance(ids, tuple) for ids in bias):
                raise ValueError(f"`sequence_bias` has to be a dict with tuples as keys, but is {bias}.")
            if any(len(ids) == 0 or any(not isinstance(t, (int, np.integer)) or t < 0 for t in ids) for ids in bias):
                raise ValueError(f"Each key in `sequence_bias` has to be a non-empty tuple of positive integers, but "
                                 f"is {bias}.")
            if any(not isinstance(v, float) for v in bias.values()):
                raise ValueError(f"`sequence_bias` has to be a dict with floats as values, but is {bias}.")
        else:
            def valid(pair):
                return (len(pair) == 2 and isinstance(pair[0], list)
                        and all(isinstance(t, (int, np.integer)) and t >= 0 for t in pair[0])
                        and isinstance(pair[1], float))

            if any(not valid(pair) for pair in bias):
                raise ValueError(f"Each element in `sequence_bias` has to be a non-empty list of lists of positive "
                                 f"integers and float, but is {bias}.")

    def _prepare(self, vocab_size):
        invalid = [t for ids in self.sequence_bias for t in ids if t >= vocab_size]
        if invalid:
            raise ValueError(f"The model vocabulary size is {vocab_size}, but the following tokens were being "
                             f"biased: {invalid}")
        self._length_1_bias = np.zeros((vocab_size,), np.float32)
        self._multi = {}
        for ids, bias in self.sequence_bias.items():
            if len(ids) == 1:
                self._length_1_bias[ids[0]] = bias
            else:
                self._multi.setdefault(len(ids) - 1, []).append((ids, bias))
        self._multi = [(np.array([ids[:-1] for ids, _ in group], np.int64), np.array([ids[-1] for ids, _ in group]),
                        np.array([b for _, b in group], np.float32)) for group in self._multi.values()]
        self._prepared_for = vocab_size

    def __call__(self, input_ids, scores):
        vocab_size = scores.shape[-1]
        if self._prepared_for != vocab_size:
            self._prepare(vocab_size)
        ids = _as_numpy(input_ids)
        bias = np.broadcast_to(self._length_1_bias, (ids.shape[0], vocab_size)).copy()
        for prefixes, last_tokens, biases in self._multi:
            n = prefixes.shape[1]
            if n > ids.shape[1]:
                continue
            matching = (ids[:, None, -n:] == prefixes[None]).all(-1)  # (B, G)
            for g in range(len(last_tokens)):
                bias[:, last_tokens[g]] += np.where(matching[:, g], biases[g], np.float32(0.0))
        return scores + Tensor(bias).astype(scores.dtype)


class NoBadWordsLogitsProcessor(SequenceBiasLogitsProcessor):
    """Makes the given token sequences impossible (their last token gets -inf when the rest precedes it)."""

    def __init__(self, bad_words_ids, eos_token_id=None):
        self.bad_word_ids = bad_words_ids
        self._validate_arguments()
        if eos_token_id is not None:
            eos = _as_id_list(eos_token_id)
            bad_words_ids = [seq for seq in bad_words_ids if all(seq != [i] for i in eos)]
        super().__init__({tuple(seq): NEG_INF for seq in bad_words_ids})

    def _validate_arguments(self):
        """Validates `bad_words_ids` (the bias dict built from it may be empty: every bad word was an EOS)."""
        ids = self.bad_word_ids
        if not isinstance(ids, list) or len(ids) == 0:
            raise ValueError(f"`bad_words_ids` has to be a non-empty list, but is {ids}.")
        if any(not isinstance(seq, list) for seq in ids):
            raise ValueError(f"`bad_words_ids` has to be a list of lists, but is {ids}.")
        if any(any(not isinstance(t, (int, np.integer)) or t < 0 for t in seq) for seq in ids):
            raise ValueError(f"Each list in `bad_words_ids` has to be a list of positive integers, but is {ids}.")


class PrefixConstrainedLogitsProcessor(LogitsProcessor):
    """Only the tokens returned by `prefix_allowed_tokens_fn(batch_id, input_ids_row)` stay allowed."""

    def __init__(self, prefix_allowed_tokens_fn, num_beams):
        self._prefix_allowed_tokens_fn = prefix_allowed_tokens_fn
        self._num_beams = num_beams

    def __call__(self, input_ids, scores):
        mask = np.full(scores.shape, NEG_INF, np.float32)
        batch_size = input_ids.shape[0] // self._num_beams
        for batch_id in range(batch_size):
            for beam_id in range(self._num_beams):
                row = batch_id * self._num_beams + beam_id
                allowed = self._prefix_allowed_tokens_fn(batch_id, input_ids[row])
                if len(allowed) == 0:
                    raise ValueError(f"`prefix_allowed_tokens_fn` returned an empty list for batch ID {batch_id}."
                                     "This means that the constraint is unsatisfiable. Please check your "
                                     "implementationof `prefix_allowed_tokens_fn` ")
                mask[row, list(allowed)] = 0
        mask_t = Tensor(mask)
        processed = scores + mask_t
        # a batch whose every beam has only -inf left falls back to the bare constraint mask
        dead = _as_numpy(processed.max(-1)).reshape(batch_size, -1) == NEG_INF
        dead = np.repeat(dead.all(-1), self._num_beams)
        if dead.any():
            processed = ops.where(Tensor(dead)[:, None], mask_t, processed)
        return processed


class _ForcedTokenLogitsProcessor(LogitsProcessor):
    """Sets every score to -inf except the forced tokens (0) when `_should_force(cur_len)`."""

    forced = ()

    def _should_force(self, cur_len):
        raise NotImplementedError

    def __call__(self, input_ids, scores):
        if not self._should_force(input_ids.shape[-1]):
            return scores
        keep = _vocab_mask(scores.shape[-1], self.forced)
        forced = ops.where(keep, ops.zeros((), scores.dtype), F.full((), NEG_INF, scores.dtype))
        return ops.broadcast_to(forced, scores.shape)


class ForcedBOSTokenLogitsProcessor(_ForcedTokenLogitsProcessor):
    """The first generated token (after a length-1 decoder start) is forced to `bos_token_id`."""

    def __init__(self, bos_token_id):
        self.bos_token_id = bos_token_id
        self.forced = [bos_token_id]

    def _should_force(self, cur_len):
        return cur_len == 1


class ForcedEOSTokenLogitsProcessor(_ForcedTokenLogitsProcessor):
    """The token that reaches `max_length` is forced to (one of) `eos_token_id`."""

    def __init__(self, max_length, eos_token_id, device="cpu"):
        self.max_length = max_length
        self.eos_token_id = _check_eos(eos_token_id)
        self.forced = self.eos_token_id

    def _should_force(self, cur_len):
        return cur_len == self.max_length - 1


class InfNanRemoveLogitsProcessor(LogitsProcessor):
    """nan -> 0, +inf -> dtype max, -inf -> dtype min."""

    def __call__(self, input_ids, scores):
        lowest = F.finfo_min(scores.dtype)
        out = ops.where(ops.isnan(scores), ops.zeros((), scores.dtype), scores)
        out = ops.where(scores == float("inf"), F.full((), -lowest, scores.dtype), out)
        return ops.where(scores == NEG_INF, F.full((), lowest, scores.dtype), out)


class ExponentialDecayLengthPenalty(LogitsProcessor):
    """After `start_index` generated tokens, EOS scores grow by a factor `decay_factor ** (tokens past start)`."""

    def __init__(self, exponential_decay_length_penalty, eos_token_id, input_ids_seq_length):
        self.regulation_start = exponential_decay_length_penalty[0] + input_ids_seq_length
        self.regulation_factor = exponential_decay_length_penalty[1]
        self.eos_token_id = _check_eos(eos_token_id)

    def __call__(self, input_ids, scores):
        cur_len = input_ids.shape[-1]
        if cur_len <= self.regulation_start:
            return scores
        factor = pow(self.regulation_factor, cur_len - self.regulation_start) - 1
        penalty = ops.abs(scores) * factor
        penalty = ops.where(ops.isfinite(scores), penalty, ops.zeros((), scores.dtype))
        eos = _vocab_mask(scores.shape[-1], self.eos_token_id)
        return scores + ops.where(eos, penalty, ops.zeros((), scores.dtype))


class SuppressTokensLogitsProcessor(LogitsProcessor):
    """The given tokens always get -inf."""

    def __init__(self, suppress_tokens, device="cpu"):
        self.suppress_tokens = _as_id_list(suppress_tokens)

    def __call__(self, input_ids, scores):
        return _fill_tokens(scores, self.suppress_tokens)


class SuppressTokensAtBeginLogitsProcessor(LogitsProcessor):
    """The given tokens get -inf at the step where the sequence length equals `begin_index`."""

    def __init__(self, begin_suppress_tokens, begin_index, device="cpu"):
        self.begin_suppress_tokens = _as_id_list(begin_suppress_tokens)
        self.begin_index = begin_index

    def set_begin_index(self, begin_index):
        self.begin_index = begin_index

    def __call__(self, input_ids, scores):
        if input_ids.shape[-1] == self.begin_index:
            return _fill_tokens(scores, self.begin_suppress_tokens)
        return scores


class WhisperTimeStampLogitsProcessor(LogitsProcessor):
    """Whisper's timestamp rules (HF / OpenAI): <|notimestamps|> never; timestamps come in pairs (except before EOS)
    and never decrease; the first generated token is a timestamp of at most `max_initial_timestamp_index`; a
    timestamp is forced when the timestamps' total probability beats every text token.

    Args:
        generate_config: a generation config with `no_timestamps_token_id` (timestamps are the ids after it),
            `eos_token_id` and optionally `max_initial_timestamp_index`.
        begin_index: length of the decoder prompt (index of the first generated token).
    """

    def __init__(self, generate_config, begin_index, _detect_timestamp_from_logprob=None):
        self.no_timestamps_token_id = generate_config.no_timestamps_token_id
        self.timestamp_begin = generate_config.no_timestamps_token_id + 1
        eos = generate_config.eos_token_id or generate_config.bos_token_id
        self.eos_token_id = eos[0] if isinstance(eos, (list, tuple)) else eos
        self._detect_timestamp_from_logprob = (
            _detect_timestamp_from_logprob if _detect_timestamp_from_logprob is not None
            else getattr(generate_config, "_detect_timestamp_from_logprob", True))
        if begin_index is None:
            raise ValueError("`begin_index` (the decoder prompt length) must be provided to "
                             "`WhisperTimeStampLogitsProcessor`")
        self.begin_index = begin_index
        self.max_initial_timestamp_index = getattr(generate_config, "max_initial_timestamp_index", None)

    def set_begin_index(self, begin_index):
        self.begin_index = begin_index

    def __call__(self, input_ids, scores):
        ids = _as_numpy(input_ids)
        begin = self.timestamp_begin
        # the rules depend on each row's ids (host) only: one (B, V) mask, then one masked fill on device
        mask = np.zeros(tuple(scores.shape), np.bool_)
        mask[:, self.no_timestamps_token_id] = True
        for k, seq in enumerate(ids[:, self.begin_index:].tolist()):
            last_was_timestamp = len(seq) >= 1 and seq[-1] >= begin
            penultimate_was_timestamp = len(seq) < 2 or seq[-2] >= begin
            if last_was_timestamp:
                if penultimate_was_timestamp:  # a pair is complete: text (or EOS) next
                    mask[k, begin:] = True
                else:  # an open pair: a timestamp or EOS next
                    mask[k, :self.eos_token_id] = True
            timestamps = [t for t in seq if t >= begin]
            timestamp_last = begin  # timestamps never decrease; <|0.00|> is not emitted twice
            if timestamps:
                timestamp_last = timestamps[-1] if last_was_timestamp and not penultimate_was_timestamp \
                    else timestamps[-1] + 1
            mask[k, begin:timestamp_last] = True
        if ids.shape[1] == self.begin_index:
            mask[:, :begin] = True
            if self.max_initial_timestamp_index is not None:
                mask[:, begin + self.max_initial_timestamp_index + 1:] = True
        scores = _fill(scores, Tensor(mask))
        if self._detect_timestamp_from_logprob:
            logprobs = F.log_softmax(scores.astype(ms.float32), -1)
            timestamp_logprobs = logprobs[:, begin:]
            peak = timestamp_logprobs.max(-1, keepdims=True)
            finite_peak = ops.where(ops.isfinite(peak), peak, ops.zeros_like(peak))
            timestamp_logprob = finite_peak + ops.log(ops.exp(timestamp_logprobs - finite_peak).sum(-1,
                                                                                                    keepdims=True))
            max_text_logprob = logprobs[:, :begin].max(-1, keepdims=True)
            text = Tensor(np.arange(scores.shape[-1]) < begin)
            scores = _fill(scores, ops.logical_and(timestamp_logprob > max_text_logprob, text.reshape(1, -1)))
        return scores


class LogitNormalization(LogitsProcessor):
    """log_softmax of the scores (keeps beam-search scores normalised after other processors)."""

    def __call__(self, input_ids, scores):
        return F.log_softmax(scores, -1)


# ------------------------------------------------------------------------------------------------------------------
# Warpers: only applied when sampling
# ------------------------------------------------------------------------------------------------------------------


class TemperatureLogitsWarper(LogitsProcessor):
    def __init__(self, temperature):
        if not isinstance(temperature, float) or not temperature > 0:
            message = (f"`temperature` (={temperature}) has to be a strictly positive float, otherwise your next "
                       "token scores will be invalid.")
            if isinstance(temperature, float) and temperature == 0.0:
                message += " If you're looking for greedy decoding strategies, set `do_sample=False`."
            raise ValueError(message)
        self.temperature = temperature

    def __call__(self, input_ids, scores):
        return scores / self.temperature


class TopKLogitsWarper(LogitsProcessor):
    """Keeps the `top_k` highest scores (at least `min_tokens_to_keep`); the rest get `filter_value`."""

    def __init__(self, top_k, filter_value=NEG_INF, min_tokens_to_keep=1):
        if not isinstance(top_k, int) or top_k <= 0:
            raise ValueError(f"`top_k` has to be a strictly positive integer, but is {top_k}")
        self.top_k = max(top_k, min_tokens_to_keep)
        self.filter_value = filter_value
        self.min_tokens_to_keep = min_tokens_to_keep

    def __call__(self, input_ids, scores):
        top_k = min(self.top_k, scores.shape[-1])
        return _fill(scores, scores < _kth_largest(scores, top_k), self.filter_value)


class TopPLogitsWarper(LogitsProcessor):
    """Nucleus filtering: keeps the smallest set of tokens whose probability mass reaches `top_p`."""

    def __init__(self, top_p, filter_value=NEG_INF, min_tokens_to_keep=1):
        top_p = float(top_p)
        if top_p < 0 or top_p > 1.0:
            raise ValueError(f"`top_p` has to be a float > 0 and < 1, but is {top_p}")
        _check_min_tokens(min_tokens_to_keep)
        self.top_p = top_p
        self.filter_value = filter_value
        self.min_tokens_to_keep = min_tokens_to_keep

    def __call__(self, input_ids, scores):
        sorted_logits, sorted_indices = F.sort(scores, -1, descending=False)
        cumulative = F.cumsum(F.softmax(sorted_logits, -1), -1)
        remove = cumulative <= 1 - self.top_p
        vocab = scores.shape[-1]
        keep_last = Tensor(np.arange(vocab) >= vocab - self.min_tokens_to_keep)
        remove = ops.logical_and(remove, ops.logical_not(keep_last))
        return _fill(scores, _unsort(remove, sorted_indices), self.filter_value)


class MinPLogitsWarper(LogitsProcessor):
    """Removes tokens whose probability is below `min_p` times the top token's probability."""

    def __init__(self, min_p, filter_value=NEG_INF, min_tokens_to_keep=1):
        if not 0 <= min_p <= 1.0:
            raise ValueError(f"`min_p` has to be a float in the [0, 1] interval, but is {min_p}")
        _check_min_tokens(min_tokens_to_keep)
        self.min_p = min_p
        self.filter_value = filter_value
        self.min_tokens_to_keep = min_tokens_to_keep

    def __call__(self, input_ids, scores):
        probs = F.softmax(scores, -1)
        remove = _as_numpy(probs < self.min_p * probs.max(axis=-1, keepdims=True))
        k = min(self.min_tokens_to_keep, scores.shape[-1])
        # exactly the k most probable tokens stay, found on the scores: probabilities of far-behind tokens underflow
        # to 0 (MindSpore's CPU kernels flush float32 denormals, torch's keep them), which would make them all tie
        np.put_along_axis(remove, _as_numpy(F.topk(scores, k)[1]).astype(np.int64), False, 1)
        return _fill(scores, Tensor(remove), self.filter_value)


class TypicalLogitsWarper(LogitsProcessor):
    """Locally typical sampling: keeps the tokens whose information is closest to the entropy, up to mass
    `mass`."""

    def __init__(self, mass=0.9, filter_value=NEG_INF, min_tokens_to_keep=1):
        mass = float(mass)
        if not (0 < mass < 1):
            raise ValueError(f"`typical_p` has to be a float > 0 and < 1, but is {mass}")
        _check_min_tokens(min_tokens_to_keep)
        self.filter_value = filter_value
        self.mass = mass
        self.min_tokens_to_keep = min_tokens_to_keep

    def __call__(self, input_ids, scores):
        normalized = F.log_softmax(scores, -1)
        p = ops.exp(normalized)
        plogp = normalized * p
        entropy = -ops.where(ops.isnan(plogp), ops.zeros((), plogp.dtype), plogp).sum(-1, keepdims=True)
        shifted = ops.abs(-normalized - entropy)
        sorted_scores, sorted_indices = F.sort(shifted, -1, descending=False)
        sorted_logits = ops.gather_elements(scores, -1, sorted_indices)
        cumulative = F.cumsum(F.softmax(sorted_logits, -1), -1)
        last_ind = (cumulative < self.mass).astype(ms.int32).sum(1)
        last_ind = ops.clamp(last_ind, max=scores.shape[-1] - 1).astype(ms.int64)
        remove = sorted_scores > ops.gather_elements(sorted_scores, 1, last_ind.reshape(-1, 1))
        keep_first = Tensor(np.arange(scores.shape[-1]) < self.min_tokens_to_keep)
        remove = ops.logical_and(remove, ops.logical_not(keep_first))
        return _fill(scores, _unsort(remove, sorted_indices), self.filter_value)


class EpsilonLogitsWarper(LogitsProcessor):
    """Removes tokens with probability below `epsilon` (keeping at least `min_tokens_to_keep`)."""

    def __init__(self, epsilon, filter_value=NEG_INF, min_tokens_to_keep=1):
        self.epsilon, self.min_tokens_to_keep = _check_cutoff("epsilon_cutoff", epsilon, min_tokens_to_keep)
        self.filter_value = filter_value

    def __call__(self, input_ids, scores):
        remove = F.softmax(scores, -1) < self.epsilon
        k = min(self.min_tokens_to_keep, scores.shape[-1])
        remove = ops.logical_and(remove, scores < _kth_largest(scores, k))
        return _fill(scores, remove, self.filter_value)


class EtaLogitsWarper(LogitsProcessor):
    """Eta sampling: the cutoff is min(epsilon, sqrt(epsilon) * exp(-entropy))."""

    def __init__(self, epsilon, filter_value=NEG_INF, min_tokens_to_keep=1, device="cpu"):
        self.epsilon, self.min_tokens_to_keep = _check_cutoff("eta_cutoff", epsilon, min_tokens_to_keep)
        self.filter_value = filter_value

    def __call__(self, input_ids, scores):
        probs = F.softmax(scores, -1)
        # entropy as torch.distributions.Categorical computes it: -inf log-probs are clamped, so 0 * log 0 = 0
        logp = ops.clamp(F.log_softmax(scores, -1), min=F.finfo_min(scores.dtype))
        entropy = -(logp * probs).sum(-1, keepdims=True)
        eta = ops.minimum(F.full((), self.epsilon, scores.dtype), math.sqrt(self.epsilon) * ops.exp(-entropy))
        remove = probs < eta
        k = min(self.min_tokens_to_keep, scores.shape[-1])
        remove = ops.logical_and(remove, scores < _kth_largest(scores, k))
        return _fill(scores, remove, self.filter_value)


class TopHLogitsWarper(LogitsProcessor):
    """Top-H sampling: among the 100 most likely tokens (in order), keeps the prefix whose cumulative entropy terms
    `-p log p` (p renormalised over those 100) stay within `top_h` times their entropy; the top token always stays.

    Args:
        top_h: scale of the entropy budget, in (0, 1].
        filter_value: score given to removed tokens.
    """

    def __init__(self, top_h, filter_value=NEG_INF):
        if not 0 < top_h <= 1:
            raise ValueError("`top_h` must be in the range (0, 1].")
        self.top_n = 100  # HF's cap on the candidates considered
        self.top_h = top_h
        self.filter_value = filter_value

    def __call__(self, input_ids, scores):
        batch, vocab = scores.shape
        top_logits, top_idx = F.topk(scores, min(self.top_n, vocab))
        # at most 100 values a row, on the host in float32 with torch's formulas: whether the last kept token's
        # cumulative entropy reaches the budget can hinge on the last bit (a uniform row at top_h=1 is exactly on it)
        x = _as_numpy(F.cast(top_logits, ms.float32))
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            peak = x.max(-1, keepdims=True)
            exp = np.exp(x - peak)
            total = exp.sum(-1, keepdims=True)
            probs = exp / total
            # entropy as torch.distributions.Categorical computes it: normalised logits clamped, so 0 * log 0 = 0
            normalized = np.maximum(x - (peak + np.log(total)), np.finfo(np.float32).min)
            tau = -(normalized * probs).sum(-1, keepdims=True) * np.float32(self.top_h)
            # a zero probability makes its term (and every later cumulative one) nan: nothing past it is kept, as in
            # HF
            cumulative = np.cumsum(-probs * np.log(probs), -1, dtype=np.float32)
        selected = cumulative <= tau
        selected[:, 0] = True
        keep = np.zeros((batch, vocab), np.bool_)
        np.put_along_axis(keep, _as_numpy(top_idx).astype(np.int64), selected, 1)
        return _fill(scores, Tensor(~keep), self.filter_value)


def _ngram_table(ids, ngram_size):
    """{(n-1)-gram prefix: [tokens that followed it]} of one sequence (a list of ints)."""
    table = {}
    for start in range(len(ids) - ngram_size + 1):
        table.setdefault(tuple(ids[start:start + ngram_size - 1]), []).append(ids[start + ngram_size - 1])
    return table


class EncoderNoRepeatNGramLogitsProcessor(LogitsProcessor):
    """Bans every token that would make the last `encoder_ngram_size` tokens an n-gram of the encoder input (the
    prompt), so generated text does not repeat the prompt's n-grams. Rows are hypotheses: with beams, row `i`
    belongs to prompt `i // num_beams`.

    Args:
        encoder_ngram_size: n of the n-grams.
        encoder_input_ids: (B, L) or (L,) prompt ids.
    """

    def __init__(self, encoder_ngram_size, encoder_input_ids):
        if not isinstance(encoder_ngram_size, int) or encoder_ngram_size <= 0:
            raise ValueError(f"`encoder_ngram_size` has to be a strictly positive integer, but is "
                             f"{encoder_ngram_size}")
        self.ngram_size = encoder_ngram_size
        ids = _as_numpy(encoder_input_ids).astype(np.int64)
        if ids.ndim == 1:
            ids = ids[None, :]
        self.batch_size = ids.shape[0]
        self.generated_ngrams = [_ngram_table(row, encoder_ngram_size) for row in ids.tolist()]

    def __call__(self, input_ids, scores):
        num_hypos, vocab = scores.shape
        num_beams = num_hypos // self.batch_size
        ids = _as_numpy(input_ids).tolist()
        cur_len = len(ids[0]) if ids else 0
        start = cur_len + 1 - self.ngram_size  # a negative start slices from the end, as HF's indexing does
        banned = np.zeros((num_hypos, vocab), np.bool_)
        for hypo, row in enumerate(ids):
            tokens = self.generated_ngrams[hypo // num_beams].get(tuple(row[start:cur_len]), [])
            banned[hypo, [t for t in tokens if -vocab <= t < vocab]] = True
        return _fill(scores, Tensor(banned))


class ClassifierFreeGuidanceLogitsProcessor(LogitsProcessor):
    """Classifier-free guidance over a doubled batch: the first half of the score rows is conditional, the second
    unconditional; returns `uncond + guidance_scale * (cond - uncond)` (half the rows).

    Args:
        guidance_scale: > 1.
    """

    def __init__(self, guidance_scale):
        if not guidance_scale > 1:
            raise ValueError("Require guidance scale >1 to use the classifier free guidance processor, got guidance "
                             f"scale {guidance_scale}.")
        self.guidance_scale = guidance_scale

    def __call__(self, input_ids, scores):
        if scores.shape[0] != 2 * input_ids.shape[0]:
            raise ValueError(f"Logits should have twice the batch size of the input ids, the first half of batches "
                             f"corresponding to the conditional inputs, and the second half of batches corresponding "
                             f"to the unconditional inputs. Got batch size {scores.shape[0]} for the logits and "
                             f"{input_ids.shape[0]} for the input ids.")
        half = scores.shape[0] // 2
        cond, uncond = scores[:half], scores[half:]
        return uncond + (cond - uncond) * self.guidance_scale


class AlternatingCodebooksLogitsProcessor(LogitsProcessor):
    """Bark's fine model: generated positions alternate between the first codebook (ids
    `[semantic_vocab_size, semantic_vocab_size + codebook_size)`) and the second (ids above that)."""

    def __init__(self, input_start_len, semantic_vocab_size, codebook_size):
        if not isinstance(input_start_len, int) or input_start_len < 0:
            raise ValueError(f"`input_starting_length` has to be a non-negative integer, but is {input_start_len}")
        self.input_start_len = input_start_len
        self.semantic_vocab_size = semantic_vocab_size
        self.codebook_size = codebook_size

    def __call__(self, input_ids, scores):
        first_codebook = (input_ids.shape[-1] - self.input_start_len) % 2 == 0
        vocab = np.arange(scores.shape[-1])
        end_of_first = self.semantic_vocab_size + self.codebook_size
        if first_codebook:
            banned = (vocab < self.semantic_vocab_size) | (vocab >= end_of_first)
        else:
            banned = vocab < end_of_first
        return _fill(scores, Tensor(banned).reshape(1, -1))


class UnbatchedClassifierFreeGuidanceLogitsProcessor(LogitsProcessor):
    """Classifier-free guidance with a second, unconditional pass of `model` (on `unconditional_ids`, by default the
    prompt's last token, followed by the generated tokens): returns
    `guidance_scale * (log_softmax(scores) - uncond) + uncond`, `uncond` the unconditional log-probabilities.

    Args:
        guidance_scale: 1 returns log_softmax(scores) unchanged; > 1 follows the prompt more, < 1 the negative prompt.
        model: the model run on the unconditional branch (called as `model(input_ids, attention_mask=...,
            use_cache=..., past_key_values=...)`, returning `.logits`).
        unconditional_ids / unconditional_attention_mask: (B, L) negative prompt and its mask.
        use_cache: keep the unconditional branch's key/value cache between steps.
    """

    def __init__(self, guidance_scale, model, unconditional_ids=None, unconditional_attention_mask=None,
                 use_cache=True):
        self.guidance_scale = guidance_scale
        self.model = model
        self.unconditional_context = {"input_ids": unconditional_ids, "attention_mask": unconditional_attention_mask,
                                      "use_cache": use_cache, "past_key_values": None, "first_pass": True}

    def get_unconditional_logits(self, input_ids):
        ctx = self.unconditional_context
        ids = _as_numpy(input_ids).astype(np.int64)
        if ctx["first_pass"]:
            if ctx["input_ids"] is None:
                ctx["input_ids"] = ids[:, -1:]
            ctx["input_ids"] = _as_numpy(ctx["input_ids"]).astype(np.int64)
            if ctx["attention_mask"] is None:
                ctx["attention_mask"] = np.ones_like(ctx["input_ids"])
            ctx["attention_mask"] = _as_numpy(ctx["attention_mask"]).astype(np.int64)
            feed = ctx["input_ids"]
            ctx["first_pass"] = False
        else:
            ctx["attention_mask"] = np.concatenate([ctx["attention_mask"], np.ones_like(ids[:, -1:])], 1)
            if ctx["use_cache"]:
                feed = ids[:, -1:]
            else:
                feed = np.concatenate([ctx["input_ids"], ids[:, -1:]], 1)
            ctx["input_ids"] = feed
        out = self.model(Tensor(feed), attention_mask=Tensor(ctx["attention_mask"]), use_cache=ctx["use_cache"],
                         past_key_values=ctx["past_key_values"])
        ctx["past_key_values"] = out.get("past_key_values", None) if ctx["use_cache"] else None
        return out.logits

    def __call__(self, input_ids, scores):
        # the written-out log-softmax: MindSpore's CPU kernel is ~1.5e-6 off, visible once scaled by the guidance
        scores = F._precise_log_softmax(scores)
        if self.guidance_scale == 1:
            return scores
        logits = self.get_unconditional_logits(input_ids)
        uncond = F._precise_log_softmax(F.cast(logits[:, -1], scores.dtype))
        return self.guidance_scale * (scores - uncond) + uncond


# ------------------------------------------------------------------------------------------------------------------
# Watermarking. Both schemes draw from torch's CPU generator (mt19937) in HF, so text watermarked by HF's processors
# is detected by ours and the other way round: the draws are reproduced exactly (see _mt19937_raw, _torch_randperm).
# ------------------------------------------------------------------------------------------------------------------


def _mt19937_raw(seed, count):
    """The first `count` 32-bit outputs of torch's CPU generator after `manual_seed(seed)` (an mt19937 seeded with
    the low 32 bits of the seed)."""
    bit_generator = np.random.MT19937(0)
    bit_generator._legacy_seeding(int(seed) & 0xFFFFFFFF)
    return bit_generator.random_raw(count).astype(np.int64)


@functools.lru_cache(maxsize=4096)
def _torch_randperm(n, seed):
    """`torch.randperm(n, generator=torch.Generator().manual_seed(seed))` on CPU: a Fisher-Yates shuffle that swaps
    position i with i + (draw % (n - i))."""
    offsets = _mt19937_raw(seed, max(n - 1, 0)) % (n - np.arange(max(n - 1, 0)))
    perm = list(range(n))
    for i, offset in enumerate(offsets.tolist()):
        j = i + offset
        perm[i], perm[j] = perm[j], perm[i]
    perm = np.asarray(perm, np.int64)
    perm.setflags(write=False)
    return perm


class WatermarkLogitsProcessor(LogitsProcessor):
    """Kirchenbauer et al.'s watermark: a pseudo-random "green" share of the vocabulary, seeded from the previous
    token(s), gets `bias` added to its scores. Detect with `WatermarkDetector`.

    Args:
        vocab_size: vocabulary size (the green list is `int(vocab_size * greenlist_ratio)` ids).
        device: accepted for HF compatibility.
        greenlist_ratio: in (0, 1).
        bias: added to green scores.
        hashing_key: the secret key.
        seeding_scheme: "lefthash" (seed from the last token) or "selfhash" (seed also from each candidate token).
        context_width: previous tokens used in seeding.
    """

    table_size = 1_000_003

    def __init__(self, vocab_size, device="cpu", greenlist_ratio=0.25, bias=2.0, hashing_key=15485863,
                 seeding_scheme="lefthash", context_width=1):
        if seeding_scheme not in ["selfhash", "lefthash"]:
            raise ValueError(f"seeding_scheme has to be one of [`selfhash`, `lefthash`], but found {seeding_scheme}")
        if greenlist_ratio >= 1.0 or greenlist_ratio <= 0.0:
            raise ValueError(f"greenlist_ratio has be in range between 0.0 and 1.0, exclusively. but found "
                             f"{greenlist_ratio}")
        self.vocab_size = vocab_size
        self.greenlist_size = int(self.vocab_size * greenlist_ratio)
        self.bias = bias
        self.seeding_scheme = seeding_scheme
        self.hash_key = hashing_key
        self.context_width = context_width
        self._fixed_table = None

    @property
    def fixed_table(self):
        """torch.randperm(1_000_003) from the hashing key; only selfhash uses it (built on first use, ~1 s)."""
        if self._fixed_table is None:
            self._fixed_table = _torch_randperm(self.table_size, self.hash_key)
        return self._fixed_table

    def _seed(self, input_seq):
        input_seq = np.asarray(input_seq, np.int64)[-self.context_width:]
        if self.seeding_scheme == "selfhash":
            # int64 products wrap around exactly as torch's do
            a = self.fixed_table[input_seq % self.table_size] + 1
            b = self.fixed_table[input_seq[-1] % self.table_size] + 1
            with np.errstate(over="ignore"):
                seed = int((np.int64(self.hash_key) * a * b).min())
        else:
            seed = self.hash_key * int(input_seq[-1])
        return seed % (2 ** 64 - 1)

    def _get_greenlist_ids(self, input_seq):
        return _torch_randperm(self.vocab_size, self._seed(input_seq))[:self.greenlist_size]

    def _score_rejection_sampling(self, input_seq, row_scores):
        """selfhash: of the 40 best candidates, those that are in the green list seeded with themselves appended."""
        order = np.argsort(-row_scores, kind="stable")
        green = []
        for candidate in order[:40].tolist():
            if candidate in self._get_greenlist_ids(np.append(input_seq, candidate)):
                green.append(candidate)
        return np.asarray(green, np.int64)

    def __call__(self, input_ids, scores):
        ids = _as_numpy(input_ids).astype(np.int64)
        if ids.shape[-1] < self.context_width:
            logger.warning("`input_ids` should have at least `%d` tokens but has %d. The seeding will be skipped for "
                           "this generation step!", self.context_width, ids.shape[-1])
            return scores
        bias = np.zeros(tuple(scores.shape), np.float32)
        host_scores = _as_numpy(scores) if self.seeding_scheme == "selfhash" else None
        for row, input_seq in enumerate(ids):
            if self.seeding_scheme == "selfhash":
                green = self._score_rejection_sampling(input_seq, host_scores[row])
            else:
                green = self._get_greenlist_ids(input_seq)
            bias[row, green] = self.bias
        return scores + Tensor(bias).astype(scores.dtype)


_LCG_MULTIPLIER = 6364136223846793005  # newlib/musl linear congruential generator, as HF's SynthID hash


def _accumulate_hash(current, data):
    """SynthID's hash: for each value v along data's last axis, h = (h + v) * multiplier + 1 in wrapping int64."""
    current = np.asarray(current, np.int64)
    data = np.asarray(data, np.int64)
    multiplier = np.int64(_LCG_MULTIPLIER)
    with np.errstate(over="ignore"):
        for i in range(data.shape[-1]):
            current = (current + data[..., i]) * multiplier + np.int64(1)
    return current


class SynthIDTextWatermarkState:
    """Per-generation SynthID state: the last `ngram_len - 1` tokens and the hashes of contexts already used."""

    def __init__(self, batch_size, ngram_len, context_history_size, device="cpu"):
        self.context = np.zeros((batch_size, ngram_len - 1), np.int64)
        self.context_history = np.zeros((batch_size, context_history_size), np.int64)
        self.num_calls = 0


class SynthIDTextWatermarkLogitsProcessor(LogitsProcessor):
    """SynthID Text watermarking (tournament sampling): for each depth (one key each), pseudo-random g-values in
    {0, 1} from the hash of (previous ngram_len - 1 tokens, candidate, key) reweight the probabilities
    `p <- p * (1 + g - E_p[g])`; returns log-probabilities. A context seen before in the same generation is left
    unwatermarked. Detect with `SynthIDTextWatermarkDetector`.

    Args:
        ngram_len: context length + 1.
        keys: one watermarking key per depth.
        sampling_table_size / sampling_table_seed: the table of coin flips the hashes index (torch's
            `randint(0, 2)` draws from `manual_seed(sampling_table_seed)`, reproduced exactly).
        context_history_size: how many earlier contexts are remembered.
        device: accepted for HF compatibility.
        skip_first_ngram_calls: leave the first `ngram_len - 1` steps unwatermarked.
        debug_mode: replace the scores by uniform ones first (tests).
    """

    def __init__(self, ngram_len, keys, sampling_table_size, sampling_table_seed, context_history_size,
                 device="cpu", skip_first_ngram_calls=False, debug_mode=False):
        self.ngram_len = ngram_len
        self.keys = np.asarray(_as_numpy(keys), np.int64).reshape(-1)
        self.sampling_table = _mt19937_raw(sampling_table_seed, sampling_table_size) % 2
        self.context_history_size = context_history_size
        self.device = device
        self.state = None
        self.skip_first_ngram_calls = skip_first_ngram_calls
        self.debug_mode = debug_mode

    def _init_state(self, batch_size):
        self.state = SynthIDTextWatermarkState(batch_size, self.ngram_len, self.context_history_size, self.device)

    def update_scores(self, scores, g_values):
        """Log-probabilities after reweighting softmax(scores) depth by depth with the (B, V, depth) g-values."""
        probs = F.softmax(scores, -1)
        g_values = Tensor(np.asarray(_as_numpy(g_values))).astype(scores.dtype)
        for depth in range(g_values.shape[-1]):
            g = g_values[:, :, depth]
            mass = (g * probs).sum(1, keepdims=True)
            probs = probs * (1 + g - mass)
        log_probs = ops.log(probs)
        return ops.where(ops.isfinite(log_probs), log_probs, F.full((), F.finfo_min(scores.dtype), scores.dtype))

    def __call__(self, input_ids, scores):
        ids = self._check_input_ids_shape(input_ids)
        batch, vocab = scores.shape
        if self.debug_mode:
            scores = ops.ones_like(scores)
        if self.state is None:
            self._init_state(batch)
        else:
            self.state.context = np.concatenate([self.state.context, ids[:, -1:]], 1)[:, 1:]
        self.state.num_calls += 1
        if self.skip_first_ngram_calls and self.state.num_calls < self.ngram_len:
            return scores
        indices = np.broadcast_to(np.arange(vocab, dtype=np.int64), (batch, vocab))
        ngram_keys, context_hash = self._compute_keys_np(self.state.context, indices)
        updated = self.update_scores(scores, self._sample_g_np(ngram_keys))
        context_hash = context_hash[:, None]
        repeated = (self.state.context_history == context_hash).any(1, keepdims=True)
        self.state.context_history = np.concatenate([context_hash, self.state.context_history], 1)[:, :-1]
        return ops.where(Tensor(repeated), scores, updated)

    def accumulate_hash(self, current_hash, data, multiplier=_LCG_MULTIPLIER, increment=1):
        """The hash of `data` (..., T) continued from `current_hash` (...) (int64, wrapping)."""
        if multiplier != _LCG_MULTIPLIER or increment != 1:
            current = np.asarray(_as_numpy(current_hash), np.int64)
            data = np.asarray(_as_numpy(data), np.int64)
            m, inc = np.int64((multiplier + 2 ** 63) % 2 ** 64 - 2 ** 63), np.int64(increment)
            with np.errstate(over="ignore"):
                for i in range(data.shape[-1]):
                    current = (current + data[..., i]) * m + inc
            return Tensor(current)
        return Tensor(_accumulate_hash(_as_numpy(current_hash), _as_numpy(data)))

    def _key_hashes(self, hashes):
        """(...) hashes -> (..., depth): each continued with one watermarking key."""
        return _accumulate_hash(hashes[..., None], self.keys[:, None])

    def compute_ngram_keys(self, ngrams):
        """(B, num_ngrams, ngram_len) ngrams -> (B, num_ngrams, depth) keys."""
        return Tensor(self._ngram_keys_np(ngrams))

    def _ngram_keys_np(self, ngrams):
        ngrams = np.asarray(_as_numpy(ngrams), np.int64)
        if ngrams.ndim != 3:
            raise ValueError(f"Ngrams should be of shape (batch_size, num_ngrams, ngram_len), but is {ngrams.shape}")
        if ngrams.shape[2] != self.ngram_len:
            raise ValueError("Ngrams should be of shape (batch_size, num_ngrams, ngram_len), where ngram_len is "
                             f"{self.ngram_len}, but is {ngrams.shape}")
        hashes = _accumulate_hash(np.ones(ngrams.shape[:2], np.int64), ngrams)
        return self._key_hashes(hashes)

    def _compute_keys(self, n_minus_1_grams, indices):
        """((B, V, depth) keys of context + each candidate, (B,) hash of the context alone)."""
        keys, context_hash = self._compute_keys_np(n_minus_1_grams, indices)
        return Tensor(keys), Tensor(context_hash)

    def _compute_keys_np(self, n_minus_1_grams, indices):
        context = np.asarray(_as_numpy(n_minus_1_grams), np.int64)
        context_hash = _accumulate_hash(np.ones((context.shape[0],), np.int64), context)
        indices = np.asarray(_as_numpy(indices), np.int64)
        hashes = _accumulate_hash(context_hash[:, None], indices[:, :, None])
        return self._key_hashes(hashes), context_hash

    def sample_g_values(self, ngram_keys):
        """Keys -> coin flips: sampling_table[key mod table size] (torch's floored modulo)."""
        return Tensor(self._sample_g_np(ngram_keys))

    def _sample_g_np(self, ngram_keys):
        keys = np.asarray(_as_numpy(ngram_keys), np.int64)
        return self.sampling_table[np.mod(keys, self.sampling_table.shape[0])]

    def _check_input_ids_shape(self, input_ids):
        ids = np.asarray(_as_numpy(input_ids))
        if ids.ndim != 2:
            raise ValueError(f"Input ids should be of shape (batch_size, input_len), but is {ids.shape}")
        return ids.astype(np.int64)

    def compute_g_values(self, input_ids):
        """(B, L) ids -> (B, L - ngram_len + 1, depth) g-values of every ngram."""
        ids = self._check_input_ids_shape(input_ids)
        ngrams = np.lib.stride_tricks.sliding_window_view(ids, self.ngram_len, axis=1)
        return Tensor(self._sample_g_np(self._ngram_keys_np(ngrams)))

    def compute_context_repetition_mask(self, input_ids):
        """(B, L - ngram_len + 1): 1 where the ngram's context was not seen before in the row (within the history
        size), 0 where it repeats."""
        ids = self._check_input_ids_shape(input_ids)
        batch = ids.shape[0]
        history = np.zeros((batch, self.context_history_size), np.int64)
        contexts = np.lib.stride_tricks.sliding_window_view(ids[:, :-1], self.ngram_len - 1, axis=1)
        repeated = []
        for i in range(contexts.shape[1]):
            context_hash = _accumulate_hash(np.ones((batch,), np.int64), contexts[:, i, :])[:, None]
            repeated.append((history == context_hash).any(1, keepdims=True))
            history = np.concatenate([context_hash, history], 1)[:, :-1]
        return Tensor(np.logical_not(np.concatenate(repeated, 1)))

    def compute_eos_token_mask(self, input_ids, eos_token_id):
        """(B, L): 0 from the first EOS of each row on, 1 before."""
        ids = self._check_input_ids_shape(input_ids)
        is_eos = ids == eos_token_id
        seen = np.cumsum(is_eos, 1) > 0
        return Tensor(~seen)

    def expected_mean_g_value(self, vocab_size, coinflip_prob=0.5):
        """Mean g-value of watermarked text under a uniform LM distribution (single depth)."""
        return coinflip_prob + coinflip_prob * (1 - coinflip_prob) * (1 - (1 / vocab_size))
