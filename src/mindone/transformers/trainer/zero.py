"""ZeRO-style sharding for the Trainer's data parallelism (msrun), on MindSpore's own collectives.

Each AdamW parameter group is flattened (parameters in the optimizer's order, float32, zero-padded to a multiple
of the world size) and cut into `world_size` equal contiguous slices; rank r owns slice r (`FlatLayout`). For stage 3
without jit each group is first cut per unit (below), so that a unit is gathered from its own flat groups.

    stage 1   every rank keeps AdamW's state (exp_avg, exp_avg_sq) and a float32 copy of the parameters for its
              slice only; gradients are all-reduced in full as in plain data parallelism, each rank updates its
              slice, then the updated slices are all-gathered into every rank's model.
    stage 2   + gradients: each micro-batch's gradients are reduce-scattered, so a rank accumulates only its slice
              (the full gradient of one micro-batch exists only transiently, inside the backward).
    stage 3   + parameters: a rank holds only its float32 slice of the parameters; during the forward and the
              backward each unit (a decoder block, the embeddings, the final norm, the LM head) is all-gathered
              just before it runs and released right after, its backward recomputing its forward on re-gathered
              parameters (`jit_mode=False` only, see `ZeroTrainStep`): a rank holds its slices plus one unit.
              For inference (`shard_for_inference`) the same units are gathered around each forward.

Collectives on MindSpore 2.10's CPU backend (probed under msrun, 2 ranks, PyNative and inside `mindspore.jit`):
AllReduce, AllGather and Broadcast work; ReduceScatter has no CPU kernel (`ops.ReduceScatter`,
`mint.distributed.reduce_scatter[_tensor]`, `communication.comm_func.reduce_scatter_tensor` all fail), and so
AllGather cannot be differentiated on CPU (its backward is a ReduceScatter): stage 3 gathers outside autograd (hooks)
and differentiates the recomputed unit with respect to the gathered parameters. On CPU, reduce-scatter is therefore
emulated as AllReduce + this rank's slice (same result, world_size times the traffic), with a logged note; on
Ascend/GPU the real `ops.ReduceScatter` runs.

Loading: `load_sharded(model_class, path)` builds the model with empty parameters, and `ShardedAdamW` /
`shard_for_inference` read only this rank's slices from the safetensors files (no rank materialises the model).

Checkpoints: every rank writes `zero_shard_rank{R}.safetensors` (its slices of the parameters and of AdamW's state,
the step, and the layout in the metadata); rank 0 also writes the full model as usual. Resuming needs the same world
size. `merge_zero_checkpoint` (CLI: `python -m mindone.transformers.trainer.zero merge CKPT_DIR OUT_DIR`) turns the
shards into a plain `save_pretrained` checkpoint that torch `transformers` loads.
"""

import argparse
import glob
import json
import logging
import math
import os
import re
import shutil

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, ops

from ..backend import functional as F
from ..backend import runtime
from .train_step import TrainStep

logger = logging.getLogger(__name__)

SHARD_NAME = "zero_shard_rank{rank}.safetensors"

# DeepSpeed config keys: what this Trainer does with each (documented in docs/training.md)
_DS_CHECKED = {  # must be "auto" or equal to the TrainingArguments field
    "train_micro_batch_size_per_gpu": "per_device_train_batch_size",
    "gradient_accumulation_steps": "gradient_accumulation_steps",
    "gradient_clipping": "max_grad_norm",
}
_DS_ZERO_IGNORED_QUIETLY = {"contiguous_gradients", "reduce_scatter", "allgather_partitions"}


# ----------------------------------------------------------------------------------------------------------------
# configuration
# ----------------------------------------------------------------------------------------------------------------


def resolve_zero_stage(args) -> int:
    """The ZeRO stage (0 = off) from `args.zero_stage` or a DeepSpeed-style config in `args.deepspeed` (a dict or
    the path of a JSON file). Only `zero_optimization.stage` is honoured; `train_micro_batch_size_per_gpu`,
    `gradient_accumulation_steps` and `gradient_clipping` must be "auto" or agree with the TrainingArguments;
    `train_batch_size` must be "auto" or equal to the global batch; every other key is ignored with a warning."""
    stage = args.zero_stage
    if args.deepspeed:
        ds_stage = _stage_from_deepspeed(args)
        if stage is not None and stage != ds_stage:
            raise ValueError(f"zero_stage={stage} disagrees with the deepspeed config's zero_optimization.stage="
                             f"{ds_stage}; set one of them")
        stage = ds_stage
    stage = 0 if stage is None else stage
    if stage not in (0, 1, 2, 3) or isinstance(stage, bool):
        raise ValueError(f"zero_stage must be 0, 1, 2 or 3, got {stage!r}")
    if stage:
        if args.fp16 or args.bf16:
            raise ValueError(f"zero_stage={stage} with fp16/bf16 is not implemented: ZeRO sharding trains in float32")
        if args.optim.value not in ("adamw_torch", "adamw_torch_fused", "adamw"):
            raise ValueError(f"zero_stage={stage} shards AdamW's state; optim={args.optim.value!r} is not supported "
                             "(use adamw_torch)")
    return stage


def _stage_from_deepspeed(args):
    config = args.deepspeed
    if isinstance(config, str):
        if not os.path.isfile(config):
            raise ValueError(f"deepspeed={config!r}: not a JSON file (pass a dict or the path of a DeepSpeed config)")
        with open(config, encoding="utf-8") as f:
            config = json.load(f)
    if not isinstance(config, dict):
        raise ValueError(f"deepspeed must be a dict or a JSON file path, got {type(config).__name__}")
    ignored = []
    for key, value in config.items():
        if key == "zero_optimization":
            continue
        if key in _DS_CHECKED:
            field = _DS_CHECKED[key]
            if value != "auto" and float(value) != float(getattr(args, field)):
                raise ValueError(f"deepspeed config {key}={value} != TrainingArguments.{field}="
                                 f"{getattr(args, field)}; use 'auto' or the same value")
        elif key == "train_batch_size":
            expected = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
            if value != "auto" and int(value) != expected:
                raise ValueError(f"deepspeed config train_batch_size={value} != per_device_train_batch_size x "
                                 f"gradient_accumulation_steps x world_size = {expected}")
        else:
            ignored.append(key)
    zero = config.get("zero_optimization", {})
    if not isinstance(zero, dict):
        raise ValueError(f"deepspeed config zero_optimization must be a dict, got {zero!r}")
    ignored += [f"zero_optimization.{k}" for k in zero if k != "stage" and k not in _DS_ZERO_IGNORED_QUIETLY]
    if ignored:
        logger.warning("deepspeed config: only zero_optimization.stage is used by the MindSpore Trainer (and the "
                       "batch size / accumulation / clipping keys are checked); ignoring %s", ", ".join(ignored))
    stage = zero.get("stage", 0)
    if not isinstance(stage, int):
        raise ValueError(f"deepspeed config zero_optimization.stage must be an int, got {stage!r}")
    return stage


# ----------------------------------------------------------------------------------------------------------------
# flat partitioning
# ----------------------------------------------------------------------------------------------------------------


class FlatLayout:
    """Parameters of `shapes` flattened end to end, zero-padded to `world_size * shard_size`; rank r owns
    [r * shard_size, (r + 1) * shard_size)."""

    def __init__(self, shapes, world_size):
        self.shapes = [tuple(int(d) for d in s) for s in shapes]
        self.numels = [int(np.prod(s)) for s in self.shapes]
        self.offsets = [int(o) for o in np.cumsum([0] + self.numels)]
        self.numel = self.offsets[-1]
        self.world_size = int(world_size)
        self.shard_size = max(1, math.ceil(self.numel / self.world_size))
        self.padded = self.shard_size * self.world_size

    def flatten(self, arrays):
        flat = np.zeros(self.padded, np.float32)
        for a, start, n in zip(arrays, self.offsets, self.numels):
            flat[start:start + n] = np.asarray(a, np.float32).reshape(-1)
        return flat

    def unflatten(self, flat):
        return [np.asarray(flat[start:start + n]).reshape(shape)
                for start, n, shape in zip(self.offsets, self.numels, self.shapes)]

    def shard(self, flat, rank):
        return flat[rank * self.shard_size:(rank + 1) * self.shard_size]

    def gather(self, shards):
        if len(shards) != self.world_size:
            raise ValueError(f"expected {self.world_size} shards, got {len(shards)}")
        return np.concatenate([np.asarray(s).reshape(-1) for s in shards])

    def flatten_tensors(self, tensors):
        """`flatten` for MindSpore tensors (PyNative or inside jit)."""
        parts = [t.reshape(-1).astype(ms.float32) for t in tensors]
        if self.padded > self.numel:
            parts.append(ops.zeros((self.padded - self.numel,), ms.float32))
        return ops.concat(parts) if len(parts) > 1 else parts[0]

    def shard_tensors(self, tensors, rank):
        """`shard(flatten(tensors), rank)` for MindSpore tensors (PyNative), a new float32 tensor, built from the
        pieces of the tensors that overlap the slice only (no full flat copy)."""
        low, high = rank * self.shard_size, (rank + 1) * self.shard_size
        parts = []
        for tensor, start, n in zip(tensors, self.offsets, self.numels):
            a, b = max(low, start), min(high, start + n)
            if a < b:
                parts.append(tensor.reshape(-1)[a - start:b - start].astype(ms.float32))
        pad = high - max(low, self.numel)
        if pad > 0:
            parts.append(ops.zeros((pad,), ms.float32))
        return ops.concat(parts) if len(parts) > 1 else parts[0].copy()

    def to_dict(self):
        return {"shapes": [list(s) for s in self.shapes], "world_size": self.world_size}


def _split_groups_by_unit(groups, units):
    """Each weight-decay group cut into one group per stage-3 unit (in unit order), so that gathering a unit
    all-gathers only the flat groups holding its parameters. A tied parameter goes with the first unit owning it."""
    unit_of = {}
    for index, (_, _, params) in enumerate(units):
        for param in params:
            unit_of.setdefault(id(param), index)
    out = []
    for index in range(len(units) + 1):  # + parameters outside every unit (none for a PreTrainedModel)
        for group in groups:
            picked = [i for i, p in enumerate(group["params"]) if unit_of.get(id(p), len(units)) == index]
            if picked:
                out.append({**group, "names": [group["names"][i] for i in picked],
                            "params": [group["params"][i] for i in picked]})
    return out


class Collectives:
    """all_gather / reduce_scatter over the world group, flat along axis 0. On CPU, reduce-scatter is AllReduce +
    this rank's slice (MindSpore has no CPU ReduceScatter kernel); the real ReduceScatter elsewhere."""

    _noted = False

    def __init__(self, world_size, rank):
        self.world_size, self.rank = world_size, rank
        self.all_reduce = ops.AllReduce() if world_size > 1 else None
        self.all_gather_op = ops.AllGather() if world_size > 1 else None
        self.emulate_reduce_scatter = world_size > 1 and runtime.is_cpu()
        self.reduce_scatter_op = ops.ReduceScatter() if world_size > 1 and not self.emulate_reduce_scatter else None
        if self.emulate_reduce_scatter and not Collectives._noted:
            Collectives._noted = True
            logger.info("ZeRO: MindSpore's CPU backend has no ReduceScatter kernel; gradients are reduce-scattered as "
                        "AllReduce + this rank's slice (same values, %dx the traffic of a real reduce-scatter)",
                        world_size)

    def reduce_scatter(self, flat, shard_size):
        if self.world_size == 1:
            return flat
        if self.emulate_reduce_scatter:
            start = self.rank * shard_size
            return self.all_reduce(flat)[start:start + shard_size]
        return self.reduce_scatter_op(flat)

    def all_gather(self, shard):
        return shard if self.world_size == 1 else self.all_gather_op(shard)


# ----------------------------------------------------------------------------------------------------------------
# the sharded optimizer
# ----------------------------------------------------------------------------------------------------------------


class ShardedAdamW:
    """torch's AdamW with its state partitioned over data-parallel ranks: per parameter group, this rank's float32
    slice of the flattened parameters (`param_shards`), exp_avg and exp_avg_sq. The scheduler interface of
    `mindspore.experimental.optim.AdamW` (param_groups with float lr, `lrs` Parameters, `defaults`).

    Args:
        named_groups: [{"names": [...], "params": [Parameter, ...], "weight_decay": float}] in optimizer order.
        lr, betas, eps: AdamW hyper-parameters (as torch's).
        world_size, rank: the data-parallel group.
    """

    def __init__(self, named_groups, lr, betas=(0.9, 0.999), eps=1e-8, world_size=1, rank=0):
        self.world_size, self.rank = int(world_size), int(rank)
        self.defaults = {"lr": lr, "betas": tuple(betas), "eps": eps}
        self.param_groups, self.names, self.layouts, self.lrs = [], [], [], []
        self.param_shards, self.exp_avg, self.exp_avg_sq = [], [], []
        self.parameters = []
        self.step = 0
        readers = {}
        for i, group in enumerate(named_groups):
            params = list(group["params"])
            self.param_groups.append({"params": params, "lr": float(lr), "betas": tuple(betas), "eps": float(eps),
                                      "weight_decay": float(group["weight_decay"]), "amsgrad": False,
                                      "maximize": False})
            self.names.append(list(group["names"]))
            self.parameters += params
            layout = FlatLayout([_full_shape(p) for p in params], self.world_size)
            self.layouts.append(layout)
            self.lrs.append(Parameter(Tensor(lr, ms.float32), name=f"zero.lr.{i}", requires_grad=False))
            unloaded = [n for n, p in zip(group["names"], params) if _is_sharded_load(p)]
            if unloaded and len(unloaded) < len(params):
                raise ValueError(f"parameter group {i} mixes parameters of a load_sharded model ({unloaded[:3]}) "
                                 "with materialised ones (added after loading?): not supported")
            if unloaded:  # `load_sharded`: this rank's slice read from the files
                shard = _read_shard(layout, [p._zero_source for p in params], self.rank, readers)
            else:
                shard = layout.shard(layout.flatten([p.asnumpy() for p in params]), self.rank)
            self.param_shards.append(Parameter(Tensor(shard.copy()), name=f"zero.param.{i}", requires_grad=False))
            zeros = np.zeros(layout.shard_size, np.float32)
            self.exp_avg.append(Parameter(Tensor(zeros), name=f"zero.exp_avg.{i}", requires_grad=False))
            self.exp_avg_sq.append(Parameter(Tensor(zeros.copy()), name=f"zero.exp_avg_sq.{i}", requires_grad=False))

    @classmethod
    def from_model(cls, args, model):
        from .optimization import grouped_parameters, named_trainable_parameters

        names = {id(p): n for n, p in named_trainable_parameters(model)}
        groups = [{"names": [names[id(p)] for p in g["params"]], **g}
                  for g in grouped_parameters(model, args.weight_decay)]
        if args.zero_stage == 3 and not args.jit_mode:
            groups = _split_groups_by_unit(groups, parameter_units(model, trainable_only=True))
        return cls(groups, args.learning_rate, (args.adam_beta1, args.adam_beta2), args.adam_epsilon,
                   args.world_size, args.process_index)

    def group_ranges(self):
        out, start = [], 0
        for group in self.param_groups:
            out.append((start, start + len(group["params"])))
            start += len(group["params"])
        return out

    def step_shards(self, grad_shards, grad_scale):
        """One AdamW step of this rank's slices with gradients `grad_shards[i] * grad_scale` (in place)."""
        self.step += 1
        for i, group in enumerate(self.param_groups):
            beta1, beta2 = group["betas"]
            F.adamw_update_(self.param_shards[i], self.exp_avg[i], self.exp_avg_sq[i], grad_shards[i],
                            float(group["lr"]), beta1, beta2, group["eps"], group["weight_decay"], self.step,
                            grad_scale=grad_scale)

    # -- checkpoints ------------------------------------------------------------------------------------------------

    def shard_state(self):
        arrays = {"step": np.array([self.step], np.int64)}
        for i in range(len(self.param_groups)):
            arrays[f"group{i}.param"] = self.param_shards[i].asnumpy()
            arrays[f"group{i}.exp_avg"] = self.exp_avg[i].asnumpy()
            arrays[f"group{i}.exp_avg_sq"] = self.exp_avg_sq[i].asnumpy()
        meta = {"world_size": self.world_size, "rank": self.rank,
                "groups": [{"names": n, "shapes": l.to_dict()["shapes"], "weight_decay": g["weight_decay"]}
                           for n, l, g in zip(self.names, self.layouts, self.param_groups)]}
        return arrays, meta

    def load_shard_state(self, arrays, meta, path):
        if int(meta["world_size"]) != self.world_size or int(meta["rank"]) != self.rank:
            raise ValueError(f"{path}: written by rank {meta['rank']} of world size {meta['world_size']}, this is "
                             f"rank {self.rank} of {self.world_size}; resume with the same world size, or merge the "
                             "shards (merge_zero_checkpoint) and start a new run from the merged model")
        if [g["names"] for g in meta["groups"]] != self.names:
            raise ValueError(f"{path}: its parameter groups do not match this model's trainable parameters")
        self.step = int(arrays["step"][0])
        for i in range(len(self.param_groups)):
            for name, target in (("param", self.param_shards[i]), ("exp_avg", self.exp_avg[i]),
                                 ("exp_avg_sq", self.exp_avg_sq[i])):
                value = arrays[f"group{i}.{name}"]
                if value.shape != tuple(target.shape):
                    raise ValueError(f"{path}: group{i}.{name} shape {value.shape} != {tuple(target.shape)}")
                ops.assign(target, Tensor(value))

    def state_bytes(self):
        """Bytes this rank holds for the optimizer: its slices of the parameters, exp_avg and exp_avg_sq."""
        return sum(_nbytes(t) for t in self.param_shards + self.exp_avg + self.exp_avg_sq)


# ----------------------------------------------------------------------------------------------------------------
# the training step
# ----------------------------------------------------------------------------------------------------------------


_store_first = ops.MultitypeFuncGraph("zero_store_first")
_store_add = ops.MultitypeFuncGraph("zero_store_add")


@_store_first.register("Tensor", "Tensor")
def _store_first_fn(buf, grad):
    return ops.assign(buf, grad)


@_store_add.register("Tensor", "Tensor")
def _store_add_fn(buf, grad):
    return ops.assign_add(buf, grad)


class ZeroTrainStep(TrainStep):
    """`TrainStep` with ZeRO sharding (stage 1, 2 or 3) over a `ShardedAdamW`; same calls (grad_step, prepare,
    update), so the Trainer's loop, clipping and logging are unchanged.

    Stage 3 (`jit_mode=False`) gathers parameters per unit (`parameter_units`: each decoder block, the embeddings,
    the final norm, the LM head): a unit's parameters are all-gathered from the ranks' slices just before its forward
    and released right after it; its forward keeps no activations (MindSpore's recompute), and its backward gathers
    the parameters again, recomputes the forward and takes the gradients, then releases them. A rank so holds its
    slices plus one unit's full parameters at a time (`memory_bytes()["parameters_peak"]`). Gradients are full-size
    while the backward runs and reduce-scattered right after it, as in stage 2. Outside the training step the
    parameters stay released until `gather_parameters` (called by the Trainer before evaluating or saving).

    Replacing a Parameter's data is invisible to an already compiled `mindspore.jit` graph (it keeps the old
    buffer), so with `use_jit` stage 3 keeps the parameters materialised (memory as stage 2) and says so in a warning.

    Args:
        model: the model whose units stage 3 gathers (required for stage 3 without jit).
    """

    def __init__(self, loss_fn, model_params, optimizer, max_grad_norm, stage, world_size=1, use_jit=True,
                 model=None):
        if not isinstance(optimizer, ShardedAdamW):
            raise ValueError(f"ZeRO stage {stage} needs the Trainer's ShardedAdamW optimizer, got "
                             f"{type(optimizer).__name__} (custom optimizers cannot be sharded)")
        self.stage = int(stage)
        self.comm = Collectives(world_size, optimizer.rank)
        self.release_parameters = self.stage == 3 and not use_jit
        if self.stage == 3 and use_jit:
            logger.warning("ZeRO stage 3 with jit_mode=True keeps the model's parameters materialised between steps "
                           "(a compiled graph cannot see re-allocated parameters): memory as stage 2. Use "
                           "jit_mode=False to release them.")
        if self.release_parameters and model is None:
            raise ValueError("ZeRO stage 3 without jit gathers the parameters unit by unit: pass the model")
        unloaded = [p.name for p in (model.get_parameters() if model is not None else model_params)
                    if _is_sharded_load(p) and not (self.release_parameters and p.requires_grad)]
        if unloaded:
            raise ValueError(f"parameters of a model built by load_sharded are read only by ZeRO stage 3 with "
                             f"jit_mode=False, as trainable parameters; not loaded here: {unloaded[:5]}"
                             f"{' ...' if len(unloaded) > 5 else ''} (load the model with from_pretrained instead)")
        self._released = False
        super().__init__(loss_fn, model_params, optimizer, max_grad_norm, master_params=None,
                         world_size=world_size, use_jit=use_jit)
        self.gathered_bytes_peak = 0  # most trainable-parameter bytes materialised at once during a step
        if self.release_parameters:
            self._setup_units(model)

    # -- stage 3: per-unit gather / release ----------------------------------------------------------------------

    def _setup_units(self, model):
        opt = self.optimizer
        layout_of = {}
        for index, (start, end) in enumerate(opt.group_ranges()):
            for param in opt.parameters[start:end]:
                layout_of[id(param)] = index
        units = parameter_units(model, trainable_only=True)
        names = [name for name, _, _ in units]
        self._layout_refs = [0] * len(opt.layouts)
        self._live = 0
        self._active = False
        self._resident = set()  # layouts of units that contain other units: gathered for the whole step
        self.units = []
        for name, cell, params in units:
            layouts = sorted({layout_of[id(p)] for p in params})
            if any(other != name and (not name or other.startswith(name + ".")) for other in names):
                self._resident.update(layouts)  # recomputing it would nest the inner units' recompute
                continue
            if getattr(cell, "_recompute_cell", None) is None:
                cell.recompute()  # its forward saves nothing; the backward re-runs it on re-gathered parameters
            cell.register_forward_pre_hook(self._hook(self._gather_layouts, layouts))
            cell.register_forward_hook(self._hook(self._release_layouts, layouts))
            cell.register_backward_pre_hook(self._hook(self._gather_layouts, layouts))
            cell.register_backward_hook(self._hook(self._release_layouts, layouts))
            self.units.append((name, layouts))
        self._release()
        logger.info("ZeRO-3: %d units gathered one at a time (%d flat groups)", len(self.units), len(opt.layouts))

    def _hook(self, fn, layouts):
        def hook(*_):
            if self._active:
                fn(layouts)
        return hook

    def _gather_layouts(self, layouts):
        opt = self.optimizer
        ranges = opt.group_ranges()
        for index in layouts:
            self._layout_refs[index] += 1
            if self._layout_refs[index] > 1:
                continue
            layout, (start, end) = opt.layouts[index], ranges[index]
            flat = self.comm.all_gather(opt.param_shards[index])
            for param, offset, n, shape in zip(self.model_params[start:end], layout.offsets, layout.numels,
                                               layout.shapes):
                param.set_data(flat[offset:offset + n].reshape(shape).astype(param.dtype), slice_shape=True)
                self._live += n * param.itemsize
        self.gathered_bytes_peak = max(self.gathered_bytes_peak, self._live)

    def _release_layouts(self, layouts, force=False):
        opt = self.optimizer
        ranges = opt.group_ranges()
        for index in layouts:
            if self._layout_refs[index] == 0:
                continue
            self._layout_refs[index] = 0 if force else self._layout_refs[index] - 1
            if self._layout_refs[index]:
                continue
            layout, (start, end) = opt.layouts[index], ranges[index]
            for param, n in zip(self.model_params[start:end], layout.numels):
                self._live -= n * param.itemsize
                _release_parameter(param)

    def _make_buffers(self):
        if self.stage == 1:
            return super()._make_buffers()
        return ms.ParameterTuple(tuple(
            Parameter(np.zeros(layout.shard_size, np.float32), name=f"zero.grad_shard.{i}", requires_grad=False)
            for i, layout in enumerate(self.optimizer.layouts)))

    def _build(self):
        fns = super()._build()
        fns.pop("adamw", None)
        fns.pop("copy_masters", None)
        if self.stage == 1:
            return fns  # gradients in full, all-reduced as in plain data parallelism
        loss_fn, buffers, model_params, comm = self.loss_fn, self.buffers, self.model_params, self.comm
        layouts, ranges = self.optimizer.layouts, self.optimizer.group_ranges()
        hyper_map = ops.HyperMap()

        def forward(loss_factor, loss_scale, num_items, **inputs):
            loss = loss_fn(inputs, num_items).astype(ms.float32) * loss_factor
            return loss * loss_scale, loss

        grad_fn = ms.value_and_grad(forward, None, model_params, has_aux=True)
        scatter = [_flat_reduce_scatter(start, end, layout.padded - layout.numel, layout.shard_size, comm)
                   for layout, (start, end) in zip(layouts, ranges)]

        def grad_step(loss_factor, loss_scale, num_items, first, **inputs):
            (_, loss), grads = grad_fn(loss_factor, loss_scale, num_items, **inputs)
            shards = tuple(fn(grads) for fn in scatter)
            store = _store_first if first else _store_add
            return ops.depend(loss, hyper_map(store, buffers, shards))

        def prepare():
            square_sum = ops.addn([F.sum_of_squares(b) for b in buffers])
            return square_sum if comm.all_reduce is None else comm.all_reduce(square_sum)

        fns["grad"] = grad_step
        fns["prepare"] = prepare
        return fns

    def grad_step(self, inputs, loss_factor, loss_scale=1.0, num_items_in_batch=None, first=True):
        if not self.release_parameters:
            return super().grad_step(inputs, loss_factor, loss_scale, num_items_in_batch, first)
        if not self._released:  # gathered whole for an evaluation or a save since the last step
            self._release()
        self._gather_layouts(sorted(self._resident))
        self._active = True
        try:
            return super().grad_step(inputs, loss_factor, loss_scale, num_items_in_batch, first)
        finally:
            self._active = False
            # whatever is still gathered (an error mid-step, a unit whose backward hook did not run) is released
            self._release_layouts(range(len(self._layout_refs)), force=True)

    def update(self):
        grad_scale = float(np.float32(self.grad_scale))
        opt = self.optimizer
        if self.stage == 1:
            grad_shards = [layout.shard_tensors(self.buffers[start:end], opt.rank)
                           for layout, (start, end) in zip(opt.layouts, opt.group_ranges())]
        else:
            grad_shards = list(self.buffers)
        opt.step_shards(grad_shards, grad_scale)
        if self.release_parameters:
            self._release()
        else:
            self._write_parameters()

    def _write_parameters(self):
        opt = self.optimizer
        for layout, (start, end), shard in zip(opt.layouts, opt.group_ranges(), opt.param_shards):
            flat = self.comm.all_gather(shard)
            for param, offset, n, shape in zip(self.model_params[start:end], layout.offsets, layout.numels,
                                               layout.shapes):
                ops.assign(param, flat[offset:offset + n].reshape(shape).astype(param.dtype))

    def _release(self):
        for param in self.model_params:
            _release_parameter(param)
        self._live = 0
        self._layout_refs = [0] * len(self.optimizer.layouts)
        self._released = True

    def gather_parameters(self):
        """Stage 3: all-gathers the model's parameters from the ranks' slices (no-op when they are present)."""
        if not self._released:
            return
        opt = self.optimizer
        for layout, (start, end), shard in zip(opt.layouts, opt.group_ranges(), opt.param_shards):
            flat = self.comm.all_gather(shard).asnumpy()
            for param, value in zip(self.model_params[start:end], layout.unflatten(flat)):
                param.set_data(Tensor(value.astype(_np_dtype(param.dtype))), slice_shape=True)
        self._released = False

    def memory_bytes(self):
        """Bytes this rank holds, by kind: optimizer state (ShardedAdamW's slices), gradient buffers, the model's
        trainable parameters now (0 for a released stage-3 parameter) and the most of them materialised at once
        during a step (`parameters_peak`: stage 3 without jit, one unit at a time)."""
        params = 0 if self._released else sum(_nbytes(p) for p in self.model_params)
        peak = self.gathered_bytes_peak if self.release_parameters else params
        return {"optimizer_state": self.optimizer.state_bytes(), "gradients": sum(_nbytes(b) for b in self.buffers),
                "parameters": params, "parameters_peak": peak}


def _flat_reduce_scatter(start, end, pad, shard_size, comm):
    """grads[start:end] flattened (float32, `pad` zeros appended) and reduce-scattered: a closure over plain ints
    and primitives, traceable by mindspore.jit."""
    all_reduce, reduce_scatter_op = comm.all_reduce, comm.reduce_scatter_op
    world_size, emulate, offset = comm.world_size, comm.emulate_reduce_scatter, comm.rank * shard_size

    def fn(grads):
        parts = [g.reshape(-1).astype(ms.float32) for g in grads[start:end]]
        if pad:
            parts.append(ops.zeros((pad,), ms.float32))
        flat = ops.concat(parts)
        if world_size == 1:
            return flat
        if emulate:
            return all_reduce(flat)[offset:offset + shard_size]
        return reduce_scatter_op(flat)

    return fn


def _release_parameter(param):
    """Replaces a parameter's data by an empty tensor of its dtype (stage 3: the rank keeps only its slice); its
    shape stays readable as `_full_shape` (the token-id check reads the embedding's rows)."""
    if param.shape != (0,):
        param._full_shape = tuple(param.shape)
    param.set_data(Tensor(np.zeros((0,), _np_dtype(param.dtype))), slice_shape=True)


def _nbytes(tensor):
    return int(np.prod(tensor.shape)) * tensor.itemsize


def _np_dtype(dtype):
    return {ms.float32: np.float32, ms.float16: np.float16, ms.float64: np.float64}[dtype]


# ----------------------------------------------------------------------------------------------------------------
# checkpoints
# ----------------------------------------------------------------------------------------------------------------


def save_shard(optimizer, directory, extra_arrays=None):
    """Writes this rank's `zero_shard_rank{R}.safetensors` into `directory`."""
    from safetensors.numpy import save_file

    arrays, meta = optimizer.shard_state()
    for name, value in (extra_arrays or {}).items():
        arrays[f"frozen.{name}"] = np.ascontiguousarray(value)
    save_file(arrays, os.path.join(directory, SHARD_NAME.format(rank=optimizer.rank)),
              metadata={"format": "ms", "zero": json.dumps(meta)})


def load_shard(optimizer, directory):
    """Restores this rank's slices from `directory/zero_shard_rank{R}.safetensors`."""
    from safetensors import safe_open
    from safetensors.numpy import load_file

    path = os.path.join(directory, SHARD_NAME.format(rank=optimizer.rank))
    if not os.path.isfile(path):
        found = sorted(os.path.basename(p) for p in glob.glob(os.path.join(directory, "zero_shard_rank*.safetensors")))
        raise ValueError(f"{path} does not exist (found {found or 'no ZeRO shards'}): resuming a ZeRO run needs the "
                         "checkpoint of a run with the same world size")
    with safe_open(path, "np") as f:
        meta = json.loads(f.metadata()["zero"])
    optimizer.load_shard_state(load_file(path), meta, path)


def parameter_units(model, trainable_only=False):
    """[(name, cell, params)]: the units stage 3 gathers at once. Each decoder block (the model's
    `_no_split_modules` classes) is one unit; every other cell owning parameters outside them (embeddings, final norm,
    LM head) is one with its own parameters. A tied parameter (the LM head's weight is the embedding table) belongs
    to every cell that owns it, so each of its users gathers it."""
    block_types = set(getattr(model, "_no_split_modules", None) or ())
    keep = (lambda p: p.requires_grad) if trainable_only else (lambda p: True)
    units, covered = [], set()
    for name, cell in model.cells_and_names():
        if type(cell).__name__ in block_types:
            params = [p for p in cell.get_parameters() if id(p) not in covered and keep(p)]
            covered.update(id(p) for p in cell.get_parameters())
            if params:
                units.append((name, cell, params))
    for name, cell in model.cells_and_names():
        own = [p for p in cell._params.values() if p is not None and id(p) not in covered and keep(p)]
        if own:
            units.append((name, cell, own))
    return units


# ----------------------------------------------------------------------------------------------------------------
# stage-3 loading: each rank reads only its slices of the checkpoint
# ----------------------------------------------------------------------------------------------------------------


def load_sharded(model_class, pretrained_model_name_or_path, dtype="float32", **hub_kwargs):
    """Builds `model_class` for ZeRO stage 3 without materialising its parameters: every parameter is created empty
    (`backend.layers.empty_parameters`) and remembers where its tensor is in the safetensors checkpoint, so that
    `ShardedAdamW` (stage-3 training, `jit_mode=False`) and `shard_for_inference` read only this rank's slices from the
    files (memory-mapped, row by row) instead of every rank loading the whole model.

    Limits: safetensors checkpoints stored in float32 or float16 whose keys are the model's parameter names (a head
    model's checkpoint, or the base model's with the base-model prefix added or removed); every parameter must be in
    the checkpoint (nothing to initialise randomly); no `_convert_checkpoint` hook (MoE expert stacking); models
    built with `backend.layers` parameters only. Anything else raises ValueError naming it.

    Args:
        model_class: a PreTrainedModel class, e.g. `LlamaForCausalLM`.
        pretrained_model_name_or_path: a checkpoint directory or Hub repo id.
        dtype: "float32" (default) or "float16": the dtype of the parameters when gathered.
    Returns: the model, every parameter an empty (0,) tensor with `_full_shape` and `_zero_source` (file, key).
    """
    from safetensors import safe_open

    from .. import weights
    from ..backend import layers
    from ..modeling_utils import PreTrainedModel, _load_generation_config, _loading_scope

    path = os.fspath(pretrained_model_name_or_path)
    config, _ = model_class._load_config(path, "", None, {}, **hub_kwargs)
    files, fmt = weights.resolve_checkpoint_files(path, **hub_kwargs)
    if fmt != "safetensors":
        raise ValueError(f"load_sharded({path!r}): reads slices of safetensors files only, found {fmt} "
                         f"({', '.join(os.path.basename(f) for f in files)})")
    if model_class._convert_checkpoint is not PreTrainedModel._convert_checkpoint:
        raise ValueError(f"load_sharded: {model_class.__name__} converts its checkpoint's tensors while loading "
                         "(_convert_checkpoint); load it with from_pretrained")
    ms_dtype = {"float32": ms.float32, "float16": ms.float16}.get(str(dtype))
    if ms_dtype is None:
        raise ValueError(f"load_sharded: dtype must be 'float32' or 'float16', got {dtype!r}")
    config.dtype = str(dtype)
    with layers.empty_parameters(), layers.dtype_scope(ms_dtype), _loading_scope():
        model = model_class(config)
    model.tie_weights()
    where = {}
    for file in files:
        with safe_open(file, "np") as f:
            for key in f.keys():
                where[key] = file
    prefix = model.base_model_prefix
    missing = []
    for name, param in model.named_parameters_dict().items():
        if hasattr(param, "_zero_source"):
            continue  # a tied parameter, found under its other name
        candidates = [name, name[len(prefix) + 1:] if prefix and name.startswith(prefix + ".") else f"{prefix}.{name}"]
        key = next((k for k in candidates if k in where), None)
        if key is None or not hasattr(param, "_full_shape"):
            missing.append(name)
            continue
        with safe_open(where[key], "np") as f:
            shape = tuple(f.get_slice(key).get_shape())
        if shape != param._full_shape:
            raise ValueError(f"{key}: checkpoint shape {shape} != model shape {param._full_shape} ({where[key]})")
        param._zero_source = (where[key], key)
    missing = [n for n in missing if not hasattr(model.named_parameters_dict()[n], "_zero_source")]
    if missing:
        raise ValueError(f"load_sharded({path!r}): parameters not in the checkpoint (or not created by "
                         f"backend.layers), which a sharded load cannot initialise: {missing}")
    model.name_or_path = path
    if model.can_generate():
        model.generation_config = _load_generation_config(path, "", config, **hub_kwargs)
    model.set_train(False)
    return model


def _is_sharded_load(param):
    return param.shape == (0,) and hasattr(param, "_zero_source")


def _full_shape(param):
    return tuple(param._full_shape) if param.shape == (0,) and hasattr(param, "_full_shape") else tuple(param.shape)


def _read_flat(source, start, stop, readers):
    """Elements [start, stop) of the flattened checkpoint tensor `source` = (file, key), as float32, reading only the
    rows (along axis 0) that hold them."""
    from safetensors import safe_open

    file, key = source
    if file not in readers:
        readers[file] = safe_open(file, "np")
    view = readers[file].get_slice(key)
    if view.get_dtype() not in ("F32", "F16", "F64"):
        raise ValueError(f"{key} in {file}: dtype {view.get_dtype()} cannot be read slice by slice (float32/16 only)")
    shape = view.get_shape()
    if not shape:
        return np.asarray(readers[file].get_tensor(key), np.float32).reshape(-1)[start:stop]
    row = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    first, last = start // row, -(-stop // row)
    rows = np.asarray(view[first:last], np.float32).reshape(-1)
    return rows[start - first * row:stop - first * row]


def _read_shard(layout, sources, rank, readers):
    """`layout.shard(layout.flatten(tensors), rank)` read from the checkpoint: only the pieces of the tensors that
    overlap this rank's slice."""
    low, high = rank * layout.shard_size, (rank + 1) * layout.shard_size
    out = np.zeros(layout.shard_size, np.float32)
    for source, start, n in zip(sources, layout.offsets, layout.numels):
        a, b = max(low, start), min(high, start + n)
        if a < b:
            out[a - low:b - low] = _read_flat(source, a - start, b - start, readers)
    return out


# ----------------------------------------------------------------------------------------------------------------
# stage-3 inference: parameters sharded at rest, gathered module by module during the forward
# ----------------------------------------------------------------------------------------------------------------


class ShardedInference:
    """ZeRO stage 3 for inference (`generate()` or forward under msrun): every rank keeps 1/world_size of each
    parameter; a module's parameters are all-gathered just before it runs and released right after (forward
    pre/post hooks, PyNative), so a rank holds its slices plus one module's full parameters at a time.

    Modules: each decoder block (the model's `_no_split_modules` classes) is one unit; parameters outside them
    (embeddings, final norm, LM head) are gathered by the cell that owns them. A tied parameter is gathered by each of
    its users in turn. Decoding runs in PyNative (`generation_config.disable_compile` is set): a compiled step would
    capture the parameters as they were at compile time.

    A model from `from_pretrained` is materialised once per rank and then sliced; one from `load_sharded` never is
    (each rank reads its slices from the checkpoint).

    Args:
        model: a loaded PreTrainedModel (its parameters are replaced by empty tensors).
        world_size, rank: default from `mindspore.communication` (1 and 0 when it is not initialised).
    """

    def __init__(self, model, world_size=None, rank=None):
        if world_size is None or rank is None:
            world_size, rank = _world()
        self.model, self.world_size, self.rank = model, world_size, rank
        self.comm = Collectives(world_size, rank)
        self.shards = {}  # id(param) -> (param, shard Tensor, shard numel, full shape)
        self.gathered_bytes_peak = 0
        self._live = 0
        units = [(cell, params) for _, cell, params in parameter_units(model)]
        readers = {}
        for _, params in units:
            for param in params:
                if id(param) not in self.shards:
                    self._shard(param, readers)
        self.units = units
        for cell, params in units:
            cell.register_forward_pre_hook(self._pre_hook(params))
            cell.register_forward_hook(self._post_hook(params))
        model.generation_config.disable_compile = True
        logger.info("ZeRO-3 inference: %d parameters in %d units sharded over %d ranks", len(self.shards), len(units),
                    world_size)

    def _shard(self, param, readers):
        shape = _full_shape(param)
        numel = int(np.prod(shape)) if shape else 1
        shard = -(-numel // self.world_size)
        if _is_sharded_load(param):  # `load_sharded`: only this rank's slice is read from the files
            layout = FlatLayout([shape], self.world_size)
            piece = _read_shard(layout, [param._zero_source], self.rank, readers).astype(_np_dtype(param.dtype))
        else:
            padded = np.zeros(shard * self.world_size, _np_dtype(param.dtype))
            padded[:numel] = param.asnumpy().reshape(-1)
            piece = padded[self.rank * shard:(self.rank + 1) * shard]
        self.shards[id(param)] = (param, Tensor(piece), shard, shape)
        _release_parameter(param)

    def _gather(self, params):
        entries = [self.shards[id(p)] for p in params]
        flat = self.comm.all_gather(F.cat([e[1] for e in entries], 0) if len(entries) > 1 else entries[0][1])
        table = flat.reshape(self.world_size, -1)
        offset = 0
        for param, _, shard, shape in entries:
            numel = int(np.prod(shape)) if shape else 1
            param.set_data(table[:, offset:offset + shard].reshape(-1)[:numel].reshape(shape), slice_shape=True)
            offset += shard
            self._live += numel * param.itemsize
        self.gathered_bytes_peak = max(self.gathered_bytes_peak, self._live)

    def _release(self, params):
        for param in params:
            if param.shape and int(np.prod(param.shape)) > 0:
                self._live -= int(np.prod(param.shape)) * param.itemsize
            _release_parameter(param)

    def _pre_hook(self, params):
        def hook(cell, args):
            self._gather(params)
        return hook

    def _post_hook(self, params):
        def hook(cell, args, output):
            self._release(params)
        return hook

    def resident_bytes(self):
        """Bytes of parameter data this rank holds at rest (its slices)."""
        return sum(_nbytes(entry[1]) for entry in self.shards.values())


def shard_for_inference(model, world_size=None, rank=None) -> ShardedInference:
    """Shards `model`'s parameters over the msrun ranks for stage-3 inference (see `ShardedInference`)."""
    return ShardedInference(model, world_size, rank)


def _world():
    try:
        from mindspore.communication import get_group_size, get_rank

        return get_group_size(), get_rank()
    except (RuntimeError, ValueError):
        return 1, 0


def merge_zero_checkpoint(checkpoint_dir, output_dir):
    """Merges the ZeRO shards of `checkpoint_dir` (all `zero_shard_rank*.safetensors`) into a plain checkpoint in
    `output_dir`: `model.safetensors` with HF's keys (float32, `{"format": "pt"}` metadata, so torch `transformers`
    loads it) plus the config, generation config and tokenizer files found in `checkpoint_dir`.

    Args:
        checkpoint_dir: a `checkpoint-N` directory written by a ZeRO run.
        output_dir: where to write; created if missing.
    Returns: {parameter name: numpy array} that was written.
    """
    from safetensors import safe_open
    from safetensors.numpy import save_file

    paths = glob.glob(os.path.join(checkpoint_dir, "zero_shard_rank*.safetensors"))
    if not paths:
        raise ValueError(f"{checkpoint_dir}: no zero_shard_rank*.safetensors files")
    by_rank, metas, frozen = {}, {}, {}
    for path in paths:
        with safe_open(path, "np") as f:
            meta = json.loads(f.metadata()["zero"])
            by_rank[int(meta["rank"])] = {k: f.get_tensor(k) for k in f.keys()}
            metas[int(meta["rank"])] = meta
    world_size = metas[next(iter(metas))]["world_size"]
    missing = sorted(set(range(world_size)) - set(by_rank))
    if missing:
        raise ValueError(f"{checkpoint_dir}: shards of ranks {missing} are missing (world size {world_size})")
    state = {}
    for i, group in enumerate(metas[0]["groups"]):
        layout = FlatLayout(group["shapes"], world_size)
        flat = layout.gather([by_rank[r][f"group{i}.param"] for r in range(world_size)])
        state.update(zip(group["names"], layout.unflatten(flat)))
    for key, value in by_rank[0].items():
        if key.startswith("frozen."):
            frozen[key[len("frozen."):]] = value
    state.update({k: v for k, v in frozen.items() if k not in state})
    os.makedirs(output_dir, exist_ok=True)
    save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, os.path.join(output_dir, "model.safetensors"),
              metadata={"format": "pt"})
    for name in os.listdir(checkpoint_dir):
        if name == "config.json" or name == "generation_config.json" or re.match(
                r"(tokenizer.*|special_tokens_map\.json|vocab\..*|merges\.txt|.*\.model)$", name):
            shutil.copy(os.path.join(checkpoint_dir, name), os.path.join(output_dir, name))
    return state


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m mindone.transformers.trainer.zero",
                                     description="ZeRO checkpoint tools")
    sub = parser.add_subparsers(dest="command", required=True)
    merge = sub.add_parser("merge", help="merge zero_shard_rank*.safetensors into a save_pretrained checkpoint")
    merge.add_argument("checkpoint_dir")
    merge.add_argument("output_dir")
    args = parser.parse_args(argv)
    state = merge_zero_checkpoint(args.checkpoint_dir, args.output_dir)
    logger.info("wrote %d tensors to %s", len(state), args.output_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
