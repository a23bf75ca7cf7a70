"""SigLIP 2 on MindSpore: HF's `modeling_siglip2.py` names, checkpoint keys and outputs.

SigLIP 2's text tower and encoder blocks are SigLIP's (HF generates them from the same modular source), so they are
imported from `siglip`. What is new is the NaFlex vision input: each image arrives as a padded sequence of flattened
patches (`pixel_values` (B, N, C*p*p)) with `pixel_attention_mask` (B, N) marking real patches and `spatial_shapes`
(B, 2) its patch grid (rows, columns); the square position table is resized to every image's grid.
"""

import mindspore as ms
from mindspore import nn, ops
from mindspore.common.initializer import Normal, Zero
from transformers import Siglip2Config, Siglip2TextConfig, Siglip2VisionConfig

from ...backend import functional as F
from ...backend import runtime
from ...backend.layers import Embedding, LayerNorm, Linear, new_parameter
from ...loss_utils import sequence_classification_loss
from ...masking_utils import create_bidirectional_mask
from ...modeling_outputs import model_output, BaseModelOutputWithPooling, ImageClassifierOutput, Siglip2Output
from ...modeling_utils import PreTrainedModel, init_parameter
from ..siglip.modeling_siglip import (
    MultiheadAttention,
    SiglipEncoder as Siglip2Encoder,
    SiglipMLP as Siglip2MLP,
    SiglipTextEmbeddings as Siglip2TextEmbeddings,
    _tensors,
    _vector_norm,
    init_shared_cell,
    sigmoid_loss,
)


def resize_positional_embeddings(positional_embeddings, spatial_shapes, max_length):
    """(G, G, D) table -> (B, max_length, D): for image b, row-major over its (h, w) = spatial_shapes[b] grid, the
    table resized by antialiased bilinear interpolation (a triangle filter widened by the downscale factor, as
    HF's matrix form); positions past h * w (padding) take the first entry, as in HF.

    The resize is a (B, max_length, G*G) weight matrix times the flat table, the outer product of one row and one
    column weight vector per position, so it runs inside a compiled graph for any `spatial_shapes`.
    """
    grid_size = positional_embeddings.shape[0]
    sizes = spatial_shapes.astype(ms.float32).reshape(-1, 1, 2)  # (B, 1, 2)
    positions = F.arange(max_length, dtype=ms.float32).reshape(1, max_length, 1)
    widths = sizes[..., 1:]
    rows = ops.floor(positions / widths)
    index = F.cat([rows, positions - rows * widths], -1)  # (B, L, 2): (row, column) of every position
    index = index * (positions < sizes[..., :1] * widths).astype(ms.float32)
    scale = grid_size / sizes
    support = ops.clamp(scale, min=1.0)
    center = (index + 0.5) * scale - 0.5
    source = F.arange(grid_size, dtype=ms.float32)
    weights = ops.clamp(1.0 - ops.abs(source - center[..., None]) / support[..., None], min=0.0)  # (B, L, 2, G)
    weights = weights / weights.sum(-1, keepdims=True)
    weights = (weights[:, :, 0, :, None] * weights[:, :, 1, None, :]).reshape(
        weights.shape[0], max_length, grid_size * grid_size)
    flat = F.cast(positional_embeddings.reshape(-1, positional_embeddings.shape[-1]), ms.float32)
    return F.cast(ops.matmul(weights, flat), positional_embeddings.dtype)


class Siglip2VisionEmbeddings(nn.Cell):
    def __init__(self, config: Siglip2VisionConfig):
        super().__init__()
        self.config = config
        self.embed_dim = config.hidden_size
        self.patch_size = config.patch_size
        self.patch_embedding = Linear(config.num_channels * self.patch_size * self.patch_size, self.embed_dim)
        self.num_patches = config.num_patches
        self.position_embedding_size = int(self.num_patches ** 0.5)
        self.position_embedding = Embedding(self.num_patches, self.embed_dim)

    def construct(self, pixel_values, spatial_shapes):
        """pixel_values (B, N, C*p*p) flattened patches; spatial_shapes (B, 2) each image's patch grid."""
        patch_embeds = self.patch_embedding(pixel_values.astype(self.patch_embedding.weight.dtype))
        table = self.position_embedding.weight.reshape(self.position_embedding_size, self.position_embedding_size, -1)
        return patch_embeds + resize_positional_embeddings(table, spatial_shapes, pixel_values.shape[1])


class Siglip2MultiheadAttentionPoolingHead(nn.Cell):
    """Multihead Attention Pooling: a learned probe attends over the real (unmasked) patch states, then a residual
    MLP."""

    def __init__(self, config: Siglip2VisionConfig):
        super().__init__()
        self.probe = new_parameter((1, 1, config.hidden_size), Normal(1.0))
        self.attention = MultiheadAttention(config.hidden_size, config.num_attention_heads)
        self.layernorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = Siglip2MLP(config)
        self.num_heads = config.num_attention_heads

    def construct(self, hidden_state, attention_mask=None):
        batch_size = hidden_state.shape[0]
        probe = ops.broadcast_to(self.probe.astype(hidden_state.dtype), (batch_size, 1, self.probe.shape[-1]))
        padding = ops.logical_not(attention_mask.astype(ms.bool_)) if attention_mask is not None else None
        hidden_state = self.attention(probe, hidden_state, padding)
        hidden_state = hidden_state + self.mlp(self.layernorm(hidden_state))
        return hidden_state[:, 0]


class Siglip2PreTrainedModel(PreTrainedModel):
    config_class = Siglip2Config
    base_model_prefix = "siglip2"
    supports_gradient_checkpointing = True
    _no_split_modules = ["Siglip2TextEmbeddings", "Siglip2VisionEmbeddings", "Siglip2EncoderLayer",
                         "Siglip2MultiheadAttentionPoolingHead"]

    def _output_flags(self, output_attentions, output_hidden_states):
        config = self.config
        return (output_attentions if output_attentions is not None else config.output_attentions,
                output_hidden_states if output_hidden_states is not None else config.output_hidden_states)

    def init_weights(self):
        # children before parents, as torch's Module.apply (see SiglipPreTrainedModel)
        for _, cell in reversed(list(self.cells_and_names())):
            self._init_weights(cell)

    def _init_weights(self, cell):
        """HF's SigLIP 2 scheme, SigLIP's for the shared blocks."""
        super()._init_weights(cell)
        init_shared_cell(cell)
        if isinstance(cell, Siglip2Model):
            init_parameter(cell.logit_scale, Zero())
            init_parameter(cell.logit_bias, Zero())
        elif isinstance(cell, Siglip2ForImageClassification) and cell.classifier is not None:
            std = self.config.vision_config.hidden_size ** -0.5 * self.config.initializer_factor
            init_parameter(cell.classifier.weight, Normal(std))


class Siglip2VisionModel(Siglip2PreTrainedModel):
    """The vision model from Siglip2 without any head or projection on top."""

    config_class = Siglip2VisionConfig
    base_model_prefix = "vision_model"
    main_input_name = "pixel_values"

    def __init__(self, config: Siglip2VisionConfig):
        super().__init__(config)
        self.embeddings = Siglip2VisionEmbeddings(config)
        self.encoder = Siglip2Encoder(config)
        self.post_layernorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.use_head = getattr(config, "vision_use_head", True)
        self.head = Siglip2MultiheadAttentionPoolingHead(config) if self.use_head else None
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.patch_embedding

    def construct(self, pixel_values=None, pixel_attention_mask=None, spatial_shapes=None, output_attentions=None,
                  output_hidden_states=None, return_dict=None, **kwargs):
        r"""
        Args:
            pixel_values: (B, N, C * patch_size**2) flattened patches, from `Siglip2ImageProcessor`.
            pixel_attention_mask: (B, N) 1 for real patches, 0 for padding.
            spatial_shapes: (B, 2) each image's patch grid (rows, columns).
        """
        if pixel_values is None:
            raise ValueError("You have to specify pixel_values")
        if spatial_shapes is None:
            raise ValueError("Siglip2VisionModel needs `spatial_shapes` (each image's patch grid)")
        output_attentions, output_hidden_states = self._output_flags(output_attentions, output_hidden_states)
        last_hidden_state, pooled_output, all_hidden_states, all_attentions = self._forward(
            pixel_values, pixel_attention_mask, spatial_shapes, output_attentions, output_hidden_states)
        fields = {"last_hidden_state": last_hidden_state, "pooler_output": pooled_output,
                  "hidden_states": all_hidden_states, "attentions": all_attentions}
        return model_output(BaseModelOutputWithPooling, fields, return_dict is not False)

    def _forward(self, pixel_values, pixel_attention_mask, spatial_shapes, output_attentions, output_hidden_states):
        """(last_hidden_state, pooled or None, hidden_states, attentions) as plain tuples for the heads."""
        if not runtime.in_graph():
            shapes = spatial_shapes.asnumpy()
            if (shapes <= 0).any() or (shapes.prod(-1) > pixel_values.shape[1]).any():
                raise ValueError(f"spatial_shapes {shapes.tolist()} must be positive with at most "
                                 f"{pixel_values.shape[1]} patches (the length of pixel_values)")
        hidden_states = self.embeddings(pixel_values, spatial_shapes)
        mask = create_bidirectional_mask(pixel_attention_mask, hidden_states.shape[1], hidden_states.dtype)
        last_hidden_state, all_hidden_states, all_attentions = self.encoder(
            hidden_states, mask, output_attentions, output_hidden_states)
        last_hidden_state = self.post_layernorm(last_hidden_state)
        pooled = self.head(last_hidden_state, pixel_attention_mask) if self.head is not None else None
        return last_hidden_state, pooled, all_hidden_states, all_attentions


class Siglip2TextModel(Siglip2PreTrainedModel):
    """The text model from Siglip2 without any head or projection on top."""

    config_class = Siglip2TextConfig
    base_model_prefix = "text_model"

    def __init__(self, config: Siglip2TextConfig):
        super().__init__(config)
        self.embeddings = Siglip2TextEmbeddings(config)
        self.encoder = Siglip2Encoder(config)
        self.final_layer_norm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.head = Linear(config.hidden_size, config.projection_size)
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.token_embedding

    def set_input_embeddings(self, value):
        self.embeddings.token_embedding = value

    def construct(self, input_ids=None, attention_mask=None, position_ids=None, output_attentions=None,
                  output_hidden_states=None, return_dict=None, **kwargs):
        r"""
        Args:
            input_ids: (B, S) token ids padded to `max_length` (the pooled output is the last position's state
                through `head`).
            attention_mask: (B, S) 1/0 padding mask.
        """
        if input_ids is None:
            raise ValueError("You have to specify input_ids")
        output_attentions, output_hidden_states = self._output_flags(output_attentions, output_hidden_states)
        last_hidden_state, pooled_output, all_hidden_states, all_attentions = self._forward(
            input_ids, attention_mask, position_ids, output_attentions, output_hidden_states)
        fields = {"last_hidden_state": last_hidden_state, "pooler_output": pooled_output,
                  "hidden_states": all_hidden_states, "attentions": all_attentions}
        return model_output(BaseModelOutputWithPooling, fields, return_dict is not False)

    def _forward(self, input_ids, attention_mask, position_ids, output_attentions, output_hidden_states):
        input_ids = input_ids.reshape(-1, input_ids.shape[-1])
        hidden_states = self.embeddings(input_ids=input_ids, position_ids=position_ids)
        mask = create_bidirectional_mask(attention_mask, input_ids.shape[-1], hidden_states.dtype)
        last_hidden_state, all_hidden_states, all_attentions = self.encoder(
            hidden_states, mask, output_attentions, output_hidden_states)
        last_hidden_state = self.final_layer_norm(last_hidden_state)
        pooled_output = self.head(last_hidden_state[:, -1, :])
        return last_hidden_state, pooled_output, all_hidden_states, all_attentions


class Siglip2Model(Siglip2PreTrainedModel):
    def __init__(self, config: Siglip2Config):
        super().__init__(config)
        self.text_model = Siglip2TextModel(config.text_config)
        self.vision_model = Siglip2VisionModel(config.vision_config)
        self.logit_scale = new_parameter((1,), Normal(1.0))
        self.logit_bias = new_parameter((1,), Normal(1.0))
        self.post_init()

    def get_input_embeddings(self):
        return self.text_model.embeddings.token_embedding

    def set_input_embeddings(self, value):
        self.text_model.embeddings.token_embedding = value

    def get_text_features(self, input_ids=None, attention_mask=None, position_ids=None, output_attentions=None,
                          output_hidden_states=None, return_dict=None, **kwargs):
        """The text tower's output; its `pooler_output` is the text embedding (HF 5)."""
        input_ids, attention_mask, position_ids = _tensors(input_ids, attention_mask, position_ids)
        return self.text_model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                               output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                               return_dict=return_dict)

    def get_image_features(self, pixel_values=None, pixel_attention_mask=None, spatial_shapes=None,
                           output_attentions=None, output_hidden_states=None, return_dict=None, **kwargs):
        """The vision tower's output; its `pooler_output` is the image embedding (HF 5)."""
        pixel_values, pixel_attention_mask, spatial_shapes = _tensors(pixel_values, pixel_attention_mask,
                                                                      spatial_shapes)
        return self.vision_model(pixel_values=pixel_values, pixel_attention_mask=pixel_attention_mask,
                                 spatial_shapes=spatial_shapes, output_attentions=output_attentions,
                                 output_hidden_states=output_hidden_states, return_dict=return_dict)

    def construct(self, input_ids=None, pixel_values=None, pixel_attention_mask=None, spatial_shapes=None,
                  attention_mask=None, position_ids=None, return_loss=None, output_attentions=None,
                  output_hidden_states=None, return_dict=None, **kwargs):
        r"""
        return_loss: also return the sigmoid loss (text i matches image i, every other pair is a negative).
        Returns `logits_per_image` (images x texts) and `logits_per_text`: cosine similarities times
        exp(logit_scale) plus logit_bias.
        """
        output_attentions, output_hidden_states = self._output_flags(output_attentions, output_hidden_states)
        v_last, v_pooled, v_hidden, v_attentions = self.vision_model._forward(
            pixel_values, pixel_attention_mask, spatial_shapes, output_attentions, output_hidden_states)
        t_last, t_pooled, t_hidden, t_attentions = self.text_model._forward(
            input_ids, attention_mask, position_ids, output_attentions, output_hidden_states)
        text_outputs = model_output(BaseModelOutputWithPooling, {
            "last_hidden_state": t_last, "pooler_output": t_pooled, "hidden_states": t_hidden,
            "attentions": t_attentions})
        vision_outputs = model_output(BaseModelOutputWithPooling, {
            "last_hidden_state": v_last, "pooler_output": v_pooled, "hidden_states": v_hidden,
            "attentions": v_attentions})
        image_embeds = v_pooled / _vector_norm(v_pooled)
        text_embeds = t_pooled / _vector_norm(t_pooled)

        logits_per_text = ops.matmul(text_embeds, image_embeds.swapaxes(0, 1))
        logits_per_text = (logits_per_text * ops.exp(self.logit_scale).astype(logits_per_text.dtype)
                           + self.logit_bias.astype(logits_per_text.dtype))
        logits_per_image = logits_per_text.swapaxes(0, 1)

        loss = sigmoid_loss(logits_per_text) if return_loss else None
        fields = {"loss": loss, "logits_per_image": logits_per_image, "logits_per_text": logits_per_text,
                  "text_embeds": text_embeds, "image_embeds": image_embeds, "text_model_output": text_outputs,
                  "vision_model_output": vision_outputs}
        return model_output(Siglip2Output, fields, return_dict is not False)


class Siglip2ForImageClassification(Siglip2PreTrainedModel):
    """Siglip2 vision tower with a linear classifier on the mean of the real (unmasked) final patch states."""

    main_input_name = "pixel_values"

    def __init__(self, config: Siglip2Config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.vision_model = Siglip2VisionModel(config.vision_config)
        self.classifier = Linear(config.vision_config.hidden_size, config.num_labels) if config.num_labels > 0 \
            else None
        self.post_init()

    def get_input_embeddings(self):
        return self.vision_model.embeddings.patch_embedding

    def construct(self, pixel_values=None, pixel_attention_mask=None, spatial_shapes=None, labels=None,
                  output_attentions=None, output_hidden_states=None, return_dict=None, **kwargs):
        if pixel_values is None:
            raise ValueError("You have to specify pixel_values")
        output_attentions, output_hidden_states = self._output_flags(output_attentions, output_hidden_states)
        sequence_output, _, all_hidden_states, all_attentions = self.vision_model._forward(
            pixel_values, pixel_attention_mask, spatial_shapes, output_attentions, output_hidden_states)
        if pixel_attention_mask is not None:
            pool_mask = pixel_attention_mask.astype(sequence_output.dtype)[..., None]
            pooled = (sequence_output * pool_mask).sum(1) / pool_mask.sum(1)
        else:
            pooled = sequence_output.mean(1)
        logits = self.classifier(pooled) if self.classifier is not None else pooled
        loss = sequence_classification_loss(labels, logits, self.config) if labels is not None else None
        fields = {"loss": loss, "logits": logits, "hidden_states": all_hidden_states, "attentions": all_attentions}
        return model_output(ImageClassifierOutput, fields, return_dict is not False)


__all__ = [
    "Siglip2ForImageClassification",
    "Siglip2Model",
    "Siglip2PreTrainedModel",
    "Siglip2TextModel",
    "Siglip2VisionModel",
]
