"""translation with `src_lang` / `tgt_lang` on M2M100 and NLLB (the M2M100 architecture with NLLB's tokenizer).

transformers 5 has no torch translation pipeline, so the reference is HF 4.x's documented behaviour run with torch:
the tokenizer in source-language mode, `generate(..., forced_bos_token_id=<target language id>)`, decoding without
special tokens. The tokenizers are built offline: M2M100's from a tiny sentencepiece model trained here, NLLB's
(a `tokenizers` BPE) from a small vocabulary.
"""

import io
import json

import numpy as np
import pytest
import torch
import transformers

from mindone.transformers import pipeline
from tests import parity

SOURCES = ["john lives in paris", "the cat sat on the mat and mary likes music"]
CORPUS = ["the cat sat on the mat", "john lives in paris", "mary likes music and the big city",
          "le chat est sur le tapis", "jean habite a paris", "marie aime la musique", "der hund lebt in berlin"]


def m2m100_tokenizer(directory):
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS * 20), model_writer=model, vocab_size=60,
                                   model_type="bpe", character_coverage=1.0, bos_id=-1, eos_id=-1, unk_id=0,
                                   hard_vocab_limit=False, minloglevel=2)
    with open(f"{directory}/sentencepiece.bpe.model", "wb") as f:
        f.write(model.getvalue())
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for i in range(sp.get_piece_size()):
        vocab.setdefault(sp.id_to_piece(i), len(vocab))
    with open(f"{directory}/vocab.json", "w") as f:
        json.dump(vocab, f)
    tokenizer = transformers.M2M100Tokenizer(f"{directory}/vocab.json", f"{directory}/sentencepiece.bpe.model")
    # language ids follow the vocabulary, then num_madeup_words unused ids
    return tokenizer, len(vocab) + len(tokenizer.lang_code_to_id) + tokenizer.num_madeup_words


def nllb_tokenizer(directory):
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for token in "▁the ▁cat ▁sat ▁on ▁mat ▁john ▁lives ▁in ▁paris ▁mary ▁likes ▁music ▁and".split():
        vocab[token] = len(vocab)
    for ch in "abcdefghijklmnopqrstuvwxyz▁":
        vocab.setdefault(ch, len(vocab))
    tokenizer = transformers.NllbTokenizer(vocab=vocab, merges=[])
    return tokenizer, len(tokenizer)


FAMILIES = {"m2m100": (m2m100_tokenizer, ("en", "fr"), ("en", "de")),
            "nllb": (nllb_tokenizer, ("eng_Latn", "fra_Latn"), ("eng_Latn", "deu_Latn"))}


@pytest.fixture(scope="module", params=list(FAMILIES))
def translator(request, tmp_path_factory):
    make_tokenizer, *pairs = FAMILIES[request.param]
    directory = str(tmp_path_factory.mktemp(request.param))
    tokenizer, vocab_size = make_tokenizer(directory)
    config = transformers.M2M100Config(vocab_size=vocab_size, d_model=32, encoder_layers=2, decoder_layers=2,
                                       encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=37,
                                       decoder_ffn_dim=37, max_position_embeddings=64, tie_word_embeddings=False)
    model = parity.torch_reference(transformers.M2M100ForConditionalGeneration, config)
    with torch.no_grad():  # a sharp LM head favouring word pieces, so translations are varied text
        g = torch.Generator().manual_seed(3)
        head = torch.randn(model.lm_head.weight.shape, generator=g) * 4
        head[[0, 1, 3]] = 0
        head[2] *= 0.3
        model.lm_head.weight = torch.nn.Parameter(head)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return model, tokenizer, directory, pairs


def torch_translations(model, tokenizer, texts, src_lang, tgt_lang, **generate_kwargs):
    tokenizer.src_lang = src_lang
    forced = tokenizer.convert_tokens_to_ids(tokenizer.get_lang_token(tgt_lang)) \
        if hasattr(tokenizer, "get_lang_token") else tokenizer.convert_tokens_to_ids(tgt_lang)
    out = []
    for text in texts:
        ids = tokenizer(text, return_tensors="pt")
        with torch.no_grad():
            tokens = model.generate(**ids, forced_bos_token_id=forced, **generate_kwargs)
        assert int(tokens[0, 1]) == forced
        out.append(tokenizer.decode(tokens[0], skip_special_tokens=True))
    return out


def test_translation_with_src_and_tgt_lang_equals_torch(translator):
    model, tokenizer, directory, pairs = translator
    pipe = pipeline("translation", model=directory)
    for src, tgt in pairs:
        expected = torch_translations(model, tokenizer, SOURCES, src, tgt, max_new_tokens=6)
        assert all(e.strip() for e in expected), expected
        assert pipe(SOURCES, src_lang=src, tgt_lang=tgt, max_new_tokens=6) == [{"translation_text": e}
                                                                               for e in expected]
    # the two target languages really translate differently (the forced language id steers the decoder)
    first, second = (torch_translations(model, tokenizer, SOURCES[:1], *pair, max_new_tokens=6) for pair in pairs)
    assert first != second


def test_beam_translation_equals_torch(translator):
    model, tokenizer, directory, pairs = translator
    src, tgt = pairs[1]
    kwargs = dict(max_new_tokens=5, num_beams=2)
    expected = torch_translations(model, tokenizer, SOURCES[1:], src, tgt, **kwargs)
    assert pipeline("translation", model=directory)(SOURCES[1], src_lang=src, tgt_lang=tgt, **kwargs) == [
        {"translation_text": expected[0]}]


def test_translation_task_name_gives_the_languages(translator):
    model, tokenizer, directory, pairs = translator
    src, tgt = pairs[0]
    if "_" in src:  # NLLB's codes (eng_Latn) cannot be written in HF's 4-part task name
        with pytest.raises(KeyError, match="translation_XX_to_YY"):
            pipeline(f"translation_{src}_to_{tgt}", model=directory)
        return
    pipe = pipeline(f"translation_{src}_to_{tgt}", model=directory)
    expected = torch_translations(model, tokenizer, SOURCES[:1], src, tgt, max_new_tokens=5)
    assert pipe(SOURCES[0], max_new_tokens=5) == [{"translation_text": expected[0]}]


def test_translation_without_languages_is_an_error(translator):
    _, _, directory, _ = translator
    with pytest.raises(ValueError, match="src_lang"):
        pipeline("translation", model=directory)(SOURCES[0], max_new_tokens=3)


def test_m2m100_tokens_through_pipeline_equal_generate(translator):
    model, tokenizer, directory, pairs = translator
    src, tgt = pairs[1]
    ids = pipeline("translation", model=directory)(SOURCES[1], src_lang=src, tgt_lang=tgt, return_tensors=True,
                                                   max_new_tokens=5)[0]["translation_token_ids"]
    tokenizer.src_lang = src
    forced = tokenizer.convert_tokens_to_ids(tokenizer.get_lang_token(tgt)) \
        if hasattr(tokenizer, "get_lang_token") else tokenizer.convert_tokens_to_ids(tgt)
    with torch.no_grad():
        ref = model.generate(**tokenizer(SOURCES[1], return_tensors="pt"), forced_bos_token_id=forced,
                             max_new_tokens=5)[0].numpy()
    np.testing.assert_array_equal(np.asarray(ids), ref)
