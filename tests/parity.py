"""Parity harness shared by every model test: torch `transformers` is the reference.

    tiny config -> torch model (seeded, eager attention) -> torch save_pretrained -> our from_pretrained
    -> same inputs -> metric max|ms - pt| / mean|pt| on every output tensor, the loss and parameter gradients.

`run_ours(model, inputs, mode)` runs our model in PyNative or compiled under `mindspore.jit` ("graph").
"""

import os
import tempfile

import mindspore as ms
import numpy as np
import torch

FP32_BAR = 1e-5
FP16_BAR = 5e-3
GRAD_BAR = 1e-4
MODES = ("pynative", "graph")


def rel_error(ours, ref, rows=None) -> float:
    """max|ours - ref| / mean|ref|, optionally over the boolean `rows` selection of leading axes."""
    ours = to_numpy(ours).astype(np.float64)
    ref = to_numpy(ref).astype(np.float64)
    assert ours.shape == ref.shape, f"shape {ours.shape} != reference {ref.shape}"
    if rows is not None:
        ours, ref = ours[rows], ref[rows]
    scale = np.abs(ref).mean()
    return float(np.abs(ours - ref).max() / (scale if scale > 0 else 1.0))


def to_numpy(x):
    if isinstance(x, torch.Tensor):
        return x.detach().float().numpy()
    if isinstance(x, (ms.Tensor, ms.Parameter)):
        return x.astype(ms.float32).asnumpy() if x.dtype in (ms.float16, ms.bfloat16) else x.asnumpy()
    return np.asarray(x)


def torch_reference(torch_cls, config, seed=0):
    """A seeded torch model in eval mode with eager attention (the math HF documents)."""
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = torch_cls(config).eval()
    # randomise parameters that HF initialises to constants (norm weights, biases) so they are really tested
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed + 1)
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name or "layernorm" in name.lower():
                p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def save_torch(model, directory=None, **kwargs) -> str:
    directory = directory or tempfile.mkdtemp(prefix="parity-")
    model.save_pretrained(directory, **kwargs)
    return directory


def load_ours(our_cls, directory, dtype="float32", **kwargs):
    return our_cls.from_pretrained(directory, dtype=dtype, **kwargs)


def to_ms_inputs(inputs):
    out = {}
    for k, v in inputs.items():
        if isinstance(v, np.ndarray):
            out[k] = ms.Tensor(v)
        elif isinstance(v, torch.Tensor):
            out[k] = ms.Tensor(v.numpy())
        else:
            out[k] = v
    return out


def to_torch_inputs(inputs):
    return {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in inputs.items()}


def run_ours(model, inputs, mode="pynative"):
    """Our forward on numpy/ms inputs; "graph" compiles the whole call with mindspore.jit."""
    kwargs = to_ms_inputs(inputs)
    if mode == "pynative":
        return model(**kwargs)
    tensors = {k: v for k, v in kwargs.items() if isinstance(v, ms.Tensor)}
    static = {k: v for k, v in kwargs.items() if not isinstance(v, ms.Tensor)}
    return _jitted(model, tuple(sorted(static.items())))(**tensors)


_JIT_CACHE = {}


def _jitted(model, static_items):
    key = (id(model), static_items)
    if key not in _JIT_CACHE:
        static = dict(static_items)

        def forward(**tensors):
            return model(**tensors, **static)

        _JIT_CACHE[key] = ms.jit(forward)
    return _JIT_CACHE[key]


def run_torch(model, inputs):
    with torch.no_grad():
        return model(**to_torch_inputs(inputs))


def compare_outputs(ours, ref, fields, rows=None):
    """{field: rel error}; tuple fields (hidden_states, attentions) report their worst element."""
    errors = {}
    for name in fields:
        a, b = ours[name], ref[name]
        if isinstance(b, (tuple, list)):
            assert len(a) == len(b), f"{name}: {len(a)} entries != reference {len(b)}"
            errors[name] = max(rel_error(x, y, rows) for x, y in zip(a, b))
        else:
            errors[name] = rel_error(a, b, rows if np.ndim(to_numpy(b)) > 1 else None)
    return errors


def assert_close(errors, bar, context=""):
    bad = {k: v for k, v in errors.items() if not v <= bar}
    assert not bad, f"{context} parity errors above {bar:g}: {bad} (all: {errors})"


def our_gradients(model, inputs, mode="pynative"):
    """(loss, {param name: grad}) of the model's own loss (inputs must contain labels)."""
    kwargs = to_ms_inputs(inputs)
    params = model.trainable_params()
    # a tied parameter is reported under its first (source) name, as torch's named_parameters does
    unique_names = {}
    for n, p in model.named_parameters_dict().items():
        unique_names.setdefault(id(p), n)

    def loss_fn(**kw):
        return model(**kw)["loss"]

    grad_fn = ms.value_and_grad(loss_fn, None, params)
    if mode == "graph":
        grad_fn = ms.jit(grad_fn)
    loss, grads = grad_fn(**kwargs)
    return loss, {unique_names[id(p)]: g for p, g in zip(params, grads)}


def torch_gradients(model, inputs):
    model.zero_grad()
    out = model(**to_torch_inputs(inputs))
    out.loss.backward()
    return out.loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


def compare_gradients(ours, ref):
    errors = {}
    for name, g in ref.items():
        assert name in ours, f"no gradient for {name}"
        errors[name] = rel_error(ours[name], g)
    return errors


def roundtrip_dir(model) -> str:
    directory = tempfile.mkdtemp(prefix="roundtrip-")
    model.save_pretrained(directory)
    assert os.path.exists(os.path.join(directory, "config.json"))
    return directory
