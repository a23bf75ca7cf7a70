"""Qwen2.5-VL on MindSpore: HF's `modeling_qwen2_5_vl.py` class names, checkpoint keys, forward signature and outputs.

Qwen2-VL (`..qwen2_vl`) with a different vision transformer: RMSNorm and a gated SiLU MLP in the blocks, and window
attention: patches are regrouped so that each `window_size` x `window_size` pixel window (in merged-token units) is
contiguous, most blocks attend within a window and the blocks of `fullatt_block_indexes` within a whole frame; the
merged tokens are put back in the processor's order at the end. Video temporal M-RoPE indices advance by
`tokens_per_second * second_per_grid_ts` per frame group instead of 1.
"""

import numpy as np
from mindspore import Tensor, nn, ops
from transformers import Qwen2_5_VLConfig
from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import Qwen2_5_VLTextConfig, Qwen2_5_VLVisionConfig

from ...backend import functional as F
from ...backend.layers import Linear
from ...modeling_outputs import BaseModelOutputWithPooling, model_output
from ..qwen2.modeling_qwen2 import Qwen2RMSNorm
from ..qwen2_vl.modeling_qwen2_vl import (
    PatchEmbed,
    Qwen2VLForConditionalGeneration,
    Qwen2VLModel,
    Qwen2VLPreTrainedModel,
    Qwen2VLTextModel,
    VisionAttention,
    _as_numpy,
    _GELU,
    block_diagonal_mask,
    frame_lengths,
    grid_tuple,
    vision_rotary_tables,
)


def window_index(grid, merge, window_size, patch_size):
    """(merged-token order of the windowed sequence, patches per window) as HF's `get_vision_window_index`: each
    frame's merged grid is cut into windows of `window_size // merge // patch_size` merged tokens a side, row-major
    over windows and within each window."""
    side = window_size // merge // patch_size
    order, lengths, offset = [], [], 0
    for t, h, w in grid:
        lh, lw = h // merge, w // merge
        index = np.arange(t * lh * lw).reshape(t, lh, lw)
        pad_h, pad_w = side - lh % side, side - lw % side
        padded = np.pad(index, ((0, 0), (0, pad_h), (0, pad_w)), constant_values=-100)
        nh, nw = (lh + pad_h) // side, (lw + pad_w) // side
        padded = padded.reshape(t, nh, side, nw, side).transpose(0, 1, 3, 2, 4).reshape(t, nh * nw, side * side)
        counts = (padded != -100).sum(-1).reshape(-1)
        flat = padded.reshape(-1)
        order.append(flat[flat != -100] + offset)
        lengths += [int(c) * merge * merge for c in counts if c > 0]
        offset += t * lh * lw
    return np.concatenate(order), lengths


@ops.constexpr
def _window_constants(grid, merge, head_dim, theta, window_size, patch_size):
    cos, sin = vision_rotary_tables(grid, merge, head_dim, theta)
    order, windows = window_index(grid, merge, window_size, patch_size)
    unit = merge * merge
    # patch order of the windowed sequence: each merged token's merge x merge patches stay together
    patches = (order[:, None] * unit + np.arange(unit)[None, :]).reshape(-1)
    return (Tensor(order.astype(np.int32)), Tensor(np.argsort(order).astype(np.int32)),
            Tensor(patches.astype(np.int32)), Tensor(cos[patches]), Tensor(sin[patches]),
            Tensor(block_diagonal_mask(frame_lengths(grid))), Tensor(block_diagonal_mask(windows)))


class Qwen2_5_VLMLP(nn.Cell):
    def __init__(self, config, bias=False):
        super().__init__()
        self.hidden_size = config.hidden_size
        self.intermediate_size = config.intermediate_size
        self.gate_proj = Linear(self.hidden_size, self.intermediate_size, bias=bias)
        self.up_proj = Linear(self.hidden_size, self.intermediate_size, bias=bias)
        self.down_proj = Linear(self.intermediate_size, self.hidden_size, bias=bias)
        self.act_fn = F.get_activation(config.hidden_act)

    def construct(self, x):
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class Qwen2_5_VLPatchMerger(nn.Cell):
    def __init__(self, dim, context_dim, spatial_merge_size=2):
        super().__init__()
        self.hidden_size = context_dim * spatial_merge_size ** 2
        self.ln_q = Qwen2RMSNorm(context_dim, eps=1e-6)
        self.mlp = nn.CellList([Linear(self.hidden_size, self.hidden_size), _GELU(),
                                Linear(self.hidden_size, dim)])

    def construct(self, x):
        x = self.ln_q(x).reshape(-1, self.hidden_size)
        return self.mlp[2](self.mlp[1](self.mlp[0](x)))


class Qwen2_5_VLVisionBlock(nn.Cell):
    def __init__(self, config):
        super().__init__()
        self.norm1 = Qwen2RMSNorm(config.hidden_size, eps=1e-6)
        self.norm2 = Qwen2RMSNorm(config.hidden_size, eps=1e-6)
        self.attn = VisionAttention(config, dim=config.hidden_size)
        self.mlp = Qwen2_5_VLMLP(config, bias=True)

    def construct(self, hidden_states, attention_mask, position_embeddings):
        attn_out, weights = self.attn(self.norm1(hidden_states), attention_mask, position_embeddings)
        hidden_states = hidden_states + attn_out
        hidden_states = hidden_states + self.mlp(self.norm2(hidden_states))
        return hidden_states, weights


class Qwen2_5_VLPreTrainedModel(Qwen2VLPreTrainedModel):
    config_class = Qwen2_5_VLConfig
    _no_split_modules = ["Qwen2_5_VLDecoderLayer", "Qwen2_5_VLVisionBlock"]


class Qwen2_5_VisionTransformerPretrainedModel(Qwen2_5_VLPreTrainedModel):
    config_class = Qwen2_5_VLVisionConfig
    main_input_name = "pixel_values"
    _no_split_modules = ["Qwen2_5_VLVisionBlock"]

    def __init__(self, config):
        super().__init__(config)
        self.spatial_merge_size = config.spatial_merge_size
        self.patch_size = config.patch_size
        self.fullatt_block_indexes = tuple(config.fullatt_block_indexes)
        self.window_size = config.window_size
        self.head_dim = config.hidden_size // config.num_heads
        self.patch_embed = PatchEmbed(config.patch_size, config.temporal_patch_size, config.in_channels,
                                      config.hidden_size)
        self.blocks = nn.CellList([Qwen2_5_VLVisionBlock(config) for _ in range(config.depth)])
        self.merger = Qwen2_5_VLPatchMerger(config.out_hidden_size, config.hidden_size, config.spatial_merge_size)
        self.post_init()

    def _rope_theta(self):
        return float((getattr(self.config, "rope_parameters", None) or {}).get("rope_theta", 10000.0))

    def construct(self, hidden_states, grid_thw=None, output_hidden_states=None, output_attentions=None,
                  return_dict=None, **kwargs):
        r"""
        hidden_states: (num_patches, C * T * P * P) patches from the image/video processor.
        grid_thw: (num_items, 3) (t, h, w) patch grid of each image or video (a tuple under jit).

        `last_hidden_state` is in the windowed patch order (as HF's); `pooler_output` in the processor's order.
        """
        return_dict = return_dict if return_dict is not None else True
        grid = grid_tuple(grid_thw, "grid_thw")
        _, reverse, patches, cos, sin, full_mask, window_mask = _window_constants(
            grid, self.spatial_merge_size, self.head_dim, self._rope_theta(), self.window_size, self.patch_size)
        hidden_states = F.index_select(self.patch_embed(hidden_states), 0, patches)
        all_hidden, all_attn = (), ()
        for i, block in enumerate(self.blocks):
            if output_hidden_states:
                all_hidden += (hidden_states,)
            mask = full_mask if i in self.fullatt_block_indexes else window_mask
            hidden_states, weights = block(hidden_states, mask, (cos, sin))
            if output_attentions:
                all_attn += (weights,)
        if output_hidden_states:
            all_hidden += (hidden_states,)
        merged = F.index_select(self.merger(hidden_states), 0, reverse)
        return model_output(BaseModelOutputWithPooling, {
            "last_hidden_state": hidden_states,
            "pooler_output": merged,
            "hidden_states": all_hidden if output_hidden_states else None,
            "attentions": all_attn if output_attentions else None,
        }, return_dict)


class Qwen2_5_VLTextModel(Qwen2VLTextModel):
    config_class = Qwen2_5_VLTextConfig


class Qwen2_5_VLModel(Qwen2VLModel):
    config_class = Qwen2_5_VLConfig
    _no_split_modules = ["Qwen2_5_VLDecoderLayer", "Qwen2_5_VLVisionBlock"]
    _vision_class = Qwen2_5_VisionTransformerPretrainedModel
    _text_class = Qwen2_5_VLTextModel

    def _video_time_intervals(self, video_grid_thw, second_per_grid_ts):
        grid = grid_tuple(video_grid_thw)
        if grid is None:
            return None
        tokens_per_second = self.config.vision_config.tokens_per_second
        seconds = _as_numpy(second_per_grid_ts).reshape(-1).tolist() if second_per_grid_ts is not None \
            else [1] * len(grid)
        return [tokens_per_second * s for s in seconds]


class Qwen2_5_VLForConditionalGeneration(Qwen2VLForConditionalGeneration):
    config_class = Qwen2_5_VLConfig
    _no_split_modules = ["Qwen2_5_VLDecoderLayer", "Qwen2_5_VLVisionBlock"]
    _base_class = Qwen2_5_VLModel


__all__ = ["Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLModel", "Qwen2_5_VLPreTrainedModel", "Qwen2_5_VLTextModel",
           "Qwen2_5_VisionTransformerPretrainedModel"]
