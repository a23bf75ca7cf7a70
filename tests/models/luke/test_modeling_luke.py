"""LUKE parity with torch `transformers` on tiny random checkpoints: the shared encoder tests on word + entity
inputs (a padded entity and padded words in the second row; mentions of 1-3 tokens with -1 slots; an entity table
narrower than hidden, so the projection is exercised), plus the entity heads, words-only inputs and plain attention."""

import numpy as np
import transformers

from mindone.transformers import (
    LukeForEntityClassification,
    LukeForEntityPairClassification,
    LukeForEntitySpanClassification,
    LukeForMaskedLM,
    LukeForMultipleChoice,
    LukeForQuestionAnswering,
    LukeForSequenceClassification,
    LukeForTokenClassification,
    LukeModel,
)
from tests import parity
from tests.models.encoder_parity import QA_LABELS, SEQUENCE_LABELS, EncoderFamilyTests
from tests.models.head_parity import assert_gradients_match_torch, assert_matches_torch

ENTITY_VOCAB = 20
ENTITY_FIELDS = ["logits", "loss", "hidden_states", "entity_hidden_states", "attentions"]
SPAN_INPUTS = {"entity_start_positions": np.array([[1, 3, 5], [2, 4, 0]], np.int64),
               "entity_end_positions": np.array([[2, 3, 7], [3, 5, 0]], np.int64),
               "labels": np.array([[0, 2, 1], [1, 0, -100]], np.int64)}


class TestLuke(EncoderFamilyTests):
    config_class = transformers.LukeConfig
    base_config = dict(vocab_size=99, entity_vocab_size=ENTITY_VOCAB, entity_emb_size=16, hidden_size=32,
                       intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64,
                       type_vocab_size=2, num_labels=3, pad_token_id=1, bos_token_id=0, eos_token_id=2)
    heads = [
        (LukeModel, ["last_hidden_state", "pooler_output", "hidden_states", "attentions", "entity_last_hidden_state",
                     "entity_hidden_states"], {}),
        (LukeForMaskedLM, ["logits", "entity_logits", "loss", "mlm_loss", "mep_loss", "entity_hidden_states"],
         {"labels": "tokens", "entity_labels": np.array([[3, -100, 7], [5, 2, -100]], np.int64)}),
        (LukeForSequenceClassification, ENTITY_FIELDS, SEQUENCE_LABELS),
        (LukeForTokenClassification, ENTITY_FIELDS, {"labels": "token_classes"}),
        (LukeForQuestionAnswering, ["start_logits", "end_logits", "loss", "entity_hidden_states"], QA_LABELS),
        (LukeForEntityClassification, ENTITY_FIELDS, {"labels": np.array([2, 0], np.int64)}),
        (LukeForEntityPairClassification, ENTITY_FIELDS, {"labels": np.array([1, 2], np.int64)}),
        (LukeForEntitySpanClassification, ENTITY_FIELDS, SPAN_INPUTS),
    ]
    masked_lm = LukeForMaskedLM
    multiple_choice = LukeForMultipleChoice
    first_token_id = 4

    def batch(self, seed=0, batch_size=2, seq_len=9, pad=3):
        """Right-padded words as for RoBERTa, two segments, and three entities per row: the second row's last
        entity is padding; mention position slots (max_mention_length 3) unused = -1."""
        inputs = super().batch(seed, batch_size, seq_len, pad)
        rng = np.random.RandomState(seed + 100)
        inputs["token_type_ids"] = (np.arange(seq_len)[None, :] >= 4).astype(np.int64).repeat(batch_size, 0)
        entity_ids = rng.randint(2, ENTITY_VOCAB, (batch_size, 3)).astype(np.int64)
        entity_mask = np.ones((batch_size, 3), np.int64)
        entity_mask[1, 2] = 0
        entity_ids[1, 2] = 0
        positions = np.full((batch_size, 3, 3), -1, np.int64)
        positions[0, 0, :2], positions[0, 1, :1], positions[0, 2, :3] = [1, 2], [3], [5, 6, 7]
        positions[1, 0, :2], positions[1, 1, :2] = [2, 3], [4, 5]
        inputs.update(entity_ids=entity_ids, entity_attention_mask=entity_mask, entity_position_ids=positions,
                      entity_token_type_ids=np.zeros((batch_size, 3), np.int64))
        return inputs

    def test_words_only_matches_torch(self, checkpoints):
        torch_model, path = checkpoints(transformers.LukeModel)
        inputs = {k: v for k, v in self.batch(seed=11).items() if not k.startswith("entity")}
        assert_matches_torch(LukeModel, torch_model, path, dict(inputs, output_hidden_states=True),
                             ["last_hidden_state", "pooler_output", "hidden_states"])

    def test_inputs_embeds_with_entities_match_torch(self, checkpoints):
        torch_model, path = checkpoints(transformers.LukeModel)
        inputs = self.batch(seed=3)
        del inputs["input_ids"], inputs["attention_mask"]
        inputs["inputs_embeds"] = np.random.RandomState(3).randn(2, 9, 32).astype(np.float32)
        assert_matches_torch(LukeModel, torch_model, path, inputs, ["last_hidden_state", "entity_last_hidden_state"])

    def test_plain_attention_and_entity_width_of_hidden_match_torch(self, checkpoints):
        torch_model, path = checkpoints(transformers.LukeForEntityPairClassification,
                                        use_entity_aware_attention=False, entity_emb_size=32)
        inputs = dict(self.inputs_for({"labels": np.array([1, 2], np.int64)}), output_attentions=True)
        assert_matches_torch(LukeForEntityPairClassification, torch_model, path, inputs,
                             ["logits", "loss", "attentions"])

    def test_entity_span_gradients_match_torch(self, checkpoints):
        torch_model, path = checkpoints(transformers.LukeForEntitySpanClassification)
        assert_gradients_match_torch(LukeForEntitySpanClassification, torch_model, path,
                                     self.inputs_for(SPAN_INPUTS, 8))

    def test_entity_decoder_is_tied_to_the_entity_embeddings(self, checkpoints):
        torch_model, path = checkpoints(transformers.LukeForMaskedLM)
        ours = parity.load_ours(LukeForMaskedLM, path)
        assert ours.entity_predictions.decoder.weight is ours.luke.entity_embeddings.entity_embeddings.weight
        shapes = {name: tuple(p.shape) for name, p in ours.parameters_and_names()}
        assert shapes == {name: tuple(p.shape) for name, p in torch_model.named_parameters()}
