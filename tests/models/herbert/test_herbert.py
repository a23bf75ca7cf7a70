"""HerBERT is the BERT architecture (`model_type: "bert"`) with its own BPE tokenizer (`HerbertTokenizer`: BERT
pre-tokenisation, `</w>` word ends, RoBERTa-style special tokens with <pad> = 1). Nothing HerBERT-specific exists in
our code: these tests check that a HerBERT-shaped checkpoint goes through the Auto classes and `pipeline("fill-mask")`
exactly as it does in torch `transformers`."""

import json

import numpy as np
import pytest
import torch
import transformers
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

from mindone.transformers import AutoModel, AutoModelForMaskedLM, BertForMaskedLM, BertModel
from tests import parity
from tests.pipelines.test_pipelines import both

SPECIAL = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
POLISH = "Kot siedzi na macie . Pies śpi w domu , a Maria lubi muzykę . Warszawa jest stolicą Polski ."


def herbert_tokenizer():
    """A HerbertTokenizer over a BPE learned (with HerBERT's settings) from a few Polish sentences."""
    bpe = Tokenizer(models.BPE(unk_token="<unk>", end_of_word_suffix="</w>"))
    bpe.normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False)
    bpe.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    bpe.train_from_iterator([POLISH] * 3, trainers.BpeTrainer(vocab_size=200, special_tokens=SPECIAL,
                                                              end_of_word_suffix="</w>", show_progress=False))
    model = json.loads(bpe.to_str())["model"]
    tokenizer = transformers.HerbertTokenizer(vocab=model["vocab"], merges=[tuple(m) for m in model["merges"]])
    assert tokenizer.unk_token_id not in tokenizer(POLISH)["input_ids"]
    return tokenizer


@pytest.fixture(scope="module")
def herbert_dir(tmp_path_factory):
    """A tiny random HerBERT masked LM (the real models' config: BERT, pad 1, 2 segment types) and its tokenizer."""
    tokenizer = herbert_tokenizer()
    config = transformers.BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=37, max_position_embeddings=64,
                                     pad_token_id=1, tokenizer_class="HerbertTokenizer")
    model = parity.torch_reference(transformers.BertForMaskedLM, config)
    with torch.no_grad():  # sharper random logits, so the fill-mask ranking is not a near-tie
        model.cls.predictions.decoder.weight.mul_(8.0)
    directory = str(tmp_path_factory.mktemp("herbert"))
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def test_auto_classes_load_herbert_as_bert_and_match_torch(herbert_dir):
    tokenizer = transformers.AutoTokenizer.from_pretrained(herbert_dir)
    assert type(tokenizer).__name__ == "HerbertTokenizer"
    enc = tokenizer(["Kot siedzi na macie .", "Pies śpi ."], padding=True, return_tensors="np")
    assert enc["input_ids"][1, -1] == 1  # HerBERT pads with <pad> = 1 on the right
    inputs = {k: np.asarray(v) for k, v in enc.items()}
    torch_mlm = transformers.AutoModelForMaskedLM.from_pretrained(herbert_dir).eval()
    ours = AutoModelForMaskedLM.from_pretrained(herbert_dir)
    assert type(ours) is BertForMaskedLM
    out, ref = parity.run_ours(ours, inputs), parity.run_torch(torch_mlm, inputs)
    parity.assert_close({"logits": parity.rel_error(out.logits, ref.logits)}, parity.FP32_BAR, "HerBERT MLM")
    base = AutoModel.from_pretrained(herbert_dir)
    assert type(base) is BertModel
    ref_base = parity.run_torch(transformers.AutoModel.from_pretrained(herbert_dir).eval(), inputs)
    error = parity.rel_error(parity.run_ours(base, inputs).last_hidden_state, ref_base.last_hidden_state)
    parity.assert_close({"last_hidden_state": error}, parity.FP32_BAR, "HerBERT base")


def test_fill_mask_pipeline_matches_torch(herbert_dir):
    both("fill-mask", herbert_dir, "Pies <mask> w domu .", top_k=3)
    both("fill-mask", herbert_dir, ["Kot <mask> na macie .", "Maria lubi <mask> ."])
