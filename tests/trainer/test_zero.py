"""ZeRO sharding in one process: the flat partition math (world size emulated), stages 1-3 at world size 1 against
the plain Trainer, DeepSpeed-style configs, shard checkpoints, resuming, and the merge tool (torch loads the result).
Two-process runs under msrun: test_zero_msrun.py."""

import json
import logging
import os

import numpy as np
import pytest
import torch
import transformers

from mindspore import Parameter, Tensor, nn, ops

from mindone.transformers import LlamaForCausalLM
from mindone.transformers.backend import layers
from mindone.transformers.trainer import Trainer, TrainingArguments
from mindone.transformers.trainer import zero
from tests import parity

VOCAB, SEQ = 99, 12


def rows(n=16, seed=0):
    rng = np.random.RandomState(seed)
    out = []
    for _ in range(n):
        ids = rng.randint(1, VOCAB, SEQ).astype(np.int64)
        labels = ids.copy()
        labels[: rng.randint(0, 4)] = -100
        out.append({"input_ids": ids, "labels": labels})
    return out


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    config = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                      pad_token_id=0, tie_word_embeddings=False)
    model = parity.torch_reference(transformers.LlamaForCausalLM, config, seed=1)
    return parity.save_torch(model, str(tmp_path_factory.mktemp("zero")))


def make_trainer(checkpoint, tmp_path, model=None, **kwargs):
    defaults = dict(output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=4, learning_rate=5e-3,
                    weight_decay=0.01, warmup_steps=1, logging_steps=1, save_strategy="no", disable_tqdm=True,
                    seed=11, jit_mode=False)  # compiling costs ~15 s per Trainer; msrun tests cover jit_mode
    defaults.update(kwargs)
    model = model or LlamaForCausalLM.from_pretrained(checkpoint, dtype="float32")
    return Trainer(model=model, args=TrainingArguments(**defaults), train_dataset=rows())


def step_logs(trainer):
    return [(h["loss"], h["grad_norm"]) for h in trainer.state.log_history if "grad_norm" in h]


@pytest.mark.parametrize("world_size", [1, 2, 3, 5])
def test_flat_layout_partition_then_gather_round_trips_with_padding(world_size):
    shapes = [(3, 5), (7,), (2, 2, 3), (1,)]  # 35 elements: padded for every world size above but 5 and 1
    rng = np.random.RandomState(0)
    arrays = [rng.randn(*s).astype(np.float32) for s in shapes]
    layout = zero.FlatLayout(shapes, world_size)
    flat = layout.flatten(arrays)
    assert layout.shard_size == -(-35 // world_size) and flat.shape == (layout.shard_size * world_size,)
    shards = [layout.shard(flat, r) for r in range(world_size)]
    assert {s.shape for s in shards} == {(layout.shard_size,)}
    assert not flat[35:].any()  # the padding is zeros (it never changes a norm or a sum)
    for got, want in zip(layout.unflatten(layout.gather(shards)), arrays):
        np.testing.assert_array_equal(got, want)
    # the tensor flattening used inside the compiled step agrees with the numpy one
    from mindspore import Tensor

    np.testing.assert_array_equal(layout.flatten_tensors([Tensor(a) for a in arrays]).asnumpy(), flat)
    for r in range(world_size):  # stage 1's slice of the full gradients, without building the flat vector
        np.testing.assert_array_equal(layout.shard_tensors([Tensor(a) for a in arrays], r).asnumpy(), shards[r])


def test_sharded_adamw_slices_update_like_torch_adamw_on_the_whole_parameters():
    """Each emulated rank updates only its slice; the gathered result equals torch's AdamW on the full tensors."""
    from mindspore import Parameter, Tensor

    rng = np.random.RandomState(1)
    shapes = [(4, 3), (5,)]
    init = [rng.randn(*s).astype(np.float32) for s in shapes]
    grads = [[rng.randn(*s).astype(np.float32) for s in shapes] for _ in range(3)]
    world_size = 3
    ranks = [zero.ShardedAdamW([{"names": ["a", "b"], "params": [Parameter(Tensor(a.copy())) for a in init],
                                 "weight_decay": 0.1}], lr=1e-2, world_size=world_size, rank=r)
             for r in range(world_size)]
    layout = ranks[0].layouts[0]
    for step_grads in grads:
        flat_grad = layout.flatten(step_grads)
        for r, opt in enumerate(ranks):
            # gradients arrive as a sum over 2 ranks, scaled back by grad_scale (the Trainer's 1 / world_size)
            opt.step_shards([Tensor(2 * layout.shard(flat_grad, r))], 0.5)
    ours = layout.unflatten(layout.gather([opt.param_shards[0].asnumpy() for opt in ranks]))
    exp_avg = layout.unflatten(layout.gather([opt.exp_avg[0].asnumpy() for opt in ranks]))
    exp_avg_sq = layout.unflatten(layout.gather([opt.exp_avg_sq[0].asnumpy() for opt in ranks]))

    params = [torch.nn.Parameter(torch.tensor(a)) for a in init]
    ref = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1)
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = torch.tensor(g)
        ref.step()
    for got, m, v, p in zip(ours, exp_avg, exp_avg_sq, params):
        np.testing.assert_allclose(got, p.detach().numpy(), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(m, ref.state[p]["exp_avg"].numpy(), rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(v, ref.state[p]["exp_avg_sq"].numpy(), rtol=1e-5, atol=1e-9)
    assert ranks[0].state_bytes() == 3 * layout.shard_size * 4  # params, exp_avg, exp_avg_sq slices


@pytest.mark.parametrize("stage,accumulation", [(1, 1), (2, 1), (3, 1), (2, 2), (3, 2)])
def test_each_stage_in_one_process_follows_the_plain_trainer(checkpoint, tmp_path, stage, accumulation):
    # with accumulation, stage 2 adds each micro-batch's reduce-scattered slice into its buffer
    plain = make_trainer(checkpoint, tmp_path / "plain", gradient_accumulation_steps=accumulation)
    plain.train()
    sharded = make_trainer(checkpoint, tmp_path / "zero", zero_stage=stage, gradient_accumulation_steps=accumulation)
    sharded.train()
    assert isinstance(sharded._train_step, zero.ZeroTrainStep)
    expected, got = step_logs(plain), step_logs(sharded)
    assert len(got) == 4
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    want = plain.model.state_dict()
    for name, value in sharded.model.state_dict().items():
        np.testing.assert_allclose(value, want[name], rtol=1e-5, atol=1e-7, err_msg=name)


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_stage3_gathers_each_unit_alone_for_its_forward_and_again_for_its_backward(tmp_path, tied):
    config = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                      pad_token_id=0, tie_word_embeddings=tied)
    checkpoint = parity.save_torch(parity.torch_reference(transformers.LlamaForCausalLM, config, seed=2),
                                   str(tmp_path / "ckpt"))
    plain = make_trainer(checkpoint, tmp_path / "plain", max_steps=2)
    plain.train()
    sharded = make_trainer(checkpoint, tmp_path / "zero", zero_stage=3, max_steps=2)
    sharded.create_optimizer()
    units = zero.parameter_units(sharded.model, trainable_only=True)
    sizes = {name: sum(int(np.prod(p.shape)) * 4 for p in params) for name, _, params in units}
    total = sum(int(np.prod(p.shape)) * 4 for p in {id(p): p for _, _, ps in units for p in ps}.values())
    seen = []

    def check(name, own, phase):
        def hook(*_):
            # registered after the ZeRO hooks: this unit is materialised, every parameter of the others is released
            assert all(p.shape != (0,) for p in own), (name, phase)
            mine = {id(p) for p in own}
            for other, _, params in units:
                if other != name:
                    assert all(p.shape == (0,) for p in params if id(p) not in mine), (name, phase, other)
            seen.append((phase, name))
        return hook

    sharded._setup_training(2)  # builds the ZeroTrainStep, which installs its hooks first
    for name, cell, params in units:
        cell.register_forward_pre_hook(check(name, params, "forward"))
        cell.register_backward_pre_hook(check(name, params, "backward"))
    sharded.train()

    order = [name for name, _, _ in sorted(units, key=lambda u: ["model.embed_tokens", "model.layers.0",
                                                                    "model.layers.1", "model.norm",
                                                                    "lm_head"].index(u[0]))]
    assert order[-1] == "lm_head" and len(order) == 5
    assert seen == ([("forward", n) for n in order] + [("backward", n) for n in reversed(order)]) * 2
    memory = sharded._train_step.memory_bytes()
    assert memory["parameters_peak"] == max(sizes.values()) < total / 2
    assert memory["parameters"] == total  # train() gathers the model again when it returns
    np.testing.assert_allclose(step_logs(sharded), step_logs(plain), rtol=1e-5)
    want = plain.model.state_dict()
    for name, value in sharded.model.state_dict().items():
        np.testing.assert_allclose(value, want[name], rtol=1e-5, atol=1e-7, err_msg=name)


class _Block(nn.Cell):
    def __init__(self, seed):
        super().__init__()
        self.proj = layers.Linear(6, 6, bias=False)
        self.proj.weight.set_data(Tensor(np.random.RandomState(seed).randn(6, 6).astype(np.float32) * 0.3))

    def construct(self, x):
        return ops.tanh(self.proj(x))


class _Toy(nn.Cell):
    """A parameter owned by the cell that also holds the blocks: it cannot be a unit of its own (its recompute would
    nest the blocks'), so stage 3 keeps it gathered for the whole step."""

    _no_split_modules = ["_Block"]

    def __init__(self):
        super().__init__()
        self.scale = Parameter(Tensor(np.linspace(0.5, 1.5, 6).astype(np.float32)), name="scale")
        self.blocks = nn.CellList([_Block(1), _Block(2)])

    def construct(self, x):
        for block in self.blocks:
            x = block(x * self.scale)
        return (x ** 2).mean()


def test_stage3_keeps_a_parameter_owned_around_the_blocks_gathered_for_the_step_and_trains_as_stage2():
    x = Tensor(np.random.RandomState(0).randn(4, 6).astype(np.float32))
    results = {}
    for stage in (2, 3):
        model = _Toy()
        named = [(n, p) for n, p in model.parameters_and_names()]
        optimizer = zero.ShardedAdamW([{"names": [n for n, _ in named], "params": [p for _, p in named],
                                        "weight_decay": 0.0}], 1e-2)
        step = zero.ZeroTrainStep(lambda inputs, _: model(inputs["x"]), [p for _, p in named], optimizer, 1.0,
                                  stage, use_jit=False, model=model)
        if stage == 3:
            assert [name for name, _ in step.units] == ["blocks.0", "blocks.1"] and len(step._resident) == 1
        losses = []
        for _ in range(3):
            losses.append(float(step.grad_step({"x": x}, 1.0).asnumpy()))
            step.prepare()
            step.update()
        if stage == 3:
            assert all(p.shape == (0,) for p in model.get_parameters())
            step.gather_parameters()
        results[stage] = losses, {n: p.asnumpy() for n, p in model.parameters_and_names()}
    np.testing.assert_allclose(results[3][0], results[2][0], rtol=1e-6)
    for name, value in results[2][1].items():
        np.testing.assert_allclose(results[3][1][name], value, rtol=1e-6, atol=1e-8, err_msg=name)


def test_stage3_evaluates_and_saves_between_per_unit_steps_like_the_plain_trainer(checkpoint, tmp_path):
    # evaluation and saving gather the whole model; the next step releases it and gathers per unit again
    runs = {}
    for stage in (None, 3):
        trainer = make_trainer(checkpoint, tmp_path / str(stage), max_steps=3, eval_strategy="steps", eval_steps=1,
                               zero_stage=stage, save_strategy="steps", save_steps=2)
        trainer.eval_dataset = rows(4, seed=1)
        trainer.train()
        runs[stage] = trainer
    evals = {k: [h["eval_loss"] for h in t.state.log_history if "eval_loss" in h] for k, t in runs.items()}
    assert len(evals[3]) == 3
    np.testing.assert_allclose(evals[3], evals[None], rtol=1e-6)
    np.testing.assert_allclose(step_logs(runs[3]), step_logs(runs[None]), rtol=1e-5)
    assert (tmp_path / "3" / "checkpoint-2" / "zero_shard_rank0.safetensors").is_file()


@pytest.mark.parametrize("world_size", [2, 3])
def test_load_sharded_reads_each_rank_slices_equal_to_slicing_the_loaded_model(checkpoint, world_size, monkeypatch):
    full = LlamaForCausalLM.from_pretrained(checkpoint, dtype="float32")
    values = {id(p): p.asnumpy() for p in full.get_parameters()}
    names = {n: values[id(p)] for n, p in full.named_parameters_dict().items()}
    read = []
    real_read = zero._read_flat
    monkeypatch.setattr(zero, "_read_flat", lambda source, a, b, readers: read.append(b - a) or
                        real_read(source, a, b, readers))
    for rank in range(world_size):
        model = zero.load_sharded(LlamaForCausalLM, checkpoint)
        assert all(p.shape == (0,) for p in model.get_parameters())  # nothing materialised
        params = {n: p for n, p in model.named_parameters_dict().items()}
        groups = [{"names": ["model.layers.0.mlp.up_proj.weight", "model.norm.weight", "lm_head.weight"],
                   "weight_decay": 0.0}]
        groups[0]["params"] = [params[n] for n in groups[0]["names"]]
        read.clear()
        sharded = zero.ShardedAdamW(groups, 1e-3, world_size=world_size, rank=rank)
        layout = sharded.layouts[0]
        expected = layout.shard(layout.flatten([names[n] for n in groups[0]["names"]]), rank)
        np.testing.assert_array_equal(sharded.param_shards[0].asnumpy(), expected)
        assert sum(read) <= layout.shard_size  # only this rank's slice was read
        read.clear()
        inference = zero.ShardedInference(model, world_size=world_size, rank=rank)
        for name, param in params.items():
            _, piece, size, shape = inference.shards[id(param)]
            flat = np.zeros(size * world_size, np.float32)
            flat[:names[name].size] = names[name].reshape(-1)
            np.testing.assert_array_equal(piece.asnumpy(), flat[rank * size:(rank + 1) * size], err_msg=name)
        assert sum(read) <= sum(int(np.prod(p.shape)) for p in full.get_parameters()) / world_size + len(params)


def test_stage3_trainer_on_a_load_sharded_model_follows_the_plain_trainer(checkpoint, tmp_path):
    plain = make_trainer(checkpoint, tmp_path / "plain", max_steps=2)
    plain.train()
    model = zero.load_sharded(LlamaForCausalLM, checkpoint)
    sharded = make_trainer(checkpoint, tmp_path / "zero", model=model, zero_stage=3, max_steps=2)
    sharded.train()
    np.testing.assert_allclose(step_logs(sharded), step_logs(plain), rtol=1e-5)
    want = plain.model.state_dict()
    for name, value in sharded.model.state_dict().items():
        np.testing.assert_allclose(value, want[name], rtol=1e-5, atol=1e-7, err_msg=name)
    stage2 = make_trainer(checkpoint, tmp_path / "z2", model=zero.load_sharded(LlamaForCausalLM, checkpoint),
                          zero_stage=2, max_steps=1)
    with pytest.raises(ValueError, match="load_sharded are read only by ZeRO stage 3 with jit_mode=False"):
        stage2.train()


def test_deepspeed_config_sets_the_stage_checks_batch_keys_and_warns_on_the_rest(tmp_path, caplog):
    config = {"zero_optimization": {"stage": 2, "overlap_comm": True}, "train_micro_batch_size_per_gpu": "auto",
              "gradient_accumulation_steps": 1, "gradient_clipping": 1.0, "bf16": {"enabled": "auto"}}
    with caplog.at_level(logging.WARNING, logger="mindone.transformers.trainer.zero"):
        args = TrainingArguments(output_dir=str(tmp_path), deepspeed=config)
    assert args.zero_stage == 2
    assert "zero_optimization.overlap_comm" in caplog.text and "bf16" in caplog.text
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"zero_optimization": {"stage": 3}}))
    assert TrainingArguments(output_dir=str(tmp_path), deepspeed=str(path)).zero_stage == 3
    assert TrainingArguments(output_dir=str(tmp_path)).zero_stage == 0
    with pytest.raises(ValueError, match="train_micro_batch_size_per_gpu=2 != TrainingArguments"):
        TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4,
                          deepspeed={"train_micro_batch_size_per_gpu": 2})
    with pytest.raises(ValueError, match="disagrees"):
        TrainingArguments(output_dir=str(tmp_path), zero_stage=1, deepspeed=config)
    with pytest.raises(ValueError, match="zero_stage must be"):
        TrainingArguments(output_dir=str(tmp_path), zero_stage=4)
    with pytest.raises(ValueError, match="optim='sgd' is not supported"):
        TrainingArguments(output_dir=str(tmp_path), zero_stage=1, optim="sgd")
    with pytest.raises(ValueError, match="fp16"):
        TrainingArguments(output_dir=str(tmp_path), zero_stage=1, fp16=True)


def test_shard_checkpoint_resumes_exactly_and_merges_into_a_checkpoint_torch_loads(checkpoint, tmp_path):
    full = make_trainer(checkpoint, tmp_path / "run", zero_stage=2, max_steps=6, save_strategy="steps",
                        save_steps=3)
    full.train()
    ckpt = tmp_path / "run" / "checkpoint-3"
    assert (ckpt / "zero_shard_rank0.safetensors").is_file() and not (ckpt / "optimizer.safetensors").exists()

    resumed = make_trainer(checkpoint, tmp_path / "run", zero_stage=2, max_steps=6)
    resumed.train(resume_from_checkpoint=str(ckpt))
    assert step_logs(resumed) == step_logs(full)  # exact: same shards, same step, same data order

    merged_dir = tmp_path / "merged"
    assert zero.main(["merge", str(tmp_path / "run" / "checkpoint-6"), str(merged_dir)]) == 0
    reference = transformers.LlamaForCausalLM.from_pretrained(str(merged_dir))
    ours = full.model.state_dict()
    loaded = {k: v.numpy() for k, v in reference.state_dict().items()}
    assert set(loaded) == set(ours)
    for name, value in ours.items():
        np.testing.assert_array_equal(loaded[name], value, err_msg=name)


def test_resuming_with_another_world_size_names_the_missing_shard(checkpoint, tmp_path):
    first = make_trainer(checkpoint, tmp_path / "run", zero_stage=1, max_steps=2, save_strategy="steps",
                         save_steps=2)
    first.train()
    ckpt = tmp_path / "run" / "checkpoint-2"
    os.rename(ckpt / "zero_shard_rank0.safetensors", ckpt / "zero_shard_rank1.safetensors")
    again = make_trainer(checkpoint, tmp_path / "run", zero_stage=1, max_steps=3)
    with pytest.raises(ValueError, match="zero_shard_rank0.safetensors does not exist"):
        again.train(resume_from_checkpoint=str(ckpt))


# ---- tensor / pipeline parallel layouts (specification only: running them needs Ascend/GPU) -----------------------


def test_llama_tensor_parallel_plan_covers_every_parameter_with_dividing_layouts():
    from mindone.transformers.trainer import parallel_strategies as ps

    config = transformers.LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=38, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    params = model.parameters_dict()
    plan = ps.llama_parameter_plan(config, list(params), 2)
    assert set(plan) == set(params)
    for name, layout in plan.items():
        shape = params[name].shape
        assert len(layout) == len(shape), name
        assert all(dim % parts == 0 for dim, parts in zip(shape, layout)), (name, shape, layout)
    assert plan["model.layers.0.self_attn.q_proj.weight"] == (2, 1)  # column parallel: output features split
    assert plan["model.layers.1.mlp.down_proj.weight"] == (1, 2)  # row parallel: input features split
    assert plan["lm_head.weight"] == plan["model.embed_tokens.weight"] == (2, 1)
    assert plan["model.norm.weight"] == (1,)
    with pytest.raises(ValueError, match="tensor_parallel=4 does not divide num_key_value_heads=2"):
        ps.llama_parameter_plan(config, list(params), 4)
    with pytest.raises(ValueError, match="needs Ascend or GPU"):
        ps.apply_llama_tensor_parallel(model, 2)


def test_llama_pipeline_stages_are_contiguous_and_balanced():
    from mindone.transformers.trainer import parallel_strategies as ps

    assert ps.llama_pipeline_stages(7, 3) == [0, 0, 0, 1, 1, 2, 2]
    assert ps.llama_pipeline_stages(4, 1) == [0, 0, 0, 0]
    with pytest.raises(ValueError, match="between 1 and num_hidden_layers=2"):
        ps.llama_pipeline_stages(2, 3)
