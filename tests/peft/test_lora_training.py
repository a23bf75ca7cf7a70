"""LoRA training with our Trainer against torch `peft` + torch `transformers.Trainer` (same adapter file, data order
and seed): losses, grad norms and learning rates <= 1e-4 relative; adapter-only checkpoints resume exactly."""

import os

import numpy as np
import peft
import pytest
import torch
import transformers

from mindone.transformers import LlamaForCausalLM
from mindone.transformers import peft as ms_peft
from mindone.transformers.trainer import Trainer, TrainingArguments
from tests import parity
from tests.trainer.test_trainer_parity import LOG_BAR, assert_logs_match, make_rows, per_step_logs, torch_trainer

ARGS = dict(per_device_train_batch_size=4, learning_rate=1e-2, weight_decay=0.01, warmup_steps=2, logging_steps=1,
            max_grad_norm=0.5, seed=7)


@pytest.fixture(scope="module", params=[False, pytest.param(True, marks=pytest.mark.slow, id="dora")],
                ids=lambda p: "dora" if p else "lora")
def setup(tmp_path_factory, request):
    """(base checkpoint, adapter saved by torch peft with random A, plus a trained lm_head copy); DoRA too (slow)."""
    config = transformers.LlamaConfig(vocab_size=99, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                      pad_token_id=0, tie_word_embeddings=False)
    base = parity.save_torch(parity.torch_reference(transformers.LlamaForCausalLM, config),
                             str(tmp_path_factory.mktemp("lora-train-base")))
    torch.manual_seed(0)
    model = peft.get_peft_model(transformers.LlamaForCausalLM.from_pretrained(base),
                                peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                                                modules_to_save=["lm_head"], init_lora_weights="gaussian",
                                                task_type="CAUSAL_LM", use_dora=request.param))
    adapter = str(tmp_path_factory.mktemp("lora-train-adapter"))
    model.save_pretrained(adapter)
    return base, adapter, request.param


def our_trainer(setup, output_dir, **kwargs):
    base, adapter, _ = setup
    model = ms_peft.PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(base, dtype="float32"), adapter,
                                              is_trainable=True)
    args = TrainingArguments(output_dir=output_dir, disable_tqdm=True, **dict(dict(save_strategy="no"), **kwargs))
    return Trainer(model=model, args=args, train_dataset=make_rows())


def orders_of(trainer, epochs=4):
    loader = trainer.get_train_dataloader()
    out = []
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        out.append(loader.order())
    return out


def test_lora_training_matches_torch_peft_and_trainer(setup, tmp_path):
    base, adapter, _ = setup
    ours = our_trainer(setup, str(tmp_path / "ours"), max_steps=8, **ARGS)
    frozen_before = {k: v.asnumpy().copy() for k, v in ours.model.named_parameters_dict().items()
                     if not v.requires_grad}
    orders = orders_of(ours)
    ours.train()
    torch_model = peft.PeftModel.from_pretrained(
        transformers.LlamaForCausalLM.from_pretrained(base, dtype=torch.float32, attn_implementation="eager"),
        adapter, is_trainable=True)
    ref = torch_trainer(torch_model, make_rows(), orders, str(tmp_path / "torch"), max_steps=8, **ARGS)
    ref.train()
    assert len(per_step_logs(ours.state.log_history)) == 8
    assert_logs_match(ours, ref)
    # only adapter parameters and the modules_to_save copy were trained and have optimizer state
    trainable = {k for k, v in ours.model.named_parameters_dict().items() if v.requires_grad}
    assert trainable == {k for k, v in torch_model.named_parameters() if v.requires_grad}
    assert len(ours.optimizer.parameters) == len(trainable)
    after = ours.model.named_parameters_dict()
    assert all(np.array_equal(after[k].asnumpy(), v) for k, v in frozen_before.items())
    theirs = {k: v.numpy() for k, v in peft.get_peft_model_state_dict(torch_model).items()}
    mine = {"base_model.model." + k: v for k, v in
            ms_peft.get_peft_model_state_dict(ours.model.get_base_model()).items()}
    assert set(mine) == set(theirs)
    for key, value in theirs.items():
        assert parity.rel_error(mine[key], value) <= LOG_BAR, key


@pytest.mark.slow
def test_adapter_only_checkpoints_resume_exactly(setup, tmp_path):
    if setup[2]:
        pytest.skip("resume is covered by the LoRA case")
    kwargs = dict(ARGS, max_steps=6)
    full = our_trainer(setup, str(tmp_path / "full"), save_strategy="steps", save_steps=3, **kwargs)
    full.train()
    checkpoint = str(tmp_path / "full" / "checkpoint-3")
    files = set(os.listdir(checkpoint))
    assert {"adapter_config.json", "adapter_model.safetensors", "optimizer.safetensors"} <= files
    assert "model.safetensors" not in files
    loaded = peft.PeftModel.from_pretrained(transformers.LlamaForCausalLM.from_pretrained(setup[0]), checkpoint)
    assert loaded.peft_config["default"].modules_to_save == ["lm_head"]

    resumed = our_trainer(setup, str(tmp_path / "resumed"), **kwargs)
    resumed.train(resume_from_checkpoint=checkpoint)
    a = {h["step"]: h for h in per_step_logs(full.state.log_history)}
    b = {h["step"]: h for h in per_step_logs(resumed.state.log_history)}
    assert [s for s in sorted(b) if s > 3] == [4, 5, 6]
    for step in (4, 5, 6):
        for key in ("loss", "grad_norm", "learning_rate"):
            assert b[step][key] == pytest.approx(a[step][key], rel=1e-6), (step, key)
    final_full = full.model.get_base_model().get_adapter_state_dict()
    final_resumed = resumed.model.get_base_model().get_adapter_state_dict()
    for key, value in final_full.items():
        np.testing.assert_allclose(final_resumed[key], value, rtol=1e-6, atol=1e-7, err_msg=key)


@pytest.mark.slow
def test_gradient_checkpointing_and_fp16_train_the_adapter(setup, tmp_path):
    if setup[2]:
        pytest.skip("covered by the LoRA case")
    plain = our_trainer(setup, str(tmp_path / "plain"), max_steps=4, **ARGS)
    plain.train()
    recomputed = our_trainer(setup, str(tmp_path / "recompute"), max_steps=4, gradient_checkpointing=True, **ARGS)
    recomputed.train()
    a, b = per_step_logs(plain.state.log_history), per_step_logs(recomputed.state.log_history)
    for x, y in zip(a, b):
        assert y["loss"] == pytest.approx(x["loss"], rel=1e-5) and y["grad_norm"] == pytest.approx(x["grad_norm"],
                                                                                                  rel=1e-4)
    half = our_trainer(setup, str(tmp_path / "fp16"), max_steps=4, fp16=True, **ARGS)
    frozen = {k: v.asnumpy().copy() for k, v in half.model.named_parameters_dict().items() if not v.requires_grad}
    half.train()
    losses = [h["loss"] for h in per_step_logs(half.state.log_history)]
    assert len(losses) == 4 and np.isfinite(losses).all()
    assert losses[0] == pytest.approx(a[0]["loss"], rel=1e-2)
    after = half.model.named_parameters_dict()
    assert all(np.array_equal(after[k].asnumpy(), v) for k, v in frozen.items())


def test_trainer_on_a_model_with_add_adapter_saves_the_adapter(setup, tmp_path):
    """HF's other route: `model.add_adapter(config)` then Trainer; checkpoints hold the adapter, torch peft loads it."""
    if setup[2]:
        pytest.skip("covered by the LoRA case")
    model = LlamaForCausalLM.from_pretrained(setup[0], dtype="float32")
    model.add_adapter(ms_peft.LoraConfig(r=2, target_modules=["k_proj"], init_lora_weights="gaussian"))
    args = TrainingArguments(output_dir=str(tmp_path), disable_tqdm=True, max_steps=2, save_strategy="steps",
                             save_steps=2, per_device_train_batch_size=4, learning_rate=1e-2)
    Trainer(model=model, args=args, train_dataset=make_rows()).train()
    checkpoint = str(tmp_path / "checkpoint-2")
    assert "model.safetensors" not in os.listdir(checkpoint)
    reference = peft.PeftModel.from_pretrained(transformers.LlamaForCausalLM.from_pretrained(setup[0]), checkpoint)
    trained = {k: v.numpy() for k, v in peft.get_peft_model_state_dict(reference).items()}
    assert {k[len("base_model.model."):]: v for k, v in trained.items()}.keys() == \
        model.get_adapter_state_dict().keys()
    for key, value in model.get_adapter_state_dict().items():
        np.testing.assert_array_equal(trained["base_model.model." + key], value)
    assert any(np.abs(v).max() > 0 for k, v in trained.items() if "lora_B" in k)
