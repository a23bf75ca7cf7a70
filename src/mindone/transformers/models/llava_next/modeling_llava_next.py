"""LLaVA-NeXT on MindSpore: HF's `modeling_llava_next.py` class names, checkpoint keys, forward signature and outputs.

LLaVA with any-resolution images: the image processor resizes each image to the best of `image_grid_pinpoints`,
cuts it into vision-tower-sized tiles and prepends a downscaled base tile. Here every tile goes through the vision
tower and the projector; the tiles' feature grids are stitched back into one grid, the padding the processor added is
cut off (`unpad_image`), an `image_newline` vector ends every row, and the base tile's features come first.

The stitching depends on each image's size (`image_sizes`, read on the host), so image inputs run in PyNative; under
`mindspore.jit` the model takes text (and `generate()` compiles the decode steps, the images being in the cache by
then). The projector, placeholder scatter, checkpoint layout and generation follow `models/llava`.
"""

import math

import numpy as np
from mindspore.common.initializer import Normal
from transformers import LlavaNextConfig

from ...backend import functional as F
from ...backend import runtime
from ...backend.layers import Linear, new_parameter
from ...generation import GenerationMixin
from ...loss_utils import causal_lm_loss
from ...modeling_outputs import BaseModelOutputWithPooling, model_output
from ...modeling_utils import init_parameter
from ..auto.modeling_auto import AutoModel
from ..llava.modeling_llava import (
    LlavaCausalLMOutputWithPast,
    LlavaModelOutputWithPast,
    LlavaMultiModalProjector,
    LlavaPreTrainedModel,
    image_token_mask,
    scatter_image_features,
    select_vision_features,
)


class LlavaNextModelOutputWithPast(LlavaModelOutputWithPast):
    pass


class LlavaNextCausalLMOutputWithPast(LlavaCausalLMOutputWithPast):
    pass


class LlavaNextMultiModalProjector(LlavaMultiModalProjector):
    pass


def select_best_resolution(original_size, possible_resolutions):
    """The (height, width) of `possible_resolutions` keeping most of the image's pixels when it is fitted inside,
    ties broken by the least padding (the processor's choice)."""
    original_height, original_width = original_size
    best, best_effective, best_wasted = None, 0, float("inf")
    for height, width in possible_resolutions:
        scale = min(width / original_width, height / original_height)
        fitted = int(original_width * scale) * int(original_height * scale)
        effective = min(fitted, original_width * original_height)
        wasted = width * height - effective
        if effective > best_effective or (effective == best_effective and wasted < best_wasted):
            best, best_effective, best_wasted = (height, width), effective, wasted
    return best


def get_anyres_image_grid_shape(image_size, grid_pinpoints, patch_size):
    """(tiles down, tiles across) of an image of `image_size` (height, width) with tiles of `patch_size` pixels."""
    if not isinstance(grid_pinpoints, list):
        raise TypeError("grid_pinpoints should be a list of tuples or lists")
    height, width = select_best_resolution([int(v) for v in image_size], grid_pinpoints)
    return height // patch_size, width // patch_size


def image_size_to_num_patches(image_size, grid_pinpoints, patch_size):
    """Tiles the processor makes for an image of `image_size`: the grid's tiles plus the base tile."""
    if not isinstance(grid_pinpoints, list):
        raise TypeError("grid_pinpoints should be a list of tuples or lists")
    height, width = select_best_resolution([int(v) for v in image_size], grid_pinpoints)
    return math.ceil(height / patch_size) * math.ceil(width / patch_size) + 1


def unpad_image(tensor, original_size):
    """Cuts the (C, H, W) feature grid back to the aspect ratio of the original (height, width) image: the processor
    padded the resized image symmetrically along its shorter side."""
    original_height, original_width = (int(v) for v in original_size)
    current_height, current_width = tensor.shape[1:]
    if original_width / original_height > current_width / current_height:
        new_height = int(round(original_height * (current_width / original_width), 7))
        padding = (current_height - new_height) // 2
        return tensor[:, padding:current_height - padding, :]
    new_width = int(round(original_width * (current_height / original_height), 7))
    padding = (current_width - new_width) // 2
    return tensor[:, :, padding:current_width - padding]


class LlavaNextPreTrainedModel(LlavaPreTrainedModel):
    config_class = LlavaNextConfig

    def _init_weights(self, cell):
        super()._init_weights(cell)
        if isinstance(cell, LlavaNextModel):
            init_parameter(cell.image_newline, Normal(1 / math.sqrt(self.config.text_config.hidden_size)))


class LlavaNextModel(LlavaNextPreTrainedModel):
    """The vision tower, the projector, `image_newline` and the language model, without a language-modelling head."""

    def __init__(self, config: LlavaNextConfig):
        super().__init__(config)
        self.vision_tower = AutoModel.from_config(config.vision_config)
        self.multi_modal_projector = LlavaNextMultiModalProjector(config)
        self.image_newline = new_parameter((config.text_config.hidden_size,), "zeros")
        self.vocab_size = config.text_config.vocab_size
        self.language_model = AutoModel.from_config(config.text_config)
        self.vision_tower.config = config.vision_config
        self.language_model.config = config.text_config
        self.post_init()

    def get_input_embeddings(self):
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.language_model.set_input_embeddings(value)

    def pack_image_features(self, image_features, image_sizes, vision_feature_select_strategy, image_newline=None):
        """Per image: the base tile's features, then the stitched, unpadded tile grid with `image_newline` ending
        every row. Returns (list of (length_i, hidden) tensors, feature lengths as an int64 numpy array)."""
        vision = self.config.vision_config
        side = vision.image_size // vision.patch_size
        packed, lengths = [], []
        for image_feature, image_size in zip(image_features, image_sizes):
            if image_feature.shape[0] > 1:
                base, tiles = image_feature[0], image_feature[1:]
                rows, cols = get_anyres_image_grid_shape(image_size, self.config.image_grid_pinpoints,
                                                         vision.image_size)
                if int(np.prod(tiles.shape)) % (rows * cols * side * side) != 0:
                    raise ValueError(f"image of size {tuple(int(v) for v in image_size)}: {tiles.shape[0]} tiles of "
                                     f"{tiles.shape[1]} features do not make a {rows}x{cols} grid of {side}x{side} "
                                     f"(vision_feature_select_strategy={vision_feature_select_strategy!r})")
                # (rows, cols, side, side, D) -> (D, rows*side, cols*side): the tiles stitched into one grid
                grid = tiles.reshape(rows, cols, side, side, -1).permute(4, 0, 2, 1, 3)
                grid = grid.reshape(grid.shape[0], rows * side, cols * side)
                grid = unpad_image(grid, image_size)
                if image_newline is not None:
                    newline = F.cast(image_newline, grid.dtype).reshape(-1, 1, 1)
                    grid = F.cat([grid, newline.broadcast_to(grid.shape[:-1] + (1,))], -1)
                grid = grid.reshape(grid.shape[0], -1).swapaxes(0, 1)
                image_feature = F.cat([base, grid], 0)
            else:
                image_feature = image_feature[0]
                if image_newline is not None:
                    image_feature = F.cat([image_feature, F.cast(image_newline, image_feature.dtype)[None]], 0)
            packed.append(image_feature)
            lengths.append(image_feature.shape[0])
        return packed, np.array(lengths, np.int64)

    def get_image_features(self, pixel_values, image_sizes, vision_feature_layer=None,
                           vision_feature_select_strategy=None, return_dict=True, **kwargs):
        r"""
        pixel_values: (num_images, max_tiles, C, H, W) tiles from the processor (or (total_tiles, C, H, W)).
        image_sizes: (num_images, 2) original (height, width) of each image.

        Returns `BaseModelOutputWithPooling` of the tower whose `pooler_output` is the tuple of per-image packed
        features, each (length_i, text hidden size).
        """
        if runtime.in_graph():
            raise ValueError("LlavaNext image features depend on `image_sizes` on the host: run the image prefill "
                             "in PyNative (generate() does)")
        vision_feature_layer = (vision_feature_layer if vision_feature_layer is not None
                                else self.config.vision_feature_layer)
        vision_feature_select_strategy = (vision_feature_select_strategy if vision_feature_select_strategy is not None
                                          else self.config.vision_feature_select_strategy)
        sizes = image_sizes.asnumpy() if hasattr(image_sizes, "asnumpy") else np.asarray(image_sizes)
        tile = self.config.vision_config.image_size
        num_tiles = [image_size_to_num_patches(s, self.config.image_grid_pinpoints, tile) for s in sizes]
        if pixel_values.ndim == 5:
            pixel_values = F.cat([p[:n] for p, n in zip(pixel_values, num_tiles)], 0)
        elif pixel_values.ndim != 4:
            raise ValueError(f"pixel_values of shape {tuple(pixel_values.shape)}, expect to be of 4 or 5 dimensions")
        outputs = self.vision_tower(pixel_values.astype(self.dtype), output_hidden_states=True, return_dict=True)
        selected = select_vision_features(outputs["hidden_states"], vision_feature_layer,
                                          vision_feature_select_strategy)
        features = self.multi_modal_projector(selected)
        starts = np.cumsum([0] + num_tiles)
        per_image = [features[int(a):int(b)] for a, b in zip(starts[:-1], starts[1:])]
        packed, _ = self.pack_image_features(per_image, sizes, vision_feature_select_strategy,
                                             image_newline=self.image_newline)
        fields = {"last_hidden_state": outputs["last_hidden_state"], "pooler_output": tuple(packed),
                  "hidden_states": outputs["hidden_states"] if kwargs.get("output_hidden_states") else None}
        return model_output(BaseModelOutputWithPooling, fields, return_dict)

    def merge_image_features(self, input_ids, inputs_embeds, pixel_values, image_sizes, vision_feature_layer=None,
                             vision_feature_select_strategy=None, output_hidden_states=None):
        """(inputs_embeds with the packed image features at the `<image>` placeholders, image outputs or None)."""
        if pixel_values is None or pixel_values.shape[0] == 0:
            return inputs_embeds, None
        image_outputs = self.get_image_features(pixel_values, image_sizes, vision_feature_layer,
                                                vision_feature_select_strategy,
                                                output_hidden_states=output_hidden_states)
        features = F.cat(list(image_outputs["pooler_output"]), 0)
        mask = image_token_mask(self, input_ids, inputs_embeds, self.config.image_token_id)
        return scatter_image_features(inputs_embeds, mask, features), image_outputs

    def construct(self, input_ids=None, pixel_values=None, image_sizes=None, attention_mask=None, position_ids=None,
                  past_key_values=None, inputs_embeds=None, vision_feature_layer=None,
                  vision_feature_select_strategy=None, use_cache=None, output_attentions=None,
                  output_hidden_states=None, return_dict=None, cache_position=None, **kwargs):
        return_dict = return_dict if return_dict is not None else True
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)

        inputs_embeds, image_outputs = self.merge_image_features(input_ids, inputs_embeds, pixel_values, image_sizes,
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
        return model_output(LlavaNextModelOutputWithPast, {
            "last_hidden_state": outputs["last_hidden_state"],
            "past_key_values": outputs.get("past_key_values"),
            "hidden_states": outputs.get("hidden_states"),
            "attentions": outputs.get("attentions"),
            "image_outputs": image_outputs,
        }, return_dict)


class LlavaNextForConditionalGeneration(LlavaNextPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.language_model.embed_tokens.weight"}
    _prefill_only_inputs = ("pixel_values", "image_sizes")

    def __init__(self, config: LlavaNextConfig):
        super().__init__(config)
        self.model = LlavaNextModel(config)
        self.lm_head = Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    def pack_image_features(self, image_features, image_sizes, vision_feature_select_strategy, image_newline=None):
        return self.model.pack_image_features(image_features, image_sizes, vision_feature_select_strategy,
                                              image_newline)

    def get_image_features(self, pixel_values, image_sizes, vision_feature_layer=None,
                           vision_feature_select_strategy=None, **kwargs):
        return self.model.get_image_features(pixel_values, image_sizes, vision_feature_layer,
                                             vision_feature_select_strategy, **kwargs)

    def construct(self, input_ids=None, pixel_values=None, image_sizes=None, attention_mask=None, position_ids=None,
                  past_key_values=None, inputs_embeds=None, vision_feature_layer=None,
                  vision_feature_select_strategy=None, labels=None, use_cache=None, output_attentions=None,
                  output_hidden_states=None, return_dict=None, cache_position=None, logits_to_keep=0, **kwargs):
        r"""
        pixel_values: (num_images, max_tiles, C, H, W) from `LlavaNextImageProcessor`; image_sizes: (num_images, 2).
        labels: (B, S) token ids for the next-token loss; -100 positions are ignored. Labels are shifted inside.
        logits_to_keep: if > 0, logits only for the last `logits_to_keep` positions (generation needs one).
        """
        return_dict = return_dict if return_dict is not None else True
        outputs = self.model(
            input_ids=input_ids,
            pixel_values=pixel_values,
            image_sizes=image_sizes,
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
        )
        hidden_states = outputs["last_hidden_state"]
        if logits_to_keep > 0:
            hidden_states = hidden_states[:, -logits_to_keep:, :]
        logits = self.lm_head(hidden_states)

        loss = None
        if labels is not None:
            loss = causal_lm_loss(logits, labels, self.config.text_config.vocab_size, kwargs.get("num_items_in_batch"))

        return model_output(LlavaNextCausalLMOutputWithPast, {
            "loss": loss,
            "logits": logits,
            "past_key_values": outputs.get("past_key_values"),
            "hidden_states": outputs.get("hidden_states"),
            "attentions": outputs.get("attentions"),
            "image_outputs": outputs.get("image_outputs"),
        }, return_dict)

    def _prefill_inputs_embeds(self, input_ids, attention_mask, model_kwargs):
        """generate()'s prompt embeddings with the images merged in (PyNative); a compiled step prefills them."""
        embeds = self.get_input_embeddings()(input_ids)
        embeds, _ = self.model.merge_image_features(input_ids, embeds, model_kwargs.get("pixel_values"),
                                                    model_kwargs.get("image_sizes"),
                                                    model_kwargs.get("vision_feature_layer"),
                                                    model_kwargs.get("vision_feature_select_strategy"))
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


__all__ = ["LlavaNextForConditionalGeneration", "LlavaNextModel", "LlavaNextPreTrainedModel"]
