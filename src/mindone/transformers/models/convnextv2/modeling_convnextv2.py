"""ConvNeXt V2 on MindSpore: HF's `modeling_convnextv2.py` structure, names and outputs.

Stages of depthwise 7x7 conv -> channels-last LayerNorm -> pointwise MLP with global response normalisation (GRN),
each stage after the first opening with a channels-first LayerNorm + strided conv; the pooled output is the
LayerNorm of the spatial mean.
"""

from mindspore import nn, ops
from mindspore.common.initializer import Zero
from transformers import ConvNextV2Config

from ...backend import functional as F
from ...backend.layers import Conv2d, LayerNorm, Linear, new_parameter
from ...loss_utils import sequence_classification_loss
from ...modeling_outputs import (
    BaseModelOutputWithPoolingAndNoAttention,
    ImageClassifierOutputWithNoAttention,
    model_output,
)
from ...modeling_utils import PreTrainedModel, init_parameter


class ConvNextV2GRN(nn.Cell):
    """Global response normalisation on (B, H, W, C): each channel's spatial L2 norm over the channel mean."""

    def __init__(self, dim):
        super().__init__()
        self.weight = new_parameter((1, 1, 1, dim))
        self.bias = new_parameter((1, 1, 1, dim))

    def construct(self, hidden_states):
        global_features = ((hidden_states * hidden_states).sum((1, 2), keepdims=True)) ** 0.5
        norm_features = global_features / (global_features.mean(-1, keep_dims=True) + 1e-6)
        return self.weight * (hidden_states * norm_features) + self.bias + hidden_states


class ConvNextV2LayerNorm(LayerNorm):
    """LayerNorm over channels for channels_last (B, H, W, C) or channels_first (B, C, H, W) inputs."""

    def __init__(self, normalized_shape, eps=1e-6, data_format="channels_last"):
        super().__init__(normalized_shape, eps=eps)
        if data_format not in ("channels_last", "channels_first"):
            raise NotImplementedError(f"Unsupported data format: {data_format}")
        self.data_format = data_format

    def construct(self, features):
        if self.data_format == "channels_first":
            features = F.layer_norm(features.permute(0, 2, 3, 1), self.weight, self.bias, self.eps)
            return features.permute(0, 3, 1, 2)
        return F.layer_norm(features, self.weight, self.bias, self.eps)


class ConvNextV2Embeddings(nn.Cell):
    def __init__(self, config):
        super().__init__()
        self.patch_embeddings = Conv2d(config.num_channels, config.hidden_sizes[0], kernel_size=config.patch_size,
                                       stride=config.patch_size)
        self.layernorm = ConvNextV2LayerNorm(config.hidden_sizes[0], eps=1e-6, data_format="channels_first")
        self.num_channels = config.num_channels

    def construct(self, pixel_values):
        if pixel_values.shape[1] != self.num_channels:
            raise ValueError("Make sure that the channel dimension of the pixel values match with the one set in the "
                             "configuration.")
        return self.layernorm(self.patch_embeddings(pixel_values.astype(self.patch_embeddings.weight.dtype)))


class ConvNextV2DropPath(nn.Cell):
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


class ConvNextV2Layer(nn.Cell):
    def __init__(self, config, dim, drop_path=0.0):
        super().__init__()
        self.dwconv = Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.layernorm = ConvNextV2LayerNorm(dim, eps=1e-6)
        self.pwconv1 = Linear(dim, 4 * dim)
        self.act = F.get_activation(config.hidden_act)
        self.grn = ConvNextV2GRN(4 * dim)
        self.pwconv2 = Linear(4 * dim, dim)
        self.drop_path = ConvNextV2DropPath(drop_path)

    def construct(self, features):
        residual = features
        features = self.dwconv(features).permute(0, 2, 3, 1)  # channels last for the norm and the pointwise MLP
        features = self.pwconv2(self.grn(self.act(self.pwconv1(self.layernorm(features)))))
        return residual + self.drop_path(features.permute(0, 3, 1, 2))


class ConvNextV2Stage(nn.Cell):
    def __init__(self, config, in_channels, out_channels, kernel_size=2, stride=2, depth=2, drop_path_rates=None):
        super().__init__()
        if in_channels != out_channels or stride > 1:
            self.downsampling_layer = nn.CellList([
                ConvNextV2LayerNorm(in_channels, eps=1e-6, data_format="channels_first"),
                Conv2d(in_channels, out_channels, kernel_size=kernel_size, stride=stride),
            ])
        else:
            self.downsampling_layer = nn.CellList()
        drop_path_rates = drop_path_rates or [0.0] * depth
        self.layers = nn.CellList([ConvNextV2Layer(config, out_channels, drop_path_rates[j]) for j in range(depth)])

    def construct(self, features):
        for layer in self.downsampling_layer:
            features = layer(features)
        for layer in self.layers:
            features = layer(features)
        return features


class ConvNextV2Encoder(nn.Cell):
    def __init__(self, config):
        super().__init__()
        total = sum(config.depths)
        rates = [config.drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        self.stages = nn.CellList()
        prev_chs = config.hidden_sizes[0]
        start = 0
        for i in range(config.num_stages):
            out_chs = config.hidden_sizes[i]
            self.stages.append(ConvNextV2Stage(config, prev_chs, out_chs, stride=2 if i > 0 else 1,
                                               depth=config.depths[i],
                                               drop_path_rates=rates[start:start + config.depths[i]]))
            start += config.depths[i]
            prev_chs = out_chs

    def construct(self, hidden_states, output_hidden_states=False):
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        for stage in self.stages:
            hidden_states = stage(hidden_states)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
        return hidden_states, all_hidden_states


class ConvNextV2PreTrainedModel(PreTrainedModel):
    config_class = ConvNextV2Config
    base_model_prefix = "convnextv2"
    main_input_name = "pixel_values"
    _no_split_modules = ["ConvNextV2Layer"]

    def _init_weights(self, cell):
        super()._init_weights(cell)
        if isinstance(cell, ConvNextV2GRN):
            init_parameter(cell.weight, Zero())
            init_parameter(cell.bias, Zero())

    def _hidden_flag(self, output_hidden_states):
        return output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states


class ConvNextV2Model(ConvNextV2PreTrainedModel):
    def __init__(self, config: ConvNextV2Config):
        super().__init__(config)
        self.embeddings = ConvNextV2Embeddings(config)
        self.encoder = ConvNextV2Encoder(config)
        self.layernorm = LayerNorm(config.hidden_sizes[-1], eps=config.layer_norm_eps)
        self.post_init()

    def construct(self, pixel_values=None, output_hidden_states=None, return_dict=None, **kwargs):
        r"""
        Args:
            pixel_values: (B, C, H, W), e.g. from `ConvNextImageProcessor(..., return_tensors="np")`.
        Returns `last_hidden_state` (B, C, H', W'), `pooler_output` (LayerNorm of its spatial mean) and, with
        `output_hidden_states`, the embeddings and every stage's output.
        """
        if pixel_values is None:
            raise ValueError("You have to specify pixel_values")
        last, pooled, hidden = self._forward(pixel_values, self._hidden_flag(output_hidden_states))
        fields = {"last_hidden_state": last, "pooler_output": pooled, "hidden_states": hidden}
        return model_output(BaseModelOutputWithPoolingAndNoAttention, fields, return_dict is not False)

    def _forward(self, pixel_values, output_hidden_states=False):
        last, hidden = self.encoder(self.embeddings(pixel_values), output_hidden_states)
        return last, self.layernorm(last.mean((-2, -1))), hidden


class ConvNextV2ForImageClassification(ConvNextV2PreTrainedModel):
    def __init__(self, config: ConvNextV2Config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.convnextv2 = ConvNextV2Model(config)
        self.classifier = Linear(config.hidden_sizes[-1], config.num_labels) if config.num_labels > 0 else None
        self.post_init()

    def construct(self, pixel_values=None, labels=None, output_hidden_states=None, return_dict=None, **kwargs):
        _, pooled, hidden = self.convnextv2._forward(pixel_values, self._hidden_flag(output_hidden_states))
        logits = self.classifier(pooled) if self.classifier is not None else pooled
        loss = sequence_classification_loss(labels, logits, self.config) if labels is not None else None
        fields = {"loss": loss, "logits": logits, "hidden_states": hidden}
        return model_output(ImageClassifierOutputWithNoAttention, fields, return_dict is not False)


__all__ = ["ConvNextV2Model", "ConvNextV2ForImageClassification", "ConvNextV2PreTrainedModel"]
