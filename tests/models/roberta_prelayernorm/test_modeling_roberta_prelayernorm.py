"""RoBERTa-PreLayerNorm parity with torch `transformers` on tiny random checkpoints (the shared encoder tests, plus
the final LayerNorm and the cross-attending decoder)."""

import numpy as np
import transformers

from mindone.transformers import (
    RobertaPreLayerNormForCausalLM,
    RobertaPreLayerNormForMaskedLM,
    RobertaPreLayerNormForMultipleChoice,
    RobertaPreLayerNormForQuestionAnswering,
    RobertaPreLayerNormForSequenceClassification,
    RobertaPreLayerNormForTokenClassification,
    RobertaPreLayerNormModel,
)
from tests import parity
from tests.models.encoder_parity import QA_LABELS, SEQUENCE_LABELS, EncoderFamilyTests
from tests.models.head_parity import assert_matches_torch


class TestRobertaPreLayerNorm(EncoderFamilyTests):
    config_class = transformers.RobertaPreLayerNormConfig
    base_config = dict(vocab_size=99, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                       max_position_embeddings=64, type_vocab_size=1, num_labels=3, pad_token_id=1, bos_token_id=0,
                       eos_token_id=2)
    heads = [
        (RobertaPreLayerNormModel, ["last_hidden_state", "pooler_output", "hidden_states", "attentions"], {}),
        (RobertaPreLayerNormForMaskedLM, ["logits", "loss"], {"labels": "tokens"}),
        (RobertaPreLayerNormForSequenceClassification, ["logits", "loss"], SEQUENCE_LABELS),
        (RobertaPreLayerNormForTokenClassification, ["logits", "loss"], {"labels": "token_classes"}),
        (RobertaPreLayerNormForQuestionAnswering, ["start_logits", "end_logits", "loss"], QA_LABELS),
    ]
    masked_lm = RobertaPreLayerNormForMaskedLM
    multiple_choice = RobertaPreLayerNormForMultipleChoice
    causal_lm = RobertaPreLayerNormForCausalLM

    def test_tied_decoder_shares_the_word_embedding(self, checkpoints):
        _, path = checkpoints(transformers.RobertaPreLayerNormForMaskedLM)
        ours = parity.load_ours(RobertaPreLayerNormForMaskedLM, path)
        assert ours.lm_head.decoder.weight is ours.roberta_prelayernorm.embeddings.word_embeddings.weight

    def test_decoder_with_cross_attention_matches_torch(self, checkpoints):
        torch_model, path = checkpoints(transformers.RobertaPreLayerNormForCausalLM, is_decoder=True,
                                        add_cross_attention=True)
        inputs = self.batch(seed=12)
        inputs["attention_mask"] = np.ones_like(inputs["attention_mask"])
        rng = np.random.RandomState(12)
        inputs.update(encoder_hidden_states=rng.randn(2, 5, 32).astype(np.float32),
                      encoder_attention_mask=np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], np.int64),
                      labels=inputs["input_ids"], output_attentions=True, use_cache=False)
        assert_matches_torch(RobertaPreLayerNormForCausalLM, torch_model, path, inputs,
                             ["logits", "loss", "attentions", "cross_attentions"], "pynative")
