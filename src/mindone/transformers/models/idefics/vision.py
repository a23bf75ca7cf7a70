"""IDEFICS's vision tower (HF's `models/idefics/vision.py`): a CLIP vision transformer read from the simpler
`IdeficsVisionConfig` (`embed_dim` is its hidden size). Class names and checkpoint keys (`model.vision_model.*`) are
HF's."""

import math

from mindspore import nn, ops
from mindspore.common.initializer import Normal
from transformers.models.idefics.configuration_idefics import IdeficsVisionConfig

from ...backend import functional as F
from ...backend.layers import Conv2d, Embedding, LayerNorm, Linear, new_parameter
from ...modeling_layers import GradientCheckpointingLayer
from ...modeling_outputs import BaseModelOutput, BaseModelOutputWithPooling, model_output


class IdeficsVisionEmbeddings(nn.Cell):
    def __init__(self, config: IdeficsVisionConfig):
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
        """The position table resized (bicubic) to a `height` x `width` image's patch grid, the class token's entry
        kept. As HF, the resize is by a scale factor of (patches + 0.1) / side (the 0.1 avoids flooring the output
        size below the patch count), which also sets where the bicubic taps fall."""
        num_patches = embeddings.shape[1] - 1
        num_positions = self.num_positions - 1
        table = self.position_embedding.weight[None]
        if num_patches == num_positions and height == width:
            return table
        dim = embeddings.shape[-1]
        side = math.sqrt(num_positions)
        h_patches, w_patches = height // self.patch_size, width // self.patch_size
        grid = table[:, 1:].reshape(1, int(side), int(side), dim).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, scale_factor=((h_patches + 0.1) / side, (w_patches + 0.1) / side),
                             mode="bicubic", align_corners=False)
        if grid.shape[-2] != h_patches or grid.shape[-1] != w_patches:
            raise ValueError(f"Number of patches for images ({h_patches, w_patches}) don't match the shape of position "
                             f"embedding ({grid.shape[-2], grid.shape[-1]})")
        grid = grid.permute(0, 2, 3, 1).reshape(1, -1, dim)
        return F.cat([table[:, :1], grid], 1)

    def construct(self, pixel_values, interpolate_pos_encoding=False):
        batch_size, _, height, width = pixel_values.shape
        if not interpolate_pos_encoding and (height != self.image_size or width != self.image_size):
            raise ValueError(f"Input image size ({height}*{width}) doesn't match model ({self.image_size}*"
                             f"{self.image_size}). You should try to set `interpolate_pos_encoding=True`")
        patch_embeds = self.patch_embedding(pixel_values.astype(self.patch_embedding.weight.dtype))
        patch_embeds = patch_embeds.reshape(batch_size, self.embed_dim, -1).swapaxes(1, 2)  # (B, grid*grid, D)
        class_embeds = ops.broadcast_to(self.class_embedding.reshape(1, 1, -1), (batch_size, 1, self.embed_dim))
        embeddings = F.cat([class_embeds.astype(patch_embeds.dtype), patch_embeds], 1)
        if interpolate_pos_encoding:
            return embeddings + self.interpolate_pos_encoding(embeddings, height, width)
        return embeddings + self.position_embedding.weight[None]


class IdeficsVisionAttention(nn.Cell):
    """Multi-headed attention from 'Attention Is All You Need' paper"""

    def __init__(self, config: IdeficsVisionConfig):
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

        def heads(x):
            return x.reshape(batch, seq_len, self.num_heads, self.head_dim).swapaxes(1, 2)

        attn_output, attn_weights = F.attention(
            heads(self.q_proj(hidden_states)), heads(self.k_proj(hidden_states)), heads(self.v_proj(hidden_states)),
            attn_mask=attention_mask, scale=self.scale, dropout_p=self.dropout if self.training else 0.0,
            training=self.training)
        attn_output = attn_output.swapaxes(1, 2).reshape(batch, seq_len, -1)
        return self.out_proj(attn_output), attn_weights


class IdeficsVisionMLP(nn.Cell):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.activation_fn = F.get_activation(config.hidden_act)
        self.fc1 = Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = Linear(config.intermediate_size, config.hidden_size)

    def construct(self, hidden_states):
        return self.fc2(self.activation_fn(self.fc1(hidden_states)))


class IdeficsVisionEncoderLayer(GradientCheckpointingLayer):
    def __init__(self, config: IdeficsVisionConfig):
        super().__init__()
        self.embed_dim = config.hidden_size
        self.self_attn = IdeficsVisionAttention(config)
        self.layer_norm1 = LayerNorm(self.embed_dim, eps=config.layer_norm_eps)
        self.mlp = IdeficsVisionMLP(config)
        self.layer_norm2 = LayerNorm(self.embed_dim, eps=config.layer_norm_eps)

    def construct(self, hidden_states, attention_mask=None):
        residual = hidden_states
        hidden_states, _ = self.self_attn(self.layer_norm1(hidden_states), attention_mask)
        hidden_states = residual + hidden_states
        residual = hidden_states
        return residual + self.mlp(self.layer_norm2(hidden_states))


class IdeficsVisionEncoder(nn.Cell):
    """`config.num_hidden_layers` [`IdeficsVisionEncoderLayer`]s."""

    def __init__(self, config: IdeficsVisionConfig):
        super().__init__()
        self.config = config
        self.layers = nn.CellList([IdeficsVisionEncoderLayer(config) for _ in range(config.num_hidden_layers)])
        self.gradient_checkpointing = False

    def construct(self, inputs_embeds, attention_mask=None):
        hidden_states = inputs_embeds
        for encoder_layer in self.layers:
            hidden_states = encoder_layer(hidden_states, attention_mask)
        return model_output(BaseModelOutput, {"last_hidden_state": hidden_states})


class IdeficsVisionTransformer(nn.Cell):
    def __init__(self, config: IdeficsVisionConfig):
        super().__init__()
        self.config = config
        embed_dim = config.hidden_size
        self.embeddings = IdeficsVisionEmbeddings(config)
        self.pre_layrnorm = LayerNorm(embed_dim, eps=config.layer_norm_eps)  # sic: HF's checkpoint key
        self.encoder = IdeficsVisionEncoder(config)
        self.post_layernorm = LayerNorm(embed_dim, eps=config.layer_norm_eps)

    def construct(self, pixel_values=None, interpolate_pos_encoding=False):
        """(N, C, H, W) images -> `BaseModelOutputWithPooling`: every position's state and the normed class token."""
        if pixel_values is None:
            raise ValueError("You have to specify pixel_values")
        hidden_states = self.embeddings(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)
        hidden_states = self.pre_layrnorm(hidden_states)
        last_hidden_state = self.encoder(inputs_embeds=hidden_states)["last_hidden_state"]
        pooled_output = self.post_layernorm(last_hidden_state[:, 0, :])
        return model_output(BaseModelOutputWithPooling, {"last_hidden_state": last_hidden_state,
                                                         "pooler_output": pooled_output})


__all__ = ["IdeficsVisionEmbeddings", "IdeficsVisionTransformer"]
