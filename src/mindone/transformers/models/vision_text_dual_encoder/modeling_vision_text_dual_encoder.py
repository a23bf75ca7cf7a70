"""VisionTextDualEncoder on MindSpore: HF's `modeling_vision_text_dual_encoder.py` names, checkpoint keys and outputs.

Any of our vision models and any of our text models, each tower's pooled output projected into a shared space and
compared by cosine similarity times exp(logit_scale), as CLIP does. The towers are built from the sub-configs through
our Auto mapping (`clip_vision_model` -> CLIPVisionModel, `vit` -> ViTModel, `dinov2` -> Dinov2Model, `bert` ->
BertModel, `roberta` -> RobertaModel, ...), so the checkpoint keys are the towers' own under `vision_model.` /
`text_model.`, plus `visual_projection.weight`, `text_projection.weight` and `logit_scale`.

The pooled output is each tower's `pooler_output`, the one HF takes (`outputs[1]`): the dense+tanh pooler of
BERT / RoBERTa / ViT, the post-layernormed class token of CLIP, the layernormed class token of DINOv2. A tower
without one (DistilBERT) raises a ValueError here; HF fails on it with an IndexError.
"""

import logging

import mindspore as ms
from mindspore import ops
from mindspore.common.initializer import Normal
from transformers import AutoConfig, VisionTextDualEncoderConfig

from ...backend import functional as F
from ...backend import layers
from ...backend.layers import Linear, new_parameter
from ...modeling_outputs import CLIPOutput, model_output
from ...modeling_utils import PreTrainedModel, init_parameter
from ..auto.modeling_auto import AutoModel, model_class

logger = logging.getLogger(__name__)


def contrastive_loss(logits):
    return F.cross_entropy(logits, F.arange(logits.shape[0], dtype=ms.int64))


def image_text_contrastive_loss(similarity):
    return (contrastive_loss(similarity) + contrastive_loss(similarity.swapaxes(0, 1))) / 2.0


def _vector_norm(x):
    return (x * x).sum(-1, keepdims=True) ** 0.5


def _as_tuple(outputs):
    """A tower's output as HF's tuple (its non-None fields in order), from a ModelOutput or a graph's dict."""
    return tuple(v for v in outputs.values() if v is not None)


class VisionTextDualEncoderModel(PreTrainedModel):
    config_class = VisionTextDualEncoderConfig
    base_model_prefix = "vision_text_dual_encoder"

    def __init__(self, config: VisionTextDualEncoderConfig = None, vision_model: PreTrainedModel = None,
                 text_model: PreTrainedModel = None):
        r"""
        Args:
            config: a `VisionTextDualEncoderConfig`; built from the towers' configs when omitted.
            vision_model, text_model: already built towers (e.g. loaded ones); otherwise built from
                `config.vision_config` / `config.text_config` through `AutoModel`.
        """
        if config is None and (vision_model is None or text_model is None):
            raise ValueError("Either a configuration or an vision and a text model has to be provided")
        if config is None:
            config = VisionTextDualEncoderConfig.from_vision_text_configs(vision_model.config, text_model.config)
        elif not isinstance(config, self.config_class):
            raise ValueError(f"config: {config} has to be of type {self.config_class}")
        super().__init__(config)

        if vision_model is None:
            vision_model = AutoModel.from_config(config.vision_config)
        if text_model is None:
            text_model = AutoModel.from_config(config.text_config)
        self.vision_model = vision_model
        self.text_model = text_model
        # the towers read the shared sub-configs, so a change to `config.text_config` reaches the text tower (as HF)
        self.vision_model.config = config.vision_config
        self.text_model.config = config.text_config
        self._no_pooler_messages = tuple(
            f"{type(tower).__name__} returns no pooler_output, which VisionTextDualEncoderModel projects; use a "
            f"{role} model with a pooled output" for tower, role in ((vision_model, "vision"), (text_model, "text"))
        )
        # checkpoint keys the towers ignore are ignored under their prefixes too
        ignored = [p for tower in (vision_model, text_model) for p in (tower._keys_to_ignore_on_load_unexpected or ())]
        if ignored:
            self._keys_to_ignore_on_load_unexpected = ignored

        self.vision_embed_dim = config.vision_config.hidden_size
        self.text_embed_dim = config.text_config.hidden_size
        self.projection_dim = config.projection_dim
        self.visual_projection = Linear(self.vision_embed_dim, self.projection_dim, bias=False)
        self.text_projection = Linear(self.text_embed_dim, self.projection_dim, bias=False)
        self.logit_scale = new_parameter((), config.logit_scale_init_value)
        self.post_init()

    # ------------------------------------------------------------------------------------------------------------
    # initialisation: the towers initialise (or load) themselves; the projections and the temperature are ours
    # ------------------------------------------------------------------------------------------------------------

    def init_weights(self):
        for cell in (self, self.visual_projection, self.text_projection):
            self._init_weights(cell)

    def _init_weights(self, cell):
        """HF's default for the projections: normal(0, the text config's initializer_range); logit_scale from the
        config."""
        if cell is self:
            init_parameter(self.logit_scale, float(self.config.logit_scale_init_value))
        elif cell is self.visual_projection or cell is self.text_projection:
            std = getattr(self.config.get_text_config(), "initializer_range", 0.02) or 0.02
            init_parameter(cell.weight, Normal(std))

    def _initialize_missing(self, keys, params):
        """Missing tower weights get their tower's own initialisation scheme."""
        own = list(keys)
        for name in ("vision_model", "text_model"):
            prefix = name + "."
            tower = getattr(self, name)
            tower_keys = [k[len(prefix):] for k in keys if k.startswith(prefix)]
            own = [k for k in own if not k.startswith(prefix)]
            tower._initialize_missing(tower_keys, tower.named_parameters_dict())
        super()._initialize_missing(own, params)

    def get_input_embeddings(self):
        return self.text_model.get_input_embeddings()

    # ------------------------------------------------------------------------------------------------------------
    # forward
    # ------------------------------------------------------------------------------------------------------------

    def _text_outputs(self, input_ids, attention_mask, position_ids, token_type_ids, output_attentions,
                      output_hidden_states):
        # token_type_ids only when given: not every text tower takes them (CLIP's, DistilBERT's)
        if token_type_ids is None:
            return self.text_model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                   output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                                   return_dict=True)
        return self.text_model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                               position_ids=position_ids, output_attentions=output_attentions,
                               output_hidden_states=output_hidden_states, return_dict=True)

    def _vision_outputs(self, pixel_values, output_attentions, output_hidden_states):
        return self.vision_model(pixel_values=pixel_values, output_attentions=output_attentions,
                                 output_hidden_states=output_hidden_states, return_dict=True)

    def _pooled(self, outputs, tower_index):
        pooled = outputs.get("pooler_output")
        if pooled is None:
            raise ValueError(self._no_pooler_messages[tower_index])
        return pooled

    def get_text_features(self, input_ids=None, attention_mask=None, position_ids=None, token_type_ids=None,
                          output_attentions=None, output_hidden_states=None, return_dict=None, **kwargs):
        """The text tower's output with `pooler_output` replaced by the projected text embeddings (HF 5)."""
        text_outputs = self._text_outputs(input_ids, attention_mask, position_ids, token_type_ids, output_attentions,
                                          output_hidden_states)
        text_outputs["pooler_output"] = self.text_projection(self._pooled(text_outputs, 1))
        return text_outputs if return_dict is not False else _as_tuple(text_outputs)

    def get_image_features(self, pixel_values=None, output_attentions=None, output_hidden_states=None,
                           return_dict=None, **kwargs):
        """The vision tower's output with `pooler_output` replaced by the projected image embeddings (HF 5)."""
        vision_outputs = self._vision_outputs(pixel_values, output_attentions, output_hidden_states)
        vision_outputs["pooler_output"] = self.visual_projection(self._pooled(vision_outputs, 0))
        return vision_outputs if return_dict is not False else _as_tuple(vision_outputs)

    def construct(self, input_ids=None, pixel_values=None, attention_mask=None, position_ids=None, return_loss=None,
                  token_type_ids=None, output_attentions=None, output_hidden_states=None, return_dict=None,
                  **kwargs):
        r"""
        return_loss: also return the symmetric contrastive loss (row i of the texts matches image i).
        Returns `logits_per_image` (images x texts) and `logits_per_text`, cosine similarities times exp(logit_scale),
        the normalised `text_embeds` / `image_embeds`, and each tower's own output.
        """
        vision_outputs = self._vision_outputs(pixel_values, output_attentions, output_hidden_states)
        text_outputs = self._text_outputs(input_ids, attention_mask, position_ids, token_type_ids, output_attentions,
                                          output_hidden_states)
        image_embeds = self.visual_projection(self._pooled(vision_outputs, 0))
        text_embeds = self.text_projection(self._pooled(text_outputs, 1))
        image_embeds = image_embeds / _vector_norm(image_embeds)
        text_embeds = text_embeds / _vector_norm(text_embeds)

        logits_per_text = ops.matmul(text_embeds, image_embeds.swapaxes(0, 1))
        logits_per_text = logits_per_text * ops.exp(self.logit_scale).astype(logits_per_text.dtype)
        logits_per_image = logits_per_text.swapaxes(0, 1)

        loss = image_text_contrastive_loss(logits_per_text) if return_loss else None
        if return_dict is False:
            text_outputs, vision_outputs = _as_tuple(text_outputs), _as_tuple(vision_outputs)
        fields = {"loss": loss, "logits_per_image": logits_per_image, "logits_per_text": logits_per_text,
                  "text_embeds": text_embeds, "image_embeds": image_embeds, "text_model_output": text_outputs,
                  "vision_model_output": vision_outputs}
        return model_output(CLIPOutput, fields, return_dict is not False)

    # ------------------------------------------------------------------------------------------------------------
    # building from two pretrained towers
    # ------------------------------------------------------------------------------------------------------------

    @classmethod
    def from_vision_text_pretrained(cls, vision_model_name_or_path=None, text_model_name_or_path=None, *model_args,
                                    **kwargs):
        """A dual encoder from a pretrained vision model and a pretrained text model; the projections and
        `logit_scale` are newly initialised.

        Args:
            vision_model_name_or_path: directory or hub id of the vision model. A full CLIP checkpoint gives its
                vision tower (`CLIPVisionModel`), as in HF.
            text_model_name_or_path: directory or hub id of the text model.
            model_args: passed to both towers' `from_pretrained`.
            kwargs: `vision_*` / `text_*` arguments go to that tower's `from_pretrained` without the prefix
                (`vision_model=` / `text_model=` give an already built tower, `vision_config=` / `text_config=` a
                config); `dtype` (ours: HF leaves it to the prefixed arguments) applies to both towers and the
                projections; the rest updates the `VisionTextDualEncoderConfig` (e.g. `projection_dim=512`).
        """
        kwargs_vision = {k[len("vision_"):]: kwargs.pop(k) for k in list(kwargs) if k.startswith("vision_")}
        kwargs_text = {k[len("text_"):]: kwargs.pop(k) for k in list(kwargs) if k.startswith("text_")}
        dtype = kwargs.pop("dtype", None)
        torch_dtype = kwargs.pop("torch_dtype", None)
        dtype = dtype if dtype is not None else torch_dtype
        if dtype is not None:
            kwargs_vision.setdefault("dtype", dtype)
            kwargs_text.setdefault("dtype", dtype)

        vision_model = kwargs_vision.pop("model", None)
        if vision_model is None:
            if vision_model_name_or_path is None:
                raise ValueError("If `vision_model` is not defined as an argument, a `vision_model_name_or_path` has "
                                 "to be defined")
            vision_config = kwargs_vision.pop("config", None)
            if vision_config is None:
                vision_config = AutoConfig.from_pretrained(vision_model_name_or_path)
            if vision_config.model_type == "clip":
                vision_model = model_class("clip_vision_model", "base").from_pretrained(
                    vision_model_name_or_path, *model_args, config=vision_config.vision_config, **kwargs_vision)
            else:
                vision_model = AutoModel.from_pretrained(vision_model_name_or_path, *model_args, config=vision_config,
                                                         **kwargs_vision)

        text_model = kwargs_text.pop("model", None)
        if text_model is None:
            if text_model_name_or_path is None:
                raise ValueError("If `text_model` is not defined as an argument, a `text_model_name_or_path` has to "
                                 "be defined")
            text_config = kwargs_text.pop("config", None)
            if text_config is None:
                text_config = AutoConfig.from_pretrained(text_model_name_or_path)
            text_model = AutoModel.from_pretrained(text_model_name_or_path, *model_args, config=text_config,
                                                   **kwargs_text)

        config = VisionTextDualEncoderConfig.from_vision_text_configs(vision_model.config, text_model.config, **kwargs)
        # the projections in the dtype the towers were loaded in
        with layers.dtype_scope(text_model.dtype):
            model = cls(config=config, vision_model=vision_model, text_model=text_model)
        model.set_train(False)
        logger.warning("The projection layer and logit scale weights `['visual_projection.weight', "
                       "'text_projection.weight', 'logit_scale']` are newly initialized. You should probably TRAIN "
                       "this model on a down-stream task to be able to use it for predictions and inference.")
        return model


__all__ = ["VisionTextDualEncoderModel"]
