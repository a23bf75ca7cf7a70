"""The MindFormers-style API (mindone.transformers.mindformers) against the same work written HF-style."""

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import transformers

from mindone.transformers import LlamaForCausalLM, LlamaForSequenceClassification, pipeline as hf_pipeline
from mindone.transformers.mindformers import context as mf_context
from mindone.transformers.mindformers import (
    ContextConfig,
    ParallelContextConfig,
    Trainer,
    TrainingArguments,
    init_context,
    pipeline,
)
from mindone.transformers.trainer import Trainer as HFTrainer, TrainingArguments as HFTrainingArguments
from tests import parity
from tests.no_torch import BLOCK_TORCH

VOCAB, SEQ, PAD = 99, 12, 0


# the runs are PyNative (MindFormers mode=1, our jit_mode=False): compiling the step adds ~10 s per run and is
# covered by tests/trainer; test_mode_maps_to_jit_mode checks the mapping
MODE = 1


def mf_rows(n=12, seed=0):
    """MindFormers causal-LM rows: input_ids only, right-padded with the pad token."""
    rng = np.random.RandomState(seed)
    out = []
    for _ in range(n):
        ids = rng.randint(1, VOCAB, SEQ).astype(np.int32)
        ids[SEQ - rng.randint(0, 4):] = PAD
        out.append({"input_ids": ids})
    return out


def hf_rows(n=12, seed=0):
    """The same rows HF-style: labels are the ids with padding ignored."""
    return [{"input_ids": r["input_ids"], "labels": np.where(r["input_ids"] == PAD, -100, r["input_ids"])}
            for r in mf_rows(n, seed)]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    config = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                      pad_token_id=PAD, tie_word_embeddings=False)
    model = parity.torch_reference(transformers.LlamaForCausalLM, config, seed=1)
    return parity.save_torch(model, str(tmp_path_factory.mktemp("mf")))


def load(checkpoint):
    return LlamaForCausalLM.from_pretrained(checkpoint, dtype="float32")


def step_logs(trainer):
    return [h for h in trainer.state.log_history if "loss" in h and "train_loss" not in h]


def assert_same_run(mf_trainer, hf_trainer):
    got, expected = step_logs(mf_trainer), step_logs(hf_trainer)
    assert len(got) == len(expected) > 0
    for a, b in zip(got, expected):
        for key in ("loss", "grad_norm", "learning_rate"):
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-9), (key, a, b)
    ours, ref = mf_trainer.model.state_dict(), hf_trainer.model.state_dict()
    for name, value in ref.items():
        np.testing.assert_allclose(ours[name], value, rtol=0, atol=1e-6, err_msg=name)


def test_finetune_mindformers_style_equals_hf_style(checkpoint, tmp_path):
    # MindFormers' defaults where they differ from HF's: cosine schedule down to lr_end, drop_last, logging_steps=1
    mf = Trainer(task="text_generation", model=load(checkpoint),
                 args=TrainingArguments(output_dir=str(tmp_path / "mf"), num_train_epochs=2, batch_size=4,
                                        learning_rate=5e-3, warmup_steps=2, weight_decay=0.01, lr_end=1e-4,
                                        sink_mode=True, save_strategy="no", seed=11, mode=MODE),
                 train_dataset=mf_rows(), eval_dataset=mf_rows(8, seed=1))
    mf.train()
    hf = HFTrainer(model=load(checkpoint),
                   args=HFTrainingArguments(output_dir=str(tmp_path / "hf"), num_train_epochs=2,
                                            per_device_train_batch_size=4, learning_rate=5e-3, warmup_steps=2,
                                            weight_decay=0.01, lr_scheduler_type="cosine",
                                            lr_scheduler_kwargs={"min_lr_rate": 1e-4 / 5e-3},
                                            dataloader_drop_last=True, logging_steps=1, save_strategy="no", seed=11,
                                            disable_tqdm=True, jit_mode=False),
                   train_dataset=hf_rows(), eval_dataset=hf_rows(8, seed=1))
    hf.train()
    assert_same_run(mf.hf_trainer, hf)
    assert len(step_logs(hf)) == 6  # 12 rows / 4 x 2 epochs
    assert mf.evaluate()["eval_loss"] == pytest.approx(hf.evaluate()["eval_loss"], rel=1e-6)


def test_learning_rate_follows_mindformers_cosine_with_warmup(checkpoint, tmp_path):
    """MindFormers' CosineWithWarmUpLR: linear warmup from 0, then lr_end + (lr - lr_end)(1 + cos(pi t)) / 2."""
    lr, lr_end, warmup, total = 5e-3, 1e-4, 2, 5
    mf = Trainer(task="text_generation", model=load(checkpoint),
                 args=TrainingArguments(output_dir=str(tmp_path), num_train_epochs=1, batch_size=4, learning_rate=lr,
                                        warmup_steps=warmup, lr_end=lr_end, save_strategy="no", mode=MODE),
                 train_dataset=mf_rows(20))
    mf.train()
    expected = [lr * s / warmup if s < warmup else
                lr_end + 0.5 * (lr - lr_end) * (1 + math.cos(math.pi * (s - warmup) / (total - warmup)))
                for s in range(total)]
    assert [h["learning_rate"] for h in step_logs(mf.hf_trainer)] == pytest.approx(expected, rel=1e-9)


def test_mindspore_dataset_and_mindrecord_path_train_as_rows(checkpoint, tmp_path):
    import mindspore.dataset as msds
    from mindspore.mindrecord import FileWriter

    rows = mf_rows(8)
    record = str(tmp_path / "train.mindrecord")
    writer = FileWriter(record, shard_num=1)
    writer.add_schema({"input_ids": {"type": "int32", "shape": [-1]}}, "mf")
    writer.write_raw_data([{"input_ids": r["input_ids"]} for r in rows])
    writer.commit()
    common = dict(num_train_epochs=2, batch_size=4, learning_rate=5e-3, warmup_steps=1, shuffle=False,
                  save_strategy="no", seed=3, lr_scheduler_type="linear", mode=MODE)
    generator = msds.GeneratorDataset([(r["input_ids"],) for r in rows], column_names=["input_ids"], shuffle=False)
    runs = []
    for name, dataset in (("generator", generator), ("mindrecord", record)):
        run = Trainer(task="text_generation", model=load(checkpoint),
                      args=TrainingArguments(output_dir=str(tmp_path / name), **common), train_dataset=dataset)
        run.train()
        runs.append(run.hf_trainer)
    hf = HFTrainer(model=load(checkpoint),
                   args=HFTrainingArguments(output_dir=str(tmp_path / "hf"), num_train_epochs=2,
                                            per_device_train_batch_size=4, learning_rate=5e-3, warmup_steps=1,
                                            train_sampling_strategy="sequential", dataloader_drop_last=True,
                                            logging_steps=1, save_strategy="no", seed=3, disable_tqdm=True,
                                            jit_mode=False),
                   train_dataset=hf_rows(8))
    hf.train()
    for run in runs:
        assert_same_run(run, hf)


def test_recompute_maps_to_gradient_checkpointing_with_the_same_result(checkpoint, tmp_path):
    def run(recompute):
        mf = Trainer(task="text_generation", model=load(checkpoint),
                     args=TrainingArguments(output_dir=str(tmp_path / str(recompute)), num_train_epochs=1,
                                            batch_size=4, learning_rate=5e-3, save_strategy="no", mode=MODE),
                     train_dataset=mf_rows(8))
        mf.set_recompute_config(recompute=recompute)
        mf.set_parallel_config(data_parallel=1, micro_batch_num=4)  # micro_batch_num: pipeline stages only
        mf.train()
        return mf

    plain, recomputed = run(False), run(True)
    assert recomputed.hf_trainer.args.gradient_checkpointing and recomputed.model.gradient_checkpointing
    assert not plain.model.gradient_checkpointing
    assert_same_run(recomputed.hf_trainer, plain.hf_trainer)


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    from tests.generation.helpers import tiny_llama_pair, tiny_tokenizer

    directory = tmp_path_factory.mktemp("llama")
    tiny_llama_pair(directory)
    tiny_tokenizer().save_pretrained(str(directory))
    return str(directory)


def test_pipeline_text_generation_key_and_text_equal_hf_style(llama_dir):
    # one model for all pipelines: its compiled decode step is reused
    model = LlamaForCausalLM.from_pretrained(llama_dir, dtype="float32")
    tokenizer = transformers.AutoTokenizer.from_pretrained(llama_dir)
    prompts = ["The capital of France", "Once upon a time"]
    expected = hf_pipeline("text-generation", model=model, tokenizer=tokenizer)(prompts, max_length=12,
                                                                                do_sample=False)
    mf = pipeline(task="text_generation", model=model, tokenizer=tokenizer, max_length=12)
    got = mf(prompts, do_sample=False)
    assert got == [{"text_generation_text": [e[0]["generated_text"]]} for e in expected]
    assert all(t["text_generation_text"][0].startswith(p) and len(t["text_generation_text"][0]) > len(p)
               for t, p in zip(got, prompts))
    assert mf(prompts[0], do_sample=False) == got[:1]  # one prompt: still a list of one record, as MindFormers'

    # Trainer(task=...).predict runs the same pipeline on the trainer's model
    trainer = Trainer(task="text_generation", model=model, tokenizer=tokenizer)
    assert trainer.predict(input_data=prompts, max_length=12, do_sample=False) == got


def test_model_paths_load_the_tasks_model_and_tokenizer(llama_dir):
    trainer = Trainer(task="text_generation", model=llama_dir)
    assert isinstance(trainer.model, LlamaForCausalLM) and trainer.tokenizer is not None
    assert isinstance(Trainer(task="text_classification", model=llama_dir).model, LlamaForSequenceClassification)
    mf = pipeline("text_generation", model=llama_dir)
    assert isinstance(mf.model, LlamaForCausalLM) and mf.tokenizer is not None


@pytest.fixture
def fresh_context():
    """init_context's settings are process-wide: each test that calls it starts and ends without them."""
    saved = dict(mf_context._state)
    mf_context._state.update(mode=None, use_parallel=False)
    yield
    mf_context._state.update(saved)


def test_mode_maps_to_jit_mode(checkpoint, tmp_path, fresh_context):
    def jit_mode(**kwargs):
        args = TrainingArguments(output_dir=str(tmp_path), **kwargs)
        return Trainer(task="text_generation", model=load(checkpoint), args=args).hf_args().jit_mode

    for mode, jit in ((0, True), ("GRAPH_MODE", True), (1, False), ("PYNATIVE_MODE", False)):
        assert jit_mode(mode=mode) is jit
    assert jit_mode() is True  # MindFormers' default mode 0
    init_context(context_config=ContextConfig(mode=1, device_target="CPU"))
    assert jit_mode() is False  # init_context's mode when the arguments give none
    assert jit_mode(mode=0) is True  # the arguments' mode wins


def test_init_context_single_process_and_errors(fresh_context):
    assert init_context(use_parallel=False, context_config=ContextConfig(mode=1, device_target="CPU", device_id=0)) \
        == (0, 1)
    assert init_context(context_config={"mode": "GRAPH_MODE", "device_target": "CPU"}) == (0, 1)
    with pytest.raises(ValueError, match="device_target='Ascend': this process runs MindSpore on 'CPU'"):
        init_context(context_config=ContextConfig(device_target="Ascend"))
    for mode in ("SEMI_AUTO_PARALLEL", "AUTO_PARALLEL", "HYBRID_PARALLEL", 1):
        with pytest.raises(ValueError, match=r"parallel_mode='(SEMI_AUTO|AUTO|HYBRID)_PARALLEL' is not supported "
                                             r"on device_target='CPU'"):
            init_context(use_parallel=True, parallel_config=ParallelContextConfig(parallel_mode=mode))
    with pytest.raises(ValueError, match="enable_parallel_optimizer=True .* not supported on device_target='CPU'"):
        init_context(use_parallel=True, parallel_config=ParallelContextConfig(
            parallel_mode="DATA_PARALLEL", enable_parallel_optimizer=True))
    with pytest.raises(ValueError, match="full_batch=True is for semi-auto/auto"):
        init_context(use_parallel=True, parallel_config=ParallelContextConfig(parallel_mode="DATA_PARALLEL",
                                                                              full_batch=True))
    env = {k: os.environ.pop(k) for k in ("MS_ROLE", "RANK_SIZE") if k in os.environ}
    try:
        with pytest.raises(ValueError, match="use_parallel=True needs one process per rank started by msrun"):
            init_context(use_parallel=True, parallel_config=ParallelContextConfig(parallel_mode="DATA_PARALLEL",
                                                                                  gradients_mean=True))
    finally:
        os.environ.update(env)
    with pytest.raises(TypeError, match=r"ContextConfig got unknown arguments \['devices'\]"):
        ContextConfig(devices=2)


def test_unsupported_settings_name_the_setting_and_the_device(checkpoint, tmp_path):
    mf = Trainer(task="text_generation", model=load(checkpoint), args=TrainingArguments(output_dir=str(tmp_path)))
    for kwargs, field in (({"model_parallel": 2}, "model_parallel=2"), ({"pipeline_stage": 2}, "pipeline_stage=2"),
                          ({"data_parallel": 1, "use_seq_parallel": True}, "use_seq_parallel=True"),
                          ({"optimizer_shard": True}, "optimizer_shard=True")):
        with pytest.raises(ValueError, match=f"{field} is not supported on device_target='CPU'"):
            mf.set_parallel_config(**kwargs)
    with pytest.raises(ValueError, match="data_parallel=2, but 1 process"):
        mf.set_parallel_config(data_parallel=2)
    if "MS_ROLE" not in os.environ and "RANK_SIZE" not in os.environ:
        parallel = Trainer(task="text_generation", model=load(checkpoint),
                           args=TrainingArguments(output_dir=str(tmp_path), use_parallel=True))
        with pytest.raises(ValueError, match=r"TrainingArguments\(use_parallel=True\) needs one process per rank "
                                             "started by msrun"):
            parallel.train()
    with pytest.raises(ValueError, match="select_recompute=True is not supported"):
        mf.set_recompute_config(select_recompute=True)
    with pytest.raises(ValueError, match="model_parallel=4 is not supported on device_target='CPU'"):
        TrainingArguments(model_parallel=4)
    with pytest.raises(ValueError, match="parallel_mode='SEMI_AUTO_PARALLEL' is not supported on device_target"):
        TrainingArguments(use_parallel=True, parallel_mode=1)
    with pytest.raises(ValueError, match="optim='lamb': supported are"):
        TrainingArguments(optim="lamb")
    with pytest.raises(ValueError, match="auto_trans_ckpt=True is not supported: checkpoints are whole HF"):
        TrainingArguments(auto_trans_ckpt=True)
    with pytest.raises(ValueError, match="task='image_captioning': supported tasks are"):
        Trainer(task="image_captioning", model=load(checkpoint))
    with pytest.raises(ValueError, match="model='llama2_7b' is not a checkpoint directory"):
        Trainer(task="text_generation", model="llama2_7b")
    with pytest.raises(TypeError, match="MindSpore Metric objects are not run by this Trainer"):
        Trainer(task="text_generation", model=load(checkpoint), compute_metrics={"acc": object()})
    from mindspore.train import LossMonitor

    with pytest.raises(TypeError, match="LossMonitor is a MindSpore Model callback"):
        Trainer(task="text_generation", model=load(checkpoint), callbacks=[LossMonitor()])
    with pytest.raises(KeyError, match="task='summarisation': supported MindFormers tasks"):
        pipeline("summarisation", model=checkpoint)


def test_mindformers_api_runs_without_torch(checkpoint, tmp_path):
    code = BLOCK_TORCH + f"""
import numpy as np
from mindone.transformers.mindformers import ContextConfig, Trainer, TrainingArguments, init_context
assert init_context(context_config=ContextConfig(mode=1, device_target="CPU")) == (0, 1)
rows = [{{"input_ids": np.arange(1, 9, dtype=np.int32)}}] * 4
trainer = Trainer(task="text_generation", model={checkpoint!r}, train_dataset=rows,
                  args=TrainingArguments(output_dir={str(tmp_path)!r}, num_train_epochs=1, batch_size=2,
                                         save_strategy="no"))
print(trainer.train().global_step, "torch" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("2 False")
