"""LiLT parity with torch `transformers` on tiny random checkpoints: the shared encoder tests on text + layout inputs
(token boxes, all-zero boxes on padding), plus the box-free default and the width checks of the layout stream."""

import numpy as np
import transformers

from mindone.transformers import (
    LiltForQuestionAnswering,
    LiltForSequenceClassification,
    LiltForTokenClassification,
    LiltModel,
)
from tests import parity
from tests.models.encoder_parity import QA_LABELS, SEQUENCE_LABELS, EncoderFamilyTests
from tests.models.head_parity import assert_matches_torch


class TestLilt(EncoderFamilyTests):
    config_class = transformers.LiltConfig
    # hidden 48: six box embeddings of 48 // 6 each; layout stream 48 // 4 = 12 wide (head size 3)
    base_config = dict(vocab_size=99, hidden_size=48, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                       max_position_embeddings=64, type_vocab_size=1, num_labels=3, pad_token_id=1,
                       channel_shrink_ratio=4, max_2d_position_embeddings=128)
    heads = [
        (LiltModel, ["last_hidden_state", "pooler_output", "hidden_states", "attentions"], {}),
        (LiltForSequenceClassification, ["logits", "loss"], SEQUENCE_LABELS),
        (LiltForTokenClassification, ["logits", "loss", "attentions"], {"labels": "token_classes"}),
        (LiltForQuestionAnswering, ["start_logits", "end_logits", "loss"], QA_LABELS),
    ]
    loss_head = (LiltForTokenClassification, {"labels": "token_classes"})

    def batch(self, seed=0, batch_size=2, seq_len=9, pad=3):
        """Token ids as for RoBERTa plus a (x0, y0, x1, y1) box per token; padding has the zero box.

        Coordinates stay below 128 (real checkpoints: 1024 rows for 0..1000) so the box tables' gradients are not
        mostly zero rows, which would shrink the metric's mean |torch| and blow up the relative error."""
        inputs = super().batch(seed, batch_size, seq_len, pad)
        rng = np.random.RandomState(seed + 100)
        corner = rng.randint(0, 80, (batch_size, seq_len, 2))
        size = rng.randint(0, 48, (batch_size, seq_len, 2))
        bbox = np.concatenate([corner, corner + size], -1).astype(np.int64)
        inputs["bbox"] = np.where(inputs["attention_mask"][..., None] == 1, bbox, 0)
        return inputs

    def test_without_boxes_matches_torch(self, checkpoints):
        torch_model, path = checkpoints(transformers.LiltModel)
        inputs = self.batch(seed=11)
        del inputs["bbox"]
        assert_matches_torch(LiltModel, torch_model, path, inputs, ["last_hidden_state", "pooler_output"])

    def test_inputs_embeds_positions_match_torch(self, checkpoints):
        torch_model, path = checkpoints(transformers.LiltModel)
        embeds = np.random.RandomState(3).randn(2, 7, 48).astype(np.float32)
        bbox = self.batch(seed=3, seq_len=7)["bbox"]
        assert_matches_torch(LiltModel, torch_model, path, {"inputs_embeds": embeds, "bbox": bbox},
                             ["last_hidden_state"])

    def test_layout_stream_parameters_have_the_checkpoint_shapes(self, checkpoints):
        torch_model, path = checkpoints(transformers.LiltModel)
        ours = parity.load_ours(LiltModel, path)
        shapes = {name: tuple(p.shape) for name, p in ours.parameters_and_names()}
        assert shapes == {name: tuple(p.shape) for name, p in torch_model.state_dict().items()}
