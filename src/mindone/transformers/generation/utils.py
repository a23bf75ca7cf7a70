"""`GenerationMixin.generate()` with HF's semantics on MindSpore models.

Where the work happens:
- The model forward runs on device. With a `StaticCache` (the default for models that support it) the one-token
  decode step is compiled once with `mindspore.jit` and reused for every step and every later call with the same
  (batch, cache bucket); the prompt is prefilled by the same step in chunks of PREFILL_CHUNK tokens. Multimodal
  prompts are embedded in PyNative (vision towers, images merged in) and prefilled from those embeddings by a
  second compiled step on the same cache.
- Logits processors and token selection (argmax, beam top-k) run on device on (B, V) scores; sampling draws with
  `backend.functional.sample_categorical` (host numpy on CPU, see there why).
- Token ids, attention masks, position ids, stopping decisions and beam bookkeeping live on the host as numpy:
  they are tiny, and each step needs the new tokens on the host anyway (stopping, streaming).
"""

import copy
import inspect
import logging
import warnings
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Optional, Tuple

import mindspore as ms
import numpy as np
from mindspore import Tensor, ops
from transformers import GenerationConfig

from .. import tensor_interop
from ..backend import functional as F
from ..backend import compile_cache, native, native_decode, runtime
from ..cache_utils import Cache, DynamicCache, EncoderDecoderCache, EncoderDecoderStaticCache, StaticCache
from ..modeling_outputs import ModelOutput
from .logits_process import (
    EncoderNoRepeatNGramLogitsProcessor,
    EncoderRepetitionPenaltyLogitsProcessor,
    EpsilonLogitsWarper,
    EtaLogitsWarper,
    ExponentialDecayLengthPenalty,
    ForcedBOSTokenLogitsProcessor,
    ForcedEOSTokenLogitsProcessor,
    InfNanRemoveLogitsProcessor,
    LogitNormalization,
    LogitsProcessorList,
    MinLengthLogitsProcessor,
    MinNewTokensLengthLogitsProcessor,
    MinPLogitsWarper,
    NoBadWordsLogitsProcessor,
    NoRepeatNGramLogitsProcessor,
    PrefixConstrainedLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    SequenceBiasLogitsProcessor,
    SuppressTokensAtBeginLogitsProcessor,
    SuppressTokensLogitsProcessor,
    SynthIDTextWatermarkLogitsProcessor,
    TemperatureLogitsWarper,
    TopHLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
    TypicalLogitsWarper,
    UnbatchedClassifierFreeGuidanceLogitsProcessor,
    WatermarkLogitsProcessor,
    _as_numpy,
)
from .stopping_criteria import (
    EosTokenCriteria,
    MaxLengthCriteria,
    MaxTimeCriteria,
    StoppingCriteriaList,
    StopStringCriteria,
)

logger = logging.getLogger(__name__)

# model-agnostic forward kwargs that generate() accepts without the model naming them (HF's TransformersKwargs)
_MODEL_AGNOSTIC_KWARGS = {"output_attentions", "output_hidden_states", "position_ids", "num_items_in_batch",
                          "is_causal", "cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k", "seq_idx",
                          "output_router_logits"}
# the smallest static cache; larger ones are powers of two, so a process compiles at most log2(max_len) graphs
_MIN_STATIC_CACHE_LEN = 64
# prompt tokens per compiled prefill call: a prompt is left-padded to whole chunks, so prefill compiles one graph
PREFILL_CHUNK = 32
# compiled decode steps kept per model: each holds a StaticCache (memory) and a compiled graph
_MAX_COMPILED_STEPS = 4


@dataclass
class GenerateDecoderOnlyOutput(ModelOutput):
    sequences: Any = None
    scores: Optional[Tuple[Any, ...]] = None
    logits: Optional[Tuple[Any, ...]] = None
    attentions: Optional[Tuple[Any, ...]] = None
    hidden_states: Optional[Tuple[Any, ...]] = None
    past_key_values: Any = None


@dataclass
class GenerateEncoderDecoderOutput(ModelOutput):
    sequences: Any = None
    scores: Optional[Tuple[Any, ...]] = None
    logits: Optional[Tuple[Any, ...]] = None
    encoder_attentions: Optional[Tuple[Any, ...]] = None
    encoder_hidden_states: Optional[Tuple[Any, ...]] = None
    decoder_attentions: Optional[Tuple[Any, ...]] = None
    cross_attentions: Optional[Tuple[Any, ...]] = None
    decoder_hidden_states: Optional[Tuple[Any, ...]] = None
    past_key_values: Any = None


@dataclass
class GenerateBeamDecoderOnlyOutput(ModelOutput):
    sequences: Any = None
    sequences_scores: Any = None
    scores: Optional[Tuple[Any, ...]] = None
    logits: Optional[Tuple[Any, ...]] = None
    beam_indices: Any = None
    attentions: Optional[Tuple[Any, ...]] = None
    hidden_states: Optional[Tuple[Any, ...]] = None
    past_key_values: Any = None


@dataclass
class GenerateBeamEncoderDecoderOutput(ModelOutput):
    sequences: Any = None
    sequences_scores: Any = None
    scores: Optional[Tuple[Any, ...]] = None
    logits: Optional[Tuple[Any, ...]] = None
    beam_indices: Any = None
    encoder_attentions: Optional[Tuple[Any, ...]] = None
    encoder_hidden_states: Optional[Tuple[Any, ...]] = None
    decoder_attentions: Optional[Tuple[Any, ...]] = None
    cross_attentions: Optional[Tuple[Any, ...]] = None
    decoder_hidden_states: Optional[Tuple[Any, ...]] = None
    past_key_values: Any = None


def static_cache_length(needed: int) -> int:
    """The static cache bucket that holds `needed` positions: the next power of two, at least 64."""
    length = _MIN_STATIC_CACHE_LEN
    while length < needed:
        length *= 2
    return length


# model -> OrderedDict{(batch, cache_len, dtype): (StaticCache, compiled step)}; weak so models can be freed
_COMPILED_STEPS = weakref.WeakKeyDictionary()


def forget_compiled_steps(model):
    """Drops the model's compiled decode steps: needed after a change the traced graph baked in (adapters added,
    switched, merged or removed)."""
    _COMPILED_STEPS.pop(model, None)
    _COMPILED_PREFILL_STEPS.pop(model, None)
    _COMPILED_PARTS.pop(model, None)


# model -> its Parameters' (id, address) when its compiled steps were last looked up (`_forget_if_weights_moved`)
_PARAMETER_POINTERS = weakref.WeakKeyDictionary()


def _forget_if_weights_moved(model):
    """Drops the model's compiled steps if a Parameter was replaced or given new data (`set_data`, a reload) since
    they were last looked up: a compiled graph keeps reading the memory it was compiled with, so generate() would
    decode with the old weights. Checked when a generate() call asks for its step, not per token (reading the
    addresses costs ~1.5 us per Parameter)."""
    pointers = runtime.parameter_pointers(model.get_parameters())
    previous = _PARAMETER_POINTERS.get(model)
    if previous is not None and previous != pointers:
        logger.info("%s: %d Parameters have new data since its decode steps were compiled; recompiling them",
                    type(model).__name__, len(set(pointers) - set(previous)))
        forget_compiled_steps(model)
    _PARAMETER_POINTERS[model] = pointers


def compiled_decode_step(model, batch_size, cache_len, dtype, encoder_length=None, encoder_mask=False,
                         step_inputs=()):
    """(StaticCache, step) for the model: `step(input_ids (B,1), attention_mask (B,T), position_ids (B,1),
    cache_position (1,), *extra) -> logits (B,1,V)`, compiled by `mindspore.jit` at its first call and reused
    afterwards. `extra` are the tensors of the forward arguments named in `step_inputs` (a decoder-only model's
    `_decode_step_inputs`: inputs every step reads besides the cache, such as IDEFICS's image states).

    Encoder-decoder models (`encoder_length` = encoder positions) get an `EncoderDecoderStaticCache` and
    `step(decoder_input_ids (B,1), cache_position (1,), encoder_hidden_states (B,S,H)) -> logits (B,1,V)`; it runs
    after a PyNative prefill has projected the encoder output into the cache's cross-attention storage. With
    `encoder_mask` (models whose cross-attention reads the encoder's padding mask, `_decode_step_encoder_mask`) the
    step takes the (B, S) `attention_mask` as a fourth argument.

    The cache is created with the step and captured by it (its Parameters are written in place inside the graph), so
    both are kept together and reused across `generate` calls, until a Parameter of the model is replaced or given
    new data (`_forget_if_weights_moved`).
    """
    _forget_if_weights_moved(model)
    steps = _COMPILED_STEPS.setdefault(model, OrderedDict())
    step_names = tuple(step_inputs)
    key = (batch_size, cache_len, str(dtype), encoder_length, encoder_mask, step_names)
    if key in steps:
        steps.move_to_end(key)
        return steps[key]
    if encoder_length is not None:
        cache = EncoderDecoderStaticCache(model.config, cache_len, encoder_length, batch_size, dtype)

        if encoder_mask:
            def decode_step(decoder_input_ids, cache_position, encoder_hidden_states, attention_mask):
                return model(decoder_input_ids=decoder_input_ids, encoder_outputs=(encoder_hidden_states,),
                             attention_mask=attention_mask, past_key_values=cache, cache_position=cache_position,
                             use_cache=True, return_dict=True)["logits"]
        else:
            def decode_step(decoder_input_ids, cache_position, encoder_hidden_states):
                return model(decoder_input_ids=decoder_input_ids, encoder_outputs=(encoder_hidden_states,),
                             past_key_values=cache, cache_position=cache_position, use_cache=True,
                             return_dict=True)["logits"]
    else:
        cache = StaticCache(model.config, max_cache_len=cache_len, max_batch_size=batch_size, dtype=dtype)

        def decode_step(input_ids, attention_mask, position_ids, cache_position, *extra):
            step_kwargs = {}
            for i, name in enumerate(step_names):
                step_kwargs[name] = extra[i]
            return model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         past_key_values=cache, cache_position=cache_position, use_cache=True, logits_to_keep=1,
                         return_dict=True, **step_kwargs)["logits"]

    step = _CompiledStep(decode_step, model, cache)
    if encoder_length is None and not step_names:
        # a quantized Llama-style model's one-token steps as native kernel calls, without the graph executor's cost
        step = native_decode.wrap(model, cache, step)
    steps[key] = (cache, step)
    while len(steps) > _MAX_COMPILED_STEPS:
        steps.popitem(last=False)
    return steps[key]


def compiled_prefill_embeds_step(model, batch_size, cache_len, dtype):
    """(StaticCache, step) where `step(inputs_embeds (B,C,H), attention_mask (B,T), position_ids (B,C) or (3,B,C),
    cache_position (C,)) -> logits (B,1,V)` runs the language model on embeddings, compiled like the decode step
    and writing the same cache: a multimodal prompt is embedded (images merged in) in PyNative, then prefilled by
    this step in chunks, then decoded by `compiled_decode_step`'s step."""
    cache, _ = compiled_decode_step(model, batch_size, cache_len, dtype)
    steps = _COMPILED_PREFILL_STEPS.setdefault(model, {})
    key = (batch_size, cache_len, str(dtype))
    if key not in steps or steps[key].cache is not cache:
        def prefill_step(inputs_embeds, attention_mask, position_ids, cache_position):
            return model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids,
                         past_key_values=cache, cache_position=cache_position, use_cache=True, logits_to_keep=1,
                         return_dict=True)["logits"]

        steps[key] = _CompiledStep(prefill_step, model, cache)
    return cache, steps[key]


# model -> {(batch, cache_len, dtype): compiled embeddings prefill step}, each sharing its decode step's cache
_COMPILED_PREFILL_STEPS = weakref.WeakKeyDictionary()
# model -> {name: compiled step} of the parts generate()'s multimodal prefill runs compiled (vision towers)
_COMPILED_PARTS = weakref.WeakKeyDictionary()
# input signatures (shapes, patch grids) one compiled part keeps graphs for: past it, a fresh Cell drops the old graphs
_MAX_PART_SIGNATURES = 8


def run_compiled_part(model, name, fn, cell, *args):
    """`fn(*args)` compiled by `mindspore.jit` over `cell`'s Parameters, the graphs kept per (model, name):
    generate()'s multimodal prefill runs a vision tower through it (in PyNative every op costs ~25 us of dispatch).
    Tensor arguments are graph inputs; the others (patch grids, feature layer indices) are compile-time constants.
    Each distinct signature compiles once (through the persistent compile cache) and later calls with it reuse the
    graph, so repeated images of one size pay one compile; a signature past `_MAX_PART_SIGNATURES` distinct ones
    starts over with a fresh Cell (dropping the old graphs)."""
    parts = _COMPILED_PARTS.setdefault(model, {})
    step = parts.get(name)
    if step is None or (len(step._signatures) >= _MAX_PART_SIGNATURES
                        and _CompiledStep.signature(args) not in step._signatures):
        step = parts[name] = _CompiledStep(fn, cell, None)
    return step(*args)


class _CompiledStep(ms.nn.Cell):
    """`fn` compiled by `mindspore.jit` as the method of a Cell holding the model and the cache: MindSpore's compile
    cache binds the live Parameters only for a Cell (`backend.compile_cache`). The first call of each input
    signature (a compile) goes through the persistent compile cache."""

    def __init__(self, fn, model, cache):
        super().__init__(auto_prefix=False)  # the model's Parameter names stay as they are
        self.fn = fn
        self.model = model
        self.cache = cache
        self._signatures = set()

    @ms.jit
    def construct(self, *args):
        return self.fn(*args)

    def _key(self, signature):
        params = sorted((p.name, tuple(p.shape), str(p.dtype)) for p in self.get_parameters())
        library = native.library_path() if native.available() else None
        return compile_cache.graph_key(f"model={type(self.model).__module__}.{type(self.model).__qualname__}",
                                       f"training={self.model.training}", f"inputs={signature}",
                                       f"native={library}", f"config={self.model.config.to_json_string()}",
                                       f"parameters={params}")

    @staticmethod
    def signature(args):
        return tuple((tuple(a.shape), str(a.dtype)) if isinstance(a, Tensor) else repr(a) for a in args)

    def __call__(self, *args):
        signature = self.signature(args)
        if signature in self._signatures:
            return super().__call__(*args)
        # the step returns a logits tensor: native kernels may be traced into it (see runtime.native_ops_in_graph)
        with compile_cache.compiling(self._key(signature)), runtime.native_ops_in_graph():
            out = super().__call__(*args)
        self._signatures.add(signature)
        return out


class _ModelRunner:
    """Feeds the model the part of the running sequence it has not seen yet, keeping the attention mask, position
    ids and cache in step with the sequence. One instance per generate() call.
    """

    def __init__(self, model, model_kwargs, cache, use_cache, attention_mask, position_ids, compiled_step=None,
                 inputs_embeds=None, logits_to_keep_supported=True, slot_offset=0, eager_prefill=False,
                 prefill_embeds_step=None):
        self.model = model
        self.eager_prefill = eager_prefill
        # multimodal prompts: embedded in PyNative (`model._prefill_inputs_embeds`), prefilled by this compiled step
        self.prefill_embeds_step = prefill_embeds_step
        self.is_encoder_decoder = model.config.is_encoder_decoder
        self.model_kwargs = model_kwargs
        self.cache = cache
        self.use_cache = use_cache
        self.mask = attention_mask  # (B, L) numpy or None
        self.positions = position_ids  # (B, L) numpy or None
        self.compiled_step = compiled_step
        # compiled prefill runs in chunks of PREFILL_CHUNK tokens: the prompt is left-padded with `slot_offset`
        # masked slots so it fills whole chunks (sequence position i lives in cache slot slot_offset + i)
        self.slot_offset = slot_offset
        self.inputs_embeds = inputs_embeds  # prompt embeddings (decoder-only), used at the first call
        self.embeds_len = inputs_embeds.shape[1] if inputs_embeds is not None else 0
        self.logits_to_keep_supported = logits_to_keep_supported
        self.past = 0  # positions already in the cache
        self._slot_mask = None  # (numpy, Tensor) of the last compiled call's attention mask

    def _extend(self, length):
        """Grows the mask (ones) and position ids (last + 1, ...) to `length` columns."""
        if self.mask is not None and self.mask.shape[1] < length:
            extra = length - self.mask.shape[1]
            self.mask = np.concatenate([self.mask, np.ones((self.mask.shape[0], extra), self.mask.dtype)], 1)
        if self.positions is not None and self.positions.shape[1] < length:
            extra = length - self.positions.shape[1]
            nxt = self.positions[:, -1:] + np.arange(1, extra + 1)[None, :]
            self.positions = np.concatenate([self.positions, nxt], 1)

    def __call__(self, input_ids, logits_to_keep=1):
        """Runs the model on the new part of `input_ids` (B, L numpy); returns its output (logits (B, S', V))."""
        length = self.embeds_len + input_ids.shape[1]
        self._extend(length)
        start = self.past if self.use_cache else 0
        first = self.past == 0
        if self.is_encoder_decoder or self.eager_prefill:
            # the prefill runs in PyNative (it projects the encoder output into the cache, or reads the images),
            # then steps compile
            use_compiled = not first and length - start == 1
        else:
            use_compiled = first or length - start == 1
        if first and self.prefill_embeds_step is not None and logits_to_keep == 1:
            outputs = self._compiled_embeds(input_ids)
        elif self.compiled_step is not None and use_compiled and logits_to_keep == 1 \
                and self.model._decode_step_ready(self.model_kwargs):
            outputs = self._compiled(input_ids, start)
        else:
            outputs = self._eager(input_ids, start, length, first, logits_to_keep)
        self.model_kwargs = self.model._update_model_kwargs_for_generation(outputs, self.model_kwargs,
                                                                           use_cache=self.use_cache)
        if self.use_cache:
            self.past = length
            if isinstance(self.cache, StaticCache):
                self.cache.seen_tokens = self.slot_offset + length
            elif isinstance(self.cache, EncoderDecoderStaticCache):
                self.cache.self_attention_cache.seen_tokens = length
        return outputs

    def _slot_mask_tensor(self, batch, length):
        """The (B, T) mask of the cache slots: the left-padding slots masked, then the sequence's own mask."""
        offset = self.slot_offset
        mask = np.ones((batch, self.cache.get_max_cache_shape()), np.int64)
        mask[:, :offset] = 0
        if self.mask is not None:
            mask[:, offset:offset + length] = self.mask
        if self._slot_mask is None or not np.array_equal(self._slot_mask[0], mask):
            self._slot_mask = (mask, Tensor(mask))  # unchanged across decode steps (new slots were already ones)
        return self._slot_mask[1]

    def _compiled_embeds(self, input_ids):
        """The multimodal prefill: the prompt's embeddings with the images merged in (PyNative), then the language
        model through the compiled embeddings step in chunks, left-padded with zero embeddings in masked slots."""
        batch, length = input_ids.shape
        offset = self.slot_offset
        mask = self._slot_mask_tensor(batch, length)
        # the model's own entry converts numpy / list inputs (pixel_values, grids); the hook calls its parts directly
        kwargs = {k: tensor_interop.to_model_input(k, v) for k, v in self.model_kwargs.items()}
        embeds, positions = self.model._prefill_inputs_embeds(Tensor(input_ids), self.mask, kwargs)
        if positions is None:
            positions = self.positions if self.positions is not None else \
                np.broadcast_to(np.arange(length, dtype=np.int64), (batch, length))
        positions = _as_numpy(positions).astype(np.int64)
        if offset:
            pad = np.zeros(positions.shape[:-1] + (offset,), np.int64)
            positions = np.concatenate([pad, positions], -1)
            embeds = F.cat([ops.zeros((batch, offset, embeds.shape[-1]), embeds.dtype), embeds], 1)
        for c in range(0, offset + length, PREFILL_CHUNK):
            logits = self.prefill_embeds_step(embeds[:, c:c + PREFILL_CHUNK], mask,
                                              Tensor(np.ascontiguousarray(positions[..., c:c + PREFILL_CHUNK])),
                                              Tensor(np.arange(c, c + PREFILL_CHUNK, dtype=np.int64)))
        return ModelOutput_logits(logits=logits, past_key_values=self.cache)

    def _compiled(self, input_ids, start):
        """Prefill (in chunks) or one decode step through the compiled step, in cache-slot coordinates."""
        if self.is_encoder_decoder:
            encoder_outputs = self.model_kwargs["encoder_outputs"]
            encoder_states = encoder_outputs[0] if isinstance(encoder_outputs, tuple) else \
                encoder_outputs["last_hidden_state"]
            args = [Tensor(np.ascontiguousarray(input_ids[:, start:])), Tensor(np.array([start], np.int64)),
                    encoder_states]
            if self.model._decode_step_encoder_mask and self.model_kwargs.get("attention_mask") is not None:
                args.append(self.model_kwargs["attention_mask"])
            logits = self.compiled_step(*args)
            return ModelOutput_logits(logits=logits, past_key_values=self.cache)
        batch, length = input_ids.shape
        offset = self.slot_offset
        mask = self._slot_mask_tensor(batch, length)
        positions = self.positions if self.positions is not None else \
            np.broadcast_to(np.arange(length, dtype=np.int64), (batch, length))
        if start > 0:
            chunks = [(offset + start, input_ids[:, start:], positions[:, start:])]
        else:
            ids = np.concatenate([np.zeros((batch, offset), np.int64), input_ids], 1)
            pos = np.concatenate([np.zeros((batch, offset), np.int64), positions], 1)
            chunks = [(c, ids[:, c:c + PREFILL_CHUNK], pos[:, c:c + PREFILL_CHUNK])
                      for c in range(0, offset + length, PREFILL_CHUNK)]
        extra = [self.model_kwargs[key] for _, key in self.model._decode_step_inputs]
        for slot, ids, pos in chunks:
            logits = self.compiled_step(Tensor(np.ascontiguousarray(ids)), mask, Tensor(np.ascontiguousarray(pos)),
                                        Tensor(np.arange(slot, slot + ids.shape[1], dtype=np.int64)), *extra)
        return ModelOutput_logits(logits=logits, past_key_values=self.cache)

    def _eager(self, input_ids, start, length, first, logits_to_keep):
        kwargs = dict(self.model_kwargs)
        if self.is_encoder_decoder:
            if self.mask is not None:
                kwargs["decoder_attention_mask"] = Tensor(self.mask)
        else:
            if self.mask is not None:
                kwargs["attention_mask"] = Tensor(self.mask)
            if self.positions is not None:
                kwargs["position_ids"] = Tensor(self.positions)
            if first and self.inputs_embeds is not None:
                kwargs["inputs_embeds"] = self.inputs_embeds
        if self.logits_to_keep_supported:
            kwargs["logits_to_keep"] = logits_to_keep
        inputs = self.model.prepare_inputs_for_generation(
            Tensor(input_ids), past_key_values=self.cache if self.use_cache else None,
            cache_position=Tensor(np.arange(start, length, dtype=np.int64)), use_cache=self.use_cache,
            is_first_iteration=first, **kwargs)
        with tensor_interop.ids_checked():
            outputs = self.model(**inputs, return_dict=True)
        if self.use_cache and getattr(outputs, "past_key_values", None) is not None:
            self.cache = outputs.past_key_values
        return outputs

    def reorder_cache(self, beam_idx):
        """Moves the cache rows to the beams that continue them (`beam_idx` (B * num_beams,) int64 on device).

        Of an encoder-decoder cache only the self-attention part moves: beams move within their own batch item,
        whose rows all hold the same encoder output, so the cross-attention keys/values (the largest part: one row
        per encoder position) already sit in the right rows and copying them every step would only cost memory
        traffic.
        """
        if not self.use_cache or self.cache is None:
            return
        if hasattr(self.model, "_reorder_cache"):
            self.cache = self.model._reorder_cache(self.cache, beam_idx)
            return
        cache = getattr(self.cache, "self_attention_cache", self.cache)
        if not hasattr(cache, "reorder_cache"):
            raise ValueError(f"{self.model.__class__.__name__} cannot use beam search with a cache currently, "
                             "as the cache cannot be reordered")
        cache.reorder_cache(beam_idx)

    def rollback(self, length):
        """Forgets every position from `length` on (assisted decoding rejected some candidates)."""
        if self.use_cache:
            self.cache.crop(length)
            self.past = length
        if self.mask is not None:
            self.mask = self.mask[:, :length]
        if self.positions is not None:
            self.positions = self.positions[:, :length]


@dataclass
class ModelOutput_logits(ModelOutput):  # noqa: N801 - private: what a compiled step returns
    logits: Any = None
    past_key_values: Any = None


class GenerationMixin:
    """Adds HF's `generate()` to a model with a language-modelling head.

    Models may override `prepare_inputs_for_generation` (HF's hook) and set `_supports_static_cache = True` when their
    forward accepts a `StaticCache` with `cache_position` inside `mindspore.jit` (then decoding is compiled).
    """

    _supports_static_cache = False
    # generate() kwargs read only by the prefill (e.g. `pixel_values`): with any of them the prompt runs in PyNative
    # and only the one-token decode steps are compiled (they see token ids, the images are in the cache by then)
    _prefill_only_inputs = ()
    # models whose prefill-only inputs are merged into the prompt's embeddings define
    # `_prefill_inputs_embeds(input_ids, attention_mask, model_kwargs) -> (inputs_embeds, position_ids or None)`:
    # the language model then prefills through a compiled step too (`compiled_prefill_embeds_step`)
    _prefill_inputs_embeds = None
    # encoder-decoder models whose cross-attention reads the encoder's padding mask (`attention_mask`): the compiled
    # decode step then takes it too, and the encoder output is padded to a length bucket (positions the mask hides)
    # so that sources of different lengths share a compiled step
    _decode_step_encoder_mask = False
    # (forward argument, generate() model kwarg) pairs every compiled decode step of a decoder-only model takes as
    # graph inputs besides the ids, mask and positions (IDEFICS: the images' states and mask row, which the
    # cross-attention reads at each step); the step runs in PyNative while any of them is missing
    _decode_step_inputs = ()

    # ----------------------------------------------------------------------------------------------------------------
    # model-facing hooks
    # ----------------------------------------------------------------------------------------------------------------

    def prepare_inputs_for_generation(self, input_ids, past_key_values=None, attention_mask=None, inputs_embeds=None,
                                      cache_position=None, position_ids=None, use_cache=True, is_first_iteration=False,
                                      **kwargs):
        """The forward kwargs for one step: only the positions in `cache_position` are fed (the rest is cached).

        Args:
            input_ids: (B, L) the whole running sequence (decoder ids for encoder-decoder models).
            cache_position: (S,) absolute positions to compute now.
            attention_mask / position_ids: (B, L) for the whole sequence (decoder-only models).
            inputs_embeds: prompt embeddings, used instead of ids at the first iteration (decoder-only).
        """
        is_encoder_decoder = self.config.is_encoder_decoder
        new = cache_position.shape[0] if cache_position is not None else input_ids.shape[1]
        model_inputs = {}
        if not is_encoder_decoder and inputs_embeds is not None and is_first_iteration:
            model_inputs["input_ids"] = None
            model_inputs["inputs_embeds"] = inputs_embeds[:, -new:]
        else:
            key = "decoder_input_ids" if is_encoder_decoder else "input_ids"
            model_inputs[key] = input_ids[:, -new:] if input_ids.shape[1] > new else input_ids
        if position_ids is not None:
            model_inputs["position_ids"] = position_ids[:, -new:] if position_ids.shape[-1] > new else position_ids
        if is_encoder_decoder:
            if attention_mask is not None:
                model_inputs["attention_mask"] = attention_mask  # the encoder's padding mask
            decoder_attention_mask = kwargs.pop("decoder_attention_mask", None)
            if decoder_attention_mask is not None:
                model_inputs["decoder_attention_mask"] = decoder_attention_mask
        elif attention_mask is not None:
            model_inputs["attention_mask"] = attention_mask
        model_inputs["past_key_values"] = past_key_values
        model_inputs["use_cache"] = use_cache
        model_inputs["cache_position"] = cache_position
        for key, value in kwargs.items():
            if key not in model_inputs:
                model_inputs[key] = value
        return model_inputs

    def _update_model_kwargs_for_generation(self, outputs, model_kwargs, use_cache=True):
        """The model kwargs the next step gets, after a step gave `outputs` (HF's hook). generate() itself keeps the
        running ids, attention mask, positions and cache; models whose own inputs change from step to step (IDEFICS's
        image mask and image states) override this."""
        return model_kwargs

    def _decode_step_ready(self, model_kwargs):
        """Whether the compiled decode step can run the next one-token step: every `_decode_step_inputs` kwarg is
        there (else the step runs in PyNative)."""
        return all(model_kwargs.get(key) is not None for _, key in self._decode_step_inputs)

    def _generation_position_ids(self, input_ids, attention_mask, position_ids, model_kwargs):
        """generate()'s (B, L) position ids of the prompt (numpy), from which decoding continues one per token;
        models whose decode positions are offset from the token count (multimodal RoPE) adjust them here."""
        return position_ids

    def _expand_generation_kwargs(self, model_kwargs, expand, input_ids):
        """The forward kwargs for `expand` copies of every row (beams, return sequences), rows kept together;
        models whose inputs are not laid out by batch row (packed image patches) override it."""
        return {k: _repeat(v, expand) for k, v in model_kwargs.items()}

    # ----------------------------------------------------------------------------------------------------------------
    # configuration and validation
    # ----------------------------------------------------------------------------------------------------------------

    def _prepare_generation_config(self, generation_config, **kwargs):
        """generation_config (or a fresh one) <- the model's generation_config for unset values <- global defaults
        <- kwargs. Returns (config, kwargs that are not generation parameters)."""
        provided = generation_config is not None
        generation_config = copy.deepcopy(generation_config if provided else GenerationConfig())
        own = self.generation_config if self.generation_config is not None else GenerationConfig()
        generation_config.update(**own.to_dict(), defaults_only=True, allow_custom_entries=True)
        generation_config.update(**own._get_default_generation_params(), defaults_only=True)
        model_kwargs = generation_config.update(**kwargs)
        if generation_config.cache_implementation == "hybrid":
            generation_config.cache_implementation = None
        if generation_config.output_attentions:
            model_kwargs["output_attentions"] = True
        if generation_config.output_hidden_states:
            model_kwargs["output_hidden_states"] = True
        return generation_config, model_kwargs

    def _forward_parameters(self):
        return set(inspect.signature(self.construct).parameters)

    def _validate_model_kwargs(self, model_kwargs):
        """Unknown generate() kwargs (typos included) raise, as in HF."""
        kwargs = dict(model_kwargs)
        if self.config.is_encoder_decoder:
            kwargs.pop("decoder_input_ids", None)
        accepted = set(inspect.signature(self.prepare_inputs_for_generation).parameters)
        if "kwargs" in accepted or "model_kwargs" in accepted:
            accepted |= self._forward_parameters()
        if self.config.is_encoder_decoder:
            for part, prefix in (("encoder", ""), ("decoder", "decoder_")):
                cell = getattr(self, part, None)
                if cell is None and getattr(self, "base_model", None) is not None:
                    cell = getattr(self.base_model, part, None)
                if cell is not None:
                    accepted |= {prefix + p for p in inspect.signature(cell.construct).parameters}
        unused = [k for k, v in kwargs.items()
                  if v is not None and k not in accepted and k not in _MODEL_AGNOSTIC_KWARGS]
        if unused:
            raise ValueError(f"The following `model_kwargs` are not used by the model: {unused} (note: typos in the "
                             "generate arguments will also show up in this list)")

    @staticmethod
    def _special_tokens(generation_config, kwargs_has_attention_mask, batch_size, is_encoder_decoder):
        """Normalises bos/eos/pad/decoder-start ids (eos always a list) into private attributes, as HF does."""
        eos = generation_config.eos_token_id
        if eos is not None:
            eos = [int(e) for e in _as_numpy(eos).reshape(-1)] if not isinstance(eos, int) else [eos]
        pad = generation_config.pad_token_id
        bos = generation_config.bos_token_id
        start = generation_config.decoder_start_token_id
        if is_encoder_decoder and start is None:
            start = bos
        if pad is None and eos is not None:
            if not kwargs_has_attention_mask and batch_size > 1:
                logger.warning("The attention mask and the pad token id were not set, with a batched input. As a "
                               "consequence, you may observe unexpected behavior. Please pass your input's "
                               "`attention_mask` to obtain reliable results.")
            pad = eos[0]
        if is_encoder_decoder and start is None:
            raise ValueError("`decoder_start_token_id` or `bos_token_id` has to be defined for encoder-decoder "
                             "generation.")
        if eos is not None and any(e < 0 for e in eos):
            logger.warning("`eos_token_id` should consist of positive integers, but is %s. Your generation will not "
                           "stop until the maximum length is reached. Depending on other flags, it may even crash.",
                           eos)
        generation_config._eos_token_tensor = eos
        generation_config._pad_token_tensor = pad
        generation_config._bos_token_tensor = bos
        generation_config._decoder_start_token_tensor = start

    def _prepare_generated_length(self, generation_config, has_default_max_length, has_default_min_length,
                                  input_ids_length):
        if generation_config.max_new_tokens is not None:
            if not has_default_max_length and generation_config.max_length is not None:
                logger.warning("Both `max_new_tokens` (=%s) and `max_length`(=%s) seem to have been set. "
                               "`max_new_tokens` will take precedence.", generation_config.max_new_tokens,
                               generation_config.max_length)
            generation_config.max_length = generation_config.max_new_tokens + input_ids_length
        elif has_default_max_length:
            generation_config.max_length = generation_config.max_length + input_ids_length
            max_positions = getattr(self.config, "max_position_embeddings", None)
            if max_positions is not None:
                generation_config.max_length = min(generation_config.max_length, max_positions)
        if generation_config.min_new_tokens is not None:
            generation_config.min_length = generation_config.min_new_tokens + input_ids_length
        if input_ids_length >= generation_config.max_length:
            name = "decoder_input_ids" if self.config.is_encoder_decoder else "input_ids"
            raise ValueError(f"Input length of {name} is {input_ids_length}, but `max_length` is set to "
                             f"{generation_config.max_length}. This can lead to unexpected behavior. You should "
                             "consider increasing `max_length` or, better yet, setting `max_new_tokens`.")
        return generation_config

    def _get_logits_processor(self, generation_config, input_ids_seq_length, encoder_input_ids=None,
                              prefix_allowed_tokens_fn=None, logits_processor=None, padding_lengths=None,
                              negative_prompt_ids=None, negative_prompt_attention_mask=None):
        """HF's processor list, in HF's order; user processors are merged in (same type as a default one raises)."""
        gc = generation_config
        eos = gc._eos_token_tensor
        processors = LogitsProcessorList()
        if gc.guidance_scale is not None and gc.guidance_scale != 1:
            processors.append(UnbatchedClassifierFreeGuidanceLogitsProcessor(
                gc.guidance_scale, self, unconditional_ids=negative_prompt_ids,
                unconditional_attention_mask=negative_prompt_attention_mask, use_cache=gc.use_cache))
        has_encoder_input_ids = encoder_input_ids is not None and encoder_input_ids.ndim == 2 and not (
            _as_numpy(encoder_input_ids) < 0).any()
        if gc.sequence_bias is not None:
            processors.append(SequenceBiasLogitsProcessor(sequence_bias=gc.sequence_bias))
        if gc.encoder_repetition_penalty is not None and gc.encoder_repetition_penalty != 1.0:
            if has_encoder_input_ids:
                processors.append(EncoderRepetitionPenaltyLogitsProcessor(gc.encoder_repetition_penalty,
                                                                          encoder_input_ids))
            else:
                warnings.warn("Passing `encoder_repetition_penalty` requires some form of `input_ids` to be passed "
                              "to `generate`, ignoring the argument.", UserWarning)
        if gc.repetition_penalty is not None and gc.repetition_penalty != 1.0:
            processors.append(RepetitionPenaltyLogitsProcessor(gc.repetition_penalty,
                                                               prompt_ignore_length=padding_lengths))
        if gc.no_repeat_ngram_size is not None and gc.no_repeat_ngram_size > 0:
            processors.append(NoRepeatNGramLogitsProcessor(gc.no_repeat_ngram_size))
        if gc.encoder_no_repeat_ngram_size is not None and gc.encoder_no_repeat_ngram_size > 0:
            if has_encoder_input_ids:
                processors.append(EncoderNoRepeatNGramLogitsProcessor(gc.encoder_no_repeat_ngram_size,
                                                                      encoder_input_ids))
            else:
                warnings.warn("Passing `encoder_no_repeat_ngram_size` requires some form of `input_ids` to be passed "
                              "to `generate`, ignoring the argument.", UserWarning)
        if gc.bad_words_ids is not None:
            processors.append(NoBadWordsLogitsProcessor(gc.bad_words_ids, eos))
        if gc.min_length is not None and eos is not None and gc.min_length > 0:
            processors.append(MinLengthLogitsProcessor(gc.min_length, eos))
        if gc.min_new_tokens is not None and eos is not None and gc.min_new_tokens > 0:
            processors.append(MinNewTokensLengthLogitsProcessor(input_ids_seq_length, gc.min_new_tokens, eos))
        if prefix_allowed_tokens_fn is not None:
            processors.append(PrefixConstrainedLogitsProcessor(prefix_allowed_tokens_fn, gc.num_beams))
        if gc.forced_bos_token_id is not None:
            processors.append(ForcedBOSTokenLogitsProcessor(gc.forced_bos_token_id))
        if gc.forced_eos_token_id is not None:
            processors.append(ForcedEOSTokenLogitsProcessor(gc.max_length, gc.forced_eos_token_id))
        if gc.remove_invalid_values is True:
            processors.append(InfNanRemoveLogitsProcessor())
        if gc.exponential_decay_length_penalty is not None:
            processors.append(ExponentialDecayLengthPenalty(gc.exponential_decay_length_penalty, eos,
                                                            input_ids_seq_length))
        if gc.suppress_tokens is not None:
            processors.append(SuppressTokensLogitsProcessor(gc.suppress_tokens))
        if gc.begin_suppress_tokens is not None:
            begin = input_ids_seq_length
            if not (input_ids_seq_length > 1 or gc.forced_bos_token_id is None):
                begin += 1
            processors.append(SuppressTokensAtBeginLogitsProcessor(gc.begin_suppress_tokens, begin))
        processors = _merge(processors, logits_processor)
        if gc.do_sample:
            # beam sampling must keep at least one non-EOS continuation per beam
            keep = (len(eos) + 1 if eos is not None else 2) if gc.num_beams > 1 else 1
            if gc.temperature is not None and gc.temperature != 1.0:
                processors.append(TemperatureLogitsWarper(gc.temperature))
            if getattr(gc, "top_h", None) is not None:
                processors.append(TopHLogitsWarper(top_h=gc.top_h))
            if gc.top_k is not None and gc.top_k != 0:
                processors.append(TopKLogitsWarper(top_k=gc.top_k, min_tokens_to_keep=keep))
            if gc.top_p is not None and gc.top_p < 1.0:
                processors.append(TopPLogitsWarper(top_p=gc.top_p, min_tokens_to_keep=keep))
            if gc.min_p is not None:
                processors.append(MinPLogitsWarper(min_p=gc.min_p, min_tokens_to_keep=keep))
            if gc.typical_p is not None and gc.typical_p < 1.0:
                processors.append(TypicalLogitsWarper(mass=gc.typical_p, min_tokens_to_keep=keep))
            if gc.epsilon_cutoff is not None and 0.0 < gc.epsilon_cutoff < 1.0:
                processors.append(EpsilonLogitsWarper(epsilon=gc.epsilon_cutoff, min_tokens_to_keep=keep))
            if gc.eta_cutoff is not None and 0.0 < gc.eta_cutoff < 1.0:
                processors.append(EtaLogitsWarper(epsilon=gc.eta_cutoff, min_tokens_to_keep=keep))
        # watermarking comes after every other processor, as in HF
        if gc.watermarking_config is not None:
            processors.append(_watermark_processor(gc.watermarking_config, self.config.get_text_config().vocab_size))
        if gc.renormalize_logits is True:
            processors.append(LogitNormalization())
        return processors

    def _get_stopping_criteria(self, generation_config, stopping_criteria, tokenizer=None):
        criteria = StoppingCriteriaList()
        if generation_config.max_length is not None:
            criteria.append(MaxLengthCriteria(generation_config.max_length,
                                              getattr(self.config, "max_position_embeddings", None)))
        if generation_config.max_time is not None:
            criteria.append(MaxTimeCriteria(max_time=generation_config.max_time))
        if generation_config.stop_strings is not None:
            if tokenizer is None:
                raise ValueError("There are one or more stop strings, either in the arguments to `generate` or in the "
                                 "model's generation config, but we could not locate a tokenizer. When generating "
                                 "with stop strings, you must pass the model's tokenizer to the `tokenizer` argument "
                                 "of `generate`.")
            criteria.append(StopStringCriteria(stop_strings=generation_config.stop_strings, tokenizer=tokenizer))
        if generation_config._eos_token_tensor is not None:
            criteria.append(EosTokenCriteria(eos_token_id=generation_config._eos_token_tensor))
        return _merge(criteria, stopping_criteria)

    # ----------------------------------------------------------------------------------------------------------------
    # generate
    # ----------------------------------------------------------------------------------------------------------------

    @runtime.serialized
    def generate(self, inputs=None, generation_config=None, logits_processor=None, stopping_criteria=None,
                 prefix_allowed_tokens_fn=None, synced_gpus=None, assistant_model=None, streamer=None,
                 negative_prompt_ids=None, negative_prompt_attention_mask=None, **kwargs):
        """Generates token ids (HF's `generate`): greedy, multinomial sampling, beam search, beam sampling, or
        assisted decoding (prompt lookup, `assistant_model`), chosen by the generation config.

        Args:
            inputs: (B, L) prompt ids (MindSpore tensor, numpy array or nested list); for encoder-decoder models, the
                encoder input. None starts from `bos_token_id`.
            generation_config: a `transformers.GenerationConfig`; unset values come from `model.generation_config`.
            logits_processor / stopping_criteria: extra `LogitsProcessor`s / `StoppingCriteria` appended to the ones
                the config implies.
            prefix_allowed_tokens_fn: `fn(batch_id, input_ids_row) -> allowed token ids`.
            streamer: a `TextStreamer`-like object receiving `put(token_ids)` / `end()` (not with beam search).
            assistant_model: a smaller decoder-only model with the same tokenizer that drafts tokens for this one to
                verify (batch size 1).
            negative_prompt_ids / negative_prompt_attention_mask: the unconditional prompt of classifier-free
                guidance (`guidance_scale`); by default the prompt's last token.
            kwargs: generation parameters (`max_new_tokens=`, `do_sample=`, ...), `tokenizer=` (for
                `stop_strings`), or model inputs (`attention_mask=`, `encoder_outputs=`, ...).

        Returns:
            (B * num_return_sequences, L') int64 tensor of prompt + new ids (new ids only for encoder-decoder models
            and for `inputs_embeds` prompts), or a `Generate*Output` when `return_dict_in_generate=True`.

        Decoding speed: with `cache_implementation="static"` (the default for models that support it) the decode
        step runs as a compiled graph; `disable_compile=True` keeps it in PyNative, `cache_implementation="dynamic"`
        uses a growing cache in PyNative.

        Threads: calls from several threads are safe and run one at a time (`backend.runtime.execution_lock()`, held
        for the whole call): MindSpore's compiler and a compiled step's cache cannot be shared by two running calls.
        """
        tokenizer = kwargs.pop("tokenizer", None)
        if kwargs.pop("assistant_tokenizer", None) is not None:
            raise ValueError("`assistant_tokenizer` (universal assisted decoding, an assistant with another "
                             "vocabulary) is not supported by mindone.transformers; the assistant must share the "
                             "model's tokenizer")
        if assistant_model is not None and (self.config.is_encoder_decoder
                                            or assistant_model.config.is_encoder_decoder):
            raise ValueError("`assistant_model` is supported for decoder-only models only by mindone.transformers")
        has_default_max_length = kwargs.get("max_length") is None and (
            generation_config is None or generation_config.max_length is None) and (
            self.generation_config is None or self.generation_config.max_length is None)
        has_default_min_length = kwargs.get("min_length") is None and (
            generation_config is None or generation_config.min_length is None) and (
            self.generation_config is None or self.generation_config.min_length is None)
        generation_config, model_kwargs = self._prepare_generation_config(generation_config, **kwargs)
        mode = generation_config.get_generation_mode(assistant_model)
        self._validate_model_kwargs(model_kwargs)
        if streamer is not None and generation_config.num_beams > 1:
            raise ValueError("`streamer` cannot be used with beam search (yet!). Make sure that `num_beams` is set "
                             "to 1.")
        if mode not in ("greedy_search", "sample", "beam_search", "beam_sample", "assisted_generation"):
            raise ValueError(f"generation mode {mode!r} is not supported by mindone.transformers; supported: greedy, "
                             "sampling, beam search, beam sampling, prompt lookup and assistant-model decoding")
        if mode == "assisted_generation" and generation_config.num_return_sequences > 1:
            raise ValueError("num_return_sequences has to be 1 when doing assisted generate, but is "
                             f"{generation_config.num_return_sequences}.")

        is_encoder_decoder = bool(self.config.is_encoder_decoder)
        forward_params = self._forward_parameters()
        inputs_embeds = model_kwargs.pop("inputs_embeds", None)
        encoder_inputs = None
        if is_encoder_decoder and self.main_input_name != "input_ids":
            # an encoder fed by something other than token ids (pixel_values): given to the encoder as it is;
            # `input_ids` are then the decoder's prompt, as in HF
            encoder_inputs = _encoder_inputs(inputs, model_kwargs, self.main_input_name)
            inputs = None
            if model_kwargs.get("input_ids") is not None and model_kwargs.get("decoder_input_ids") is None:
                model_kwargs["decoder_input_ids"] = model_kwargs.pop("input_ids")
        input_ids = _input_ids(inputs, model_kwargs, self.main_input_name, inputs_embeds)
        # the prompt's ids are checked once, here on the host; the decode loop feeds the model ids it made itself
        vocab_size = tensor_interop.embedding_rows(self)
        tensor_interop.check_token_ids(self.main_input_name, input_ids, vocab_size)
        kwargs_has_attention_mask = model_kwargs.get("attention_mask") is not None
        given_encoder_outputs = model_kwargs.get("encoder_outputs") if is_encoder_decoder else None
        if input_ids is not None:
            batch_size = input_ids.shape[0]
        elif inputs_embeds is not None:
            batch_size = inputs_embeds.shape[0]
        elif encoder_inputs is not None:
            batch_size = encoder_inputs.shape[0]
        elif given_encoder_outputs is not None:
            batch_size = _encoder_last_state(given_encoder_outputs).shape[0]
        else:
            batch_size = 1
        self._special_tokens(generation_config, kwargs_has_attention_mask, batch_size, is_encoder_decoder)
        gc = generation_config
        if input_ids is None and inputs_embeds is None and encoder_inputs is None and given_encoder_outputs is None:
            if gc._bos_token_tensor is None:
                raise ValueError("`bos_token_id` has to be defined when no `input_ids` are provided.")
            input_ids = np.full((1, 1), gc._bos_token_tensor, np.int64)
            batch_size = 1
        if input_ids is not None and input_ids.shape[1] == 0 and inputs_embeds is None and not is_encoder_decoder:
            raise ValueError(f"`input_ids` is empty (shape {tuple(input_ids.shape)}): pass at least one token, or "
                             "None to start from `bos_token_id`.")

        attention_mask = model_kwargs.pop("attention_mask", None)
        attention_mask = _as_numpy(attention_mask).astype(np.int64) if attention_mask is not None else None
        if not is_encoder_decoder:
            if attention_mask is None and "attention_mask" in forward_params and inputs_embeds is None:
                attention_mask = _infer_attention_mask(input_ids, gc._pad_token_tensor, gc._eos_token_tensor)
            if attention_mask is not None and attention_mask.ndim != 2:
                raise ValueError("`attention_mask` passed to `generate` must be 2D.")
            if batch_size > 1 and gc._pad_token_tensor is not None and attention_mask is not None \
                    and (attention_mask[:, -1] == 0).any():
                logger.warning("A decoder-only architecture is being used, but right-padding was detected! For "
                               "correct generation results, please set `padding_side='left'` when initializing the "
                               "tokenizer.")

        encoder_outputs = None
        if is_encoder_decoder:
            if attention_mask is not None:
                model_kwargs["attention_mask"] = Tensor(attention_mask)
            encoder_outputs = model_kwargs.get("encoder_outputs")
            if encoder_outputs is None:
                encoder_outputs = self._encode(encoder_inputs if encoder_inputs is not None else input_ids,
                                               inputs_embeds, model_kwargs, gc)
                model_kwargs["encoder_outputs"] = encoder_outputs
            encoder_input_ids = input_ids
            input_ids, decoder_mask = self._decoder_start_ids(batch_size, model_kwargs, gc)
            tensor_interop.check_token_ids("decoder_input_ids", input_ids, vocab_size)
            attention_mask = decoder_mask
            inputs_embeds = None
        else:
            encoder_input_ids = input_ids

        position_ids = model_kwargs.pop("position_ids", None)
        if position_ids is not None:
            position_ids = _as_numpy(position_ids).astype(np.int64)
        elif "position_ids" in forward_params and not is_encoder_decoder:
            length = input_ids.shape[1] if inputs_embeds is None else inputs_embeds.shape[1]
            if attention_mask is not None:
                position_ids = np.where(attention_mask == 0, 0, np.cumsum(attention_mask, -1) - 1).astype(np.int64)
            else:
                position_ids = np.broadcast_to(np.arange(length, dtype=np.int64), (batch_size, length)).copy()
            if input_ids is not None:
                position_ids = self._generation_position_ids(input_ids, attention_mask, position_ids, model_kwargs)

        expand = max(gc.num_beams, gc.num_return_sequences)
        if expand > 1:
            model_kwargs = self._expand_generation_kwargs(model_kwargs, expand, input_ids)
            input_ids = np.repeat(input_ids, expand, 0)
            attention_mask = np.repeat(attention_mask, expand, 0) if attention_mask is not None else None
            position_ids = np.repeat(position_ids, expand, 0) if position_ids is not None else None
            if inputs_embeds is not None:
                inputs_embeds = _repeat(inputs_embeds, expand)

        if streamer is not None:
            streamer.put(input_ids)
        input_ids_length = input_ids.shape[1]
        if inputs_embeds is not None:
            input_ids_length += inputs_embeds.shape[1]
        self._prepare_generated_length(gc, has_default_max_length, has_default_min_length, input_ids_length)
        if has_default_max_length and gc.max_new_tokens is None:
            logger.warning("Using the model-agnostic default `max_length` (=%d) to control the generation length. "
                           "We recommend setting `max_new_tokens` to control the maximum length of the generation.",
                           gc.max_length)

        padding_lengths = None
        if not is_encoder_decoder and attention_mask is not None:
            padding_lengths = (attention_mask != 0).astype(np.int32).argmax(1)
        processors = self._get_logits_processor(gc, input_ids_length, encoder_input_ids, prefix_allowed_tokens_fn,
                                                logits_processor, padding_lengths, negative_prompt_ids,
                                                negative_prompt_attention_mask)
        criteria = self._get_stopping_criteria(gc, stopping_criteria, tokenizer)

        use_cache = bool(gc.use_cache) or inputs_embeds is not None
        runner = self._make_runner(gc, mode, model_kwargs, use_cache, attention_mask, position_ids, inputs_embeds,
                                   input_ids.shape[0], input_ids.shape[1], forward_params)
        if mode in ("beam_search", "beam_sample"):
            result = self._beam_search(input_ids, runner, processors, criteria, gc)
        elif mode == "assisted_generation":
            if assistant_model is not None:
                candidates = _AssistantCandidates(assistant_model, gc)
            else:
                candidates = _PromptLookupCandidates(gc)
            result = self._assisted_decoding(input_ids, runner, processors, criteria, gc, candidates, streamer)
        else:
            result = self._sample(input_ids, runner, processors, criteria, gc, streamer)
        if gc.return_dict_in_generate and is_encoder_decoder:
            result.encoder_attentions = encoder_outputs.get("attentions") if gc.output_attentions else None
            result.encoder_hidden_states = encoder_outputs.get("hidden_states") if gc.output_hidden_states else None
        return result

    def _encode(self, encoder_inputs, inputs_embeds, model_kwargs, gc):
        """The encoder's output for `encoder_inputs` (token ids as numpy, or an already converted main input such
        as pixel_values) or `inputs_embeds`."""
        encoder = self.get_encoder()
        accepted = set(inspect.signature(encoder.construct).parameters)
        skip = ("decoder_", "cross_attn", "use_cache", "past_key_values", "cache_params")
        encoder_kwargs = {k: v for k, v in model_kwargs.items() if not k.startswith(skip)}
        if "kwargs" not in accepted:
            encoder_kwargs = {k: v for k, v in encoder_kwargs.items() if k in accepted}
        encoder_kwargs.update(output_attentions=gc.output_attentions, output_hidden_states=gc.output_hidden_states,
                              return_dict=True)
        if inputs_embeds is not None:
            encoder_kwargs["inputs_embeds"] = inputs_embeds
        else:
            encoder_kwargs[self.main_input_name] = encoder_inputs if isinstance(encoder_inputs, Tensor) \
                else Tensor(encoder_inputs)
        with tensor_interop.ids_checked():
            return encoder(**encoder_kwargs)

    @staticmethod
    def _decoder_start_ids(batch_size, model_kwargs, gc):
        """(decoder ids starting with decoder_start_token_id, decoder attention mask or None) on the host."""
        start = gc._decoder_start_token_tensor
        start = np.asarray(_as_numpy(start), np.int64)
        if start.ndim == 1 and start.shape[0] != 1:
            if start.shape[0] != batch_size:
                raise ValueError(f"`decoder_start_token_id` expected to have length {batch_size} but got "
                                 f"{start.shape[0]}")
            start = start.reshape(-1, 1)
        else:
            start = np.full((batch_size, 1), int(start.reshape(-1)[0]), np.int64)
        decoder_ids = model_kwargs.pop("decoder_input_ids", None)
        decoder_mask = model_kwargs.pop("decoder_attention_mask", None)
        decoder_mask = _as_numpy(decoder_mask).astype(np.int64) if decoder_mask is not None else None
        if decoder_ids is None:
            return start, decoder_mask
        decoder_ids = _as_numpy(decoder_ids).astype(np.int64)
        if (decoder_ids[:, 0] != start[:, 0]).all():
            decoder_ids = np.concatenate([start, decoder_ids], -1)
            if decoder_mask is not None:
                decoder_mask = np.concatenate([np.ones_like(decoder_mask[:, :1]), decoder_mask], -1)
        return decoder_ids, decoder_mask

    def _make_runner(self, gc, mode, model_kwargs, use_cache, attention_mask, position_ids, inputs_embeds, batch,
                     prompt_length, forward_params):
        cache = model_kwargs.pop("past_key_values", None)
        compiled = prefill_embeds_step = None
        slot_offset = 0
        # inputs only the prompt reads (images): the prefill runs in PyNative with them, then decoding compiles
        eager_prefill = any(model_kwargs.get(name) is not None for name in self._prefill_only_inputs)
        implementation = gc.cache_implementation
        if implementation not in (None, "static", "dynamic"):
            raise ValueError(f"cache_implementation={implementation!r} is not supported by mindone.transformers; "
                             "use 'static' (compiled decoding) or 'dynamic'")
        if use_cache and cache is None:
            if self.config.is_encoder_decoder and self._supports_static_cache and implementation != "dynamic" \
                    and mode != "assisted_generation" and _wants_compile(gc) and attention_mask is None:
                encoder_length = _encoder_last_state(model_kwargs["encoder_outputs"]).shape[1]
                if self._decode_step_encoder_mask:
                    # every source length would compile its own step: the encoder output is padded to a bucket
                    # whose extra positions the encoder mask hides, so one step serves all lengths of the bucket
                    encoder_length = static_cache_length(encoder_length)
                    _pad_encoder_output(model_kwargs, encoder_length)
                encoder_mask = self._decode_step_encoder_mask and model_kwargs.get("attention_mask") is not None
                cache, compiled = compiled_decode_step(self, batch, static_cache_length(gc.max_length), self.dtype,
                                                       encoder_length=encoder_length, encoder_mask=encoder_mask)
            elif self.config.is_encoder_decoder:
                cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
            elif implementation == "dynamic" or mode == "assisted_generation" or not self._supports_static_cache:
                if implementation == "static":
                    raise ValueError(f"{type(self).__name__} does not support a static cache "
                                     "(cache_implementation='static')")
                cache = DynamicCache(config=self.config)
            else:
                embeds = inputs_embeds.shape[1] if inputs_embeds is not None else 0
                compile_now = _wants_compile(gc) and inputs_embeds is None
                embeds_prefill = compile_now and eager_prefill and self._prefill_inputs_embeds is not None \
                    and mode != "assisted_generation"
                if compile_now and (not eager_prefill or embeds_prefill):
                    slot_offset = -prompt_length % PREFILL_CHUNK
                cache_len = static_cache_length(slot_offset + gc.max_length + embeds)
                if embeds_prefill:
                    cache, prefill_embeds_step = compiled_prefill_embeds_step(self, batch, cache_len, self.dtype)
                if compile_now:
                    cache, compiled = compiled_decode_step(self, batch, cache_len, self.dtype,
                                                           step_inputs=[name for name, _ in self._decode_step_inputs])
                else:
                    cache = StaticCache(self.config, max_cache_len=cache_len, max_batch_size=batch,
                                        dtype=self.dtype)
        elif use_cache and not isinstance(cache, Cache):
            raise ValueError(f"past_key_values must be a Cache (DynamicCache, StaticCache, EncoderDecoderCache), got "
                             f"{type(cache).__name__}")
        if isinstance(cache, EncoderDecoderStaticCache):
            cache.reset()
        if isinstance(cache, StaticCache):
            # a reused cache holds the previous call's keys; a fully padded row attends to every slot uniformly,
            # so stale slots must be zero (as in a fresh cache) for its output not to depend on earlier calls
            cache.reset()
            if cache.get_max_cache_shape() < slot_offset + gc.max_length:
                raise ValueError(f"the StaticCache holds {cache.get_max_cache_shape()} positions but generation may "
                                 f"reach max_length={gc.max_length}")
        return _ModelRunner(self, model_kwargs, cache, use_cache, attention_mask, position_ids, compiled,
                            inputs_embeds=inputs_embeds, logits_to_keep_supported="logits_to_keep" in forward_params,
                            slot_offset=slot_offset, eager_prefill=eager_prefill,
                            prefill_embeds_step=prefill_embeds_step)

    # ----------------------------------------------------------------------------------------------------------------
    # decoding strategies
    # ----------------------------------------------------------------------------------------------------------------

    def _sample(self, input_ids, runner, logits_processor, stopping_criteria, gc, streamer=None):
        """Greedy decoding or multinomial sampling, one token per step."""
        pad = gc._pad_token_tensor
        has_eos_stopping = any(hasattr(c, "eos_token_id") for c in stopping_criteria)
        if has_eos_stopping and pad is None:
            raise ValueError("If `eos_token_id` is defined, make sure that `pad_token_id` is defined.")
        record = _Recorder(gc, self.config.is_encoder_decoder)
        rng = _host_generator() if gc.do_sample else None
        unfinished = np.ones((input_ids.shape[0],), np.bool_)
        while True:
            outputs = runner(input_ids)
            logits = F.cast(_last_position(outputs.logits), ms.float32)
            ids = Tensor(input_ids)
            scores = logits_processor(ids, logits)
            record.step(scores, logits, outputs)
            if gc.do_sample:
                next_tokens = F.sample_categorical(F.softmax(scores, -1), 1, rng).reshape(-1).asnumpy()
            else:
                next_tokens = F.argmax_to_numpy(scores)
            next_tokens = next_tokens.astype(np.int64)
            if has_eos_stopping:
                next_tokens = np.where(unfinished, next_tokens, pad)
            input_ids = np.concatenate([input_ids, next_tokens[:, None]], 1)
            if streamer is not None:
                streamer.put(next_tokens)
            unfinished &= ~stopping_criteria.host_done(input_ids, record.scores)
            if not unfinished.any():
                break
        if streamer is not None:
            streamer.end()
        return record.result(Tensor(input_ids), runner.cache)

    def _beam_search(self, input_ids, runner, logits_processor, stopping_criteria, gc):
        """HF's vectorised beam search (and beam sampling): top-k over num_beams * vocab candidates on device, the
        bookkeeping of running and finished hypotheses on the host in float32, exactly as HF orders it."""
        num_beams = gc.num_beams
        batch_size = input_ids.shape[0] // num_beams
        cur_len = prompt_len = input_ids.shape[1]
        max_length = gc.max_length
        length_penalty = gc.length_penalty
        early_stopping = gc.early_stopping
        eos = gc._eos_token_tensor
        pad = gc._pad_token_tensor
        beams_to_keep = max(2, 1 + (len(eos) if eos is not None else 0)) * num_beams
        top_num_beam_mask = np.arange(beams_to_keep) < num_beams
        # HF's fill value, including its precedence: (pad or eos[0]) if eos is not None else -1
        fill = ((pad if pad else eos[0]) if eos is not None else -1)
        neg = np.float32(-1.0e9)

        running_sequences = np.full((batch_size, num_beams, max_length), fill, np.int64)
        running_sequences[:, :, :cur_len] = input_ids.reshape(batch_size, num_beams, cur_len)
        sequences = running_sequences.copy()
        running_beam_scores = np.zeros((batch_size, num_beams), np.float32)
        running_beam_scores[:, 1:] = neg
        beam_scores = np.full((batch_size, num_beams), neg, np.float32)
        is_sent_finished = np.zeros((batch_size, num_beams), np.bool_)
        heuristic_unsatisfied = np.ones((batch_size, 1), np.bool_)
        running_beam_indices = np.full((batch_size, num_beams, max_length - cur_len), -1, np.int32)
        beam_indices = running_beam_indices.copy()
        record = _Recorder(gc, self.config.is_encoder_decoder)
        rng = _host_generator() if gc.do_sample else None

        while True:
            flat_running = running_sequences[:, :, :cur_len].reshape(batch_size * num_beams, cur_len)
            outputs = runner(flat_running)
            logits = F.cast(_last_position(outputs.logits), ms.float32)
            log_probs = logits_processor(Tensor(flat_running), F.log_softmax(logits, -1))
            record.step(log_probs, logits, outputs)
            vocab_size = log_probs.shape[-1]
            accumulated = (log_probs.reshape(batch_size, num_beams, vocab_size)
                           + Tensor(running_beam_scores)[:, :, None]).reshape(batch_size, -1)
            if gc.do_sample:
                topk_indices = F.sample_categorical(F.softmax(accumulated, -1), beams_to_keep, rng)
                topk_log_probs = accumulated.gather_elements(1, topk_indices)
            else:
                topk_log_probs, topk_indices = F.topk(accumulated, beams_to_keep)
            topk_log_probs = topk_log_probs.asnumpy().astype(np.float32)
            topk_indices = topk_indices.asnumpy().astype(np.int64)

            # candidates: which running beam each extends, and the extended sequences
            topk_beam = topk_indices // vocab_size
            topk_running_beam_indices = np.take_along_axis(running_beam_indices, topk_beam[:, :, None], 1)
            topk_running_sequences = np.take_along_axis(running_sequences, topk_beam[:, :, None], 1)
            topk_running_sequences[:, :, cur_len] = topk_indices % vocab_size
            topk_running_beam_indices[:, :, cur_len - prompt_len] = topk_beam + np.arange(batch_size)[:, None] * \
                num_beams

            hits = stopping_criteria.host_done(
                topk_running_sequences[:, :, :cur_len + 1].reshape(batch_size * beams_to_keep, -1),
                record.scores).reshape(batch_size, beams_to_keep)

            # the best candidates that did not stop keep running
            running_log_probs = topk_log_probs + hits.astype(np.float32) * neg
            keep = _top_indices(running_log_probs, num_beams)
            running_sequences = np.take_along_axis(topk_running_sequences, keep[:, :, None], 1)
            running_beam_scores = np.take_along_axis(running_log_probs, keep, 1)
            running_beam_indices = np.take_along_axis(topk_running_beam_indices, keep[:, :, None], 1)

            # candidates that stopped compete with the finished hypotheses
            just_finished = hits & top_num_beam_mask[None, :]
            finished_scores = topk_log_probs / np.float32((cur_len + 1 - prompt_len) ** length_penalty)
            batch_full = is_sent_finished.all(-1, keepdims=True) & (early_stopping is True)
            finished_scores = finished_scores + batch_full.astype(np.float32) * neg
            finished_scores = finished_scores + (~heuristic_unsatisfied).astype(np.float32) * neg
            finished_scores = finished_scores + (~just_finished).astype(np.float32) * neg
            merged_scores = np.concatenate([beam_scores, finished_scores], 1)
            best = _top_indices(merged_scores, num_beams)
            sequences = np.take_along_axis(np.concatenate([sequences, topk_running_sequences], 1), best[:, :, None], 1)
            beam_scores = np.take_along_axis(merged_scores, best, 1)
            beam_indices = np.take_along_axis(np.concatenate([beam_indices, topk_running_beam_indices], 1),
                                              best[:, :, None], 1)
            is_sent_finished = np.take_along_axis(np.concatenate([is_sent_finished, just_finished], 1), best, 1)

            runner.reorder_cache(Tensor(running_beam_indices[..., cur_len - prompt_len].reshape(-1).astype(np.int64)))
            cur_len += 1

            # can a running beam still beat the worst finished one?
            if early_stopping == "never" and length_penalty > 0.0:
                best_length = max_length - prompt_len
            else:
                best_length = cur_len - prompt_len
            best_running = running_beam_scores[:, :1] / np.float32(best_length ** length_penalty)
            worst_finished = np.where(is_sent_finished, beam_scores.min(1, keepdims=True), neg)
            heuristic_unsatisfied = heuristic_unsatisfied & (best_running > worst_finished).any(-1, keepdims=True)
            open_beam = not (is_sent_finished.all() and early_stopping is True)
            if not (heuristic_unsatisfied.any() and open_beam and not hits.all()):
                break

        n = gc.num_return_sequences
        sequences = sequences[:, :n].reshape(batch_size * n, -1)
        beam_scores = beam_scores[:, :n].reshape(-1)
        beam_indices = beam_indices[:, :n].reshape(batch_size * n, -1)
        generated = int((beam_indices + 1 != 0).sum(1).max())
        sequences = Tensor(sequences[:, :prompt_len + generated])
        beam_indices = Tensor(beam_indices[:, :generated].astype(np.int64))
        if not gc.return_dict_in_generate:
            return sequences
        output_cls = GenerateBeamEncoderDecoderOutput if self.config.is_encoder_decoder else \
            GenerateBeamDecoderOnlyOutput
        return record.result(sequences, runner.cache, output_cls=output_cls,
                             sequences_scores=Tensor(beam_scores) if gc.output_scores else None,
                             beam_indices=beam_indices)

    def _assisted_decoding(self, input_ids, runner, logits_processor, stopping_criteria, gc, candidate_source,
                           streamer=None):
        """Assisted decoding (greedy or sampling) with candidates from an assistant model or from prompt lookup: the
        candidates are verified in one forward of this model; the longest agreeing prefix plus the model's own next
        token are kept, so greedy output equals plain greedy decoding with fewer forward calls."""
        if input_ids.shape[0] != 1:
            raise ValueError("assisted generation (`assistant_model` / `prompt_lookup_num_tokens`) supports batch "
                             "size 1 only")
        rng = _host_generator() if gc.do_sample else None
        record = _Recorder(gc, self.config.is_encoder_decoder)
        while True:
            cur_len = input_ids.shape[1]
            room = gc.max_length - cur_len - 1
            candidates = candidate_source.get_candidates(input_ids, room) if room > 0 else np.zeros((0,), np.int64)
            extended = np.concatenate([input_ids, candidates[None, :]], 1)
            outputs = runner(extended, logits_to_keep=len(candidates) + 1)
            logits = F.cast(outputs.logits[:, -(len(candidates) + 1):, :], ms.float32)
            chosen, step_scores, step_logits = [], [], []
            accepted = 0
            for i in range(len(candidates) + 1):
                prefix = Tensor(extended[:, :cur_len + i])
                scores = logits_processor(prefix, logits[:, i, :])
                step_scores.append(scores)
                step_logits.append(logits[:, i, :])
                if gc.do_sample:
                    token = int(F.sample_categorical(F.softmax(scores, -1), 1, rng).asnumpy().reshape(-1)[0])
                else:
                    token = int(F.argmax_to_numpy(scores)[0])
                chosen.append(token)
                if i < len(candidates) and token == candidates[i]:
                    accepted += 1
                    continue
                break
            runner.rollback(cur_len + accepted)
            candidate_source.update_candidate_strategy(accepted, len(candidates))
            done = False
            for token, scores, raw in zip(chosen, step_scores, step_logits):
                input_ids = np.concatenate([input_ids, np.array([[token]], np.int64)], 1)
                record.step(scores, raw, None)
                if streamer is not None:
                    streamer.put(np.array([token]))
                if stopping_criteria.host_done(input_ids, record.scores).all():
                    done = True
                    break
            if done:
                break
        if streamer is not None:
            streamer.end()
        return record.result(Tensor(input_ids), runner.cache)


class _Recorder:
    """Collects what `return_dict_in_generate` asks for and builds the output object."""

    def __init__(self, gc, is_encoder_decoder):
        self.gc = gc
        self.is_encoder_decoder = is_encoder_decoder
        want = gc.return_dict_in_generate
        self.scores = () if want and gc.output_scores else None
        self.logits = () if want and gc.output_logits else None
        self.attentions = () if want and gc.output_attentions else None
        self.cross_attentions = () if want and gc.output_attentions and is_encoder_decoder else None
        self.hidden_states = () if want and gc.output_hidden_states else None

    def step(self, scores, logits, outputs):
        if self.scores is not None:
            self.scores += (scores,)
        if self.logits is not None:
            self.logits += (logits,)
        if outputs is None:
            return
        if self.attentions is not None:
            self.attentions += (outputs.get("decoder_attentions") if self.is_encoder_decoder
                                else outputs.get("attentions"),)
        if self.cross_attentions is not None:
            self.cross_attentions += (outputs.get("cross_attentions"),)
        if self.hidden_states is not None:
            self.hidden_states += (outputs.get("decoder_hidden_states") if self.is_encoder_decoder
                                   else outputs.get("hidden_states"),)

    def result(self, sequences, cache, output_cls=None, **extra):
        if not self.gc.return_dict_in_generate:
            return sequences
        if output_cls is None:
            output_cls = GenerateEncoderDecoderOutput if self.is_encoder_decoder else GenerateDecoderOnlyOutput
        fields = dict(sequences=sequences, scores=self.scores, logits=self.logits, past_key_values=cache, **extra)
        if self.is_encoder_decoder:
            fields.update(decoder_attentions=self.attentions, cross_attentions=self.cross_attentions,
                          decoder_hidden_states=self.hidden_states)
        else:
            fields.update(attentions=self.attentions, hidden_states=self.hidden_states)
        return output_cls(**fields)


def _merge(defaults, custom):
    """User processors/criteria: one of the same type as a default one takes its place (with a warning, as HF 5),
    the others are appended."""
    if not custom:
        return defaults
    merged = type(defaults)()
    for default in defaults:
        replacement = next((c for c in custom if type(c) is type(default)), None)
        if replacement is not None:
            kind = "stopping criteria" if isinstance(defaults, StoppingCriteriaList) else "logits processor"
            logger.warning("A custom %s of type %s has been passed to `.generate()`, but it was also created in "
                           "`.generate()`, given its parameterization. The custom %s will take precedence.", kind,
                           type(replacement), type(replacement))
        merged.append(replacement if replacement is not None else default)
    merged.extend(c for c in custom if not any(c is m for m in merged))
    return merged


def _host_generator():
    """The numpy generator host-side sampling uses, seeded from MindSpore's RNG so `mindspore.set_seed(s)` before
    `generate` makes sampling reproducible."""
    return np.random.default_rng(int(ops.randint(0, 2 ** 31 - 1, (1,)).asnumpy()[0]))


def _wants_compile(gc):
    if getattr(gc, "disable_compile", False):
        return False
    return not (gc.output_attentions or gc.output_hidden_states)


def _top_indices(values, k):
    """Indices of the k largest values per row, ties broken towards the lower index."""
    return np.argsort(-values, axis=-1, kind="stable")[:, :k]


def _input_ids(inputs, model_kwargs, main_input_name, inputs_embeds):
    """The main input as a (B, L) int64 numpy array (or None)."""
    if inputs is not None and model_kwargs.get(main_input_name) is not None:
        raise ValueError(f"`inputs`: {inputs}` were passed alongside {main_input_name} which is not allowed. Make "
                         f"sure to either pass {inputs} or {main_input_name}=...")
    if inputs is None:
        inputs = model_kwargs.pop(main_input_name, None)
        if main_input_name != "input_ids":
            inputs = model_kwargs.pop("input_ids", inputs)
    if inputs is None:
        return None
    tensor_interop.reject_torch(main_input_name, inputs)
    ids = np.asarray(_as_numpy(inputs) if not isinstance(inputs, list) else inputs)
    if ids.ndim == 1:
        ids = ids[None, :]
    if ids.ndim != 2:
        raise ValueError(f"input_ids must be (batch, length), got shape {ids.shape}")
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"input_ids must hold integer token ids, got dtype {ids.dtype}")
    if inputs_embeds is not None and ids.shape[1] > 0:
        raise ValueError("pass either input_ids or inputs_embeds as the prompt of a decoder-only model, not both")
    return ids.astype(np.int64)


def _encoder_inputs(inputs, model_kwargs, main_input_name):
    """The encoder's non-token main input (e.g. pixel_values) as a Tensor, from `inputs` or the kwargs (or None)."""
    if inputs is not None and model_kwargs.get(main_input_name) is not None:
        raise ValueError(f"`inputs` were passed alongside {main_input_name} which is not allowed. Make sure to "
                         f"either pass `inputs` or {main_input_name}=...")
    value = model_kwargs.pop(main_input_name, None)
    value = inputs if value is None else value
    if value is None:
        return None
    tensor_interop.reject_torch(main_input_name, value)
    return value if isinstance(value, Tensor) else Tensor(np.asarray(_as_numpy(value)))


def _encoder_last_state(encoder_outputs):
    return encoder_outputs[0] if isinstance(encoder_outputs, (tuple, list)) else encoder_outputs["last_hidden_state"]


def _pad_encoder_output(model_kwargs, length):
    """Pads `model_kwargs`' encoder output with zeros to `length` positions and its `attention_mask` (all ones when
    absent) with zeros, so that cross-attention gives the extra positions no weight."""
    states = _encoder_last_state(model_kwargs["encoder_outputs"])
    batch, current = states.shape[:2]
    if current == length:
        return
    mask = model_kwargs.get("attention_mask")
    mask = _as_numpy(mask).astype(np.int64) if mask is not None else np.ones((batch, current), np.int64)
    padding = ops.zeros((batch, length - current) + tuple(states.shape[2:]), states.dtype)
    model_kwargs["encoder_outputs"] = (F.cat([states, padding], 1),)
    model_kwargs["attention_mask"] = Tensor(np.concatenate([mask, np.zeros((batch, length - current), np.int64)], 1))


def _infer_attention_mask(input_ids, pad, eos):
    """HF's rule: mask out pad tokens when the pad token appears and differs from every EOS token."""
    if pad is None or not (input_ids == pad).any() or (eos is not None and pad in eos):
        return np.ones(input_ids.shape, np.int64)
    return (input_ids != pad).astype(np.int64)


def _repeat(value, times):
    """Repeats tensors/arrays (and ModelOutputs of them, e.g. encoder_outputs) along the batch axis."""
    if isinstance(value, (Tensor, ms.Parameter)):
        return Tensor(np.repeat(value.asnumpy(), times, 0))
    if isinstance(value, np.ndarray):
        return np.repeat(value, times, 0)
    if isinstance(value, ModelOutput):
        for key in list(value.keys()):
            if isinstance(value[key], (Tensor, np.ndarray)):
                value[key] = _repeat(value[key], times)
        return value
    return value


class _PromptLookupCandidates:
    """Prompt lookup (HF's PromptLookupCandidateGenerator): the tokens that followed an earlier occurrence of the
    sequence's last n-gram."""

    def __init__(self, gc):
        self.num_tokens = gc.prompt_lookup_num_tokens
        self.max_ngram = gc.max_matching_ngram_size or 2

    def get_candidates(self, input_ids, room):
        return _prompt_lookup_candidates(input_ids[0], self.max_ngram, min(self.num_tokens, room))

    def update_candidate_strategy(self, num_matches, num_candidates):
        pass


class _AssistantCandidates:
    """Candidates drafted greedily by a smaller `assistant_model` sharing the tokenizer (HF's
    AssistedCandidateGenerator): up to `num_assistant_tokens` tokens, stopping early after a token the assistant
    gives less than `assistant_confidence_threshold` probability; the assistant keeps its own key/value cache across
    rounds, cropped to the tokens the target accepted. `num_assistant_tokens_schedule` "heuristic" /
    "heuristic_transient" grow the draft by 2 after a fully accepted one and shrink it by 1 otherwise."""

    def __init__(self, assistant_model, gc):
        own = assistant_model.generation_config
        defaults = GenerationConfig._get_default_generation_params()

        def setting(name):
            for source in (own, gc):
                value = getattr(source, name, None) if source is not None else None
                if value is not None:
                    return value
            return defaults[name]

        self.assistant = assistant_model
        self.schedule = setting("num_assistant_tokens_schedule")
        self.num_assistant_tokens = setting("num_assistant_tokens")
        self.confidence_threshold = setting("assistant_confidence_threshold")
        self.runner = None
        self.seen = np.zeros((0,), np.int64)  # the ids the assistant's cache holds

    def _start(self, input_ids):
        length = input_ids.shape[1]
        mask = np.ones((1, length), np.int64)
        positions = np.arange(length, dtype=np.int64)[None]
        forward = set(inspect.signature(self.assistant.construct).parameters)
        self.runner = _ModelRunner(self.assistant, {}, DynamicCache(config=self.assistant.config), True, mask,
                                   positions, logits_to_keep_supported="logits_to_keep" in forward)

    def get_candidates(self, input_ids, room):
        if self.runner is None:
            self._start(input_ids)
        ids = input_ids[0]
        # keep the cached prefix the sequence still agrees with, and re-feed at least the last token
        common = 0
        limit = min(len(self.seen), len(ids) - 1)
        while common < limit and self.seen[common] == ids[common]:
            common += 1
        if common < self.runner.past:
            self.runner.rollback(common)
        sequence = input_ids
        for _ in range(min(self.num_assistant_tokens, room)):
            logits = F.cast(_last_position(self.runner(sequence).logits), ms.float32).asnumpy()[0].astype(np.float64)
            token = int(np.argmax(logits))
            sequence = np.concatenate([sequence, [[token]]], 1)
            if self.confidence_threshold:
                shifted = np.exp(logits - logits.max())
                if shifted[token] / shifted.sum() < self.confidence_threshold:
                    break
        self.seen = sequence[0, :self.runner.past]
        return sequence[0, len(ids):].astype(np.int64)

    def update_candidate_strategy(self, num_matches, num_candidates):
        if self.schedule in ("heuristic", "heuristic_transient"):
            if num_matches == num_candidates:
                self.num_assistant_tokens += 2
            else:
                self.num_assistant_tokens = max(1, self.num_assistant_tokens - 1)


def _watermark_processor(config, vocab_size):
    """Our processor for a transformers `WatermarkingConfig` / `SynthIDTextWatermarkingConfig` (or its dict)."""
    if isinstance(config, dict):
        from transformers.generation.configuration_utils import SynthIDTextWatermarkingConfig, WatermarkingConfig
        config = (SynthIDTextWatermarkingConfig if "ngram_len" in config else WatermarkingConfig).from_dict(config)
    if hasattr(config, "ngram_len"):
        return SynthIDTextWatermarkLogitsProcessor(
            ngram_len=config.ngram_len, keys=config.keys, sampling_table_size=config.sampling_table_size,
            sampling_table_seed=config.sampling_table_seed, context_history_size=config.context_history_size,
            skip_first_ngram_calls=config.skip_first_ngram_calls, debug_mode=config.debug_mode)
    return WatermarkLogitsProcessor(vocab_size=vocab_size, greenlist_ratio=config.greenlist_ratio, bias=config.bias,
                                    hashing_key=config.hashing_key, seeding_scheme=config.seeding_scheme,
                                    context_width=config.context_width)


def _prompt_lookup_candidates(ids, max_ngram, num_tokens):
    """Up to `num_tokens` ids that followed the first earlier occurrence of the sequence's last n-gram
    (n from `max_ngram` down to 1), as HF's PromptLookupCandidateGenerator finds them."""
    length = len(ids)
    if num_tokens <= 0:
        return np.zeros((0,), np.int64)
    for n in range(min(max_ngram, length - 1), 0, -1):
        tail = ids[-n:]
        windows = np.lib.stride_tricks.sliding_window_view(ids, n)
        matches = np.nonzero((windows == tail).all(-1))[0]
        for start in matches:
            begin = start + n
            end = min(begin + num_tokens, length)
            if begin < end:
                return np.asarray(ids[begin:end], np.int64)
    return np.zeros((0,), np.int64)


def _last_position(logits):
    """(B, S, V) -> (B, V) at the last position: a view (reshape) when S == 1, as in every decode step, instead of an
    indexing op that copies the row."""
    if logits.shape[1] == 1:
        return logits.reshape(logits.shape[0], logits.shape[2])
    return logits[:, -1, :]


__all__ = ["GenerationMixin", "GenerateDecoderOnlyOutput", "GenerateEncoderDecoderOutput",
           "GenerateBeamDecoderOnlyOutput", "GenerateBeamEncoderDecoderOutput", "static_cache_length",
           "compiled_decode_step", "run_compiled_part"]
