"""Helpers shared by the family parity tests: one saved torch checkpoint per (class, config), and one call that
loads it into our class, runs both models on the same inputs and asserts the parity bar."""

import numpy as np

from tests import parity


def checkpoint_factory(tmp_path_factory, make_config):
    """get(torch_cls, **config_overrides) -> (torch model, saved directory), built once per key."""
    made = {}

    def get(torch_cls, **overrides):
        # repr: override values may be dicts or lists (e.g. rope_parameters, layer_types)
        key = (torch_cls.__name__, tuple(sorted((k, repr(v)) for k, v in overrides.items())))
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
    # without RoPE, softmax is shift-invariant per query, so the key bias has a true gradient of 0: both sides hold
    # rounding noise, which the relative metric (divided by mean |noise|) cannot judge; it is checked absolutely
    key_biases = [n for n in ref_grads if n.endswith(("key.bias", "k_proj.bias", "k_lin.bias", "Wk.bias"))
                  and float(ref_grads[n].abs().max()) < 1e-6]
    for name in key_biases:
        assert float(abs(parity.to_numpy(grads[name])).max()) < 1e-6, f"{name}: gradient should be ~0"
    errors = parity.compare_gradients(grads, {n: g for n, g in ref_grads.items() if n not in key_biases})
    errors["loss"] = parity.rel_error(loss, ref_loss)
    parity.assert_close(errors, parity.GRAD_BAR, context or f"grads/{ours_cls.__name__}/{mode}")


def left_padded_batch(vocab, seed=0, batch_size=2, seq_len=9, left_pad=3, pad_token_id=0):
    """Token ids with the second row left-padded (decoder-only batching), its mask, and labels (-100 on padding)."""
    rng = np.random.RandomState(seed)
    ids = rng.randint(1, vocab, (batch_size, seq_len)).astype(np.int64)
    mask = np.ones((batch_size, seq_len), np.int64)
    mask[1, :left_pad] = 0
    ids[1, :left_pad] = pad_token_id
    return ids, mask, np.where(mask == 1, ids, -100)


def assert_causal_lm_matches_torch(ours_cls, torch_model, path, vocab, mode, dtype="float32"):
    """Logits, loss, hidden states (fp32 also attentions) on real positions of a left-padded batch."""
    ids, mask, labels = left_padded_batch(vocab)
    if dtype == "float32":
        inputs = dict(input_ids=ids, attention_mask=mask, labels=labels, output_hidden_states=True,
                      output_attentions=True)
        fields = ["logits", "loss", "hidden_states", "attentions"]
    else:
        inputs, fields = dict(input_ids=ids, attention_mask=mask), ["logits"]
    return assert_matches_torch(ours_cls, torch_model, path, inputs, fields, mode, rows=mask.astype(bool),
                                dtype=dtype)


def assert_greedy_tokens_match_torch(ours_cls, torch_model, path, vocab, max_new_tokens=8, torch_kwargs=None,
                                     **generate_kwargs):
    """generate() on a left-padded batch, ours with `generate_kwargs`, torch with `torch_kwargs` (e.g. the same
    num_beams); asserts the same token ids and returns our model (e.g. to check which decoding path it took)."""
    import torch

    ours = parity.load_ours(ours_cls, path)
    ids, mask, _ = left_padded_batch(vocab, seed=5)
    with torch.no_grad():
        ref = torch_model.generate(torch.tensor(ids), attention_mask=torch.tensor(mask), do_sample=False,
                                   max_new_tokens=max_new_tokens, pad_token_id=0, **(torch_kwargs or {})).numpy()
    out = ours.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=0,
                        **generate_kwargs)
    out = parity.to_numpy(out)
    assert out.shape == ref.shape and np.array_equal(out, ref), f"ours:\n{out}\ntorch:\n{ref}"
    return ours


def compiled_decode_steps(model):
    """The (batch, cache length, dtype) keys of the compiled static-cache decode steps `generate` built for `model`
    (empty when it decoded eagerly)."""
    from mindone.transformers.generation import utils

    return list(utils._COMPILED_STEPS.get(model, {}))


def assert_seq2seq_generate_matches_torch(ours, torch_model, ids, mask, **kwargs):
    """generate() of an encoder-decoder model on a padded batch: our compiled static-cache decoding (the default:
    encoder output and padding mask fed to one compiled step) and our PyNative decoding with a growing cache
    (`cache_implementation="dynamic"`) both give torch's token ids. Returns torch's ids."""
    import torch

    with torch.no_grad():
        ref = torch_model.generate(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), **kwargs).numpy()
    out = parity.to_numpy(ours.generate(ids, attention_mask=mask, **kwargs))
    assert out.shape == ref.shape and np.array_equal(out, ref), f"compiled, ours:\n{out}\ntorch:\n{ref}"
    rows = ids.shape[0] * kwargs.get("num_beams", 1)
    assert any(key[0] == rows for key in compiled_decode_steps(ours)), "generate() did not use a compiled step"
    dynamic = parity.to_numpy(ours.generate(ids, attention_mask=mask, cache_implementation="dynamic", **kwargs))
    assert np.array_equal(dynamic, ref), f"dynamic, ours:\n{dynamic}\ntorch:\n{ref}"
    return ref


def seq2seq_generation_models(tmp_path_factory, torch_cls, ours_cls, config_for, seed, adjust=None):
    """A module fixture's `get(variant) -> (torch model, ours)`: each variant built once (`config_for(variant)`, seeded
    torch weights, `adjust(torch_model)` for extra randomisation) and loaded once by ours, so the compiled decode
    steps are reused across the tests that share it."""
    made = {}

    def get(variant):
        if variant not in made:
            torch_model = parity.torch_reference(torch_cls, config_for(variant), seed=seed)
            if adjust is not None:
                adjust(torch_model)
            path = parity.save_torch(torch_model, str(tmp_path_factory.mktemp(f"generate-{variant}")))
            made[variant] = (torch_model, parity.load_ours(ours_cls, path))
        return made[variant]

    return get
