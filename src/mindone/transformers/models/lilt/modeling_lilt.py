"""LiLT on MindSpore: HF's `modeling_lilt.py` structure, names and outputs; device concerns live in `backend`.

LiLT (Language-independent Layout Transformer) runs two streams side by side: a RoBERTa text stream and a layout
stream `channel_shrink_ratio` times narrower, fed from the token boxes (`bbox`: (x0, y0, x1, y1) in 0..1000). Each layer
lets the streams see each other through their attention scores only: both use softmax(text scores + layout scores),
applied to their own values. Each stream keeps its own residual LayerNorms and feed-forward block; the heads read the
text stream. Positions follow RoBERTa's rule (real tokens count from `padding_idx + 1`).
"""

import math

import mindspore as ms
from mindspore import nn
from transformers import LiltConfig

from ...backend import functional as F
from ...backend.layers import Dropout, Embedding, LayerNorm, Linear
from ...loss_utils import question_answering_loss, sequence_classification_loss, token_classification_loss
from ...masking_utils import create_bidirectional_mask
from ...modeling_layers import GradientCheckpointingLayer
from ...modeling_outputs import (
    model_output,
    BaseModelOutputWithPooling,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from ...modeling_utils import PreTrainedModel


def create_position_ids_from_input_ids(input_ids, padding_idx):
    """Real tokens get positions padding_idx + 1, padding_idx + 2, ... (counting only real tokens); padding tokens get
    padding_idx, whose embedding row is the padding row."""
    mask = (input_ids != padding_idx).astype(ms.int32)
    return (F.cumsum(mask, 1) * mask).astype(ms.int64) + padding_idx


class LiltTextEmbeddings(nn.Cell):
    """RoBERTa's embeddings; also returns the position ids, which the layout stream embeds too."""

    def __init__(self, config):
        super().__init__()
        self.padding_idx = config.pad_token_id
        self.word_embeddings = Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = Embedding(config.max_position_embeddings, config.hidden_size,
                                             padding_idx=config.pad_token_id)
        self.token_type_embeddings = Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def construct(self, input_ids=None, token_type_ids=None, position_ids=None, inputs_embeds=None):
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        batch_size, seq_length = inputs_embeds.shape[:2]
        if position_ids is None:
            if input_ids is not None:
                position_ids = create_position_ids_from_input_ids(input_ids, self.padding_idx)
            else:
                # without ids padding cannot be seen: every position is real
                positions = F.arange(self.padding_idx + 1, seq_length + self.padding_idx + 1)[None, :]
                position_ids = ms.ops.broadcast_to(positions, (batch_size, seq_length))
        if token_type_ids is None:
            token_type_ids = F.full((batch_size, seq_length), 0, ms.int64)
        embeddings = inputs_embeds + self.token_type_embeddings(token_type_ids)
        embeddings = embeddings + self.position_embeddings(position_ids)
        return self.dropout(self.LayerNorm(embeddings)), position_ids


class LiltLayoutEmbeddings(nn.Cell):
    """Box coordinates -> the layout stream's input: [x0, y0, x1, y1, height, width] embeddings (hidden/6 each),
    projected to hidden/channel_shrink_ratio, plus a 1-D position embedding, LayerNorm, dropout."""

    def __init__(self, config):
        super().__init__()
        part = config.hidden_size // 6
        layout_size = config.hidden_size // config.channel_shrink_ratio
        self.x_position_embeddings = Embedding(config.max_2d_position_embeddings, part)
        self.y_position_embeddings = Embedding(config.max_2d_position_embeddings, part)
        self.h_position_embeddings = Embedding(config.max_2d_position_embeddings, part)
        self.w_position_embeddings = Embedding(config.max_2d_position_embeddings, part)
        self.box_position_embeddings = Embedding(config.max_position_embeddings, layout_size,
                                                 padding_idx=config.pad_token_id)
        self.box_linear_embeddings = Linear(config.hidden_size, layout_size)
        self.LayerNorm = LayerNorm(layout_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def construct(self, bbox, position_ids):
        spatial = F.cat([
            self.x_position_embeddings(bbox[:, :, 0]),
            self.y_position_embeddings(bbox[:, :, 1]),
            self.x_position_embeddings(bbox[:, :, 2]),
            self.y_position_embeddings(bbox[:, :, 3]),
            self.h_position_embeddings(bbox[:, :, 3] - bbox[:, :, 1]),
            self.w_position_embeddings(bbox[:, :, 2] - bbox[:, :, 0]),
        ], axis=-1)
        embeddings = self.box_linear_embeddings(spatial) + self.box_position_embeddings(position_ids)
        return self.dropout(self.LayerNorm(embeddings))


class LiltSelfAttention(nn.Cell):
    """Text and layout attention sharing one set of scores: each stream's q.k / sqrt(its head size), summed."""

    def __init__(self, config):
        super().__init__()
        if config.hidden_size % config.num_attention_heads != 0:
            raise ValueError(f"The hidden size ({config.hidden_size}) is not a multiple of the number of attention "
                             f"heads ({config.num_attention_heads})")
        self.num_attention_heads = config.num_attention_heads
        self.attention_head_size = config.hidden_size // config.num_attention_heads
        self.all_head_size = self.num_attention_heads * self.attention_head_size
        self.channel_shrink_ratio = config.channel_shrink_ratio
        layout_size = config.hidden_size // config.channel_shrink_ratio
        layout_all_head_size = self.all_head_size // config.channel_shrink_ratio
        self.query = Linear(config.hidden_size, self.all_head_size)
        self.key = Linear(config.hidden_size, self.all_head_size)
        self.value = Linear(config.hidden_size, self.all_head_size)
        self.layout_query = Linear(layout_size, layout_all_head_size)
        self.layout_key = Linear(layout_size, layout_all_head_size)
        self.layout_value = Linear(layout_size, layout_all_head_size)
        self.dropout = Dropout(config.attention_probs_dropout_prob)

    def _heads(self, x):
        # (B, S, H*D) -> (B, H, S, D); swapaxes because Tensor.transpose(1, 2) fails inside jit on CPU
        return x.reshape(x.shape[0], x.shape[1], self.num_attention_heads, -1).swapaxes(1, 2)

    def _merge(self, x):
        return x.swapaxes(1, 2).reshape(x.shape[0], x.shape[2], -1)

    def construct(self, hidden_states, layout_inputs, attention_mask=None):
        query, key, value = (self._heads(self.query(hidden_states)), self._heads(self.key(hidden_states)),
                             self._heads(self.value(hidden_states)))
        layout_query, layout_key, layout_value = (self._heads(self.layout_query(layout_inputs)),
                                                  self._heads(self.layout_key(layout_inputs)),
                                                  self._heads(self.layout_value(layout_inputs)))
        text_scores = F.matmul(query, key.swapaxes(-1, -2)) / math.sqrt(self.attention_head_size)
        layout_scores = F.matmul(layout_query, layout_key.swapaxes(-1, -2)) / math.sqrt(
            self.attention_head_size // self.channel_shrink_ratio)
        scores = text_scores + layout_scores
        if attention_mask is not None:
            scores = scores + attention_mask
        probs = F.softmax(scores, -1)
        # as in HF, each stream draws its own dropout mask over the shared probabilities
        context = F.matmul(self.dropout(probs), value)
        layout_context = F.matmul(self.dropout(probs), layout_value)
        return self._merge(context), self._merge(layout_context), probs


class LiltSelfOutput(nn.Cell):
    """dense -> dropout -> LayerNorm(+ residual), at the width of its stream."""

    def __init__(self, config, hidden_size):
        super().__init__()
        self.dense = Linear(hidden_size, hidden_size)
        self.LayerNorm = LayerNorm(hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def construct(self, hidden_states, input_tensor):
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + input_tensor)


class LiltAttention(nn.Cell):
    def __init__(self, config):
        super().__init__()
        self.self = LiltSelfAttention(config)
        self.output = LiltSelfOutput(config, config.hidden_size)
        self.layout_output = LiltSelfOutput(config, config.hidden_size // config.channel_shrink_ratio)

    def construct(self, hidden_states, layout_inputs, attention_mask=None):
        context, layout_context, probs = self.self(hidden_states, layout_inputs, attention_mask)
        return self.output(context, hidden_states), self.layout_output(layout_context, layout_inputs), probs


class LiltIntermediate(nn.Cell):
    def __init__(self, config, hidden_size, intermediate_size):
        super().__init__()
        self.dense = Linear(hidden_size, intermediate_size)
        self.intermediate_act_fn = F.get_activation(config.hidden_act)

    def construct(self, hidden_states):
        return self.intermediate_act_fn(self.dense(hidden_states))


class LiltOutput(nn.Cell):
    def __init__(self, config, hidden_size, intermediate_size):
        super().__init__()
        self.dense = Linear(intermediate_size, hidden_size)
        self.LayerNorm = LayerNorm(hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def construct(self, hidden_states, input_tensor):
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + input_tensor)


class LiltLayer(GradientCheckpointingLayer):
    """Shared-score attention, then a feed-forward block per stream (the layout one channel_shrink_ratio narrower)."""

    def __init__(self, config):
        super().__init__()
        ratio = config.channel_shrink_ratio
        self.attention = LiltAttention(config)
        self.intermediate = LiltIntermediate(config, config.hidden_size, config.intermediate_size)
        self.output = LiltOutput(config, config.hidden_size, config.intermediate_size)
        self.layout_intermediate = LiltIntermediate(config, config.hidden_size // ratio,
                                                    config.intermediate_size // ratio)
        self.layout_output = LiltOutput(config, config.hidden_size // ratio, config.intermediate_size // ratio)

    def construct(self, hidden_states, layout_inputs, attention_mask=None):
        attention_output, layout_attention_output, probs = self.attention(hidden_states, layout_inputs,
                                                                          attention_mask)
        layer_output = self.output(self.intermediate(attention_output), attention_output)
        layout_output = self.layout_output(self.layout_intermediate(layout_attention_output),
                                           layout_attention_output)
        return layer_output, layout_output, probs


class LiltEncoder(nn.Cell):
    def __init__(self, config):
        super().__init__()
        self.layer = nn.CellList([LiltLayer(config) for _ in range(config.num_hidden_layers)])

    def construct(self, hidden_states, layout_inputs, attention_mask=None, output_attentions=False,
                  output_hidden_states=False):
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layer:
            hidden_states, layout_inputs, probs = layer(hidden_states, layout_inputs, attention_mask)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            if output_attentions:
                all_attentions += (probs,)
        return hidden_states, all_hidden_states, all_attentions


class LiltPooler(nn.Cell):
    """tanh(dense(first token))."""

    def __init__(self, config):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)

    def construct(self, hidden_states):
        return F.tanh(self.dense(hidden_states[:, 0]))


def _classifier_dropout(config):
    return config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob


class LiltClassificationHead(nn.Cell):
    """Sentence-level head on the first (<s>) token: dropout -> dense -> tanh -> dropout -> out_proj."""

    def __init__(self, config):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)
        self.dropout = Dropout(_classifier_dropout(config))
        self.out_proj = Linear(config.hidden_size, config.num_labels)

    def construct(self, features):
        x = self.dropout(features[:, 0, :])
        x = self.dropout(F.tanh(self.dense(x)))
        return self.out_proj(x)


class LiltPreTrainedModel(PreTrainedModel):
    config_class = LiltConfig
    base_model_prefix = "lilt"
    supports_gradient_checkpointing = True


class LiltModel(LiltPreTrainedModel):
    """The two-stream encoder; outputs are the text stream's. `bbox` (B, S, 4) defaults to all-zero boxes."""

    def __init__(self, config: LiltConfig, add_pooling_layer=True):
        super().__init__(config)
        self.embeddings = LiltTextEmbeddings(config)
        self.layout_embeddings = LiltLayoutEmbeddings(config)
        self.encoder = LiltEncoder(config)
        self.pooler = LiltPooler(config) if add_pooling_layer else None
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value):
        self.embeddings.word_embeddings = value

    def construct(self, input_ids=None, bbox=None, attention_mask=None, token_type_ids=None, position_ids=None,
                  inputs_embeds=None, output_attentions=None, output_hidden_states=None, return_dict=None, **kwargs):
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        embedding_output, position_ids = self.embeddings(input_ids=input_ids, token_type_ids=token_type_ids,
                                                         position_ids=position_ids, inputs_embeds=inputs_embeds)
        batch_size, seq_len = embedding_output.shape[:2]
        if bbox is None:
            bbox = F.full((batch_size, seq_len, 4), 0, ms.int64)
        layout_embedding_output = self.layout_embeddings(bbox, position_ids)
        mask = create_bidirectional_mask(attention_mask, seq_len, embedding_output.dtype)
        sequence_output, all_hidden, all_attn = self.encoder(embedding_output, layout_embedding_output, mask,
                                                             output_attentions, output_hidden_states)
        pooled_output = self.pooler(sequence_output) if self.pooler is not None else None
        return model_output(BaseModelOutputWithPooling, {
            "last_hidden_state": sequence_output,
            "pooler_output": pooled_output,
            "hidden_states": all_hidden,
            "attentions": all_attn,
        }, return_dict is None or return_dict)


class LiltForSequenceClassification(LiltPreTrainedModel):
    """`LiltClassificationHead` on the first token (no pooler)."""

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.lilt = LiltModel(config, add_pooling_layer=False)
        self.classifier = LiltClassificationHead(config)
        self.post_init()

    def construct(self, input_ids=None, bbox=None, attention_mask=None, token_type_ids=None, position_ids=None,
                  inputs_embeds=None, labels=None, output_attentions=None, output_hidden_states=None,
                  return_dict=None, **kwargs):
        return_dict = return_dict if return_dict is not None else True
        outputs = self.lilt(input_ids, bbox=bbox, attention_mask=attention_mask, token_type_ids=token_type_ids,
                            position_ids=position_ids, inputs_embeds=inputs_embeds,
                            output_attentions=output_attentions, output_hidden_states=output_hidden_states)
        logits = self.classifier(outputs["last_hidden_state"])
        loss = sequence_classification_loss(labels, logits, self.config) if labels is not None else None
        return model_output(SequenceClassifierOutput, {
            "loss": loss,
            "logits": logits,
            "hidden_states": outputs.get("hidden_states"),
            "attentions": outputs.get("attentions"),
        }, return_dict)


class LiltForTokenClassification(LiltPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.lilt = LiltModel(config, add_pooling_layer=False)
        self.dropout = Dropout(_classifier_dropout(config))
        self.classifier = Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def construct(self, input_ids=None, bbox=None, attention_mask=None, token_type_ids=None, position_ids=None,
                  inputs_embeds=None, labels=None, output_attentions=None, output_hidden_states=None,
                  return_dict=None, **kwargs):
        return_dict = return_dict if return_dict is not None else True
        outputs = self.lilt(input_ids, bbox=bbox, attention_mask=attention_mask, token_type_ids=token_type_ids,
                            position_ids=position_ids, inputs_embeds=inputs_embeds,
                            output_attentions=output_attentions, output_hidden_states=output_hidden_states)
        logits = self.classifier(self.dropout(outputs["last_hidden_state"]))
        loss = token_classification_loss(logits, labels, self.num_labels) if labels is not None else None
        return model_output(TokenClassifierOutput, {
            "loss": loss,
            "logits": logits,
            "hidden_states": outputs.get("hidden_states"),
            "attentions": outputs.get("attentions"),
        }, return_dict)


class LiltForQuestionAnswering(LiltPreTrainedModel):
    """Span start/end logits for extractive QA."""

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.lilt = LiltModel(config, add_pooling_layer=False)
        self.qa_outputs = Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def construct(self, input_ids=None, bbox=None, attention_mask=None, token_type_ids=None, position_ids=None,
                  inputs_embeds=None, start_positions=None, end_positions=None, output_attentions=None,
                  output_hidden_states=None, return_dict=None, **kwargs):
        return_dict = return_dict if return_dict is not None else True
        outputs = self.lilt(input_ids, bbox=bbox, attention_mask=attention_mask, token_type_ids=token_type_ids,
                            position_ids=position_ids, inputs_embeds=inputs_embeds,
                            output_attentions=output_attentions, output_hidden_states=output_hidden_states)
        logits = self.qa_outputs(outputs["last_hidden_state"])
        start_logits, end_logits = logits[..., 0], logits[..., 1]
        loss = None
        if start_positions is not None and end_positions is not None:
            loss = question_answering_loss(start_logits, end_logits, start_positions, end_positions)
        return model_output(QuestionAnsweringModelOutput, {
            "loss": loss,
            "start_logits": start_logits,
            "end_logits": end_logits,
            "hidden_states": outputs.get("hidden_states"),
            "attentions": outputs.get("attentions"),
        }, return_dict)


__all__ = [
    "LiltForQuestionAnswering",
    "LiltForSequenceClassification",
    "LiltForTokenClassification",
    "LiltModel",
    "LiltPreTrainedModel",
]
