"""Data2Vec-Vision on MindSpore: HF's `modeling_data2vec_vision.py` checkpoint keys, signatures and outputs.

A BEiT-style encoder: class token + patch embeddings (optional absolute positions, optional mask token), pre-norm
layers whose attention adds a learned relative position bias (per layer or shared) and whose two residual branches
are scaled per channel (layer scale, `lambda_1` / `lambda_2`); the pooled output is the LayerNorm of the mean patch
token (or the class token without mean pooling). Key projections have no bias, as in BEiT.
"""

import collections.abc
import math
from dataclasses import dataclass
from typing import Any, Optional, Tuple

import mindspore as ms
import numpy as np
from mindspore import nn, ops
from mindspore.common.initializer import Constant, Normal, Zero
from transformers import Data2VecVisionConfig

from ...backend import functional as F
from ...backend.layers import BatchNorm2d, Conv2d, ConvTranspose2d, Dropout, LayerNorm, Linear, new_parameter
from ...loss_utils import sequence_classification_loss
from ...modeling_outputs import ImageClassifierOutput, ModelOutput, SemanticSegmenterOutput, model_output
from ...modeling_utils import PreTrainedModel, init_parameter


@dataclass
class Data2VecVisionModelOutputWithPooling(ModelOutput):
    last_hidden_state: Any = None
    pooler_output: Any = None
    hidden_states: Optional[Tuple[Any, ...]] = None
    attentions: Optional[Tuple[Any, ...]] = None


def _pair(x):
    return tuple(x) if isinstance(x, collections.abc.Iterable) else (x, x)


@ops.constexpr
def _relative_position_index(window_height, window_width):
    """((area+1) * (area+1),) index into the bias table for every (query, key) pair of the patch grid plus the class
    token; the last three table rows are class->patch, patch->class and class->class."""
    num_relative_distance = (2 * window_height - 1) * (2 * window_width - 1) + 3
    area = window_height * window_width
    coords = np.stack(np.meshgrid(np.arange(window_height), np.arange(window_width), indexing="ij")).reshape(2, -1)
    relative = (coords[:, :, None] - coords[:, None, :]).transpose(1, 2, 0)
    relative[:, :, 0] += window_height - 1
    relative[:, :, 1] += window_width - 1
    relative[:, :, 0] *= 2 * window_width - 1
    index = np.zeros((area + 1, area + 1), np.int64)
    index[1:, 1:] = relative.sum(-1)
    index[0, 0:] = num_relative_distance - 3
    index[0:, 0] = num_relative_distance - 2
    index[0, 0] = num_relative_distance - 1
    return ms.Tensor(index.reshape(-1).astype(np.int32))


class Data2VecVisionPatchEmbeddings(nn.Cell):
    def __init__(self, config):
        super().__init__()
        image_size, patch_size = _pair(config.image_size), _pair(config.patch_size)
        self.image_size, self.patch_size = image_size, patch_size
        self.num_channels = config.num_channels
        self.num_patches = (image_size[1] // patch_size[1]) * (image_size[0] // patch_size[0])
        self.patch_shape = (image_size[0] // patch_size[0], image_size[1] // patch_size[1])
        self.projection = Conv2d(config.num_channels, config.hidden_size, kernel_size=patch_size, stride=patch_size)

    def construct(self, pixel_values):
        if pixel_values.shape[1] != self.num_channels:
            raise ValueError("Make sure that the channel dimension of the pixel values match with the one set in the "
                             "configuration.")
        embeddings = self.projection(pixel_values.astype(self.projection.weight.dtype))
        batch_size, channels, height, width = embeddings.shape
        return embeddings.reshape(batch_size, channels, -1).swapaxes(1, 2), (height, width)


class Data2VecVisionEmbeddings(nn.Cell):
    """Class token + patch embeddings (masked ones replaced by the mask token) + optional absolute positions."""

    def __init__(self, config):
        super().__init__()
        self.cls_token = new_parameter((1, 1, config.hidden_size))
        self.mask_token = new_parameter((1, 1, config.hidden_size)) if config.use_mask_token else None
        self.patch_embeddings = Data2VecVisionPatchEmbeddings(config)
        self.patch_size = config.patch_size
        num_patches = self.patch_embeddings.num_patches
        self.position_embeddings = (new_parameter((1, num_patches + 1, config.hidden_size))
                                    if config.use_absolute_position_embeddings else None)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def interpolate_pos_encoding(self, embeddings, height, width):
        """The position table resized (bicubic) to a `height` x `width` image's patch grid; the class entry kept."""
        num_patches = embeddings.shape[1] - 1
        num_positions = self.position_embeddings.shape[1] - 1
        if num_patches == num_positions and height == width:
            return self.position_embeddings
        dim = embeddings.shape[-1]
        side = int(num_positions ** 0.5)
        table = self.position_embeddings[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2)
        table = F.interpolate(table, (height // self.patch_size, width // self.patch_size), mode="bicubic",
                              align_corners=False)
        return ops.cat((self.position_embeddings[:, :1], table.permute(0, 2, 3, 1).reshape(1, -1, dim)), 1)

    def construct(self, pixel_values, bool_masked_pos=None):
        height, width = pixel_values.shape[2], pixel_values.shape[3]
        embeddings, patch_grid = self.patch_embeddings(pixel_values)
        batch_size, _, dim = embeddings.shape
        if bool_masked_pos is not None:
            w = bool_masked_pos.reshape(batch_size, -1, 1).astype(embeddings.dtype)
            embeddings = embeddings * (1 - w) + self.mask_token.astype(embeddings.dtype) * w
        cls_tokens = ops.broadcast_to(self.cls_token.astype(embeddings.dtype), (batch_size, 1, dim))
        embeddings = ops.cat((cls_tokens, embeddings), 1)
        if self.position_embeddings is not None:
            embeddings = embeddings + self.interpolate_pos_encoding(embeddings, height, width)
        return self.dropout(embeddings), patch_grid


class Data2VecVisionRelativePositionBias(nn.Cell):
    def __init__(self, config, window_size):
        super().__init__()
        self.window_size = window_size
        self.num_relative_distance = (2 * window_size[0] - 1) * (2 * window_size[1] - 1) + 3
        self.relative_position_bias_table = new_parameter((self.num_relative_distance, config.num_attention_heads))

    def construct(self, window_size, interpolate_pos_encoding=False, dim_size=None):
        """(1, heads, area+1, area+1) for a `window_size` patch grid: the table's patch-to-patch part resized
        (bilinear, as HF: the identity for the trained grid) to the grid, then gathered by relative offset."""
        old_height, old_width = 2 * self.window_size[0] - 1, 2 * self.window_size[1] - 1
        new_height, new_width = 2 * window_size[0] - 1, 2 * window_size[1] - 1
        table = self.relative_position_bias_table
        sub_table = table[:self.num_relative_distance - 3]
        # HF's layout: (1, old_width, old_height, heads) -> (1, heads, old_width, old_height)
        sub_table = sub_table.reshape(1, old_width, old_height, -1).permute(0, 3, 1, 2)
        sub_table = F.interpolate(sub_table, (new_height, new_width), mode="bilinear", align_corners=False)
        sub_table = sub_table.permute(0, 2, 3, 1).reshape(new_height * new_width, -1)
        table = ops.cat((sub_table, table[self.num_relative_distance - 3:]), 0)
        area = window_size[0] * window_size[1] + 1
        bias = ops.gather(table, _relative_position_index(window_size[0], window_size[1]), 0)
        bias = ops.transpose(bias.reshape(area, area, -1), (2, 0, 1))
        if interpolate_pos_encoding:
            bias = F.interpolate(bias[:, None], (dim_size, dim_size), mode="bilinear", align_corners=False)[:, 0]
        return bias[None]


class Data2VecVisionSelfAttention(nn.Cell):
    def __init__(self, config, window_size=None):
        super().__init__()
        if config.hidden_size % config.num_attention_heads != 0 and not hasattr(config, "embedding_size"):
            raise ValueError(f"The hidden size {config.hidden_size} is not a multiple of the number of attention "
                             f"heads {config.num_attention_heads}.")
        self.patch_size = config.patch_size
        self.num_attention_heads = config.num_attention_heads
        self.attention_head_size = int(config.hidden_size / config.num_attention_heads)
        self.all_head_size = self.num_attention_heads * self.attention_head_size
        self.query = Linear(config.hidden_size, self.all_head_size)
        self.key = Linear(config.hidden_size, self.all_head_size, bias=False)
        self.value = Linear(config.hidden_size, self.all_head_size)
        self.dropout = Dropout(config.attention_probs_dropout_prob)
        self.has_relative_position_bias = bool(window_size)
        if self.has_relative_position_bias:
            self.relative_position_bias = Data2VecVisionRelativePositionBias(config, window_size=window_size)

    def construct(self, hidden_states, relative_position_bias=None, interpolate_pos_encoding=False, resolution=None):
        batch_size, seq_len, _ = hidden_states.shape
        shape = (batch_size, seq_len, self.num_attention_heads, self.attention_head_size)
        query = self.query(hidden_states).reshape(shape).swapaxes(1, 2)
        key = self.key(hidden_states).reshape(shape).swapaxes(1, 2)
        value = self.value(hidden_states).reshape(shape).swapaxes(1, 2)
        scores = ops.matmul(query, key.swapaxes(-1, -2)) / math.sqrt(self.attention_head_size)
        if self.has_relative_position_bias:
            window_size = (resolution[0] // self.patch_size, resolution[1] // self.patch_size)
            scores = scores + self.relative_position_bias(window_size, interpolate_pos_encoding,
                                                          seq_len).astype(scores.dtype)
        if relative_position_bias is not None:
            scores = scores + relative_position_bias.astype(scores.dtype)
        probs = self.dropout(F.softmax(scores, -1))
        context = ops.matmul(probs, value).swapaxes(1, 2).reshape(batch_size, seq_len, self.all_head_size)
        return context, probs


class Data2VecVisionSelfOutput(nn.Cell):
    """The residual connection is in Data2VecVisionLayer (pre-norm)."""

    def __init__(self, config):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def construct(self, hidden_states):
        return self.dropout(self.dense(hidden_states))


class Data2VecVisionAttention(nn.Cell):
    def __init__(self, config, window_size=None):
        super().__init__()
        self.attention = Data2VecVisionSelfAttention(config, window_size=window_size)
        self.output = Data2VecVisionSelfOutput(config)

    def construct(self, hidden_states, relative_position_bias=None, interpolate_pos_encoding=False, resolution=None):
        context, probs = self.attention(hidden_states, relative_position_bias, interpolate_pos_encoding, resolution)
        return self.output(context), probs


class Data2VecVisionIntermediate(nn.Cell):
    def __init__(self, config):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.intermediate_size)
        self.intermediate_act_fn = F.get_activation(config.hidden_act)

    def construct(self, hidden_states):
        return self.intermediate_act_fn(self.dense(hidden_states))


class Data2VecVisionOutput(nn.Cell):
    def __init__(self, config):
        super().__init__()
        self.dense = Linear(config.intermediate_size, config.hidden_size)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def construct(self, hidden_states):
        return self.dropout(self.dense(hidden_states))


class Data2VecVisionDropPath(nn.Cell):
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


class Data2VecVisionLayer(nn.Cell):
    """Pre-norm attention and MLP, each residual branch scaled per channel (layer scale)."""

    def __init__(self, config, window_size=None, drop_path_rate=0.0):
        super().__init__()
        self.attention = Data2VecVisionAttention(config, window_size=window_size)
        self.intermediate = Data2VecVisionIntermediate(config)
        self.output = Data2VecVisionOutput(config)
        self.layernorm_before = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.drop_path = Data2VecVisionDropPath(drop_path_rate)
        self.layernorm_after = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        init_values = config.layer_scale_init_value
        if init_values > 0:
            self.lambda_1 = new_parameter((config.hidden_size,), Constant(init_values))
            self.lambda_2 = new_parameter((config.hidden_size,), Constant(init_values))
        else:
            self.lambda_1, self.lambda_2 = None, None

    def construct(self, hidden_states, relative_position_bias=None, interpolate_pos_encoding=False, resolution=None):
        attention_output, probs = self.attention(self.layernorm_before(hidden_states), relative_position_bias,
                                                 interpolate_pos_encoding, resolution)
        if self.lambda_1 is not None:
            attention_output = self.lambda_1 * attention_output
        hidden_states = self.drop_path(attention_output) + hidden_states
        layer_output = self.output(self.intermediate(self.layernorm_after(hidden_states)))
        if self.lambda_2 is not None:
            layer_output = self.lambda_2 * layer_output
        return self.drop_path(layer_output) + hidden_states, probs


class Data2VecVisionEncoder(nn.Cell):
    def __init__(self, config, window_size=None):
        super().__init__()
        self.patch_size = config.patch_size
        self.has_relative_position_bias = config.use_shared_relative_position_bias
        if self.has_relative_position_bias:
            self.relative_position_bias = Data2VecVisionRelativePositionBias(config, window_size=window_size)
        n = config.num_hidden_layers
        rates = [config.drop_path_rate * i / max(n - 1, 1) for i in range(n)]
        self.layer = nn.CellList([
            Data2VecVisionLayer(config, window_size=window_size if config.use_relative_position_bias else None,
                                drop_path_rate=rates[i])
            for i in range(n)
        ])

    def construct(self, hidden_states, output_attentions=False, output_hidden_states=False,
                  interpolate_pos_encoding=False, resolution=None):
        all_hidden_states = () if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layer:
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            shared_bias = None
            if self.has_relative_position_bias:
                window_size = (resolution[0] // self.patch_size, resolution[1] // self.patch_size)
                shared_bias = self.relative_position_bias(window_size, interpolate_pos_encoding,
                                                          hidden_states.shape[1])
            hidden_states, probs = layer(hidden_states, shared_bias, interpolate_pos_encoding, resolution)
            if output_attentions:
                all_attentions += (probs,)
        if output_hidden_states:
            all_hidden_states += (hidden_states,)
        return hidden_states, all_hidden_states, all_attentions


class Data2VecVisionPooler(nn.Cell):
    def __init__(self, config):
        super().__init__()
        self.layernorm = (LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if config.use_mean_pooling
                          else None)

    def construct(self, hidden_states):
        if self.layernorm is not None:
            return self.layernorm(hidden_states[:, 1:, :].mean(1))
        return hidden_states[:, 0]


class Data2VecVisionPreTrainedModel(PreTrainedModel):
    config_class = Data2VecVisionConfig
    base_model_prefix = "data2vec_vision"
    main_input_name = "pixel_values"
    _no_split_modules = ["Data2VecVisionLayer"]
    _keys_to_ignore_on_load_unexpected = [r".*relative_position_index.*"]

    def _init_weights(self, cell):
        super()._init_weights(cell)
        if isinstance(cell, Data2VecVisionEmbeddings):
            for p in (cell.cls_token, cell.mask_token, cell.position_embeddings):
                if p is not None:
                    init_parameter(p, Zero())
        elif isinstance(cell, Data2VecVisionRelativePositionBias):
            init_parameter(cell.relative_position_bias_table, Zero())
        elif isinstance(cell, Data2VecVisionLayer) and cell.lambda_1 is not None:
            init_parameter(cell.lambda_1, Constant(self.config.layer_scale_init_value))
            init_parameter(cell.lambda_2, Constant(self.config.layer_scale_init_value))
        elif isinstance(cell, (Conv2d, ConvTranspose2d)):
            init_parameter(cell.weight, Normal(self.config.initializer_range))
            if cell.bias is not None:
                init_parameter(cell.bias, Zero())

    def _flag(self, value, name):
        return value if value is not None else getattr(self.config, name)


class Data2VecVisionModel(Data2VecVisionPreTrainedModel):
    def __init__(self, config: Data2VecVisionConfig, add_pooling_layer=False):
        super().__init__(config)
        self.embeddings = Data2VecVisionEmbeddings(config)
        self.encoder = Data2VecVisionEncoder(config, window_size=self.embeddings.patch_embeddings.patch_shape)
        self.layernorm = (None if config.use_mean_pooling
                          else LayerNorm(config.hidden_size, eps=config.layer_norm_eps))
        self.pooler = Data2VecVisionPooler(config) if add_pooling_layer else None
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.patch_embeddings

    def construct(self, pixel_values=None, bool_masked_pos=None, output_attentions=None, output_hidden_states=None,
                  interpolate_pos_encoding=False, return_dict=None, **kwargs):
        r"""
        Args:
            pixel_values: (B, C, H, W), e.g. from `BeitImageProcessor(..., return_tensors="np")`.
            bool_masked_pos: (B, num_patches) booleans, patches replaced by the mask token (`use_mask_token`).
            interpolate_pos_encoding: resize the position table and relative position bias to the image.
        Returns `last_hidden_state` (B, 1 + num_patches, C), `pooler_output` (with `add_pooling_layer`) and, when
        asked, `hidden_states` / `attentions`.
        """
        fields = self._forward(pixel_values, bool_masked_pos, self._flag(output_attentions, "output_attentions"),
                               self._flag(output_hidden_states, "output_hidden_states"), interpolate_pos_encoding)
        return model_output(Data2VecVisionModelOutputWithPooling, fields, return_dict is not False)

    def _forward(self, pixel_values, bool_masked_pos=None, output_attentions=False, output_hidden_states=False,
                 interpolate_pos_encoding=False):
        if pixel_values is None:
            raise ValueError("You have to specify pixel_values")
        embeddings, _ = self.embeddings(pixel_values, bool_masked_pos)
        resolution = (pixel_values.shape[2], pixel_values.shape[3])
        last, hidden, attentions = self.encoder(embeddings, output_attentions, output_hidden_states,
                                                interpolate_pos_encoding, resolution)
        if self.layernorm is not None:
            last = self.layernorm(last)
        pooled = self.pooler(last) if self.pooler is not None else None
        return {"last_hidden_state": last, "pooler_output": pooled, "hidden_states": hidden,
                "attentions": attentions}


class Data2VecVisionForImageClassification(Data2VecVisionPreTrainedModel):
    def __init__(self, config: Data2VecVisionConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.data2vec_vision = Data2VecVisionModel(config, add_pooling_layer=True)
        self.classifier = Linear(config.hidden_size, config.num_labels) if config.num_labels > 0 else None
        self.post_init()

    def construct(self, pixel_values=None, labels=None, output_attentions=None, output_hidden_states=None,
                  interpolate_pos_encoding=False, return_dict=None, **kwargs):
        out = self.data2vec_vision._forward(pixel_values, None, self._flag(output_attentions, "output_attentions"),
                                            self._flag(output_hidden_states, "output_hidden_states"),
                                            interpolate_pos_encoding)
        pooled = out["pooler_output"]
        logits = self.classifier(pooled) if self.classifier is not None else pooled
        loss = sequence_classification_loss(labels, logits, self.config) if labels is not None else None
        fields = {"loss": loss, "logits": logits, "hidden_states": out["hidden_states"],
                  "attentions": out["attentions"]}
        return model_output(ImageClassifierOutput, fields, return_dict is not False)


class Data2VecVisionConvLayer(nn.Cell):
    """conv (no bias by default) -> BatchNorm -> ReLU (or no activation)."""

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=0, bias=False, dilation=1,
                 groups=1, activation="relu"):
        super().__init__()
        self.convolution = Conv2d(in_channels, out_channels, kernel_size=kernel_size, stride=stride, padding=padding,
                                  dilation=dilation, groups=groups, bias=bias)
        self.normalization = BatchNorm2d(out_channels)
        self.activation = F.get_activation(activation) if activation is not None else None

    def construct(self, hidden_states):
        hidden_states = self.normalization(self.convolution(hidden_states))
        return self.activation(hidden_states) if self.activation is not None else hidden_states


class Data2VecVisionPyramidPoolingBlock(nn.Cell):
    """Average-pool to `pool_scale` bins, 1x1 conv layer, upsample (bilinear) back to `size`."""

    def __init__(self, pool_scale, in_channels, channels):
        super().__init__()
        self.pool_scale = pool_scale
        self.conv = Data2VecVisionConvLayer(in_channels, channels, kernel_size=1)

    def construct(self, hidden_state, size):
        hidden_state = self.conv(F.adaptive_avg_pool2d(hidden_state, self.pool_scale))
        return F.interpolate(hidden_state, size, mode="bilinear", align_corners=False)


class Data2VecVisionPyramidPoolingModule(nn.Cell):
    """Pyramid Pooling Module (PSPNet): one pooled, convolved and upsampled map per scale."""

    def __init__(self, pool_scales, in_channels, channels):
        super().__init__()
        self.pool_scales = pool_scales
        self.in_channels = in_channels
        self.channels = channels
        self.blocks = nn.CellList([Data2VecVisionPyramidPoolingBlock(s, in_channels, channels) for s in pool_scales])

    def construct(self, hidden_states):
        size = hidden_states.shape[2:]
        return [block(hidden_states, size) for block in self.blocks]


class Data2VecVisionUperHead(nn.Cell):
    """UPerNet's decode head: lateral 1x1 convs, top-down upsampled sums with PSP on the coarsest level, 3x3 convs,
    everything upsampled to the finest level, concatenated, fused and classified per pixel."""

    def __init__(self, config):
        super().__init__()
        self.pool_scales = config.pool_scales
        self.in_channels = [config.hidden_size] * 4
        self.channels = config.hidden_size
        self.classifier = Conv2d(self.channels, config.num_labels, kernel_size=1)
        self.psp_modules = Data2VecVisionPyramidPoolingModule(self.pool_scales, self.in_channels[-1], self.channels)
        self.psp_bottleneck = Data2VecVisionConvLayer(self.in_channels[-1] + len(self.pool_scales) * self.channels,
                                                      self.channels, kernel_size=3, padding=1)
        self.lateral_convs = nn.CellList([Data2VecVisionConvLayer(c, self.channels, kernel_size=1)
                                          for c in self.in_channels[:-1]])
        self.fpn_convs = nn.CellList([Data2VecVisionConvLayer(self.channels, self.channels, kernel_size=3, padding=1)
                                      for _ in self.in_channels[:-1]])
        self.fpn_bottleneck = Data2VecVisionConvLayer(len(self.in_channels) * self.channels, self.channels,
                                                      kernel_size=3, padding=1)

    def psp_forward(self, hidden_states):
        hidden_state = hidden_states[-1]
        return self.psp_bottleneck(ops.cat([hidden_state] + self.psp_modules(hidden_state), 1))

    def construct(self, encoder_hidden_states):
        laterals = [conv(encoder_hidden_states[i]) for i, conv in enumerate(self.lateral_convs)]
        laterals.append(self.psp_forward(encoder_hidden_states))
        levels = len(laterals)
        for i in range(levels - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(laterals[i], laterals[i - 1].shape[2:],
                                                              mode="bilinear", align_corners=False)
        fpn_outs = [self.fpn_convs[i](laterals[i]) for i in range(levels - 1)]
        fpn_outs.append(laterals[-1])
        size = fpn_outs[0].shape[2:]
        fpn_outs = [fpn_outs[0]] + [F.interpolate(out, size, mode="bilinear", align_corners=False)
                                    for out in fpn_outs[1:]]
        return self.classifier(self.fpn_bottleneck(ops.cat(fpn_outs, 1)))


class Data2VecVisionFCNHead(nn.Cell):
    """Fully convolutional auxiliary head on map `in_index`: conv layers, optional concat with the input, 1x1
    classifier."""

    def __init__(self, config, in_index=2, kernel_size=3, dilation=1):
        super().__init__()
        self.in_channels = config.hidden_size
        self.channels = config.auxiliary_channels
        self.num_convs = config.auxiliary_num_convs
        self.concat_input = config.auxiliary_concat_input
        self.in_index = in_index
        padding = (kernel_size // 2) * dilation
        self.convs = nn.CellList([
            Data2VecVisionConvLayer(self.in_channels if i == 0 else self.channels, self.channels,
                                    kernel_size=kernel_size, padding=padding, dilation=dilation)
            for i in range(self.num_convs)
        ])
        if self.concat_input:
            self.conv_cat = Data2VecVisionConvLayer(self.in_channels + self.channels, self.channels,
                                                    kernel_size=kernel_size, padding=kernel_size // 2)
        self.classifier = Conv2d(self.channels, config.num_labels, kernel_size=1)

    def construct(self, encoder_hidden_states):
        residual = encoder_hidden_states[self.in_index]
        hidden_states = residual
        for conv in self.convs:
            hidden_states = conv(hidden_states)
        if self.concat_input:
            hidden_states = self.conv_cat(ops.cat([residual, hidden_states], 1))
        return self.classifier(hidden_states)


class _GELU(nn.Cell):
    def construct(self, x):
        return F.gelu(x)


class _MaxPool2x2(nn.Cell):
    def construct(self, x):
        return F.max_pool2d(x, 2, 2)


class _Identity(nn.Cell):
    def construct(self, x):
        return x


class Data2VecVisionForSemanticSegmentation(Data2VecVisionPreTrainedModel):
    def __init__(self, config: Data2VecVisionConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.data2vec_vision = Data2VecVisionModel(config, add_pooling_layer=False)
        if len(self.config.out_indices) != 4:
            raise ValueError("Data2VecVisionForSemanticSegmentation requires config.out_indices to be a list of 4 "
                             "integers, specifying which features to use from the backbone. One can use [3, 5, 7, 11] "
                             "in case of a base-sized architecture.")
        hidden = config.hidden_size
        # SequentialCell names its children 0, 1, 2 like torch's nn.Sequential: keys fpn1.0.*, fpn1.1.*, fpn1.3.*
        self.fpn1 = nn.SequentialCell([ConvTranspose2d(hidden, hidden, kernel_size=2, stride=2), BatchNorm2d(hidden),
                                       _GELU(), ConvTranspose2d(hidden, hidden, kernel_size=2, stride=2)])
        self.fpn2 = nn.SequentialCell([ConvTranspose2d(hidden, hidden, kernel_size=2, stride=2)])
        self.fpn3 = _Identity()
        self.fpn4 = _MaxPool2x2()
        self.decode_head = Data2VecVisionUperHead(config)
        self.auxiliary_head = Data2VecVisionFCNHead(config) if config.use_auxiliary_head else None
        self.post_init()

    def compute_loss(self, logits, auxiliary_logits, labels):
        """Cross-entropy of the logits upsampled (bilinear) to the labels' size, `semantic_loss_ignore_index`
        ignored, plus `auxiliary_loss_weight` x that of the auxiliary logits."""
        size = labels.shape[-2:]
        loss = self._pixel_loss(F.interpolate(logits, size, mode="bilinear", align_corners=False), labels)
        if auxiliary_logits is not None:
            auxiliary = F.interpolate(auxiliary_logits, size, mode="bilinear", align_corners=False)
            loss = loss + self.config.auxiliary_loss_weight * self._pixel_loss(auxiliary, labels)
        return loss

    def _pixel_loss(self, logits, labels):
        flat = logits.permute(0, 2, 3, 1).reshape(-1, logits.shape[1])
        return F.cross_entropy(flat, labels.reshape(-1), ignore_index=self.config.semantic_loss_ignore_index)

    def construct(self, pixel_values=None, labels=None, output_attentions=None, output_hidden_states=None,
                  interpolate_pos_encoding=False, return_dict=None, **kwargs):
        r"""
        Args:
            pixel_values: (B, C, H, W) at `config.image_size`, e.g. from `BeitImageProcessor(...,
                return_tensors="np")`.
            labels: (B, H, W) class per pixel (`config.semantic_loss_ignore_index` is ignored).
        Returns `logits` (B, num_labels, 4 x patch grid) — not upsampled to the image, as HF —, with labels the
        decode + auxiliary loss, the encoder's `hidden_states` / `attentions` when asked.
        """
        output_hidden_states = self._flag(output_hidden_states, "output_hidden_states")
        if labels is not None and self.config.num_labels == 1:
            raise ValueError("The number of labels should be greater than one")
        out = self.data2vec_vision._forward(pixel_values, None, self._flag(output_attentions, "output_attentions"),
                                            True, interpolate_pos_encoding)
        encoder_hidden_states = out["hidden_states"]
        batch_size = pixel_values.shape[0]
        grid = self.config.image_size // self.config.patch_size
        features = [x[:, 1:, :].permute(0, 2, 1).reshape(batch_size, -1, grid, grid)
                    for idx, x in enumerate(encoder_hidden_states) if idx + 1 in self.config.out_indices]
        features = [self.fpn1(features[0]), self.fpn2(features[1]), self.fpn3(features[2]), self.fpn4(features[3])]
        logits = self.decode_head(features)
        auxiliary_logits = self.auxiliary_head(features) if self.auxiliary_head is not None else None
        loss = self.compute_loss(logits, auxiliary_logits, labels) if labels is not None else None
        fields = {"loss": loss, "logits": logits,
                  "hidden_states": encoder_hidden_states if output_hidden_states else None,
                  "attentions": out["attentions"]}
        return model_output(SemanticSegmenterOutput, fields, return_dict is not False)


__all__ = ["Data2VecVisionModel", "Data2VecVisionForImageClassification", "Data2VecVisionForSemanticSegmentation",
           "Data2VecVisionPreTrainedModel"]
