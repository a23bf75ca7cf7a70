"""Qwen2-VL on MindSpore: HF's `modeling_qwen2_vl.py` class names, checkpoint keys, forward signature and outputs.

A vision transformer reads the processor's flattened patches (`pixel_values` (num_patches, C * T * P * P), one
block of rows per image or video given by `image_grid_thw` / `video_grid_thw` (t, h, w)): a linear patch embedding
(HF's Conv3d with stride = kernel), blocks with 2-D rotary attention restricted to each frame, and a merger that
concatenates every 2x2 patch neighbourhood and projects it to the language model's width. The merged features
replace the `<|image_pad|>` / `<|video_pad|>` placeholders; the Qwen2 language model then runs with multimodal RoPE:
each position has (temporal, height, width) indices (`get_rope_index`) and the rotary frequencies are split into
`mrope_section` parts, each rotated by one of the three indices.

What depends on the grid sizes (rotary positions, the per-frame attention mask, M-RoPE indices) is computed on the
host with NumPy. Under `mindspore.jit` the grids must be static (tuples) and multimodal `position_ids` precomputed
with `get_rope_index`; `generate()` runs the image prefill in PyNative and then the compiled decode step, whose
positions continue from `rope_deltas` (text position + delta on all three axes, as HF).

Checkpoint keys are those of transformers 5 (`model.visual.*`, `model.language_model.*`, `lm_head.weight`); the
layout transformers writes on save (`visual.*`, `model.layers.*`) loads too, and `save_pretrained` writes it.
"""

import itertools
from dataclasses import dataclass
from typing import Any, Optional, Tuple

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops
from mindspore.common.initializer import Normal
from transformers import Qwen2VLConfig
from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLTextConfig, Qwen2VLVisionConfig

from ...backend import functional as F
from ...backend import runtime
from ...backend.layers import Embedding, LayerNorm, Linear, new_parameter
from ...cache_utils import DynamicCache
from ...generation import GenerationMixin
from ...generation.utils import run_compiled_part
from ...loss_utils import causal_lm_loss
from ...masking_utils import create_causal_mask
from ...modeling_outputs import BaseModelOutputWithPast, BaseModelOutputWithPooling, ModelOutput, model_output
from ...modeling_rope_utils import float32_power
from ...modeling_utils import PreTrainedModel, init_parameter
from ..llava.modeling_llava import scatter_image_features
from ..qwen2.modeling_qwen2 import Qwen2DecoderLayer, Qwen2RMSNorm


@dataclass
class MultimodalBaseModelOutputWithPast(ModelOutput):
    last_hidden_state: Any = None
    past_key_values: Any = None
    hidden_states: Optional[Tuple[Any, ...]] = None
    attentions: Optional[Tuple[Any, ...]] = None
    image_outputs: Any = None
    video_outputs: Any = None
    audio_outputs: Any = None


@dataclass
class MultimodalCausalLMOutputWithPast(ModelOutput):
    loss: Any = None
    logits: Any = None
    past_key_values: Any = None
    hidden_states: Optional[Tuple[Any, ...]] = None
    attentions: Optional[Tuple[Any, ...]] = None
    image_outputs: Any = None
    video_outputs: Any = None
    audio_outputs: Any = None


# ---------------------------------------------------------------------------------------------------------------------
# host-side grid arithmetic (NumPy): static under jit, computed once per call in PyNative
# ---------------------------------------------------------------------------------------------------------------------

def grid_tuple(grid, name="grid_thw"):
    """`(num_items, 3)` grid (Tensor, array, list) as a tuple of (t, h, w) ints, or None."""
    if grid is None:
        return None
    if isinstance(grid, (Tensor, ms.Parameter)):
        if runtime.in_graph():
            raise ValueError(f"{name}: under mindspore.jit the grid sizes must be static; pass a tuple of (t, h, w) "
                             "tuples instead of a Tensor")
        grid = grid.asnumpy()
    return tuple(tuple(int(v) for v in row) for row in np.asarray(grid).reshape(-1, 3))


def _as_numpy(x):
    return x.asnumpy() if isinstance(x, (Tensor, ms.Parameter)) else np.asarray(x)


def vision_position_ids(grid, merge):
    """(num_patches, 2) (row, column) of every patch, in the processor's order: merge x merge blocks, row-major."""
    rows = []
    for t, h, w in grid:
        hpos, wpos = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        shape = (h // merge, merge, w // merge, merge)
        hpos = hpos.reshape(shape).transpose(0, 2, 1, 3).reshape(-1)
        wpos = wpos.reshape(shape).transpose(0, 2, 1, 3).reshape(-1)
        rows.append(np.tile(np.stack([hpos, wpos], -1), (t, 1)))
    return np.concatenate(rows, 0)


def vision_rotary_tables(grid, merge, head_dim, theta):
    """(cos, sin) each (num_patches, head_dim) float32: a quarter of the frequencies rotate by the row, a quarter by
    the column, and the two halves of the head repeat them (HF's axial rope)."""
    spatial = head_dim // 2
    exponents = np.arange(0, spatial, 2, dtype=np.float32) / np.float32(spatial)
    inv_freq = np.float32(1.0) / float32_power(theta, exponents)
    pos = vision_position_ids(grid, merge).astype(np.float32)
    freqs = (pos[:, :, None] * inv_freq[None, None, :]).reshape(pos.shape[0], -1)  # (N, 2 * head_dim / 4)
    freqs = np.concatenate([freqs, freqs], -1)
    return np.cos(freqs).astype(np.float32), np.sin(freqs).astype(np.float32)


def frame_lengths(grid):
    """Patches per attention segment: every frame of every image/video attends within itself."""
    return [h * w for t, h, w in grid for _ in range(t)]


def block_diagonal_mask(lengths):
    """(1, 1, N, N) additive float32 mask allowing attention only inside consecutive segments of `lengths`."""
    ids = np.repeat(np.arange(len(lengths)), lengths)
    allowed = ids[:, None] == ids[None, :]
    mask = np.where(allowed, 0.0, np.finfo(np.float32).min).astype(np.float32)
    return mask[None, None]


@ops.constexpr
def _vision_constants(grid, merge, head_dim, theta):
    cos, sin = vision_rotary_tables(grid, merge, head_dim, theta)
    return Tensor(cos), Tensor(sin), Tensor(block_diagonal_mask(frame_lengths(grid)))


def _groups(types):
    """[(modality, start, end)] runs of equal values in a 1-D sequence of token types."""
    out, start = [], 0
    for key, run in itertools.groupby(types.tolist()):
        n = len(list(run))
        out.append((key, start, start + n))
        start += n
    return out


def rope_index(input_ids, mm_token_type_ids, image_grid_thw, video_grid_thw, attention_mask, spatial_merge_size,
               video_time_intervals=None):
    """HF's `get_rope_index` in NumPy: (position_ids (3, B, S) int64, rope_deltas (B, 1) int64).

    Text runs advance all three indices together; an image/video run of grid (t, h, w) gets (temporal, row, column)
    indices over its merged grid, offset by the position where it starts, and the text after it continues from the
    start plus the larger merged side. `video_time_intervals[i]` scales video i's temporal index (Qwen2.5-VL).
    """
    input_ids = _as_numpy(input_ids)
    types = _as_numpy(mm_token_type_ids)
    mask = _as_numpy(attention_mask).astype(bool) if attention_mask is not None else None
    grids = {1: iter(grid_tuple(image_grid_thw) or ()), 2: iter(grid_tuple(video_grid_thw) or ())}
    intervals = iter(video_time_intervals) if video_time_intervals is not None else itertools.repeat(1.0)
    batch, length = input_ids.shape
    position_ids = np.zeros((3, batch, length), np.int64)
    deltas = []
    for b in range(batch):
        keep = mask[b] if mask is not None else np.ones(length, bool)
        row_types = types[b][keep]
        pieces, current = [], 0
        for modality, start, end in _groups(row_types):
            if modality == 0:
                pieces.append(np.broadcast_to(np.arange(end - start) + current, (3, end - start)))
                current += end - start
                continue
            t, h, w = next(grids[modality])
            interval = next(intervals) if modality == 2 else 1.0
            lh, lw = h // spatial_merge_size, w // spatial_merge_size
            temporal = (np.arange(t) * interval).astype(np.int64)
            tt, hh, ww = np.meshgrid(temporal, np.arange(lh) + current, np.arange(lw) + current, indexing="ij")
            block = np.stack([tt, hh, ww]).reshape(3, -1)
            block[0] += current
            pieces.append(block)
            current += max(h, w) // spatial_merge_size
        positions = np.concatenate(pieces, 1)
        position_ids[:, b, keep] = positions
        deltas.append(positions.max() + 1 - int(keep.sum()))
    return position_ids, np.array(deltas, np.int64).reshape(batch, 1)


# ---------------------------------------------------------------------------------------------------------------------
# vision transformer
# ---------------------------------------------------------------------------------------------------------------------

class _Conv3dWeight(nn.Cell):
    """Holds the Conv3d kernel (out, C, T, P, P) under HF's name; kernel = stride, so the conv is one matmul."""

    def __init__(self, in_channels, out_channels, kernel):
        super().__init__()
        self.weight = new_parameter((out_channels, in_channels) + tuple(kernel), "zeros")

    def construct(self, x):
        return F.linear(x, self.weight.reshape(self.weight.shape[0], -1))


class PatchEmbed(nn.Cell):
    def __init__(self, patch_size=14, temporal_patch_size=2, in_channels=3, embed_dim=1152):
        super().__init__()
        self.patch_size = patch_size
        self.temporal_patch_size = temporal_patch_size
        self.in_channels = in_channels
        self.embed_dim = embed_dim
        self.proj = _Conv3dWeight(in_channels, embed_dim, (temporal_patch_size, patch_size, patch_size))

    def construct(self, hidden_states):
        # rows are (C, T, P, P) flattened, the kernel's own order
        hidden_states = hidden_states.reshape(-1, self.in_channels * self.temporal_patch_size * self.patch_size ** 2)
        return self.proj(hidden_states.astype(self.proj.weight.dtype))


class _GELU(nn.Cell):
    def construct(self, x):
        return F.gelu(x)


class PatchMerger(nn.Cell):
    def __init__(self, dim, context_dim, spatial_merge_size=2):
        super().__init__()
        self.hidden_size = context_dim * spatial_merge_size ** 2
        self.ln_q = LayerNorm(context_dim, eps=1e-6)
        # a CellList keeps HF's Sequential names (mlp.0, mlp.2)
        self.mlp = nn.CellList([Linear(self.hidden_size, self.hidden_size), _GELU(),
                                Linear(self.hidden_size, dim)])

    def construct(self, x):
        # consecutive rows are the merge x merge neighbourhood of one merged token (the processor's order)
        x = self.ln_q(x).reshape(-1, self.hidden_size)
        return self.mlp[2](self.mlp[1](self.mlp[0](x)))


class VisionMlp(nn.Cell):
    def __init__(self, dim, hidden_dim, hidden_act):
        super().__init__()
        self.fc1 = Linear(dim, hidden_dim)
        self.act = F.get_activation(hidden_act)
        self.fc2 = Linear(hidden_dim, dim)

    def construct(self, x):
        return self.fc2(self.act(self.fc1(x)))


def apply_rotary_pos_emb_vision(q, k, cos, sin):
    """q, k (..., N, D) rotated in float32 by cos/sin (N, D), cast back (HF computes the vision rotary in fp32)."""
    dtype = q.dtype
    q, k = q.astype(ms.float32), k.astype(ms.float32)
    # (N, D) tables against (H, N, D): broadcast explicitly (a compiled graph keeps an implicit one's buffers)
    cos = F.broadcast_operand(cos.astype(ms.float32), q.shape)
    sin = F.broadcast_operand(sin.astype(ms.float32), q.shape)
    q_embed = q * cos + F.rotate_half(q) * sin
    k_embed = k * cos + F.rotate_half(k) * sin
    return q_embed.astype(dtype), k_embed.astype(dtype)


class VisionAttention(nn.Cell):
    def __init__(self, config, dim=None):
        super().__init__()
        self.dim = dim if dim is not None else config.embed_dim
        self.num_heads = config.num_heads
        self.head_dim = self.dim // self.num_heads
        self.scaling = self.head_dim ** -0.5
        self.qkv = Linear(self.dim, self.dim * 3, bias=True)
        self.proj = Linear(self.dim, self.dim)

    def construct(self, hidden_states, attention_mask, position_embeddings):
        """hidden_states (N, dim) of all patches; attention_mask (1, 1, N, N) additive (which patches see which)."""
        seq_length = hidden_states.shape[0]
        # one transpose to (3, H, N, D), then unbind: q, k, v in the heads-first layout attention takes, without
        # indexing (N, 3, H, D) (three slow StridedSlice kernels in a compiled graph on CPU)
        qkv = self.qkv(hidden_states).reshape(seq_length, 3, self.num_heads, self.head_dim).transpose(1, 2, 0, 3)
        query, key, value = F.unbind(qkv, 0)
        cos, sin = position_embeddings
        query, key = apply_rotary_pos_emb_vision(query, key, cos, sin)
        heads = (1, self.num_heads, seq_length, self.head_dim)
        out, weights = F.attention(query.reshape(heads), key.reshape(heads), value.reshape(heads),
                                   attn_mask=attention_mask, scale=self.scaling)
        out = out.reshape(heads[1:]).swapaxes(0, 1).reshape(seq_length, -1)
        return self.proj(out), weights


class Qwen2VLVisionBlock(nn.Cell):
    def __init__(self, config):
        super().__init__()
        self.norm1 = LayerNorm(config.embed_dim, eps=1e-6)
        self.norm2 = LayerNorm(config.embed_dim, eps=1e-6)
        self.attn = VisionAttention(config)
        self.mlp = VisionMlp(config.embed_dim, int(config.embed_dim * config.mlp_ratio), config.hidden_act)

    def construct(self, hidden_states, attention_mask, position_embeddings):
        attn_out, weights = self.attn(self.norm1(hidden_states), attention_mask, position_embeddings)
        hidden_states = hidden_states + attn_out
        hidden_states = hidden_states + self.mlp(self.norm2(hidden_states))
        return hidden_states, weights


class Qwen2VLPreTrainedModel(PreTrainedModel):
    config_class = Qwen2VLConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["Qwen2VLDecoderLayer", "Qwen2VLVisionBlock"]
    _supports_static_cache = True

    def _init_weights(self, cell):
        super()._init_weights(cell)
        if isinstance(cell, Qwen2RMSNorm):
            init_parameter(cell.weight, "ones")
        elif isinstance(cell, _Conv3dWeight):
            config = self.config.get_text_config() if hasattr(self.config, "get_text_config") else self.config
            init_parameter(cell.weight, Normal(getattr(config, "initializer_range", 0.02)))

    def _tie_word_embeddings_enabled(self) -> bool:
        return bool(getattr(self.config, "tie_word_embeddings", False))

    @classmethod
    def _fix_checkpoint_key(cls, key: str) -> str:
        # the layout transformers writes on save (and older checkpoints): visual.*, model.layers.*, and for the
        # base model language_model.* / layers.*
        if key.startswith("visual."):
            key = "model." + key
        elif key.startswith("language_model."):
            key = "model." + key
        elif key.startswith("model.") and not key.startswith(("model.language_model.", "model.visual.")):
            key = "model.language_model." + key[len("model."):]
        elif key.startswith(("layers.", "embed_tokens.", "norm.")):
            key = "model.language_model." + key
        return super()._fix_checkpoint_key(key)

    def _revert_checkpoint(self, state_dict):
        if self.base_model is self:
            return state_dict  # transformers saves the base model as language_model.* / visual.*
        out = {}
        for k, v in state_dict.items():
            if k.startswith("model.visual."):
                k = k[len("model."):]
            elif k.startswith("model.language_model."):
                k = "model." + k[len("model.language_model."):]
            out[k] = v
        return out


class Qwen2VisionTransformerPretrainedModel(Qwen2VLPreTrainedModel):
    config_class = Qwen2VLVisionConfig
    main_input_name = "pixel_values"
    _no_split_modules = ["Qwen2VLVisionBlock"]

    def __init__(self, config):
        super().__init__(config)
        self.spatial_merge_size = config.spatial_merge_size
        self.patch_embed = PatchEmbed(config.patch_size, config.temporal_patch_size, config.in_channels,
                                      config.embed_dim)
        self.head_dim = config.embed_dim // config.num_heads
        self.blocks = nn.CellList([Qwen2VLVisionBlock(config) for _ in range(config.depth)])
        self.merger = PatchMerger(config.hidden_size, config.embed_dim, config.spatial_merge_size)
        self.post_init()

    def _rope_theta(self):
        return float((getattr(self.config, "rope_parameters", None) or {}).get("rope_theta", 10000.0))

    def construct(self, hidden_states, grid_thw=None, output_hidden_states=None, output_attentions=None,
                  return_dict=None, **kwargs):
        r"""
        hidden_states: (num_patches, C * T * P * P) patches from the image/video processor.
        grid_thw: (num_items, 3) (t, h, w) patch grid of each image or video (a tuple under jit).
        """
        return_dict = return_dict if return_dict is not None else True
        grid = grid_tuple(grid_thw, "grid_thw")
        cos, sin, mask = _vision_constants(grid, self.spatial_merge_size, self.head_dim, self._rope_theta())
        hidden_states = self.patch_embed(hidden_states)
        all_hidden, all_attn = (), ()
        for block in self.blocks:
            if output_hidden_states:
                all_hidden += (hidden_states,)
            hidden_states, weights = block(hidden_states, mask, (cos, sin))
            if output_attentions:
                all_attn += (weights,)
        if output_hidden_states:
            all_hidden += (hidden_states,)
        return model_output(BaseModelOutputWithPooling, {
            "last_hidden_state": hidden_states,
            "pooler_output": self.merger(hidden_states),
            "hidden_states": all_hidden if output_hidden_states else None,
            "attentions": all_attn if output_attentions else None,
        }, return_dict)


# ---------------------------------------------------------------------------------------------------------------------
# language model with multimodal RoPE
# ---------------------------------------------------------------------------------------------------------------------

class Qwen2VLRotaryEmbedding(nn.Cell):
    """cos/sin for (3, B, S) positions: frequency section i of `mrope_section` rotates by index i % 3."""

    def __init__(self, config):
        super().__init__()
        params = config.rope_parameters
        if params.get("rope_type", "default") != "default":
            raise ValueError(f"Qwen2-VL: rope_type {params.get('rope_type')!r} is not supported (only 'default')")
        dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        base = float(params["rope_theta"])
        exponents = np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)
        self.inv_freq = Tensor((np.float32(1.0) / float32_power(base, exponents)).astype(np.float32))
        self.attention_scaling = 1.0
        self.mrope_section = list(params.get("mrope_section", [16, 24, 24]))

    def _recompose(self, freq):
        parts, start = [], 0
        for i, size in enumerate(self.mrope_section):
            parts.append(freq[i % 3, ..., start:start + size])
            start += size
        freq = F.cat(parts, -1)
        return F.cat([freq, freq], -1)

    def construct(self, x, position_ids):
        freqs = position_ids[..., None].astype(ms.float32) * self.inv_freq  # (3, B, S, D/2)
        cos = self._recompose(freqs.cos() * self.attention_scaling)
        sin = self._recompose(freqs.sin() * self.attention_scaling)
        return cos.astype(x.dtype), sin.astype(x.dtype)


class Qwen2VLDecoderLayer(Qwen2DecoderLayer):
    """Qwen2's decoder layer (biases on q/k/v); positions arrive as cos/sin already recomposed for M-RoPE."""


class Qwen2VLTextModel(Qwen2VLPreTrainedModel):
    config_class = Qwen2VLTextConfig

    def __init__(self, config):
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        self.embed_tokens = Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.CellList([Qwen2VLDecoderLayer(config, i) for i in range(config.num_hidden_layers)])
        self.norm = Qwen2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = Qwen2VLRotaryEmbedding(config)
        self.post_init()

    def get_input_embeddings(self):
        return self.embed_tokens

    def set_input_embeddings(self, value):
        self.embed_tokens = value

    def construct(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                  inputs_embeds=None, use_cache=None, output_attentions=None, output_hidden_states=None,
                  return_dict=None, cache_position=None, **kwargs):
        r"""
        position_ids: (B, S) text positions (used on all three M-RoPE axes), (3, B, S) multimodal positions, or
            (4, B, S) with text positions first (HF's generation layout; the first row is dropped).
        """
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (output_hidden_states if output_hidden_states is not None
                                else self.config.output_hidden_states)
        use_cache = use_cache if use_cache is not None else self.config.use_cache
        return_dict = return_dict if return_dict is not None else True
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        batch_size, seq_len = inputs_embeds.shape[:2]

        if use_cache and past_key_values is None and not runtime.in_graph():
            past_key_values = DynamicCache(config=self.config)
        if cache_position is None:
            past_seen = past_key_values.get_seq_length() if past_key_values is not None else 0
            cache_position = F.arange(past_seen, past_seen + seq_len, dtype=ms.int64)
        if position_ids is None:
            position_ids = ops.broadcast_to(cache_position.reshape(1, 1, -1), (3, batch_size, seq_len))
        elif position_ids.ndim == 2:
            position_ids = ops.broadcast_to(position_ids.reshape(1, -1, seq_len), (3, position_ids.shape[0], seq_len))
        elif position_ids.shape[0] == 4:
            position_ids = position_ids[1:]

        if past_key_values is not None and past_key_values.get_max_cache_shape() is not None:
            kv_length = past_key_values.get_max_cache_shape()
        elif past_key_values is not None:
            kv_length = past_key_values.get_seq_length() + seq_len
        else:
            kv_length = seq_len
        causal_masks = {"full_attention": create_causal_mask(attention_mask, batch_size, cache_position, kv_length,
                                                             inputs_embeds.dtype)}
        if "sliding_attention" in self.config.layer_types:
            causal_masks["sliding_attention"] = create_causal_mask(attention_mask, batch_size, cache_position,
                                                                   kv_length, inputs_embeds.dtype,
                                                                   sliding_window=self.config.sliding_window)

        hidden_states = inputs_embeds
        position_embeddings = self.rotary_emb(hidden_states, position_ids)
        all_hidden_states = () if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layers:
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            hidden_states, weights = layer(hidden_states, position_embeddings, causal_masks[layer.attention_type],
                                           past_key_values, cache_position)
            if output_attentions:
                all_attentions += (weights,)
        hidden_states = self.norm(hidden_states)
        if output_hidden_states:
            all_hidden_states += (hidden_states,)
        return model_output(BaseModelOutputWithPast, {
            "last_hidden_state": hidden_states,
            "past_key_values": past_key_values if use_cache else None,
            "hidden_states": all_hidden_states,
            "attentions": all_attentions,
        }, return_dict)


class Qwen2VLModel(Qwen2VLPreTrainedModel):
    _vision_class = Qwen2VisionTransformerPretrainedModel
    _text_class = Qwen2VLTextModel

    def __init__(self, config):
        super().__init__(config)
        self.visual = self._vision_class(config.vision_config)
        self.language_model = self._text_class(config.text_config)
        self.visual.config = config.vision_config
        self.language_model.config = config.text_config
        self.rope_deltas = None  # (B, 1) from the last multimodal prefill: later positions are text + delta
        self.post_init()

    def get_input_embeddings(self):
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.language_model.set_input_embeddings(value)

    def _video_time_intervals(self, video_grid_thw, second_per_grid_ts):
        return None

    def get_rope_index(self, input_ids, mm_token_type_ids, image_grid_thw=None, video_grid_thw=None,
                       attention_mask=None, **kwargs):
        """The 3-D M-RoPE indices of a vision + text batch (computed on the host).

        Args:
            input_ids: (B, S) token ids.
            mm_token_type_ids: (B, S) 0 text, 1 image, 2 video (the processor returns them).
            image_grid_thw / video_grid_thw: (num_images / num_videos, 3) patch grids.
            attention_mask: (B, S) 1/0; padding positions get index 0 and are skipped.

        Returns:
            position_ids (3, B, S) int64 Tensor, mrope_position_deltas (B, 1) int64 Tensor.
        """
        intervals = self._video_time_intervals(video_grid_thw, kwargs.get("second_per_grid_ts"))
        positions, deltas = rope_index(input_ids, mm_token_type_ids, image_grid_thw, video_grid_thw, attention_mask,
                                       self.config.vision_config.spatial_merge_size, intervals)
        return Tensor(positions), Tensor(deltas)

    def _visual_features(self, pixel_values, grid_thw, **kwargs):
        if grid_thw is None:
            raise ValueError("pixel_values / pixel_values_videos need their patch grids (image_grid_thw / "
                             "video_grid_thw, (num_items, 3) as the processor returns them)")
        outputs = self.visual(pixel_values.astype(self.visual.dtype), grid_thw=grid_thw, return_dict=True,
                              output_hidden_states=kwargs.get("output_hidden_states"))
        merge = self.visual.spatial_merge_size ** 2
        sizes = [t * h * w // merge for t, h, w in grid_tuple(grid_thw)]
        pooled, parts, start = outputs["pooler_output"], [], 0
        for size in sizes:
            parts.append(pooled[start:start + size])
            start += size
        return model_output(BaseModelOutputWithPooling, {
            "last_hidden_state": outputs["last_hidden_state"], "pooler_output": tuple(parts),
            "hidden_states": outputs.get("hidden_states")})

    def get_image_features(self, pixel_values, image_grid_thw=None, return_dict=True, **kwargs):
        r"""
        Runs the vision transformer on `pixel_values` (num_patches, C * T * P * P).

        Returns:
            `BaseModelOutputWithPooling` whose `pooler_output` is the tuple of per-image merged features, each
            (t * h * w / merge^2, text hidden size).
        """
        outputs = self._visual_features(pixel_values, image_grid_thw, **kwargs)
        return outputs if return_dict else outputs.to_tuple()

    def get_video_features(self, pixel_values_videos, video_grid_thw=None, return_dict=True, **kwargs):
        r"""As `get_image_features`, for the frames of `pixel_values_videos` laid out by `video_grid_thw`."""
        outputs = self._visual_features(pixel_values_videos, video_grid_thw, **kwargs)
        return outputs if return_dict else outputs.to_tuple()

    def _placeholder_mask(self, input_ids, inputs_embeds, token_id):
        if input_ids is not None:
            return input_ids == token_id
        embedding = self.get_input_embeddings()(Tensor(np.array([token_id], np.int64)))
        return (inputs_embeds == embedding.reshape(1, 1, -1)).all(-1)

    def merge_visual_features(self, input_ids, inputs_embeds, pixel_values=None, pixel_values_videos=None,
                              image_grid_thw=None, video_grid_thw=None, mm_encoder_outputs=None,
                              output_hidden_states=None):
        """(inputs_embeds with the merged image / video features at their placeholders, {"image": outputs,
        "video": outputs} of the vision transformer or of `mm_encoder_outputs`)."""
        if (pixel_values is not None or pixel_values_videos is not None) and mm_encoder_outputs is not None:
            raise ValueError("You cannot specify both pixel_values/pixel_values_videos and mm_encoder_outputs at the "
                             "same time")
        encoded = dict(mm_encoder_outputs or {})
        if pixel_values is not None:
            encoded["image"] = self._visual_features(pixel_values, image_grid_thw,
                                                     output_hidden_states=output_hidden_states)
        if pixel_values_videos is not None:
            encoded["video"] = self._visual_features(pixel_values_videos, video_grid_thw,
                                                     output_hidden_states=output_hidden_states)
        for modality, token_id in (("image", self.config.image_token_id), ("video", self.config.video_token_id)):
            if encoded.get(modality) is not None:
                features = F.cat(list(encoded[modality]["pooler_output"]), 0)
                mask = self._placeholder_mask(input_ids, inputs_embeds, token_id)
                inputs_embeds = scatter_image_features(inputs_embeds, mask, features)
        return inputs_embeds, encoded

    def compute_3d_position_ids(self, input_ids, inputs_embeds, image_grid_thw=None, video_grid_thw=None,
                                attention_mask=None, past_key_values=None, mm_token_type_ids=None,
                                second_per_grid_ts=None):
        """M-RoPE positions as HF computes them when none are given (PyNative): from `get_rope_index` at a
        prefill (stored deltas updated), or text positions + the stored `rope_deltas` later on; else None."""
        cache_length = past_key_values.get_seq_length() if past_key_values is not None else 0
        has_multimodal = image_grid_thw is not None or video_grid_thw is not None
        if has_multimodal and mm_token_type_ids is None and input_ids is not None:
            raise ValueError("Multimodal data was passed (via `image_grid_thw` or `video_grid_thw`) but "
                             "`mm_token_type_ids` is missing. Please pass `mm_token_type_ids` to the model so that "
                             "multimodal RoPE (M-RoPE) can be computed correctly. `mm_token_type_ids` is returned by "
                             "the processor alongside `input_ids`.")
        if input_ids is not None and has_multimodal and (self.rope_deltas is None or cache_length == 0):
            position_ids, deltas = self.get_rope_index(input_ids, mm_token_type_ids, image_grid_thw,
                                                       video_grid_thw, attention_mask,
                                                       second_per_grid_ts=second_per_grid_ts)
            self.rope_deltas = deltas
            return position_ids
        if self.rope_deltas is not None and (cache_length > 0 or input_ids is None):
            batch, seq_len = inputs_embeds.shape[:2]
            if attention_mask is not None:
                mask = _as_numpy(attention_mask).astype(np.int64)
                positions = np.where(mask == 0, 0, np.cumsum(mask, -1) - 1)
            else:
                positions = np.broadcast_to(np.arange(cache_length, cache_length + seq_len), (batch, seq_len))
            deltas = self.rope_deltas.asnumpy()
            deltas = np.repeat(deltas, batch // deltas.shape[0], 0)
            return Tensor(np.broadcast_to((positions + deltas)[None], (3,) + positions.shape).copy())
        return None

    def construct(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                  inputs_embeds=None, use_cache=None, output_attentions=None, output_hidden_states=None,
                  return_dict=None, pixel_values=None, pixel_values_videos=None, image_grid_thw=None,
                  video_grid_thw=None, mm_token_type_ids=None, cache_position=None,
                  second_per_grid_ts=None, mm_encoder_outputs=None, **kwargs):
        r"""
        pixel_values / pixel_values_videos: (num_patches, C * T * P * P) from HF's image / video processor.
        image_grid_thw / video_grid_thw: (num_items, 3) patch grids (tuples under jit).
        mm_token_type_ids: (B, S) 0 text, 1 image, 2 video; needed for M-RoPE when vision inputs are given.
        mm_encoder_outputs: {"image": ..., "video": ...} outputs of `get_image_features` / `get_video_features`,
            used instead of pixels.
        """
        return_dict = return_dict if return_dict is not None else True
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)

        inputs_embeds, encoded = self.merge_visual_features(input_ids, inputs_embeds, pixel_values,
                                                            pixel_values_videos, image_grid_thw, video_grid_thw,
                                                            mm_encoder_outputs, output_hidden_states)

        if position_ids is None and runtime.in_graph() and (image_grid_thw is not None or video_grid_thw is not None):
            raise ValueError("under mindspore.jit, multimodal position_ids must be given: compute them on the host "
                             "with model.get_rope_index(input_ids, mm_token_type_ids, image_grid_thw, "
                             "video_grid_thw, attention_mask)")
        if position_ids is None and not runtime.in_graph():
            position_ids = self.compute_3d_position_ids(input_ids, inputs_embeds, image_grid_thw, video_grid_thw,
                                                        attention_mask, past_key_values, mm_token_type_ids,
                                                        second_per_grid_ts)

        outputs = self.language_model(
            attention_mask=attention_mask, position_ids=position_ids, past_key_values=past_key_values,
            inputs_embeds=inputs_embeds, use_cache=use_cache, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states, return_dict=True, cache_position=cache_position)
        return model_output(MultimodalBaseModelOutputWithPast, {
            "last_hidden_state": outputs["last_hidden_state"],
            "past_key_values": outputs.get("past_key_values"),
            "hidden_states": outputs.get("hidden_states"),
            "attentions": outputs.get("attentions"),
            "image_outputs": encoded.get("image"),
            "video_outputs": encoded.get("video"),
        }, return_dict)


class Qwen2VLForConditionalGeneration(Qwen2VLPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.language_model.embed_tokens.weight"}
    _base_class = Qwen2VLModel
    # vision inputs are consumed by the prefill; the compiled decode steps see token ids and positions only
    _prefill_only_inputs = ("pixel_values", "pixel_values_videos", "mm_encoder_outputs")
    _multimodal_inputs = ("pixel_values", "pixel_values_videos", "image_grid_thw", "video_grid_thw",
                          "second_per_grid_ts", "mm_token_type_ids", "mm_encoder_outputs")

    def __init__(self, config):
        super().__init__(config)
        self.model = self._base_class(config)
        self.lm_head = Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    def get_image_features(self, pixel_values, image_grid_thw=None, **kwargs):
        return self.model.get_image_features(pixel_values, image_grid_thw, **kwargs)

    def get_video_features(self, pixel_values_videos, video_grid_thw=None, **kwargs):
        return self.model.get_video_features(pixel_values_videos, video_grid_thw, **kwargs)

    def construct(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                  inputs_embeds=None, labels=None, use_cache=None, output_attentions=None,
                  output_hidden_states=None, return_dict=None, pixel_values=None, pixel_values_videos=None,
                  image_grid_thw=None, video_grid_thw=None, mm_token_type_ids=None, cache_position=None,
                  second_per_grid_ts=None, logits_to_keep=0, mm_encoder_outputs=None, **kwargs):
        r"""
        pixel_values / pixel_values_videos: (num_patches, C * T * P * P) from HF's image / video processor.
        image_grid_thw / video_grid_thw: (num_items, 3) patch grids (tuples under jit).
        mm_token_type_ids: (B, S) 0 text, 1 image, 2 video; needed for M-RoPE when vision inputs are given.
        labels: (B, S) token ids for the next-token loss; -100 positions are ignored. Labels are shifted inside.
        logits_to_keep: if > 0, logits only for the last `logits_to_keep` positions (generation needs one).
        """
        return_dict = return_dict if return_dict is not None else True
        outputs = self.model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
            past_key_values=past_key_values, inputs_embeds=inputs_embeds, use_cache=use_cache,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states, return_dict=True,
            pixel_values=pixel_values, pixel_values_videos=pixel_values_videos, image_grid_thw=image_grid_thw,
            video_grid_thw=video_grid_thw, mm_token_type_ids=mm_token_type_ids, cache_position=cache_position,
            second_per_grid_ts=second_per_grid_ts, mm_encoder_outputs=mm_encoder_outputs)
        hidden_states = outputs["last_hidden_state"]
        if logits_to_keep > 0:
            hidden_states = hidden_states[:, -logits_to_keep:, :]
        logits = self.lm_head(hidden_states)
        loss = None
        if labels is not None:
            loss = causal_lm_loss(logits, labels, self.config.text_config.vocab_size, kwargs.get("num_items_in_batch"))
        return model_output(MultimodalCausalLMOutputWithPast, {
            "loss": loss,
            "logits": logits,
            "past_key_values": outputs.get("past_key_values"),
            "hidden_states": outputs.get("hidden_states"),
            "attentions": outputs.get("attentions"),
            "image_outputs": outputs.get("image_outputs"),
            "video_outputs": outputs.get("video_outputs"),
        }, return_dict)

    # -- generation ------------------------------------------------------------------------------------------------

    def _generation_position_ids(self, input_ids, attention_mask, position_ids, model_kwargs):
        """generate()'s (B, L) positions: text positions + the M-RoPE delta of each row, so that the decode steps
        (which extend them by one per token) feed HF's positions. The prefill itself recomputes 3-D indices."""
        grids = model_kwargs.get("image_grid_thw") is not None or model_kwargs.get("video_grid_thw") is not None
        if position_ids is None or not grids or model_kwargs.get("mm_token_type_ids") is None:
            return position_ids
        _, deltas = self.model.get_rope_index(
            input_ids, model_kwargs["mm_token_type_ids"], model_kwargs.get("image_grid_thw"),
            model_kwargs.get("video_grid_thw"), attention_mask,
            second_per_grid_ts=model_kwargs.get("second_per_grid_ts"))
        return position_ids + deltas.asnumpy()

    def _prefill_inputs_embeds(self, input_ids, attention_mask, model_kwargs):
        """generate()'s prompt embeddings with the images / videos merged in and their M-RoPE positions (3, B, S)
        (PyNative, `rope_deltas` stored); a compiled step prefills them."""
        kw = dict(model_kwargs)
        if kw.get("mm_encoder_outputs") is None:
            # the vision transformer runs compiled, one graph per patch grid (repeated image sizes reuse it)
            encoded = {}
            for modality, pixels_key, grid_key in (("image", "pixel_values", "image_grid_thw"),
                                                   ("video", "pixel_values_videos", "video_grid_thw")):
                if kw.get(pixels_key) is not None:
                    features = self._compiled_visual_features(kw.pop(pixels_key), kw.get(grid_key))
                    encoded[modality] = {"pooler_output": (features,)}
            kw["mm_encoder_outputs"] = encoded or None
        embeds = self.get_input_embeddings()(input_ids)
        embeds, _ = self.model.merge_visual_features(input_ids, embeds, kw.get("pixel_values"),
                                                     kw.get("pixel_values_videos"), kw.get("image_grid_thw"),
                                                     kw.get("video_grid_thw"), kw.get("mm_encoder_outputs"))
        positions = self.model.compute_3d_position_ids(
            input_ids, embeds, kw.get("image_grid_thw"), kw.get("video_grid_thw"), attention_mask,
            mm_token_type_ids=kw.get("mm_token_type_ids"), second_per_grid_ts=kw.get("second_per_grid_ts"))
        return embeds, positions

    def _compiled_visual_features(self, pixel_values, grid_thw):
        """The vision transformer's merged features (tokens, text hidden size) of `pixel_values`, through a graph
        compiled for the patch grid `grid_thw` (`run_compiled_part`)."""
        if grid_thw is None:
            raise ValueError("pixel_values / pixel_values_videos need their patch grids (image_grid_thw / "
                             "video_grid_thw, (num_items, 3) as the processor returns them)")
        visual = self.model.visual

        def features(pixels, grid):
            return visual(pixels.astype(visual.dtype), grid_thw=grid, return_dict=True)["pooler_output"]

        return run_compiled_part(self, "visual", features, visual, pixel_values, grid_tuple(grid_thw))

    def _expand_generation_kwargs(self, model_kwargs, expand, input_ids):
        """Beams/return sequences repeat each row's own images and videos (patch rows, grids) as a group."""
        kwargs = dict(model_kwargs)
        merge = self.config.vision_config.spatial_merge_size ** 2
        ids = _as_numpy(input_ids)
        for pixels_key, grid_key, token_id, extra in (
                ("pixel_values", "image_grid_thw", self.config.image_token_id, None),
                ("pixel_values_videos", "video_grid_thw", self.config.video_token_id, "second_per_grid_ts")):
            grid = grid_tuple(kwargs.get(grid_key))
            if grid is None:
                continue
            tokens_per_row = (ids == token_id).sum(1)
            item_tokens = [t * h * w // merge for t, h, w in grid]
            item_rows = [t * h * w for t, h, w in grid]
            starts = np.concatenate([[0], np.cumsum(item_rows)])
            owner, row, used = [], 0, 0
            for n in item_tokens:
                while row < len(tokens_per_row) and used >= tokens_per_row[row]:
                    row, used = row + 1, 0
                owner.append(row)
                used += n
            order = [i for r in range(len(tokens_per_row)) for _ in range(expand)
                     for i in range(len(grid)) if owner[i] == r]
            pixels = kwargs.get(pixels_key)
            if pixels is not None:
                pixels = _as_numpy(pixels)
                pixels = np.concatenate([pixels[starts[i]:starts[i + 1]] for i in order], 0)
                kwargs[pixels_key] = Tensor(pixels)
            kwargs[grid_key] = Tensor(np.array([grid[i] for i in order], np.int64))
            if extra is not None and kwargs.get(extra) is not None:
                kwargs[extra] = Tensor(_as_numpy(kwargs[extra])[order])
        handled = ("pixel_values", "pixel_values_videos", "image_grid_thw", "video_grid_thw", "second_per_grid_ts")
        rest = super()._expand_generation_kwargs({k: v for k, v in kwargs.items() if k not in handled}, expand,
                                                 input_ids)
        rest.update({k: kwargs[k] for k in handled if k in kwargs})
        return rest

    def prepare_inputs_for_generation(self, input_ids, past_key_values=None, attention_mask=None,
                                      inputs_embeds=None, cache_position=None, position_ids=None, use_cache=True,
                                      is_first_iteration=False, **kwargs):
        multimodal = {k: kwargs.pop(k, None) for k in self._multimodal_inputs}
        inputs = super().prepare_inputs_for_generation(
            input_ids, past_key_values=past_key_values, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
            cache_position=cache_position, position_ids=position_ids, use_cache=use_cache,
            is_first_iteration=is_first_iteration, **kwargs)
        if is_first_iteration or not use_cache:
            inputs.update(multimodal)
            if multimodal["image_grid_thw"] is not None or multimodal["video_grid_thw"] is not None:
                # the prefill computes its own 3-D indices (get_rope_index); later steps use text + delta
                inputs["position_ids"] = None
        return inputs


__all__ = ["Qwen2VLForConditionalGeneration", "Qwen2VLModel", "Qwen2VLPreTrainedModel", "Qwen2VLTextModel"]
