"""FNet parity with torch `transformers` on tiny random checkpoints: the shared encoder tests (FNet has no attention
mask, so padded rows are padding tokens the Fourier mixing sees, as in HF), plus the pre-training heads."""

import numpy as np
import pytest
import transformers

from mindone.transformers import (
    FNetForMaskedLM,
    FNetForMultipleChoice,
    FNetForNextSentencePrediction,
    FNetForPreTraining,
    FNetForQuestionAnswering,
    FNetForSequenceClassification,
    FNetForTokenClassification,
    FNetModel,
)
from tests import parity
from tests.models.encoder_parity import QA_LABELS, SEQUENCE_LABELS, EncoderFamilyTests
from tests.models.head_parity import assert_matches_torch

NSP_LABELS = np.array([1, 0], np.int64)


class TestFNet(EncoderFamilyTests):
    config_class = transformers.FNetConfig
    base_config = dict(vocab_size=99, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                       max_position_embeddings=64, type_vocab_size=4, num_labels=3, pad_token_id=3)
    heads = [
        (FNetModel, ["last_hidden_state", "pooler_output", "hidden_states"], {}),
        (FNetForMaskedLM, ["logits", "loss", "hidden_states"], {"labels": "tokens"}),
        (FNetForSequenceClassification, ["logits", "loss"], SEQUENCE_LABELS),
        (FNetForTokenClassification, ["logits", "loss"], {"labels": "token_classes"}),
        (FNetForQuestionAnswering, ["start_logits", "end_logits", "loss"], QA_LABELS),
        (FNetForPreTraining, ["prediction_logits", "seq_relationship_logits", "loss"],
         {"labels": "tokens", "next_sentence_label": NSP_LABELS}),
        (FNetForNextSentencePrediction, ["logits", "loss"], {"labels": NSP_LABELS}),
    ]
    masked_lm = FNetForMaskedLM
    multiple_choice = FNetForMultipleChoice
    first_token_id = 4
    has_attentions = False

    def batch(self, seed=0, batch_size=2, seq_len=9, pad=3):
        """FNet takes no attention mask: a padded row is its ids with pad tokens, plus two segments."""
        inputs = super().batch(seed, batch_size, seq_len, pad)
        inputs.pop("attention_mask")
        inputs["token_type_ids"] = (np.arange(seq_len)[None, :] >= seq_len // 2).astype(np.int64).repeat(batch_size, 0)
        return inputs

    def real_tokens(self, inputs):
        return inputs["input_ids"] != self.base_config["pad_token_id"]

    def test_inputs_embeds_match_torch(self, checkpoints):
        torch_model, path = checkpoints(transformers.FNetModel)
        embeds = np.random.RandomState(3).randn(2, 7, 32).astype(np.float32)
        assert_matches_torch(FNetModel, torch_model, path, {"inputs_embeds": embeds}, ["last_hidden_state"])

    def test_tied_decoder_shares_the_word_embedding(self, checkpoints):
        _, path = checkpoints(transformers.FNetForMaskedLM)
        ours = parity.load_ours(FNetForMaskedLM, path)
        assert ours.cls.predictions.decoder.weight is ours.fnet.embeddings.word_embeddings.weight

    def test_tpu_short_seq_length_mismatch_raises_as_in_hf(self, checkpoints):
        _, path = checkpoints(transformers.FNetModel)
        ours = FNetModel.from_pretrained(path, use_tpu_fourier_optimizations=True, tpu_short_seq_length=16)
        with pytest.raises(ValueError, match="tpu_short_seq_length"):
            parity.run_ours(ours, self.batch())
