"""CTRL on MindSpore: HF's `modeling_ctrl.py` structure, names and outputs; device concerns live in `backend`.

CTRL is a pre-norm decoder with fixed sinusoidal positions (sines in the first half of the features, cosines in the
second), token embeddings scaled by sqrt(n_embd), separate Wq/Wk/Wv projections, a ReLU feed-forward network stored
as `ffn.0` / `ffn.2` (HF's `nn.Sequential`) and an LM head with a bias, its weight tied to the token embeddings.
"""

import math

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops
from transformers import CTRLConfig

from ...backend import functional as F
from ...backend import runtime
from ...backend.layers import Dropout, Embedding, LayerNorm, Linear
from ...cache_utils import DynamicCache
from ...generation import GenerationMixin
from ...loss_utils import causal_lm_loss, sequence_classification_loss
from ...masking_utils import create_causal_mask
from ...modeling_layers import last_non_pad_logits
from ...modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast, SequenceClassifierOutput, model_output
from ...modeling_utils import PreTrainedModel


def positional_encoding(position, d_model_size):
    """(position, d_model) float32 table: [sin(angles of even features), cos(angles of odd features)].

    Feature i turns at rate 1 / 10000^(2 * (i // 2) / d_model); angles are formed in float32 as HF does, and the
    sines/cosines are evaluated in float64 and rounded once.
    """
    i = np.arange(d_model_size, dtype=np.int64).astype(np.float32)[None, :]
    pos = np.arange(position, dtype=np.int64).astype(np.float32)[:, None]
    rates = (np.float32(1.0) / np.power(np.float32(10000.0), (np.float32(2.0) * (i // 2)) / np.float32(d_model_size),
                                        dtype=np.float32)).astype(np.float32)
    angles = (pos * rates).astype(np.float32).astype(np.float64)
    return np.concatenate([np.sin(angles[:, 0::2]), np.cos(angles[:, 1::2])], -1).astype(np.float32)


class MultiHeadAttention(nn.Cell):
    def __init__(self, config, layer_idx=None):
        super().__init__()
        self.config = config
        self.num_heads = config.n_head
        self.d_model_size = config.n_embd
        self.layer_idx = layer_idx
        self.head_dim = int(self.d_model_size / self.num_heads)
        self.scaling = self.head_dim ** -0.5
        self.Wq = Linear(self.d_model_size, self.d_model_size)
        self.Wk = Linear(self.d_model_size, self.d_model_size)
        self.Wv = Linear(self.d_model_size, self.d_model_size)
        self.dense = Linear(self.d_model_size, self.d_model_size)

    def construct(self, v, k, q, layer_past=None, attention_mask=None, cache_position=None):
        batch, seq_len = q.shape[:2]
        # (B, S, H*D) -> (B, H, S, D); swapaxes because Tensor.transpose(1, 2) fails inside jit on CPU
        query_states = self.Wq(q).reshape(batch, seq_len, -1, self.head_dim).swapaxes(1, 2)
        key_states = self.Wk(k).reshape(batch, seq_len, -1, self.head_dim).swapaxes(1, 2)
        value_states = self.Wv(v).reshape(batch, seq_len, -1, self.head_dim).swapaxes(1, 2)
        if layer_past is not None:
            key_states, value_states = layer_past.update(
                key_states, value_states, self.layer_idx, {"cache_position": cache_position}
            )
        attn_output, attn_weights = F.attention(query_states, key_states, value_states, attn_mask=attention_mask,
                                                scale=self.scaling)
        attn_output = attn_output.swapaxes(1, 2).reshape(batch, seq_len, -1)
        return self.dense(attn_output), attn_weights


class _ReLU(nn.Cell):
    def construct(self, x):
        return F.relu(x)


def point_wise_feed_forward_network(d_model_size, dff):
    # SequentialCell names its children 0, 1, 2 like torch's nn.Sequential: keys ffn.0.weight, ffn.2.weight
    return nn.SequentialCell([Linear(d_model_size, dff), _ReLU(), Linear(dff, d_model_size)])


class EncoderLayer(nn.Cell):
    def __init__(self, config, layer_idx=None):
        super().__init__()
        self.multi_head_attention = MultiHeadAttention(config, layer_idx=layer_idx)
        self.ffn = point_wise_feed_forward_network(config.n_embd, config.dff)
        self.layernorm1 = LayerNorm(config.n_embd, eps=1e-6)
        self.layernorm2 = LayerNorm(config.n_embd, eps=1e-6)
        self.dropout1 = Dropout(config.resid_pdrop)
        self.dropout2 = Dropout(config.resid_pdrop)

    def construct(self, x, layer_past=None, attention_mask=None, cache_position=None):
        normed = self.layernorm1(x)
        attn_output, attn_weights = self.multi_head_attention(normed, normed, normed, layer_past, attention_mask,
                                                              cache_position)
        out1 = x + self.dropout1(attn_output)
        out2 = out1 + self.dropout2(self.ffn(self.layernorm2(out1)))
        return out2, attn_weights


class CTRLPreTrainedModel(PreTrainedModel):
    config_class = CTRLConfig
    base_model_prefix = "transformer"


class CTRLModel(CTRLPreTrainedModel):
    def __init__(self, config: CTRLConfig):
        super().__init__(config)
        self.d_model_size = config.n_embd
        self.num_layers = config.n_layer
        self.w = Embedding(config.vocab_size, config.n_embd)
        self.dropout = Dropout(config.embd_pdrop)
        self.h = nn.CellList([EncoderLayer(config, layer_idx=i) for i in range(config.n_layer)])
        self.layernorm = LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        # a constant, not a checkpoint weight (HF's non-persistent buffer)
        self.pos_encoding = Tensor(positional_encoding(config.n_positions, self.d_model_size))
        self.embed_scale = math.sqrt(self.d_model_size)
        self.post_init()

    def get_input_embeddings(self):
        return self.w

    def set_input_embeddings(self, new_embeddings):
        self.w = new_embeddings

    def construct(self, input_ids=None, past_key_values=None, attention_mask=None, token_type_ids=None,
                  position_ids=None, inputs_embeds=None, use_cache=None, output_attentions=None,
                  output_hidden_states=None, return_dict=None, cache_position=None, **kwargs):
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        use_cache = use_cache if use_cache is not None else self.config.use_cache
        return_dict = return_dict if return_dict is not None else True
        if input_ids is not None and inputs_embeds is not None:
            raise ValueError("You cannot specify both input_ids and inputs_embeds at the same time")
        if input_ids is not None:
            inputs_embeds = self.w(input_ids)
        elif inputs_embeds is None:
            raise ValueError("You have to specify either input_ids or inputs_embeds")
        batch_size, seq_len = inputs_embeds.shape[:2]

        if use_cache and past_key_values is None and not runtime.in_graph():
            # a growing cache only exists in PyNative; compiled decoding passes a StaticCache
            past_key_values = DynamicCache(config=self.config)
        if cache_position is None:
            past_seen = past_key_values.get_seq_length() if past_key_values is not None else 0
            cache_position = F.arange(past_seen, past_seen + seq_len, dtype=ms.int64)
        if position_ids is None:
            position_ids = cache_position[None, :]

        if past_key_values is not None and past_key_values.get_max_cache_shape() is not None:
            kv_length = past_key_values.get_max_cache_shape()
        elif past_key_values is not None:
            kv_length = past_key_values.get_seq_length() + seq_len
        else:
            kv_length = seq_len
        causal_mask = create_causal_mask(attention_mask, batch_size, cache_position, kv_length, inputs_embeds.dtype)

        hidden_states = inputs_embeds * self.embed_scale
        hidden_states = hidden_states + ops.gather(self.pos_encoding, position_ids, 0).astype(inputs_embeds.dtype)
        if token_type_ids is not None:
            # token types index the word embeddings, scaled like them
            hidden_states = hidden_states + self.w(token_type_ids) * self.embed_scale
        hidden_states = self.dropout(hidden_states)

        all_hidden_states = () if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for block in self.h:
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            hidden_states, attn_weights = block(hidden_states, past_key_values, causal_mask, cache_position)
            if output_attentions:
                all_attentions += (attn_weights,)

        hidden_states = self.layernorm(hidden_states)
        if output_hidden_states:
            all_hidden_states += (hidden_states,)

        return model_output(BaseModelOutputWithPast, {
            "last_hidden_state": hidden_states,
            "past_key_values": past_key_values if use_cache else None,
            "hidden_states": all_hidden_states,
            "attentions": all_attentions,
        }, return_dict)


class CTRLLMHeadModel(CTRLPreTrainedModel, GenerationMixin):
    _supports_static_cache = True  # forward runs under mindspore.jit with a StaticCache (compiled decoding)
    _tied_weights_keys = {"lm_head.weight": "transformer.w.weight"}

    def __init__(self, config: CTRLConfig):
        super().__init__(config)
        self.transformer = CTRLModel(config)
        self.lm_head = Linear(config.n_embd, config.vocab_size, bias=True)
        self.post_init()

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    def prepare_inputs_for_generation(self, input_ids, past_key_values=None, **kwargs):
        model_inputs = super().prepare_inputs_for_generation(input_ids, past_key_values=past_key_values, **kwargs)
        # as HF: token types are not carried through generation
        model_inputs.pop("token_type_ids", None)
        return model_inputs

    def construct(self, input_ids=None, past_key_values=None, attention_mask=None, token_type_ids=None,
                  position_ids=None, inputs_embeds=None, labels=None, use_cache=None, output_attentions=None,
                  output_hidden_states=None, return_dict=None, cache_position=None, logits_to_keep=0, **kwargs):
        r"""
        labels: (B, S) token ids for the next-token loss; -100 positions are ignored. Labels are shifted inside.
        logits_to_keep: if > 0, logits only for the last `logits_to_keep` positions (generation needs one).
        """
        return_dict = return_dict if return_dict is not None else True
        outputs = self.transformer(
            input_ids=input_ids, past_key_values=past_key_values, attention_mask=attention_mask,
            token_type_ids=token_type_ids, position_ids=position_ids, inputs_embeds=inputs_embeds, use_cache=use_cache,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states, return_dict=True,
            cache_position=cache_position,
        )
        hidden_states = outputs["last_hidden_state"]
        if logits_to_keep > 0:
            hidden_states = hidden_states[:, -logits_to_keep:, :]
        logits = self.lm_head(hidden_states)

        loss = None
        if labels is not None:
            loss = causal_lm_loss(logits, labels, self.config.vocab_size, kwargs.get("num_items_in_batch"))

        return model_output(CausalLMOutputWithPast, {
            "loss": loss,
            "logits": logits,
            "past_key_values": outputs.get("past_key_values"),
            "hidden_states": outputs.get("hidden_states"),
            "attentions": outputs.get("attentions"),
        }, return_dict)


class CTRLForSequenceClassification(CTRLPreTrainedModel):
    """Scores the last non-padding token of each row (the rightmost token != pad_token_id)."""

    def __init__(self, config: CTRLConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.transformer = CTRLModel(config)
        self.classifier = Linear(config.n_embd, self.num_labels, bias=False)
        self.post_init()

    def construct(self, input_ids=None, past_key_values=None, attention_mask=None, token_type_ids=None,
                  position_ids=None, inputs_embeds=None, labels=None, use_cache=None, output_attentions=None,
                  output_hidden_states=None, return_dict=None, cache_position=None, **kwargs):
        return_dict = return_dict if return_dict is not None else True
        outputs = self.transformer(
            input_ids=input_ids, past_key_values=past_key_values, attention_mask=attention_mask,
            token_type_ids=token_type_ids, position_ids=position_ids, inputs_embeds=inputs_embeds, use_cache=use_cache,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states, return_dict=True,
            cache_position=cache_position,
        )
        logits = self.classifier(outputs["last_hidden_state"])
        pooled_logits = last_non_pad_logits(logits, input_ids, inputs_embeds, self.config.pad_token_id)
        loss = None
        if labels is not None:
            loss = sequence_classification_loss(labels, pooled_logits, self.config)
        return model_output(SequenceClassifierOutput, {
            "loss": loss,
            "logits": pooled_logits,
            "hidden_states": outputs.get("hidden_states"),
            "attentions": outputs.get("attentions"),
        }, return_dict)


__all__ = ["CTRLForSequenceClassification", "CTRLLMHeadModel", "CTRLModel", "CTRLPreTrainedModel"]
