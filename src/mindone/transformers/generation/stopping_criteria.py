"""Stopping criteria with HF's names and semantics: `criteria(input_ids, scores) -> (B,) bool tensor`, True for rows
that are done. They run on the host (token ids are already there once per step)."""

import json
import logging
import time
import warnings
from collections import OrderedDict
from copy import deepcopy

import numpy as np
from mindspore import Tensor

from .logits_process import _as_id_list, _as_numpy

logger = logging.getLogger(__name__)


def as_done_array(result, batch_size):
    """A criterion's answer (tensor, array, list or bool) as a (B,) numpy bool array."""
    done = _as_numpy(result).astype(np.bool_)
    return np.broadcast_to(done, (batch_size,)).copy() if done.ndim == 0 else done.reshape(batch_size)


class StoppingCriteria:
    """Base class: `__call__(input_ids, scores, **kwargs)` returns a (B,) bool tensor."""

    def __call__(self, input_ids, scores, **kwargs):
        raise NotImplementedError("StoppingCriteria needs to be subclassed")


class _HostCriteria(StoppingCriteria):
    """A built-in criterion decided on the host: `_done(ids)` maps (B, L) numpy ids to a (B,) numpy bool array, and
    `StoppingCriteriaList.host_done` calls it directly (no tensor round trip per step)."""

    def _done(self, ids, **kwargs):
        raise NotImplementedError

    def __call__(self, input_ids, scores, **kwargs):
        return Tensor(self._done(_as_numpy(input_ids), **kwargs))


class MaxLengthCriteria(_HostCriteria):
    """Done once the sequence (prompt included) has `max_length` tokens."""

    def __init__(self, max_length, max_position_embeddings=None):
        self.max_length = max_length
        self.max_position_embeddings = max_position_embeddings
        self._warned = False

    def _done(self, ids, **kwargs):
        cur_len = ids.shape[1]
        is_done = cur_len >= self.max_length
        if (self.max_position_embeddings is not None and not is_done and cur_len > self.max_position_embeddings
                and not self._warned):
            self._warned = True
            logger.warning("This is a friendly reminder - the current text generation call has exceeded the model's "
                           "predefined maximum length (%d). Depending on the model, you may observe exceptions, "
                           "performance degradation, or nothing at all.", self.max_position_embeddings)
        return np.full((ids.shape[0],), is_done, np.bool_)


class MaxTimeCriteria(_HostCriteria):
    """Done once `max_time` seconds have passed since `initial_timestamp` (default: construction)."""

    def __init__(self, max_time, initial_timestamp=None):
        self.max_time = max_time
        self.initial_timestamp = time.time() if initial_timestamp is None else initial_timestamp

    def _done(self, ids, **kwargs):
        return np.full((ids.shape[0],), time.time() - self.initial_timestamp > self.max_time, np.bool_)


class EosTokenCriteria(_HostCriteria):
    """Done when the last token is (one of) `eos_token_id`."""

    def __init__(self, eos_token_id):
        self.eos_token_id = _as_id_list(eos_token_id)

    def _done(self, ids, new_token_length=1, **kwargs):
        # a broadcast comparison: np.isin's setup costs ~0.3 ms per call, every decoding step
        last = ids[:, -new_token_length:]
        return (last[:, :, None] == np.asarray(self.eos_token_id, last.dtype)).any((1, 2))


_STOP_STRING_TOKEN_CACHE = OrderedDict()


def _decoder_types(config):
    """Every `type` value in a decoder's JSON config (nested decoders included)."""
    if isinstance(config, dict):
        if isinstance(config.get("type"), str):
            yield config["type"]
        for value in config.values():
            yield from _decoder_types(value)
    elif isinstance(config, list):
        for value in config:
            yield from _decoder_types(value)


def _bytes_to_unicode():
    """GPT-2's byte <-> printable-unicode table used by byte-level BPE vocabularies."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(printable, map(chr, chars)))


class StopStringCriteria(_HostCriteria):
    """Done when the text ends with one of `stop_strings` *within the last token*: the stop string may start in the
    middle of an earlier token and the last token may run past its end (HF's overhang rule).

    Token texts are the tokenizer's vocabulary entries cleaned the way HF cleans them (byte-level tokens become
    bytes; others are rendered after a fixed prefix so leading-space markers become spaces), so matching does not
    depend on how a whole sequence would be decoded.
    """

    def __init__(self, tokenizer, stop_strings):
        if isinstance(stop_strings, str):
            stop_strings = [stop_strings]
        self.stop_strings = tuple(stop_strings)
        self._mode = self._get_stop_string_matching_mode(tokenizer)
        self._targets = tuple(s.encode("utf-8") for s in self.stop_strings) if self._mode else self.stop_strings
        self._token_texts = self._clean_vocab(tokenizer, self._mode)
        self.maximum_token_len = max(len(s) for s in self._targets)

    @staticmethod
    def _get_stop_string_matching_mode(tokenizer):
        """How token texts are matched: "byte_level" (GPT-2 style byte-to-unicode tokens), "byte_fallback"
        (`<0xNN>` byte tokens) or None (plain strings), read from the fast tokenizer's decoder: its class, else the
        `type` fields of its JSON state (nested sequences included; a "ByteFallback" that is only some field's
        value, e.g. a Replace decoder's content, does not count). Byte fallback wins when both appear."""
        decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
        if decoder is None:
            return None
        if type(decoder).__name__ == "ByteLevel":
            return "byte_level"
        state = getattr(decoder, "__getstate__", lambda: None)()
        try:
            config = json.loads(state) if isinstance(state, (bytes, str)) else None
        except ValueError:
            config = None
        types = set(_decoder_types(config))
        if "ByteFallback" in types:
            return "byte_fallback"
        if "ByteLevel" in types:
            return "byte_level"
        return None

    @staticmethod
    def _token_to_bytes(token, stop_string_matching_mode, byte_decoder):
        """The bytes a vocabulary token stands for in byte modes (None when it is not a byte token)."""
        if stop_string_matching_mode == "byte_level":
            if byte_decoder is not None and all(c in byte_decoder for c in token):
                return bytes(byte_decoder[c] for c in token)
            return None
        if (stop_string_matching_mode == "byte_fallback" and len(token) == 6 and token.startswith("<0x")
                and token.endswith(">") and all(c in "0123456789abcdefABCDEF" for c in token[3:5])):
            return bytes([int(token[3:5], 16)])
        return None

    @staticmethod
    def _clean_vocab(tokenizer, mode, static_prefix="abcdef"):
        vocab = tokenizer.get_vocab()
        key = (id(tokenizer), len(vocab), mode)
        if key in _STOP_STRING_TOKEN_CACHE:
            _STOP_STRING_TOKEN_CACHE.move_to_end(key)
            return _STOP_STRING_TOKEN_CACHE[key]
        byte_decoder = {c: b for b, c in _bytes_to_unicode().items()} if mode == "byte_level" else None
        base = [tokenizer._convert_id_to_token(t) for t in tokenizer(static_prefix, add_special_tokens=False)["input_ids"]]
        texts = [b"" if mode else ""] * (max(vocab.values()) + 1)
        for token, index in vocab.items():
            text = StopStringCriteria._token_to_bytes(token, mode, byte_decoder)
            if text is None:
                text = tokenizer.convert_tokens_to_string(base + [token])
                text = text[text.index(static_prefix) + len(static_prefix):]
                if mode:
                    text = text.encode("utf-8")
            texts[index] = text
        _STOP_STRING_TOKEN_CACHE[key] = texts
        if len(_STOP_STRING_TOKEN_CACHE) > 8:
            _STOP_STRING_TOKEN_CACHE.popitem(last=False)
        return texts

    def _row_done(self, ids):
        texts = self._token_texts
        pieces = [texts[t] if 0 <= t < len(texts) else texts[0][:0] for t in ids[-self.maximum_token_len:]]
        if not pieces:
            return False
        joined = pieces[0][:0].join(pieces)
        last_len = len(pieces[-1])
        for target in self._targets:
            # an occurrence must end inside the last token: search the tail that could hold such an occurrence
            tail = joined[max(0, len(joined) - last_len - len(target) + 1):]
            start = tail.find(target)
            while start != -1:
                if start + len(target) > len(tail) - last_len:
                    return True
                start = tail.find(target, start + 1)
        return False

    def _done(self, ids, **kwargs):
        return np.array([self._row_done(row.tolist()) for row in ids], np.bool_)


class ConfidenceCriteria(StoppingCriteria):
    """Done when the probability the last step's scores gave the last token (of the first row) is below
    `assistant_confidence_threshold`; assisted decoding uses it to stop drafting early."""

    def __init__(self, assistant_confidence_threshold):
        self.assistant_confidence_threshold = assistant_confidence_threshold

    def __call__(self, input_ids, scores, **kwargs):
        logits = _as_numpy(scores[-1]).astype(np.float64)
        row = logits[0] - logits[0].max()
        probs = np.exp(row) / np.exp(row).sum()
        return bool(probs[int(_as_numpy(input_ids)[0, -1])] < self.assistant_confidence_threshold)


class StoppingCriteriaList(list):
    def __call__(self, input_ids, scores, **kwargs):
        done = np.zeros((input_ids.shape[0],), np.bool_)
        for criteria in self:
            done |= as_done_array(criteria(input_ids, scores, **kwargs), input_ids.shape[0])
        return Tensor(done)

    def host_done(self, input_ids, scores, **kwargs):
        """What `__call__` decides, for numpy `input_ids` (B, L), as a (B,) numpy bool array. Built-in criteria
        run on the ids directly; others get them as a tensor, as through `__call__`."""
        done = np.zeros((input_ids.shape[0],), np.bool_)
        ids_tensor = None
        for criteria in self:
            if isinstance(criteria, _HostCriteria) and type(criteria).__call__ is _HostCriteria.__call__:
                done |= criteria._done(input_ids, **kwargs)
                continue
            if ids_tensor is None:
                ids_tensor = Tensor(input_ids)
            done |= as_done_array(criteria(ids_tensor, scores, **kwargs), input_ids.shape[0])
        return done

    @property
    def max_length(self):
        for criteria in self:
            if isinstance(criteria, MaxLengthCriteria):
                return criteria.max_length
        return None


def validate_stopping_criteria(stopping_criteria, max_length):
    """A copy of `stopping_criteria` that contains a MaxLengthCriteria(max_length)."""
    criteria = deepcopy(stopping_criteria)
    if stopping_criteria.max_length is not None and stopping_criteria.max_length != max_length:
        warnings.warn("You set different `max_length` for stopping criteria and `max_length` parameter", UserWarning)
    elif stopping_criteria.max_length is None:
        criteria.append(MaxLengthCriteria(max_length=max_length))
    return criteria


__all__ = ["StoppingCriteria", "StoppingCriteriaList", "MaxLengthCriteria", "MaxTimeCriteria", "EosTokenCriteria",
           "StopStringCriteria", "ConfidenceCriteria", "validate_stopping_criteria"]
