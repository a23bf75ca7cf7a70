"""Model outputs with HF's field names and access rules, holding MindSpore tensors.

A `ModelOutput` is a dataclass and an ordered dict at once: `out.logits`, `out["logits"]` and `out[0]` all work, and
fields left as None are skipped by keys/values/indexing and `to_tuple()` (so `out[0]` is the first non-None field,
as in HF).

Inside a `mindspore.jit` graph a custom class becomes a Python-fallback node that *cuts gradients* (measured: the
forward is right, parameter gradients are wrong). So models build outputs with `model_output(cls, fields,
return_dict)`: a `ModelOutput` in PyNative, a plain dict with the same keys inside a graph (and the same tuple
either way when `return_dict=False`). Code that reads a sub-model's output uses `out["field"]` / `out.get("field")`,
which work on both.
"""

from collections import OrderedDict
from dataclasses import dataclass, fields
from typing import Any, Optional, Tuple

from .backend import runtime


class ModelOutput(OrderedDict):
    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                super().__setitem__(f.name, value)

    def __getitem__(self, key):
        if isinstance(key, str):
            items = dict(self.items())
            if key == "cache" and key not in items and "past_key_values" in items:
                key = "past_key_values"
            return items[key]
        return self.to_tuple()[key]

    def __getattr__(self, name):
        # only reached when normal lookup fails: transformers >= 5.23 calls the cache field `cache`
        if name == "cache" and "past_key_values" in getattr(type(self), "__dataclass_fields__", {}):
            return self.past_key_values
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        super().__setattr__(key, value)

    def __setattr__(self, name, value):
        if name in self.keys() and value is not None:
            super().__setitem__(name, value)
        super().__setattr__(name, value)

    def __delitem__(self, *args, **kwargs):
        raise TypeError(f"You cannot use ``__delitem__`` on a {self.__class__.__name__} instance.")

    def setdefault(self, *args, **kwargs):
        raise TypeError(f"You cannot use ``setdefault`` on a {self.__class__.__name__} instance.")

    def pop(self, *args, **kwargs):
        raise TypeError(f"You cannot use ``pop`` on a {self.__class__.__name__} instance.")

    def update(self, *args, **kwargs):
        raise TypeError(f"You cannot use ``update`` on a {self.__class__.__name__} instance.")

    def __reduce__(self):
        return self.__class__, tuple(getattr(self, f.name) for f in fields(self))

    def to_tuple(self) -> Tuple[Any, ...]:
        return tuple(self[k] for k in self.keys())


def model_output(cls, fields: dict, return_dict=True):
    """`cls(**fields)` (or its tuple) in PyNative; inside a graph a dict (or tuple) with the same content."""
    if runtime.in_graph():
        if return_dict:
            # the fields that are set first, then the None ones: the order of a ModelOutput's keys, and a graph that
            # returns a dict with a None before a tuple holding a float16 MatMul output fails in MindSpore 2.10 when
            # the dict is built on the host ("Invalid host tensor size ... for pyexecute": float16 MoE models'
            # router logits, after `loss=None`)
            keys = [k for k in fields if fields[k] is not None] + [k for k in fields if fields[k] is None]
            return {k: fields[k] for k in keys}
        return tuple(v for v in fields.values() if v is not None)
    out = cls(**fields)
    return out if return_dict else out.to_tuple()


@dataclass
class BaseModelOutput(ModelOutput):
    last_hidden_state: Any = None
    hidden_states: Optional[Tuple[Any, ...]] = None
    attentions: Optional[Tuple[Any, ...]] = None


@dataclass
class BaseModelOutputWithPooling(ModelOutput):
    last_hidden_state: Any = None
    pooler_output: Any = None
    hidden_states: Optional[Tuple[Any, ...]] = None
    attentions: Optional[Tuple[Any, ...]] = None


@dataclass
class BaseModelOutputWithPast(ModelOutput):
    last_hidden_state: Any = None
    past_key_values: Any = None
    hidden_states: Optional[Tuple[Any, ...]] = None
    attentions: Optional[Tuple[Any, ...]] = None


@dataclass
class BaseModelOutputWithPastAndCrossAttentions(ModelOutput):
    last_hidden_state: Any = None
    past_key_values: Any = None
    hidden_states: Optional[Tuple[Any, ...]] = None
    attentions: Optional[Tuple[Any, ...]] = None
    cross_attentions: Optional[Tuple[Any, ...]] = None


@dataclass
class BaseModelOutputWithPoolingAndCrossAttentions(ModelOutput):
    last_hidden_state: Any = None
    pooler_output: Any = None
    hidden_states: Optional[Tuple[Any, ...]] = None
    past_key_values: Any = None
    attentions: Optional[Tuple[Any, ...]] = None
    cross_attentions: Optional[Tuple[Any, ...]] = None


@dataclass
class CausalLMOutputWithPast(ModelOutput):
    loss: Any = None
    logits: Any = None
    past_key_values: Any = None
    hidden_states: Optional[Tuple[Any, ...]] = None
    attentions: Optional[Tuple[Any, ...]] = None


@dataclass
class MoeModelOutputWithPast(ModelOutput):
    last_hidden_state: Any = None
    past_key_values: Any = None
    hidden_states: Optional[Tuple[Any, ...]] = None
    attentions: Optional[Tuple[Any, ...]] = None
    router_logits: Optional[Tuple[Any, ...]] = None


@dataclass
class MoeCausalLMOutputWithPast(ModelOutput):
    loss: Any = None
    aux_loss: Any = None
    logits: Any = None
    past_key_values: Any = None
    hidden_states: Optional[Tuple[Any, ...]] = None
    attentions: Optional[Tuple[Any, ...]] = None
    router_logits: Optional[Tuple[Any, ...]] = None


@dataclass
class CausalLMOutputWithCrossAttentions(ModelOutput):
    loss: Any = None
    logits: Any = None
    past_key_values: Any = None
    hidden_states: Optional[Tuple[Any, ...]] = None
    attentions: Optional[Tuple[Any, ...]] = None
    cross_attentions: Optional[Tuple[Any, ...]] = None


@dataclass
class MaskedLMOutput(ModelOutput):
    loss: Any = None
    logits: Any = None
    hidden_states: Optional[Tuple[Any, ...]] = None
    attentions: Optional[Tuple[Any, ...]] = None


@dataclass
class SequenceClassifierOutput(ModelOutput):
    loss: Any = None
    logits: Any = None
    hidden_states: Optional[Tuple[Any, ...]] = None
    attentions: Optional[Tuple[Any, ...]] = None


@dataclass
class SequenceClassifierOutputWithPast(ModelOutput):
    loss: Any = None
    logits: Any = None
    past_key_values: Any = None
    hidden_states: Optional[Tuple[Any, ...]] = None
    attentions: Optional[Tuple[Any, ...]] = None


@dataclass
class TokenClassifierOutput(ModelOutput):
    loss: Any = None
    logits: Any = None
    hidden_states: Optional[Tuple[Any, ...]] = None
    attentions: Optional[Tuple[Any, ...]] = None


@dataclass
class QuestionAnsweringModelOutput(ModelOutput):
    loss: Any = None
    start_logits: Any = None
    end_logits: Any = None
    hidden_states: Optional[Tuple[Any, ...]] = None
    attentions: Optional[Tuple[Any, ...]] = None


@dataclass
class Seq2SeqModelOutput(ModelOutput):
    last_hidden_state: Any = None
    past_key_values: Any = None
    decoder_hidden_states: Optional[Tuple[Any, ...]] = None
    decoder_attentions: Optional[Tuple[Any, ...]] = None
    cross_attentions: Optional[Tuple[Any, ...]] = None
    encoder_last_hidden_state: Any = None
    encoder_hidden_states: Optional[Tuple[Any, ...]] = None
    encoder_attentions: Optional[Tuple[Any, ...]] = None


@dataclass
class Seq2SeqLMOutput(ModelOutput):
    loss: Any = None
    logits: Any = None
    past_key_values: Any = None
    decoder_hidden_states: Optional[Tuple[Any, ...]] = None
    decoder_attentions: Optional[Tuple[Any, ...]] = None
    cross_attentions: Optional[Tuple[Any, ...]] = None
    encoder_last_hidden_state: Any = None
    encoder_hidden_states: Optional[Tuple[Any, ...]] = None
    encoder_attentions: Optional[Tuple[Any, ...]] = None


@dataclass
class Seq2SeqSequenceClassifierOutput(ModelOutput):
    loss: Any = None
    logits: Any = None
    past_key_values: Any = None
    decoder_hidden_states: Optional[Tuple[Any, ...]] = None
    decoder_attentions: Optional[Tuple[Any, ...]] = None
    cross_attentions: Optional[Tuple[Any, ...]] = None
    encoder_last_hidden_state: Any = None
    encoder_hidden_states: Optional[Tuple[Any, ...]] = None
    encoder_attentions: Optional[Tuple[Any, ...]] = None


@dataclass
class Seq2SeqQuestionAnsweringModelOutput(ModelOutput):
    loss: Any = None
    start_logits: Any = None
    end_logits: Any = None
    past_key_values: Any = None
    decoder_hidden_states: Optional[Tuple[Any, ...]] = None
    decoder_attentions: Optional[Tuple[Any, ...]] = None
    cross_attentions: Optional[Tuple[Any, ...]] = None
    encoder_last_hidden_state: Any = None
    encoder_hidden_states: Optional[Tuple[Any, ...]] = None
    encoder_attentions: Optional[Tuple[Any, ...]] = None


@dataclass
class NextSentencePredictorOutput(ModelOutput):
    loss: Any = None
    logits: Any = None
    hidden_states: Optional[Tuple[Any, ...]] = None
    attentions: Optional[Tuple[Any, ...]] = None


@dataclass
class MultipleChoiceModelOutput(ModelOutput):
    loss: Any = None
    logits: Any = None
    hidden_states: Optional[Tuple[Any, ...]] = None
    attentions: Optional[Tuple[Any, ...]] = None


@dataclass
class BaseModelOutputWithNoAttention(ModelOutput):
    last_hidden_state: Any = None
    hidden_states: Optional[Tuple[Any, ...]] = None


@dataclass
class BaseModelOutputWithPoolingAndNoAttention(ModelOutput):
    last_hidden_state: Any = None
    pooler_output: Any = None
    hidden_states: Optional[Tuple[Any, ...]] = None


@dataclass
class ImageClassifierOutput(ModelOutput):
    loss: Any = None
    logits: Any = None
    hidden_states: Optional[Tuple[Any, ...]] = None
    attentions: Optional[Tuple[Any, ...]] = None


@dataclass
class ImageClassifierOutputWithNoAttention(ModelOutput):
    loss: Any = None
    logits: Any = None
    hidden_states: Optional[Tuple[Any, ...]] = None


@dataclass
class CLIPVisionModelOutput(ModelOutput):
    image_embeds: Any = None
    last_hidden_state: Any = None
    hidden_states: Optional[Tuple[Any, ...]] = None
    attentions: Optional[Tuple[Any, ...]] = None


@dataclass
class CLIPTextModelOutput(ModelOutput):
    text_embeds: Any = None
    last_hidden_state: Any = None
    hidden_states: Optional[Tuple[Any, ...]] = None
    attentions: Optional[Tuple[Any, ...]] = None


@dataclass
class CLIPOutput(ModelOutput):
    loss: Any = None
    logits_per_image: Any = None
    logits_per_text: Any = None
    text_embeds: Any = None
    image_embeds: Any = None
    text_model_output: Any = None
    vision_model_output: Any = None

    def to_tuple(self) -> Tuple[Any, ...]:
        return tuple(v.to_tuple() if isinstance(v, ModelOutput) else v for v in self.values())


@dataclass
class SiglipOutput(CLIPOutput):
    """SigLIP's image-text output: CLIP's fields, the logits from the sigmoid model (scale and bias)."""


@dataclass
class Siglip2Output(CLIPOutput):
    """As `SiglipOutput`, for SigLIP 2."""


@dataclass
class BackboneOutput(ModelOutput):
    feature_maps: Optional[Tuple[Any, ...]] = None
    hidden_states: Optional[Tuple[Any, ...]] = None
    attentions: Optional[Tuple[Any, ...]] = None


@dataclass
class SemanticSegmenterOutput(ModelOutput):
    loss: Any = None
    logits: Any = None
    hidden_states: Optional[Tuple[Any, ...]] = None
    attentions: Optional[Tuple[Any, ...]] = None


@dataclass
class DepthEstimatorOutput(ModelOutput):
    loss: Any = None
    predicted_depth: Any = None
    hidden_states: Optional[Tuple[Any, ...]] = None
    attentions: Optional[Tuple[Any, ...]] = None


@dataclass
class CausalLMOutput(ModelOutput):
    loss: Any = None
    logits: Any = None
    hidden_states: Optional[Tuple[Any, ...]] = None
    attentions: Optional[Tuple[Any, ...]] = None


@dataclass
class Wav2Vec2BaseModelOutput(ModelOutput):
    last_hidden_state: Any = None
    extract_features: Any = None
    hidden_states: Optional[Tuple[Any, ...]] = None
    attentions: Optional[Tuple[Any, ...]] = None


@dataclass
class XVectorOutput(ModelOutput):
    loss: Any = None
    logits: Any = None
    embeddings: Any = None
    hidden_states: Optional[Tuple[Any, ...]] = None
    attentions: Optional[Tuple[Any, ...]] = None
