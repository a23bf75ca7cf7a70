"""Tensor- and pipeline-parallel layouts for the Llama family (Llama, Mistral, Qwen2, ... with HF's parameter names),
as MindSpore semi-auto-parallel `shard()` specifications.

MindSpore runs tensor/pipeline parallelism on Ascend (and GPU) only: on CPU a sharded graph has no kernels for the
redistribution ops. This module builds and checks the specifications (tested on CPU: every parameter gets a layout
whose dimensions divide); `apply_llama_tensor_parallel` hands them to `Cell.shard` and refuses to run on CPU. The
application has not been run on Ascend/GPU hardware by this project.

Layout (Megatron-LM's split, in MindSpore's notation: one integer per tensor dimension = number of slices):

    q/k/v_proj, gate/up_proj   column parallel: weight (out, in) -> (tp, 1), bias (tp,)
    o_proj, down_proj          row parallel:    weight (out, in) -> (1, tp), bias replicated
    embed_tokens, lm_head      vocabulary parallel: (tp, 1)
    norms                      replicated
    decoder-layer input        hidden states (batch, seq, hidden) -> (dp, 1, 1)
"""

import re

from ..backend import runtime

_COLUMN = ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj")
_ROW = ("o_proj", "down_proj")


def _check_divisible(what, value, parts):
    if value % parts:
        raise ValueError(f"tensor_parallel={parts} does not divide {what}={value}")


def llama_parameter_plan(config, parameter_names, tensor_parallel):
    """{parameter name: layout tuple} for `parameter_names` (HF names of a Llama-family model).

    Args:
        config: the model's config (num_attention_heads, num_key_value_heads, intermediate_size, vocab_size).
        parameter_names: the model's parameter names (e.g. `model.parameters_dict()` keys).
        tensor_parallel: number of tensor-parallel slices.
    """
    tp = int(tensor_parallel)
    if tp < 1:
        raise ValueError(f"tensor_parallel must be >= 1, got {tensor_parallel}")
    _check_divisible("num_attention_heads", config.num_attention_heads, tp)
    _check_divisible("num_key_value_heads", getattr(config, "num_key_value_heads", None) or
                     config.num_attention_heads, tp)
    _check_divisible("intermediate_size", config.intermediate_size, tp)
    _check_divisible("vocab_size", config.vocab_size, tp)
    plan = {}
    for name in parameter_names:
        parts = name.split(".")
        leaf, owner = parts[-1], parts[-2] if len(parts) > 1 else ""
        if owner in _COLUMN:
            plan[name] = (tp, 1) if leaf == "weight" else (tp,)
        elif owner in _ROW:
            plan[name] = (1, tp) if leaf == "weight" else (1,)
        elif owner in ("embed_tokens", "lm_head"):
            plan[name] = (tp, 1) if leaf == "weight" else (tp,)
        elif re.search(r"norm", owner):
            plan[name] = (1,)
        else:
            raise ValueError(f"{name}: no tensor-parallel layout for this parameter of a Llama-family model")
    return plan


def llama_pipeline_stages(num_hidden_layers, pipeline_stages):
    """[stage of decoder layer i]: contiguous, balanced (earlier stages take the extra layers; the first also holds
    the embeddings and the last the final norm and lm_head)."""
    stages = int(pipeline_stages)
    if not 1 <= stages <= num_hidden_layers:
        raise ValueError(f"pipeline_stages must be between 1 and num_hidden_layers={num_hidden_layers}, got "
                         f"{pipeline_stages}")
    base, extra = divmod(num_hidden_layers, stages)
    out = []
    for stage in range(stages):
        out += [stage] * (base + (stage < extra))
    return out


def apply_llama_tensor_parallel(model, tensor_parallel, data_parallel=1, pipeline_stages=1):
    """Sets the layouts on a Llama-family model for MindSpore's semi-auto parallel mode (Ascend/GPU; call it after
    `mindspore.set_auto_parallel_context(parallel_mode="semi_auto_parallel", ...)` and `init()`): each decoder layer
    gets `shard(in_strategy=((dp, 1, 1),), parameter_plan=...)` and, with pipeline_stages > 1, its
    `pipeline_stage`."""
    if runtime.is_cpu():
        raise ValueError("tensor/pipeline parallelism needs Ascend or GPU devices: MindSpore's CPU backend only runs "
                         "data parallelism (use zero_stage for sharded data parallelism)")
    config = model.config
    names = list(model.parameters_dict())
    plan = llama_parameter_plan(config, names, tensor_parallel)
    decoder = model.model if hasattr(model, "model") else model
    stages = llama_pipeline_stages(config.num_hidden_layers, pipeline_stages)
    prefix = "model." if decoder is not model else ""
    for i, layer in enumerate(decoder.layers):
        layer_prefix = f"{prefix}layers.{i}."
        layer_plan = {f"self.{n[len(layer_prefix):]}": v for n, v in plan.items() if n.startswith(layer_prefix)}
        layer.shard(in_strategy=((int(data_parallel), 1, 1),), parameter_plan=layer_plan)
        if pipeline_stages > 1:
            layer.pipeline_stage = stages[i]
    return plan
