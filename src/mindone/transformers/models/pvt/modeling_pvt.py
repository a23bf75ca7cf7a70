"""PVT (Pyramid Vision Transformer v1) on MindSpore: HF's `modeling_pvt.py` checkpoint keys, signatures and outputs.

Stages that each open with a strided patch-embedding convolution (+ LayerNorm, + a learned position table; the last
stage also prepends a class token) and stack pre-norm transformer layers whose keys/values come from a spatially
reduced copy of the tokens (a `sequence_reduction_ratios[i]`-strided convolution + LayerNorm). Between stages the
tokens are folded back into a (B, C, H, W) map; the final tokens go through one LayerNorm and the classifier reads
the class token.
"""

import collections.abc

from mindspore import nn, ops
from mindspore.common.initializer import TruncatedNormal
from transformers import PvtConfig

from ...backend import functional as F
from ...backend.layers import Conv2d, Dropout, LayerNorm, Linear, new_parameter
from ...loss_utils import sequence_classification_loss
from ...modeling_outputs import BaseModelOutput, ImageClassifierOutput, model_output
from ...modeling_utils import PreTrainedModel, init_parameter


def _pair(x):
    return tuple(x) if isinstance(x, collections.abc.Iterable) else (x, x)


class PvtPatchEmbeddings(nn.Cell):
    """(B, C, H, W) -> (B, H'*W' [+1], hidden): strided conv, LayerNorm, [class token], + position table."""

    def __init__(self, config, image_size, patch_size, stride, num_channels, hidden_size, cls_token=False):
        super().__init__()
        image_size, patch_size = _pair(image_size), _pair(patch_size)
        self.num_patches = (image_size[1] // patch_size[1]) * (image_size[0] // patch_size[0])
        self.num_channels = num_channels
        self.position_embeddings = new_parameter((1, self.num_patches + 1 if cls_token else self.num_patches,
                                                  hidden_size), TruncatedNormal(config.initializer_range))
        self.cls_token = new_parameter((1, 1, hidden_size)) if cls_token else None
        # HF's quirk, kept for its checkpoints: the kernel is `stride` and the stride is `patch_size`
        self.projection = Conv2d(num_channels, hidden_size, kernel_size=stride, stride=patch_size)
        self.layer_norm = LayerNorm(hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def _positions(self, table, height, width):
        # HF resizes the table bilinearly to the (height, width) grid it already has (an identity), and fails for
        # any other grid; the same grids work here, others are refused by name
        if table.shape[1] != height * width:
            raise ValueError(f"PvtPatchEmbeddings: the position table holds {table.shape[1]} patches but the image "
                             f"gives a {height}x{width} grid; use the configured image_size")
        return table

    def construct(self, pixel_values):
        batch_size, num_channels = pixel_values.shape[0], pixel_values.shape[1]
        if num_channels != self.num_channels:
            raise ValueError("Make sure that the channel dimension of the pixel values match with the one set in the "
                             f"configuration. Expected {self.num_channels} but got {num_channels}.")
        patch_embed = self.projection(pixel_values)
        height, width = patch_embed.shape[2], patch_embed.shape[3]
        embeddings = self.layer_norm(patch_embed.reshape(batch_size, patch_embed.shape[1], -1).swapaxes(1, 2))
        table = self.position_embeddings.astype(embeddings.dtype)
        if self.cls_token is not None:
            cls_token = ops.broadcast_to(self.cls_token.astype(embeddings.dtype), (batch_size, 1, embeddings.shape[-1]))
            embeddings = F.cat([cls_token, embeddings], 1)
            positions = F.cat([table[:, :1], self._positions(table[:, 1:], height, width)], 1)
        else:
            positions = self._positions(table, height, width)
        return self.dropout(embeddings + positions), height, width


class PvtSelfOutput(nn.Cell):
    def __init__(self, config, hidden_size):
        super().__init__()
        self.dense = Linear(hidden_size, hidden_size)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def construct(self, hidden_states):
        return self.dropout(self.dense(hidden_states))


class PvtEfficientSelfAttention(nn.Cell):
    """Multi-head attention whose keys/values come from the token map shrunk by a strided conv (ratio > 1)."""

    def __init__(self, config, hidden_size, num_attention_heads, sequences_reduction_ratio):
        super().__init__()
        if hidden_size % num_attention_heads != 0:
            raise ValueError(f"The hidden size ({hidden_size}) is not a multiple of the number of attention heads "
                             f"({num_attention_heads})")
        self.num_attention_heads = num_attention_heads
        self.attention_head_size = hidden_size // num_attention_heads
        self.all_head_size = self.num_attention_heads * self.attention_head_size
        self.scaling = self.attention_head_size ** -0.5
        self.dropout_prob = config.attention_probs_dropout_prob
        self.query = Linear(hidden_size, self.all_head_size, bias=config.qkv_bias)
        self.key = Linear(hidden_size, self.all_head_size, bias=config.qkv_bias)
        self.value = Linear(hidden_size, self.all_head_size, bias=config.qkv_bias)
        self.sequences_reduction_ratio = sequences_reduction_ratio
        if sequences_reduction_ratio > 1:
            self.sequence_reduction = Conv2d(hidden_size, hidden_size, kernel_size=sequences_reduction_ratio,
                                             stride=sequences_reduction_ratio)
            self.layer_norm = LayerNorm(hidden_size, eps=config.layer_norm_eps)

    def _heads(self, x):
        return x.reshape(x.shape[0], x.shape[1], self.num_attention_heads, self.attention_head_size).swapaxes(1, 2)

    def construct(self, hidden_states, height, width):
        batch_size, seq_len, num_channels = hidden_states.shape
        query = self._heads(self.query(hidden_states))
        if self.sequences_reduction_ratio > 1:
            # as HF: the (B, L, C) tokens read as a (B, C, height, width) map (with a class token in the sequence
            # this only works when the last stage does not reduce, which is HF's default 1)
            grid = hidden_states.swapaxes(1, 2).reshape(batch_size, num_channels, height, width)
            reduced = self.sequence_reduction(grid)
            hidden_states = self.layer_norm(reduced.reshape(batch_size, num_channels, -1).swapaxes(1, 2))
        context, probs = F.attention(query, self._heads(self.key(hidden_states)),
                                     self._heads(self.value(hidden_states)), scale=self.scaling,
                                     dropout_p=self.dropout_prob if self.training else 0.0, training=self.training)
        return context.swapaxes(1, 2).reshape(batch_size, seq_len, self.all_head_size), probs


class PvtAttention(nn.Cell):
    def __init__(self, config, hidden_size, num_attention_heads, sequences_reduction_ratio):
        super().__init__()
        self.self = PvtEfficientSelfAttention(config, hidden_size, num_attention_heads, sequences_reduction_ratio)
        self.output = PvtSelfOutput(config, hidden_size)

    def construct(self, hidden_states, height, width):
        context, probs = self.self(hidden_states, height, width)
        return self.output(context), probs


class PvtFFN(nn.Cell):
    def __init__(self, config, in_features, hidden_features, out_features=None):
        super().__init__()
        self.dense1 = Linear(in_features, hidden_features)
        self.intermediate_act_fn = F.get_activation(config.hidden_act)
        self.dense2 = Linear(hidden_features, out_features if out_features is not None else in_features)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def construct(self, hidden_states):
        hidden_states = self.dropout(self.intermediate_act_fn(self.dense1(hidden_states)))
        return self.dropout(self.dense2(hidden_states))


class PvtDropPath(nn.Cell):
    """Stochastic depth per sample; identity outside training."""

    def __init__(self, drop_prob=0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def construct(self, hidden_states):
        if self.drop_prob == 0.0 or not self.training:
            return hidden_states
        keep_prob = 1 - self.drop_prob
        shape = (hidden_states.shape[0],) + (1,) * (hidden_states.ndim - 1)
        random_tensor = ops.floor(ops.rand(shape, dtype=hidden_states.dtype) + keep_prob)
        return hidden_states / keep_prob * random_tensor


class PvtLayer(nn.Cell):
    def __init__(self, config, hidden_size, num_attention_heads, drop_path, sequences_reduction_ratio, mlp_ratio):
        super().__init__()
        self.layer_norm_1 = LayerNorm(hidden_size, eps=config.layer_norm_eps)
        self.attention = PvtAttention(config, hidden_size, num_attention_heads, sequences_reduction_ratio)
        self.drop_path = PvtDropPath(drop_path)
        self.layer_norm_2 = LayerNorm(hidden_size, eps=config.layer_norm_eps)
        self.mlp = PvtFFN(config, hidden_size, int(hidden_size * mlp_ratio))

    def construct(self, hidden_states, height, width):
        attention_output, probs = self.attention(self.layer_norm_1(hidden_states), height, width)
        hidden_states = self.drop_path(attention_output) + hidden_states
        return hidden_states + self.drop_path(self.mlp(self.layer_norm_2(hidden_states))), probs


class PvtEncoder(nn.Cell):
    def __init__(self, config):
        super().__init__()
        total = sum(config.depths)
        rates = [config.drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        blocks = config.num_encoder_blocks
        self.patch_embeddings = nn.CellList([
            PvtPatchEmbeddings(config, config.image_size if i == 0 else config.image_size // (2 ** (i + 1)),
                               config.patch_sizes[i], config.strides[i],
                               config.num_channels if i == 0 else config.hidden_sizes[i - 1],
                               config.hidden_sizes[i], cls_token=i == blocks - 1)
            for i in range(blocks)])
        self.block = nn.CellList()
        start = 0
        for i in range(blocks):
            self.block.append(nn.CellList([
                PvtLayer(config, config.hidden_sizes[i], config.num_attention_heads[i], rates[start + j],
                         config.sequence_reduction_ratios[i], config.mlp_ratios[i])
                for j in range(config.depths[i])]))
            start += config.depths[i]
        self.layer_norm = LayerNorm(config.hidden_sizes[-1], eps=config.layer_norm_eps)

    def construct(self, pixel_values, output_attentions=False, output_hidden_states=False):
        """(final LayerNorm'd tokens, every layer's output + the final one, every layer's attention probs)."""
        all_hidden_states = () if output_hidden_states else None
        all_attentions = () if output_attentions else None
        batch_size = pixel_values.shape[0]
        hidden_states = pixel_values
        last = len(self.block) - 1
        for idx, (embedding, layers) in enumerate(zip(self.patch_embeddings, self.block)):
            hidden_states, height, width = embedding(hidden_states)
            for layer in layers:
                hidden_states, probs = layer(hidden_states, height, width)
                if output_attentions:
                    all_attentions += (probs,)
                if output_hidden_states:
                    all_hidden_states += (hidden_states,)
            if idx != last:
                hidden_states = hidden_states.reshape(batch_size, height, width, -1).permute(0, 3, 1, 2)
        hidden_states = self.layer_norm(hidden_states)
        if output_hidden_states:
            all_hidden_states += (hidden_states,)
        return hidden_states, all_hidden_states, all_attentions


class PvtPreTrainedModel(PreTrainedModel):
    config_class = PvtConfig
    base_model_prefix = "pvt"
    main_input_name = "pixel_values"
    _no_split_modules = ["PvtPatchEmbeddings", "PvtLayer"]

    def _init_weights(self, cell):
        """HF's scheme: truncated normal for the position tables and the class token."""
        super()._init_weights(cell)
        if isinstance(cell, PvtPatchEmbeddings):
            init_parameter(cell.position_embeddings, TruncatedNormal(self.config.initializer_range))
            if cell.cls_token is not None:
                init_parameter(cell.cls_token, TruncatedNormal(self.config.initializer_range))

    def _output_flags(self, output_attentions, output_hidden_states):
        config = self.config
        return (output_attentions if output_attentions is not None else config.output_attentions,
                output_hidden_states if output_hidden_states is not None else config.output_hidden_states)


class PvtModel(PvtPreTrainedModel):
    def __init__(self, config: PvtConfig):
        super().__init__(config)
        self.encoder = PvtEncoder(config)
        self.post_init()

    def construct(self, pixel_values=None, output_attentions=None, output_hidden_states=None, return_dict=None,
                  **kwargs):
        r"""
        Args:
            pixel_values: (B, C, H, W) at the configured `image_size`, e.g. from `PvtImageProcessor(Pil)`.
        Returns `last_hidden_state` (B, 1 + H'*W', C) (class token first), and optionally every layer's output (+ the
        final normalised one) and attention probabilities.
        """
        if pixel_values is None:
            raise ValueError("You have to specify pixel_values")
        output_attentions, output_hidden_states = self._output_flags(output_attentions, output_hidden_states)
        last, hidden, attentions = self._forward(pixel_values, output_attentions, output_hidden_states)
        fields = {"last_hidden_state": last, "hidden_states": hidden, "attentions": attentions}
        return model_output(BaseModelOutput, fields, return_dict is not False)

    def _forward(self, pixel_values, output_attentions=False, output_hidden_states=False):
        pixel_values = pixel_values.astype(self.encoder.patch_embeddings[0].projection.weight.dtype)
        return self.encoder(pixel_values, output_attentions, output_hidden_states)


class PvtForImageClassification(PvtPreTrainedModel):
    """Linear classifier on the final class token."""

    def __init__(self, config: PvtConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.pvt = PvtModel(config)
        self.classifier = Linear(config.hidden_sizes[-1], config.num_labels) if config.num_labels > 0 else None
        self.post_init()

    def construct(self, pixel_values=None, labels=None, output_attentions=None, output_hidden_states=None,
                  return_dict=None, **kwargs):
        if pixel_values is None:
            raise ValueError("You have to specify pixel_values")
        output_attentions, output_hidden_states = self._output_flags(output_attentions, output_hidden_states)
        sequence_output, hidden, attentions = self.pvt._forward(pixel_values, output_attentions, output_hidden_states)
        pooled = sequence_output[:, 0, :]
        logits = self.classifier(pooled) if self.classifier is not None else pooled
        loss = sequence_classification_loss(labels, logits, self.config) if labels is not None else None
        fields = {"loss": loss, "logits": logits, "hidden_states": hidden, "attentions": attentions}
        return model_output(ImageClassifierOutput, fields, return_dict is not False)


__all__ = ["PvtModel", "PvtForImageClassification", "PvtPreTrainedModel"]
