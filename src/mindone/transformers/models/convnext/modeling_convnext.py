"""ConvNeXt (v1) on MindSpore: HF's `modeling_convnext.py` structure, names and outputs.

Stages of depthwise 7x7 conv -> channels-last LayerNorm -> pointwise MLP -> per-channel layer scale, each stage
after the first opening with a channels-first LayerNorm + strided conv; the pooled output is the LayerNorm of the
spatial mean. `ConvNextBackbone` returns chosen stages' maps, each through its own channels-first LayerNorm.
"""

from mindspore import nn, ops
from mindspore.common.initializer import Constant
from transformers import ConvNextConfig

from ...backbone_utils import BackboneMixin
from ...backend import functional as F
from ...backend.layers import Conv2d, LayerNorm, Linear, new_parameter
from ...loss_utils import sequence_classification_loss
from ...modeling_outputs import (
    BackboneOutput,
    BaseModelOutputWithPoolingAndNoAttention,
    ImageClassifierOutputWithNoAttention,
    model_output,
)
from ...modeling_utils import PreTrainedModel, init_parameter


class ConvNextLayerNorm(LayerNorm):
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


class ConvNextEmbeddings(nn.Cell):
    def __init__(self, config):
        super().__init__()
        self.patch_embeddings = Conv2d(config.num_channels, config.hidden_sizes[0], kernel_size=config.patch_size,
                                       stride=config.patch_size)
        self.layernorm = ConvNextLayerNorm(config.hidden_sizes[0], eps=1e-6, data_format="channels_first")
        self.num_channels = config.num_channels

    def construct(self, pixel_values):
        if pixel_values.shape[1] != self.num_channels:
            raise ValueError("Make sure that the channel dimension of the pixel values match with the one set in the "
                             "configuration.")
        return self.layernorm(self.patch_embeddings(pixel_values.astype(self.patch_embeddings.weight.dtype)))


class ConvNextDropPath(nn.Cell):
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


class ConvNextLayer(nn.Cell):
    def __init__(self, config, dim, drop_path=0.0):
        super().__init__()
        self.dwconv = Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.layernorm = ConvNextLayerNorm(dim, eps=1e-6)
        self.pwconv1 = Linear(dim, 4 * dim)
        self.act = F.get_activation(config.hidden_act)
        self.pwconv2 = Linear(4 * dim, dim)
        self.layer_scale_parameter = (new_parameter((dim,), Constant(config.layer_scale_init_value))
                                      if config.layer_scale_init_value > 0 else None)
        self.drop_path = ConvNextDropPath(drop_path)

    def construct(self, features):
        residual = features
        features = self.dwconv(features).permute(0, 2, 3, 1)  # channels last for the norm and the pointwise MLP
        features = self.pwconv2(self.act(self.pwconv1(self.layernorm(features))))
        if self.layer_scale_parameter is not None:
            features = self.layer_scale_parameter * features
        return residual + self.drop_path(features.permute(0, 3, 1, 2))


class ConvNextStage(nn.Cell):
    def __init__(self, config, in_channels, out_channels, kernel_size=2, stride=2, depth=2, drop_path_rates=None):
        super().__init__()
        if in_channels != out_channels or stride > 1:
            self.downsampling_layer = nn.CellList([
                ConvNextLayerNorm(in_channels, eps=1e-6, data_format="channels_first"),
                Conv2d(in_channels, out_channels, kernel_size=kernel_size, stride=stride),
            ])
        else:
            self.downsampling_layer = nn.CellList()
        drop_path_rates = drop_path_rates or [0.0] * depth
        self.layers = nn.CellList([ConvNextLayer(config, out_channels, drop_path_rates[j]) for j in range(depth)])

    def construct(self, features):
        for layer in self.downsampling_layer:
            features = layer(features)
        for layer in self.layers:
            features = layer(features)
        return features


class ConvNextEncoder(nn.Cell):
    def __init__(self, config):
        super().__init__()
        total = sum(config.depths)
        rates = [config.drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        self.stages = nn.CellList()
        prev_chs = config.hidden_sizes[0]
        start = 0
        for i in range(config.num_stages):
            out_chs = config.hidden_sizes[i]
            self.stages.append(ConvNextStage(config, prev_chs, out_chs, stride=2 if i > 0 else 1,
                                             depth=config.depths[i],
                                             drop_path_rates=rates[start:start + config.depths[i]]))
            start += config.depths[i]
            prev_chs = out_chs

    def construct(self, hidden_states, output_hidden_states=False):
        """Returns the last stage's output and, when asked, (embeddings, every stage's output)."""
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        for stage in self.stages:
            hidden_states = stage(hidden_states)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
        return hidden_states, all_hidden_states


class ConvNextPreTrainedModel(PreTrainedModel):
    config_class = ConvNextConfig
    base_model_prefix = "convnext"
    main_input_name = "pixel_values"
    _no_split_modules = ["ConvNextLayer", "ConvNextStage"]

    def _init_weights(self, cell):
        super()._init_weights(cell)
        if isinstance(cell, ConvNextLayer) and cell.layer_scale_parameter is not None:
            init_parameter(cell.layer_scale_parameter, Constant(self.config.layer_scale_init_value))

    def _hidden_flag(self, output_hidden_states):
        return output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states


class ConvNextModel(ConvNextPreTrainedModel):
    def __init__(self, config: ConvNextConfig):
        super().__init__(config)
        self.embeddings = ConvNextEmbeddings(config)
        self.encoder = ConvNextEncoder(config)
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


class ConvNextForImageClassification(ConvNextPreTrainedModel):
    def __init__(self, config: ConvNextConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.convnext = ConvNextModel(config)
        self.classifier = Linear(config.hidden_sizes[-1], config.num_labels) if config.num_labels > 0 else None
        self.post_init()

    def construct(self, pixel_values=None, labels=None, output_hidden_states=None, return_dict=None, **kwargs):
        _, pooled, hidden = self.convnext._forward(pixel_values, self._hidden_flag(output_hidden_states))
        logits = self.classifier(pooled) if self.classifier is not None else pooled
        loss = sequence_classification_loss(labels, logits, self.config) if labels is not None else None
        fields = {"loss": loss, "logits": logits, "hidden_states": hidden}
        return model_output(ImageClassifierOutputWithNoAttention, fields, return_dict is not False)


class ConvNextBackbone(BackboneMixin, ConvNextPreTrainedModel):
    has_attentions = False

    def __init__(self, config: ConvNextConfig):
        super().__init__(config)
        self.embeddings = ConvNextEmbeddings(config)
        self.encoder = ConvNextEncoder(config)
        self.num_features = [config.hidden_sizes[0]] + list(config.hidden_sizes)
        self.hidden_states_norms = nn.CellDict({
            stage: ConvNextLayerNorm(channels, data_format="channels_first")
            for stage, channels in zip(self.out_features, self.channels)
        })
        self.post_init()

    def construct(self, pixel_values, output_hidden_states=None, return_dict=None, **kwargs):
        r"""
        Returns `feature_maps`: a (B, C, H, W) map per stage of `config.out_features` (stem = the embeddings),
        normalised; with `output_hidden_states`, also the embeddings and every stage's output.
        """
        _, hidden_states = self.encoder(self.embeddings(pixel_values), True)
        feature_maps = ()
        for stage, hidden_state in zip(self.stage_names, hidden_states):
            if stage in self.out_features:
                feature_maps += (self.hidden_states_norms[stage](hidden_state),)
        fields = {"feature_maps": feature_maps,
                  "hidden_states": hidden_states if self._hidden_flag(output_hidden_states) else None}
        return model_output(BackboneOutput, fields, return_dict is not False)


__all__ = ["ConvNextModel", "ConvNextForImageClassification", "ConvNextBackbone", "ConvNextPreTrainedModel"]
