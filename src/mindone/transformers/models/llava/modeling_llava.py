"""LLaVA on MindSpore: HF's `modeling_llava.py` class names, checkpoint keys, forward signature and outputs.

Any of our vision towers (CLIP vision, SigLIP vision, ... built by `AutoModel` from `config.vision_config`) feeds a
two-layer projector (linear - activation - linear) whose outputs replace the `<image>` placeholder tokens in the
input embeddings of any of our language models (Llama, Qwen2, Mistral, Gemma, ... from `config.text_config`).

Checkpoint keys are those of transformers 5: `model.vision_tower.*`, `model.multi_modal_projector.*`,
`model.language_model.*`, `lm_head.weight`. The older layout (`vision_tower.vision_model.*`, `multi_modal_projector.*`,
`language_model.model.*`, `language_model.lm_head.*`), which transformers 5 still writes on save, loads too, and
`save_pretrained` writes it as transformers does.
"""

from dataclasses import dataclass
from typing import Any, Optional, Tuple

import mindspore as ms
import numpy as np
from mindspore import Tensor, ops
from mindspore.common.initializer import Normal, Zero
from transformers import LlavaConfig

from ...backend import functional as F
from ...backend import runtime
from ...backend.layers import Linear
from ...generation import GenerationMixin
from ...generation.utils import run_compiled_part
from ...loss_utils import causal_lm_loss
from ...modeling_outputs import BaseModelOutputWithPooling, ModelOutput, model_output
from ...modeling_utils import PreTrainedModel, init_parameter
from ..auto.modeling_auto import AutoModel


class _ImageHiddenStates:
    @property
    def image_hidden_states(self):
        """The projected image features (one (num_patches, hidden) tensor per image); HF 5 keeps this name as an
        alias of `image_outputs.pooler_output`."""
        return self.image_outputs.pooler_output if self.image_outputs is not None else None


@dataclass
class LlavaModelOutputWithPast(_ImageHiddenStates, ModelOutput):
    last_hidden_state: Any = None
    past_key_values: Any = None
    hidden_states: Optional[Tuple[Any, ...]] = None
    attentions: Optional[Tuple[Any, ...]] = None
    image_outputs: Any = None


@dataclass
class LlavaCausalLMOutputWithPast(_ImageHiddenStates, ModelOutput):
    loss: Any = None
    logits: Any = None
    past_key_values: Any = None
    hidden_states: Optional[Tuple[Any, ...]] = None
    attentions: Optional[Tuple[Any, ...]] = None
    image_outputs: Any = None


# legacy (transformers 4) checkpoint prefixes -> transformers 5 parameter names, first match wins
_LEGACY_PREFIXES = (
    ("language_model.lm_head.", "lm_head."),
    ("language_model.model.", "model.language_model."),
    ("language_model.", "model.language_model."),
    ("vision_tower.vision_model.", "model.vision_tower."),
    ("vision_tower.", "model.vision_tower."),
    ("multi_modal_projector.", "model.multi_modal_projector."),
    ("image_newline", "model.image_newline"),
)
# what transformers 5 writes on save (the reverse of its load-time renames)
_SAVED_PREFIXES = (
    ("lm_head.", "language_model.lm_head."),
    ("model.language_model.", "language_model.model."),
    ("model.vision_tower.", "vision_tower."),
    ("model.multi_modal_projector.", "multi_modal_projector."),
    ("model.image_newline", "image_newline"),
)


def _rename_prefix(key, table):
    for old, new in table:
        if key.startswith(old):
            return new + key[len(old):]
    return key


class LlavaMultiModalProjector(ms.nn.Cell):
    def __init__(self, config: LlavaConfig):
        super().__init__()
        # the selected vision layers are concatenated along the feature axis
        num_feature_layers = 1 if isinstance(config.vision_feature_layer, int) else len(config.vision_feature_layer)
        self.linear_1 = Linear(config.vision_config.hidden_size * num_feature_layers, config.text_config.hidden_size,
                               bias=config.multimodal_projector_bias)
        self.act = F.get_activation(config.projector_hidden_act)
        self.linear_2 = Linear(config.text_config.hidden_size, config.text_config.hidden_size,
                               bias=config.multimodal_projector_bias)

    def construct(self, image_features):
        return self.linear_2(self.act(self.linear_1(image_features)))


def select_vision_features(hidden_states, vision_feature_layer, vision_feature_select_strategy):
    """The vision tower's hidden states at `vision_feature_layer` (an index, or a list whose states are concatenated
    along the features); "default" drops the CLS position, "full" keeps every position."""
    layers = [vision_feature_layer] if isinstance(vision_feature_layer, int) else list(vision_feature_layer)
    selected = [hidden_states[i] for i in layers]
    if vision_feature_select_strategy == "default":
        selected = [h[:, 1:] for h in selected]
    elif vision_feature_select_strategy != "full":
        raise ValueError(f"Unexpected select feature strategy: {vision_feature_select_strategy!r} "
                         "(expected 'default' or 'full')")
    return selected[0] if len(selected) == 1 else F.cat(selected, -1)


def image_token_mask(model, input_ids, inputs_embeds, image_token_id):
    """(B, S) bool: the placeholder positions, from the ids or (without ids) from the embedding of the image token."""
    if input_ids is not None:
        return input_ids == image_token_id
    image_embedding = model.get_input_embeddings()(Tensor(np.array([image_token_id], np.int64)))
    return (inputs_embeds == image_embedding.reshape(1, 1, -1)).all(-1)


def scatter_image_features(inputs_embeds, mask, image_features):
    """`inputs_embeds.masked_scatter(mask, image_features)`: the k-th placeholder (in row-major order) takes the k-th
    feature row. A cumulative count indexes the features, so shapes stay static (compilable, differentiable)."""
    batch, seq_len, hidden = inputs_embeds.shape
    features = image_features.reshape(-1, hidden).astype(inputs_embeds.dtype)
    if not runtime.in_graph():
        n_tokens, n_features = int(mask.astype(ms.int32).sum()), features.shape[0]
        if n_tokens != n_features:
            raise ValueError(f"Image features and image tokens do not match, tokens: {n_tokens}, features: "
                             f"{n_features}")
    flat_mask = mask.reshape(-1)
    index = F.cumsum(flat_mask.astype(ms.int32), 0) - 1
    index = ops.clip_by_value(index, Tensor(0, ms.int32), Tensor(max(features.shape[0] - 1, 0), ms.int32))
    gathered = F.index_select(features, 0, index).reshape(batch, seq_len, hidden)
    return F.where(mask.reshape(batch, seq_len, 1), gathered, inputs_embeds)


class LlavaPreTrainedModel(PreTrainedModel):
    config_class = LlavaConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _supports_static_cache = True

    def init_weights(self):
        """The towers initialise themselves (in their own __init__); the rest gets this model's scheme."""
        base = self.base_model
        in_towers = {id(c) for name in ("vision_tower", "language_model")
                     for _, c in getattr(base, name).cells_and_names()}
        for _, cell in self.cells_and_names():
            if id(cell) not in in_towers:
                self._init_weights(cell)

    def _init_weights(self, cell):
        """HF's scheme for the projector and head: normal(0, the text config's initializer_range), zero biases."""
        std = getattr(self.config.get_text_config(), "initializer_range", 0.02)
        if isinstance(cell, Linear):
            init_parameter(cell.weight, Normal(std))
            if cell.bias is not None:
                init_parameter(cell.bias, Zero())

    def _initialize_missing(self, keys, params):
        """Missing tower weights get their tower's own initialisation scheme."""
        base = self.base_model
        prefix = "" if base is self else self.base_model_prefix + "."
        own = list(keys)
        for name in ("vision_tower", "language_model"):
            tower_prefix = f"{prefix}{name}."
            tower = getattr(base, name)
            tower_keys = [k[len(tower_prefix):] for k in keys if k.startswith(tower_prefix)]
            own = [k for k in own if not k.startswith(tower_prefix)]
            tower._initialize_missing(tower_keys, tower.named_parameters_dict())
        super()._initialize_missing(own, params)

    def _tie_word_embeddings_enabled(self) -> bool:
        # transformers 5 reads the composite config's own flag (False unless set), not the text config's
        return bool(getattr(self.config, "tie_word_embeddings", False))

    @classmethod
    def _fix_checkpoint_key(cls, key: str) -> str:
        return super()._fix_checkpoint_key(_rename_prefix(key, _LEGACY_PREFIXES))

    def _revert_checkpoint(self, state_dict):
        prefix = "" if self.base_model is not self else "model."
        return {_rename_prefix(prefix + k, _SAVED_PREFIXES): v for k, v in state_dict.items()}


class LlavaModel(LlavaPreTrainedModel):
    """The vision tower, the projector and the language model, without a language-modelling head."""

    def __init__(self, config: LlavaConfig):
        super().__init__(config)
        self.vision_tower = AutoModel.from_config(config.vision_config)
        self.multi_modal_projector = LlavaMultiModalProjector(config)
        self.language_model = AutoModel.from_config(config.text_config)
        # the towers read the shared sub-configs (as in HF)
        self.vision_tower.config = config.vision_config
        self.language_model.config = config.text_config
        self.post_init()

    def get_input_embeddings(self):
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.language_model.set_input_embeddings(value)

    def get_image_features(self, pixel_values, vision_feature_layer=None, vision_feature_select_strategy=None,
                           return_dict=True, **kwargs):
        r"""
        Runs the vision tower on `pixel_values` (N, C, H, W) and projects the selected hidden states.

        Returns:
            `BaseModelOutputWithPooling` of the tower whose `pooler_output` is the tuple of per-image projected
            features, each (num_patches, text hidden size).
        """
        outputs, features = self._image_features(pixel_values, vision_feature_layer, vision_feature_select_strategy)
        fields = {"last_hidden_state": outputs["last_hidden_state"],
                  "pooler_output": tuple(features[i] for i in range(features.shape[0])),
                  "hidden_states": outputs["hidden_states"] if kwargs.get("output_hidden_states") else None}
        return model_output(BaseModelOutputWithPooling, fields, return_dict)

    def _image_features(self, pixel_values, vision_feature_layer, vision_feature_select_strategy):
        """(tower output, projected features (N, num_patches, text hidden size))."""
        vision_feature_layer = (vision_feature_layer if vision_feature_layer is not None
                                else self.config.vision_feature_layer)
        vision_feature_select_strategy = (vision_feature_select_strategy if vision_feature_select_strategy is not None
                                          else self.config.vision_feature_select_strategy)
        outputs = self.vision_tower(pixel_values.astype(self.dtype), output_hidden_states=True, return_dict=True)
        selected = select_vision_features(outputs["hidden_states"], vision_feature_layer,
                                          vision_feature_select_strategy)
        return outputs, self.multi_modal_projector(selected)

    def _compiled_image_features(self, pixel_values, vision_feature_layer, vision_feature_select_strategy):
        """`_image_features`' projected features through one graph (tower and projector) per image shape and feature
        selection (`run_compiled_part`)."""
        layer = vision_feature_layer if vision_feature_layer is not None else self.config.vision_feature_layer
        strategy = (vision_feature_select_strategy if vision_feature_select_strategy is not None
                    else self.config.vision_feature_select_strategy)

        def features(pixels, layer, strategy):
            return self._image_features(pixels, layer, strategy)[1]

        return run_compiled_part(self, "image_features", features, self, pixel_values,
                                 layer if isinstance(layer, int) else tuple(layer), strategy)

    def merge_image_features(self, input_ids, inputs_embeds, pixel_values, vision_feature_layer=None,
                             vision_feature_select_strategy=None, output_hidden_states=None, compiled=False):
        """(inputs_embeds with the projected image features at the `<image>` placeholders, image outputs or None).
        `compiled` (generate()'s prefill) runs the tower and projector as a compiled graph and returns no outputs."""
        if pixel_values is None:
            return inputs_embeds, None
        if compiled:
            features = self._compiled_image_features(pixel_values, vision_feature_layer,
                                                     vision_feature_select_strategy)
            mask = image_token_mask(self, input_ids, inputs_embeds, self.config.image_token_id)
            return scatter_image_features(inputs_embeds, mask, features), None
        tower_outputs, features = self._image_features(pixel_values, vision_feature_layer,
                                                       vision_feature_select_strategy)
        image_outputs = model_output(BaseModelOutputWithPooling, {
            "last_hidden_state": tower_outputs["last_hidden_state"],
            "pooler_output": tuple(features[i] for i in range(features.shape[0])),
            "hidden_states": tower_outputs["hidden_states"] if output_hidden_states else None})
        mask = image_token_mask(self, input_ids, inputs_embeds, self.config.image_token_id)
        return scatter_image_features(inputs_embeds, mask, features), image_outputs

    def construct(self, input_ids=None, pixel_values=None, attention_mask=None, position_ids=None,
                  past_key_values=None, inputs_embeds=None, vision_feature_layer=None,
                  vision_feature_select_strategy=None, use_cache=None, output_attentions=None,
                  output_hidden_states=None, return_dict=None, cache_position=None, image_sizes=None, **kwargs):
        return_dict = return_dict if return_dict is not None else True
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)

        inputs_embeds, image_outputs = self.merge_image_features(input_ids, inputs_embeds, pixel_values,
                                                                 vision_feature_layer, vision_feature_select_strategy,
                                                                 output_hidden_states)
        outputs = self.language_model(
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            cache_position=cache_position,
        )
        return model_output(LlavaModelOutputWithPast, {
            "last_hidden_state": outputs["last_hidden_state"],
            "past_key_values": outputs.get("past_key_values"),
            "hidden_states": outputs.get("hidden_states"),
            "attentions": outputs.get("attentions"),
            "image_outputs": image_outputs,
        }, return_dict)


class LlavaForConditionalGeneration(LlavaPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.language_model.embed_tokens.weight"}
    # image inputs are consumed by the prefill; the compiled decode steps see token ids only
    _prefill_only_inputs = ("pixel_values", "image_sizes")

    def __init__(self, config: LlavaConfig):
        super().__init__(config)
        self.model = LlavaModel(config)
        self.lm_head = Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    def get_image_features(self, pixel_values, vision_feature_layer=None, vision_feature_select_strategy=None,
                           **kwargs):
        return self.model.get_image_features(pixel_values, vision_feature_layer, vision_feature_select_strategy,
                                             **kwargs)

    def construct(self, input_ids=None, pixel_values=None, attention_mask=None, position_ids=None,
                  past_key_values=None, inputs_embeds=None, vision_feature_layer=None,
                  vision_feature_select_strategy=None, labels=None, use_cache=None, output_attentions=None,
                  output_hidden_states=None, return_dict=None, cache_position=None, logits_to_keep=0,
                  image_sizes=None, **kwargs):
        r"""
        pixel_values: (N, C, H, W) images, one per `<image>` run in `input_ids` (in row-major order).
        labels: (B, S) token ids for the next-token loss; -100 positions are ignored. Labels are shifted inside.
        logits_to_keep: if > 0, logits only for the last `logits_to_keep` positions (generation needs one).
        """
        return_dict = return_dict if return_dict is not None else True
        outputs = self.model(
            input_ids=input_ids,
            pixel_values=pixel_values,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            vision_feature_layer=vision_feature_layer,
            vision_feature_select_strategy=vision_feature_select_strategy,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            cache_position=cache_position,
            image_sizes=image_sizes,
        )
        hidden_states = outputs["last_hidden_state"]
        if logits_to_keep > 0:
            hidden_states = hidden_states[:, -logits_to_keep:, :]
        logits = self.lm_head(hidden_states)

        loss = None
        if labels is not None:
            loss = causal_lm_loss(logits, labels, self.config.text_config.vocab_size, kwargs.get("num_items_in_batch"))

        return model_output(LlavaCausalLMOutputWithPast, {
            "loss": loss,
            "logits": logits,
            "past_key_values": outputs.get("past_key_values"),
            "hidden_states": outputs.get("hidden_states"),
            "attentions": outputs.get("attentions"),
            "image_outputs": outputs.get("image_outputs"),
        }, return_dict)

    def _prefill_inputs_embeds(self, input_ids, attention_mask, model_kwargs):
        """generate()'s prompt embeddings with the images merged in (tower and projector compiled); a compiled step
        prefills them."""
        embeds = self.get_input_embeddings()(input_ids)
        embeds, _ = self.model.merge_image_features(input_ids, embeds, model_kwargs.get("pixel_values"),
                                                    model_kwargs.get("vision_feature_layer"),
                                                    model_kwargs.get("vision_feature_select_strategy"),
                                                    compiled=True)
        return embeds, None

    def prepare_inputs_for_generation(self, input_ids, past_key_values=None, attention_mask=None,
                                      inputs_embeds=None, cache_position=None, position_ids=None, use_cache=True,
                                      is_first_iteration=False, pixel_values=None, image_sizes=None, **kwargs):
        inputs = super().prepare_inputs_for_generation(
            input_ids, past_key_values=past_key_values, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
            cache_position=cache_position, position_ids=position_ids, use_cache=use_cache,
            is_first_iteration=is_first_iteration, **kwargs)
        # images are read once, at the prefill; later steps continue from the cache
        if is_first_iteration or not use_cache:
            inputs["pixel_values"] = pixel_values
            inputs["image_sizes"] = image_sizes
        return inputs


__all__ = ["LlavaForConditionalGeneration", "LlavaModel", "LlavaPreTrainedModel"]
