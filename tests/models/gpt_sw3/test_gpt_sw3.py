"""GPT-SW3 is the GPT-2 architecture (`model_type: "gpt2"`) with its own SentencePiece tokenizer (`GPTSw3Tokenizer`:
whitespace / NFC normalisation, <pad> 0, <unk> 1, <s> 2, <|endoftext|> 3). Nothing GPT-SW3-specific exists in our
code: these tests check that a GPT-SW3-shaped checkpoint goes through the Auto classes, `generate()` and
`pipeline("text-generation")` exactly as it does in torch `transformers`."""

import io
import os

import numpy as np
import pytest
import sentencepiece as spm
import torch
import transformers

from mindone.transformers import AutoModelForCausalLM, GPT2LMHeadModel
from tests import parity
from tests.pipelines.test_pipelines import both

SWEDISH = ["Svenska är kul och katten sover på mattan .", "Hunden springer i parken medan solen skiner .",
           "Stockholm är Sveriges huvudstad och ligger vid vattnet ."]


def gpt_sw3_tokenizer(directory):
    """A GPTSw3Tokenizer over a small BPE SentencePiece model trained (GPT-SW3's special ids) on Swedish sentences."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(SWEDISH * 5), model_writer=model, vocab_size=120, model_type="bpe",
        character_coverage=1.0, pad_id=0, unk_id=1, bos_id=2, eos_id=3, pad_piece="<pad>", unk_piece="<unk>",
        bos_piece="<s>", eos_piece="<|endoftext|>", minloglevel=2)
    path = os.path.join(directory, "spiece.model")
    with open(path, "wb") as f:
        f.write(model.getvalue())
    tokenizer = transformers.GPTSw3Tokenizer(path, name_or_path="gpt-sw3-tiny")
    assert tokenizer.unk_token_id not in tokenizer(" ".join(SWEDISH))["input_ids"]
    return tokenizer


@pytest.fixture(scope="module")
def gpt_sw3_dir(tmp_path_factory):
    """A tiny random GPT-SW3 (GPT-2 config with the tokenizer's special ids) and its tokenizer, as on the Hub."""
    directory = str(tmp_path_factory.mktemp("gpt_sw3"))
    tokenizer = gpt_sw3_tokenizer(directory)
    config = transformers.GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                     bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                     pad_token_id=tokenizer.pad_token_id)
    model = parity.torch_reference(transformers.GPT2LMHeadModel, config)
    with torch.no_grad():  # sharper random logits, so greedy choices are not near-ties
        model.transformer.wte.weight.mul_(4.0)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def test_auto_classes_load_gpt_sw3_as_gpt2_and_match_torch(gpt_sw3_dir):
    tokenizer = transformers.AutoTokenizer.from_pretrained(gpt_sw3_dir)
    assert type(tokenizer).__name__ == "GPTSw3Tokenizer"
    enc = tokenizer(["Svenska är kul", "Hunden springer i parken medan solen"], padding=True, return_tensors="np")
    assert enc["input_ids"][0, -1] == tokenizer.pad_token_id == 0
    inputs = {k: np.asarray(v) for k, v in enc.items()}
    ours = AutoModelForCausalLM.from_pretrained(gpt_sw3_dir)
    assert type(ours) is GPT2LMHeadModel
    torch_model = transformers.AutoModelForCausalLM.from_pretrained(gpt_sw3_dir).eval()
    out, ref = parity.run_ours(ours, inputs), parity.run_torch(torch_model, inputs)
    real = inputs["attention_mask"].astype(bool)
    parity.assert_close({"logits": parity.rel_error(out.logits, ref.logits, real)}, parity.FP32_BAR, "GPT-SW3 logits")


def test_greedy_generate_matches_torch_left_padded(gpt_sw3_dir):
    tokenizer = transformers.AutoTokenizer.from_pretrained(gpt_sw3_dir, padding_side="left")
    enc = tokenizer(["Stockholm är", "Hunden springer i parken"], padding=True, return_tensors="np")
    ours = AutoModelForCausalLM.from_pretrained(gpt_sw3_dir)
    torch_model = transformers.AutoModelForCausalLM.from_pretrained(gpt_sw3_dir).eval()
    with torch.no_grad():
        ref = torch_model.generate(**{k: torch.tensor(v) for k, v in enc.items()}, do_sample=False,
                                   max_new_tokens=8).numpy()
    out = parity.to_numpy(ours.generate(**dict(enc), do_sample=False, max_new_tokens=8))
    assert np.array_equal(out, ref), f"ours:\n{out}\ntorch:\n{ref}"


def test_text_generation_pipeline_matches_torch(gpt_sw3_dir):
    both("text-generation", gpt_sw3_dir, "Svenska är kul och", max_new_tokens=8, do_sample=False)
    both("text-generation", gpt_sw3_dir, ["Stockholm är", "Hunden springer i"], max_new_tokens=6, do_sample=False,
         return_full_text=False)
