"""CANINE parity with torch `transformers` on tiny random checkpoints: the shared encoder tests on code-point inputs
whose length is not a multiple of the downsampling rate and spans several local-attention blocks (one block of the
padded row is all padding, as is one of its molecules), plus CANINE's own paths."""

import numpy as np
import pytest
import torch
import transformers

from mindone.transformers import (
    CanineForMultipleChoice,
    CanineForQuestionAnswering,
    CanineForSequenceClassification,
    CanineForTokenClassification,
    CanineModel,
)
from tests import parity
from tests.models.encoder_parity import QA_LABELS, SEQUENCE_LABELS, EncoderFamilyTests
from tests.models.head_parity import assert_matches_torch
from tests.pipelines.test_pipelines import LABELS, both

CLS, SEP = 0xE000, 0xE001


class TestCanine(EncoderFamilyTests):
    config_class = transformers.CanineConfig
    # 4 hash shards of 8; molecules of 4 characters; local attention blocks of 8 characters
    base_config = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                       max_position_embeddings=64, type_vocab_size=2, num_hash_functions=4, num_hash_buckets=97,
                       downsampling_rate=4, upsampling_kernel_size=4, local_transformer_stride=8, num_labels=3,
                       pad_token_id=0)
    heads = [
        (CanineModel, ["last_hidden_state", "pooler_output", "hidden_states", "attentions"], {}),
        (CanineForSequenceClassification, ["logits", "loss", "hidden_states"], SEQUENCE_LABELS),
        (CanineForTokenClassification, ["logits", "loss", "attentions"], {"labels": "token_classes"}),
        (CanineForQuestionAnswering, ["start_logits", "end_logits", "loss"], QA_LABELS),
    ]
    loss_head = (CanineForTokenClassification, {"labels": "token_classes"})
    multiple_choice = CanineForMultipleChoice

    def batch(self, seed=0, batch_size=2, seq_len=22, pad=7):
        """[CLS] code points [SEP], the second row right-padded with 0; 22 characters: 5 molecules + 2 left over,
        local blocks [0:8] [8:16] [16:22] (the padded row's last block is all padding), two segments."""
        rng = np.random.RandomState(seed)
        ids = rng.randint(32, 0x3000, (batch_size, seq_len)).astype(np.int64)
        ids[:, 0] = CLS
        ids[0, -1] = SEP
        ids[1, seq_len - pad - 1] = SEP
        mask = np.ones((batch_size, seq_len), np.int64)
        mask[1, seq_len - pad:] = 0
        ids[1, seq_len - pad:] = 0
        types = (np.arange(seq_len)[None, :] >= seq_len // 2).astype(np.int64).repeat(batch_size, 0)
        return dict(input_ids=ids, attention_mask=mask, token_type_ids=types * mask)

    def test_without_mask_and_types_matches_torch(self, checkpoints):
        torch_model, path = checkpoints(transformers.CanineModel)
        inputs = {"input_ids": self.batch(seed=11, seq_len=13)["input_ids"][:1]}
        assert_matches_torch(CanineModel, torch_model, path, inputs, ["last_hidden_state", "pooler_output"])

    def test_inputs_embeds_matches_torch(self, checkpoints):
        torch_model, path = checkpoints(transformers.CanineModel)
        embeds = np.random.RandomState(3).randn(2, 17, 32).astype(np.float32)
        assert_matches_torch(CanineModel, torch_model, path, {"inputs_embeds": embeds}, ["last_hidden_state"])

    def test_parameters_have_the_checkpoint_names_and_shapes(self, checkpoints):
        torch_model, path = checkpoints(transformers.CanineModel)
        ours = parity.load_ours(CanineModel, path)
        shapes = {name: tuple(p.shape) for name, p in ours.parameters_and_names()}
        assert shapes == {name: tuple(p.shape) for name, p in torch_model.state_dict().items()}


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory):
    """task -> directory with a tiny random CANINE head for the task and `CanineTokenizer` (code points, no vocab)."""
    made = {}

    def get(task, torch_cls):
        if task not in made:
            labels = LABELS.get(task, ["A", "B"])
            config = TestCanine().make_config(id2label=dict(enumerate(labels)),
                                              label2id={l: i for i, l in enumerate(labels)})
            model = parity.torch_reference(torch_cls, config, seed=len(made))
            with torch.no_grad():  # sharper random logits, so rankings are not near-ties
                for name, p in model.named_parameters():
                    if name.startswith(("classifier", "qa_outputs")):
                        p.mul_(8.0)
            directory = str(tmp_path_factory.mktemp(task))
            model.save_pretrained(directory)
            transformers.CanineTokenizer().save_pretrained(directory)
            made[task] = directory
        return made[task]

    return get


def test_text_classification_pipeline_matches_torch(pipeline_dir):
    directory = pipeline_dir("text-classification", transformers.CanineForSequenceClassification)
    both("text-classification", directory, "the cat sat on a mat", top_k=None)
    both("text-classification", directory, ["the dog sat", "john lives in paris, france"], batch_size=2)


def test_token_classification_pipeline_matches_torch(pipeline_dir):
    directory = pipeline_dir("token-classification", transformers.CanineForTokenClassification)
    both("token-classification", directory, "mary lives in paris", ignore_labels=[])

