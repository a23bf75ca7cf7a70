"""Helpers shared by the family parity tests: one saved torch checkpoint per (class, config), and one call that
loads it into our class, runs both models on the same inputs and asserts the parity bar."""

import numpy as np

from tests import parity


def checkpoint_factory(tmp_path_factory, make_config):
    """get(torch_cls, **config_overrides) -> (torch model, saved directory), built once per key."""
    made = {}

    def get(torch_cls, **overrides):
        key = (torch_cls.__name__, tuple(sorted(overrides.items(), key=lambda kv: kv[0])))
        if key not in made:
            model = parity.torch_reference(torch_cls, make_config(**overrides), seed=len(made))
            made[key] = (model, parity.save_torch(model, str(tmp_path_factory.mktemp(torch_cls.__name__))))
        return made[key]

    return get


def assert_matches_torch(ours_cls, torch_model, path, inputs, fields, mode="pynative", rows=None,
                         dtype="float32", bar=None, context=""):
    """Loads `path` into `ours_cls`, runs both models on `inputs` and checks every field against the bar.

    `rows` (boolean over the leading axes) restricts per-token outputs to real (non-padding) positions.
    Returns (our output, torch output) for further checks.
    """
    ours = parity.load_ours(ours_cls, path, dtype=dtype)
    out, ref = parity.run_ours(ours, inputs, mode), parity.run_torch(torch_model, inputs)
    errors = {}
    for name in fields:
        a, b = out[name], ref[name]
        if isinstance(b, (tuple, list)):
            assert len(a) == len(b), f"{name}: {len(a)} entries != reference {len(b)}"
            errors[name] = max(parity.rel_error(x, y, _rows_for(y, rows)) for x, y in zip(a, b))
        else:
            errors[name] = parity.rel_error(a, b, _rows_for(b, rows))
    if bar is None:
        bar = parity.FP32_BAR if dtype == "float32" else parity.FP16_BAR
    parity.assert_close(errors, bar, context or f"{ours_cls.__name__}/{mode}/{dtype}")
    return out, ref


def _rows_for(ref, rows):
    # attention maps (B, H, Sq, Sk) and pooled outputs (B, D) are compared whole
    if rows is None or np.ndim(parity.to_numpy(ref)) != 3:
        return None
    return rows


def assert_gradients_match_torch(ours_cls, torch_model, path, inputs, mode="pynative", context=""):
    ours = parity.load_ours(ours_cls, path)
    ref_loss, ref_grads = parity.torch_gradients(torch_model, inputs)
    loss, grads = parity.our_gradients(ours, inputs, mode)
    # softmax is shift-invariant per query, so the key bias has a true gradient of 0: both sides hold rounding noise,
    # which the relative metric (divided by mean |noise|) cannot judge; it is checked in absolute terms instead
    key_biases = [n for n in ref_grads if n.endswith(("key.bias", "k_proj.bias", "k_lin.bias"))]
    for name in key_biases:
        assert float(abs(parity.to_numpy(grads[name])).max()) < 1e-6, f"{name}: gradient should be ~0"
    errors = parity.compare_gradients(grads, {n: g for n, g in ref_grads.items() if n not in key_biases})
    errors["loss"] = parity.rel_error(loss, ref_loss)
    parity.assert_close(errors, parity.GRAD_BAR, context or f"grads/{ours_cls.__name__}/{mode}")
