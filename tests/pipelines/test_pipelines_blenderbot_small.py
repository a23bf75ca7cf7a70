"""text2text-generation on Blenderbot Small vs the torch model's generate + decode on the same checkpoint
(transformers 5 has no torch text2text pipeline). The tokenizer (BPE with "@@" continuations) is built offline from a
character vocabulary."""

import json

import pytest
import torch
import transformers

from mindone.transformers import pipeline
from tests import parity

LETTERS = "abcdefghijklmnopqrstuvwxyz"
TEXTS = ["my friends are cool but they eat too many carbs", "what kind of carbs do they eat"]


@pytest.fixture(scope="module")
def chat_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("blenderbot_small")
    vocab = {"__null__": 0, "__start__": 1, "__end__": 2, "__unk__": 3}
    for ch in LETTERS:
        vocab[ch + "@@"] = len(vocab)
        vocab[ch] = len(vocab)
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n\n")
    tokenizer = transformers.BlenderbotSmallTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"))
    assert tokenizer.decode(tokenizer("my friends")["input_ids"]) == "my friends"
    config = transformers.BlenderbotSmallConfig(vocab_size=len(vocab), d_model=32, encoder_layers=2, decoder_layers=2,
                                                encoder_attention_heads=4, decoder_attention_heads=4,
                                                encoder_ffn_dim=37, decoder_ffn_dim=37, max_position_embeddings=64,
                                                pad_token_id=0, bos_token_id=1, eos_token_id=2,
                                                decoder_start_token_id=1, tie_word_embeddings=False)
    model = parity.torch_reference(transformers.BlenderbotSmallForConditionalGeneration, config)
    with torch.no_grad():  # a sharp LM head, so replies are varied letters rather than one repeated id
        g = torch.Generator().manual_seed(5)
        head = torch.randn(model.lm_head.weight.shape, generator=g) * 4
        head[[0, 1, 3]] = 0
        model.lm_head.weight = torch.nn.Parameter(head)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return model, tokenizer, str(directory)


def torch_replies(model, tokenizer, texts, **generate_kwargs):
    out = []
    for text in texts:
        with torch.no_grad():
            tokens = model.generate(**tokenizer(text, return_tensors="pt"), **generate_kwargs)
        out.append(tokenizer.decode(tokens[0], skip_special_tokens=True))
    return out


@pytest.mark.parametrize("kwargs", [dict(max_new_tokens=8), dict(max_new_tokens=6, num_beams=2)],
                         ids=["greedy", "beam"])
def test_text2text_generation_equals_torch(chat_dir, kwargs):
    model, tokenizer, directory = chat_dir
    expected = torch_replies(model, tokenizer, TEXTS, **kwargs)
    assert all(e.strip() for e in expected), expected
    assert pipeline("text2text-generation", model=directory)(TEXTS, **kwargs) == [
        {"generated_text": e} for e in expected]
