"""The compiled training step: gradients, accumulation, data-parallel averaging, loss scaling, clipping, update.

One optimizer step is `grad_step` once per micro-batch, then `prepare` and (unless fp16 overflowed) `update`:

    grad_step(micro-batch)  value_and_grad of compute_loss(...) * loss_factor * loss_scale; gradients are written
                            (first micro-batch) or added (later ones) into float32 buffers owned by this object
    prepare()               sum over data-parallel ranks (AllReduce, in the buffers) and the sum of squares of the
                            buffers; on the host: global L2 norm of the mean, unscaled gradient, HF's clip coefficient
                            max_norm / (norm + 1e-6) (at most 1); returns the pre-clip norm. 1 / world_size,
                            1 / loss_scale and the clip coefficient make one factor, `grad_scale`.
    update()                optimizer on buffers * grad_scale (called from Python, see `update`): AdamW is one fused
                            in-place kernel call per parameter group; with fp16, copies the float32 master weights
                            into the float16 model

`grad_step`, `prepare` and the master copy are compiled with `mindspore.jit` when `use_jit`; if compiling fails the
step falls back to PyNative (same functions, run op by op) and logs a warning once.

fp16 keeps float32 master weights in the optimizer and a float16 model for the forward and backward; a dynamic loss
scale (torch GradScaler's defaults: 2**16, x2 every 2000 good steps, x0.5 and skip the step on inf/nan) keeps small
gradients representable.
"""

import logging
import math

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, ops

from ..backend import functional as F
from ..backend import runtime

logger = logging.getLogger(__name__)


_store_first = ops.MultitypeFuncGraph("store_first")
_store_add = ops.MultitypeFuncGraph("store_add")
_store_scaled = ops.MultitypeFuncGraph("store_scaled")
_store_cast = ops.MultitypeFuncGraph("store_cast")
_square_sum = ops.MultitypeFuncGraph("square_sum")
_all_reduce_sum = ops.MultitypeFuncGraph("all_reduce_sum")


@_store_first.register("Tensor", "Tensor")
def _store_first_fn(buf, grad):
    return ops.assign(buf, grad.astype(ms.float32))


@_store_add.register("Tensor", "Tensor")
def _store_add_fn(buf, grad):
    return ops.assign_add(buf, grad.astype(ms.float32))


@_store_scaled.register("Tensor", "Tensor")
def _store_scaled_fn(coef, buf):
    return ops.assign(buf, buf * coef)


@_store_cast.register("Tensor", "Tensor")
def _store_cast_fn(target, source):
    return ops.assign(target, source.astype(target.dtype))


@_square_sum.register("Tensor")
def _square_sum_fn(x):
    return F.sum_of_squares(x)


@_all_reduce_sum.register("Function", "Tensor")
def _all_reduce_sum_fn(allreduce, buf):
    return ops.assign(buf, allreduce(buf))


def _fusable_adamw(optimizer):
    """mindspore.experimental.optim.AdamW without amsgrad/maximize: its update can run as F.adamw_update_."""
    from mindspore.experimental import optim as ms_optim

    return (type(optimizer) is ms_optim.AdamW or getattr(type(optimizer), "_fusable_adamw", False)) and not any(
        g.get("amsgrad") or g.get("maximize") for g in optimizer.param_groups)


class DynamicLossScaler:
    """torch.amp.GradScaler's dynamic schedule, on the host."""

    def __init__(self, init_scale=2.0 ** 16, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000):
        self.scale = float(init_scale)
        self.growth_factor = growth_factor
        self.backoff_factor = backoff_factor
        self.growth_interval = growth_interval
        self.growth_tracker = 0

    def update(self, finite: bool):
        if not finite:
            self.scale *= self.backoff_factor
            self.growth_tracker = 0
        else:
            self.growth_tracker += 1
            if self.growth_tracker == self.growth_interval:
                self.scale *= self.growth_factor
                self.growth_tracker = 0

    def state_dict(self):
        return {"scale": self.scale, "growth_factor": self.growth_factor, "backoff_factor": self.backoff_factor,
                "growth_interval": self.growth_interval, "_growth_tracker": self.growth_tracker}

    def load_state_dict(self, state):
        self.scale = float(state["scale"])
        self.growth_tracker = int(state["_growth_tracker"])


class TrainStep:
    """Owns gradient buffers and the compiled functions for one (model, optimizer) pair.

    Args:
        loss_fn: `loss_fn(inputs: dict, num_items_in_batch) -> scalar loss`, traced inside the compiled function.
        model_params: trainable parameters of the model, in the optimizer's order (float16 copies when fp16).
        optimizer: a MindSpore optimizer over `model_params` (fp32) or over the float32 masters (fp16).
        master_params: float32 masters when fp16, else None.
    """

    def __init__(self, loss_fn, model_params, optimizer, max_grad_norm, master_params=None, world_size=1,
                 use_jit=True):
        self.loss_fn = loss_fn
        self.model_params = list(model_params)
        self.optimizer = optimizer
        self.master_params = list(master_params) if master_params is not None else None
        self.max_grad_norm = float(max_grad_norm or 0.0)
        self.world_size = world_size
        self.use_jit = use_jit
        self.buffers = self._make_buffers()
        self._allreduce = ops.AllReduce() if world_size > 1 else None
        self.grad_scale = 1.0  # set by prepare(): 1 / (loss_scale * world_size) times the clip coefficient
        self._compiled = {}
        self._failed = set()
        self._fns = self._build()

    def _make_buffers(self):
        """float32 gradient buffers, one per parameter (`zero.ZeroTrainStep` shards them)."""
        return ms.ParameterTuple(tuple(
            Parameter(np.zeros(p.shape, np.float32), name=f"grad_buffer.{i}", requires_grad=False)
            for i, p in enumerate(self.model_params)))

    def _build(self):
        """The traced functions, as closures over the parameters (how mindspore.jit sees Parameters as state)."""
        loss_fn, buffers, optimizer = self.loss_fn, self.buffers, self.optimizer
        model_params, master_params = self.model_params, self.master_params
        allreduce = self._allreduce

        def forward(loss_factor, loss_scale, num_items, **inputs):
            loss = loss_fn(inputs, num_items).astype(ms.float32) * loss_factor
            return loss * loss_scale, loss

        grad_fn = ms.value_and_grad(forward, None, model_params, has_aux=True)

        # per-parameter work goes through HyperMap: a Python loop over hundreds of parameters is unrolled by the
        # graph compiler into nested calls and hits its call-depth limit (1000) on a 30-layer model
        hyper_map = ops.HyperMap()

        def grad_step(loss_factor, loss_scale, num_items, first, **inputs):
            (_, loss), grads = grad_fn(loss_factor, loss_scale, num_items, **inputs)
            store = _store_first if first else _store_add
            return ops.depend(loss, hyper_map(store, buffers, grads))

        def prepare():
            # the sum over ranks stays in the buffers; 1 / world_size, 1 / loss_scale and the clip coefficient are
            # one scalar the optimizer applies (`grad_scale`), instead of three passes over every gradient
            grads = buffers
            if allreduce is not None:
                grads = hyper_map(ops.partial(_all_reduce_sum, allreduce), buffers)  # the assigned buffers
            return ops.addn(hyper_map(_square_sum, grads))

        def scale_buffers(coef):
            return ops.depend(coef, hyper_map(ops.partial(_store_scaled, coef), buffers))

        def copy_masters():
            return ops.depend(Tensor(0, ms.int32), hyper_map(_store_cast, model_params, master_params))

        fns = {"grad": grad_step, "prepare": prepare, "scale_buffers": scale_buffers, "copy_masters": copy_masters}
        if _fusable_adamw(optimizer):
            fns["adamw"] = self._build_adamw()
        return fns

    def _build_adamw(self):
        """torch's AdamW over the gradient buffers: one fused in-place kernel call per parameter group
        (F.adamw_update_group_), called from Python, on MindSpore's AdamW state (parameters, exp_avg, exp_avg_sq,
        state_step).

        Not MindSpore's own AdamW: it jits its per-group update (even with `jit_mode=False`), and on SmolLM2-135M
        that graph compiled for 27 s and kept a buffer for every intermediate of every parameter's update (+6.4 GB
        resident). An op-by-op update (8 kernels per parameter) needed no extra memory but took ~1 s per step on a
        20M-parameter model; the fused kernel reads and writes each tensor once (~90 ms there, 1 thread). On CPU in
        float32 that kernel is the native one, which also applies `grad_scale` in the same pass.
        """
        optimizer, buffers = self.optimizer, self.buffers
        state_step = optimizer.state_step
        groups = []
        for i, group in enumerate(optimizer.param_groups):
            start, end = optimizer.group_start_id[i], optimizer.group_start_id[i + 1]
            beta1, beta2 = (float(b) for b in group["betas"])
            groups.append((i, start, end, beta1, beta2, float(group["eps"]), float(group["weight_decay"])))
        params, exp_avg, exp_avg_sq = optimizer.parameters, optimizer.exp_avg, optimizer.exp_avg_sq

        def adamw(lrs, grad_scale):
            ops.assign_add(state_step, Tensor(1, state_step.dtype))
            step = int(state_step.asnumpy())
            for i, start, end, beta1, beta2, eps, weight_decay in groups:
                F.adamw_update_group_(params[start:end], exp_avg[start:end], exp_avg_sq[start:end],
                                      buffers[start:end], lrs[i], beta1, beta2, eps, weight_decay, step,
                                      grad_scale=grad_scale)

        return adamw

    # -- dispatch -------------------------------------------------------------------------------------------------

    def _call(self, name, *args, **kwargs):
        fn = self._fns[name]
        if not self.use_jit or name in self._failed:
            return fn(*args, **kwargs)
        compiled = self._compiled.get(name)
        if compiled is None:
            compiled = self._compiled[name] = ms.jit(fn)
        try:
            return compiled(*args, **kwargs)
        except (RuntimeError, TypeError, ValueError) as e:
            if "compile" not in str(e).lower() and "graph" not in str(e).lower() and "not support" not in str(e):
                raise
            logger.warning("The %s step does not compile with mindspore.jit, running it in PyNative instead "
                           "(slower). Reason: %s", name, str(e).strip().splitlines()[0][:300])
            self._failed.add(name)
            return fn(*args, **kwargs)

    def grad_step(self, inputs, loss_factor, loss_scale=1.0, num_items_in_batch=None, first=True):
        """Adds this micro-batch's gradients to the buffers; returns its (GA-normalised) loss as a Tensor."""
        factor = Tensor(float(loss_factor), ms.float32)
        scale = Tensor(float(loss_scale), ms.float32)
        num_items = None if num_items_in_batch is None else Tensor(float(num_items_in_batch), ms.float32)
        with runtime.training_graph():
            return self._call("grad", factor, scale, num_items, bool(first), **inputs)

    def prepare(self, loss_scale=1.0):
        """Sums the buffered gradients over data-parallel ranks and takes the global L2 norm of their mean, unscaled
        (fp16); returns that pre-clip norm (float). The averaging, unscaling and clipping (HF's coefficient
        max_norm / (norm + 1e-6), at most 1) become one factor that `update` applies to the gradients."""
        factor = 1.0 / (float(loss_scale) * self.world_size)
        norm = math.sqrt(float(self._call("prepare").asnumpy())) * factor  # inf / nan stay inf / nan
        coef = 1.0
        if self.max_grad_norm > 0 and math.isfinite(norm):
            coef = min(self.max_grad_norm / (norm + 1e-6), 1.0)
        self.grad_scale = factor * coef
        return norm

    def update(self):
        """The optimizer step on the buffered gradients times `grad_scale` (set by `prepare`)."""
        # The optimizer runs from Python: the schedule hands it the lr as a float per group, which a traced graph
        # would freeze as a constant.
        grad_scale = float(np.float32(self.grad_scale))
        if "adamw" in self._fns:
            lrs = [float(g["lr"]) if isinstance(g["lr"], (int, float)) else float(lr.asnumpy())
                   for g, lr in zip(self.optimizer.param_groups, self.optimizer.lrs)]
            self._fns["adamw"](lrs, grad_scale)
        else:
            if grad_scale != 1.0:
                self._call("scale_buffers", Tensor(grad_scale, ms.float32))
            self.optimizer(tuple(self.buffers))
        if self.master_params is not None:
            self._call("copy_masters")
