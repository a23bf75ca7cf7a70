"""CLIP on MindSpore: HF's `modeling_clip.py` structure, names and outputs; device concerns live in `backend`.

Text tower (causal, pooled at the end-of-text token), vision tower (ViT with a class token) and the contrastive model.
Checkpoint keys: transformers 5 saves `CLIPTextModel` / `CLIPVisionModel` without the `text_model.` /
`vision_model.` prefix that older and diffusers checkpoints carry; both load (the prefix is the base-model prefix).
"""

import mindspore as ms
import numpy as np
from mindspore import nn, ops
from mindspore.common.initializer import Normal
from transformers import CLIPConfig, CLIPTextConfig, CLIPVisionConfig

from ...backend import functional as F
from ...backend.layers import Conv2d, Embedding, LayerNorm, Linear, new_parameter
from ...masking_utils import create_causal_mask
from ...modeling_layers import GradientCheckpointingLayer
from ...modeling_outputs import (
    model_output,
    BaseModelOutputWithPooling,
    CLIPOutput,
    CLIPTextModelOutput,
    CLIPVisionModelOutput,
)
from ...modeling_utils import PreTrainedModel, init_parameter


def contrastive_loss(logits):
    return F.cross_entropy(logits, F.arange(logits.shape[0], dtype=ms.int64))


def image_text_contrastive_loss(similarity):
    return (contrastive_loss(similarity) + contrastive_loss(similarity.swapaxes(0, 1))) / 2.0


def _vector_norm(x):
    return (x * x).sum(-1, keepdims=True) ** 0.5


class CLIPVisionEmbeddings(nn.Cell):
    def __init__(self, config: CLIPVisionConfig):
        super().__init__()
        self.config = config
        self.embed_dim = config.hidden_size
        self.image_size = config.image_size
        self.patch_size = config.patch_size
        self.class_embedding = new_parameter((self.embed_dim,), Normal(1.0))
        self.patch_embedding = Conv2d(config.num_channels, self.embed_dim, kernel_size=self.patch_size,
                                      stride=self.patch_size, bias=False)
        self.num_patches = (self.image_size // self.patch_size) ** 2
        self.num_positions = self.num_patches + 1
        self.position_embedding = Embedding(self.num_positions, self.embed_dim)

    def interpolate_pos_encoding(self, embeddings, height, width):
        """Position table resized (bicubic, as HF) to a `height` x `width` image's patch grid; the class token's
        entry is kept."""
        num_patches = embeddings.shape[1] - 1
        num_positions = self.num_positions - 1
        if num_patches == num_positions and height == width:
            return self.position_embedding(F.arange(self.num_positions, dtype=ms.int64))[None]
        position_embedding = self.position_embedding.weight[None]
        class_pos_embed = position_embedding[:, :1]
        patch_pos_embed = position_embedding[:, 1:]
        dim = embeddings.shape[-1]
        side = int(num_positions ** 0.5)
        patch_pos_embed = patch_pos_embed.reshape(1, side, side, dim).permute(0, 3, 1, 2)
        patch_pos_embed = F.interpolate(patch_pos_embed, (height // self.patch_size, width // self.patch_size),
                                        mode="bicubic", align_corners=False)
        patch_pos_embed = patch_pos_embed.permute(0, 2, 3, 1).reshape(1, -1, dim)
        return F.cat([class_pos_embed, patch_pos_embed], 1)

    def construct(self, pixel_values, interpolate_pos_encoding=False):
        batch_size, _, height, width = pixel_values.shape
        if not interpolate_pos_encoding and (height != self.image_size or width != self.image_size):
            raise ValueError(f"Input image size ({height}*{width}) doesn't match model "
                             f"({self.image_size}*{self.image_size}).")
        patch_embeds = self.patch_embedding(pixel_values.astype(self.patch_embedding.weight.dtype))
        patch_embeds = patch_embeds.reshape(batch_size, self.embed_dim, -1).swapaxes(1, 2)  # (B, grid*grid, D)
        class_embeds = ops.broadcast_to(self.class_embedding.reshape(1, 1, -1), (batch_size, 1, self.embed_dim))
        embeddings = F.cat([class_embeds.astype(patch_embeds.dtype), patch_embeds], 1)
        if interpolate_pos_encoding:
            return embeddings + self.interpolate_pos_encoding(embeddings, height, width)
        return embeddings + self.position_embedding(F.arange(self.num_positions, dtype=ms.int64))[None]


class CLIPTextEmbeddings(nn.Cell):
    def __init__(self, config: CLIPTextConfig):
        super().__init__()
        self.token_embedding = Embedding(config.vocab_size, config.hidden_size)
        self.position_embedding = Embedding(config.max_position_embeddings, config.hidden_size)

    def construct(self, input_ids=None, position_ids=None, inputs_embeds=None):
        seq_length = input_ids.shape[-1] if input_ids is not None else inputs_embeds.shape[-2]
        max_position_embedding = self.position_embedding.weight.shape[0]
        if seq_length > max_position_embedding:
            raise ValueError(f"Sequence length must be less than max_position_embeddings (got `sequence length`: "
                             f"{seq_length} and max_position_embeddings: {max_position_embedding}")
        if position_ids is None:
            position_ids = F.arange(seq_length, dtype=ms.int64)[None]
        if inputs_embeds is None:
            inputs_embeds = self.token_embedding(input_ids)
        return inputs_embeds + self.position_embedding(position_ids)


class CLIPAttention(nn.Cell):
    """Multi-headed attention from 'Attention Is All You Need' paper"""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.embed_dim = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = self.embed_dim // self.num_heads
        self.scale = self.head_dim ** -0.5
        self.dropout = config.attention_dropout
        self.k_proj = Linear(self.embed_dim, self.embed_dim)
        self.v_proj = Linear(self.embed_dim, self.embed_dim)
        self.q_proj = Linear(self.embed_dim, self.embed_dim)
        self.out_proj = Linear(self.embed_dim, self.embed_dim)

    def construct(self, hidden_states, attention_mask=None):
        batch, seq_len = hidden_states.shape[:2]
        queries = self.q_proj(hidden_states).reshape(batch, seq_len, -1, self.head_dim).swapaxes(1, 2)
        keys = self.k_proj(hidden_states).reshape(batch, seq_len, -1, self.head_dim).swapaxes(1, 2)
        values = self.v_proj(hidden_states).reshape(batch, seq_len, -1, self.head_dim).swapaxes(1, 2)
        attn_output, attn_weights = F.attention(queries, keys, values, attn_mask=attention_mask, scale=self.scale,
                                                dropout_p=self.dropout if self.training else 0.0,
                                                training=self.training)
        attn_output = attn_output.swapaxes(1, 2).reshape(batch, seq_len, -1)
        return self.out_proj(attn_output), attn_weights


class CLIPMLP(nn.Cell):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.activation_fn = F.get_activation(config.hidden_act)
        self.fc1 = Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = Linear(config.intermediate_size, config.hidden_size)

    def construct(self, hidden_states):
        return self.fc2(self.activation_fn(self.fc1(hidden_states)))


class CLIPEncoderLayer(GradientCheckpointingLayer):
    def __init__(self, config):
        super().__init__()
        self.embed_dim = config.hidden_size
        self.self_attn = CLIPAttention(config)
        self.layer_norm1 = LayerNorm(self.embed_dim, eps=config.layer_norm_eps)
        self.mlp = CLIPMLP(config)
        self.layer_norm2 = LayerNorm(self.embed_dim, eps=config.layer_norm_eps)

    def construct(self, hidden_states, attention_mask=None):
        residual = hidden_states
        hidden_states, attn_weights = self.self_attn(self.layer_norm1(hidden_states), attention_mask)
        hidden_states = residual + hidden_states
        hidden_states = hidden_states + self.mlp(self.layer_norm2(hidden_states))
        return hidden_states, attn_weights


class CLIPEncoder(nn.Cell):
    """`config.num_hidden_layers` CLIPEncoderLayers; returns (last, hidden_states or None, attentions or None)."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.layers = nn.CellList([CLIPEncoderLayer(config) for _ in range(config.num_hidden_layers)])

    def construct(self, inputs_embeds, attention_mask=None, output_attentions=False, output_hidden_states=False):
        all_hidden_states = () if output_hidden_states else None
        all_attentions = () if output_attentions else None
        hidden_states = inputs_embeds
        for encoder_layer in self.layers:
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            hidden_states, attn_weights = encoder_layer(hidden_states, attention_mask)
            if output_attentions:
                all_attentions += (attn_weights,)
        # HF keeps the last layer's output (before the final norm) as the last hidden state of the tuple
        if output_hidden_states:
            all_hidden_states += (hidden_states,)
        return hidden_states, all_hidden_states, all_attentions


class CLIPPreTrainedModel(PreTrainedModel):
    config_class = CLIPConfig
    base_model_prefix = "clip"
    supports_gradient_checkpointing = True
    _no_split_modules = ["CLIPTextEmbeddings", "CLIPEncoderLayer", "CLIPVisionEmbeddings"]

    def _output_flags(self, output_attentions, output_hidden_states):
        config = self.config
        return (output_attentions if output_attentions is not None else config.output_attentions,
                output_hidden_states if output_hidden_states is not None else config.output_hidden_states)

    def _init_weights(self, cell):
        """HF's CLIP scheme (stds scaled by width and depth, times `initializer_factor`)."""
        super()._init_weights(cell)
        config = self.config
        factor = config.initializer_factor

        def normal(param, std):
            init_parameter(param, Normal(std))

        if isinstance(cell, CLIPTextEmbeddings):
            normal(cell.token_embedding.weight, factor * 0.02)
            normal(cell.position_embedding.weight, factor * 0.02)
        elif isinstance(cell, CLIPVisionEmbeddings):
            normal(cell.class_embedding, cell.embed_dim ** -0.5 * factor)
            normal(cell.patch_embedding.weight, cell.config.initializer_range * factor)
            normal(cell.position_embedding.weight, cell.config.initializer_range * factor)
        elif isinstance(cell, CLIPAttention):
            in_proj_std = (cell.embed_dim ** -0.5) * ((2 * cell.config.num_hidden_layers) ** -0.5) * factor
            for proj in (cell.q_proj, cell.k_proj, cell.v_proj):
                normal(proj.weight, in_proj_std)
            normal(cell.out_proj.weight, (cell.embed_dim ** -0.5) * factor)
        elif isinstance(cell, CLIPMLP):
            hidden = cell.config.hidden_size
            normal(cell.fc1.weight, (2 * hidden) ** -0.5 * factor)
            normal(cell.fc2.weight, (hidden ** -0.5) * ((2 * cell.config.num_hidden_layers) ** -0.5) * factor)
        elif isinstance(cell, CLIPModel):
            normal(cell.text_projection.weight, cell.text_embed_dim ** -0.5 * factor)
            normal(cell.visual_projection.weight, cell.vision_embed_dim ** -0.5 * factor)
        elif isinstance(cell, CLIPVisionModelWithProjection):
            normal(cell.visual_projection.weight, config.hidden_size ** -0.5 * factor)
        elif isinstance(cell, CLIPTextModelWithProjection):
            normal(cell.text_projection.weight, config.hidden_size ** -0.5 * factor)


def _tensors(*values):
    """numpy inputs as Tensors for the methods that are not `construct` (`__call__` converts the others)."""
    return tuple(ms.Tensor(v) if isinstance(v, np.ndarray) else v for v in values)


def _first_index(condition):
    """(B,) index of the first True along the last axis (torch's argmax tie rule); the length when there is none."""
    length = condition.shape[-1]
    positions = F.arange(length, dtype=ms.int32)
    return ops.amin(ops.where(condition, positions, F.full((), length, ms.int32)), -1)


class CLIPTextModel(CLIPPreTrainedModel):
    """The text model from CLIP without any head or projection on top."""

    config_class = CLIPTextConfig
    base_model_prefix = "text_model"

    def __init__(self, config: CLIPTextConfig):
        super().__init__(config)
        self.embeddings = CLIPTextEmbeddings(config)
        self.encoder = CLIPEncoder(config)
        self.final_layer_norm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.eos_token_id = config.eos_token_id
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.token_embedding

    def set_input_embeddings(self, value):
        self.embeddings.token_embedding = value

    def construct(self, input_ids=None, attention_mask=None, position_ids=None, output_attentions=None,
                  output_hidden_states=None, return_dict=None, **kwargs):
        r"""
        Args:
            input_ids: (B, S) token ids; pooling takes the end-of-text position of each row.
            attention_mask: (B, S) 1/0 padding mask, combined with the causal mask.
            output_hidden_states: also return the embeddings and every layer's output (the last one before
                `final_layer_norm`; SDXL conditions on `hidden_states[-2]`).
        """
        if input_ids is None:
            raise ValueError("You have to specify input_ids")
        output_attentions, output_hidden_states = self._output_flags(output_attentions, output_hidden_states)
        last_hidden_state, pooled_output, all_hidden_states, all_attentions = self._forward(
            input_ids, attention_mask, position_ids, output_attentions, output_hidden_states
        )
        fields = {"last_hidden_state": last_hidden_state, "pooler_output": pooled_output,
                  "hidden_states": all_hidden_states, "attentions": all_attentions}
        return model_output(BaseModelOutputWithPooling, fields, return_dict is not False)

    def _forward(self, input_ids, attention_mask, position_ids, output_attentions, output_hidden_states):
        """(last_hidden_state, pooled, hidden_states, attentions): plain tuples are what the heads use, since
        output objects read back inside a MindSpore graph lose their types."""
        input_ids = input_ids.reshape(-1, input_ids.shape[-1])
        batch_size, seq_len = input_ids.shape
        hidden_states = self.embeddings(input_ids=input_ids, position_ids=position_ids)
        causal_mask = create_causal_mask(attention_mask, batch_size, F.arange(seq_len, dtype=ms.int64), seq_len,
                                         hidden_states.dtype)
        last_hidden_state, all_hidden_states, all_attentions = self.encoder(
            hidden_states, causal_mask, output_attentions, output_hidden_states
        )
        last_hidden_state = self.final_layer_norm(last_hidden_state)

        ids = input_ids.astype(ms.int32)
        if self.eos_token_id == 2:
            # configs from before transformers PR #24773 carry eos_token_id 2: pool at the highest token id (the
            # end-of-text token is the last of the vocabulary), first occurrence as torch's argmax
            eos_positions = _first_index(ids == ids.max(-1, keepdims=True))
        else:
            # the first end-of-text token (padding may reuse it)
            eos_positions = _first_index(ids == self.eos_token_id)
        pooled_output = ops.gather_elements(
            last_hidden_state, 1,
            ops.broadcast_to(eos_positions.reshape(batch_size, 1, 1), (batch_size, 1, last_hidden_state.shape[-1])),
        ).squeeze(1)
        return last_hidden_state, pooled_output, all_hidden_states, all_attentions


class CLIPVisionModel(CLIPPreTrainedModel):
    """The vision model from CLIP without any head or projection on top."""

    config_class = CLIPVisionConfig
    base_model_prefix = "vision_model"
    main_input_name = "pixel_values"

    def __init__(self, config: CLIPVisionConfig):
        super().__init__(config)
        self.embeddings = CLIPVisionEmbeddings(config)
        self.pre_layrnorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.encoder = CLIPEncoder(config)
        self.post_layernorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.patch_embedding

    def construct(self, pixel_values=None, output_attentions=None, output_hidden_states=None,
                  interpolate_pos_encoding=False, return_dict=None, **kwargs):
        r"""
        Args:
            pixel_values: (B, C, H, W), e.g. from `CLIPImageProcessor(..., return_tensors="np")`.
            interpolate_pos_encoding: resize the position table for images of another size.
        """
        if pixel_values is None:
            raise ValueError("You have to specify pixel_values")
        output_attentions, output_hidden_states = self._output_flags(output_attentions, output_hidden_states)
        last_hidden_state, pooled_output, all_hidden_states, all_attentions = self._forward(
            pixel_values, output_attentions, output_hidden_states, interpolate_pos_encoding
        )
        fields = {"last_hidden_state": last_hidden_state, "pooler_output": pooled_output,
                  "hidden_states": all_hidden_states, "attentions": all_attentions}
        return model_output(BaseModelOutputWithPooling, fields, return_dict is not False)

    def _forward(self, pixel_values, output_attentions, output_hidden_states, interpolate_pos_encoding):
        """(last_hidden_state, pooled, hidden_states, attentions), as `CLIPTextModel._forward`."""
        hidden_states = self.embeddings(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)
        hidden_states = self.pre_layrnorm(hidden_states)
        last_hidden_state, all_hidden_states, all_attentions = self.encoder(
            hidden_states, None, output_attentions, output_hidden_states
        )
        pooled_output = self.post_layernorm(last_hidden_state[:, 0, :])
        return last_hidden_state, pooled_output, all_hidden_states, all_attentions


class CLIPModel(CLIPPreTrainedModel):
    def __init__(self, config: CLIPConfig):
        super().__init__(config)
        text_config = config.text_config
        vision_config = config.vision_config
        self.projection_dim = config.projection_dim
        self.text_embed_dim = text_config.hidden_size
        self.vision_embed_dim = vision_config.hidden_size
        self.text_model = CLIPTextModel(text_config)
        self.vision_model = CLIPVisionModel(vision_config)
        self.visual_projection = Linear(self.vision_embed_dim, self.projection_dim, bias=False)
        self.text_projection = Linear(self.text_embed_dim, self.projection_dim, bias=False)
        self.logit_scale = new_parameter((), config.logit_scale_init_value)
        self.post_init()

    def _init_weights(self, cell):
        super()._init_weights(cell)
        if cell is self:
            init_parameter(self.logit_scale, float(self.config.logit_scale_init_value))

    def get_input_embeddings(self):
        return self.text_model.get_input_embeddings()

    def get_text_features(self, input_ids=None, attention_mask=None, position_ids=None, output_attentions=None,
                          output_hidden_states=None, return_dict=None, **kwargs):
        """The text tower's output with `pooler_output` replaced by the projected text embeddings (HF 5)."""
        input_ids, attention_mask, position_ids = _tensors(input_ids, attention_mask, position_ids)
        output_attentions, output_hidden_states = self._output_flags(output_attentions, output_hidden_states)
        last, pooled, hidden, attentions = self.text_model._forward(input_ids, attention_mask, position_ids,
                                                                    output_attentions, output_hidden_states)
        fields = {"last_hidden_state": last, "pooler_output": self.text_projection(pooled),
                  "hidden_states": hidden, "attentions": attentions}
        return model_output(BaseModelOutputWithPooling, fields, return_dict is not False)

    def get_image_features(self, pixel_values=None, output_attentions=None, output_hidden_states=None,
                           interpolate_pos_encoding=False, return_dict=None, **kwargs):
        """The vision tower's output with `pooler_output` replaced by the projected image embeddings (HF 5)."""
        (pixel_values,) = _tensors(pixel_values)
        output_attentions, output_hidden_states = self._output_flags(output_attentions, output_hidden_states)
        last, pooled, hidden, attentions = self.vision_model._forward(pixel_values, output_attentions,
                                                                      output_hidden_states, interpolate_pos_encoding)
        fields = {"last_hidden_state": last, "pooler_output": self.visual_projection(pooled),
                  "hidden_states": hidden, "attentions": attentions}
        return model_output(BaseModelOutputWithPooling, fields, return_dict is not False)

    def construct(self, input_ids=None, pixel_values=None, attention_mask=None, position_ids=None, return_loss=None,
                  output_attentions=None, output_hidden_states=None, interpolate_pos_encoding=False,
                  return_dict=None, **kwargs):
        r"""
        return_loss: also return the symmetric contrastive loss (row i of the texts matches image i).
        Returns `logits_per_image` (images x texts) and `logits_per_text`, cosine similarities times exp(logit_scale).
        """
        output_attentions, output_hidden_states = self._output_flags(output_attentions, output_hidden_states)
        t_last, t_pooled, t_hidden, t_attentions = self.text_model._forward(
            input_ids, attention_mask, position_ids, output_attentions, output_hidden_states)
        v_last, v_pooled, v_hidden, v_attentions = self.vision_model._forward(
            pixel_values, output_attentions, output_hidden_states, interpolate_pos_encoding)
        text_embeds = self.text_projection(t_pooled)
        image_embeds = self.visual_projection(v_pooled)
        text_outputs = model_output(BaseModelOutputWithPooling, {
            "last_hidden_state": t_last, "pooler_output": text_embeds, "hidden_states": t_hidden,
            "attentions": t_attentions})
        vision_outputs = model_output(BaseModelOutputWithPooling, {
            "last_hidden_state": v_last, "pooler_output": image_embeds, "hidden_states": v_hidden,
            "attentions": v_attentions})
        image_embeds = image_embeds / _vector_norm(image_embeds)
        text_embeds = text_embeds / _vector_norm(text_embeds)

        logits_per_text = ops.matmul(text_embeds, image_embeds.swapaxes(0, 1))
        logits_per_text = logits_per_text * ops.exp(self.logit_scale).astype(logits_per_text.dtype)
        logits_per_image = logits_per_text.swapaxes(0, 1)

        loss = image_text_contrastive_loss(logits_per_text) if return_loss else None
        fields = {"loss": loss, "logits_per_image": logits_per_image, "logits_per_text": logits_per_text,
                  "text_embeds": text_embeds, "image_embeds": image_embeds, "text_model_output": text_outputs,
                  "vision_model_output": vision_outputs}
        return model_output(CLIPOutput, fields, return_dict is not False)


class CLIPTextModelWithProjection(CLIPPreTrainedModel):
    config_class = CLIPTextConfig
    base_model_prefix = "text_model"

    def __init__(self, config: CLIPTextConfig):
        super().__init__(config)
        self.text_model = CLIPTextModel(config)
        self.text_projection = Linear(config.hidden_size, config.projection_dim, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.text_model.embeddings.token_embedding

    def set_input_embeddings(self, value):
        self.text_model.embeddings.token_embedding = value

    def construct(self, input_ids=None, attention_mask=None, position_ids=None, output_attentions=None,
                  output_hidden_states=None, return_dict=None, **kwargs):
        output_attentions, output_hidden_states = self._output_flags(output_attentions, output_hidden_states)
        last, pooled, hidden, attentions = self.text_model._forward(input_ids, attention_mask, position_ids,
                                                                    output_attentions, output_hidden_states)
        fields = {"text_embeds": self.text_projection(pooled), "last_hidden_state": last,
                  "hidden_states": hidden, "attentions": attentions}
        return model_output(CLIPTextModelOutput, fields, return_dict is not False)


class CLIPVisionModelWithProjection(CLIPPreTrainedModel):
    config_class = CLIPVisionConfig
    base_model_prefix = "vision_model"
    main_input_name = "pixel_values"

    def __init__(self, config: CLIPVisionConfig):
        super().__init__(config)
        self.vision_model = CLIPVisionModel(config)
        self.visual_projection = Linear(config.hidden_size, config.projection_dim, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.vision_model.embeddings.patch_embedding

    def construct(self, pixel_values=None, output_attentions=None, output_hidden_states=None,
                  interpolate_pos_encoding=False, return_dict=None, **kwargs):
        output_attentions, output_hidden_states = self._output_flags(output_attentions, output_hidden_states)
        last, pooled, hidden, attentions = self.vision_model._forward(pixel_values, output_attentions,
                                                                      output_hidden_states, interpolate_pos_encoding)
        fields = {"image_embeds": self.visual_projection(pooled), "last_hidden_state": last,
                  "hidden_states": hidden, "attentions": attentions}
        return model_output(CLIPVisionModelOutput, fields, return_dict is not False)


__all__ = [
    "CLIPModel",
    "CLIPPreTrainedModel",
    "CLIPTextModel",
    "CLIPTextModelWithProjection",
    "CLIPVisionModel",
    "CLIPVisionModelWithProjection",
]
