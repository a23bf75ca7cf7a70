"""docs/mindformers.md's snippets run as written on a tiny Llama checkpoint, and its two fine-tunes (HF-style and
MindFormers-style) end with the same weights and logs, as the page says."""

import os

import numpy as np
import pytest

from tests.docs.test_t5_clip_snippets import ROOT, python_blocks

DOC = os.path.join(ROOT, "docs/mindformers.md")


@pytest.mark.slow  # the MindFormers-style snippet uses mode=0 (compiled steps) and generates: ~1 min on CPU
def test_mindformers_doc_snippets_run_and_the_two_fine_tunes_agree(tmp_path, monkeypatch):
    from mindone.transformers.mindformers import context as mf_context
    from tests.generation.helpers import VOCAB, tiny_llama_pair, tiny_tokenizer

    path = str(tmp_path / "ckpt")
    tiny_llama_pair(path)
    tiny_tokenizer().save_pretrained(path)
    rng = np.random.RandomState(0)
    rows = [{"input_ids": rng.randint(3, VOCAB, 10).astype(np.int64)} for _ in range(8)]
    hf_block, mf_block, pipe_block = python_blocks(DOC)
    monkeypatch.chdir(tmp_path)
    saved = dict(mf_context._state)
    try:
        hf_scope = {"path": path, "rows": rows}
        exec(hf_block, hf_scope)
        mf_scope = {"path": path, "rows": rows}
        exec(mf_block, mf_scope)
        exec(pipe_block, {"path": path})
    finally:
        mf_context._state.update(saved)
    hf, mf = hf_scope["trainer"], mf_scope["trainer"].hf_trainer
    logs = [[h for h in t.state.log_history if "grad_norm" in h] for t in (hf, mf)]
    assert len(logs[0]) == len(logs[1]) == 4
    for a, b in zip(*logs):
        for key in ("loss", "grad_norm", "learning_rate"):
            assert a[key] == pytest.approx(b[key], rel=1e-6), (key, a, b)
    ref = hf.model.state_dict()
    for name, value in mf.model.state_dict().items():
        np.testing.assert_allclose(value, ref[name], rtol=0, atol=1e-6, err_msg=name)
