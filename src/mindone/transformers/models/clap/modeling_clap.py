"""CLAP on MindSpore: HF's `modeling_clap.py` checkpoint keys, signatures and outputs.

Audio tower (HTSAT): log-mel features (B, C, T, mel) -> BatchNorm over the mel bins -> the spectrogram folded into a
square "image" (`reshape_mel2img`) -> patch embedding (optionally fused with the local crops of long clips by an
attentional feature-fusion block) -> Swin stages (shared with models/swin) -> LayerNorm -> frequency bins grouped
back and averaged into `pooler_output`. Text tower: RoBERTa (shared with models/roberta). Each tower has a
two-layer projection; the contrastive model scores cosine similarities with one learned temperature per direction.
"""

import collections.abc
import math
from dataclasses import dataclass
from typing import Any, Optional, Tuple

import mindspore as ms
from mindspore import nn, ops
from transformers import ClapAudioConfig, ClapConfig, ClapTextConfig

from ...backend import functional as F
from ...backend.layers import BatchNorm2d, Conv2d, LayerNorm, Linear, new_parameter
from ...masking_utils import create_bidirectional_mask
from ...modeling_layers import GradientCheckpointingLayer
from ...modeling_outputs import BaseModelOutputWithPooling, ModelOutput, model_output
from ...modeling_utils import PreTrainedModel, init_parameter
from ..roberta.modeling_roberta import (
    RobertaAttention,
    RobertaEmbeddings,
    RobertaIntermediate,
    RobertaOutput,
    RobertaPooler,
)
from ..swin.modeling_swin import SwinStage, _spatial


@dataclass
class ClapTextModelOutput(ModelOutput):
    text_embeds: Any = None
    last_hidden_state: Any = None
    hidden_states: Optional[Tuple[Any, ...]] = None
    attentions: Optional[Tuple[Any, ...]] = None


@dataclass
class ClapAudioModelOutput(ModelOutput):
    audio_embeds: Any = None
    last_hidden_state: Any = None
    hidden_states: Optional[Tuple[Any, ...]] = None
    attentions: Optional[Tuple[Any, ...]] = None


@dataclass
class ClapOutput(ModelOutput):
    loss: Any = None
    logits_per_audio: Any = None
    logits_per_text: Any = None
    text_embeds: Any = None
    audio_embeds: Any = None
    text_model_output: Any = None
    audio_model_output: Any = None

    def to_tuple(self) -> Tuple[Any, ...]:
        return tuple(v.to_tuple() if isinstance(v, ModelOutput) else v for v in self.values())


def _pair(x):
    return tuple(x) if isinstance(x, collections.abc.Iterable) else (x, x)


def contrastive_loss(logits):
    return F.cross_entropy(logits, F.arange(logits.shape[0], dtype=ms.int64))


def _l2_normalize(x):
    return x / (x * x).sum(-1, keepdims=True) ** 0.5


class _ReLU(nn.Cell):
    def construct(self, x):
        return F.relu(x)


class _GlobalAvgPool(nn.Cell):
    """AdaptiveAvgPool2d(1) as a mean over the spatial axes."""

    def construct(self, x):
        return x.mean((2, 3), keep_dims=True)


class _Sequential(nn.CellList):
    """torch's nn.Sequential: children named 0, 1, ... (the checkpoint keys), applied in order."""

    def construct(self, x):
        for cell in self:
            x = cell(x)
        return x


class ClapAudioAFFBlock(nn.Cell):
    """Attentional feature fusion (2D): a sigmoid gate from local (1x1 convs) and global (pooled) attention mixes
    the global patch map and the local crops' map."""

    def __init__(self, config: ClapAudioConfig):
        super().__init__()
        channels = config.patch_embeds_hidden_size
        inter_channels = int(channels // config.aff_block_r)

        def branch():
            return [Conv2d(channels, inter_channels, 1), BatchNorm2d(inter_channels), _ReLU(),
                    Conv2d(inter_channels, channels, 1), BatchNorm2d(channels)]

        self.local_att = _Sequential(branch())
        self.global_att = _Sequential([_GlobalAvgPool()] + branch())

    def construct(self, hidden_states, residual):
        attention_input = hidden_states + residual
        gate = F.sigmoid(self.local_att(attention_input) + self.global_att(attention_input))
        return 2 * hidden_states * gate + 2 * residual * (1 - gate)


class ClapAudioPatchEmbed(nn.Cell):
    """(B, C, H, W) spectrogram image -> (B, patches, hidden); with fusion, channel 0 is the global (downsampled)
    clip and channels 1.. its local crops, fused into the rows marked `is_longer`."""

    def __init__(self, config: ClapAudioConfig):
        super().__init__()
        img_size, patch_size = _pair(config.spec_size), _pair(config.patch_size)
        patch_stride = _pair(config.patch_stride)
        self.img_size, self.patch_stride = img_size, patch_stride
        self.grid_size = (img_size[0] // patch_stride[0], img_size[1] // patch_stride[1])
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.flatten = config.flatten_patch_embeds
        self.enable_fusion = config.enable_fusion
        padding = ((patch_size[0] - patch_stride[0]) // 2, (patch_size[1] - patch_stride[1]) // 2)
        scale_factor = 4 if self.enable_fusion and config.fusion_type == "channel_map" else 1
        self.proj = Conv2d(config.patch_embed_input_channels * scale_factor, config.patch_embeds_hidden_size,
                           kernel_size=patch_size, stride=patch_stride, padding=padding)
        self.norm = LayerNorm(config.patch_embeds_hidden_size) if config.enable_patch_layer_norm else None
        if self.enable_fusion:
            self.fusion_model = ClapAudioAFFBlock(config)
            self.mel_conv2d = Conv2d(config.patch_embed_input_channels, config.patch_embeds_hidden_size,
                                     kernel_size=(patch_size[0], patch_size[1] * 3),
                                     stride=(patch_stride[0], patch_stride[1] * 3), padding=padding)

    def _check_size(self, height, width):
        if height != self.img_size[0] or width != self.img_size[1]:
            raise ValueError(f"Input audio size ({height}*{width}) doesn't match model "
                             f"({self.img_size[0]}*{self.img_size[1]}).")

    def construct(self, hidden_states, is_longer=None):
        if self.enable_fusion:
            global_states = hidden_states[:, 0:1]
            self._check_size(global_states.shape[2], global_states.shape[3])
            global_states = self.proj(global_states)
            output_width = global_states.shape[-1]
            if is_longer is not None:
                # HF fuses only the rows marked longer; every row is computed here (a static shape for graph
                # mode) and the longer ones selected. In eval the fusion block is per-row (BatchNorm uses its
                # running statistics), so the selected rows are HF's.
                local = hidden_states[:, 1:]
                batch_size, num_crops, height, width = local.shape
                local = self.mel_conv2d(local.reshape(batch_size * num_crops, 1, height, width))
                _, features, height, width = local.shape
                local = local.reshape(batch_size, num_crops, features, height, width)
                local = ops.transpose(local, (0, 2, 3, 1, 4)).reshape(batch_size, features, height, -1)
                local_width = local.shape[-1]
                if local_width < output_width:
                    local = F.pad(local, (0, output_width - local_width))
                elif local_width > output_width:
                    local = local[..., :output_width]
                fused = self.fusion_model(global_states, local)
                longer = is_longer.reshape(-1, 1, 1, 1).astype(ms.bool_)
                global_states = ops.where(longer, fused, global_states)
            hidden_states = global_states
        else:
            self._check_size(hidden_states.shape[2], hidden_states.shape[3])
            hidden_states = self.proj(hidden_states)
        if self.flatten:
            batch_size, channels = hidden_states.shape[:2]
            hidden_states = hidden_states.reshape(batch_size, channels, -1).swapaxes(1, 2)
        if self.norm is not None:
            hidden_states = self.norm(hidden_states)
        return hidden_states


class ClapAudioEncoder(nn.Cell):
    def __init__(self, config: ClapAudioConfig):
        super().__init__()
        self.config = config
        self.num_layers = len(config.depths)
        self.patch_embed = ClapAudioPatchEmbed(config)
        self.enable_fusion = config.enable_fusion
        self.patch_stride = self.patch_embed.patch_stride
        self.spec_size = config.spec_size
        self.freq_ratio = config.spec_size // config.num_mel_bins
        self.num_features = int(config.patch_embeds_hidden_size * 2 ** (self.num_layers - 1))
        total = sum(config.depths)
        rates = [config.drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        grid = self.patch_embed.grid_size
        self.input_resolutions = [(grid[0] // 2 ** i, grid[1] // 2 ** i) for i in range(self.num_layers)]
        self.layers = nn.CellList([
            SwinStage(config, int(config.patch_embeds_hidden_size * 2 ** i), config.depths[i],
                      config.num_attention_heads[i], rates[sum(config.depths[:i]):sum(config.depths[:i + 1])],
                      downsample=i < self.num_layers - 1)
            for i in range(self.num_layers)
        ])
        self.batch_norm = BatchNorm2d(config.num_mel_bins)
        self.norm = LayerNorm(self.num_features)
        self.depths = config.depths

    def reshape_mel2img(self, features):
        """(B, C, T, F) log-mels -> (B, C, F * r, T / r) with r = spec_size // num_mel_bins: the time axis cut into
        r pieces stacked along frequency; shorter inputs are first resized (bicubic) to the model's size."""
        _, _, time_length, freq_length = features.shape
        spec_width = int(self.spec_size * self.freq_ratio)
        spec_height = self.spec_size // self.freq_ratio
        if time_length > spec_width or freq_length > spec_height:
            raise ValueError("the wav size should be less than or equal to the swin input size")
        # HF's two resizes: the second uses the original time length (as HF does)
        if time_length < spec_width:
            features = F.interpolate(features, (spec_width, freq_length), mode="bicubic", align_corners=True)
        if freq_length < spec_height:
            features = F.interpolate(features, (time_length, spec_height), mode="bicubic", align_corners=True)
        batch, channels, time, freq = features.shape
        features = features.reshape(batch, channels * self.freq_ratio, time // self.freq_ratio, freq)
        features = features.swapaxes(2, 3)
        return features.reshape(batch, channels, freq * self.freq_ratio, time // self.freq_ratio)

    def construct(self, input_features, is_longer=None, output_attentions=False, output_hidden_states=False):
        """Returns (last_hidden_state (B, C, freq bins, T'), pooler_output (B, C), reshaped hidden states,
        attentions)."""
        input_features = input_features.astype(self.batch_norm.weight.dtype)
        normalized = self.batch_norm(input_features.swapaxes(1, 3)).swapaxes(1, 3)
        hidden_states = self.reshape_mel2img(normalized)
        frames_num = hidden_states.shape[2]
        hidden_states = self.patch_embed(hidden_states, is_longer if self.enable_fusion else None)

        all_hidden = (_spatial(hidden_states, *self.input_resolutions[0]),) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for i, stage in enumerate(self.layers):
            height, width = self.input_resolutions[i]
            hidden_states, _, weights = stage(hidden_states, (height, width))
            if i < self.num_layers - 1:
                height, width = (height + 1) // 2, (width + 1) // 2
            if output_hidden_states:
                all_hidden += (_spatial(hidden_states, height, width),)
            if output_attentions:
                all_attentions += (weights,)

        last = self.norm(hidden_states)
        batch_size, _, channels = last.shape
        freq_shape = frames_num // (2 ** (len(self.depths) - 1)) // self.patch_stride[0]
        temporal_shape = frames_num // (2 ** (len(self.depths) - 1)) // self.patch_stride[1]
        last = last.swapaxes(1, 2).reshape(batch_size, channels, freq_shape, temporal_shape)
        # group the frequency rows back into the r time pieces reshape_mel2img stacked
        c_freq_bin = freq_shape // self.freq_ratio
        last = last.reshape(batch_size, channels, freq_shape // c_freq_bin, c_freq_bin, temporal_shape)
        last = ops.transpose(last, (0, 1, 3, 2, 4)).reshape(batch_size, channels, c_freq_bin, -1)
        pooled = last.reshape(batch_size, channels, -1).mean(-1)
        return last, pooled, all_hidden, all_attentions


class ClapProjectionLayer(nn.Cell):
    def __init__(self, config):
        super().__init__()
        self.linear1 = Linear(config.hidden_size, config.projection_dim)
        self.activation = F.get_activation(config.projection_hidden_act)
        self.linear2 = Linear(config.projection_dim, config.projection_dim)

    def construct(self, hidden_states):
        return self.linear2(self.activation(self.linear1(hidden_states)))


class ClapTextLayer(GradientCheckpointingLayer):
    """A RoBERTa encoder layer (self-attention only)."""

    def __init__(self, config, layer_idx=None):
        super().__init__()
        self.attention = RobertaAttention(config, layer_idx=layer_idx)
        self.intermediate = RobertaIntermediate(config)
        self.output = RobertaOutput(config)

    def construct(self, hidden_states, attention_mask=None):
        attention_output, weights = self.attention(hidden_states, attention_mask)
        return self.output(self.intermediate(attention_output), attention_output), weights


class ClapTextEncoder(nn.Cell):
    def __init__(self, config):
        super().__init__()
        self.layer = nn.CellList([ClapTextLayer(config, layer_idx=i) for i in range(config.num_hidden_layers)])

    def construct(self, hidden_states, attention_mask=None, output_attentions=False, output_hidden_states=False):
        all_hidden = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layer:
            hidden_states, weights = layer(hidden_states, attention_mask)
            if output_hidden_states:
                all_hidden += (hidden_states,)
            if output_attentions:
                all_attentions += (weights,)
        return hidden_states, all_hidden, all_attentions


class ClapPreTrainedModel(PreTrainedModel):
    config_class = ClapConfig
    base_model_prefix = "clap"
    # HF keeps these index buffers in the checkpoint; ours are computed
    _keys_to_ignore_on_load_unexpected = [r"relative_position_index", r"embeddings\.position_ids$",
                                          r"embeddings\.token_type_ids$"]

    def _init_weights(self, cell):
        super()._init_weights(cell)
        if isinstance(cell, ClapModel):
            value = math.log(self.config.logit_scale_init_value)
            init_parameter(cell.logit_scale_a, value)
            init_parameter(cell.logit_scale_t, value)

    def _flags(self, output_attentions, output_hidden_states):
        return (output_attentions if output_attentions is not None else self.config.output_attentions,
                output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states)


def _tower_output(last, pooled, hidden, attentions):
    return model_output(BaseModelOutputWithPooling, {"last_hidden_state": last, "pooler_output": pooled,
                                                     "hidden_states": hidden, "attentions": attentions})


class ClapAudioModel(ClapPreTrainedModel):
    config_class = ClapAudioConfig
    main_input_name = "input_features"

    def __init__(self, config: ClapAudioConfig):
        super().__init__(config)
        self.audio_encoder = ClapAudioEncoder(config)
        self.post_init()

    def get_input_embeddings(self):
        return self.audio_encoder.patch_embed.proj

    def _forward(self, input_features, is_longer=None, output_attentions=False, output_hidden_states=False):
        if input_features is None:
            raise ValueError("You have to specify input_features")
        if self.config.enable_fusion and is_longer is None:
            raise ValueError("This CLAP audio model uses feature fusion: pass `is_longer` (from ClapFeatureExtractor)")
        return self.audio_encoder(input_features, is_longer, output_attentions, output_hidden_states)

    def construct(self, input_features=None, is_longer=None, output_attentions=None, output_hidden_states=None,
                  return_dict=None, **kwargs):
        r"""
        Args:
            input_features: (B, C, T, mel) log-mel spectrograms from `ClapFeatureExtractor` (C = 4 with fusion).
            is_longer: (B, 1) booleans, the clips longer than the extractor's max length (fused with their crops).
        Returns `last_hidden_state` (B, C, freq bins, frames), `pooler_output` (B, C) and, when asked,
        `hidden_states` (each stage's (B, C, H, W) map) and `attentions` (each stage's last block).
        """
        last, pooled, hidden, attentions = self._forward(input_features, is_longer,
                                                         *self._flags(output_attentions, output_hidden_states))
        # a literal dict: graph mode needs constant keys (dict(zip(...)) gives it none)
        fields = {"last_hidden_state": last, "pooler_output": pooled, "hidden_states": hidden,
                  "attentions": attentions}
        return model_output(BaseModelOutputWithPooling, fields, return_dict is not False)


class ClapTextModel(ClapPreTrainedModel):
    config_class = ClapTextConfig

    def __init__(self, config: ClapTextConfig, add_pooling_layer=True):
        super().__init__(config)
        self.embeddings = RobertaEmbeddings(config)
        self.encoder = ClapTextEncoder(config)
        self.pooler = RobertaPooler(config) if add_pooling_layer else None
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value):
        self.embeddings.word_embeddings = value

    def _forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                 inputs_embeds=None, output_attentions=False, output_hidden_states=False):
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        embeddings = self.embeddings(input_ids=input_ids, token_type_ids=token_type_ids, position_ids=position_ids,
                                     inputs_embeds=inputs_embeds)
        mask = create_bidirectional_mask(attention_mask, embeddings.shape[1], embeddings.dtype)
        last, hidden, attentions = self.encoder(embeddings, mask, output_attentions, output_hidden_states)
        pooled = self.pooler(last) if self.pooler is not None else None
        return last, pooled, hidden, attentions

    def construct(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                  inputs_embeds=None, output_attentions=None, output_hidden_states=None, return_dict=None, **kwargs):
        last, pooled, hidden, attentions = self._forward(input_ids, attention_mask, token_type_ids, position_ids,
                                                         inputs_embeds,
                                                         *self._flags(output_attentions, output_hidden_states))
        # a literal dict: graph mode needs constant keys (dict(zip(...)) gives it none)
        fields = {"last_hidden_state": last, "pooler_output": pooled, "hidden_states": hidden,
                  "attentions": attentions}
        return model_output(BaseModelOutputWithPooling, fields, return_dict is not False)


class ClapModel(ClapPreTrainedModel):
    def __init__(self, config: ClapConfig):
        super().__init__(config)
        if not isinstance(config.text_config, ClapTextConfig):
            raise TypeError("config.text_config is expected to be of type ClapTextConfig but is of type "
                            f"{type(config.text_config)}.")
        if not isinstance(config.audio_config, ClapAudioConfig):
            raise TypeError("config.audio_config is expected to be of type ClapAudioConfig but is of type "
                            f"{type(config.audio_config)}.")
        value = math.log(config.logit_scale_init_value)
        self.logit_scale_a = new_parameter((), value)
        self.logit_scale_t = new_parameter((), value)
        self.projection_dim = config.projection_dim
        self.text_model = ClapTextModel(config.text_config)
        self.text_projection = ClapProjectionLayer(config.text_config)
        self.audio_model = ClapAudioModel(config.audio_config)
        self.audio_projection = ClapProjectionLayer(config.audio_config)
        self.post_init()

    def get_input_embeddings(self):
        return self.text_model.get_input_embeddings()

    def get_text_features(self, input_ids=None, attention_mask=None, position_ids=None, output_attentions=None,
                          output_hidden_states=None, return_dict=None, **kwargs):
        """The text tower's output with `pooler_output` replaced by the normalised projected embeddings (HF 5)."""
        last, pooled, hidden, attentions = self.text_model._forward(
            input_ids, attention_mask, None, position_ids, None, *self._flags(output_attentions,
                                                                              output_hidden_states))
        fields = {"last_hidden_state": last, "pooler_output": _l2_normalize(self.text_projection(pooled)),
                  "hidden_states": hidden, "attentions": attentions}
        return model_output(BaseModelOutputWithPooling, fields, return_dict is not False)

    def get_audio_features(self, input_features=None, is_longer=None, attention_mask=None, output_attentions=None,
                           output_hidden_states=None, return_dict=None, **kwargs):
        """The audio tower's output with `pooler_output` replaced by the normalised projected embeddings (HF 5)."""
        last, pooled, hidden, attentions = self.audio_model._forward(
            input_features, is_longer, *self._flags(output_attentions, output_hidden_states))
        fields = {"last_hidden_state": last, "pooler_output": _l2_normalize(self.audio_projection(pooled)),
                  "hidden_states": hidden, "attentions": attentions}
        return model_output(BaseModelOutputWithPooling, fields, return_dict is not False)

    def construct(self, input_ids=None, input_features=None, is_longer=None, attention_mask=None, position_ids=None,
                  return_loss=None, output_attentions=None, output_hidden_states=None, return_dict=None, **kwargs):
        r"""
        Args:
            input_features, is_longer: as `ClapAudioModel`; input_ids, attention_mask: the texts.
            return_loss: also return the symmetric contrastive loss (text i matches audio i).
        Returns `logits_per_audio` (audios x texts, scaled by exp(logit_scale_a)), `logits_per_text` (scaled by
        exp(logit_scale_t)), the normalised embeddings and both towers' outputs.
        """
        flags = self._flags(output_attentions, output_hidden_states)
        a_last, a_pooled, a_hidden, a_attentions = self.audio_model._forward(input_features, is_longer, *flags)
        t_last, t_pooled, t_hidden, t_attentions = self.text_model._forward(input_ids, attention_mask, None,
                                                                            position_ids, None, *flags)
        audio_embeds = _l2_normalize(self.audio_projection(a_pooled))
        text_embeds = _l2_normalize(self.text_projection(t_pooled))
        scale_text = ops.exp(self.logit_scale_t).astype(text_embeds.dtype)
        scale_audio = ops.exp(self.logit_scale_a).astype(audio_embeds.dtype)
        logits_per_text = ops.matmul(text_embeds, audio_embeds.swapaxes(0, 1)) * scale_text
        logits_per_audio = ops.matmul(audio_embeds, text_embeds.swapaxes(0, 1)) * scale_audio
        loss = None
        if return_loss:
            loss = (contrastive_loss(logits_per_text) + contrastive_loss(logits_per_audio.swapaxes(0, 1))) / 2.0
        fields = {"loss": loss, "logits_per_audio": logits_per_audio, "logits_per_text": logits_per_text,
                  "text_embeds": text_embeds, "audio_embeds": audio_embeds,
                  "text_model_output": _tower_output(t_last, t_pooled, t_hidden, t_attentions),
                  "audio_model_output": _tower_output(a_last, a_pooled, a_hidden, a_attentions)}
        return model_output(ClapOutput, fields, return_dict is not False)


class ClapTextModelWithProjection(ClapPreTrainedModel):
    config_class = ClapTextConfig

    def __init__(self, config: ClapTextConfig):
        super().__init__(config)
        self.text_model = ClapTextModel(config)
        self.text_projection = ClapProjectionLayer(config)
        self.post_init()

    def get_input_embeddings(self):
        return self.text_model.embeddings.word_embeddings

    def set_input_embeddings(self, value):
        self.text_model.embeddings.word_embeddings = value

    def construct(self, input_ids=None, attention_mask=None, position_ids=None, output_attentions=None,
                  output_hidden_states=None, return_dict=None, **kwargs):
        last, pooled, hidden, attentions = self.text_model._forward(
            input_ids, attention_mask, None, position_ids, None, *self._flags(output_attentions,
                                                                              output_hidden_states))
        fields = {"text_embeds": self.text_projection(pooled), "last_hidden_state": last, "hidden_states": hidden,
                  "attentions": attentions}
        return model_output(ClapTextModelOutput, fields, return_dict is not False)


class ClapAudioModelWithProjection(ClapPreTrainedModel):
    config_class = ClapAudioConfig
    main_input_name = "input_features"

    def __init__(self, config: ClapAudioConfig):
        super().__init__(config)
        self.audio_model = ClapAudioModel(config)
        self.audio_projection = ClapProjectionLayer(config)
        self.post_init()

    def get_input_embeddings(self):
        return self.audio_model.audio_encoder.patch_embed.proj

    def construct(self, input_features=None, is_longer=None, output_attentions=None, output_hidden_states=None,
                  return_dict=None, **kwargs):
        last, pooled, hidden, attentions = self.audio_model._forward(
            input_features, is_longer, *self._flags(output_attentions, output_hidden_states))
        fields = {"audio_embeds": self.audio_projection(pooled), "last_hidden_state": last,
                  "hidden_states": hidden, "attentions": attentions}
        return model_output(ClapAudioModelOutput, fields, return_dict is not False)


__all__ = ["ClapModel", "ClapPreTrainedModel", "ClapTextModel", "ClapTextModelWithProjection", "ClapAudioModel",
           "ClapAudioModelWithProjection"]
