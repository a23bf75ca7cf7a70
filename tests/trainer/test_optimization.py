"""Schedules and optimizers against torch / transformers' own implementations."""

import numpy as np
import pytest
import torch
import transformers

from mindspore import Parameter, Tensor
from mindspore.experimental import optim as ms_optim

from mindone.transformers.trainer.optimization import Adafactor, get_scheduler, load_optimizer_state, optimizer_state

SCHEDULES = {
    "linear": {},
    "cosine": {},
    "cosine_with_restarts": {"num_cycles": 3},
    "polynomial": {"power": 2.0, "lr_end": 1e-5},
    "constant": {},
    "constant_with_warmup": {},
    "inverse_sqrt": {},
}


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_schedule_learning_rates_match_transformers(name):
    steps, warmup, lr = 30, 4, 1e-3
    ours_opt = ms_optim.AdamW([Parameter(Tensor(np.zeros(2, np.float32)), name="w")], lr=lr)
    ours = get_scheduler(name, ours_opt, num_warmup_steps=warmup, num_training_steps=steps,
                         scheduler_specific_kwargs=SCHEDULES[name])
    torch_opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=lr)
    ref = transformers.get_scheduler(name, torch_opt, num_warmup_steps=warmup, num_training_steps=steps,
                                     scheduler_specific_kwargs=SCHEDULES[name] or None)
    for step in range(steps + 3):
        assert ours.get_last_lr()[0] == pytest.approx(ref.get_last_lr()[0], rel=1e-12, abs=1e-15), f"step {step}"
        assert ours_opt.param_groups[0]["lr"] == pytest.approx(ref.get_last_lr()[0], rel=1e-12, abs=1e-15)
        torch_opt.step()
        ours.step()
        ref.step()


def _run_steps(ours_opt, ours_params, torch_opt, torch_params, steps=5, seed=0):
    rng = np.random.RandomState(seed)
    for _ in range(steps):
        grads = [rng.randn(*p.shape).astype(np.float32) for p in torch_params]
        for p, g in zip(torch_params, grads):
            p.grad = torch.from_numpy(g)
        torch_opt.step()
        ours_opt(tuple(Tensor(g) for g in grads))
    for p, q in zip(ours_params, torch_params):
        np.testing.assert_allclose(p.asnumpy(), q.detach().numpy(), rtol=1e-5, atol=1e-6)


def _params(seed=0):
    rng = np.random.RandomState(seed)
    values = [rng.randn(6, 5).astype(np.float32), rng.randn(5).astype(np.float32), rng.randn(2, 3, 4).astype(np.float32)]
    ours = [Parameter(Tensor(v.copy()), name=f"p{i}") for i, v in enumerate(values)]
    ref = [torch.nn.Parameter(torch.from_numpy(v.copy())) for v in values]
    return ours, ref


def test_adamw_with_weight_decay_groups_matches_torch():
    ours, ref = _params()
    ours_opt = ms_optim.AdamW([{"params": ours[:1], "weight_decay": 0.1}, {"params": ours[1:], "weight_decay": 0.0}],
                              lr=1e-2, betas=(0.9, 0.99), eps=1e-7)
    torch_opt = torch.optim.AdamW([{"params": ref[:1], "weight_decay": 0.1}, {"params": ref[1:], "weight_decay": 0.0}],
                                  lr=1e-2, betas=(0.9, 0.99), eps=1e-7)
    _run_steps(ours_opt, ours, torch_opt, ref)


def test_sgd_matches_torch():
    ours, ref = _params()
    _run_steps(ms_optim.SGD(ours, lr=0.1, weight_decay=0.01), ours, torch.optim.SGD(ref, lr=0.1, weight_decay=0.01),
               ref)


@pytest.mark.parametrize("beta1,weight_decay", [(None, 0.0), (0.9, 0.01)])
def test_adafactor_matches_transformers(beta1, weight_decay):
    ours, ref = _params()
    kwargs = dict(lr=1e-2, scale_parameter=False, relative_step=False, beta1=beta1, weight_decay=weight_decay)
    _run_steps(Adafactor(ours, **kwargs), ours, transformers.Adafactor(ref, **kwargs), ref)


def test_optimizer_state_round_trip_continues_identically():
    a, _ = _params()
    b, _ = _params()
    opt_a = ms_optim.AdamW(a, lr=1e-2)
    opt_b = ms_optim.AdamW(b, lr=1e-2)
    grads = tuple(Tensor(np.full(p.shape, 0.5, np.float32)) for p in a)
    for _ in range(3):
        opt_a(grads)
    for p, q in zip(b, a):
        p.set_data(Tensor(q.asnumpy()))
    load_optimizer_state(opt_b, optimizer_state(opt_a))
    opt_a(grads)
    opt_b(grads)
    for p, q in zip(a, b):
        np.testing.assert_array_equal(p.asnumpy(), q.asnumpy())
    with pytest.raises(ValueError, match="optimizer state does not match"):
        load_optimizer_state(ms_optim.AdamW(_params()[0][:1], lr=1e-2), optimizer_state(opt_a))


@pytest.mark.parametrize("amsgrad", [False, True])
def test_trainer_adamw_keeps_only_its_state_and_updates_as_mindspore(amsgrad):
    """optimization.AdamW (the Trainer's) updates exactly as mindspore.experimental.optim.AdamW, holds
    max_exp_avg_sq only with amsgrad, and loads a state saved by MindSpore's AdamW."""
    from mindone.transformers.trainer.optimization import AdamW

    a, _ = _params()
    b, _ = _params()
    ours = AdamW([{"params": a[:1], "weight_decay": 0.1}, {"params": a[1:], "weight_decay": 0.0}], lr=1e-2,
                 amsgrad=amsgrad)
    ref = ms_optim.AdamW([{"params": b[:1], "weight_decay": 0.1}, {"params": b[1:], "weight_decay": 0.0}], lr=1e-2,
                         amsgrad=amsgrad)
    for step in range(3):
        grads = tuple(Tensor(np.full(p.shape, 0.5 - step, np.float32)) for p in a)
        ours(grads)
        ref(grads)
    for p, q in zip(a, b):
        np.testing.assert_array_equal(p.asnumpy(), q.asnumpy())
    assert any(k.startswith("max_exp_avg_sq.") for k in optimizer_state(ours)) == amsgrad
    load_optimizer_state(ours, optimizer_state(ref))
