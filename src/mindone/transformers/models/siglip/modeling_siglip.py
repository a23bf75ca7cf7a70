"""SigLIP on MindSpore: HF's `modeling_siglip.py` structure, names and outputs; device concerns live in `backend`.

Text tower (bidirectional, pooled at the last position: SigLIP's tokenizer pads to `max_length`, then a linear
`head`), vision tower (ViT without a class token, pooled by a multihead-attention probe, the "MAP" head), the
sigmoid image-text model (`logit_scale`, `logit_bias`) and an image classifier on the mean patch state.
"""

import math

import mindspore as ms
import numpy as np
from mindspore import nn, ops
from mindspore.common.initializer import Normal, TruncatedNormal, XavierUniform, Zero
from transformers import SiglipConfig, SiglipTextConfig, SiglipVisionConfig

from ...backend import functional as F
from ...backend.layers import Conv2d, Embedding, LayerNorm, Linear, new_parameter
from ...loss_utils import sequence_classification_loss
from ...masking_utils import create_bidirectional_mask
from ...modeling_layers import GradientCheckpointingLayer
from ...modeling_outputs import (
    model_output,
    BaseModelOutputWithPooling,
    ImageClassifierOutput,
    SiglipOutput,
)
from ...modeling_utils import PreTrainedModel, init_parameter


def sigmoid_loss(logits_per_text):
    """SigLIP's pairwise loss: every (text, image) pair is a binary problem, positive on the diagonal only."""
    n = logits_per_text.shape[0]
    signs = 2.0 * ops.eye(n, n, logits_per_text.dtype) - 1.0
    return -F.log_sigmoid(signs * logits_per_text).sum(-1).mean()


def _vector_norm(x):
    # accumulated in float32, as torch's norm does for half inputs
    x32 = F.cast(x, ms.float32)
    return F.cast((x32 * x32).sum(-1, keepdims=True) ** 0.5, x.dtype)


def _tensors(*values):
    """numpy inputs as Tensors for the methods that are not `construct` (`__call__` converts the others)."""
    return tuple(ms.Tensor(v) if isinstance(v, np.ndarray) else v for v in values)


class SiglipVisionEmbeddings(nn.Cell):
    def __init__(self, config: SiglipVisionConfig):
        super().__init__()
        self.config = config
        self.embed_dim = config.hidden_size
        self.image_size = config.image_size
        self.patch_size = config.patch_size
        self.patch_embedding = Conv2d(config.num_channels, self.embed_dim, kernel_size=self.patch_size,
                                      stride=self.patch_size)
        self.num_patches = (self.image_size // self.patch_size) ** 2
        self.num_positions = self.num_patches
        self.position_embedding = Embedding(self.num_positions, self.embed_dim)

    def interpolate_pos_encoding(self, embeddings, height, width):
        """The whole position table (there is no class token) resized bicubically, as HF, to the patch grid of a
        `height` x `width` image."""
        num_patches = embeddings.shape[1]
        if num_patches == self.num_positions and height == width:
            return self.position_embedding(F.arange(self.num_positions, dtype=ms.int64))[None]
        dim = embeddings.shape[-1]
        side = int(self.num_positions ** 0.5)
        table = self.position_embedding.weight.reshape(1, side, side, dim).permute(0, 3, 1, 2)
        table = F.interpolate(table, (height // self.patch_size, width // self.patch_size), mode="bicubic",
                              align_corners=False)
        return table.permute(0, 2, 3, 1).reshape(1, -1, dim)

    def construct(self, pixel_values, interpolate_pos_encoding=False):
        batch_size, _, height, width = pixel_values.shape
        patch_embeds = self.patch_embedding(pixel_values.astype(self.patch_embedding.weight.dtype))
        embeddings = patch_embeds.reshape(batch_size, self.embed_dim, -1).swapaxes(1, 2)  # (B, grid*grid, D)
        if interpolate_pos_encoding:
            return embeddings + self.interpolate_pos_encoding(embeddings, height, width)
        if embeddings.shape[1] != self.num_positions:
            raise ValueError(f"Input image size ({height}*{width}) doesn't match model "
                             f"({self.image_size}*{self.image_size}); pass interpolate_pos_encoding=True.")
        return embeddings + self.position_embedding(F.arange(self.num_positions, dtype=ms.int64))[None]


class SiglipTextEmbeddings(nn.Cell):
    def __init__(self, config: SiglipTextConfig):
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


class SiglipAttention(nn.Cell):
    """Multi-headed attention from 'Attention Is All You Need' paper"""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.embed_dim = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = self.embed_dim // self.num_heads
        if self.head_dim * self.num_heads != self.embed_dim:
            raise ValueError(f"embed_dim must be divisible by num_heads (got `embed_dim`: {self.embed_dim} and "
                             f"`num_heads`: {self.num_heads}).")
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


class SiglipMLP(nn.Cell):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.activation_fn = F.get_activation(config.hidden_act)
        self.fc1 = Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = Linear(config.intermediate_size, config.hidden_size)

    def construct(self, hidden_states):
        return self.fc2(self.activation_fn(self.fc1(hidden_states)))


class SiglipEncoderLayer(GradientCheckpointingLayer):
    def __init__(self, config):
        super().__init__()
        self.embed_dim = config.hidden_size
        self.layer_norm1 = LayerNorm(self.embed_dim, eps=config.layer_norm_eps)
        self.self_attn = SiglipAttention(config)
        self.layer_norm2 = LayerNorm(self.embed_dim, eps=config.layer_norm_eps)
        self.mlp = SiglipMLP(config)

    def construct(self, hidden_states, attention_mask=None):
        residual = hidden_states
        hidden_states, attn_weights = self.self_attn(self.layer_norm1(hidden_states), attention_mask)
        hidden_states = residual + hidden_states
        hidden_states = hidden_states + self.mlp(self.layer_norm2(hidden_states))
        return hidden_states, attn_weights


class SiglipEncoder(nn.Cell):
    """`config.num_hidden_layers` SiglipEncoderLayers; returns (last, hidden_states or None, attentions or None)."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.layers = nn.CellList([SiglipEncoderLayer(config) for _ in range(config.num_hidden_layers)])

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
        # as HF: the last entry is the last layer's output, before the tower's final norm
        if output_hidden_states:
            all_hidden_states += (hidden_states,)
        return hidden_states, all_hidden_states, all_attentions


class MultiheadAttention(nn.Cell):
    """torch.nn.MultiheadAttention's parameters (`in_proj_weight` stacks q, k, v) and math, batch first, for one
    set of queries attending over `key_value`; `key_padding_mask` is True where a key is padding."""

    def __init__(self, embed_dim, num_heads):
        super().__init__()
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.in_proj_weight = new_parameter((3 * embed_dim, embed_dim), XavierUniform())
        self.in_proj_bias = new_parameter((3 * embed_dim,), Zero())
        self.out_proj = Linear(embed_dim, embed_dim)

    def construct(self, query, key_value, key_padding_mask=None):
        d = self.embed_dim
        batch, q_len, kv_len = query.shape[0], query.shape[1], key_value.shape[1]
        q = F.linear(query, self.in_proj_weight[:d], self.in_proj_bias[:d])
        k = F.linear(key_value, self.in_proj_weight[d:2 * d], self.in_proj_bias[d:2 * d])
        v = F.linear(key_value, self.in_proj_weight[2 * d:], self.in_proj_bias[2 * d:])
        q = q.reshape(batch, q_len, self.num_heads, self.head_dim).swapaxes(1, 2)
        k = k.reshape(batch, kv_len, self.num_heads, self.head_dim).swapaxes(1, 2)
        v = v.reshape(batch, kv_len, self.num_heads, self.head_dim).swapaxes(1, 2)
        mask = None
        if key_padding_mask is not None:
            mask = ops.where(key_padding_mask.astype(ms.bool_), F.full((), F.finfo_min(q.dtype), q.dtype),
                             ops.zeros((), q.dtype)).reshape(batch, 1, 1, kv_len)
        out, _ = F.attention(q, k, v, attn_mask=mask, scale=self.head_dim ** -0.5)
        return self.out_proj(out.swapaxes(1, 2).reshape(batch, q_len, d))


class SiglipMultiheadAttentionPoolingHead(nn.Cell):
    """Multihead Attention Pooling: a learned probe attends over the patch states, then a residual MLP."""

    def __init__(self, config: SiglipVisionConfig):
        super().__init__()
        self.probe = new_parameter((1, 1, config.hidden_size), Normal(1.0))
        self.attention = MultiheadAttention(config.hidden_size, config.num_attention_heads)
        self.layernorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = SiglipMLP(config)

    def construct(self, hidden_state):
        batch_size = hidden_state.shape[0]
        probe = ops.broadcast_to(self.probe.astype(hidden_state.dtype), (batch_size, 1, self.probe.shape[-1]))
        hidden_state = self.attention(probe, hidden_state)
        hidden_state = hidden_state + self.mlp(self.layernorm(hidden_state))
        return hidden_state[:, 0]


def _lecun_normal(param):
    # jax's lecun_normal: truncated normal with variance 1 / fan_in (the std is corrected for the truncation)
    fan_in = int(np.prod(param.shape[1:]))
    std = math.sqrt(1.0 / fan_in) / 0.87962566103423978
    init_parameter(param, TruncatedNormal(std, a=-2.0 * std, b=2.0 * std))


class SiglipPreTrainedModel(PreTrainedModel):
    config_class = SiglipConfig
    base_model_prefix = "siglip"
    supports_gradient_checkpointing = True
    _no_split_modules = ["SiglipTextEmbeddings", "SiglipVisionEmbeddings", "SiglipEncoderLayer",
                         "SiglipMultiheadAttentionPoolingHead"]

    def _output_flags(self, output_attentions, output_hidden_states):
        config = self.config
        return (output_attentions if output_attentions is not None else config.output_attentions,
                output_hidden_states if output_hidden_states is not None else config.output_hidden_states)

    def init_weights(self):
        # children before parents, as torch's Module.apply: a block's own scheme (xavier attention) overrides the
        # generic one of its Linears
        for _, cell in reversed(list(self.cells_and_names())):
            self._init_weights(cell)

    def _init_weights(self, cell):
        """HF's SigLIP scheme (the big_vision one): xavier attention, lecun-normal linears, 1/sqrt(width)
        embedding tables."""
        super()._init_weights(cell)
        init_shared_cell(cell)
        if isinstance(cell, SiglipVisionEmbeddings):
            _lecun_normal(cell.patch_embedding.weight)
            init_parameter(cell.patch_embedding.bias, Zero())
        elif isinstance(cell, SiglipModel):
            init_parameter(cell.logit_scale, Zero())
            init_parameter(cell.logit_bias, Zero())
        elif isinstance(cell, SiglipForImageClassification) and cell.classifier is not None:
            std = self.config.vision_config.hidden_size ** -0.5 * self.config.initializer_factor
            init_parameter(cell.classifier.weight, Normal(std))


def init_shared_cell(cell):
    """HF's init of the cells SigLIP and SigLIP 2 share (text embeddings, attention, MLP, pooling attention)."""
    if isinstance(cell, Embedding):
        # flax's default embedding init (and the vision position table's): normal with variance 1 / width
        init_parameter(cell.weight, Normal(cell.embedding_dim ** -0.5))
    elif isinstance(cell, Linear):
        _lecun_normal(cell.weight)
        if cell.bias is not None:
            init_parameter(cell.bias, Zero())
    elif isinstance(cell, SiglipAttention):
        for proj in (cell.q_proj, cell.k_proj, cell.v_proj, cell.out_proj):
            init_parameter(proj.weight, XavierUniform())
            init_parameter(proj.bias, Zero())
    elif isinstance(cell, SiglipMLP):
        for fc in (cell.fc1, cell.fc2):
            init_parameter(fc.weight, XavierUniform())
            init_parameter(fc.bias, Normal(1e-6))
    elif isinstance(cell, MultiheadAttention):
        init_parameter(cell.in_proj_weight, XavierUniform())
        init_parameter(cell.in_proj_bias, Zero())
        _lecun_normal(cell.out_proj.weight)
        init_parameter(cell.out_proj.bias, Zero())
    elif hasattr(cell, "probe"):
        init_parameter(cell.probe, XavierUniform())


class SiglipTextModel(SiglipPreTrainedModel):
    """The text model from SigLIP without any head or projection on top."""

    config_class = SiglipTextConfig
    base_model_prefix = "text_model"

    def __init__(self, config: SiglipTextConfig):
        super().__init__(config)
        self.embeddings = SiglipTextEmbeddings(config)
        self.encoder = SiglipEncoder(config)
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
            input_ids: (B, S) token ids, padded to `max_length` as SigLIP was trained (the pooled output is the
                last position's state through `head`).
            attention_mask: (B, S) 1/0 padding mask (SigLIP's own tokenizer returns none).
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
        """(last_hidden_state, pooled, hidden_states, attentions): plain tuples are what the heads use, since
        output objects read back inside a MindSpore graph lose their types."""
        input_ids = input_ids.reshape(-1, input_ids.shape[-1])
        hidden_states = self.embeddings(input_ids=input_ids, position_ids=position_ids)
        mask = create_bidirectional_mask(attention_mask, input_ids.shape[-1], hidden_states.dtype)
        last_hidden_state, all_hidden_states, all_attentions = self.encoder(
            hidden_states, mask, output_attentions, output_hidden_states)
        last_hidden_state = self.final_layer_norm(last_hidden_state)
        pooled_output = self.head(last_hidden_state[:, -1, :])
        return last_hidden_state, pooled_output, all_hidden_states, all_attentions


class SiglipVisionModel(SiglipPreTrainedModel):
    """The vision model from SigLIP without any head or projection on top."""

    config_class = SiglipVisionConfig
    base_model_prefix = "vision_model"
    main_input_name = "pixel_values"

    def __init__(self, config: SiglipVisionConfig):
        super().__init__(config)
        self.embeddings = SiglipVisionEmbeddings(config)
        self.encoder = SiglipEncoder(config)
        self.post_layernorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.use_head = getattr(config, "vision_use_head", True)
        self.head = SiglipMultiheadAttentionPoolingHead(config) if self.use_head else None
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.patch_embedding

    def construct(self, pixel_values=None, output_attentions=None, output_hidden_states=None,
                  interpolate_pos_encoding=False, return_dict=None, **kwargs):
        r"""
        Args:
            pixel_values: (B, C, H, W), e.g. from `SiglipImageProcessor(..., return_tensors="np")`.
            interpolate_pos_encoding: resize the position table for images of another size.
        Returns `pooler_output` from the attention-pooling head (None when `vision_use_head` is False).
        """
        if pixel_values is None:
            raise ValueError("You have to specify pixel_values")
        output_attentions, output_hidden_states = self._output_flags(output_attentions, output_hidden_states)
        last_hidden_state, pooled_output, all_hidden_states, all_attentions = self._forward(
            pixel_values, output_attentions, output_hidden_states, interpolate_pos_encoding)
        fields = {"last_hidden_state": last_hidden_state, "pooler_output": pooled_output,
                  "hidden_states": all_hidden_states, "attentions": all_attentions}
        return model_output(BaseModelOutputWithPooling, fields, return_dict is not False)

    def _forward(self, pixel_values, output_attentions, output_hidden_states, interpolate_pos_encoding):
        """(last_hidden_state, pooled or None, hidden_states, attentions), as `SiglipTextModel._forward`."""
        hidden_states = self.embeddings(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)
        last_hidden_state, all_hidden_states, all_attentions = self.encoder(
            hidden_states, None, output_attentions, output_hidden_states)
        last_hidden_state = self.post_layernorm(last_hidden_state)
        pooled_output = self.head(last_hidden_state) if self.head is not None else None
        return last_hidden_state, pooled_output, all_hidden_states, all_attentions


class SiglipModel(SiglipPreTrainedModel):
    def __init__(self, config: SiglipConfig):
        super().__init__(config)
        self.text_model = SiglipTextModel(config.text_config)
        self.vision_model = SiglipVisionModel(config.vision_config)
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

    def get_image_features(self, pixel_values=None, interpolate_pos_encoding=False, output_attentions=None,
                           output_hidden_states=None, return_dict=None, **kwargs):
        """The vision tower's output; its `pooler_output` is the image embedding (HF 5)."""
        (pixel_values,) = _tensors(pixel_values)
        return self.vision_model(pixel_values=pixel_values, interpolate_pos_encoding=interpolate_pos_encoding,
                                 output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                                 return_dict=return_dict)

    def construct(self, input_ids=None, pixel_values=None, attention_mask=None, position_ids=None, return_loss=None,
                  output_attentions=None, output_hidden_states=None, interpolate_pos_encoding=False,
                  return_dict=None, **kwargs):
        r"""
        return_loss: also return the sigmoid loss (text i matches image i, every other pair is a negative).
        Returns `logits_per_image` (images x texts) and `logits_per_text`: cosine similarities times
        exp(logit_scale) plus logit_bias; `sigmoid(logits)` are independent match probabilities.
        """
        output_attentions, output_hidden_states = self._output_flags(output_attentions, output_hidden_states)
        v_last, v_pooled, v_hidden, v_attentions = self.vision_model._forward(
            pixel_values, output_attentions, output_hidden_states, interpolate_pos_encoding)
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
        return model_output(SiglipOutput, fields, return_dict is not False)


class SiglipForImageClassification(SiglipPreTrainedModel):
    """SigLIP vision tower with a linear classifier on the mean of the final patch states (the MAP head is not
    used)."""

    main_input_name = "pixel_values"

    def __init__(self, config: SiglipConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.vision_model = SiglipVisionModel(config.vision_config)
        self.classifier = Linear(config.vision_config.hidden_size, config.num_labels) if config.num_labels > 0 \
            else None
        self.post_init()

    def get_input_embeddings(self):
        return self.vision_model.embeddings.patch_embedding

    def construct(self, pixel_values=None, labels=None, output_attentions=None, output_hidden_states=None,
                  interpolate_pos_encoding=False, return_dict=None, **kwargs):
        if pixel_values is None:
            raise ValueError("You have to specify pixel_values")
        output_attentions, output_hidden_states = self._output_flags(output_attentions, output_hidden_states)
        sequence_output, _, all_hidden_states, all_attentions = self.vision_model._forward(
            pixel_values, output_attentions, output_hidden_states, interpolate_pos_encoding)
        pooled = sequence_output.mean(1)
        logits = self.classifier(pooled) if self.classifier is not None else pooled
        loss = sequence_classification_loss(labels, logits, self.config) if labels is not None else None
        fields = {"loss": loss, "logits": logits, "hidden_states": all_hidden_states, "attentions": all_attentions}
        return model_output(ImageClassifierOutput, fields, return_dict is not False)


__all__ = [
    "SiglipForImageClassification",
    "SiglipModel",
    "SiglipPreTrainedModel",
    "SiglipTextModel",
    "SiglipVisionModel",
]
