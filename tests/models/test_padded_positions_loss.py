"""Loss with `labels=input_ids` on a left-padded batch (no -100 on padding) equals torch's, for both of HF's attentions.

Issue 18 item 9. The padding positions of a left-padded causal batch are query rows whose keys are all masked. torch's
`scaled_dot_product_attention` (HF's default `attn_implementation`) gives such a row a zero output; eager softmax turns
the row's equal mask values into a uniform average over every key. With labels on the padding their logits enter the
loss, so the two torch attentions' losses differ by ~1e-3 relative. Ours follows eager by default (the reference of
every parity test here) and SDPA after `backend.functional.set_fully_masked_rows("sdpa")`: loss, every logit (padding
included) and gradients match the corresponding torch attention; the attention weights returned with
`output_attentions` are eager's either way (what HF returns when asked for them).
"""

import numpy as np
import pytest
import torch
import transformers

from mindone.transformers import LlamaForCausalLM, Qwen2ForCausalLM
from mindone.transformers.backend import functional as F
from tests import parity

VOCAB = 99
COMMON = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0, tie_word_embeddings=False)
FAMILIES = {
    "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM, LlamaForCausalLM),
    "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM, Qwen2ForCausalLM),
}


def left_padded(seed=0):
    rng = np.random.RandomState(seed)
    ids = rng.randint(1, VOCAB, (3, 10)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[0, :4] = 0
    mask[1, :1] = 0
    ids[mask == 0] = 0
    return ids, mask


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request, tmp_path_factory):
    config_cls, torch_cls, our_cls = FAMILIES[request.param]
    reference = parity.torch_reference(torch_cls, config_cls(**COMMON), seed=3)
    path = parity.save_torch(reference, str(tmp_path_factory.mktemp(request.param)))
    sdpa = torch_cls.from_pretrained(path, attn_implementation="sdpa").eval()
    eager = torch_cls.from_pretrained(path, attn_implementation="eager").eval()
    return request.param, sdpa, eager, lambda: parity.load_ours(our_cls, path)


@pytest.fixture
def sdpa_rows():
    """SDPA's zero rows for this test only (a fresh model, so no graph traced in the other mode is reused)."""
    F.set_fully_masked_rows("sdpa")
    yield
    F.set_fully_masked_rows("eager")


def check_loss_and_logits(ours, reference, other, mode, context):
    ids, mask = left_padded()
    inputs = dict(input_ids=ids, attention_mask=mask, labels=ids.copy())
    ref = parity.run_torch(reference, inputs)
    # the two torch attentions really differ here (so this test can tell them apart)
    assert parity.rel_error(parity.run_torch(other, inputs).loss, ref.loss) > 1e-4
    out = parity.run_ours(ours, inputs, mode)
    errors = {"loss": parity.rel_error(out["loss"], ref.loss),
              "logits": parity.rel_error(out["logits"], ref.logits)}  # every row, padding included
    parity.assert_close(errors, 1e-5, context)


@pytest.mark.parametrize("mode", parity.MODES)
def test_loss_on_padding_matches_torch_sdpa(family, mode, sdpa_rows):
    name, sdpa, eager, load = family
    check_loss_and_logits(load(), sdpa, eager, mode, f"sdpa/{name}/{mode}")


@pytest.mark.parametrize("mode", parity.MODES)
def test_loss_on_padding_matches_torch_eager_by_default(family, mode):
    name, sdpa, eager, load = family
    check_loss_and_logits(load(), eager, sdpa, mode, f"eager/{name}/{mode}")


def test_gradients_with_labels_on_padding_match_torch_sdpa(family, sdpa_rows):
    name, sdpa, _, load = family
    ids, mask = left_padded(seed=1)
    inputs = dict(input_ids=ids, attention_mask=mask, labels=ids.copy())
    ref_loss, ref_grads = parity.torch_gradients(sdpa, inputs)
    loss, grads = parity.our_gradients(load(), inputs, "graph")
    errors = parity.compare_gradients(grads, ref_grads)
    errors["loss"] = parity.rel_error(loss, ref_loss)
    parity.assert_close(errors, parity.GRAD_BAR, f"grads/{name}")


def test_returned_attention_weights_stay_eager(family, sdpa_rows):
    """`output_attentions` gives eager's weights (HF switches to eager for them), padding rows included."""
    name, _, eager, load = family
    ids, mask = left_padded()
    inputs = dict(input_ids=ids, attention_mask=mask, output_attentions=True)
    ref = parity.run_torch(eager, inputs)
    out = parity.run_ours(load(), inputs)
    error = max(parity.rel_error(a, b) for a, b in zip(out["attentions"], ref.attentions))
    assert error <= 1e-5, f"{name}: attentions {error}"
    # a fully masked row (the first position of the 4-token left padding): eager's uniform weights over all 10 keys
    assert torch.allclose(ref.attentions[0][0, :, 0], torch.full((4, 10), 0.1))


def test_fully_masked_rows_mode_is_checked():
    with pytest.raises(ValueError, match="'eager' or 'sdpa'"):
        F.set_fully_masked_rows("flash")
