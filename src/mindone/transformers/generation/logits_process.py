"""Logits processors with HF's names, arguments and math, on MindSpore tensors.

Each processor is called as `processor(input_ids, scores) -> scores` with `input_ids` (B, L) int64 and `scores`
(B, V) float32 tensors, and returns new scores (inputs are never modified). Decisions that depend on token ids
(n-gram bans, sequence biases, forced tokens) are made on the host with numpy, because they are tiny integer
computations that MindSpore would dispatch as dozens of kernels; the resulting (B, V) masks are applied on device.
"""

import functools
import inspect
import math

import mindspore as ms
import numpy as np
from mindspore import Tensor, ops

from ..backend import functional as F

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
    """scores.masked_fill(mask, value), with the mask at the scores' full shape and the value as a cached tensor:
    MindSpore's CPU MaskedFill on a 49152-wide row took ~0.7 ms with a broadcast (V,) mask and a float value against
    ~0.1 ms this way (measured)."""
    if mask.shape != scores.shape:
        mask = ops.broadcast_to(mask, scores.shape)
    return scores.masked_fill(mask, _scalar(value, scores.dtype))


def _fill_tokens(scores, token_ids, value=NEG_INF):
    """`value` at `token_ids` in every row of scores (B, V)."""
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
        self._validate_bad_words()
        if eos_token_id is not None:
            eos = _as_id_list(eos_token_id)
            bad_words_ids = [seq for seq in bad_words_ids if all(seq != [i] for i in eos)]
        super().__init__({tuple(seq): NEG_INF for seq in bad_words_ids})

    def _validate_bad_words(self):
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
        remove = probs < self.min_p * probs.max(axis=-1, keepdims=True)
        k = min(self.min_tokens_to_keep, scores.shape[-1])
        # softmax is monotonic, so the k most probable tokens are the k highest scores
        remove = ops.logical_and(remove, probs < _kth_largest(probs, k))
        return _fill(scores, remove, self.filter_value)


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
