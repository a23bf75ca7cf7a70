"""Data2Vec-Text parity with torch `transformers` on tiny random checkpoints (the shared encoder tests)."""

import transformers

from mindone.transformers import (
    Data2VecTextForCausalLM,
    Data2VecTextForMaskedLM,
    Data2VecTextForMultipleChoice,
    Data2VecTextForQuestionAnswering,
    Data2VecTextForSequenceClassification,
    Data2VecTextForTokenClassification,
    Data2VecTextModel,
)
from tests.models.encoder_parity import QA_LABELS, SEQUENCE_LABELS, EncoderFamilyTests


class TestData2VecText(EncoderFamilyTests):
    config_class = transformers.Data2VecTextConfig
    base_config = dict(vocab_size=99, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                       max_position_embeddings=64, type_vocab_size=1, num_labels=3, pad_token_id=1, bos_token_id=0,
                       eos_token_id=2)
    heads = [
        (Data2VecTextModel, ["last_hidden_state", "pooler_output", "hidden_states", "attentions"], {}),
        (Data2VecTextForMaskedLM, ["logits", "loss"], {"labels": "tokens"}),
        (Data2VecTextForSequenceClassification, ["logits", "loss"], SEQUENCE_LABELS),
        (Data2VecTextForTokenClassification, ["logits", "loss"], {"labels": "token_classes"}),
        (Data2VecTextForQuestionAnswering, ["start_logits", "end_logits", "loss"], QA_LABELS),
    ]
    masked_lm = Data2VecTextForMaskedLM
    multiple_choice = Data2VecTextForMultipleChoice
    causal_lm = Data2VecTextForCausalLM

    def test_checkpoint_keys_sit_under_data2vec_text(self, checkpoints):
        _, path = checkpoints(transformers.Data2VecTextForMaskedLM)
        ours, info = Data2VecTextForMaskedLM.from_pretrained(path, output_loading_info=True)
        assert info["missing_keys"] == [] and info["unexpected_keys"] == []
        assert ours.lm_head.decoder.weight is ours.data2vec_text.embeddings.word_embeddings.weight
        assert "data2vec_text.encoder.layer.1.output.LayerNorm.weight" in dict(ours.parameters_and_names())
