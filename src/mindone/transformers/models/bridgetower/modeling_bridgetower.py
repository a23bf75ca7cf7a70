"""BridgeTower on MindSpore: HF's `modeling_bridgetower.py` checkpoint keys, signatures and outputs.

Two uni-modal encoders — a CLIP-style vision transformer (pre-norm residual blocks with torch `nn.MultiheadAttention`
keys, QuickGELU MLP, sequence-first layout) and a RoBERTa text encoder (layers shared with models/roberta) — run side
by side. Their lower layers run alone; each of the top `config.num_hidden_layers` layers of both feeds a cross-modal
layer through a bridge ("link tower": LayerNorm of `add`, `scaled_add` or `interpolate` of the uni-modal and the
previous cross-modal states). A cross-modal layer is a BERT layer with self-attention, cross-attention to the other
modality and a feed-forward block. The pooled output concatenates the tanh poolers of both streams' first tokens.

As HF, `hidden_states` (text, image — sequence-first (L, B, D) — and cross-modal pairs) and `attentions` (the
cross-modal self-attention weights, text and image per layer) are always returned.
"""

from dataclasses import dataclass
from typing import Any, Optional, Tuple

import mindspore as ms
from mindspore import nn, ops
from mindspore.common.initializer import Constant, Normal, Zero
from transformers import BridgeTowerConfig, BridgeTowerTextConfig, BridgeTowerVisionConfig

from ...backend import functional as F
from ...backend.layers import Conv2d, Embedding, LayerNorm, Linear, new_parameter
from ...loss_utils import fixed_cross_entropy
from ...masking_utils import create_bidirectional_mask, create_causal_mask
from ...modeling_outputs import (
    BaseModelOutputWithPoolingAndCrossAttentions,
    MaskedLMOutput,
    ModelOutput,
    SequenceClassifierOutput,
    model_output,
)
from ...modeling_utils import PreTrainedModel, init_parameter
from ..roberta.modeling_roberta import (
    RobertaAttention,
    RobertaEmbeddings,
    RobertaEncoder,
    RobertaIntermediate,
    RobertaOutput,
    RobertaPooler,
)


@dataclass
class BridgeTowerModelOutput(ModelOutput):
    text_features: Any = None
    image_features: Any = None
    pooler_output: Any = None
    hidden_states: Optional[Tuple[Any, ...]] = None
    attentions: Optional[Tuple[Any, ...]] = None


@dataclass
class BridgeTowerContrastiveOutput(ModelOutput):
    loss: Any = None
    logits: Any = None
    text_embeds: Any = None
    image_embeds: Any = None
    cross_embeds: Any = None
    hidden_states: Optional[Tuple[Any, ...]] = None
    attentions: Optional[Tuple[Any, ...]] = None


def _normalize(x, eps=1e-12):
    """torch's F.normalize(x, p=2, dim=-1)."""
    return x / ops.maximum((x * x).sum(-1, keepdims=True) ** 0.5, F.full((), eps, x.dtype))


# ------------------------------------------------------------------------------------------------------------------
# vision tower
# ------------------------------------------------------------------------------------------------------------------


class BridgeTowerMultiheadAttention(nn.Cell):
    """torch's `nn.MultiheadAttention` (packed `in_proj_weight` / `in_proj_bias`, `out_proj`) on sequence-first
    inputs (L, B, D), one head per 64 channels as HF builds it. `key_padding_mask` is True where a key is ignored."""

    def __init__(self, embed_dim, num_heads):
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(f"BridgeTowerMultiheadAttention: embed_dim {embed_dim} is not divisible by num_heads "
                             f"{num_heads}")
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.head_dim = embed_dim // num_heads
        self.in_proj_weight = new_parameter((3 * embed_dim, embed_dim), "xavier_uniform")
        self.in_proj_bias = new_parameter((3 * embed_dim,), "zeros")
        self.out_proj = Linear(embed_dim, embed_dim)

    def construct(self, hidden_state, key_padding_mask=None):
        length, batch, _ = hidden_state.shape
        # (L, B, 3D) -> 3 x (B, H, L, Dh)
        qkv = F.linear(hidden_state, self.in_proj_weight, self.in_proj_bias)
        qkv = qkv.reshape(length, batch, 3, self.num_heads, self.head_dim).permute(2, 1, 3, 0, 4)
        mask = None
        if key_padding_mask is not None:
            ignored = key_padding_mask.astype(ms.bool_).reshape(batch, 1, 1, length)
            mask = ops.where(ignored, F.full((), F.finfo_min(hidden_state.dtype), hidden_state.dtype),
                             ops.zeros((), hidden_state.dtype))
        out, _ = F.attention(qkv[0], qkv[1], qkv[2], attn_mask=mask)
        out = out.permute(2, 0, 1, 3).reshape(length, batch, self.embed_dim)
        return self.out_proj(out)


class BridgeTowerMLP(nn.Cell):
    """HF's `mlp` ModuleDict: c_fc -> QuickGELU -> c_proj."""

    def __init__(self, hidden_size):
        super().__init__()
        self.c_fc = Linear(hidden_size, hidden_size * 4)
        self.c_proj = Linear(hidden_size * 4, hidden_size)

    def construct(self, hidden_state):
        return self.c_proj(F.quick_gelu(self.c_fc(hidden_state)))


class BridgeTowerResidualAttention(nn.Cell):
    def __init__(self, config):
        super().__init__()
        self.attn = BridgeTowerMultiheadAttention(config.hidden_size, config.hidden_size // 64)
        self.ln_1 = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = BridgeTowerMLP(config.hidden_size)
        self.ln_2 = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def construct(self, hidden_state, attention_mask=None):
        residual_state = hidden_state + self.attn(self.ln_1(hidden_state), attention_mask)
        return residual_state + self.mlp(self.ln_2(residual_state))


class BridgeTowerTransformer(nn.Cell):
    def __init__(self, config):
        super().__init__()
        self.hidden_size = config.hidden_size
        self.num_hidden_layers = config.num_hidden_layers
        count = self.num_hidden_layers - 1 if config.remove_last_layer else self.num_hidden_layers
        self.resblocks = nn.CellList([BridgeTowerResidualAttention(config) for _ in range(count)])
        self.stop_gradient = config.stop_gradient

    def construct(self, hidden_state, attention_mask=None):
        hidden_states = []
        for block in self.resblocks:
            hidden_state = block(hidden_state, attention_mask)
            hidden_states.append(ops.stop_gradient(hidden_state) if self.stop_gradient else hidden_state)
        return hidden_states


class BridgeTowerVisionEmbeddings(nn.Cell):
    """CLIP's: class token + patch embeddings (no bias) + learned positions, optionally resized (bicubic)."""

    def __init__(self, config: BridgeTowerVisionConfig):
        super().__init__()
        self.config = config
        self.embed_dim = config.hidden_size
        self.image_size = config.image_size
        self.patch_size = config.patch_size
        self.class_embedding = new_parameter((self.embed_dim,), Normal(1.0))
        self.patch_embedding = Conv2d(config.num_channels, self.embed_dim, kernel_size=self.patch_size,
                                      stride=self.patch_size, bias=False)
        self.num_patches = (self.image_size // self.patch_size) ** 2
        self.num_positions = self.num_patches + 1
        self.position_embedding = Embedding(self.num_positions, self.embed_dim)

    def interpolate_pos_encoding(self, embeddings, height, width):
        num_patches = embeddings.shape[1] - 1
        num_positions = self.num_positions - 1
        if num_patches == num_positions and height == width:
            return self.position_embedding.weight[None]
        table = self.position_embedding.weight[None]
        dim = embeddings.shape[-1]
        side = int(num_positions ** 0.5)
        patch_table = table[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2)
        patch_table = F.interpolate(patch_table, (height // self.patch_size, width // self.patch_size),
                                    mode="bicubic", align_corners=False)
        return F.cat([table[:, :1], patch_table.permute(0, 2, 3, 1).reshape(1, -1, dim)], 1)

    def construct(self, pixel_values, interpolate_pos_encoding=False):
        batch_size, _, height, width = pixel_values.shape
        if not interpolate_pos_encoding and (height != self.image_size or width != self.image_size):
            raise ValueError(f"Input image size ({height}*{width}) doesn't match model "
                             f"({self.image_size}*{self.image_size}).")
        patch_embeds = self.patch_embedding(pixel_values.astype(self.patch_embedding.weight.dtype))
        patch_embeds = patch_embeds.reshape(batch_size, self.embed_dim, -1).swapaxes(1, 2)
        class_embeds = ops.broadcast_to(self.class_embedding.reshape(1, 1, -1), (batch_size, 1, self.embed_dim))
        embeddings = F.cat([class_embeds.astype(patch_embeds.dtype), patch_embeds], 1)
        if interpolate_pos_encoding:
            return embeddings + self.interpolate_pos_encoding(embeddings, height, width)
        return embeddings + self.position_embedding.weight[None]


class BridgeTowerVisionTransformer(nn.Cell):
    def __init__(self, config):
        super().__init__()
        self.embeddings = BridgeTowerVisionEmbeddings(config)
        self.ln_pre = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.transformer = BridgeTowerTransformer(config)
        self.ln_post = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.share_layernorm = config.share_layernorm
        if not config.share_layernorm:
            self.ln_separate = nn.CellList([LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
                                            for _ in range(config.num_hidden_layers)])

    def construct(self, pixel_values, attention_mask=None, interpolate_pos_encoding=False):
        """(num_layers, B, L, D): every block's output, after ln_post (or each layer's own LayerNorm)."""
        hidden_states = self.forward_pre(pixel_values, interpolate_pos_encoding)
        hidden_states = self.transformer(hidden_states, attention_mask)
        # each (L, B, D) -> (B, L, D)
        hidden_states = [h.swapaxes(0, 1) for h in hidden_states]
        if self.share_layernorm:
            return self.ln_post(F.stack(hidden_states, 0))
        return F.stack([ln(h) for h, ln in zip(hidden_states, self.ln_separate)], 0)

    def forward_pre(self, pixel_values, interpolate_pos_encoding=False):
        hidden_states = self.ln_pre(self.embeddings(pixel_values, interpolate_pos_encoding))
        return hidden_states.swapaxes(0, 1)  # (B, L, D) -> (L, B, D)

    def forward_post(self, hidden_state):
        return self.ln_post(hidden_state.swapaxes(0, 1))


# ------------------------------------------------------------------------------------------------------------------
# text tower and cross-modal layers
# ------------------------------------------------------------------------------------------------------------------


class BridgeTowerLinkTower(nn.Cell):
    """The bridge: LayerNorm(uni-modal + cross-modal), with the uni-modal side scaled (`scaled_add`) or the two
    interpolated (`interpolate`) by a learned scalar."""

    def __init__(self, config):
        super().__init__()
        self.link_tower_type = config.link_tower_type
        self.hidden_size = config.hidden_size
        if config.link_tower_type not in ("add", "scaled_add", "interpolate"):
            raise NotImplementedError(f"link_tower_type {config.link_tower_type} is not implemented")
        if config.link_tower_type == "scaled_add":
            self.scaled_factor = new_parameter((), Constant(1.0))
        elif config.link_tower_type == "interpolate":
            self.beta = new_parameter((), Constant(0.5))
        self.LayerNorm = LayerNorm(self.hidden_size, eps=config.layer_norm_eps)

    def construct(self, hidden_states, cross_modal_hidden_states, attention_mask=None):
        if self.link_tower_type == "add":
            return self.LayerNorm(hidden_states + cross_modal_hidden_states)
        if self.link_tower_type == "scaled_add":
            return self.LayerNorm(hidden_states * self.scaled_factor + cross_modal_hidden_states)
        return self.LayerNorm(hidden_states * (1 - self.beta) + cross_modal_hidden_states * self.beta)


class BridgeTowerBertCrossLayer(nn.Cell):
    """Self-attention (`attention_mask`), cross-attention to the other modality (`encoder_attention_mask`), FFN.
    Returns (output, self-attention weights, cross-attention weights)."""

    def __init__(self, config, layer_idx=None):
        super().__init__()
        self.attention = RobertaAttention(config, layer_idx=layer_idx)
        self.crossattention = RobertaAttention(config, layer_idx=layer_idx)
        self.intermediate = RobertaIntermediate(config)
        self.output = RobertaOutput(config)

    def construct(self, hidden_states, encoder_hidden_states, attention_mask=None, encoder_attention_mask=None):
        attention_output, self_weights = self.attention(hidden_states, attention_mask)
        attention_output, cross_weights = self.crossattention(attention_output, encoder_attention_mask,
                                                              encoder_hidden_states)
        layer_output = self.output(self.intermediate(attention_output), attention_output)
        return layer_output, self_weights, cross_weights


class BridgeTowerPredictionHeadTransform(nn.Cell):
    def __init__(self, config):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)
        self.transform_act_fn = F.get_activation(config.hidden_act)
        self.LayerNorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def construct(self, hidden_states):
        return self.LayerNorm(self.transform_act_fn(self.dense(hidden_states)))


class BridgeTowerMLMHead(nn.Cell):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.transform = BridgeTowerPredictionHeadTransform(config)
        self.decoder = Linear(config.hidden_size, config.text_config.vocab_size, bias=False)
        self.bias = new_parameter((config.text_config.vocab_size,), "zeros")

    def construct(self, x):
        return self.decoder(self.transform(x)) + self.bias


class BridgeTowerITMHead(nn.Cell):
    def __init__(self, hidden_size):
        super().__init__()
        self.fc = Linear(hidden_size, 2)

    def construct(self, x):
        return self.fc(x)


class BridgeTowerContrastiveHead(nn.Cell):
    def __init__(self, hidden_size, embed_size):
        super().__init__()
        self.fc = Linear(hidden_size, embed_size)

    def construct(self, x):
        return self.fc(x)


# ------------------------------------------------------------------------------------------------------------------
# models
# ------------------------------------------------------------------------------------------------------------------


class BridgeTowerPreTrainedModel(PreTrainedModel):
    config_class = BridgeTowerConfig
    base_model_prefix = "bridgetower"
    _no_split_modules = ["BridgeTowerSelfAttention", "BridgeTowerResidualAttention"]

    def _tie_word_embeddings_enabled(self):
        # the flag is the composite config's own (the text config has none)
        return bool(getattr(self.config, "tie_word_embeddings", False))

    def init_weights(self):
        # a parent after all its descendants, as torch's Module.apply: the vision transformer's own scheme
        # overrides the generic one of its Linears
        for _, cell in reversed(list(self.cells_and_names())):
            self._init_weights(cell)

    def _init_weights(self, cell):
        """HF's scheme: normal(0, 0.05 * initializer_factor) for Linear / Conv2d / Embedding (zero biases), CLIP's
        scaled normals in the vision transformer, unit LayerNorms."""
        factor = self.config.initializer_factor
        if isinstance(cell, BridgeTowerVisionTransformer):
            width, layers = self.config.hidden_size, self.config.num_hidden_layers
            proj_std = (width ** -0.5) * ((2 * layers) ** -0.5) * factor
            attn_std = width ** -0.5 * factor
            fc_std = (2 * width) ** -0.5 * factor
            for block in cell.transformer.resblocks:
                init_parameter(block.attn.in_proj_weight, Normal(attn_std))
                init_parameter(block.attn.in_proj_bias, Zero())
                init_parameter(block.attn.out_proj.weight, Normal(proj_std))
                init_parameter(block.mlp.c_fc.weight, Normal(fc_std))
                init_parameter(block.mlp.c_proj.weight, Normal(proj_std))
            init_parameter(cell.embeddings.class_embedding, Normal(attn_std))
            init_parameter(cell.embeddings.position_embedding.weight, Normal(attn_std))
        elif isinstance(cell, (Linear, Conv2d, Embedding)):
            init_parameter(cell.weight, Normal(0.05 * factor))
        elif isinstance(cell, LayerNorm):
            init_parameter(cell.weight, "ones")
            init_parameter(cell.bias, "zeros")
        elif isinstance(cell, BridgeTowerForContrastiveLearning):
            init_parameter(cell.logit_scale, Constant(self.config.logit_scale_init_value))
        if isinstance(cell, (Linear, BridgeTowerMLMHead)) and cell.bias is not None:
            init_parameter(cell.bias, Zero())


class BridgeTowerVisionModel(BridgeTowerPreTrainedModel):
    config_class = BridgeTowerVisionConfig
    main_input_name = "pixel_values"

    def __init__(self, config: BridgeTowerVisionConfig):
        super().__init__(config)
        self.visual = BridgeTowerVisionTransformer(config)
        self.post_init()

    @property
    def dtype(self):
        return self.visual.embeddings.patch_embedding.weight.dtype

    def construct(self, image, image_mask=None, interpolate_pos_encoding=False, **kwargs):
        """(num_layers, B, L, D) per-layer outputs; `image_mask` is True for patches to ignore, as HF passes it
        to torch's `key_padding_mask`."""
        return self.visual(image.astype(self.dtype), image_mask, interpolate_pos_encoding)


class BridgeTowerTextModel(BridgeTowerPreTrainedModel):
    """The RoBERTa text encoder (keys `embeddings.*`, `encoder.layer.N.*`, `pooler.*`)."""

    config_class = BridgeTowerTextConfig

    def __init__(self, config: BridgeTowerTextConfig, add_pooling_layer=True):
        super().__init__(config)
        self.embeddings = RobertaEmbeddings(config)
        self.encoder = RobertaEncoder(config)
        self.pooler = RobertaPooler(config) if add_pooling_layer else None
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value):
        self.embeddings.word_embeddings = value

    def construct(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                  inputs_embeds=None, encoder_hidden_states=None, encoder_attention_mask=None,
                  output_attentions=None, output_hidden_states=None, return_dict=None, **kwargs):
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (output_hidden_states if output_hidden_states is not None
                                else self.config.output_hidden_states)
        embedding_output = self.embeddings(input_ids=input_ids, token_type_ids=token_type_ids,
                                           position_ids=position_ids, inputs_embeds=inputs_embeds)
        batch_size, seq_len = embedding_output.shape[:2]
        dtype = embedding_output.dtype
        if self.config.is_decoder:
            mask = create_causal_mask(attention_mask, batch_size, F.arange(seq_len), seq_len, dtype)
        else:
            mask = create_bidirectional_mask(attention_mask, seq_len, dtype)
        encoder_mask = None
        if encoder_attention_mask is not None:
            encoder_mask = create_bidirectional_mask(encoder_attention_mask, seq_len, dtype)
        sequence_output, all_hidden, all_attn, all_cross = self.encoder(
            embedding_output, mask, encoder_hidden_states, encoder_mask, None, output_attentions,
            output_hidden_states)
        pooled_output = self.pooler(sequence_output) if self.pooler is not None else None
        return model_output(BaseModelOutputWithPoolingAndCrossAttentions, {
            "last_hidden_state": sequence_output, "pooler_output": pooled_output, "hidden_states": all_hidden,
            "attentions": all_attn, "cross_attentions": all_cross,
        }, return_dict is not False)


class BridgeTowerModel(BridgeTowerPreTrainedModel):
    def __init__(self, config: BridgeTowerConfig):
        super().__init__(config)
        vision_config, text_config = config.vision_config, config.text_config
        if config.share_cross_modal_transformer_layers:
            self.cross_modal_text_transform = Linear(text_config.hidden_size, config.hidden_size)
            self.cross_modal_image_transform = Linear(vision_config.hidden_size, config.hidden_size)
        else:
            self.cross_modal_text_transform = nn.CellList([Linear(text_config.hidden_size, config.hidden_size)
                                                           for _ in range(config.num_hidden_layers)])
            self.cross_modal_image_transform = nn.CellList([Linear(vision_config.hidden_size, config.hidden_size)
                                                            for _ in range(config.num_hidden_layers)])
        self.token_type_embeddings = Embedding(2, config.hidden_size)
        self.vision_model = BridgeTowerVisionModel(vision_config)
        self.text_model = BridgeTowerTextModel(text_config)
        if not vision_config.share_layernorm and config.init_layernorm_from_vision_encoder:
            # transformers 5.25 reads `visual.cross_modal_ln_separate` here, which no model has (AttributeError);
            # the evident intent: every separate LayerNorm starts as a copy of ln_post
            for ln in self.vision_model.visual.ln_separate:
                ln.weight.set_data(self.vision_model.visual.ln_post.weight.copy())
                ln.bias.set_data(self.vision_model.visual.ln_post.bias.copy())
        self.cross_modal_image_layers = nn.CellList([BridgeTowerBertCrossLayer(text_config)
                                                     for _ in range(config.num_hidden_layers)])
        self.cross_modal_text_layers = nn.CellList([BridgeTowerBertCrossLayer(text_config)
                                                    for _ in range(config.num_hidden_layers)])
        self.cross_modal_image_pooler = RobertaPooler(config)
        self.cross_modal_text_pooler = RobertaPooler(config)
        self.cross_modal_text_layernorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.cross_modal_image_layernorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        if config.share_link_tower_layers:
            self.cross_modal_text_link_tower = BridgeTowerLinkTower(config)
            self.cross_modal_image_link_tower = BridgeTowerLinkTower(config)
        else:
            self.cross_modal_text_link_tower = nn.CellList([BridgeTowerLinkTower(config)
                                                            for _ in range(config.num_hidden_layers - 1)])
            self.cross_modal_image_link_tower = nn.CellList([BridgeTowerLinkTower(config)
                                                             for _ in range(config.num_hidden_layers - 1)])
        self.post_init()

    def get_input_embeddings(self):
        return self.text_model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.text_model.set_input_embeddings(value)

    def _apply_text_transform(self, hidden_states, layer_idx):
        if self.config.share_cross_modal_transformer_layers:
            return self.cross_modal_text_transform(hidden_states)
        return self.cross_modal_text_transform[layer_idx](hidden_states)

    def _apply_image_transform(self, hidden_states, layer_idx):
        if self.config.share_cross_modal_transformer_layers:
            return self.cross_modal_image_transform(hidden_states)
        return self.cross_modal_image_transform[layer_idx](hidden_states)

    def _link_towers(self, index):
        # transformers 5.25 indexes the shared (single) tower too, which raises TypeError; a shared tower serves
        # every bridge layer
        if self.config.share_link_tower_layers:
            return self.cross_modal_text_link_tower, self.cross_modal_image_link_tower
        return self.cross_modal_text_link_tower[index], self.cross_modal_image_link_tower[index]

    def construct(self, input_ids=None, attention_mask=None, token_type_ids=None, pixel_values=None,
                  pixel_mask=None, inputs_embeds=None, image_embeds=None, image_token_type_idx=None, labels=None,
                  interpolate_pos_encoding=False, output_attentions=None, output_hidden_states=None,
                  return_dict=None, **kwargs):
        r"""
        Args:
            input_ids: (B, S) token ids (`inputs_embeds` is not supported, as in HF; `token_type_ids` and
                `pixel_mask` are accepted and unused, as in HF).
            attention_mask: (B, S) 1 for real tokens.
            pixel_values: (B, C, H, W), e.g. from `BridgeTowerProcessor(..., return_tensors="np")`.
            image_embeds: (B, L, D) instead of `pixel_values`: the vision transformer's input after `ln_pre`.
            image_token_type_idx: token type of the image stream (default 1).
        Returns `text_features` (B, S, D), `image_features` (B, L, D), `pooler_output` (B, 2D) and always
        `hidden_states` ((text...), (image... as (L, B, D)), ((text, image) per cross layer)) and `attentions`
        ((text, image) self-attention weights per cross layer).
        """
        if inputs_embeds is not None and input_ids is None:
            raise NotImplementedError("BridgeTowerModel does not use `inputs_embeds`.  Make sure to pass in "
                                      "`input_ids` instead.")
        image_token_type_idx = image_token_type_idx or 1
        text_layers = self.text_model.encoder.layer
        blocks = self.vision_model.visual.transformer.resblocks
        visual = self.vision_model.visual
        num_text_layers = len(text_layers)
        all_text, all_image, all_cross, all_attentions = [], [], [], []

        text_embeds = self.text_model.embeddings(input_ids=input_ids)
        all_text.append(text_embeds)
        if attention_mask is None:
            attention_mask = ops.ones(input_ids.shape, ms.int64)
        # (B, 1, 1, S): HF builds it for a single query row and broadcasts it over the queries
        text_mask = create_bidirectional_mask(attention_mask, 1, text_embeds.dtype)

        # the lower text and vision layers run alone
        split_index = num_text_layers - self.config.num_hidden_layers + 1
        for i in range(split_index):
            text_embeds = text_layers[i](text_embeds, text_mask)[0]
            all_text.append(text_embeds)
        if image_embeds is None:
            image_embeds = visual.forward_pre(pixel_values.astype(self.vision_model.dtype), interpolate_pos_encoding)
        else:
            image_embeds = image_embeds.swapaxes(0, 1)
        all_image.append(image_embeds)
        for i in range(split_index):
            image_embeds = blocks[i](image_embeds)
            all_image.append(image_embeds)

        # first cross-modal layer: from the uni-modal outputs alone
        cross_modal_text = self._apply_text_transform(text_embeds, 0)
        text_token_type = self.token_type_embeddings.weight[0].astype(cross_modal_text.dtype)
        cross_modal_text = self.cross_modal_text_layernorm(cross_modal_text + text_token_type)
        image_embeds_with_ln = self._apply_image_transform(visual.forward_post(image_embeds), 0)
        image_token_type = self.token_type_embeddings.weight[image_token_type_idx].astype(image_embeds_with_ln.dtype)
        cross_modal_image = self.cross_modal_image_layernorm(image_embeds_with_ln + image_token_type)
        # the image stream is never padded: no mask on it
        cross_text_features, text_weights, _ = self.cross_modal_text_layers[0](
            cross_modal_text, cross_modal_image, attention_mask=text_mask)
        cross_image_features, image_weights, _ = self.cross_modal_image_layers[0](
            cross_modal_image, cross_modal_text, encoder_attention_mask=text_mask)
        all_cross.append((cross_text_features, cross_image_features))
        all_attentions.append((text_weights, image_weights))

        # each upper uni-modal layer is bridged into the next cross-modal layer
        for link in range(num_text_layers - split_index):
            i = split_index + link
            text_embeds = text_layers[i](text_embeds, text_mask)[0]
            image_embeds = blocks[i](image_embeds).astype(self.vision_model.dtype)
            image_with_ln = self._apply_image_transform(visual.forward_post(image_embeds), link + 1) \
                + image_token_type
            text_link_tower, image_link_tower = self._link_towers(link)
            text_bridge = text_link_tower(self._apply_text_transform(text_embeds, link + 1) + text_token_type,
                                          cross_text_features, text_mask)
            image_bridge = image_link_tower(image_with_ln, cross_image_features)
            cross_text_features, text_weights, _ = self.cross_modal_text_layers[link + 1](
                text_bridge, image_bridge, attention_mask=text_mask)
            cross_image_features, image_weights, _ = self.cross_modal_image_layers[link + 1](
                image_bridge, text_bridge, encoder_attention_mask=text_mask)
            all_text.append(text_embeds)
            all_image.append(image_embeds)
            all_cross.append((cross_text_features, cross_image_features))
            all_attentions.append((text_weights, image_weights))

        pooled = self.get_cls_features(cross_text_features, cross_image_features)
        return model_output(BridgeTowerModelOutput, {
            "text_features": cross_text_features, "image_features": cross_image_features, "pooler_output": pooled,
            "hidden_states": (tuple(all_text), tuple(all_image), tuple(all_cross)),
            "attentions": tuple(all_attentions),
        }, return_dict is not False)

    def get_cls_features(self, text_features, image_features):
        return F.cat([self.cross_modal_text_pooler(text_features), self.cross_modal_image_pooler(image_features)], -1)


class BridgeTowerForMaskedLM(BridgeTowerPreTrainedModel):
    _tied_weights_keys = {"mlm_score.decoder.weight": "bridgetower.text_model.embeddings.word_embeddings.weight"}

    def __init__(self, config: BridgeTowerConfig):
        super().__init__(config)
        self.bridgetower = BridgeTowerModel(config)
        self.mlm_score = BridgeTowerMLMHead(config)
        self.post_init()

    def get_output_embeddings(self):
        return self.mlm_score.decoder

    def set_output_embeddings(self, new_embeddings):
        self.mlm_score.decoder = new_embeddings

    def construct(self, input_ids=None, attention_mask=None, token_type_ids=None, pixel_values=None,
                  pixel_mask=None, inputs_embeds=None, image_embeds=None, labels=None, output_attentions=None,
                  output_hidden_states=None, return_dict=None, **kwargs):
        """`logits` (B, S, vocab) over the cross-modal text features; with `labels` (-100 ignored) the MLM loss."""
        outputs = self.bridgetower(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                                   pixel_values=pixel_values, pixel_mask=pixel_mask, inputs_embeds=inputs_embeds,
                                   image_embeds=image_embeds)
        logits = self.mlm_score(outputs["text_features"])
        loss = None
        if labels is not None:
            vocab_size = self.config.text_config.vocab_size
            loss = fixed_cross_entropy(logits.reshape(-1, vocab_size).astype(ms.float32), labels.reshape(-1))
        return model_output(MaskedLMOutput, {
            "loss": loss, "logits": logits, "hidden_states": outputs["hidden_states"],
            "attentions": outputs["attentions"],
        }, return_dict is not False)


class BridgeTowerForImageAndTextRetrieval(BridgeTowerPreTrainedModel):
    def __init__(self, config: BridgeTowerConfig):
        super().__init__(config)
        self.bridgetower = BridgeTowerModel(config)
        self.itm_score = BridgeTowerITMHead(config.hidden_size * 2)
        self.post_init()

    def construct(self, input_ids=None, attention_mask=None, token_type_ids=None, pixel_values=None,
                  pixel_mask=None, inputs_embeds=None, image_embeds=None, labels=None, output_attentions=None,
                  output_hidden_states=None, return_dict=None, **kwargs):
        """`logits` (B, 2): image-text matching scores (index 1 = match); with `labels` (B,) their cross-entropy."""
        outputs = self.bridgetower(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                                   pixel_values=pixel_values, pixel_mask=pixel_mask, inputs_embeds=inputs_embeds,
                                   image_embeds=image_embeds)
        logits = self.itm_score(outputs["pooler_output"])
        loss = fixed_cross_entropy(logits.astype(ms.float32), labels) if labels is not None else None
        return model_output(SequenceClassifierOutput, {
            "loss": loss, "logits": logits, "hidden_states": outputs["hidden_states"],
            "attentions": outputs["attentions"],
        }, return_dict is not False)


class BridgeTowerForContrastiveLearning(BridgeTowerPreTrainedModel):
    def __init__(self, config: BridgeTowerConfig):
        super().__init__(config)
        if not config.share_cross_modal_transformer_layers:
            # HF calls `cross_modal_image_transform` as one Linear here (a ModuleList is not callable)
            raise ValueError("BridgeTowerForContrastiveLearning needs config.share_cross_modal_transformer_layers="
                             "True (transformers' head applies a single cross_modal_image_transform)")
        self.bridgetower = BridgeTowerModel(config)
        self.itc_text_head = BridgeTowerContrastiveHead(config.hidden_size, config.contrastive_hidden_size)
        self.itc_image_head = BridgeTowerContrastiveHead(config.hidden_size, config.contrastive_hidden_size)
        self.itc_cross_modal_head = BridgeTowerContrastiveHead(config.hidden_size * 2,
                                                               config.contrastive_hidden_size)
        self.logit_scale = new_parameter((), Constant(config.logit_scale_init_value))
        self.post_init()

    def construct(self, input_ids=None, attention_mask=None, token_type_ids=None, pixel_values=None,
                  pixel_mask=None, inputs_embeds=None, image_embeds=None, return_loss=None, output_attentions=None,
                  output_hidden_states=None, return_dict=None, **kwargs):
        """Normalised `text_embeds`, `image_embeds` (last uni-modal layers' first tokens) and `cross_embeds` (the
        pooled cross-modal output), `logits` (B, 3, E) stacking them; with `return_loss` the mean of the three
        pairwise contrastive losses (text-image, text-cross, image-cross)."""
        outputs = self.bridgetower(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                                   pixel_values=pixel_values, pixel_mask=pixel_mask, inputs_embeds=inputs_embeds,
                                   image_embeds=image_embeds)
        hidden_text, hidden_image, _ = outputs["hidden_states"]
        base = self.bridgetower
        image_with_ln = base.vision_model.visual.forward_post(hidden_image[-1])
        image_token_type = base.token_type_embeddings.weight[1].astype(image_with_ln.dtype)
        image_states = base.cross_modal_image_transform(image_with_ln) + image_token_type

        text_embeds = _normalize(self.itc_text_head(hidden_text[-1][:, 0, :]))
        image_embeds = _normalize(self.itc_image_head(image_states[:, 0, :]))
        cross_embeds = _normalize(self.itc_cross_modal_head(outputs["pooler_output"]))
        logits = F.stack([text_embeds, image_embeds, cross_embeds], -2)

        loss = None
        if return_loss:
            logit_scale = ops.exp(self.logit_scale)
            labels = F.arange(logits.shape[0], dtype=ms.int64)
            losses = [F.cross_entropy(ops.matmul(a, b.swapaxes(0, 1)) * logit_scale, labels)
                      for a, b in ((text_embeds, image_embeds), (text_embeds, cross_embeds),
                                   (image_embeds, cross_embeds))]
            loss = (losses[0] + losses[1] + losses[2]) / 3.0
        return model_output(BridgeTowerContrastiveOutput, {
            "loss": loss, "logits": logits, "text_embeds": text_embeds, "image_embeds": image_embeds,
            "cross_embeds": cross_embeds, "hidden_states": outputs["hidden_states"],
            "attentions": outputs["attentions"],
        }, return_dict is not False)


__all__ = [
    "BridgeTowerForContrastiveLearning",
    "BridgeTowerForImageAndTextRetrieval",
    "BridgeTowerForMaskedLM",
    "BridgeTowerModel",
    "BridgeTowerPreTrainedModel",
]
