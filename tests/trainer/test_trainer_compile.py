"""The compiled training step is reused across steps: batches of varying length are padded up to a few sequence-length
buckets (issue 18 item 5), without changing the losses.

Graphs are counted with MindSpore's own set of compiled phases (`mindspore.graph.api.ms_compile_cache`). Before the
buckets, every new padded batch length compiled a new forward+backward graph (a 3.2M-parameter Llama: 12 graphs in
14 steps, each a few seconds to compile against ~0.1 s to run a step; `benchmarks/bench_trainer.py`).
"""

import numpy as np
import pytest
import transformers

from mindone.transformers import LlamaForCausalLM, LlamaForSequenceClassification
from mindone.transformers.trainer import Trainer, TrainerCallback, TrainingArguments
from mindone.transformers.trainer.data import bucket_lengths, pad_to_bucket
from tests import parity

VOCAB = 99


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    config = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                      pad_token_id=0, tie_word_embeddings=False, num_labels=3)
    return {cls.__name__: parity.save_torch(parity.torch_reference(getattr(transformers, cls.__name__), config, seed=1),
                                            str(tmp_path_factory.mktemp(cls.__name__)))
            for cls in (LlamaForCausalLM, LlamaForSequenceClassification)}


def varying_rows(n=24, seed=0, classify=False):
    rng = np.random.RandomState(seed)
    rows = []
    for _ in range(n):
        ids = rng.randint(1, VOCAB, rng.randint(5, 31)).tolist()
        rows.append({"input_ids": ids, "labels": int(rng.randint(0, 3)) if classify else ids})
    return rows


def pad_collator(rows):
    """Pads each batch to its longest row, as `DataCollatorWithPadding` / `DataCollatorForSeq2Seq` do."""
    length = max(len(r["input_ids"]) for r in rows)
    ids = np.zeros((len(rows), length), np.int64)
    mask = np.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, :len(r["input_ids"])] = r["input_ids"]
        mask[i, :len(r["input_ids"])] = 1
    if isinstance(rows[0]["labels"], int):
        labels = np.asarray([r["labels"] for r in rows], np.int64)
    else:
        labels = np.where(mask == 1, ids, -100)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


class GraphCounter(TrainerCallback):
    """The compiled training-step graphs after each optimizer step."""

    def __init__(self):
        self.per_step = []
        self.before = self._compiled()  # other tests in this process compiled training steps too

    @staticmethod
    def _compiled():
        from mindspore.graph.api import ms_compile_cache

        return {p for p in ms_compile_cache if "grad_step" in p}

    def on_step_end(self, args, state, control, **kwargs):
        self.per_step.append(self._compiled() - self.before)


def train(checkpoint, tmp_path, rows, cls=LlamaForCausalLM, **kwargs):
    counter = GraphCounter()
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, learning_rate=5e-3,
                             logging_steps=1, save_strategy="no", disable_tqdm=True, seed=3, **kwargs)
    model = cls.from_pretrained(checkpoint[cls.__name__], dtype="float32")
    trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=pad_collator, callbacks=[counter])
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h and "train_loss" not in h]
    return trainer, counter, logs


def test_varying_lengths_compile_one_graph_per_bucket_and_none_after_the_first_epoch(checkpoint, tmp_path):
    rows = varying_rows()
    _, counter, _ = train(checkpoint, tmp_path, rows, num_train_epochs=2)
    steps_per_epoch = len(rows) // 4
    lengths = {max(len(r["input_ids"]) for r in rows[i:i + 4]) for i in range(0, len(rows), 4)}
    assert len(lengths) >= 4, "the data must have several batch lengths for this test to mean something"
    first_epoch = counter.per_step[steps_per_epoch - 1]
    # padded batch lengths run 5..30: buckets 16 and 32 (one graph each), not one graph per batch length
    assert len(first_epoch) <= 2, f"{len(first_epoch)} training graphs for batch lengths {sorted(lengths)}"
    assert counter.per_step[-1] == first_epoch, "graphs compiled after the first epoch"


@pytest.mark.parametrize("task", ["causal_lm", "classification"])
def test_bucket_padding_leaves_losses_and_grad_norms_unchanged(checkpoint, tmp_path, task):
    """Compiled with buckets against PyNative on the unpadded batches (which pads nothing)."""
    classify = task == "classification"
    cls = LlamaForSequenceClassification if classify else LlamaForCausalLM
    rows = varying_rows(n=12, seed=1, classify=classify)
    _, _, bucketed = train(checkpoint, tmp_path / "jit", rows, cls=cls, max_steps=3)
    _, _, plain = train(checkpoint, tmp_path / "pynative", rows, cls=cls, max_steps=3, jit_mode=False)
    assert len(bucketed) == len(plain) == 3
    for ours, ref in zip(bucketed, plain):
        for key in ("loss", "grad_norm"):
            assert abs(ours[key] - ref[key]) <= 1e-5 * abs(ref[key]), (key, ours, ref)


def test_bucket_lengths():
    assert bucket_lengths("auto", 64) == [16, 32, 48, 64]
    assert bucket_lengths("auto", 100)[-3:] == [64, 96, 100]
    assert bucket_lengths([64, 8, 200], 128) == [8, 64]
    assert bucket_lengths(None) == []


def test_pad_to_bucket_pads_only_when_the_loss_cannot_change():
    ids = np.arange(1, 11, dtype=np.int64).reshape(2, 5)
    mask = np.ones_like(ids)
    out = pad_to_bucket({"input_ids": ids, "attention_mask": mask, "labels": ids}, [8], pad_token_id=7, causal=False)
    assert out["input_ids"].shape == (2, 8) and (out["input_ids"][:, 5:] == 7).all()
    assert (out["attention_mask"][:, 5:] == 0).all() and (out["labels"][:, 5:] == -100).all()
    assert (out["input_ids"][:, :5] == ids).all()
    # causal LM without a mask: right padding cannot reach earlier positions; the pad id defaults to 0
    out = pad_to_bucket({"input_ids": ids, "labels": ids}, [8], pad_token_id=None, causal=True)
    assert out["input_ids"].shape == (2, 8) and (out["labels"][:, 5:] == -100).all()
    # left as they are: an encoder without a mask, an unknown token-level input, float (multi-label) labels,
    # a batch longer than every bucket
    untouched = [
        ({"input_ids": ids}, dict(causal=False)),
        ({"input_ids": ids, "attention_mask": mask, "pixel_mask": mask}, dict(causal=True)),
        ({"input_ids": ids, "attention_mask": mask, "labels": ids.astype(np.float32)}, dict(causal=False)),
        ({"input_ids": np.ones((2, 9), np.int64)}, dict(causal=True)),
    ]
    for batch, kwargs in untouched:
        out = pad_to_bucket(batch, [8], pad_token_id=0, **kwargs)
        assert all(out[k] is batch[k] for k in batch), sorted(batch)
    # encoder-decoder: the decoder side is padded along its own length
    out = pad_to_bucket({"input_ids": ids, "attention_mask": mask, "labels": ids[:, :3]}, [8], pad_token_id=0,
                        causal=False, encoder_decoder=True)
    assert out["input_ids"].shape == (2, 8) and out["labels"].shape == (2, 8)
    assert (out["labels"][:, 3:] == -100).all()


def test_seq_len_buckets_argument_is_checked(tmp_path):
    with pytest.raises(ValueError, match="seq_len_buckets"):
        TrainingArguments(output_dir=str(tmp_path), seq_len_buckets="powers")
    assert TrainingArguments(output_dir=str(tmp_path), seq_len_buckets="none").seq_len_buckets is None
