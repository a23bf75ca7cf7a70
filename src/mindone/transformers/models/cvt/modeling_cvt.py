"""CvT (Convolutional vision Transformer) on MindSpore: HF's `modeling_cvt.py` checkpoint keys, signatures and
outputs.

Stages that each start with a strided convolutional token embedding (conv + LayerNorm over channels) and stack
pre-norm transformer layers whose queries, keys and values come from depthwise conv + BatchNorm projections of the
token map (keys/values strided); the last stage may carry a class token, which skips the convolutions. Attention
scores are scaled by embed_dim ** -0.5 (HF's choice, not head_dim).
"""

import collections.abc
from dataclasses import dataclass
from typing import Any, Optional, Tuple

from mindspore import nn, ops
from mindspore.common.initializer import Normal
from transformers import CvtConfig

from ...backend import functional as F
from ...backend.layers import BatchNorm2d, Conv2d, Dropout, LayerNorm, Linear, new_parameter
from ...loss_utils import sequence_classification_loss
from ...modeling_outputs import ImageClassifierOutputWithNoAttention, ModelOutput, model_output
from ...modeling_utils import PreTrainedModel


@dataclass
class BaseModelOutputWithCLSToken(ModelOutput):
    last_hidden_state: Any = None
    cls_token_value: Any = None
    hidden_states: Optional[Tuple[Any, ...]] = None


class CvtConvEmbeddings(nn.Cell):
    """Strided conv, then LayerNorm over the channels of every position; (B, C, H, W) in and out."""

    def __init__(self, patch_size, num_channels, embed_dim, stride, padding):
        super().__init__()
        patch_size = tuple(patch_size) if isinstance(patch_size, collections.abc.Iterable) else (patch_size,) * 2
        self.patch_size = patch_size
        self.projection = Conv2d(num_channels, embed_dim, kernel_size=patch_size, stride=stride, padding=padding)
        self.normalization = LayerNorm(embed_dim)

    def construct(self, pixel_values):
        pixel_values = self.projection(pixel_values.astype(self.projection.weight.dtype))
        batch_size, num_channels, height, width = pixel_values.shape
        tokens = self.normalization(pixel_values.reshape(batch_size, num_channels, -1).swapaxes(1, 2))
        return tokens.swapaxes(1, 2).reshape(batch_size, num_channels, height, width)


class CvtEmbeddings(nn.Cell):
    def __init__(self, patch_size, num_channels, embed_dim, stride, padding, dropout_rate):
        super().__init__()
        self.convolution_embeddings = CvtConvEmbeddings(patch_size, num_channels, embed_dim, stride, padding)
        self.dropout = Dropout(dropout_rate)

    def construct(self, pixel_values):
        return self.dropout(self.convolution_embeddings(pixel_values))


class CvtSelfAttentionConvProjection(nn.Cell):
    """Depthwise conv (no bias) + BatchNorm."""

    def __init__(self, embed_dim, kernel_size, padding, stride):
        super().__init__()
        self.convolution = Conv2d(embed_dim, embed_dim, kernel_size=kernel_size, padding=padding, stride=stride,
                                  bias=False, groups=embed_dim)
        self.normalization = BatchNorm2d(embed_dim)

    def construct(self, hidden_state):
        return self.normalization(self.convolution(hidden_state))


class CvtSelfAttentionProjection(nn.Cell):
    """(B, C, H, W) -> depthwise conv + BatchNorm -> (B, H'W', C) tokens."""

    def __init__(self, embed_dim, kernel_size, padding, stride, projection_method="dw_bn"):
        super().__init__()
        if projection_method != "dw_bn":
            raise ValueError(f"CvT qkv projection {projection_method!r} is not supported (HF's forward needs "
                             "'dw_bn')")
        self.convolution_projection = CvtSelfAttentionConvProjection(embed_dim, kernel_size, padding, stride)

    def construct(self, hidden_state):
        hidden_state = self.convolution_projection(hidden_state)
        batch_size, num_channels = hidden_state.shape[0], hidden_state.shape[1]
        return hidden_state.reshape(batch_size, num_channels, -1).swapaxes(1, 2)


class CvtSelfAttention(nn.Cell):
    def __init__(self, num_heads, embed_dim, kernel_size, padding_q, padding_kv, stride_q, stride_kv,
                 qkv_projection_method, qkv_bias, attention_drop_rate, with_cls_token=True):
        super().__init__()
        self.scale = embed_dim ** -0.5
        self.with_cls_token = with_cls_token
        self.embed_dim, self.num_heads = embed_dim, num_heads
        query_method = "linear" if qkv_projection_method == "avg" else qkv_projection_method
        self.convolution_projection_query = CvtSelfAttentionProjection(embed_dim, kernel_size, padding_q, stride_q,
                                                                       projection_method=query_method)
        self.convolution_projection_key = CvtSelfAttentionProjection(embed_dim, kernel_size, padding_kv, stride_kv,
                                                                     projection_method=qkv_projection_method)
        self.convolution_projection_value = CvtSelfAttentionProjection(embed_dim, kernel_size, padding_kv, stride_kv,
                                                                       projection_method=qkv_projection_method)
        self.projection_query = Linear(embed_dim, embed_dim, bias=qkv_bias)
        self.projection_key = Linear(embed_dim, embed_dim, bias=qkv_bias)
        self.projection_value = Linear(embed_dim, embed_dim, bias=qkv_bias)
        self.dropout = Dropout(attention_drop_rate)

    def _heads(self, hidden_state):
        batch_size, length, _ = hidden_state.shape
        return hidden_state.reshape(batch_size, length, self.num_heads, -1).swapaxes(1, 2)

    def construct(self, hidden_state, height, width):
        cls_token = None
        if self.with_cls_token:
            cls_token, hidden_state = hidden_state[:, :1], hidden_state[:, 1:]
        batch_size, _, num_channels = hidden_state.shape
        token_map = hidden_state.swapaxes(1, 2).reshape(batch_size, num_channels, height, width)
        key = self.convolution_projection_key(token_map)
        query = self.convolution_projection_query(token_map)
        value = self.convolution_projection_value(token_map)
        if self.with_cls_token:  # the class token skips the convolutions
            query = ops.cat((cls_token, query), 1)
            key = ops.cat((cls_token, key), 1)
            value = ops.cat((cls_token, value), 1)
        query = self._heads(self.projection_query(query))
        key = self._heads(self.projection_key(key))
        value = self._heads(self.projection_value(value))
        probs = self.dropout(F.softmax(ops.matmul(query, key.swapaxes(-1, -2)) * self.scale, -1))
        context = ops.matmul(probs, value)
        return context.swapaxes(1, 2).reshape(batch_size, context.shape[2], self.embed_dim)


class CvtSelfOutput(nn.Cell):
    """The residual connection is in CvtLayer (pre-norm)."""

    def __init__(self, embed_dim, drop_rate):
        super().__init__()
        self.dense = Linear(embed_dim, embed_dim)
        self.dropout = Dropout(drop_rate)

    def construct(self, hidden_state):
        return self.dropout(self.dense(hidden_state))


class CvtAttention(nn.Cell):
    def __init__(self, num_heads, embed_dim, kernel_size, padding_q, padding_kv, stride_q, stride_kv,
                 qkv_projection_method, qkv_bias, attention_drop_rate, drop_rate, with_cls_token=True):
        super().__init__()
        self.attention = CvtSelfAttention(num_heads, embed_dim, kernel_size, padding_q, padding_kv, stride_q,
                                          stride_kv, qkv_projection_method, qkv_bias, attention_drop_rate,
                                          with_cls_token)
        self.output = CvtSelfOutput(embed_dim, drop_rate)

    def construct(self, hidden_state, height, width):
        return self.output(self.attention(hidden_state, height, width))


class CvtIntermediate(nn.Cell):
    def __init__(self, embed_dim, mlp_ratio):
        super().__init__()
        self.dense = Linear(embed_dim, int(embed_dim * mlp_ratio))

    def construct(self, hidden_state):
        return F.gelu(self.dense(hidden_state))


class CvtOutput(nn.Cell):
    """Projection back to embed_dim plus the residual (HF adds it here)."""

    def __init__(self, embed_dim, mlp_ratio, drop_rate):
        super().__init__()
        self.dense = Linear(int(embed_dim * mlp_ratio), embed_dim)
        self.dropout = Dropout(drop_rate)

    def construct(self, hidden_state, input_tensor):
        return self.dropout(self.dense(hidden_state)) + input_tensor


class CvtDropPath(nn.Cell):
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


class CvtLayer(nn.Cell):
    def __init__(self, num_heads, embed_dim, kernel_size, padding_q, padding_kv, stride_q, stride_kv,
                 qkv_projection_method, qkv_bias, attention_drop_rate, drop_rate, mlp_ratio, drop_path_rate,
                 with_cls_token=True):
        super().__init__()
        self.attention = CvtAttention(num_heads, embed_dim, kernel_size, padding_q, padding_kv, stride_q, stride_kv,
                                      qkv_projection_method, qkv_bias, attention_drop_rate, drop_rate,
                                      with_cls_token)
        self.intermediate = CvtIntermediate(embed_dim, mlp_ratio)
        self.output = CvtOutput(embed_dim, mlp_ratio, drop_rate)
        self.drop_path = CvtDropPath(drop_path_rate)
        self.layernorm_before = LayerNorm(embed_dim)
        self.layernorm_after = LayerNorm(embed_dim)

    def construct(self, hidden_state, height, width):
        attention_output = self.attention(self.layernorm_before(hidden_state), height, width)
        hidden_state = self.drop_path(attention_output) + hidden_state
        layer_output = self.output(self.intermediate(self.layernorm_after(hidden_state)), hidden_state)
        # HF applies the drop path to the sum including the residual
        return self.drop_path(layer_output)


class CvtStage(nn.Cell):
    def __init__(self, config, stage):
        super().__init__()
        self.stage = stage
        self.has_cls_token = bool(config.cls_token[stage])
        if self.has_cls_token:
            self.cls_token = new_parameter((1, 1, config.embed_dim[-1]), Normal(1.0))
        self.embedding = CvtEmbeddings(
            patch_size=config.patch_sizes[stage], stride=config.patch_stride[stage],
            num_channels=config.num_channels if stage == 0 else config.embed_dim[stage - 1],
            embed_dim=config.embed_dim[stage], padding=config.patch_padding[stage],
            dropout_rate=config.drop_rate[stage])
        depth = config.depth[stage]
        rates = [config.drop_path_rate[stage] * i / max(depth - 1, 1) for i in range(depth)]
        self.layers = nn.CellList([
            CvtLayer(num_heads=config.num_heads[stage], embed_dim=config.embed_dim[stage],
                     kernel_size=config.kernel_qkv[stage], padding_q=config.padding_q[stage],
                     padding_kv=config.padding_kv[stage], stride_q=config.stride_q[stage],
                     stride_kv=config.stride_kv[stage], qkv_projection_method=config.qkv_projection_method[stage],
                     qkv_bias=config.qkv_bias[stage], attention_drop_rate=config.attention_drop_rate[stage],
                     drop_rate=config.drop_rate[stage], mlp_ratio=config.mlp_ratio[stage],
                     # HF gives every layer of the stage the rate at index `stage` of the stage's schedule
                     drop_path_rate=rates[stage] if stage < depth else rates[-1],
                     with_cls_token=config.cls_token[stage])
            for _ in range(depth)
        ])

    def construct(self, hidden_state):
        hidden_state = self.embedding(hidden_state)
        batch_size, num_channels, height, width = hidden_state.shape
        hidden_state = hidden_state.reshape(batch_size, num_channels, -1).swapaxes(1, 2)
        cls_token = None
        if self.has_cls_token:
            cls = ops.broadcast_to(self.cls_token.astype(hidden_state.dtype), (batch_size, 1, num_channels))
            hidden_state = ops.cat((cls, hidden_state), 1)
        for layer in self.layers:
            hidden_state = layer(hidden_state, height, width)
        if self.has_cls_token:
            cls_token, hidden_state = hidden_state[:, :1], hidden_state[:, 1:]
        return hidden_state.swapaxes(1, 2).reshape(batch_size, num_channels, height, width), cls_token


class CvtEncoder(nn.Cell):
    def __init__(self, config):
        super().__init__()
        self.stages = nn.CellList([CvtStage(config, i) for i in range(len(config.depth))])

    def construct(self, pixel_values, output_hidden_states=False):
        all_hidden_states = () if output_hidden_states else None
        hidden_state, cls_token = pixel_values, None
        for stage in self.stages:
            hidden_state, cls_token = stage(hidden_state)
            if output_hidden_states:
                all_hidden_states += (hidden_state,)
        return hidden_state, cls_token, all_hidden_states


class CvtPreTrainedModel(PreTrainedModel):
    config_class = CvtConfig
    base_model_prefix = "cvt"
    main_input_name = "pixel_values"
    _no_split_modules = ["CvtLayer"]

    def _flag(self, value, name):
        return value if value is not None else getattr(self.config, name)


class CvtModel(CvtPreTrainedModel):
    def __init__(self, config: CvtConfig, add_pooling_layer=True):
        super().__init__(config)
        self.encoder = CvtEncoder(config)
        self.post_init()

    def construct(self, pixel_values=None, output_hidden_states=None, return_dict=None, **kwargs):
        r"""
        Args:
            pixel_values: (B, C, H, W), e.g. from `ConvNextImageProcessor(..., return_tensors="np")`.
        Returns `last_hidden_state` (B, C, H', W'), `cls_token_value` (B, 1, C) when the last stage has a class token,
        and with `output_hidden_states` every stage's map.
        """
        if pixel_values is None:
            raise ValueError("You have to specify pixel_values")
        last, cls_token, hidden = self.encoder(pixel_values, self._flag(output_hidden_states, "output_hidden_states"))
        fields = {"last_hidden_state": last, "cls_token_value": cls_token, "hidden_states": hidden}
        return model_output(BaseModelOutputWithCLSToken, fields, return_dict is not False)


class CvtForImageClassification(CvtPreTrainedModel):
    def __init__(self, config: CvtConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.cvt = CvtModel(config, add_pooling_layer=False)
        self.layernorm = LayerNorm(config.embed_dim[-1])
        self.classifier = Linear(config.embed_dim[-1], config.num_labels) if config.num_labels > 0 else None
        self.post_init()

    def construct(self, pixel_values=None, labels=None, output_hidden_states=None, return_dict=None, **kwargs):
        last, cls_token, hidden = self.cvt.encoder(pixel_values,
                                                   self._flag(output_hidden_states, "output_hidden_states"))
        if self.config.cls_token[-1]:
            sequence_output = self.layernorm(cls_token)
        else:
            batch_size, num_channels = last.shape[0], last.shape[1]
            sequence_output = self.layernorm(last.reshape(batch_size, num_channels, -1).swapaxes(1, 2))
        pooled = sequence_output.mean(1)
        logits = self.classifier(pooled) if self.classifier is not None else pooled
        loss = sequence_classification_loss(labels, logits, self.config) if labels is not None else None
        fields = {"loss": loss, "logits": logits, "hidden_states": hidden}
        return model_output(ImageClassifierOutputWithNoAttention, fields, return_dict is not False)


__all__ = ["CvtModel", "CvtForImageClassification", "CvtPreTrainedModel"]
