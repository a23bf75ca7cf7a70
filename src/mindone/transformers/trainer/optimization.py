"""Optimizers and HF's learning-rate schedules for MindSpore.

AdamW and SGD are `mindspore.experimental.optim`'s, whose update rules are torch's (`mint.optim.AdamW` has no CPU
kernel; `mint.optim.SGD/Adam` do not update parameters in PyNative on CPU; `nn.AdamWeightDecay` lacks bias
correction). `Adafactor` is HF's algorithm written for MindSpore. A schedule sets each group's lr as a float (what
the optimizers then read) and mirrors it into the group's lr Parameter (`optimizer.lrs`, saved in checkpoints).
"""

import math
import re
from functools import partial

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, ops
from mindspore.experimental import optim as ms_optim

from ..backend import layers
from .training_args import OptimizerNames, SchedulerType

# parameter names HF excludes from weight decay (searched in the lower-cased full name)
_NO_DECAY_PATTERNS = [r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)"]


# ----------------------------------------------------------------------------------------------------------------
# schedules: lr = base_lr * lambda(step), HF's lambdas
# ----------------------------------------------------------------------------------------------------------------


def _constant(step):
    return 1.0


def _constant_with_warmup(step, *, num_warmup_steps):
    if step < num_warmup_steps:
        return float(step) / float(max(1.0, num_warmup_steps))
    return 1.0


def _linear(step, *, num_warmup_steps, num_training_steps):
    if step < num_warmup_steps:
        return float(step) / float(max(1, num_warmup_steps))
    return max(0.0, float(num_training_steps - step) / float(max(1, num_training_steps - num_warmup_steps)))


def _cosine(step, *, num_warmup_steps, num_training_steps, num_cycles=0.5, min_lr_rate=0.0):
    if step < num_warmup_steps:
        return float(step) / float(max(1, num_warmup_steps))
    progress = float(step - num_warmup_steps) / float(max(1, num_training_steps - num_warmup_steps))
    factor = 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress))
    return max(0.0, factor * (1 - min_lr_rate) + min_lr_rate)


def _cosine_with_restarts(step, *, num_warmup_steps, num_training_steps, num_cycles=1):
    if step < num_warmup_steps:
        return float(step) / float(max(1, num_warmup_steps))
    progress = float(step - num_warmup_steps) / float(max(1, num_training_steps - num_warmup_steps))
    if progress >= 1.0:
        return 0.0
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * ((float(num_cycles) * progress) % 1.0))))


def _polynomial(step, *, num_warmup_steps, num_training_steps, lr_init, lr_end=1e-7, power=1.0):
    if step < num_warmup_steps:
        return float(step) / float(max(1, num_warmup_steps))
    if step > num_training_steps:
        return lr_end / lr_init
    pct_remaining = 1 - (step - num_warmup_steps) / (num_training_steps - num_warmup_steps)
    return ((lr_init - lr_end) * pct_remaining ** power + lr_end) / lr_init


def _inverse_sqrt(step, *, num_warmup_steps, timescale=None):
    if timescale is None:
        timescale = num_warmup_steps or 10_000
    if step < num_warmup_steps:
        return float(step) / float(max(1, num_warmup_steps))
    return 1.0 / math.sqrt((step + timescale - num_warmup_steps) / timescale)


class LambdaLR:
    """torch's LambdaLR on a MindSpore optimizer: after `step()` k times, group i uses base_lr_i * lr_lambda(k)."""

    def __init__(self, optimizer, lr_lambda):
        self.optimizer = optimizer
        self.lr_lambda = lr_lambda
        # the float the user gave (the lr Parameters are float32, which would round e.g. 1e-3 in the logs)
        default = getattr(optimizer, "defaults", {}).get("lr")
        self.base_lrs = [float(default) if isinstance(default, (int, float)) and np.isclose(default, p.asnumpy())
                         else float(p.asnumpy()) for p in optimizer.lrs]
        self.last_epoch = 0
        self._apply()

    def _apply(self):
        factor = self.lr_lambda(self.last_epoch)
        self._last_lr = [base * factor for base in self.base_lrs]
        for group, param, value in zip(self.optimizer.param_groups, self.optimizer.lrs, self._last_lr):
            # A float group lr is what the optimizers read when it is set: MindSpore's own AdamW/SGD hand their
            # lr Parameter to a jitted update that keeps the value it was first compiled with, so changing the
            # Parameter alone would silently freeze the schedule.
            group["lr"] = float(value)
            param.assign_value(Tensor(value, ms.float32))

    def step(self):
        self.last_epoch += 1
        self._apply()

    def get_last_lr(self):
        return list(self._last_lr)

    def state_dict(self):
        return {"last_epoch": self.last_epoch, "base_lrs": self.base_lrs, "_last_lr": self._last_lr}

    def load_state_dict(self, state):
        self.base_lrs = list(state["base_lrs"])
        self.last_epoch = int(state["last_epoch"])
        self._apply()


def get_scheduler(name, optimizer, num_warmup_steps=None, num_training_steps=None, scheduler_specific_kwargs=None):
    """HF's `get_scheduler`: a LambdaLR for the named schedule."""
    name = SchedulerType(name)
    kwargs = dict(scheduler_specific_kwargs or {})
    if name == SchedulerType.CONSTANT:
        return LambdaLR(optimizer, _constant)
    if num_warmup_steps is None:
        raise ValueError(f"{name.value} requires `num_warmup_steps`")
    if name == SchedulerType.CONSTANT_WITH_WARMUP:
        return LambdaLR(optimizer, partial(_constant_with_warmup, num_warmup_steps=num_warmup_steps))
    if name == SchedulerType.INVERSE_SQRT:
        return LambdaLR(optimizer, partial(_inverse_sqrt, num_warmup_steps=num_warmup_steps, **kwargs))
    if num_training_steps is None:
        raise ValueError(f"{name.value} requires `num_training_steps`")
    common = dict(num_warmup_steps=num_warmup_steps, num_training_steps=num_training_steps)
    if name == SchedulerType.LINEAR:
        return LambdaLR(optimizer, partial(_linear, **common))
    if name == SchedulerType.COSINE:
        return LambdaLR(optimizer, partial(_cosine, **common, **kwargs))
    if name == SchedulerType.COSINE_WITH_RESTARTS:
        return LambdaLR(optimizer, partial(_cosine_with_restarts, **common, **kwargs))
    if name == SchedulerType.POLYNOMIAL:
        lr_init = LambdaLR(optimizer, _constant).base_lrs[0]
        lr_end = kwargs.get("lr_end", 1e-7)
        if not lr_init > lr_end:
            raise ValueError(f"lr_end ({lr_end}) must be smaller than initial lr ({lr_init})")
        return LambdaLR(optimizer, partial(_polynomial, **common, lr_init=lr_init, **kwargs))
    raise ValueError(f"scheduler {name.value!r} is not implemented")


# ----------------------------------------------------------------------------------------------------------------
# optimizers
# ----------------------------------------------------------------------------------------------------------------


def named_trainable_parameters(model):
    """[(name, Parameter)] of trainable parameters, each shared Parameter once under its first name."""
    seen, out = set(), []
    named = model.named_parameters_dict() if hasattr(model, "named_parameters_dict") else \
        {p.name: p for p in model.get_parameters()}
    for name, param in named.items():
        if param.requires_grad and id(param) not in seen:
            seen.add(id(param))
            out.append((name, param))
    return out


def get_decay_parameter_names(model):
    """Names of the parameters weight decay applies to: not biases, not norm weights (HF's rule)."""
    norm_params = set()
    for _, cell in model.cells_and_names():
        if isinstance(cell, layers.LayerNorm):
            norm_params.update(id(p) for p in cell.get_parameters())
    return [n for n, p in named_trainable_parameters(model)
            if id(p) not in norm_params and not any(re.search(pat, n.lower()) for pat in _NO_DECAY_PATTERNS)]


def grouped_parameters(model, weight_decay):
    decay = set(get_decay_parameter_names(model))
    named = named_trainable_parameters(model)
    groups = [{"params": [p for n, p in named if n in decay], "weight_decay": weight_decay},
              {"params": [p for n, p in named if n not in decay], "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def create_optimizer(args, model, params=None):
    """The optimizer `args.optim` names, with HF's two weight-decay groups.

    `params` replaces the model's parameters (the fp16 path optimizes float32 master copies); it must be in the
    order of `named_trainable_parameters(model)`.
    """
    groups = grouped_parameters(model, args.weight_decay)
    if params is not None:
        index = {id(p): q for (_, p), q in zip(named_trainable_parameters(model), params)}
        groups = [{**g, "params": [index[id(p)] for p in g["params"]]} for g in groups]
    extra = _parse_optim_args(args.optim_args)
    if args.optim in (OptimizerNames.ADAMW_TORCH, OptimizerNames.ADAMW_TORCH_FUSED, OptimizerNames.ADAMW):
        return AdamW(groups, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2),
                              eps=args.adam_epsilon, **extra)
    if args.optim == OptimizerNames.SGD:
        return ms_optim.SGD(groups, lr=args.learning_rate, **extra)
    if args.optim == OptimizerNames.ADAFACTOR:
        return Adafactor(groups, lr=args.learning_rate, scale_parameter=False, relative_step=False, **extra)
    raise ValueError(f"optimizer {args.optim.value!r} is not implemented")


def _zero_states(params, prefix):
    return ms.ParameterTuple(Parameter(Tensor(np.zeros(p.shape, np.float32), p.dtype), name=f"{prefix}.{p.name}",
                                       requires_grad=False) for p in params)


class AdamW(ms_optim.AdamW):
    """`mindspore.experimental.optim.AdamW` (torch's update rule, same state names and checkpoint keys) holding only
    the state it uses.

    MindSpore's constructor clones every parameter three times (exp_avg, exp_avg_sq and, even without amsgrad,
    max_exp_avg_sq) with `Parameter.clone`, which first copies the parameter's data; for SmolLM2-135M that left
    0.54 GB more resident than the two moments themselves (measured: 1.6 GB against torch's 1.08 GB). Here the
    moments are zero tensors made directly, and `max_exp_avg_sq` exists only when a group uses amsgrad (otherwise
    it is the `exp_avg_sq` tuple: MindSpore's update reads it only under amsgrad).
    """

    _fusable_adamw = True  # the Trainer's step runs it as F.adamw_update_ (train_step._fusable_adamw)

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *,
                 maximize=False):
        # MindSpore's AdamW.__init__ without its clones: its checks, the base Optimizer, its attributes
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if eps < 0.0:
            raise ValueError(f"Invalid epsilon value: {eps}")
        for i, beta in enumerate(betas):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"Invalid beta parameter at index {i}: {beta}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay, "amsgrad": amsgrad,
                    "maximize": maximize}
        ms_optim.Optimizer.__init__(self, params, defaults)
        self.exp_avg = _zero_states(self.parameters, "exp_avg")
        self.exp_avg_sq = _zero_states(self.parameters, "exp_avg_sq")
        if any(group.get("amsgrad") for group in self.param_groups):
            self.max_exp_avg_sq = _zero_states(self.parameters, "max_exp_avg_sq")
        else:
            self.max_exp_avg_sq = self.exp_avg_sq
        self.state_step = Parameter(Tensor(0, ms.int32), "state_step")
        self.increase_tensor = Tensor(1, ms.int32)
        self.assignadd = ops.AssignAdd()
        self.op_cast = ops.Cast()


def _parse_optim_args(text):
    if not text:
        return {}
    out = {}
    for item in text.replace(" ", "").split(","):
        key, value = item.split("=")
        for cast in (int, float):
            try:
                value = cast(value)
                break
            except ValueError:
                continue
        if value in ("True", "False"):
            value = value == "True"
        out[key] = value
    return out


class Adafactor(ms_optim.Optimizer):
    """HF's Adafactor (Shazeer & Stern 2018): factored second moments for matrices, update clipping.

    Only the explicit-learning-rate form is implemented (`relative_step=False`, as the Trainer uses it).
    """

    def __init__(self, params, lr=None, eps=(1e-30, 1e-3), clip_threshold=1.0, decay_rate=-0.8, beta1=None,
                 weight_decay=0.0, scale_parameter=True, relative_step=False, warmup_init=False):
        if lr is None or relative_step or warmup_init:
            raise ValueError("Adafactor here needs an explicit lr with relative_step=False and warmup_init=False")
        defaults = {"lr": lr, "eps": eps, "clip_threshold": clip_threshold, "decay_rate": decay_rate,
                    "beta1": beta1, "weight_decay": weight_decay, "scale_parameter": scale_parameter}
        super().__init__(params, defaults)
        self.state_step = Parameter(Tensor(0, ms.int32), "state_step")
        rows, cols, squares, avgs = [], [], [], []
        for p in self.parameters:
            factored = len(p.shape) >= 2
            rows.append(Parameter(np.zeros(p.shape[:-1] if factored else (1,), np.float32), f"exp_avg_sq_row.{p.name}"))
            cols.append(Parameter(np.zeros(p.shape[:-2] + p.shape[-1:] if factored else (1,), np.float32),
                                  f"exp_avg_sq_col.{p.name}"))
            squares.append(Parameter(np.zeros((1,) if factored else p.shape, np.float32), f"exp_avg_sq.{p.name}"))
            avgs.append(Parameter(np.zeros(p.shape if beta1 is not None else (1,), np.float32), f"exp_avg.{p.name}"))
        self.exp_avg_sq_row = ms.ParameterTuple(rows)
        self.exp_avg_sq_col = ms.ParameterTuple(cols)
        self.exp_avg_sq = ms.ParameterTuple(squares)
        self.exp_avg = ms.ParameterTuple(avgs)

    def construct(self, gradients):
        ops.assign_add(self.state_step, Tensor(1, ms.int32))
        step = self.state_step.astype(ms.float32)
        for group_id, group in enumerate(self.param_groups):
            start, end = self.group_start_id[group_id], self.group_start_id[group_id + 1]
            lr = group["lr"] if isinstance(group["lr"], float) else self.lrs[group_id]
            for i in range(start, end):
                self._update(i, gradients[i], lr, step, group)
        return True

    def _update(self, i, grad, lr, step, group):
        param = self.parameters[i]
        eps0, eps1 = group["eps"]
        grad = grad.astype(ms.float32)
        p32 = param.astype(ms.float32)
        if group["scale_parameter"]:
            lr = lr * ops.maximum(_rms(p32), Tensor(eps1, ms.float32))
        beta2t = 1.0 - ops.pow(step, group["decay_rate"])
        update = grad * grad + eps0
        if len(param.shape) >= 2:
            row = self.exp_avg_sq_row[i] * beta2t + update.mean(-1) * (1.0 - beta2t)
            col = self.exp_avg_sq_col[i] * beta2t + update.mean(-2) * (1.0 - beta2t)
            ops.assign(self.exp_avg_sq_row[i], row)
            ops.assign(self.exp_avg_sq_col[i], col)
            r_factor = ops.rsqrt(row / row.mean(-1, keep_dims=True)).unsqueeze(-1)
            c_factor = ops.rsqrt(col).unsqueeze(-2)
            update = r_factor * c_factor * grad
        else:
            sq = self.exp_avg_sq[i] * beta2t + update * (1.0 - beta2t)
            ops.assign(self.exp_avg_sq[i], sq)
            update = ops.rsqrt(sq) * grad
        update = update / ops.maximum(_rms(update) / group["clip_threshold"], Tensor(1.0, ms.float32))
        update = update * lr
        if group["beta1"] is not None:
            avg = self.exp_avg[i] * group["beta1"] + update * (1 - group["beta1"])
            ops.assign(self.exp_avg[i], avg)
            update = avg
        if group["weight_decay"] != 0:
            p32 = p32 - p32 * (group["weight_decay"] * lr)
        ops.assign(param, (p32 - update).astype(param.dtype))


def _rms(x):
    return ops.sqrt((x * x).mean())


# ----------------------------------------------------------------------------------------------------------------
# optimizer state <-> arrays (checkpoints)
# ----------------------------------------------------------------------------------------------------------------


def optimizer_state(optimizer):
    """{name: numpy array} of the optimizer's own state (moments, step, learning rates), not the model weights."""
    weights = {id(p) for p in optimizer.parameters}
    out = {}
    for name, param in optimizer.parameters_and_names():
        if id(param) not in weights:
            out[param.name or name] = param.asnumpy()
    return out


def load_optimizer_state(optimizer, arrays):
    weights = {id(p) for p in optimizer.parameters}
    own = {(param.name or name): param for name, param in optimizer.parameters_and_names() if id(param) not in weights}
    if not any(name.startswith("max_exp_avg_sq.") for name in own):
        # written by MindSpore's own AdamW, which keeps max_exp_avg_sq (zeros without amsgrad); `AdamW` has none
        arrays = {k: v for k, v in arrays.items() if not k.startswith("max_exp_avg_sq.")}
    missing = sorted(set(own) - set(arrays))
    unexpected = sorted(set(arrays) - set(own))
    if missing or unexpected:
        raise ValueError(f"optimizer state does not match this optimizer: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    for name, param in own.items():
        value = arrays[name]
        if tuple(value.shape) != tuple(param.shape):
            raise ValueError(f"optimizer state {name}: checkpoint shape {value.shape} != {tuple(param.shape)}")
        param.set_data(Tensor(value.astype(value.dtype), param.dtype))
