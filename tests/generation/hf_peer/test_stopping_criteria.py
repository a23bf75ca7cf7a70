"""HF's stopping-criteria test cases (tests/generation/test_stopping_criteria.py), on ours and on torch 5.25.
Hub tokenizers (gpt2, Qwen2) are replaced by the tiny byte-level BPE tokenizer of tests/generation/helpers.py: the
cases' expectations are about where text ends, which holds for any tokenizer without those special tokens."""

import time
import warnings

import numpy as np
import pytest

from tests.generation.helpers import tiny_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    tok = tiny_tokenizer()
    tok.pad_token_id = tok.eos_token_id
    tok.padding_side = "left"
    return tok


def tensors(B, length):
    return B.ids_tensor((3, length), 250), B.tensor(np.full((3, length), 1.0 / length, np.float32))


def flags(B, result):
    return [bool(v) for v in np.asarray(B.np(result)).reshape(-1)]


def test_list_criteria(B):
    criteria = B.StoppingCriteriaList([B.MaxLengthCriteria(max_length=10), B.MaxTimeCriteria(max_time=0.1)])
    assert not all(flags(B, criteria(*tensors(B, 5))))
    assert not all(flags(B, criteria(*tensors(B, 9))))
    assert all(flags(B, criteria(*tensors(B, 10))))


def test_max_length_criteria(B):
    criteria = B.MaxLengthCriteria(max_length=10)
    assert not all(flags(B, criteria(*tensors(B, 5))))
    assert not all(flags(B, criteria(*tensors(B, 9))))
    assert all(flags(B, criteria(*tensors(B, 10))))


def test_max_time_criteria(B):
    assert not all(flags(B, B.MaxTimeCriteria(max_time=0.1)(*tensors(B, 5))))
    assert all(flags(B, B.MaxTimeCriteria(max_time=0.1, initial_timestamp=time.time() - 0.2)(*tensors(B, 5))))


def test_eos_token_criteria(B):
    criteria = B.EosTokenCriteria(eos_token_id=0)
    ids, scores = tensors(B, 5)
    ids = B.np(ids).copy()
    ids[:, -1] = 0
    assert all(flags(B, criteria(B.tensor(ids), scores)))
    ids[2, -1] = 1
    assert flags(B, criteria(B.tensor(ids), scores)) == [True, True, False]
    ids[:, -1] = 1
    assert flags(B, criteria(B.tensor(ids), scores)) == [False, False, False]


def test_confidence_criteria(B):
    criteria = B.ConfidenceCriteria(assistant_confidence_threshold=0.5)
    ids = B.ids_tensor((1, 5), 250)
    logits = np.random.RandomState(0).randn(1, 250).astype(np.float32)
    logits[0, int(B.np(ids)[0, -1])] = 10.0
    assert not criteria(ids, (B.tensor(logits),))
    logits[0, int(B.np(ids)[0, -1])] = -10.0
    assert criteria(ids, (B.tensor(logits),))


def test_validate_stopping_criteria(B):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        B.validate_stopping_criteria(B.StoppingCriteriaList([B.MaxLengthCriteria(10)]), 10)
    with pytest.warns(UserWarning):
        B.validate_stopping_criteria(B.StoppingCriteriaList([B.MaxLengthCriteria(10)]), 11)
    assert len(B.validate_stopping_criteria(B.StoppingCriteriaList(), 11)) == 1


def _encode(tokenizer, B, texts):
    return B.tensor(tokenizer(texts, padding="longest", add_special_tokens=False, return_tensors="np")["input_ids"])


def test_stop_string_criteria(B, tokenizer):
    true_strings = ["<|im_start|><|im_end|>", "<|im_start|><|im_end|<|im_end|>", ">><|im_start|>>stop", "stop", "e nd"]
    false_strings = ["<|im_start|><|im_end|", "<|im_start|><|im_end|<|im_end|", "<|im_end|><|im_start|>",
                     "<|im_end|<>stop<|im_end|", "end", "en d", "eNd", "<|im_end|", "|im_end|>", "s"]
    criteria = B.StopStringCriteria(tokenizer=tokenizer, stop_strings=["<|im_end|>", "stop", "e nd"])
    true_ids, false_ids = _encode(tokenizer, B, true_strings), _encode(tokenizer, B, false_strings)
    for i in range(len(true_strings)):
        assert flags(B, criteria(true_ids[i:i + 1], None)) == [True], true_strings[i]
    for i in range(len(false_strings)):
        assert flags(B, criteria(false_ids[i:i + 1], None)) == [False], false_strings[i]


def test_stop_string_criteria_vocab_size_mismatch(B, tokenizer):
    criteria = B.StopStringCriteria(tokenizer=tokenizer, stop_strings=["test"])
    assert flags(B, criteria(B.tensor([[len(tokenizer) + 1024, 1, 2]], np.int64), None)) == [False]


def test_single_letter_stop_string(B, tokenizer):
    criteria = B.StopStringCriteria(tokenizer=tokenizer, stop_strings=["a"])
    for text, expected in (("a", True), ("baa", True), ("abbbbbbb", False), ("b", False)):
        ids = _encode(tokenizer, B, [text])
        assert flags(B, criteria(ids, None)) == [expected], text


def test_criteria_per_row(B, tokenizer):
    text = "They completed the challenging puzzle, revealing the hidden image at the end"
    ids = _encode(tokenizer, B, [text])
    criteria = B.StoppingCriteriaList([B.MaxLengthCriteria(max_length=ids.shape[1] + 5),
                                       B.StopStringCriteria(tokenizer=tokenizer, stop_strings=["end"])])
    assert flags(B, criteria(ids, None)) == [True]
    assert flags(B, criteria(ids[:, :-1], None)) == [False]


def test_criteria_per_row_batched(B, tokenizer):
    texts = ["They completed the challenging puzzle, revealing the hidden image at the end",
             "Today a dragon flew over France", "The aroma of freshly baked pizza filled the kitchen"]
    ids = _encode(tokenizer, B, texts)
    criteria = B.StoppingCriteriaList([B.MaxLengthCriteria(max_length=ids.shape[1] + 5),
                                       B.StopStringCriteria(tokenizer=tokenizer, stop_strings=["end"])])
    assert flags(B, criteria(ids, None)) == [True, False, False]
    assert flags(B, criteria(ids[:, :-1], None)) == [False, False, False]


def byte_fallback_tokenizer():
    """A SentencePiece-style BPE (Llama tokenizer layout: ▁ for spaces, <0xNN> byte fallback) trained in memory on
    ASCII text, so Korean text is spelled in byte tokens."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from tests.generation.helpers import CORPUS

    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>", fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.pre_tokenizer = pre_tokenizers.Split("▁", "merged_with_next")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    bytes_ = [f"<0x{b:02X}>" for b in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"] + bytes_,
                                  show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def wordpiece_tokenizer():
    """A BERT WordPiece tokenizer (no byte handling, like hf-internal-testing/tiny-random-bert) on a tiny vocab."""
    from transformers import BertTokenizerFast

    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "end", "of"] + letters + ["##" + c for c in letters]
    return BertTokenizerFast(vocab={token: index for index, token in enumerate(vocab)})


def assert_isolated_token_decode_loses_stop_string(tokenizer, text, stop_string):
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    isolated = "".join(tokenizer.convert_tokens_to_string([t]) for t in tokenizer.convert_ids_to_tokens(ids))
    assert tokenizer.decode(ids, skip_special_tokens=False).endswith(stop_string)
    assert stop_string not in isolated


def test_stop_string_criteria_byte_fallback_fragments(B):
    tokenizer = byte_fallback_tokenizer()
    assert B.StopStringCriteria._get_stop_string_matching_mode(tokenizer) == "byte_fallback"
    assert_isolated_token_decode_loses_stop_string(tokenizer, "대화 끝", "끝")
    assert_isolated_token_decode_loses_stop_string(tokenizer, "abc 끝!", "끝!")
    for text, stop_string, expected in (("대화 끝", "끝", True), ("abc 끝!", "끝!", True), ("대화 끝 다음", "끝", False),
                                        ("완료 후속", "완료", False)):
        ids = B.tensor(tokenizer(text, add_special_tokens=False, return_tensors="np")["input_ids"])
        criteria = B.StopStringCriteria(tokenizer=tokenizer, stop_strings=[stop_string])
        assert flags(B, criteria(ids, scores=None)) == [expected], text


def test_stop_string_criteria_byte_level_ascii(B, tokenizer):
    assert B.StopStringCriteria._get_stop_string_matching_mode(tokenizer) == "byte_level"
    criteria = B.StopStringCriteria(tokenizer=tokenizer, stop_strings=["end"])
    assert flags(B, criteria(_encode(tokenizer, B, ["the end"]), None)) == [True]
    assert flags(B, criteria(_encode(tokenizer, B, ["end of"]), None)) == [False]


def test_stop_string_criteria_non_byte_level_tokenizer(B):
    tokenizer = wordpiece_tokenizer()
    assert B.StopStringCriteria._get_stop_string_matching_mode(tokenizer) is None
    criteria = B.StopStringCriteria(tokenizer=tokenizer, stop_strings=["end"])
    assert flags(B, criteria(_encode(tokenizer, B, ["the end"]), None)) == [True]
    assert flags(B, criteria(_encode(tokenizer, B, ["end of"]), None)) == [False]


def test_stop_string_matching_mode_helpers(B):
    class Decoder:
        def __init__(self, state):
            self.state = state

        def __getstate__(self):
            return self.state

    class Tokenizer:
        def __init__(self, state):
            self.backend_tokenizer = type("Backend", (), {"decoder": Decoder(state)})()

    mode = B.StopStringCriteria._get_stop_string_matching_mode
    assert mode(Tokenizer(b'{"type":"Sequence","decoders":[{"type":"ByteLevel"}]}')) == "byte_level"
    assert mode(Tokenizer(b'{"type":"Sequence","decoders":[{"type":"ByteFallback"},{"type":"ByteLevel"}]}')) == \
        "byte_fallback"
    assert mode(Tokenizer(b'{"type":"Replace","content":"ByteFallback"}')) is None
    to_bytes = B.StopStringCriteria._token_to_bytes
    assert to_bytes("<0xEB>", "byte_fallback", None) == b"\xeb"
    assert to_bytes("<0xeb>", "byte_fallback", None) == b"\xeb"
    for token in ["<0x+1>", "<0xG1>", "<0x 1>", "<0x1>", "<0x100>", "<0xeb", "hello"]:
        assert to_bytes(token, "byte_fallback", None) is None
