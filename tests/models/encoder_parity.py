"""The parity tests every BERT-like encoder family shares, written once.

A family's test file subclasses `EncoderFamilyTests` and states only its facts: the config, its head classes with the
output fields each one returns, and (when its inputs are not plain right-padded token ids) how a batch looks. Every
head is compared with torch `transformers` in PyNative; graph mode runs the base model by default and every head under
`-m slow`; fp16, gradients, multiple choice and (where the family has one) the causal LM head are checked once each.
"""

import numpy as np
import pytest
import transformers

from tests import parity
from tests.models.head_parity import assert_gradients_match_torch, assert_matches_torch, checkpoint_factory

# labels for a head, by name: "tokens" (masked / causal LM), "token_classes" (token classification), or an array
QA_LABELS = {"start_positions": np.array([1, 4], np.int64), "end_positions": np.array([3, 20], np.int64)}
SEQUENCE_LABELS = {"labels": np.array([0, 2], np.int64)}
# a head class's name after the family prefix -> the Auto class that must pick it
AUTO_CLASSES = {"Model": "AutoModel", "ForMaskedLM": "AutoModelForMaskedLM",
                "ForSequenceClassification": "AutoModelForSequenceClassification",
                "ForTokenClassification": "AutoModelForTokenClassification",
                "ForQuestionAnswering": "AutoModelForQuestionAnswering"}


def _head_overrides(extra):
    # HF's QA heads split their logits in two: they need num_labels == 2
    return {"num_labels": 2} if "start_positions" in extra else {}


class EncoderFamilyTests:
    config_class = None  # the transformers config class
    base_config = {}  # tiny-config kwargs; must include vocab_size and pad_token_id
    # (our class, output fields to compare, extra inputs) for every head taking (batch, seq) inputs
    heads = []
    masked_lm = None
    # (head, its labels) for the fp16 and gradient checks; None: the masked LM with token labels
    loss_head = None
    multiple_choice = None
    causal_lm = None  # a head that is a decoder with `config.is_decoder=True`, if the family has one
    first_token_id = 3  # lowest id a random real token gets (below: special tokens)
    has_attentions = True  # False for families without attention (FNet)

    # ---- what a family may override -------------------------------------------------------------------------

    def make_config(self, **overrides):
        return self.config_class(**{**self.base_config, **overrides})

    def batch(self, seed=0, batch_size=2, seq_len=9, pad=3):
        """Right-padded second row and its mask (the padding side of every encoder tokenizer)."""
        rng = np.random.RandomState(seed)
        vocab, pad_id = self.base_config["vocab_size"], self.base_config["pad_token_id"]
        ids = rng.randint(self.first_token_id, vocab, (batch_size, seq_len)).astype(np.int64)
        mask = np.ones((batch_size, seq_len), np.int64)
        mask[1, seq_len - pad:] = 0
        ids[1, seq_len - pad:] = pad_id
        return dict(input_ids=ids, attention_mask=mask)

    def real_tokens(self, inputs):
        """Boolean (batch, seq): the positions that are not padding."""
        return inputs["attention_mask"].astype(bool)

    # ---- machinery --------------------------------------------------------------------------------------------

    def pytest_generate_tests(self, metafunc):
        if "head" in metafunc.fixturenames:
            metafunc.parametrize("head", self.heads, ids=[h[0].__name__ for h in self.heads])

    @pytest.fixture(scope="class")
    @classmethod
    def checkpoints(cls, tmp_path_factory):
        return checkpoint_factory(tmp_path_factory, cls().make_config)

    def _loss_head(self):
        return self.loss_head or (self.masked_lm, {"labels": "tokens"})

    def torch_class(self, ours_cls):
        return getattr(transformers, ours_cls.__name__)

    def inputs_for(self, extra, seed=4):
        inputs = self.batch(seed)
        real = self.real_tokens(inputs)
        for key, value in extra.items():
            if isinstance(value, str):
                modulus = 3 if value == "token_classes" else self.base_config["vocab_size"]
                value = np.where(real, inputs["input_ids"] % modulus, -100)
            inputs[key] = value
        return inputs

    def check_head(self, checkpoints, head, mode):
        ours_cls, fields, extra = head
        torch_model, path = checkpoints(self.torch_class(ours_cls), **_head_overrides(extra))
        inputs = dict(self.inputs_for(extra), output_hidden_states=True)
        if self.has_attentions:
            inputs["output_attentions"] = True
        assert_matches_torch(ours_cls, torch_model, path, inputs, fields, mode)

    # ---- the tests --------------------------------------------------------------------------------------------

    def test_heads_match_torch_fp32(self, checkpoints, head):
        self.check_head(checkpoints, head, "pynative")

    def test_base_model_matches_torch_in_graph_mode(self, checkpoints):
        self.check_head(checkpoints, self.heads[0], "graph")

    @pytest.mark.slow
    def test_heads_match_torch_fp32_graph(self, checkpoints, head):
        self.check_head(checkpoints, head, "graph")

    def test_fp16_close_to_torch_fp32(self, checkpoints):
        head, _ = self._loss_head()
        torch_model, path = checkpoints(self.torch_class(head))
        assert_matches_torch(head, torch_model, path, self.batch(seed=7), ["logits"], "pynative", dtype="float16")

    @pytest.mark.parametrize("mode", ["pynative", pytest.param("graph", marks=pytest.mark.slow)])
    def test_gradients_match_torch(self, checkpoints, mode):
        head, labels = self._loss_head()
        torch_model, path = checkpoints(self.torch_class(head))
        assert_gradients_match_torch(head, torch_model, path, self.inputs_for(labels, 8), mode)

    def test_multiple_choice_matches_torch(self, checkpoints):
        if self.multiple_choice is None:
            pytest.skip("the family has no multiple-choice head")
        torch_model, path = checkpoints(self.torch_class(self.multiple_choice))
        a, b = self.batch(seed=5), self.batch(seed=6)
        inputs = {k: np.stack([a[k], b[k]]) for k in a}  # (B=2, choices=2, ...)
        inputs["labels"] = np.array([1, 0], np.int64)
        assert_matches_torch(self.multiple_choice, torch_model, path, inputs, ["logits", "loss"], "pynative")

    def test_causal_lm_matches_torch_and_generates_its_tokens(self, checkpoints):
        if self.causal_lm is None:
            pytest.skip("the family has no causal LM head")
        import torch

        torch_model, path = checkpoints(self.torch_class(self.causal_lm), is_decoder=True)
        inputs = dict(self.batch(seed=9), output_hidden_states=True, use_cache=False)
        inputs["labels"] = np.where(inputs["attention_mask"] == 1, inputs["input_ids"], -100)
        assert_matches_torch(self.causal_lm, torch_model, path, inputs, ["logits", "loss", "hidden_states"],
                             "pynative", rows=self.real_tokens(inputs))
        ours = parity.load_ours(self.causal_lm, path)
        prompt = self.batch(seed=10)["input_ids"][:1, :5]
        with torch.no_grad():
            ref = torch_model.generate(torch.tensor(prompt), do_sample=False, max_new_tokens=6).numpy()
        out = parity.to_numpy(ours.generate(prompt, do_sample=False, max_new_tokens=6))
        assert np.array_equal(out, ref), f"ours:\n{out}\ntorch:\n{ref}"

    def test_auto_classes_pick_the_family(self, checkpoints):
        import mindone.transformers as ours

        family = self.heads[0][0].__name__[:-len("Model")]
        for ours_cls, _, extra in self.heads:
            auto = AUTO_CLASSES.get(ours_cls.__name__[len(family):])
            if auto is not None:
                _, path = checkpoints(self.torch_class(ours_cls), **_head_overrides(extra))
                assert type(getattr(ours, auto).from_pretrained(path)) is ours_cls, auto
