"""CANINE on MindSpore: HF's `modeling_canine.py` structure, names and outputs; device concerns live in `backend`.

CANINE reads Unicode code points, not tokens. Each code point is embedded by `num_hash_functions` small tables, each
indexed by a different hash of it (`((id + 1) * prime) % num_hash_buckets`), concatenated. Then:
  1. one *local* transformer layer over the characters (attention inside blocks of `local_transformer_stride`),
  2. a strided convolution downsamples characters to "molecules" (`downsampling_rate` characters each; the first
     character's encoding is kept as the [CLS] molecule),
  3. the deep transformer runs over the molecules (the pooler reads its first molecule),
  4. molecules are repeated back to character length, concatenated with the step-1 encoding, projected by a
     convolution, and one more full transformer layer gives the per-character output.
`hidden_states` and `attentions` hold the three encoders' entries in that order.
"""

import copy
import math
from dataclasses import dataclass
from typing import Any, Optional, Tuple

import mindspore as ms
from mindspore import nn, ops
from transformers import CanineConfig

from ...backend import functional as F
from ...backend.layers import Conv1d, Dropout, Embedding, LayerNorm, Linear
from ...loss_utils import (
    fixed_cross_entropy,
    question_answering_loss,
    sequence_classification_loss,
    token_classification_loss,
)
from ...masking_utils import create_bidirectional_mask
from ...modeling_layers import GradientCheckpointingLayer
from ...modeling_outputs import (
    model_output,
    ModelOutput,
    MultipleChoiceModelOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from ...modeling_utils import PreTrainedModel

_PRIMES = [31, 43, 59, 61, 73, 97, 103, 113, 137, 149, 157, 173, 181, 193, 211, 223]


@dataclass
class CanineModelOutputWithPooling(ModelOutput):
    """`BaseModelOutputWithPooling` whose hidden states and attentions cover the three encoders (the deep encoder's
    have molecule length `sequence_length // downsampling_rate`)."""

    last_hidden_state: Any = None
    pooler_output: Any = None
    hidden_states: Optional[Tuple[Any, ...]] = None
    attentions: Optional[Tuple[Any, ...]] = None


class CanineEmbeddings(nn.Cell):
    """Hashed code-point embeddings (one table shard per hash function) + token type + character position."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        if config.num_hash_functions > len(_PRIMES):
            raise ValueError(f"`num_hashes` must be <= {len(_PRIMES)}")
        if config.hidden_size % config.num_hash_functions != 0:
            raise ValueError(f"Expected `embedding_size` ({config.hidden_size}) % `num_hashes` "
                             f"({config.num_hash_functions}) == 0")
        shard_size = config.hidden_size // config.num_hash_functions
        for i in range(config.num_hash_functions):
            setattr(self, f"HashBucketCodepointEmbedder_{i}", Embedding(config.num_hash_buckets, shard_size))
        self.char_position_embeddings = Embedding(config.num_hash_buckets, config.hidden_size)
        self.token_type_embeddings = Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def _embed_hash_buckets(self, input_ids):
        shards = []
        for i, prime in enumerate(_PRIMES[:self.config.num_hash_functions]):
            buckets = ((input_ids + 1) * prime) % self.config.num_hash_buckets
            shards.append(getattr(self, f"HashBucketCodepointEmbedder_{i}")(buckets))
        return F.cat(shards, -1)

    def construct(self, input_ids=None, token_type_ids=None, position_ids=None, inputs_embeds=None):
        if inputs_embeds is None:
            inputs_embeds = self._embed_hash_buckets(input_ids)
        batch_size, seq_length = inputs_embeds.shape[:2]
        if position_ids is None:
            position_ids = F.arange(seq_length).reshape(1, seq_length)
        if token_type_ids is None:
            token_type_ids = F.full((batch_size, seq_length), 0, ms.int64)
        embeddings = inputs_embeds + self.token_type_embeddings(token_type_ids)
        embeddings = embeddings + self.char_position_embeddings(position_ids)
        return self.dropout(self.LayerNorm(embeddings))


class CharactersToMolecules(nn.Cell):
    """Downsampling: a convolution with kernel = stride = `downsampling_rate` over the characters; its last molecule
    is dropped and the first character's encoding put in front as the [CLS] molecule."""

    def __init__(self, config):
        super().__init__()
        self.conv = Conv1d(config.hidden_size, config.hidden_size, kernel_size=config.downsampling_rate,
                           stride=config.downsampling_rate)
        self.activation = F.get_activation(config.hidden_act)
        self.LayerNorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def construct(self, char_encoding):
        cls_encoding = char_encoding[:, 0:1, :]
        downsampled = self.activation(self.conv(char_encoding.swapaxes(1, 2)).swapaxes(1, 2))
        return self.LayerNorm(F.cat([cls_encoding, downsampled[:, 0:-1, :]], 1))


class ConvProjection(nn.Cell):
    """Projects the concatenated (characters, repeated molecules) from 2 * hidden back to hidden with a convolution
    over `upsampling_kernel_size` characters ("same" zero padding, the extra pad at the end)."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.conv = Conv1d(config.hidden_size * 2, config.hidden_size, kernel_size=config.upsampling_kernel_size,
                           stride=1)
        self.activation = F.get_activation(config.hidden_act)
        self.LayerNorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def construct(self, inputs, final_seq_char_positions=None):
        if final_seq_char_positions is not None:
            raise NotImplementedError("CanineForMaskedLM is currently not supported")
        pad_total = self.config.upsampling_kernel_size - 1
        pad_beg = pad_total // 2
        padded = F.pad(inputs.swapaxes(1, 2), (pad_beg, pad_total - pad_beg))
        result = self.activation(self.conv(padded).swapaxes(1, 2))
        return self.dropout(self.LayerNorm(result))


class CanineSelfAttention(nn.Cell):
    """Attention of `from_tensor` over `to_tensor`. The mask is either (B, Sq, Sk) of 1/0 (the local encoder's) or
    an additive (B, 1, Sq, Sk) mask."""

    def __init__(self, config):
        super().__init__()
        if config.hidden_size % config.num_attention_heads != 0 and not hasattr(config, "embedding_size"):
            raise ValueError(f"The hidden size ({config.hidden_size}) is not a multiple of the number of attention "
                             f"heads ({config.num_attention_heads})")
        self.num_attention_heads = config.num_attention_heads
        self.attention_head_size = int(config.hidden_size / config.num_attention_heads)
        self.all_head_size = self.num_attention_heads * self.attention_head_size
        self.query = Linear(config.hidden_size, self.all_head_size)
        self.key = Linear(config.hidden_size, self.all_head_size)
        self.value = Linear(config.hidden_size, self.all_head_size)
        self.dropout = Dropout(config.attention_probs_dropout_prob)

    def _heads(self, x):
        # swapaxes because Tensor.transpose(1, 2) fails inside jit on CPU
        return x.reshape(x.shape[0], x.shape[1], self.num_attention_heads, self.attention_head_size).swapaxes(1, 2)

    def construct(self, from_tensor, to_tensor, attention_mask=None):
        query, key, value = (self._heads(self.query(from_tensor)), self._heads(self.key(to_tensor)),
                             self._heads(self.value(to_tensor)))
        scores = F.matmul(query, key.swapaxes(-1, -2)) / math.sqrt(self.attention_head_size)
        if attention_mask is not None:
            if attention_mask.ndim == 3:
                # 1 = attend, 0 = not; (1 - m) * min as HF, so a fully masked row stays a uniform softmax
                attention_mask = (1.0 - attention_mask[:, None].astype(ms.float32)) * F.finfo_min(scores.dtype)
            scores = scores + attention_mask.astype(scores.dtype)
        probs = F.softmax(scores, -1)
        context = F.matmul(self.dropout(probs), value).swapaxes(1, 2)
        return context.reshape(context.shape[0], context.shape[1], self.all_head_size), probs


class CanineSelfOutput(nn.Cell):
    def __init__(self, config):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def construct(self, hidden_states, input_tensor):
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + input_tensor)


class CanineAttention(nn.Cell):
    """Full self-attention, or (`local=True`) attention block by block: query chunks of `attend_from_chunk_width`
    (every `attend_from_chunk_stride`) attend to the matching key chunks; optionally every block also sees the
    first position, and the first position sees everything (HF's options of the same names)."""

    def __init__(self, config, local=False, always_attend_to_first_position=False,
                 first_position_attends_to_all=False, attend_from_chunk_width=128, attend_from_chunk_stride=128,
                 attend_to_chunk_width=128, attend_to_chunk_stride=128):
        super().__init__()
        self.self = CanineSelfAttention(config)
        self.output = CanineSelfOutput(config)
        self.local = local
        if attend_from_chunk_width < attend_from_chunk_stride:
            raise ValueError(
                "`attend_from_chunk_width` < `attend_from_chunk_stride` would cause sequence positions to get skipped.")
        if attend_to_chunk_width < attend_to_chunk_stride:
            raise ValueError(
                "`attend_to_chunk_width` < `attend_to_chunk_stride`would cause sequence positions to get skipped.")
        self.always_attend_to_first_position = always_attend_to_first_position
        self.first_position_attends_to_all = first_position_attends_to_all
        self.attend_from_chunk_width = attend_from_chunk_width
        self.attend_from_chunk_stride = attend_from_chunk_stride
        self.attend_to_chunk_width = attend_to_chunk_width
        self.attend_to_chunk_stride = attend_to_chunk_stride

    def _chunks(self, seq_length):
        from_chunks, to_chunks = [], []
        from_start = 0
        if self.first_position_attends_to_all:
            from_chunks.append((0, 1))
            to_chunks.append((0, seq_length))
            from_start = 1
        for start in range(from_start, seq_length, self.attend_from_chunk_stride):
            from_chunks.append((start, min(seq_length, start + self.attend_from_chunk_width)))
        for start in range(0, seq_length, self.attend_to_chunk_stride):
            to_chunks.append((start, min(seq_length, start + self.attend_to_chunk_width)))
        if len(from_chunks) != len(to_chunks):
            raise ValueError(f"Expected to have same number of `from_chunks` ({from_chunks}) and `to_chunks` "
                             f"({to_chunks}). Check strides.")
        return zip(from_chunks, to_chunks)

    def construct(self, hidden_states, attention_mask=None):
        """Returns (output, attention maps): one map, or for local attention one per block."""
        if not self.local:
            context, probs = self.self(hidden_states, hidden_states, attention_mask)
            return self.output(context, hidden_states), (probs,)
        contexts, all_probs = [], ()
        for (from_start, from_end), (to_start, to_end) in self._chunks(hidden_states.shape[1]):
            from_chunk = hidden_states[:, from_start:from_end, :]
            to_chunk = hidden_states[:, to_start:to_end, :]
            mask_chunk = attention_mask[:, from_start:from_end, to_start:to_end]
            if self.always_attend_to_first_position:
                mask_chunk = F.cat([attention_mask[:, from_start:from_end, 0:1], mask_chunk], 2)
                to_chunk = F.cat([hidden_states[:, 0:1, :], to_chunk], 1)
            context, probs = self.self(from_chunk, to_chunk, mask_chunk)
            contexts.append(context)
            all_probs += (probs,)
        return self.output(F.cat(contexts, 1), hidden_states), all_probs


class CanineIntermediate(nn.Cell):
    def __init__(self, config):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.intermediate_size)
        self.intermediate_act_fn = F.get_activation(config.hidden_act)

    def construct(self, hidden_states):
        return self.intermediate_act_fn(self.dense(hidden_states))


class CanineOutput(nn.Cell):
    def __init__(self, config):
        super().__init__()
        self.dense = Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def construct(self, hidden_states, input_tensor):
        return self.LayerNorm(self.dropout(self.dense(hidden_states)) + input_tensor)


class CanineLayer(GradientCheckpointingLayer):
    def __init__(self, config, local, always_attend_to_first_position, first_position_attends_to_all,
                 attend_from_chunk_width, attend_from_chunk_stride, attend_to_chunk_width, attend_to_chunk_stride):
        super().__init__()
        self.attention = CanineAttention(config, local, always_attend_to_first_position,
                                         first_position_attends_to_all, attend_from_chunk_width,
                                         attend_from_chunk_stride, attend_to_chunk_width, attend_to_chunk_stride)
        self.intermediate = CanineIntermediate(config)
        self.output = CanineOutput(config)

    def construct(self, hidden_states, attention_mask=None):
        attention_output, probs = self.attention(hidden_states, attention_mask)
        return self.output(self.intermediate(attention_output), attention_output), probs


class CanineEncoder(nn.Cell):
    def __init__(self, config, local=False, always_attend_to_first_position=False,
                 first_position_attends_to_all=False, attend_from_chunk_width=128, attend_from_chunk_stride=128,
                 attend_to_chunk_width=128, attend_to_chunk_stride=128):
        super().__init__()
        self.layer = nn.CellList([
            CanineLayer(config, local, always_attend_to_first_position, first_position_attends_to_all,
                        attend_from_chunk_width, attend_from_chunk_stride, attend_to_chunk_width,
                        attend_to_chunk_stride)
            for _ in range(config.num_hidden_layers)])

    def construct(self, hidden_states, attention_mask=None, output_attentions=False, output_hidden_states=False):
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layer:
            hidden_states, probs = layer(hidden_states, attention_mask)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            if output_attentions:
                # a local layer reports its first block's map only, as HF's encoder does
                all_attentions += (probs[0],)
        return hidden_states, all_hidden_states, all_attentions


class CaninePooler(nn.Cell):
    """tanh(dense(first molecule))."""

    def __init__(self, config):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)

    def construct(self, hidden_states):
        return F.tanh(self.dense(hidden_states[:, 0]))


class CaninePreTrainedModel(PreTrainedModel):
    config_class = CanineConfig
    base_model_prefix = "canine"
    supports_gradient_checkpointing = True


class CanineModel(CaninePreTrainedModel):
    """Characters -> local encoder -> molecules -> deep encoder -> back to characters -> final encoder."""

    def __init__(self, config: CanineConfig, add_pooling_layer=True):
        super().__init__(config)
        shallow_config = copy.deepcopy(config)
        shallow_config.num_hidden_layers = 1
        stride = config.local_transformer_stride
        self.char_embeddings = CanineEmbeddings(config)
        self.initial_char_encoder = CanineEncoder(shallow_config, local=True, attend_from_chunk_width=stride,
                                                  attend_from_chunk_stride=stride, attend_to_chunk_width=stride,
                                                  attend_to_chunk_stride=stride)
        self.chars_to_molecules = CharactersToMolecules(config)
        self.encoder = CanineEncoder(config)
        self.projection = ConvProjection(config)
        self.final_char_encoder = CanineEncoder(shallow_config)
        self.pooler = CaninePooler(config) if add_pooling_layer else None
        self.post_init()

    def _downsample_attention_mask(self, char_attention_mask, downsampling_rate):
        """A molecule is real if any of its characters is (max-pooling over windows; a trailing partial window is
        dropped, as the convolution drops it)."""
        batch_size, char_seq_len = char_attention_mask.shape
        num_molecules = char_seq_len // downsampling_rate
        windows = char_attention_mask[:, :num_molecules * downsampling_rate].astype(ms.float32)
        return ops.amax(windows.reshape(batch_size, num_molecules, downsampling_rate), -1)

    def _repeat_molecules(self, molecules, char_seq_length):
        """Each molecule but the [CLS] one repeated `downsampling_rate` times; the last one also covers the
        remainder characters, so the result has `char_seq_length` rows."""
        rate = self.config.downsampling_rate
        batch_size, num_molecules, hidden = molecules.shape
        body = molecules[:, 1:, :]
        repeated = ops.broadcast_to(body[:, :, None, :], (batch_size, num_molecules - 1, rate, hidden))
        repeated = repeated.reshape(batch_size, (num_molecules - 1) * rate, hidden)
        tail_length = char_seq_length % rate + rate
        tail = ops.broadcast_to(molecules[:, -1:, :], (batch_size, tail_length, hidden))
        return F.cat([repeated, tail], 1)

    def construct(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                  inputs_embeds=None, output_attentions=None, output_hidden_states=None, return_dict=None,
                  **kwargs):
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        if input_ids is not None and inputs_embeds is not None:
            raise ValueError("You cannot specify both input_ids and inputs_embeds at the same time")
        if input_ids is None and inputs_embeds is None:
            raise ValueError("You have to specify either input_ids or inputs_embeds")
        batch_size, seq_length = input_ids.shape if input_ids is not None else inputs_embeds.shape[:2]
        if attention_mask is None:
            attention_mask = F.full((batch_size, seq_length), 1, ms.int64)
        molecule_attention_mask = self._downsample_attention_mask(attention_mask, self.config.downsampling_rate)

        char_embeddings = self.char_embeddings(input_ids=input_ids, position_ids=position_ids,
                                               token_type_ids=token_type_ids, inputs_embeds=inputs_embeds)
        # (B, S, S) 1/0: every character row sees the real characters (cut into blocks by the local attention)
        char_attention_mask = ops.broadcast_to(attention_mask.astype(ms.float32)[:, None, :],
                                               (batch_size, seq_length, seq_length))
        char_encoding, init_hidden, init_attn = self.initial_char_encoder(
            char_embeddings, char_attention_mask, output_attentions, output_hidden_states)

        molecules = self.chars_to_molecules(char_encoding)
        deep_mask = create_bidirectional_mask(molecule_attention_mask, molecules.shape[1], molecules.dtype)
        molecule_output, deep_hidden, deep_attn = self.encoder(molecules, deep_mask, output_attentions,
                                                               output_hidden_states)
        pooled_output = self.pooler(molecule_output) if self.pooler is not None else None

        repeated = self._repeat_molecules(molecule_output, seq_length)
        sequence_output = self.projection(F.cat([char_encoding, repeated], -1))
        final_mask = create_bidirectional_mask(attention_mask, seq_length, sequence_output.dtype)
        sequence_output, final_hidden, final_attn = self.final_char_encoder(sequence_output, final_mask,
                                                                            output_attentions, output_hidden_states)
        return model_output(CanineModelOutputWithPooling, {
            "last_hidden_state": sequence_output,
            "pooler_output": pooled_output,
            "hidden_states": init_hidden + deep_hidden + final_hidden if output_hidden_states else None,
            "attentions": init_attn + deep_attn + final_attn if output_attentions else None,
        }, return_dict is None or return_dict)


class CanineForSequenceClassification(CaninePreTrainedModel):
    """dropout -> linear on the pooled first molecule."""

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.canine = CanineModel(config)
        self.dropout = Dropout(config.hidden_dropout_prob)
        self.classifier = Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def construct(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                  inputs_embeds=None, labels=None, output_attentions=None, output_hidden_states=None,
                  return_dict=None, **kwargs):
        return_dict = return_dict if return_dict is not None else True
        outputs = self.canine(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                              position_ids=position_ids, inputs_embeds=inputs_embeds,
                              output_attentions=output_attentions, output_hidden_states=output_hidden_states)
        logits = self.classifier(self.dropout(outputs["pooler_output"]))
        loss = sequence_classification_loss(labels, logits, self.config) if labels is not None else None
        return model_output(SequenceClassifierOutput, {
            "loss": loss,
            "logits": logits,
            "hidden_states": outputs.get("hidden_states"),
            "attentions": outputs.get("attentions"),
        }, return_dict)


class CanineForMultipleChoice(CaninePreTrainedModel):
    """Inputs of shape (B, num_choices, S); one score per choice from the pooled output."""

    def __init__(self, config):
        super().__init__(config)
        self.canine = CanineModel(config)
        self.dropout = Dropout(config.hidden_dropout_prob)
        self.classifier = Linear(config.hidden_size, 1)
        self.post_init()

    def construct(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                  inputs_embeds=None, labels=None, output_attentions=None, output_hidden_states=None,
                  return_dict=None, **kwargs):
        return_dict = return_dict if return_dict is not None else True
        num_choices = input_ids.shape[1] if input_ids is not None else inputs_embeds.shape[1]

        def flat(x):
            return None if x is None else x.reshape((-1,) + tuple(x.shape[2:]))

        outputs = self.canine(flat(input_ids), attention_mask=flat(attention_mask),
                              token_type_ids=flat(token_type_ids), position_ids=flat(position_ids),
                              inputs_embeds=flat(inputs_embeds), output_attentions=output_attentions,
                              output_hidden_states=output_hidden_states)
        logits = self.classifier(self.dropout(outputs["pooler_output"])).reshape(-1, num_choices)
        loss = fixed_cross_entropy(logits, labels) if labels is not None else None
        return model_output(MultipleChoiceModelOutput, {
            "loss": loss,
            "logits": logits,
            "hidden_states": outputs.get("hidden_states"),
            "attentions": outputs.get("attentions"),
        }, return_dict)


class CanineForTokenClassification(CaninePreTrainedModel):
    """A label per character."""

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.canine = CanineModel(config)
        self.dropout = Dropout(config.hidden_dropout_prob)
        self.classifier = Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def construct(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                  inputs_embeds=None, labels=None, output_attentions=None, output_hidden_states=None,
                  return_dict=None, **kwargs):
        return_dict = return_dict if return_dict is not None else True
        outputs = self.canine(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
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


class CanineForQuestionAnswering(CaninePreTrainedModel):
    """Span start/end logits over characters."""

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.canine = CanineModel(config)
        self.qa_outputs = Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def construct(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                  inputs_embeds=None, start_positions=None, end_positions=None, output_attentions=None,
                  output_hidden_states=None, return_dict=None, **kwargs):
        return_dict = return_dict if return_dict is not None else True
        outputs = self.canine(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
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
    "CanineForMultipleChoice",
    "CanineForQuestionAnswering",
    "CanineForSequenceClassification",
    "CanineForTokenClassification",
    "CanineLayer",
    "CanineModel",
    "CaninePreTrainedModel",
]
