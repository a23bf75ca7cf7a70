"""BiT (Big Transfer, ResNet v2) on MindSpore: HF's `modeling_bit.py` names, checkpoint keys and outputs.

Weight-standardised convolutions (each filter normalised to zero mean and unit biased variance, eps 1e-8, before the
convolution), GroupNorm + ReLU, pre-activation or classic bottleneck blocks, a 7x7 stem with max pooling. "SAME"
padding is TF-style: static when symmetric, otherwise computed from the input size (extra pixel at the end).
"""

import math

import mindspore as ms
from mindspore import nn, ops
from transformers import BitConfig

from ...backbone_utils import BackboneMixin
from ...backend import functional as F
from ...backend.layers import Conv2d, GroupNorm, Linear
from ...loss_utils import sequence_classification_loss
from ...modeling_outputs import (
    BackboneOutput,
    BaseModelOutputWithPoolingAndNoAttention,
    ImageClassifierOutputWithNoAttention,
    model_output,
)
from ...modeling_utils import PreTrainedModel


def get_padding_value(padding=None, kernel_size=7, stride=1, dilation=1):
    """(static padding, whether it is computed per input instead) for HF's padding names."""
    if padding is None:
        return ((stride - 1) + dilation * (kernel_size - 1)) // 2, False
    padding = padding.lower()
    if padding == "same":
        if stride == 1 and (dilation * (kernel_size - 1)) % 2 == 0:
            return ((stride - 1) + dilation * (kernel_size - 1)) // 2, False
        return 0, True
    if padding == "valid":
        return 0, False
    return ((stride - 1) + dilation * (kernel_size - 1)) // 2, False


def _dynamic_pad(x, kernel_size, stride, dilation, value=0.0):
    """TF "SAME" padding for this input size: total padding split with the extra pixel at the bottom / right."""
    def amount(size):
        return max((math.ceil(size / stride) - 1) * stride + (kernel_size - 1) * dilation + 1 - size, 0)

    pad_h, pad_w = amount(x.shape[-2]), amount(x.shape[-1])
    if pad_h > 0 or pad_w > 0:
        x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2), value)
    return x


class WeightStandardizedConv2d(Conv2d):
    def __init__(self, in_channel, out_channels, kernel_size, stride=1, padding="SAME", dilation=1, groups=1,
                 bias=False, eps=1e-6):
        padding, is_dynamic = get_padding_value(padding, kernel_size, stride=stride, dilation=dilation)
        super().__init__(in_channel, out_channels, kernel_size, stride=stride, padding=padding, dilation=dilation,
                         groups=groups, bias=bias)
        self.is_dynamic, self.kernel_size, self.eps = is_dynamic, kernel_size, eps

    def standardized_weight(self):
        """Each output filter at zero mean and unit (biased) variance, as torch's batch_norm in training mode: the
        statistics of fp16 weights are computed in float32 but kept in the weight's dtype (its saved mean and
        1/std), and the filter is normalised in float32 with those rounded values, then rounded once (bit-exact
        with torch's fp16 CPU kernel; normalising with the float32 statistics left BiT at 1.26x torch's fp16
        error against fp32, as the rounding of the statistics is part of torch's result)."""
        dtype = self.weight.dtype
        flat = self.weight.reshape(self.weight.shape[0], -1).astype(ms.float32)
        mean = flat.mean(-1, keep_dims=True)
        centred = flat - mean
        variance = (centred * centred).mean(-1, keep_dims=True)
        inv_std = ops.rsqrt(variance + self.eps)
        if dtype != ms.float32:
            mean = mean.astype(dtype).astype(ms.float32)
            inv_std = inv_std.astype(dtype).astype(ms.float32)
            centred = flat - mean
        return (centred * inv_std).reshape(self.weight.shape).astype(dtype)

    def construct(self, hidden_state):
        if self.is_dynamic:
            hidden_state = _dynamic_pad(hidden_state, self.kernel_size, self.stride, self.dilation)
        return F.conv2d(hidden_state, self.standardized_weight(), self.bias, self.stride, self.padding,
                        self.dilation, self.groups)


class BitGroupNormActivation(GroupNorm):
    """GroupNorm (config.num_groups) followed by the config's activation unless `apply_activation=False`."""

    def __init__(self, config, num_channels, eps=1e-5, affine=True, apply_activation=True):
        super().__init__(config.num_groups, num_channels, eps=eps, affine=affine)
        self.activation = F.get_activation(config.hidden_act) if apply_activation else None

    def construct(self, hidden_state):
        hidden_state = F.group_norm(hidden_state, self.num_groups, self.weight, self.bias, self.eps)
        return self.activation(hidden_state) if self.activation is not None else hidden_state


class BitMaxPool2d(nn.Cell):
    """3x3 / stride 2 max pooling, after TF "SAME" zero padding when `use_dynamic_padding` (HF pads with zeros)."""

    def __init__(self, kernel_size, stride, use_dynamic_padding=True):
        super().__init__()
        self.kernel_size, self.stride, self.use_dynamic_padding = kernel_size, stride, use_dynamic_padding

    def construct(self, hidden_states):
        if self.use_dynamic_padding:
            hidden_states = _dynamic_pad(hidden_states, self.kernel_size, self.stride, 1)
        return F.max_pool2d(hidden_states, self.kernel_size, self.stride)


class BitEmbeddings(nn.Cell):
    """7x7 stride-2 weight-standardised conv -> zero pad 1 (unless "SAME") -> GroupNorm + ReLU (bottleneck type
    only) -> 3x3 stride-2 max pool."""

    def __init__(self, config: BitConfig):
        super().__init__()
        self.convolution = WeightStandardizedConv2d(config.num_channels, config.embedding_size, kernel_size=7,
                                                    stride=2, eps=1e-8, padding=config.global_padding)
        self.pooler = BitMaxPool2d(kernel_size=3, stride=2, use_dynamic_padding=config.embedding_dynamic_padding)
        self.pad_one = not (config.global_padding is not None and config.global_padding.upper() == "SAME")
        self.norm = (BitGroupNormActivation(config, num_channels=config.embedding_size)
                     if config.layer_type != "preactivation" else None)
        self.num_channels = config.num_channels

    def construct(self, pixel_values):
        if pixel_values.shape[1] != self.num_channels:
            raise ValueError("Make sure that the channel dimension of the pixel values match with the one set in the "
                             "configuration.")
        embedding = self.convolution(pixel_values.astype(self.convolution.weight.dtype))
        if self.pad_one:
            embedding = F.pad(embedding, (1, 1, 1, 1))
        if self.norm is not None:
            embedding = self.norm(embedding)
        return self.pooler(embedding)


class BitDropPath(nn.Cell):
    """Stochastic depth per sample; identity outside training."""

    def __init__(self, drop_prob=0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def construct(self, hidden_states):
        if self.drop_prob == 0.0 or not self.training:
            return hidden_states
        keep_prob = 1 - self.drop_prob
        shape = (hidden_states.shape[0],) + (1,) * (hidden_states.ndim - 1)
        return hidden_states / keep_prob * ops.floor(ops.rand(shape, dtype=hidden_states.dtype) + keep_prob)


def make_div(value, divisor=8):
    new_value = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return new_value


class BitDownsampleConv(nn.Cell):
    """Shortcut projection: 1x1 weight-standardised conv (+ GroupNorm without activation for the bottleneck type)."""

    def __init__(self, config, in_channels, out_channels, stride=1, preact=True):
        super().__init__()
        self.conv = WeightStandardizedConv2d(in_channels, out_channels, 1, stride=stride, eps=1e-8,
                                             padding=config.global_padding)
        self.norm = None if preact else BitGroupNormActivation(config, out_channels, apply_activation=False)

    def construct(self, x):
        x = self.conv(x)
        return self.norm(x) if self.norm is not None else x


class BitPreActivationBottleneckLayer(nn.Cell):
    """ResNet v2 block: norm+act -> 1x1 -> norm+act -> 3x3 (strided) -> norm+act -> 1x1, plus the shortcut (projected
    from the pre-activated input in the first block of a stage)."""

    def __init__(self, config, in_channels, out_channels=None, bottle_ratio=0.25, stride=1, dilation=1,
                 first_dilation=None, groups=1, drop_path_rate=0.0, is_first_layer=False):
        super().__init__()
        first_dilation = first_dilation or dilation
        out_channels = out_channels or in_channels
        mid_channels = make_div(out_channels * bottle_ratio)
        self.downsample = (BitDownsampleConv(config, in_channels, out_channels, stride=stride, preact=True)
                           if is_first_layer else None)
        self.norm1 = BitGroupNormActivation(config, in_channels)
        self.conv1 = WeightStandardizedConv2d(in_channels, mid_channels, 1, eps=1e-8, padding=config.global_padding)
        self.norm2 = BitGroupNormActivation(config, num_channels=mid_channels)
        self.conv2 = WeightStandardizedConv2d(mid_channels, mid_channels, 3, stride=stride, groups=groups, eps=1e-8,
                                              padding=config.global_padding)
        self.norm3 = BitGroupNormActivation(config, mid_channels)
        self.conv3 = WeightStandardizedConv2d(mid_channels, out_channels, 1, eps=1e-8, padding=config.global_padding)
        self.drop_path = BitDropPath(drop_path_rate)

    def construct(self, hidden_states):
        preact = self.norm1(hidden_states)
        shortcut = self.downsample(preact) if self.downsample is not None else hidden_states
        hidden_states = self.conv1(preact)
        hidden_states = self.conv2(self.norm2(hidden_states))
        hidden_states = self.conv3(self.norm3(hidden_states))
        return self.drop_path(hidden_states) + shortcut


class BitBottleneckLayer(nn.Cell):
    """ResNet v1.5-style block with weight standardisation: 1x1 -> norm+act -> 3x3 -> norm+act -> 1x1 -> norm, plus
    the (projected) shortcut, then the activation."""

    def __init__(self, config, in_channels, out_channels=None, bottle_ratio=0.25, stride=1, dilation=1,
                 first_dilation=None, groups=1, drop_path_rate=0.0, is_first_layer=False):
        super().__init__()
        first_dilation = first_dilation or dilation
        out_channels = out_channels or in_channels
        mid_chs = make_div(out_channels * bottle_ratio)
        self.downsample = (BitDownsampleConv(config, in_channels, out_channels, stride=stride, preact=False)
                           if is_first_layer else None)
        self.conv1 = WeightStandardizedConv2d(in_channels, mid_chs, 1, eps=1e-8, padding=config.global_padding)
        self.norm1 = BitGroupNormActivation(config, num_channels=mid_chs)
        self.conv2 = WeightStandardizedConv2d(mid_chs, mid_chs, 3, stride=stride, dilation=first_dilation,
                                              groups=groups, eps=1e-8, padding=config.global_padding)
        self.norm2 = BitGroupNormActivation(config, num_channels=mid_chs)
        self.conv3 = WeightStandardizedConv2d(mid_chs, out_channels, 1, eps=1e-8, padding=config.global_padding)
        self.norm3 = BitGroupNormActivation(config, num_channels=out_channels, apply_activation=False)
        self.drop_path = BitDropPath(drop_path_rate)
        self.activation = F.get_activation(config.hidden_act)

    def construct(self, hidden_states):
        shortcut = self.downsample(hidden_states) if self.downsample is not None else hidden_states
        hidden_states = self.norm1(self.conv1(hidden_states))
        hidden_states = self.norm2(self.conv2(hidden_states))
        hidden_states = self.norm3(self.conv3(hidden_states))
        return self.activation(self.drop_path(hidden_states) + shortcut)


class BitStage(nn.Cell):
    def __init__(self, config, in_channels, out_channels, stride, dilation, depth, bottle_ratio=0.25,
                 layer_dropout=None):
        super().__init__()
        first_dilation = 1 if dilation in (1, 2) else 2
        layer_cls = BitBottleneckLayer if config.layer_type == "bottleneck" else BitPreActivationBottleneckLayer
        layers = []
        prev_chs = in_channels
        for layer_idx in range(depth):
            layers.append(layer_cls(config, prev_chs, out_channels, stride=stride if layer_idx == 0 else 1,
                                    dilation=dilation, bottle_ratio=bottle_ratio, first_dilation=first_dilation,
                                    drop_path_rate=layer_dropout[layer_idx] if layer_dropout else 0.0,
                                    is_first_layer=layer_idx == 0))
            prev_chs = out_channels
            first_dilation = dilation
        self.layers = nn.CellList(layers)

    def construct(self, hidden_state):
        for layer in self.layers:
            hidden_state = layer(hidden_state)
        return hidden_state


class BitEncoder(nn.Cell):
    def __init__(self, config: BitConfig):
        super().__init__()
        total = sum(config.depths)
        rates = [config.drop_path_rate * i / (total - 1) if total > 1 else 0.0 for i in range(total)]
        stages = []
        prev_chs, current_stride, dilation, start = config.embedding_size, 4, 1, 0
        for stage_idx, (depth, hidden_size) in enumerate(zip(config.depths, config.hidden_sizes)):
            out_channels = make_div(hidden_size * config.width_factor)
            stride = 1 if stage_idx == 0 else 2
            if current_stride >= config.output_stride:
                dilation *= stride
                stride = 1
            stages.append(BitStage(config, prev_chs, out_channels, stride=stride, dilation=dilation, depth=depth,
                                   layer_dropout=rates[start:start + depth]))
            prev_chs, start = out_channels, start + depth
            current_stride *= stride
        self.stages = nn.CellList(stages)

    def construct(self, hidden_state, output_hidden_states=False):
        """Returns the last stage's output and, when asked, every stage's input plus the last output."""
        hidden_states = () if output_hidden_states else None
        for stage in self.stages:
            if output_hidden_states:
                hidden_states += (hidden_state,)
            hidden_state = stage(hidden_state)
        if output_hidden_states:
            hidden_states += (hidden_state,)
        return hidden_state, hidden_states


class BitPreTrainedModel(PreTrainedModel):
    config_class = BitConfig
    base_model_prefix = "bit"
    main_input_name = "pixel_values"
    _no_split_modules = ["BitEmbeddings"]

    def _hidden_flag(self, output_hidden_states):
        return output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states


class BitModel(BitPreTrainedModel):
    def __init__(self, config: BitConfig):
        super().__init__(config)
        self.embedder = BitEmbeddings(config)
        self.encoder = BitEncoder(config)
        self.norm = (BitGroupNormActivation(config, num_channels=config.hidden_sizes[-1])
                     if config.layer_type == "preactivation" else None)
        self.post_init()

    def construct(self, pixel_values=None, output_hidden_states=None, return_dict=None, **kwargs):
        r"""
        Args:
            pixel_values: (B, C, H, W), e.g. from `BitImageProcessor(..., return_tensors="np")`.
        Returns `last_hidden_state` (B, C, H', W'), `pooler_output` (B, C, 1, 1: its spatial mean, as HF) and,
        when asked, `hidden_states` (the stem output and every stage's output).
        """
        last, pooled, hidden = self._forward(pixel_values, self._hidden_flag(output_hidden_states))
        fields = {"last_hidden_state": last, "pooler_output": pooled, "hidden_states": hidden}
        return model_output(BaseModelOutputWithPoolingAndNoAttention, fields, return_dict is not False)

    def _forward(self, pixel_values, output_hidden_states=False):
        last, hidden = self.encoder(self.embedder(pixel_values), output_hidden_states)
        if self.norm is not None:
            last = self.norm(last)
        return last, last.mean((-2, -1), keep_dims=True), hidden


class BitForImageClassification(BitPreTrainedModel):
    def __init__(self, config: BitConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bit = BitModel(config)
        # HF's `classifier` is nn.Sequential(Flatten, Linear): the Linear's keys are `classifier.1.*`
        self.classifier = nn.CellList([nn.Flatten(), Linear(config.hidden_sizes[-1], config.num_labels)]
                                      if config.num_labels > 0 else [nn.Flatten()])
        self.post_init()

    def construct(self, pixel_values=None, labels=None, output_hidden_states=None, return_dict=None, **kwargs):
        _, pooled, hidden = self.bit._forward(pixel_values, self._hidden_flag(output_hidden_states))
        logits = pooled.reshape(pooled.shape[0], -1)
        if self.num_labels > 0:
            logits = self.classifier[1](logits)
        loss = sequence_classification_loss(labels, logits, self.config) if labels is not None else None
        fields = {"loss": loss, "logits": logits, "hidden_states": hidden}
        return model_output(ImageClassifierOutputWithNoAttention, fields, return_dict is not False)


class BitBackbone(BackboneMixin, BitPreTrainedModel):
    has_attentions = False

    def __init__(self, config: BitConfig):
        super().__init__(config)
        self.bit = BitModel(config)
        self.num_features = [config.embedding_size] + list(config.hidden_sizes)
        self.post_init()

    def construct(self, pixel_values, output_hidden_states=None, return_dict=None, **kwargs):
        r"""
        Returns `feature_maps`: the maps of `config.out_features` (`stem` = the embeddings, `stageN` = stage N's
        output); with `output_hidden_states`, every hidden state.
        """
        _, _, hidden = self.bit._forward(pixel_values, True)
        feature_maps = ()
        for stage, hidden_state in zip(self.stage_names, hidden):
            if stage in self.out_features:
                feature_maps += (hidden_state,)
        fields = {"feature_maps": feature_maps,
                  "hidden_states": hidden if self._hidden_flag(output_hidden_states) else None}
        return model_output(BackboneOutput, fields, return_dict is not False)


__all__ = ["BitModel", "BitForImageClassification", "BitBackbone", "BitPreTrainedModel"]
