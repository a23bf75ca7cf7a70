"""Trainer behaviour: resuming, checkpoint format, evaluation/prediction, callbacks, fp16, recompute, errors."""

import json
import os

import numpy as np
import pytest
import torch
import transformers

import mindspore as ms
from mindone.transformers import LlamaForCausalLM, LlamaForSequenceClassification
from mindone.transformers.modeling_layers import GradientCheckpointingLayer
from mindone.transformers.trainer import (
    EvalPrediction,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)
from tests import parity

VOCAB, SEQ = 99, 12


def rows(n=20, seed=0, vary_labels=True):
    rng = np.random.RandomState(seed)
    out = []
    for _ in range(n):
        ids = rng.randint(1, VOCAB, SEQ).astype(np.int64)
        labels = ids.copy()
        if vary_labels:
            labels[: rng.randint(0, 4)] = -100
        out.append({"input_ids": ids, "labels": labels, "unused_column": "text"})
    return out


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    config = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                      pad_token_id=0, tie_word_embeddings=False, num_labels=3)
    model = parity.torch_reference(transformers.LlamaForCausalLM, config, seed=1)
    return parity.save_torch(model, str(tmp_path_factory.mktemp("trainer")))


def load(checkpoint, cls=LlamaForCausalLM):
    return cls.from_pretrained(checkpoint, dtype="float32")


def args_for(tmp_path, **kwargs):
    defaults = dict(output_dir=str(tmp_path), per_device_train_batch_size=4, learning_rate=5e-3, logging_steps=1,
                    save_strategy="no", disable_tqdm=True, seed=11)
    defaults.update(kwargs)
    return TrainingArguments(**defaults)


def step_logs(trainer):
    return [h for h in trainer.state.log_history if "loss" in h and "train_loss" not in h]


def test_resume_from_checkpoint_equals_uninterrupted_run(checkpoint, tmp_path):
    # 20 rows / batch 4 = 5 steps per epoch: the resume point (step 4) is inside epoch 0 and training crosses into
    # epoch 1, so both the data skip and the next epoch's shuffle are exercised; 2 micro-batches per step
    common = dict(max_steps=6, gradient_accumulation_steps=2, per_device_train_batch_size=2, weight_decay=0.01,
                  warmup_steps=2)
    full = Trainer(model=load(checkpoint), args=args_for(tmp_path / "full", **common), train_dataset=rows())
    full.train()

    first = Trainer(model=load(checkpoint), args=args_for(tmp_path / "run", save_strategy="steps", save_steps=4, **common),
                    train_dataset=rows())
    first.train()
    assert sorted(os.listdir(tmp_path / "run")) == ["checkpoint-4", "checkpoint-6"]

    resumed = Trainer(model=load(checkpoint), args=args_for(tmp_path / "run", save_strategy="steps", save_steps=4, **common),
                      train_dataset=rows())
    resumed.train(resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-4"))
    expected = step_logs(full)
    got = step_logs(resumed)
    assert [h["step"] for h in got] == [1, 2, 3, 4, 5, 6]  # the history before step 4 comes from the checkpoint
    for a, b in zip(got, expected):
        for key in ("loss", "grad_norm", "learning_rate", "epoch"):
            assert a[key] == pytest.approx(b[key], rel=1e-6), (a, b)
    full_state, resumed_state = full.model.state_dict(), resumed.model.state_dict()
    for name, value in full_state.items():
        np.testing.assert_allclose(resumed_state[name], value, rtol=1e-6, atol=1e-7, err_msg=name)

    last = Trainer(model=load(checkpoint), args=args_for(tmp_path / "run", save_strategy="steps", save_steps=4, **common),
                   train_dataset=rows())
    out = last.train(resume_from_checkpoint=True)  # the newest checkpoint: nothing left to do
    assert out.global_step == 6


def test_checkpoint_is_hf_format_and_torch_loads_it(checkpoint, tmp_path):
    trainer = Trainer(model=load(checkpoint), args=args_for(tmp_path, max_steps=4, save_strategy="steps", save_steps=2,
                                                            save_total_limit=1),
                      train_dataset=rows())
    trainer.train()
    assert sorted(os.listdir(tmp_path)) == ["checkpoint-4"]  # rotation kept the newest only; no temp dirs left
    ckpt = tmp_path / "checkpoint-4"
    for name in ("config.json", "model.safetensors", "optimizer.safetensors", "scheduler.json", "rng_state.json",
                 "trainer_state.json", "training_args.json"):
        assert (ckpt / name).is_file(), name
    # HF's own TrainerState reads our trainer_state.json
    state = transformers.TrainerState.load_from_json(str(ckpt / "trainer_state.json"))
    assert state.global_step == 4 and state.max_steps == 4 and len(state.log_history) == 4
    assert set(json.loads((ckpt / "trainer_state.json").read_text())) == \
        set(transformers.TrainerState().__dict__) - {"stateful_callbacks"} | {"stateful_callbacks"}

    ref = transformers.LlamaForCausalLM.from_pretrained(str(ckpt), attn_implementation="eager").eval()
    ids = np.random.RandomState(3).randint(1, VOCAB, (2, SEQ)).astype(np.int64)
    trainer.model.set_train(False)
    ours = trainer.model(input_ids=ms.Tensor(ids)).logits
    with torch.no_grad():
        theirs = ref(input_ids=torch.from_numpy(ids)).logits
    assert parity.rel_error(ours, theirs) <= parity.FP32_BAR

    trainer.save_model(str(tmp_path / "final"))
    reloaded = load(str(tmp_path / "final"))
    reloaded.set_train(False)
    assert parity.rel_error(reloaded(input_ids=ms.Tensor(ids)).logits, theirs) <= parity.FP32_BAR


class Recorder(TrainerCallback):
    def __init__(self):
        self.events = []

    def __getattribute__(self, name):
        if name.startswith("on_"):
            def record(args, state, control, **kwargs):
                self.events.append(name)
            return record
        return super().__getattribute__(name)


def test_evaluate_predict_metrics_and_callback_events(checkpoint, tmp_path):
    seen = {}

    def compute_metrics(pred: EvalPrediction):
        preds, labels = pred
        seen["shapes"] = (preds.shape, labels.shape)
        return {"token_accuracy": float((preds.argmax(-1)[:, :-1] == labels[:, 1:]).mean())}

    recorder = Recorder()
    trainer = Trainer(model=load(checkpoint), args=args_for(tmp_path, max_steps=2, eval_strategy="steps", eval_steps=2,
                                                            per_device_eval_batch_size=3),
                      train_dataset=rows(), eval_dataset=rows(7, seed=5), compute_metrics=compute_metrics,
                      callbacks=[recorder])
    trainer.train()
    metrics = trainer.evaluate()
    assert seen["shapes"] == ((7, SEQ, VOCAB), (7, SEQ))
    assert {"eval_loss", "eval_token_accuracy", "eval_runtime", "eval_samples_per_second", "epoch"} <= set(metrics)

    # eval_loss is the sample-weighted mean of per-batch mean losses (HF's rule), computed here by hand
    model = trainer.model
    model.set_train(False)
    data = rows(7, seed=5)
    expected = []
    for start in range(0, 7, 3):
        batch = data[start:start + 3]
        ids = ms.Tensor(np.stack([r["input_ids"] for r in batch]))
        labels = ms.Tensor(np.stack([r["labels"] for r in batch]))
        expected += [float(model(input_ids=ids, labels=labels).loss.asnumpy())] * len(batch)
    assert metrics["eval_loss"] == pytest.approx(np.mean(expected), rel=1e-5)

    prediction = trainer.predict(rows(5, seed=6))
    assert prediction.predictions.shape == (5, SEQ, VOCAB)
    assert prediction.label_ids.shape == (5, SEQ)
    assert "test_loss" in prediction.metrics and "test_token_accuracy" in prediction.metrics

    events = recorder.events
    assert events[0] == "on_init_end" and events[1] == "on_train_begin"
    assert events.count("on_step_begin") == 2 and events.count("on_optimizer_step") == 2
    assert events.count("on_evaluate") == 2 and events.count("on_predict") == 1
    assert "on_log" in events and "on_prediction_step" in events and "on_epoch_begin" in events
    assert events.index("on_pre_optimizer_step") < events.index("on_optimizer_step") < events.index("on_step_end")
    assert "on_train_end" in events


@pytest.mark.slow
def test_sequence_classification_with_datasets_and_best_model(checkpoint, tmp_path):
    datasets = pytest.importorskip("datasets")
    rng = np.random.RandomState(0)
    data = datasets.Dataset.from_dict({
        "input_ids": rng.randint(1, VOCAB, (16, SEQ)).tolist(),
        "labels": rng.randint(0, 3, 16).tolist(),
        "text": ["unused"] * 16,
    })
    model = load(checkpoint, LlamaForSequenceClassification)

    def accuracy(pred):
        return {"accuracy": float((pred.predictions.argmax(-1) == pred.label_ids).mean())}

    trainer = Trainer(model=model, args=args_for(tmp_path, max_steps=4, eval_strategy="steps", eval_steps=2,
                                                 save_strategy="steps", save_steps=2, load_best_model_at_end=True,
                                                 metric_for_best_model="accuracy"),
                      train_dataset=data, eval_dataset=data.select(range(8)), compute_metrics=accuracy)
    trainer.train()
    assert trainer.state.best_model_checkpoint is not None
    assert "eval_accuracy" in trainer.evaluate()


def test_fp16_tracks_fp32_and_skips_overflowing_steps(checkpoint, tmp_path):
    fp32 = Trainer(model=load(checkpoint), args=args_for(tmp_path / "a", max_steps=4), train_dataset=rows())
    fp32.train()
    fp16 = Trainer(model=load(checkpoint), args=args_for(tmp_path / "b", max_steps=4, fp16=True), train_dataset=rows())
    fp16.train()
    for a, b in zip(step_logs(fp16), step_logs(fp32)):
        assert a["loss"] == pytest.approx(b["loss"], rel=5e-3)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=2e-2)
    assert all(p.dtype == ms.float32 for p in fp16.model.trainable_params())  # float32 again after training

    class HugeScale(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            trainer.loss_scaler.scale = 2.0 ** 120  # the first step's scaled gradients overflow float16

    before = load(checkpoint).state_dict()
    trainer = Trainer(model=load(checkpoint), args=args_for(tmp_path / "c", max_steps=1, fp16=True),
                      train_dataset=rows(), callbacks=[HugeScale()])
    trainer.train()
    assert not np.isfinite(step_logs(trainer)[0]["grad_norm"])
    assert trainer.loss_scaler.scale == 2.0 ** 119
    after = trainer.model.state_dict()
    for name, value in before.items():
        np.testing.assert_array_equal(after[name], value, err_msg=f"{name} changed on a skipped step")


@pytest.mark.slow
def test_gradient_checkpointing_and_pynative_give_the_same_training(checkpoint, tmp_path):
    base = Trainer(model=load(checkpoint), args=args_for(tmp_path / "a", max_steps=3), train_dataset=rows())
    base.train()
    for i, extra in enumerate([dict(gradient_checkpointing=True), dict(jit_mode=False),
                               dict(gradient_checkpointing=True, jit_mode=False)]):
        other = Trainer(model=load(checkpoint), args=args_for(tmp_path / f"b{i}", max_steps=3, **extra),
                        train_dataset=rows())
        other.train()
        for a, b in zip(step_logs(other), step_logs(base)):
            assert a["loss"] == pytest.approx(b["loss"], rel=1e-5), extra
            assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-5), extra


def test_recompute_really_reruns_the_layer_forward_in_pynative(checkpoint):
    model = load(checkpoint)
    model.set_train(True)
    layer = model.model.layers[0]
    calls = []
    original = type(layer.mlp).construct

    def counting(self, x):
        calls.append(1)
        return original(self, x)

    ids = ms.Tensor(np.random.RandomState(0).randint(1, VOCAB, (2, SEQ)).astype(np.int64))

    def loss_fn(input_ids):
        return model(input_ids=input_ids, labels=input_ids, use_cache=False).loss

    grad_fn = ms.value_and_grad(loss_fn, None, model.trainable_params())
    type(layer.mlp).construct = counting
    try:
        grad_fn(ids)
        plain = len(calls)
        model.gradient_checkpointing_enable()
        calls.clear()
        grad_fn(ids)
        recomputed = len(calls)
    finally:
        type(layer.mlp).construct = original
    assert plain == 2 and recomputed == 4  # two layers; each MLP runs again in the backward pass
    model.gradient_checkpointing_disable()
    type(layer.mlp).construct = counting
    try:
        calls.clear()
        grad_fn(ids)
    finally:
        type(layer.mlp).construct = original
    assert len(calls) == 2 and not model.is_gradient_checkpointing  # really off again
    assert all(cell._recompute_cell is None and not str(cell._scope or "").startswith("recompute_")
               for _, cell in model.cells_and_names())


@pytest.mark.parametrize("use_jit", [False, True])
def test_gradient_checkpointing_with_the_default_use_cache(checkpoint, use_jit, caplog, monkeypatch):
    """HF: a recomputed decoder layer in training drops the cache (use_cache=False) with a warning. Without that, the
    backward replay appends the keys/values a second time (PyNative failed with a [2,4,12,24] vs [1,1,12,12] mask)."""
    monkeypatch.setattr(GradientCheckpointingLayer, "_warned_cache", False)  # warned once per process
    model = load(checkpoint)
    assert model.config.use_cache  # the default: True
    model.set_train(True)
    ids = ms.Tensor(np.random.RandomState(0).randint(1, VOCAB, (2, SEQ)).astype(np.int64))

    def loss_fn(input_ids):
        return model(input_ids=input_ids, labels=input_ids)["loss"]

    def run():
        fn = ms.value_and_grad(loss_fn, None, model.trainable_params())
        loss, grads = (ms.jit(fn) if use_jit else fn)(ids)
        return float(loss.asnumpy()), [g.asnumpy() for g in grads]

    plain_loss, plain_grads = run()
    model.gradient_checkpointing_enable()
    with caplog.at_level("WARNING"):
        loss, grads = run()
    assert loss == pytest.approx(plain_loss, rel=1e-6)
    assert max(float(np.abs(a - b).max()) for a, b in zip(grads, plain_grads)) <= 1e-6
    if not use_jit:  # a compiled forward never builds a growing cache, so there is nothing to drop or warn about
        assert "incompatible with gradient checkpointing" in caplog.text
    model.gradient_checkpointing_disable()
    loss, grads = run()
    assert loss == pytest.approx(plain_loss, rel=1e-6)
    # in inference (no backward) the cache still works under checkpointing
    model.gradient_checkpointing_enable()
    model.set_train(False)
    assert model(input_ids=ids)["past_key_values"].get_seq_length() == SEQ


@pytest.mark.parametrize("kwargs,match", [
    (dict(bf16=True), "no bfloat16 compute kernels"),
    (dict(parallel_mode="semi_auto_parallel"), "only runs data parallelism"),
    (dict(pipeline_stages=2), "pipeline parallelism"),
    (dict(optimizer_shard=True), "optimizer sharding"),
    (dict(deepspeed="ds.json"), "DeepSpeed"),
    (dict(report_to="wandb"), "report_to='wandb' is not supported"),
    (dict(load_best_model_at_end=True, eval_strategy="steps", save_strategy="epoch"), "save and eval strategy"),
])
def test_options_that_cannot_apply_raise_clear_errors(kwargs, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        TrainingArguments(output_dir=str(tmp_path), **kwargs)


def test_hf_defaults_and_field_names():
    ours, ref = TrainingArguments(), transformers.TrainingArguments(output_dir="trainer_output")
    for name in ("output_dir", "per_device_train_batch_size", "per_device_eval_batch_size", "num_train_epochs",
                 "max_steps", "learning_rate", "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon",
                 "max_grad_norm", "warmup_steps", "logging_steps", "save_steps", "save_total_limit", "seed",
                 "gradient_accumulation_steps", "dataloader_drop_last", "remove_unused_columns",
                 "load_best_model_at_end", "eval_steps", "label_names", "fp16", "bf16", "gradient_checkpointing"):
        assert getattr(ours, name) == getattr(ref, name), name
    for name in ("eval_strategy", "save_strategy", "logging_strategy", "lr_scheduler_type"):
        assert getattr(ours, name).value == getattr(ref, name).value, name
    assert TrainingArguments(warmup_ratio=0.1).get_warmup_steps(100) == 10


def read_scalars(event_dir):
    """Scalars of tensorboardX event files, read back through TFRecord framing + the Event protobuf."""
    import struct

    from tensorboardX.proto import event_pb2

    scalars = {}
    for name in sorted(os.listdir(event_dir)):
        if not name.startswith("events.out.tfevents"):
            continue
        data = open(os.path.join(event_dir, name), "rb").read()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4
            for value in event.summary.value:
                if value.WhichOneof("value") == "simple_value":
                    scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def test_report_to_tensorboard_writes_scalars_that_read_back(checkpoint, tmp_path, monkeypatch):
    pytest.importorskip("tensorboardX")
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tb"))
    trainer = Trainer(model=load(checkpoint), args=args_for(tmp_path, max_steps=3, report_to="tensorboard"),
                      train_dataset=rows(), eval_dataset=rows(8, seed=3))
    trainer.train()
    metrics = trainer.evaluate()
    # tensorboardX writes from a queue; flush() after each log does not wait for it, close() does
    next(cb for cb in trainer.callback_handler.callbacks if type(cb).__name__ == "TensorBoardCallback").tb_writer.close()
    scalars = read_scalars(tmp_path / "tb")
    logs = step_logs(trainer)
    for key in ("loss", "learning_rate", "grad_norm"):
        assert [step for step, _ in scalars[f"train/{key}"]] == [1, 2, 3]
        np.testing.assert_allclose([v for _, v in scalars[f"train/{key}"]], [h[key] for h in logs], rtol=1e-6)
    assert scalars["eval/loss"] == [(3, pytest.approx(metrics["eval_loss"], rel=1e-6))]
    assert "train/train_runtime" in scalars


def test_report_to_tensorboard_without_tensorboardx_is_a_clear_error(tmp_path, monkeypatch):
    from mindone.transformers.trainer import training_args

    monkeypatch.setattr(training_args, "_tensorboard_available", lambda: False)
    with pytest.raises(ValueError, match="needs the `tensorboardX` package"):
        TrainingArguments(output_dir=str(tmp_path), report_to="tensorboard")
    assert TrainingArguments(output_dir=str(tmp_path), report_to="all").report_to == []


@pytest.mark.parametrize("given_as", ["processing_class", "data_collator"])
def test_save_model_writes_the_tokenizer_as_torch_and_autotokenizer_reloads_it(checkpoint, tmp_path, given_as):
    """The tokenizer given to the Trainer, or else the data collator's (HF's fallback), is saved beside the model."""
    from tests.generation.helpers import tiny_tokenizer

    tokenizer = tiny_tokenizer()

    def given(return_tensors):
        if given_as == "processing_class":
            return {"processing_class": tokenizer}
        return {"data_collator": transformers.DataCollatorWithPadding(tokenizer, return_tensors=return_tensors)}

    ours = Trainer(model=load(checkpoint), args=args_for(tmp_path / "run"), **given("np"))
    ours.save_model(str(tmp_path / "ours"))
    ref_model = transformers.LlamaForCausalLM.from_pretrained(checkpoint)
    ref = transformers.Trainer(model=ref_model, args=transformers.TrainingArguments(
        output_dir=str(tmp_path / "ref_run"), report_to="none", use_cpu=True), **given("pt"))
    ref.save_model(str(tmp_path / "ref"))
    assert sorted(os.listdir(tmp_path / "ours")) == \
        sorted(f.replace("training_args.bin", "training_args.json") for f in os.listdir(tmp_path / "ref"))
    reloaded = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "ours"))
    text = "The capital of France is Paris."
    assert reloaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert reloaded.chat_template == tokenizer.chat_template
