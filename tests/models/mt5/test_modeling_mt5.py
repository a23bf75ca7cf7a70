"""mT5 parity with torch `transformers`: T5 v1.1 blocks under `MT5Config` (tests/parity.py)."""

import numpy as np
import pytest
import torch
import transformers

from mindone.transformers import AutoModelForSeq2SeqLM, MT5EncoderModel, MT5ForConditionalGeneration
from tests import parity
from tests.models import head_parity

VOCAB = 99
CONFIG = dict(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_decoder_layers=2, num_heads=4,
              relative_attention_num_buckets=8, relative_attention_max_distance=12, decoder_start_token_id=0,
              pad_token_id=0, eos_token_id=1, tie_word_embeddings=False)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    model = parity.torch_reference(transformers.MT5ForConditionalGeneration, transformers.MT5Config(**CONFIG))
    g = torch.Generator().manual_seed(7)
    model.lm_head.weight = torch.nn.Parameter(torch.randn(model.lm_head.weight.shape, generator=g))
    return model, parity.save_torch(model, str(tmp_path_factory.mktemp("mt5")))


def inputs(seed=0):
    rng = np.random.RandomState(seed)
    ids = rng.randint(2, VOCAB, (2, 13)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[1, :3] = 0
    labels = rng.randint(2, VOCAB, (2, 5)).astype(np.int64)
    return dict(input_ids=ids, attention_mask=mask, labels=labels)


@pytest.mark.parametrize("mode", parity.MODES)
def test_conditional_generation_matches_torch_fp32(checkpoint, mode):
    torch_model, path = checkpoint
    ours = AutoModelForSeq2SeqLM.from_pretrained(path)
    assert isinstance(ours, MT5ForConditionalGeneration)
    batch = dict(inputs(), output_hidden_states=True)
    errors = parity.compare_outputs(parity.run_ours(ours, batch, mode), parity.run_torch(torch_model, batch),
                                    ["logits", "loss", "decoder_hidden_states", "encoder_last_hidden_state"])
    parity.assert_close(errors, parity.FP32_BAR, mode)


def test_encoder_model_and_generate_match_torch(checkpoint):
    torch_model, path = checkpoint
    batch = inputs(1)
    mask = batch["attention_mask"]
    encoder = parity.load_ours(MT5EncoderModel, path)
    ref = torch_model.encoder(input_ids=torch.from_numpy(batch["input_ids"]), attention_mask=torch.from_numpy(mask))
    out = parity.run_ours(encoder, dict(input_ids=batch["input_ids"], attention_mask=mask))
    assert parity.rel_error(out["last_hidden_state"], ref.last_hidden_state, mask.astype(bool)) <= parity.FP32_BAR
    ours = parity.load_ours(MT5ForConditionalGeneration, path)
    head_parity.assert_seq2seq_generate_matches_torch(ours, torch_model, batch["input_ids"], mask, max_new_tokens=6,
                                                      num_beams=2, do_sample=False)
