"""MobileViTV2 on MindSpore: HF's `modeling_mobilevitv2.py` names, checkpoint keys and outputs.

A MobileNetV2-style conv stem and inverted residual blocks, then MobileViTV2 blocks: a local depthwise conv + 1x1
projection, the map cut into non-overlapping `patch_size` x `patch_size` patches (unfold), separable linear
self-attention (one context score per position, softmax over the patches; linear in their number) with GroupNorm,
folded back and projected. Semantic segmentation adds a DeepLabV3 head (ASPP with atrous convs + image pooling).
"""

from mindspore import nn, ops
from transformers import MobileViTV2Config

from ...backend import functional as F
from ...backend.layers import BatchNorm2d, Conv2d, Dropout, GroupNorm, Linear
from ...loss_utils import sequence_classification_loss
from ...modeling_outputs import (
    BaseModelOutputWithPoolingAndNoAttention,
    ImageClassifierOutputWithNoAttention,
    SemanticSegmenterOutput,
    model_output,
)
from ...modeling_utils import PreTrainedModel


def make_divisible(value, divisor=8, min_value=None):
    """The channel count nearest to `value` that is a multiple of `divisor` (at least `min_value`), never more than
    10% below `value`."""
    min_value = divisor if min_value is None else min_value
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return int(new_value)


def _layer_dims(config):
    """Output channels of the stem and of encoder layers 1-5."""
    wm = config.width_multiplier
    return [make_divisible(max(16, min(64, 32 * wm)), divisor=8, min_value=16),
            make_divisible(64 * wm, divisor=16), make_divisible(128 * wm, divisor=8),
            make_divisible(256 * wm, divisor=8), make_divisible(384 * wm, divisor=8),
            make_divisible(512 * wm, divisor=8)]


class MobileViTV2ConvLayer(nn.Cell):
    """conv (same padding) -> optional BatchNorm -> optional activation (the config's, or a named one)."""

    def __init__(self, config, in_channels, out_channels, kernel_size, stride=1, groups=1, bias=False, dilation=1,
                 use_normalization=True, use_activation=True):
        super().__init__()
        if in_channels % groups != 0:
            raise ValueError(f"Input channels ({in_channels}) are not divisible by {groups} groups.")
        if out_channels % groups != 0:
            raise ValueError(f"Output channels ({out_channels}) are not divisible by {groups} groups.")
        padding = int((kernel_size - 1) / 2) * dilation
        self.convolution = Conv2d(in_channels, out_channels, kernel_size=kernel_size, stride=stride, padding=padding,
                                  dilation=dilation, groups=groups, bias=bias)
        self.normalization = BatchNorm2d(out_channels, eps=1e-5, momentum=0.1) if use_normalization else None
        if use_activation:
            self.activation = F.get_activation(use_activation if isinstance(use_activation, str)
                                               else config.hidden_act)
        else:
            self.activation = None

    def construct(self, features):
        features = self.convolution(features)
        if self.normalization is not None:
            features = self.normalization(features)
        if self.activation is not None:
            features = self.activation(features)
        return features


class MobileViTV2InvertedResidual(nn.Cell):
    """MobileNetV2 block: 1x1 expansion, depthwise 3x3 (strided / dilated), 1x1 reduction; residual when shapes
    allow."""

    def __init__(self, config, in_channels, out_channels, stride, dilation=1):
        super().__init__()
        expanded_channels = make_divisible(int(round(in_channels * config.expand_ratio)), 8)
        if stride not in (1, 2):
            raise ValueError(f"Invalid stride {stride}.")
        self.use_residual = stride == 1 and in_channels == out_channels
        self.expand_1x1 = MobileViTV2ConvLayer(config, in_channels, expanded_channels, kernel_size=1)
        self.conv_3x3 = MobileViTV2ConvLayer(config, expanded_channels, expanded_channels, kernel_size=3,
                                             stride=stride, groups=expanded_channels, dilation=dilation)
        self.reduce_1x1 = MobileViTV2ConvLayer(config, expanded_channels, out_channels, kernel_size=1,
                                               use_activation=False)

    def construct(self, features):
        out = self.reduce_1x1(self.conv_3x3(self.expand_1x1(features)))
        return features + out if self.use_residual else out


class MobileViTV2MobileNetLayer(nn.Cell):
    def __init__(self, config, in_channels, out_channels, stride=1, num_stages=1):
        super().__init__()
        self.layer = nn.CellList([
            MobileViTV2InvertedResidual(config, in_channels if i == 0 else out_channels, out_channels,
                                        stride=stride if i == 0 else 1)
            for i in range(num_stages)
        ])

    def construct(self, features):
        for layer in self.layer:
            features = layer(features)
        return features


class MobileViTV2LinearSelfAttention(nn.Cell):
    """Separable self-attention on patches (B, C, P, N): a 1x1 conv gives one query channel, keys and values; the
    query's softmax over the N patches weights the keys into one context vector per patch position, which scales
    ReLU(values)."""

    def __init__(self, config, embed_dim):
        super().__init__()
        self.qkv_proj = MobileViTV2ConvLayer(config, embed_dim, 1 + 2 * embed_dim, kernel_size=1, bias=True,
                                             use_normalization=False, use_activation=False)
        self.attn_dropout = Dropout(config.attn_dropout)
        self.out_proj = MobileViTV2ConvLayer(config, embed_dim, embed_dim, kernel_size=1, bias=True,
                                             use_normalization=False, use_activation=False)
        self.embed_dim = embed_dim

    def construct(self, hidden_states):
        qkv = self.qkv_proj(hidden_states)
        query, key, value = qkv[:, :1], qkv[:, 1:1 + self.embed_dim], qkv[:, 1 + self.embed_dim:]
        context_scores = self.attn_dropout(F.softmax_exp(query, axis=-1))
        context_vector = (key * context_scores).sum(-1, keepdims=True)
        return self.out_proj(F.relu(value) * context_vector)


class MobileViTV2FFN(nn.Cell):
    def __init__(self, config, embed_dim, ffn_latent_dim, ffn_dropout=0.0):
        super().__init__()
        self.conv1 = MobileViTV2ConvLayer(config, embed_dim, ffn_latent_dim, kernel_size=1, bias=True,
                                          use_normalization=False, use_activation=True)
        self.dropout1 = Dropout(ffn_dropout)
        self.conv2 = MobileViTV2ConvLayer(config, ffn_latent_dim, embed_dim, kernel_size=1, bias=True,
                                          use_normalization=False, use_activation=False)
        self.dropout2 = Dropout(ffn_dropout)

    def construct(self, hidden_states):
        return self.dropout2(self.conv2(self.dropout1(self.conv1(hidden_states))))


class MobileViTV2TransformerLayer(nn.Cell):
    """Pre-norm block with GroupNorm(1 group) over (C, P, N): x + attention(norm(x)), then + FFN(norm(.))."""

    def __init__(self, config, embed_dim, ffn_latent_dim, dropout=0.0):
        super().__init__()
        self.layernorm_before = GroupNorm(1, embed_dim, eps=config.layer_norm_eps)
        self.attention = MobileViTV2LinearSelfAttention(config, embed_dim)
        self.dropout1 = Dropout(dropout)
        self.layernorm_after = GroupNorm(1, embed_dim, eps=config.layer_norm_eps)
        self.ffn = MobileViTV2FFN(config, embed_dim, ffn_latent_dim, config.ffn_dropout)

    def construct(self, hidden_states):
        hidden_states = self.attention(self.layernorm_before(hidden_states)) + hidden_states
        return self.ffn(self.layernorm_after(hidden_states)) + hidden_states


class MobileViTV2Transformer(nn.Cell):
    def __init__(self, config, n_layers, d_model):
        super().__init__()
        ffn_dim = int((config.ffn_multiplier * d_model // 16) * 16)
        self.layer = nn.CellList([MobileViTV2TransformerLayer(config, d_model, ffn_dim) for _ in range(n_layers)])

    def construct(self, hidden_states):
        for layer in self.layer:
            hidden_states = layer(hidden_states)
        return hidden_states


class MobileViTV2Layer(nn.Cell):
    """[optional strided inverted residual], local depthwise conv + 1x1 projection, patch transformer, fold back,
    1x1 projection + BatchNorm."""

    def __init__(self, config, in_channels, out_channels, attn_unit_dim, n_attn_blocks=2, dilation=1, stride=2):
        super().__init__()
        self.patch_height = self.patch_width = config.patch_size
        if stride == 2:
            self.downsampling_layer = MobileViTV2InvertedResidual(
                config, in_channels, out_channels, stride=stride if dilation == 1 else 1,
                dilation=dilation // 2 if dilation > 1 else 1)
            in_channels = out_channels
        else:
            self.downsampling_layer = None
        self.conv_kxk = MobileViTV2ConvLayer(config, in_channels, in_channels, kernel_size=config.conv_kernel_size,
                                             groups=in_channels)
        self.conv_1x1 = MobileViTV2ConvLayer(config, in_channels, attn_unit_dim, kernel_size=1,
                                             use_normalization=False, use_activation=False)
        self.transformer = MobileViTV2Transformer(config, d_model=attn_unit_dim, n_layers=n_attn_blocks)
        self.layernorm = GroupNorm(1, attn_unit_dim, eps=config.layer_norm_eps)
        self.conv_projection = MobileViTV2ConvLayer(config, attn_unit_dim, in_channels, kernel_size=1,
                                                    use_normalization=True, use_activation=False)

    def unfolding(self, feature_map):
        """(B, C, H, W) -> (B, C, ph * pw, N) patches as torch's unfold (rows/columns beyond whole patches are
        dropped)."""
        batch_size, channels, height, width = feature_map.shape
        ph, pw = self.patch_height, self.patch_width
        rows, cols = height // ph, width // pw
        x = feature_map[:, :, :rows * ph, :cols * pw].reshape(batch_size, channels, rows, ph, cols, pw)
        return ops.transpose(x, (0, 1, 3, 5, 2, 4)).reshape(batch_size, channels, ph * pw, rows * cols)

    def folding(self, patches, output_size):
        """The inverse of `unfolding`, zeros where no patch reaches (torch's fold)."""
        batch_size, channels = patches.shape[0], patches.shape[1]
        height, width = output_size
        ph, pw = self.patch_height, self.patch_width
        rows, cols = height // ph, width // pw
        x = patches.reshape(batch_size, channels, ph, pw, rows, cols)
        x = ops.transpose(x, (0, 1, 4, 2, 5, 3)).reshape(batch_size, channels, rows * ph, cols * pw)
        if rows * ph != height or cols * pw != width:
            x = F.pad(x, (0, width - cols * pw, 0, height - rows * ph))
        return x

    def construct(self, features):
        if self.downsampling_layer is not None:
            features = self.downsampling_layer(features)
        features = self.conv_1x1(self.conv_kxk(features))
        output_size = features.shape[2:]
        patches = self.layernorm(self.transformer(self.unfolding(features)))
        return self.conv_projection(self.folding(patches, output_size))


class MobileViTV2Encoder(nn.Cell):
    def __init__(self, config):
        super().__init__()
        dims = _layer_dims(config)
        dilate_layer_4 = config.output_stride == 8
        dilate_layer_5 = config.output_stride in (8, 16)
        attn_dims = [make_divisible(d * config.width_multiplier, divisor=8) for d in config.base_attn_unit_dims]
        dilation_4 = 2 if dilate_layer_4 else 1
        dilation_5 = dilation_4 * 2 if dilate_layer_5 else dilation_4
        self.layer = nn.CellList([
            MobileViTV2MobileNetLayer(config, dims[0], dims[1], stride=1, num_stages=1),
            MobileViTV2MobileNetLayer(config, dims[1], dims[2], stride=2, num_stages=2),
            MobileViTV2Layer(config, dims[2], dims[3], attn_dims[0], n_attn_blocks=config.n_attn_blocks[0]),
            MobileViTV2Layer(config, dims[3], dims[4], attn_dims[1], n_attn_blocks=config.n_attn_blocks[1],
                             dilation=dilation_4),
            MobileViTV2Layer(config, dims[4], dims[5], attn_dims[2], n_attn_blocks=config.n_attn_blocks[2],
                             dilation=dilation_5),
        ])

    def construct(self, hidden_states, output_hidden_states=False):
        """Returns the last layer's output and, when asked, every layer's output (not the stem's)."""
        all_hidden_states = () if output_hidden_states else None
        for layer in self.layer:
            hidden_states = layer(hidden_states)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
        return hidden_states, all_hidden_states


class MobileViTV2PreTrainedModel(PreTrainedModel):
    config_class = MobileViTV2Config
    base_model_prefix = "mobilevitv2"
    main_input_name = "pixel_values"
    supports_gradient_checkpointing = True
    _no_split_modules = ["MobileViTV2Layer", "MobileViTV2InvertedResidual", "MobileViTV2ASPP"]

    def _hidden_flag(self, output_hidden_states):
        return output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states


class MobileViTV2Model(MobileViTV2PreTrainedModel):
    def __init__(self, config: MobileViTV2Config, expand_output=True):
        super().__init__(config)
        self.expand_output = expand_output
        self.conv_stem = MobileViTV2ConvLayer(config, config.num_channels, _layer_dims(config)[0], kernel_size=3,
                                              stride=2, use_normalization=True, use_activation=True)
        self.encoder = MobileViTV2Encoder(config)
        self.post_init()

    def construct(self, pixel_values=None, output_hidden_states=None, return_dict=None, **kwargs):
        r"""
        Args:
            pixel_values: (B, C, H, W), e.g. from `MobileViTImageProcessor(..., return_tensors="np")`.
        Returns `last_hidden_state` (B, C, H', W'), `pooler_output` (its spatial mean; only with `expand_output`)
        and, when asked, every encoder layer's output.
        """
        last, pooled, hidden = self._forward(pixel_values, self._hidden_flag(output_hidden_states))
        fields = {"last_hidden_state": last, "pooler_output": pooled, "hidden_states": hidden}
        return model_output(BaseModelOutputWithPoolingAndNoAttention, fields, return_dict is not False)

    def _forward(self, pixel_values, output_hidden_states=False):
        if pixel_values is None:
            raise ValueError("You have to specify pixel_values")
        pixel_values = pixel_values.astype(self.conv_stem.convolution.weight.dtype)
        last, hidden = self.encoder(self.conv_stem(pixel_values), output_hidden_states)
        pooled = last.mean((-2, -1)) if self.expand_output else None
        return last, pooled, hidden


class MobileViTV2ForImageClassification(MobileViTV2PreTrainedModel):
    def __init__(self, config: MobileViTV2Config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.mobilevitv2 = MobileViTV2Model(config)
        out_channels = _layer_dims(config)[5]
        self.classifier = Linear(out_channels, config.num_labels) if config.num_labels > 0 else None
        self.post_init()

    def construct(self, pixel_values=None, output_hidden_states=None, labels=None, return_dict=None, **kwargs):
        _, pooled, hidden = self.mobilevitv2._forward(pixel_values, self._hidden_flag(output_hidden_states))
        logits = self.classifier(pooled) if self.classifier is not None else pooled
        loss = sequence_classification_loss(labels, logits, self.config) if labels is not None else None
        fields = {"loss": loss, "logits": logits, "hidden_states": hidden}
        return model_output(ImageClassifierOutputWithNoAttention, fields, return_dict is not False)


class MobileViTV2ASPPPooling(nn.Cell):
    """Image pooling branch: global average -> 1x1 conv + BN + ReLU -> upsampled (bilinear) back."""

    def __init__(self, config, in_channels, out_channels):
        super().__init__()
        self.conv_1x1 = MobileViTV2ConvLayer(config, in_channels, out_channels, kernel_size=1, stride=1,
                                             use_normalization=True, use_activation="relu")

    def construct(self, features):
        spatial_size = features.shape[-2:]
        pooled = self.conv_1x1(features.mean((-2, -1), keep_dims=True))
        return F.interpolate(pooled, spatial_size, mode="bilinear", align_corners=False)


class MobileViTV2ASPP(nn.Cell):
    """Atrous spatial pyramid pooling: 1x1 conv, three dilated 3x3 convs, image pooling; concatenated, projected."""

    def __init__(self, config):
        super().__init__()
        in_channels = _layer_dims(config)[5]
        out_channels = config.aspp_out_channels
        if len(config.atrous_rates) != 3:
            raise ValueError("Expected 3 values for atrous_rates")
        self.convs = nn.CellList(
            [MobileViTV2ConvLayer(config, in_channels, out_channels, kernel_size=1, use_activation="relu")]
            + [MobileViTV2ConvLayer(config, in_channels, out_channels, kernel_size=3, dilation=rate,
                                    use_activation="relu") for rate in config.atrous_rates]
            + [MobileViTV2ASPPPooling(config, in_channels, out_channels)])
        self.project = MobileViTV2ConvLayer(config, 5 * out_channels, out_channels, kernel_size=1,
                                            use_activation="relu")
        self.dropout = Dropout(config.aspp_dropout_prob)

    def construct(self, features):
        return self.dropout(self.project(F.cat([conv(features) for conv in self.convs], 1)))


class MobileViTV2DeepLabV3(nn.Cell):
    def __init__(self, config):
        super().__init__()
        self.aspp = MobileViTV2ASPP(config)
        self.dropout_prob = config.classifier_dropout_prob
        self.classifier = MobileViTV2ConvLayer(config, config.aspp_out_channels, config.num_labels, kernel_size=1,
                                               use_normalization=False, use_activation=False, bias=True)

    def construct(self, hidden_states):
        features = self.aspp(hidden_states[-1])
        if self.training and self.dropout_prob > 0:
            # torch's Dropout2d: whole channels zeroed per sample
            keep = 1.0 - self.dropout_prob
            shape = features.shape[:2] + (1, 1)
            features = features * ops.floor(ops.rand(shape, dtype=features.dtype) + keep) / keep
        return self.classifier(features)


class MobileViTV2ForSemanticSegmentation(MobileViTV2PreTrainedModel):
    def __init__(self, config: MobileViTV2Config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.mobilevitv2 = MobileViTV2Model(config, expand_output=False)
        self.segmentation_head = MobileViTV2DeepLabV3(config)
        self.post_init()

    def construct(self, pixel_values=None, labels=None, output_hidden_states=None, return_dict=None, **kwargs):
        r"""
        Args:
            pixel_values: (B, C, H, W), e.g. from `MobileViTImageProcessor(..., return_tensors="np")`.
            labels: (B, H, W) class indices per pixel (`config.semantic_loss_ignore_index` is ignored).
        Returns `logits` (B, num_labels, H / output_stride, W / output_stride); with labels, the cross-entropy of
        the logits resized (bilinear) to the labels.
        """
        if labels is not None and self.config.num_labels == 1:
            raise ValueError("The number of labels should be greater than one")
        _, _, hidden = self.mobilevitv2._forward(pixel_values, True)
        logits = self.segmentation_head(hidden)
        loss = None
        if labels is not None:
            upsampled = F.interpolate(logits, labels.shape[-2:], mode="bilinear", align_corners=False)
            flat = upsampled.permute(0, 2, 3, 1).reshape(-1, upsampled.shape[1])
            loss = F.cross_entropy(flat, labels.reshape(-1), ignore_index=self.config.semantic_loss_ignore_index)
        fields = {"loss": loss, "logits": logits,
                  "hidden_states": hidden if self._hidden_flag(output_hidden_states) else None}
        return model_output(SemanticSegmenterOutput, fields, return_dict is not False)


__all__ = ["MobileViTV2Model", "MobileViTV2ForImageClassification", "MobileViTV2ForSemanticSegmentation",
           "MobileViTV2PreTrainedModel"]
