"""Checks shared by the mixture-of-experts families (Mixtral, Qwen2-MoE, Qwen3-MoE) against torch `transformers`."""

import copy
import os

import mindspore as ms
import numpy as np
import torch
import transformers
from safetensors import safe_open
from safetensors.torch import save_file

from tests import parity
from tests.models.head_parity import assert_matches_torch, left_padded_batch


def assert_moe_causal_lm_matches_torch(ours_cls, torch_model, path, vocab, mode):
    """Logits, loss (with coef * aux_loss), aux_loss (padding excluded by the mask), per-layer router logits, hidden
    states and attentions on the real positions of a left-padded batch."""
    ids, mask, labels = left_padded_batch(vocab)
    inputs = dict(input_ids=ids, attention_mask=mask, labels=labels, output_router_logits=True,
                  output_hidden_states=True, output_attentions=True)
    out, ref = assert_matches_torch(ours_cls, torch_model, path, inputs,
                                    ["logits", "loss", "aux_loss", "hidden_states", "attentions"], mode,
                                    rows=mask.astype(bool))
    # router logits are (B * S, E) per MoE layer
    assert len(out["router_logits"]) == len(ref.router_logits) > 0
    flat_rows = mask.reshape(-1).astype(bool)
    errors = {f"router_logits.{i}": parity.rel_error(a, b, flat_rows)
              for i, (a, b) in enumerate(zip(out["router_logits"], ref.router_logits))}
    parity.assert_close(errors, parity.FP32_BAR, f"{ours_cls.__name__}/{mode}")
    return out, ref


def assert_moe_fp16_close_to_torch(ours_cls, torch_model, path, vocab, mode):
    """fp16 logits and router logits vs torch fp32: within 5e-3, or 1.25x torch's own fp16 error if that is larger.
    The whole output (with router logits and aux loss) is returned by the compiled forward in "graph" mode: a dict
    with a None field before the router logits used to fail there in MindSpore 2.10 ("... for pyexecute")."""
    ids, mask, _ = left_padded_batch(vocab)
    inputs, rows = dict(input_ids=ids, attention_mask=mask, output_router_logits=True), mask.astype(bool)
    reference = parity.run_torch(torch_model, inputs)
    torch_fp16 = parity.run_torch(copy.deepcopy(torch_model).half(), inputs)
    ours = parity.load_ours(ours_cls, path, dtype="float16")
    out = parity.run_ours(ours, inputs, mode)
    error = parity.rel_error(out["logits"], reference.logits, rows)
    torch_fp16_error = parity.rel_error(torch_fp16.logits, reference.logits, rows)
    assert error <= max(parity.FP16_BAR, 1.25 * torch_fp16_error), (error, torch_fp16_error)
    assert len(out["router_logits"]) == len(reference.router_logits)
    for got, want in zip(out["router_logits"], reference.router_logits):
        assert parity.to_numpy(got).shape == tuple(want.shape) and got.dtype == ms.float16
    # (their values are not held to the logits' bar: max / mean relative error 6e-3 - 1.2e-2 against torch fp16's
    # 2e-3 - 3e-3 on these test models, small logits relative to their largest deviation)
    aux = float(parity.to_numpy(out["aux_loss"]))
    assert abs(aux - float(reference.aux_loss)) <= max(5e-3, 1.25 * abs(float(torch_fp16.aux_loss) -
                                                                         float(reference.aux_loss)))


def assert_stacked_checkpoint_loads_and_saves_hf_layout(ours_cls, torch_cls, torch_model, tmp_path, vocab):
    """A checkpoint with HF 5's in-memory keys (stacked `experts.gate_up_proj` / `experts.down_proj`) loads; our
    save_pretrained writes what HF's does (per-expert matrices), which torch loads to identical logits.
    Returns the saved keys."""
    stacked_dir, saved_dir = str(tmp_path / "stacked"), str(tmp_path / "saved")
    os.makedirs(stacked_dir)
    torch_model.config.save_pretrained(stacked_dir)
    state = {k: v.contiguous() for k, v in torch_model.state_dict().items()}
    assert any(k.endswith("experts.gate_up_proj") for k in state)
    save_file(state, os.path.join(stacked_dir, "model.safetensors"), metadata={"format": "pt"})
    ids, mask, _ = left_padded_batch(vocab, seed=3)
    inputs, rows = dict(input_ids=ids, attention_mask=mask), mask.astype(bool)
    reference = parity.run_torch(torch_model, inputs).logits

    ours, info = ours_cls.from_pretrained(stacked_dir, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert parity.rel_error(parity.run_ours(ours, inputs)["logits"], reference, rows) <= parity.FP32_BAR

    ours.save_pretrained(saved_dir)
    with safe_open(os.path.join(saved_dir, "model.safetensors"), "np") as f:
        saved = set(f.keys())
    back = torch_cls.from_pretrained(saved_dir, attn_implementation="eager", experts_implementation="eager").eval()
    assert parity.rel_error(parity.run_torch(back, inputs).logits, reference) == 0.0
    return saved


def assert_moe_trainer_matches_torch(ours_cls, torch_cls, config, tmp_path, steps=6):
    """A few AdamW steps of our Trainer vs torch's on the same weights and batch (loss includes the aux loss when
    config.output_router_logits): logged loss / grad_norm / learning_rate, the loss going down, and the final
    weights."""
    from mindone.transformers.trainer import Trainer, TrainingArguments
    from tests.trainer.test_trainer_parity import assert_logs_match, make_rows, per_step_logs, torch_trainer

    checkpoint = parity.save_torch(parity.torch_reference(torch_cls, config, seed=0), str(tmp_path / "init"))
    rows = make_rows()[:4]  # one batch, seen every step: the loss must go down
    kwargs = dict(max_steps=steps, per_device_train_batch_size=4, learning_rate=3e-3, warmup_steps=1,
                  logging_steps=1, seed=7)
    ours = Trainer(model=ours_cls.from_pretrained(checkpoint, dtype="float32"),
                   args=TrainingArguments(output_dir=str(tmp_path / "ours"), save_strategy="no", disable_tqdm=True,
                                          **kwargs),
                   train_dataset=rows)
    loader = ours.get_train_dataloader()
    orders = []
    for epoch in range(steps):
        loader.set_epoch(epoch)
        orders.append(loader.order())
    ours.train()
    ref_model = torch_cls.from_pretrained(checkpoint, dtype=torch.float32, attn_implementation="eager",
                                          experts_implementation="eager")
    ref = torch_trainer(ref_model, rows, orders, str(tmp_path / "torch"), **kwargs)
    ref.train()
    assert_logs_match(ours, ref)
    losses = [h["loss"] for h in per_step_logs(ours.state.log_history)]
    assert len(losses) == steps and np.mean(losses[-2:]) < np.mean(losses[:2]), losses
    # weights: 1e-3, not the logs' 1e-4. Measured on Qwen2-MoE: 3.6e-4 on shared_expert.down_proj after 6 steps while
    # every logged loss / grad_norm agrees to 1e-4 (not root-caused; Adam's m / sqrt(v) gives near-zero gradient
    # elements full-size steps, so their rounding differences grow into the weights)
    ours_state = ours.model.state_dict()
    for name, tensor in ref.model.state_dict().items():
        err = parity.rel_error(ours_state[name], tensor)
        assert err <= 1e-3, f"{name}: final weights differ (rel {err:.2e})"


def assert_missing_expert_is_a_clear_error(ours_cls, path, tmp_path, dropped, match):
    """A copy of the (per-expert) checkpoint at `path` without the keys containing `dropped` fails to load with
    a CheckpointError matching `match`."""
    import shutil

    import pytest
    from safetensors.numpy import load_file, save_file as save_numpy

    from mindone.transformers.weights import CheckpointError

    broken = str(tmp_path / "broken")
    shutil.copytree(path, broken)
    state = load_file(os.path.join(broken, "model.safetensors"))
    assert any(dropped in k for k in state)
    save_numpy({k: v for k, v in state.items() if dropped not in k}, os.path.join(broken, "model.safetensors"),
               metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=match):
        ours_cls.from_pretrained(broken)
