"""UperNet on MindSpore: HF's `modeling_upernet.py` checkpoint keys, signature and outputs.

A backbone (any of ours that `AutoBackbone` builds from `config.backbone_config`: ConvNeXt, Swin, ...) gives one
feature map per stage; the decode head fuses them as a feature pyramid (lateral 1x1 convs, top-down upsampling, 3x3
convs) whose coarsest level is a pyramid pooling module (PSP: the last map average-pooled to 1, 2, 3, 6, ... bins,
convolved, upsampled back), concatenates the levels at the finest resolution and classifies every pixel; an optional
auxiliary FCN head classifies from the third map. Both logits are upsampled (bilinear) to the input size.
Convolutions are conv -> BatchNorm -> ReLU blocks.
"""

from mindspore import nn, ops
from transformers import UperNetConfig

from ...backbone_utils import load_backbone
from ...backend import functional as F
from ...backend.layers import BatchNorm2d, Conv2d
from ...modeling_outputs import SemanticSegmenterOutput, model_output
from ...modeling_utils import PreTrainedModel


class UperNetConvModule(nn.Cell):
    """conv (no bias) -> BatchNorm -> ReLU."""

    def __init__(self, in_channels, out_channels, kernel_size, padding=0, bias=False, dilation=1):
        super().__init__()
        self.conv = Conv2d(in_channels, out_channels, kernel_size=kernel_size, padding=padding, bias=bias,
                           dilation=dilation)
        self.batch_norm = BatchNorm2d(out_channels)

    def construct(self, x):
        return F.relu(self.batch_norm(self.conv(x)))


class UperNetAdaptiveAvgPool(nn.Cell):
    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def construct(self, x):
        return F.adaptive_avg_pool2d(x, self.output_size)


class UperNetPyramidPoolingBlock(nn.CellList):
    """[adaptive average pool to `pool_scale` bins, 1x1 conv module] (HF's keys `psp_modules.<i>.1.*`)."""

    def __init__(self, pool_scale, in_channels, channels):
        super().__init__([UperNetAdaptiveAvgPool(pool_scale), UperNetConvModule(in_channels, channels, kernel_size=1)])


class UperNetPyramidPoolingModule(nn.CellList):
    """The pooling branches (HF's keys `psp_modules.<i>.*`); `UperNetHead.psp_forward` runs them (a graph sees a
    CellList as a tuple, without methods)."""

    def __init__(self, pool_scales, in_channels, channels, align_corners):
        super().__init__([UperNetPyramidPoolingBlock(s, in_channels, channels) for s in pool_scales])
        self.align_corners = align_corners


class UperNetHead(nn.Cell):
    """Unified Perceptual Parsing head: feature pyramid over the backbone maps with PSP on the coarsest one."""

    def __init__(self, config, in_channels):
        super().__init__()
        self.pool_scales = config.pool_scales
        self.in_channels = in_channels
        self.channels = config.hidden_size
        self.align_corners = False
        self.classifier = Conv2d(self.channels, config.num_labels, kernel_size=1)
        self.psp_modules = UperNetPyramidPoolingModule(self.pool_scales, in_channels[-1], self.channels,
                                                       self.align_corners)
        self.bottleneck = UperNetConvModule(in_channels[-1] + len(self.pool_scales) * self.channels, self.channels,
                                            kernel_size=3, padding=1)
        self.lateral_convs = nn.CellList([UperNetConvModule(c, self.channels, kernel_size=1)
                                          for c in in_channels[:-1]])
        self.fpn_convs = nn.CellList([UperNetConvModule(self.channels, self.channels, kernel_size=3, padding=1)
                                      for _ in in_channels[:-1]])
        self.fpn_bottleneck = UperNetConvModule(len(in_channels) * self.channels, self.channels, kernel_size=3,
                                                padding=1)

    def psp_forward(self, inputs):
        x = inputs[-1]
        outs = [x]
        for block in self.psp_modules:  # pool, convolve, upsample back to x's size
            outs.append(self._resize(block[1](block[0](x)), x.shape[2:]))
        return self.bottleneck(ops.cat(outs, 1))

    def _resize(self, x, size):
        return F.interpolate(x, size, mode="bilinear", align_corners=self.align_corners)

    def construct(self, encoder_hidden_states):
        laterals = [conv(encoder_hidden_states[i]) for i, conv in enumerate(self.lateral_convs)]
        laterals.append(self.psp_forward(encoder_hidden_states))
        levels = len(laterals)
        # top-down: every level receives the upsampled sum of the coarser ones
        for i in range(levels - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + self._resize(laterals[i], laterals[i - 1].shape[2:])
        fpn_outs = [self.fpn_convs[i](laterals[i]) for i in range(levels - 1)]
        fpn_outs.append(laterals[-1])
        size = fpn_outs[0].shape[2:]
        fpn_outs = [fpn_outs[0]] + [self._resize(out, size) for out in fpn_outs[1:]]
        return self.classifier(self.fpn_bottleneck(ops.cat(fpn_outs, 1)))


class UperNetFCNHead(nn.Cell):
    """Fully convolutional auxiliary head on the backbone map `in_index`."""

    def __init__(self, config, in_channels, in_index=2, kernel_size=3, dilation=1):
        super().__init__()
        self.in_channels = (in_channels[in_index] if config.auxiliary_in_channels is None
                            else config.auxiliary_in_channels)
        self.channels = config.auxiliary_channels
        self.num_convs = config.auxiliary_num_convs
        self.concat_input = config.auxiliary_concat_input
        self.in_index = in_index
        padding = (kernel_size // 2) * dilation
        self.convs = nn.CellList([
            UperNetConvModule(self.in_channels if i == 0 else self.channels, self.channels, kernel_size=kernel_size,
                              padding=padding, dilation=dilation)
            for i in range(self.num_convs)
        ])
        if self.concat_input:
            self.conv_cat = UperNetConvModule(self.in_channels + self.channels, self.channels,
                                              kernel_size=kernel_size, padding=kernel_size // 2)
        self.classifier = Conv2d(self.channels, config.num_labels, kernel_size=1)

    def construct(self, encoder_hidden_states):
        hidden_states = encoder_hidden_states[self.in_index]
        output = hidden_states
        for conv in self.convs:
            output = conv(output)
        if self.concat_input:
            output = self.conv_cat(ops.cat([hidden_states, output], 1))
        return self.classifier(output)


class UperNetPreTrainedModel(PreTrainedModel):
    config_class = UperNetConfig
    main_input_name = "pixel_values"
    _no_split_modules = []
    # transformers 5 writes a Swin backbone's unused final LayerNorm; index buffers are rebuilt from the config
    _keys_to_ignore_on_load_unexpected = [r"^backbone\.swin\.layernorm\.", r"relative_position_index"]


class UperNetForSemanticSegmentation(UperNetPreTrainedModel):
    def __init__(self, config: UperNetConfig):
        super().__init__(config)
        self.backbone = load_backbone(config)
        self.decode_head = UperNetHead(config, in_channels=self.backbone.channels)
        self.auxiliary_head = (UperNetFCNHead(config, in_channels=self.backbone.channels)
                               if config.use_auxiliary_head else None)
        self.post_init()

    def construct(self, pixel_values=None, output_attentions=None, output_hidden_states=None, labels=None,
                  return_dict=None, **kwargs):
        r"""
        Args:
            pixel_values: (B, C, H, W), e.g. from `SegformerImageProcessor(..., return_tensors="np")`.
            labels: (B, H, W) class indices per pixel (`config.loss_ignore_index` is ignored).
        Returns `logits` (B, num_labels, H, W); with labels, `loss` = cross-entropy of the decode head plus
        `config.auxiliary_loss_weight` x that of the auxiliary head; the backbone's `hidden_states` / `attentions`
        when asked.
        """
        if labels is not None and self.config.num_labels == 1:
            raise ValueError("The number of labels should be greater than one")
        output_hidden_states = (output_hidden_states if output_hidden_states is not None
                                else self.config.output_hidden_states)
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        outputs = self.backbone(pixel_values, output_hidden_states=output_hidden_states,
                                output_attentions=output_attentions)
        features = outputs["feature_maps"]
        size = pixel_values.shape[2:]
        logits = F.interpolate(self.decode_head(features), size, mode="bilinear", align_corners=False)
        auxiliary_logits = None
        if self.auxiliary_head is not None:
            auxiliary_logits = F.interpolate(self.auxiliary_head(features), size, mode="bilinear",
                                             align_corners=False)
        loss = None
        if labels is not None:
            loss = self._pixel_loss(logits, labels)
            if auxiliary_logits is not None:
                loss = loss + self.config.auxiliary_loss_weight * self._pixel_loss(auxiliary_logits, labels)
        fields = {"loss": loss, "logits": logits, "hidden_states": outputs.get("hidden_states"),
                  "attentions": outputs.get("attentions")}
        return model_output(SemanticSegmenterOutput, fields, return_dict is not False)

    def _pixel_loss(self, logits, labels):
        num_labels = logits.shape[1]
        flat = logits.permute(0, 2, 3, 1).reshape(-1, num_labels)
        return F.cross_entropy(flat, labels.reshape(-1), ignore_index=self.config.loss_ignore_index)


__all__ = ["UperNetForSemanticSegmentation", "UperNetPreTrainedModel"]
