"""FocalNet on MindSpore: HF's `modeling_focalnet.py` names, checkpoint keys and outputs.

Swin's hierarchy (patch embeddings, stages joined by a strided patch embedding that halves the map) with focal
modulation instead of window attention: a linear layer gives a query, a context map and per-level gates; the context
goes through `focal_level` depthwise convs + GELU of growing kernels, each level's output weighted by its gate, plus
a gated global average; a 1x1 conv of that sum modulates the query.
"""

import math
from dataclasses import dataclass
from typing import Any, Optional, Tuple

from mindspore import nn, ops
from mindspore.common.initializer import Constant
from transformers import FocalNetConfig

from ...backbone_utils import BackboneMixin
from ...backend import functional as F
from ...backend.layers import Conv2d, Dropout, LayerNorm, Linear, new_parameter
from ...loss_utils import sequence_classification_loss
from ...modeling_outputs import BackboneOutput, ModelOutput, model_output
from ...modeling_utils import PreTrainedModel, init_parameter


@dataclass
class FocalNetModelOutput(ModelOutput):
    last_hidden_state: Any = None
    pooler_output: Any = None
    hidden_states: Optional[Tuple[Any, ...]] = None
    reshaped_hidden_states: Optional[Tuple[Any, ...]] = None


@dataclass
class FocalNetMaskedImageModelingOutput(ModelOutput):
    loss: Any = None
    reconstruction: Any = None
    hidden_states: Optional[Tuple[Any, ...]] = None
    reshaped_hidden_states: Optional[Tuple[Any, ...]] = None


@dataclass
class FocalNetImageClassifierOutput(ModelOutput):
    loss: Any = None
    logits: Any = None
    hidden_states: Optional[Tuple[Any, ...]] = None
    reshaped_hidden_states: Optional[Tuple[Any, ...]] = None


def _pair(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x, x)


class FocalNetPatchEmbeddings(nn.Cell):
    """(B, C, H, W), zero-padded to a multiple of the patch size -> ((B, H' * W', embed_dim), (H', W')); a strided
    patch conv, or with `use_conv_embed` an overlapping one (7x7 stride 4 for the stem, 3x3 stride 2 between
    stages); an optional LayerNorm (between stages)."""

    def __init__(self, config, image_size, patch_size, num_channels, embed_dim, add_norm=False, use_conv_embed=False,
                 is_stem=False):
        super().__init__()
        image_size, patch_size = _pair(image_size), _pair(patch_size)
        self.patch_size = patch_size
        self.num_channels = num_channels
        self.grid_size = (image_size[0] // patch_size[0], image_size[1] // patch_size[1])
        if use_conv_embed:
            kernel_size, padding, stride = (7, 2, 4) if is_stem else (3, 1, 2)
            self.projection = Conv2d(num_channels, embed_dim, kernel_size=kernel_size, stride=stride, padding=padding)
        else:
            self.projection = Conv2d(num_channels, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = LayerNorm(embed_dim, eps=config.layer_norm_eps) if add_norm else None

    def maybe_pad(self, pixel_values, height, width):
        if width % self.patch_size[1] != 0:
            pixel_values = F.pad(pixel_values, (0, self.patch_size[1] - width % self.patch_size[1]))
        if height % self.patch_size[0] != 0:
            pixel_values = F.pad(pixel_values, (0, 0, 0, self.patch_size[0] - height % self.patch_size[0]))
        return pixel_values

    def construct(self, pixel_values):
        if pixel_values.shape[1] != self.num_channels:
            raise ValueError("Make sure that the channel dimension of the pixel values match with the one set in the "
                             f"configuration. Expected {self.num_channels} but got {pixel_values.shape[1]}.")
        pixel_values = self.maybe_pad(pixel_values, pixel_values.shape[2], pixel_values.shape[3])
        embeddings = self.projection(pixel_values.astype(self.projection.weight.dtype))
        batch_size, channels, height, width = embeddings.shape
        embeddings = embeddings.reshape(batch_size, channels, -1).swapaxes(1, 2)
        if self.norm is not None:
            embeddings = self.norm(embeddings)
        return embeddings, (height, width)


class FocalNetEmbeddings(nn.Cell):
    """Patch embeddings -> LayerNorm -> optional mask token -> dropout."""

    def __init__(self, config, use_mask_token=False):
        super().__init__()
        self.patch_embeddings = FocalNetPatchEmbeddings(config, config.image_size, config.patch_size,
                                                        config.num_channels, config.embed_dim,
                                                        use_conv_embed=config.use_conv_embed, is_stem=True)
        self.patch_grid = self.patch_embeddings.grid_size
        self.mask_token = new_parameter((1, 1, config.embed_dim)) if use_mask_token else None
        self.norm = LayerNorm(config.embed_dim, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def construct(self, pixel_values, bool_masked_pos=None):
        embeddings, output_dimensions = self.patch_embeddings(pixel_values)
        embeddings = self.norm(embeddings)
        if bool_masked_pos is not None:
            mask = bool_masked_pos.reshape(embeddings.shape[0], -1, 1).astype(embeddings.dtype)
            embeddings = embeddings * (1.0 - mask) + self.mask_token.astype(embeddings.dtype) * mask
        return self.dropout(embeddings), output_dimensions


class FocalNetFocalLayer(nn.CellList):
    """[depthwise conv (kernel `kernel_size`, same padding, no bias), GELU] (HF's keys `focal_layers.<k>.0`); the
    GELU is applied by `FocalNetModulation` (a graph sees a CellList as a tuple, without methods)."""

    def __init__(self, dim, kernel_size):
        super().__init__([Conv2d(dim, dim, kernel_size=kernel_size, stride=1, groups=dim, padding=kernel_size // 2,
                                 bias=False)])


class FocalNetModulation(nn.Cell):
    def __init__(self, config, index, dim, focal_factor=2, bias=True, projection_dropout=0.0):
        super().__init__()
        self.focal_window = config.focal_windows[index]
        self.focal_level = config.focal_levels[index]
        self.use_post_layernorm_in_modulation = config.use_post_layernorm_in_modulation
        self.normalize_modulator = config.normalize_modulator
        self.projection_in = Linear(dim, 2 * dim + (self.focal_level + 1), bias=bias)
        self.projection_context = Conv2d(dim, dim, kernel_size=1, stride=1, bias=bias)
        self.projection_out = Linear(dim, dim)
        self.projection_dropout = Dropout(projection_dropout)
        self.kernel_sizes = [focal_factor * k + self.focal_window for k in range(self.focal_level)]
        self.focal_layers = nn.CellList([FocalNetFocalLayer(dim, k) for k in self.kernel_sizes])
        self.layernorm = (LayerNorm(dim, eps=config.layer_norm_eps) if self.use_post_layernorm_in_modulation
                          else None)

    def construct(self, hidden_state):
        """(B, H, W, C) -> (B, H, W, C)."""
        num_channels = hidden_state.shape[-1]
        x = self.projection_in(hidden_state).permute(0, 3, 1, 2)
        q, ctx, gates = x[:, :num_channels], x[:, num_channels:2 * num_channels], x[:, 2 * num_channels:]
        ctx_all = 0
        for level, focal_layer in enumerate(self.focal_layers):
            ctx = F.gelu(focal_layer[0](ctx))
            ctx_all = ctx_all + ctx * gates[:, level:level + 1]
        ctx_global = F.gelu(ctx.mean(2, keep_dims=True).mean(3, keep_dims=True))
        ctx_all = ctx_all + ctx_global * gates[:, self.focal_level:]
        if self.normalize_modulator:
            ctx_all = ctx_all / (self.focal_level + 1)
        x_out = (q * self.projection_context(ctx_all)).permute(0, 2, 3, 1)
        if self.layernorm is not None:
            x_out = self.layernorm(x_out)
        return self.projection_dropout(self.projection_out(x_out))


class FocalNetMlp(nn.Cell):
    def __init__(self, config, in_features, hidden_features, drop=0.0):
        super().__init__()
        self.fc1 = Linear(in_features, hidden_features)
        self.activation = F.get_activation(config.hidden_act)
        self.fc2 = Linear(hidden_features, in_features)
        self.drop = Dropout(drop)

    def construct(self, hidden_state):
        return self.drop(self.fc2(self.drop(self.activation(self.fc1(hidden_state)))))


class FocalNetDropPath(nn.Cell):
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


class FocalNetLayer(nn.Cell):
    """x + gamma_1 * modulation(norm1(x)), then + gamma_2 * mlp(norm2(.)) (norms after instead with
    `use_post_layernorm`); gamma are learned per-channel scales with `use_layerscale`, else 1."""

    def __init__(self, config, index, dim, drop_path=0.0):
        super().__init__()
        self.use_post_layernorm = config.use_post_layernorm
        self.norm1 = LayerNorm(dim, eps=config.layer_norm_eps)
        self.modulation = FocalNetModulation(config, index, dim, projection_dropout=config.hidden_dropout_prob)
        self.drop_path = FocalNetDropPath(drop_path)
        self.norm2 = LayerNorm(dim, eps=config.layer_norm_eps)
        self.mlp = FocalNetMlp(config, dim, int(dim * config.mlp_ratio), drop=config.hidden_dropout_prob)
        if config.use_layerscale:
            self.gamma_1 = new_parameter((dim,), Constant(config.layerscale_value))
            self.gamma_2 = new_parameter((dim,), Constant(config.layerscale_value))
        else:
            self.gamma_1 = self.gamma_2 = None

    def _scale(self, gamma, x):
        return x if gamma is None else gamma * x

    def construct(self, hidden_state, input_dimensions):
        height, width = input_dimensions
        batch_size, _, num_channels = hidden_state.shape
        shortcut = hidden_state
        hidden_state = hidden_state if self.use_post_layernorm else self.norm1(hidden_state)
        hidden_state = self.modulation(hidden_state.reshape(batch_size, height, width, num_channels))
        hidden_state = hidden_state.reshape(batch_size, height * width, num_channels)
        if self.use_post_layernorm:
            hidden_state = self.norm1(hidden_state)
        hidden_state = shortcut + self.drop_path(self._scale(self.gamma_1, hidden_state))
        mlp = self.norm2(self.mlp(hidden_state)) if self.use_post_layernorm else self.mlp(self.norm2(hidden_state))
        return hidden_state + self.drop_path(self._scale(self.gamma_2, mlp))


class FocalNetStage(nn.Cell):
    def __init__(self, config, index, input_resolution, drop_path):
        super().__init__()
        num_stages = len(config.depths)
        dims = [config.embed_dim * (2 ** i) for i in range(num_stages)]
        dim = dims[index]
        self.layers = nn.CellList([FocalNetLayer(config, index, dim, drop_path[i])
                                   for i in range(config.depths[index])])
        if index < num_stages - 1:
            self.downsample = FocalNetPatchEmbeddings(config, input_resolution, 2, dim, dims[index + 1], add_norm=True,
                                                      use_conv_embed=config.use_conv_embed, is_stem=False)
        else:
            self.downsample = None

    def construct(self, hidden_states, input_dimensions):
        """Returns (output, output before downsampling, the output's (H, W))."""
        height, width = input_dimensions
        for layer in self.layers:
            hidden_states = layer(hidden_states, input_dimensions)
        before_downsampling = hidden_states
        if self.downsample is None:
            return hidden_states, before_downsampling, (height, width)
        hidden_states = hidden_states.swapaxes(1, 2).reshape(hidden_states.shape[0], -1, height, width)
        hidden_states, output_dimensions = self.downsample(hidden_states)
        return hidden_states, before_downsampling, output_dimensions


def _spatial(hidden_states, height, width):
    """(B, H * W, C) -> (B, C, H, W)."""
    batch_size, _, channels = hidden_states.shape
    return hidden_states.reshape(batch_size, height, width, channels).permute(0, 3, 1, 2)


class FocalNetEncoder(nn.Cell):
    def __init__(self, config, grid_size):
        super().__init__()
        total = sum(config.depths)
        rates = [config.drop_path_rate * i / (total - 1) if total > 1 else 0.0 for i in range(total)]
        self.stages = nn.CellList([
            FocalNetStage(config, i, (grid_size[0] // (2 ** i), grid_size[1] // (2 ** i)),
                          rates[sum(config.depths[:i]):sum(config.depths[:i + 1])])
            for i in range(len(config.depths))
        ])

    def construct(self, hidden_states, input_dimensions, output_hidden_states=False):
        """Returns (last, hidden_states, reshaped_hidden_states): the embeddings and every stage's (downsampled)
        output, as sequences and as (B, C, H, W) maps, when asked."""
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        all_reshaped = (_spatial(hidden_states, *input_dimensions),) if output_hidden_states else None
        for stage in self.stages:
            hidden_states, _, input_dimensions = stage(hidden_states, input_dimensions)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
                all_reshaped += (_spatial(hidden_states, *input_dimensions),)
        return hidden_states, all_hidden_states, all_reshaped


class FocalNetPreTrainedModel(PreTrainedModel):
    config_class = FocalNetConfig
    base_model_prefix = "focalnet"
    main_input_name = "pixel_values"
    supports_gradient_checkpointing = True
    _no_split_modules = ["FocalNetStage"]

    def _init_weights(self, cell):
        super()._init_weights(cell)
        if isinstance(cell, FocalNetEmbeddings) and cell.mask_token is not None:
            init_parameter(cell.mask_token, "zeros")
        elif isinstance(cell, FocalNetLayer) and cell.gamma_1 is not None:
            init_parameter(cell.gamma_1, Constant(self.config.layerscale_value))
            init_parameter(cell.gamma_2, Constant(self.config.layerscale_value))

    def _hidden_flag(self, output_hidden_states):
        return output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states


class FocalNetModel(FocalNetPreTrainedModel):
    def __init__(self, config: FocalNetConfig, add_pooling_layer=True, use_mask_token=False):
        super().__init__(config)
        self.num_stages = len(config.depths)
        self.num_features = int(config.embed_dim * 2 ** (self.num_stages - 1))
        self.embeddings = FocalNetEmbeddings(config, use_mask_token=use_mask_token)
        self.encoder = FocalNetEncoder(config, self.embeddings.patch_grid)
        self.layernorm = LayerNorm(self.num_features, eps=config.layer_norm_eps)
        self.add_pooling_layer = add_pooling_layer
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.patch_embeddings

    def construct(self, pixel_values=None, bool_masked_pos=None, output_hidden_states=None, return_dict=None,
                  **kwargs):
        r"""
        Args:
            pixel_values: (B, C, H, W), e.g. from `AutoImageProcessor(..., return_tensors="np")`.
            bool_masked_pos: (B, num_patches) booleans, patches replaced by the mask token (needs `use_mask_token`).
        Returns `last_hidden_state` (B, L, C) after the final LayerNorm, `pooler_output` (its mean over L) and, when
        asked, `hidden_states` and `reshaped_hidden_states`.
        """
        fields = self._forward(pixel_values, bool_masked_pos, self._hidden_flag(output_hidden_states))
        return model_output(FocalNetModelOutput, fields, return_dict is not False)

    def _forward(self, pixel_values, bool_masked_pos=None, output_hidden_states=False):
        if pixel_values is None:
            raise ValueError("You have to specify pixel_values")
        embeddings, input_dimensions = self.embeddings(pixel_values, bool_masked_pos)
        last, hidden, reshaped = self.encoder(embeddings, input_dimensions, output_hidden_states)
        last = self.layernorm(last)
        pooled = last.mean(1) if self.add_pooling_layer else None
        return {"last_hidden_state": last, "pooler_output": pooled, "hidden_states": hidden,
                "reshaped_hidden_states": reshaped}


class FocalNetForMaskedImageModeling(FocalNetPreTrainedModel):
    """SimMIM: the masked patches' pixels reconstructed by a 1x1 conv + pixel shuffle from the last hidden state."""

    def __init__(self, config: FocalNetConfig):
        super().__init__(config)
        self.focalnet = FocalNetModel(config, add_pooling_layer=False, use_mask_token=True)
        num_features = int(config.embed_dim * 2 ** (len(config.depths) - 1))
        self.decoder = nn.CellList([
            Conv2d(num_features, config.encoder_stride ** 2 * config.num_channels, kernel_size=1),
        ])
        self.post_init()

    def _pixel_shuffle(self, x):
        """torch's PixelShuffle(r): (B, C*r*r, H, W) -> (B, C, H*r, W*r)."""
        r = self.config.encoder_stride
        batch_size, channels, height, width = x.shape
        x = x.reshape(batch_size, channels // (r * r), r, r, height, width)
        return ops.transpose(x, (0, 1, 4, 2, 5, 3)).reshape(batch_size, channels // (r * r), height * r, width * r)

    def construct(self, pixel_values=None, bool_masked_pos=None, output_hidden_states=None, return_dict=None,
                  **kwargs):
        r"""
        Args:
            bool_masked_pos: (B, num_patches) booleans, the patches to mask (and to score the L1 loss on).
        Returns `loss` (mean L1 over masked pixels, when `bool_masked_pos` is given), `reconstruction` (B, C, H, W).
        """
        out = self.focalnet._forward(pixel_values, bool_masked_pos, self._hidden_flag(output_hidden_states))
        sequence_output = out["last_hidden_state"].swapaxes(1, 2)
        batch_size, num_channels, sequence_length = sequence_output.shape
        side = int(math.floor(sequence_length ** 0.5))
        reconstructed = self._pixel_shuffle(self.decoder[0](sequence_output.reshape(batch_size, num_channels, side,
                                                                                    side)))
        loss = None
        if bool_masked_pos is not None:
            size = self.config.image_size // self.config.patch_size
            p = self.config.patch_size
            mask = bool_masked_pos.reshape(-1, size, 1, size, 1).astype(reconstructed.dtype)
            mask = ops.broadcast_to(mask, (mask.shape[0], size, p, size, p)).reshape(-1, 1, size * p, size * p)
            l1 = ops.abs(pixel_values.astype(reconstructed.dtype) - reconstructed)
            loss = (l1 * mask).sum() / (mask.sum() + 1e-5) / self.config.num_channels
        fields = {"loss": loss, "reconstruction": reconstructed, "hidden_states": out["hidden_states"],
                  "reshaped_hidden_states": out["reshaped_hidden_states"]}
        return model_output(FocalNetMaskedImageModelingOutput, fields, return_dict is not False)


class FocalNetForImageClassification(FocalNetPreTrainedModel):
    def __init__(self, config: FocalNetConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.focalnet = FocalNetModel(config)
        self.classifier = Linear(self.focalnet.num_features, config.num_labels) if config.num_labels > 0 else None
        self.post_init()

    def construct(self, pixel_values=None, labels=None, output_hidden_states=None, return_dict=None, **kwargs):
        out = self.focalnet._forward(pixel_values, None, self._hidden_flag(output_hidden_states))
        pooled = out["pooler_output"]
        logits = self.classifier(pooled) if self.classifier is not None else pooled
        loss = sequence_classification_loss(labels, logits, self.config) if labels is not None else None
        fields = {"loss": loss, "logits": logits, "hidden_states": out["hidden_states"],
                  "reshaped_hidden_states": out["reshaped_hidden_states"]}
        return model_output(FocalNetImageClassifierOutput, fields, return_dict is not False)


class FocalNetBackbone(BackboneMixin, FocalNetPreTrainedModel):
    has_attentions = False

    def __init__(self, config: FocalNetConfig):
        super().__init__(config)
        self.num_features = [config.embed_dim] + list(config.hidden_sizes)
        self.focalnet = FocalNetModel(config)
        self.post_init()

    def construct(self, pixel_values, output_hidden_states=None, return_dict=None, **kwargs):
        r"""
        Returns `feature_maps`: the (B, C, H, W) map of every stage of `config.out_features` (`stem` = the
        embeddings, `stageN` = stage N's downsampled output, as HF); with `output_hidden_states`, every hidden state.
        """
        out = self.focalnet._forward(pixel_values, None, True)
        feature_maps = ()
        for stage, hidden_state in zip(self.stage_names, out["reshaped_hidden_states"]):
            if stage in self.out_features:
                feature_maps += (hidden_state,)
        fields = {"feature_maps": feature_maps,
                  "hidden_states": out["hidden_states"] if self._hidden_flag(output_hidden_states) else None}
        return model_output(BackboneOutput, fields, return_dict is not False)


__all__ = ["FocalNetModel", "FocalNetForImageClassification", "FocalNetForMaskedImageModeling", "FocalNetBackbone",
           "FocalNetPreTrainedModel"]
