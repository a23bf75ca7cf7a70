"""IDEFICS (v1) on MindSpore: HF's `modeling_idefics.py` class names, checkpoint keys, forward signature and outputs.

A Llama-style decoder whose text reads images through gated cross-attention blocks (Flamingo): before every
`cross_layer_interval`-th decoder layer, a `IdeficsGatedCrossAttentionLayer` lets each token attend to the images its
`image_attention_mask` row allows, and adds the result scaled by tanh of a learned gate (`alpha_*`). Images come as
`pixel_values` (through the CLIP-like vision tower, `vision.py`), as the tower's output (`image_encoder_embeddings`) or,
with `use_resampler`, as the Perceiver resampler's output (`perceiver_embeddings`, `perceiver.py`).

The token embedding and the LM head are "decoupled": `additional_vocab_size` extra rows live in their own parameters
(`additional_embedding`, `additional_fc`), which stay trainable while the `freeze_*` config options freeze the rest,
with HF's semantics (parameters get `requires_grad=False`, so `trainable_params()` leaves them out).
"""

import logging
from dataclasses import dataclass
from typing import Any, Optional, Tuple

import mindspore as ms
from mindspore import Tensor, nn, ops
from mindspore.common.initializer import Normal
from transformers import IdeficsConfig

from ...backend import functional as F
from ...backend import runtime
from ... import tensor_interop
from ...backend.layers import Embedding, LayerNorm, Linear, new_parameter
from ...cache_utils import DynamicCache
from ...generation import GenerationMixin
from ...loss_utils import causal_lm_loss
from ...masking_utils import create_causal_mask
from ...modeling_layers import GradientCheckpointingLayer
from ...modeling_outputs import BaseModelOutputWithPooling, ModelOutput, model_output
from ...modeling_rope_utils import compute_rope_parameters
from ...modeling_utils import PreTrainedModel, init_parameter
from .perceiver import IdeficsPerceiverResampler
from .vision import IdeficsVisionEmbeddings, IdeficsVisionTransformer

logger = logging.getLogger(__name__)
_WARNED = set()


class _ImageHiddenStates:
    @property
    def image_hidden_states(self):
        """Deprecated in HF 5 (kept as an alias): `image_outputs.pooler_output`."""
        if "image_hidden_states" not in _WARNED:
            _WARNED.add("image_hidden_states")
            logger.warning("`image_hidden_states` is deprecated and will return a list of all hidden states per "
                           "layer from v5.30; Use `out.image_outputs.pooler_output` to obtain pooled features.")
        return self.image_outputs.get("pooler_output") if self.image_outputs is not None else None


@dataclass
class IdeficsBaseModelOutputWithPast(_ImageHiddenStates, ModelOutput):
    last_hidden_state: Any = None
    past_key_values: Any = None
    hidden_states: Optional[Tuple[Any, ...]] = None
    attentions: Optional[Tuple[Any, ...]] = None
    image_outputs: Any = None


@dataclass
class IdeficsCausalLMOutputWithPast(_ImageHiddenStates, ModelOutput):
    loss: Any = None
    logits: Any = None
    past_key_values: Any = None
    hidden_states: Optional[Tuple[Any, ...]] = None
    attentions: Optional[Tuple[Any, ...]] = None
    image_outputs: Any = None


_FREEZE_EXCEPTIONS = {"LayerNorm": LayerNorm, "Linear": Linear, "Embedding": Embedding}


def freeze_model(model, module_exceptions=()):
    """HF's `freeze_model`: every parameter of `model` stops requiring gradients, except those held directly by a
    cell of one of the `module_exceptions` kinds ("LayerNorm", "Linear", "Embedding")."""
    kinds = tuple(_FREEZE_EXCEPTIONS[m] for m in module_exceptions)
    for _, cell in model.cells_and_names():
        trainable = bool(kinds) and isinstance(cell, kinds)
        for param in cell.get_parameters(expand=False):
            param.requires_grad = trainable
    return model


class IdeficsDecoupledEmbedding(Embedding):
    """An embedding whose `num_additional_embeddings` rows past `num_embeddings` live in `additional_embedding`
    (always trainable); `partially_freeze` freezes the regular `weight`. Without additional rows it is a plain
    lookup (as in HF, the padding row is not cut from the gradient)."""

    def __init__(self, num_embeddings, num_additional_embeddings, embedding_dim, partially_freeze=False,
                 padding_idx=None, dtype=None):
        if padding_idx is not None and padding_idx > num_embeddings:
            raise ValueError(f"padding_idx must be within num_embeddings. Got {padding_idx} and {num_embeddings}")
        super().__init__(num_embeddings, embedding_dim, padding_idx, dtype)
        self.num_additional_embeddings = num_additional_embeddings
        self.partially_freeze = partially_freeze
        if partially_freeze:
            self.weight.requires_grad = False
        if num_additional_embeddings > 0:
            self.additional_embedding = Embedding(num_additional_embeddings, embedding_dim, dtype=dtype)

    def construct(self, input_ids):
        if self.num_additional_embeddings == 0:
            return F.embedding(input_ids, self.weight)
        # both tables are read with in-range ids (the other table's positions read row 0) and merged by position
        additional = input_ids >= self.num_embeddings
        zero = ops.zeros((), input_ids.dtype)
        regular = F.embedding(F.where(additional, zero, input_ids), self.weight)
        extra = self.additional_embedding(F.where(additional, input_ids - self.num_embeddings, zero))
        return F.where(additional.reshape(additional.shape + (1,)), extra, regular)

    def extend_repr(self):
        return (f"num_embeddings={self.num_embeddings}, num_additional_embeddings={self.num_additional_embeddings}, "
                f"embedding_dim={self.embedding_dim}, partially_freeze={self.partially_freeze}")


class IdeficsDecoupledLinear(Linear):
    """A linear layer with `out_additional_features` extra outputs in `additional_fc` (always trainable), appended
    after the regular ones; `partially_freeze` freezes the regular `weight` (and bias)."""

    def __init__(self, in_features, out_features, out_additional_features=0, bias=True, partially_freeze=True,
                 dtype=None):
        super().__init__(in_features, out_features, bias, dtype)
        self.out_additional_features = out_additional_features
        self.partially_freeze = partially_freeze
        if partially_freeze:
            self.weight.requires_grad = False
            if bias:
                self.bias.requires_grad = False
        if out_additional_features > 0:
            self.additional_fc = Linear(in_features, out_additional_features, bias, dtype)

    def construct(self, x):
        output = F.linear(x, self.weight, self.bias)
        if self.out_additional_features > 0:
            output = F.cat([output, self.additional_fc(x)], -1)
        return output

    def extend_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, out_additional_features="
                f"{self.out_additional_features}, bias={self.bias is not None}, partially_freeze="
                f"{self.partially_freeze}")


class IdeficsRMSNorm(nn.Cell):
    def __init__(self, hidden_size, eps=1e-6):
        super().__init__()
        self.weight = new_parameter((hidden_size,), "ones")
        self.variance_epsilon = eps

    def construct(self, hidden_states):
        return F.rms_norm(hidden_states, self.weight, self.variance_epsilon)


class IdeficsRotaryEmbedding(nn.Cell):
    """cos/sin tables for the given positions; the frequencies are a constant, not a checkpoint weight."""

    def __init__(self, config: IdeficsConfig):
        super().__init__()
        inv_freq, self.attention_scaling = compute_rope_parameters(config)
        self.inv_freq = Tensor(inv_freq)

    def construct(self, x, position_ids):
        freqs = position_ids.reshape(position_ids.shape + (1,)).astype(ms.float32) * self.inv_freq
        emb = F.cat([freqs, freqs], -1)
        cos, sin = emb.cos(), emb.sin()
        if self.attention_scaling != 1.0:
            cos, sin = cos * self.attention_scaling, sin * self.attention_scaling
        return cos.astype(x.dtype), sin.astype(x.dtype)


def rotate_half(x):
    """Rotates half the hidden dims of the input."""
    half = x.shape[-1] // 2
    return F.cat([-x[..., half:], x[..., :half]], -1)


def apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1):
    """RoPE on (B, H, S, D) queries and keys; cos/sin are (B, S, D), broadcast over the heads."""
    cos = cos.expand_dims(unsqueeze_dim)
    sin = sin.expand_dims(unsqueeze_dim)
    return (q * cos) + (rotate_half(q) * sin), (k * cos) + (rotate_half(k) * sin)


class IdeficsMLP(nn.Cell):
    def __init__(self, hidden_size, intermediate_size, hidden_act):
        super().__init__()
        self.gate_proj = Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = Linear(intermediate_size, hidden_size, bias=False)
        self.up_proj = Linear(hidden_size, intermediate_size, bias=False)
        self.act_fn = F.get_activation(hidden_act)

    def construct(self, x):
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class IdeficsAttention(nn.Cell):
    """Multi-headed attention: causal self-attention with RoPE and a cache, or (`is_cross_attention`) attention from
    the text to the image states, whose keys/values are projected from the vision embedding size."""

    def __init__(self, hidden_size, num_heads, dropout=0.0, is_cross_attention=False, config=None,
                 qk_layer_norms=False, layer_idx=None):
        super().__init__()
        self.config = config
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.dropout = dropout
        self.scaling = self.head_dim ** -0.5
        self.layer_idx = layer_idx
        if (self.head_dim * num_heads) != self.hidden_size:
            raise ValueError(f"hidden_size must be divisible by num_heads (got `hidden_size`: {self.hidden_size} and "
                             f"`num_heads`: {num_heads}).")
        self.is_cross_attention = is_cross_attention
        kv_input_dim = self.hidden_size
        if is_cross_attention and hasattr(config.vision_config, "embed_dim"):
            kv_input_dim = config.vision_config.embed_dim
        self.q_proj = Linear(self.hidden_size, num_heads * self.head_dim, bias=False)
        self.k_proj = Linear(kv_input_dim, num_heads * self.head_dim, bias=False)
        self.v_proj = Linear(kv_input_dim, num_heads * self.head_dim, bias=False)
        self.o_proj = Linear(num_heads * self.head_dim, hidden_size, bias=False)
        self.qk_layer_norms = qk_layer_norms
        if self.qk_layer_norms:
            self.q_layer_norm = IdeficsRMSNorm(self.head_dim, eps=config.rms_norm_eps)
            self.k_layer_norm = IdeficsRMSNorm(self.head_dim, eps=config.rms_norm_eps)

    def construct(self, hidden_states, key_value_states=None, attention_mask=None, position_embeddings=None,
                  past_key_values=None, cache_position=None):
        is_cross_attention = self.is_cross_attention or key_value_states is not None
        bsz, q_len = hidden_states.shape[:2]

        def heads(x, length):
            return x.reshape(bsz, length, self.num_heads, self.head_dim).swapaxes(1, 2)

        query_states = heads(self.q_proj(hidden_states), q_len)
        if is_cross_attention:
            kv_len = key_value_states.shape[1]
            key_states = heads(self.k_proj(key_value_states), kv_len)
            value_states = heads(self.v_proj(key_value_states), kv_len)
        else:
            key_states = heads(self.k_proj(hidden_states), q_len)
            value_states = heads(self.v_proj(hidden_states), q_len)
            cos, sin = position_embeddings
            query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin)
            if past_key_values is not None:
                key_states, value_states = past_key_values.update(key_states, value_states, self.layer_idx,
                                                                  {"cache_position": cache_position})
        # HF normalises after the cache update (the cache keeps the keys before their norm)
        if self.qk_layer_norms:
            query_states = self.q_layer_norm(query_states)
            key_states = self.k_layer_norm(key_states)

        attn_output, attn_weights = F.attention(query_states, key_states, value_states, attn_mask=attention_mask,
                                                scale=self.scaling, dropout_p=self.dropout if self.training else 0.0,
                                                training=self.training)
        attn_output = attn_output.swapaxes(1, 2).reshape(bsz, q_len, -1)
        return self.o_proj(attn_output), attn_weights


class IdeficsDecoderLayer(GradientCheckpointingLayer):
    def __init__(self, config: IdeficsConfig, layer_idx=None):
        super().__init__()
        self.hidden_size = config.hidden_size
        self.self_attn = IdeficsAttention(hidden_size=self.hidden_size, num_heads=config.num_attention_heads,
                                          dropout=config.dropout, config=config, layer_idx=layer_idx)
        self.mlp = IdeficsMLP(self.hidden_size, config.intermediate_size, config.hidden_act)
        self.input_layernorm = IdeficsRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = IdeficsRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.dropout = config.dropout

    def construct(self, hidden_states, attention_mask=None, position_embeddings=None, past_key_values=None,
                  cache_position=None):
        residual = hidden_states
        hidden_states, attn_weights = self.self_attn(self.input_layernorm(hidden_states),
                                                     attention_mask=attention_mask,
                                                     position_embeddings=position_embeddings,
                                                     past_key_values=past_key_values, cache_position=cache_position)
        hidden_states = residual + F.dropout(hidden_states, self.dropout, self.training)
        residual = hidden_states
        hidden_states = self.mlp(self.post_attention_layernorm(hidden_states))
        return residual + F.dropout(hidden_states, self.dropout, self.training), attn_weights


_ALPHA_INITIALIZERS = {"zeros": "zeros", "ones": "ones", "normal": "normal", "gaussian": "normal", "random": "normal"}


class IdeficsGatedCrossAttentionLayer(GradientCheckpointingLayer):
    """Cross-attention to the images and an MLP, each added to the residual stream scaled by tanh(alpha): with the
    default zero alphas a pretrained text model starts unchanged. Tokens that may see no image get no
    cross-attention output (`cross_attention_gate`)."""

    def __init__(self, config: IdeficsConfig, layer_idx=None):
        super().__init__()
        self.hidden_size = config.hidden_size
        self.cross_attn = IdeficsAttention(hidden_size=self.hidden_size, num_heads=config.num_attention_heads,
                                           is_cross_attention=True, dropout=config.dropout, config=config,
                                           qk_layer_norms=config.qk_layer_norms, layer_idx=layer_idx)
        self.mlp = IdeficsMLP(self.hidden_size, config.intermediate_size, config.hidden_act)
        self.input_layernorm = IdeficsRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = IdeficsRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.dropout = config.dropout
        if config.alpha_initializer not in _ALPHA_INITIALIZERS:
            raise NotImplementedError(f"Alpha initialization scheme {config.alpha_initializer} not yet implemented!")
        if config.alpha_type == "vector":
            shape = (1, 1, self.hidden_size)
        elif config.alpha_type == "float":
            shape = (1,)
        else:
            raise ValueError(f"Unknown value for `alpha_type` ({config.alpha_type})")
        init = _ALPHA_INITIALIZERS[config.alpha_initializer]
        if init == "normal":
            init = Normal(config.alphas_initializer_range)
        self.alpha_cross_attn = new_parameter(shape, init)
        self.alpha_dense = new_parameter(shape, init)

    def construct(self, hidden_states, attention_mask=None, image_hidden_states=None, image_attention_mask=None,
                  cross_attention_gate=None, past_key_values=None):
        r"""
        image_hidden_states: (B, image positions, vision embed_dim) the images' states.
        image_attention_mask: (B, 1, S, image positions) additive mask.
        cross_attention_gate: (B, S) 1.0 for tokens that see at least one image, 0.0 otherwise.
        """
        if image_hidden_states is None:
            raise ValueError("`image_hidden_states` is required for Idefics cross attention module which are visual "
                             "features to be conditioned on.")
        if cross_attention_gate is None:
            raise ValueError("`cross_attention_gate` is required for Idefics cross attention module to zero-out the "
                             "cross-attention hidden_states attending to no images.")
        if past_key_values is not None:
            raise NotImplementedError("Past key value states are not implemented for Idefics cross attention module.")
        residual = hidden_states
        hidden_states, _ = self.cross_attn(self.input_layernorm(hidden_states), key_value_states=image_hidden_states,
                                           attention_mask=image_attention_mask)
        hidden_states = F.dropout(hidden_states, self.dropout, self.training)
        # a token that sees no image softmaxes over fully masked scores: its output is dropped, not used
        sees_image = (cross_attention_gate != 0).reshape(cross_attention_gate.shape + (1,))
        hidden_states = F.where(sees_image, hidden_states, ops.zeros((), hidden_states.dtype))
        hidden_states = residual + F.tanh(self.alpha_cross_attn) * hidden_states

        residual = hidden_states
        hidden_states = self.mlp(self.post_attention_layernorm(hidden_states))
        hidden_states = F.dropout(hidden_states, self.dropout, self.training)
        return residual + F.tanh(self.alpha_dense) * hidden_states


class IdeficsPreTrainedModel(PreTrainedModel):
    config_class = IdeficsConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["IdeficsDecoderLayer", "IdeficsGatedCrossAttentionLayer", "IdeficsVisionEncoderLayer"]

    def _init_weights(self, cell):
        super()._init_weights(cell)
        if isinstance(cell, IdeficsRMSNorm):
            init_parameter(cell.weight, "ones")
        elif isinstance(cell, IdeficsVisionEmbeddings):
            init_parameter(cell.class_embedding, Normal(1.0))
        elif isinstance(cell, IdeficsGatedCrossAttentionLayer):
            init = _ALPHA_INITIALIZERS[self.config.alpha_initializer]
            if init == "normal":
                init = Normal(self.config.alphas_initializer_range)
            init_parameter(cell.alpha_cross_attn, init)
            init_parameter(cell.alpha_dense, init)
        elif isinstance(cell, IdeficsPerceiverResampler):
            init_parameter(cell.latents, Normal(1.0))


def _image_inputs_check(pixel_values, image_encoder_embeddings, perceiver_embeddings):
    if sum(x is None for x in (pixel_values, image_encoder_embeddings, perceiver_embeddings)) != 2:
        raise ValueError("Exactly 1 of pixel_values, image_encoder_embeddings or perceiver_embeddings has to be "
                         "not-None.")


class IdeficsModel(IdeficsPreTrainedModel):
    """The decoder (`config.num_hidden_layers` [`IdeficsDecoderLayer`]s with gated cross-attention blocks), the vision
    tower and the optional Perceiver resampler."""

    def __init__(self, config: IdeficsConfig):
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        self.embed_tokens = IdeficsDecoupledEmbedding(
            num_embeddings=config.vocab_size, num_additional_embeddings=config.additional_vocab_size,
            embedding_dim=config.hidden_size, partially_freeze=config.freeze_text_layers,
            padding_idx=self.padding_idx)
        self.image_size = config.vision_config.image_size
        self.vision_config = config.vision_config
        self.vision_model = IdeficsVisionTransformer(config.vision_config)
        if config.use_resampler:
            perceiver_config = config.perceiver_config
            self.perceiver_resampler = IdeficsPerceiverResampler(
                config, config.vision_config.embed_dim, perceiver_config.resampler_depth,
                perceiver_config.resampler_n_heads, perceiver_config.resampler_head_dim,
                perceiver_config.resampler_n_latents)
        self.layers = nn.CellList([IdeficsDecoderLayer(config, layer_idx=i) for i in range(config.num_hidden_layers)])
        self.cross_layer_interval = config.cross_layer_interval
        num_cross_layers = config.num_hidden_layers // self.cross_layer_interval
        self.gated_cross_attn_layers = nn.CellList(
            [IdeficsGatedCrossAttentionLayer(config, layer_idx=i) for i in range(num_cross_layers)])
        self.gradient_checkpointing = False
        self.norm = IdeficsRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = IdeficsRotaryEmbedding(config)
        self.post_init()
        self.freeze_relevant_params(config)

    def freeze_relevant_params(self, config=None):
        config = config if config is not None else self.config
        if config.freeze_text_layers:
            self.freeze_text_layers(config.freeze_text_module_exceptions)
        if config.freeze_vision_layers:
            freeze_model(self.vision_model, module_exceptions=config.freeze_vision_module_exceptions)

    def freeze_text_layers(self, module_exceptions=()):
        for module in (self.layers, self.norm):
            freeze_model(module, module_exceptions=module_exceptions)

    def freeze_vision_layers(self, module_exceptions=()):
        freeze_model(self.vision_model, module_exceptions=module_exceptions)

    def get_input_embeddings(self):
        return self.embed_tokens

    def set_input_embeddings(self, value):
        self.embed_tokens = value

    def construct(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                  inputs_embeds=None, pixel_values=None, image_encoder_embeddings=None, perceiver_embeddings=None,
                  image_attention_mask=None, use_cache=None, output_attentions=None, output_hidden_states=None,
                  interpolate_pos_encoding=False, return_dict=None, cache_position=None, **kwargs):
        r"""
        pixel_values: (B, num_images, C, H, W) images, one slot per image column of `image_attention_mask`.
        image_encoder_embeddings: (B, num_images, P, D) or (B * num_images, P, D), the vision tower's output.
        perceiver_embeddings: (B * num_images, n_latents, D), the resampler's output (needs `use_resampler`).
        image_attention_mask: (B, S, num_images) 1 where a token may attend to an image.
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
        batch_size, seq_length = inputs_embeds.shape[:2]

        if use_cache and past_key_values is None and not runtime.in_graph():
            past_key_values = DynamicCache(config=self.config)
        past_seen = past_key_values.get_seq_length() if past_key_values is not None else 0
        if cache_position is None:
            cache_position = F.arange(past_seen, past_seen + seq_length, dtype=ms.int64)
        if position_ids is None:
            if attention_mask is not None:
                # positions count the real tokens (left padding); HF puts the padding slots at position 1
                mask = attention_mask.astype(ms.int64)
                position_ids = F.cumsum(mask, -1) - 1
                position_ids = F.where(mask == 0, ops.ones((), ms.int64), position_ids)[:, -seq_length:]
            else:
                position_ids = cache_position[None, :]

        _image_inputs_check(pixel_values, image_encoder_embeddings, perceiver_embeddings)
        if pixel_values is not None:
            pixel_values = pixel_values.reshape((-1,) + tuple(pixel_values.shape[2:])).astype(self.dtype)
            image_outputs = self.vision_model(pixel_values=pixel_values,
                                              interpolate_pos_encoding=interpolate_pos_encoding)
            image_hidden_states = image_outputs["last_hidden_state"]
        else:
            image_hidden_states = perceiver_embeddings
            if image_encoder_embeddings is not None:
                image_hidden_states = image_encoder_embeddings
                if image_hidden_states.ndim == 4:
                    image_hidden_states = image_hidden_states.reshape((-1,) + tuple(image_hidden_states.shape[2:]))
            image_outputs = model_output(BaseModelOutputWithPooling, {"last_hidden_state": image_hidden_states})

        if self.config.use_resampler:
            if perceiver_embeddings is None:
                image_hidden_states = self.perceiver_resampler(image_hidden_states)
        elif perceiver_embeddings is not None:
            raise ValueError("If `perceiver_embeddings` are passed, use_resampler should be True")

        if image_attention_mask is None:
            raise ValueError("IDEFICS needs `image_attention_mask` (batch, sequence, num_images): 1 where a token may "
                             "attend to an image (IdeficsProcessor returns it)")
        # (B, S, num_images) -> one (B, 1, S, num_images * image_seq_len) additive mask over every image position
        image_seq_len = image_hidden_states.shape[1]
        num_images = image_attention_mask.shape[-1]
        image_hidden_states = image_hidden_states.reshape(-1, num_images * image_seq_len,
                                                          image_hidden_states.shape[2])
        sees = image_attention_mask != 0
        rows = sees.shape[1]
        expanded = ops.broadcast_to(sees.reshape(batch_size, rows, num_images, 1),
                                    (batch_size, rows, num_images, image_seq_len))
        dtype = image_hidden_states.dtype
        image_mask = F.where(expanded.reshape(batch_size, 1, rows, num_images * image_seq_len),
                             ops.zeros((), dtype), F.full((), F.finfo_min(dtype), dtype))
        # a token whose row allows no image gets nothing from the cross-attention
        cross_attention_gate = (sees.astype(ms.float32).sum(-1) > 0).astype(self.dtype)

        if past_key_values is not None and past_key_values.get_max_cache_shape() is not None:
            kv_length = past_key_values.get_max_cache_shape()
        else:
            kv_length = past_seen + seq_length
        causal_mask = create_causal_mask(attention_mask, batch_size, cache_position, kv_length, inputs_embeds.dtype)

        hidden_states = inputs_embeds
        position_embeddings = self.rotary_emb(hidden_states, position_ids)
        all_hidden_states = () if output_hidden_states else None
        all_attentions = () if output_attentions else None
        # as HF records them: the input of the first decoder layer (after its cross-attention block), then each
        # decoder layer's output, the last one after the final norm
        for idx, decoder_layer in enumerate(self.layers):
            if idx % self.cross_layer_interval == 0:
                cross_attn_block = self.gated_cross_attn_layers[idx // self.cross_layer_interval]
                hidden_states = cross_attn_block(hidden_states, causal_mask, image_hidden_states,
                                                 image_attention_mask=image_mask,
                                                 cross_attention_gate=cross_attention_gate)
            if output_hidden_states and idx == 0:
                all_hidden_states += (hidden_states,)
            hidden_states, attn_weights = decoder_layer(hidden_states, attention_mask=causal_mask,
                                                        position_embeddings=position_embeddings,
                                                        past_key_values=past_key_values,
                                                        cache_position=cache_position)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            if output_attentions:
                all_attentions += (attn_weights,)

        hidden_states = self.norm(hidden_states)
        if output_hidden_states:
            all_hidden_states = all_hidden_states[:-1] + (hidden_states,)
        return model_output(IdeficsBaseModelOutputWithPast, {
            "last_hidden_state": hidden_states,
            "past_key_values": past_key_values if use_cache else None,
            "hidden_states": all_hidden_states,
            "attentions": all_attentions,
            "image_outputs": image_outputs,
        }, return_dict)


class IdeficsForVisionText2Text(IdeficsPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    _supports_static_cache = True
    # the prompt step runs in PyNative with the images; each compiled decode step then gets the images' states
    # (HF's `image_hidden_states`, no pixels) and the last prompt token's image mask row as graph inputs
    _prefill_only_inputs = ("pixel_values", "image_encoder_embeddings", "perceiver_embeddings")
    _decode_step_inputs = (("image_encoder_embeddings", "image_hidden_states"),
                           ("image_attention_mask", "image_attention_mask"))

    def __init__(self, config: IdeficsConfig, vision_model=None):
        super().__init__(config)
        self.model = IdeficsModel(config)
        self.lm_head = IdeficsDecoupledLinear(in_features=config.hidden_size, out_features=config.vocab_size,
                                              out_additional_features=config.additional_vocab_size, bias=False,
                                              partially_freeze=config.freeze_lm_head)
        if config.additional_vocab_size > 0:
            self._tied_weights_keys = {
                "lm_head.weight": "model.embed_tokens.weight",
                "lm_head.additional_fc.weight": "model.embed_tokens.additional_embedding.weight",
            }
        self.post_init()

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def set_input_embeddings(self, value):
        self.model.embed_tokens = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    def construct(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                  inputs_embeds=None, pixel_values=None, image_encoder_embeddings=None, perceiver_embeddings=None,
                  image_attention_mask=None, labels=None, use_cache=None, output_attentions=None,
                  output_hidden_states=None, interpolate_pos_encoding=False, return_dict=None, cache_position=None,
                  logits_to_keep=0, **kwargs):
        r"""
        pixel_values / image_encoder_embeddings / perceiver_embeddings / image_attention_mask: see `IdeficsModel`.
        labels: (B, S) token ids for the next-token loss; -100 positions are ignored. Labels are shifted inside.
        logits_to_keep: if > 0, logits only for the last `logits_to_keep` positions (generation needs one).
        """
        return_dict = return_dict if return_dict is not None else True
        outputs = self.model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
            past_key_values=past_key_values, inputs_embeds=inputs_embeds, pixel_values=pixel_values,
            image_encoder_embeddings=image_encoder_embeddings, perceiver_embeddings=perceiver_embeddings,
            image_attention_mask=image_attention_mask, use_cache=use_cache, output_attentions=output_attentions,
            output_hidden_states=output_hidden_states, interpolate_pos_encoding=interpolate_pos_encoding,
            return_dict=True, cache_position=cache_position)
        hidden_states = outputs["last_hidden_state"]
        if logits_to_keep > 0:
            hidden_states = hidden_states[:, -logits_to_keep:, :]
        logits = self.lm_head(hidden_states)

        loss = None
        if labels is not None:
            loss = causal_lm_loss(logits, labels, self.config.vocab_size, kwargs.get("num_items_in_batch"))

        return model_output(IdeficsCausalLMOutputWithPast, {
            "loss": loss,
            "logits": logits,
            "past_key_values": outputs.get("past_key_values"),
            "hidden_states": outputs.get("hidden_states"),
            "attentions": outputs.get("attentions"),
            "image_outputs": outputs.get("image_outputs"),
        }, return_dict)

    def prepare_inputs_for_generation(self, input_ids, past_key_values=None, attention_mask=None,
                                      inputs_embeds=None, cache_position=None, position_ids=None, use_cache=True,
                                      is_first_iteration=False, pixel_values=None, image_hidden_states=None,
                                      image_attention_mask=None, **kwargs):
        # HF's semantics: once a step has run, later steps read the images' states (no pixels), and each new token's
        # image mask row repeats the last one
        inputs = super().prepare_inputs_for_generation(
            input_ids, past_key_values=past_key_values, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
            cache_position=cache_position, position_ids=position_ids, use_cache=use_cache,
            is_first_iteration=is_first_iteration, **kwargs)
        if image_hidden_states is not None:
            inputs["image_encoder_embeddings"] = image_hidden_states
        else:
            inputs["pixel_values"] = pixel_values
        inputs["interpolate_pos_encoding"] = kwargs.get("interpolate_pos_encoding", False)
        image_attention_mask = tensor_interop.to_model_input("image_attention_mask", image_attention_mask)
        if image_attention_mask is not None and inputs_embeds is None:
            seq_length = inputs["input_ids"].shape[1]
            padding_length = seq_length - image_attention_mask.shape[1]
            if padding_length > 0:
                last = image_attention_mask[:, -1:]
                image_attention_mask = F.cat([image_attention_mask] + [last] * padding_length, 1)
            image_attention_mask = image_attention_mask[:, -seq_length:]
        inputs["image_attention_mask"] = image_attention_mask
        return inputs

    def _decode_step_ready(self, model_kwargs):
        # as in HF, `perceiver_embeddings` stay among the kwargs next to the image states, and the step after the
        # prompt refuses the pair: it runs in PyNative to raise that error
        return model_kwargs.get("perceiver_embeddings") is None and super()._decode_step_ready(model_kwargs)

    def _update_model_kwargs_for_generation(self, outputs, model_kwargs, use_cache=True):
        """After a step: the next token's image mask row is the last one (appended when the whole sequence is fed
        again, without a cache), and the images' states (HF: `outputs.image_outputs.last_hidden_state`) replace the
        pixels."""
        model_kwargs = dict(model_kwargs)
        image_attention_mask = tensor_interop.to_model_input("image_attention_mask",
                                                             model_kwargs.get("image_attention_mask"))
        if image_attention_mask is not None:
            last_mask = image_attention_mask[:, -1:, :]
            model_kwargs["image_attention_mask"] = last_mask if use_cache else \
                F.cat([image_attention_mask, last_mask], 1)
        image_outputs = outputs.get("image_outputs") if isinstance(outputs, dict) else None
        if image_outputs is not None:
            model_kwargs["image_hidden_states"] = image_outputs["last_hidden_state"]
        return model_kwargs


__all__ = ["IdeficsForVisionText2Text", "IdeficsModel", "IdeficsPreTrainedModel"]
