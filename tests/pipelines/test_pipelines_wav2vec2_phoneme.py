"""Wav2Vec2Phoneme: a Wav2Vec2ForCTC checkpoint with HF's Wav2Vec2PhonemeCTCTokenizer (phoneme vocabulary; decoding
ids to phonemes needs no `phonemizer`) through automatic-speech-recognition, against torch `transformers.pipeline` on
the same tiny random checkpoint."""

import json

import numpy as np
import pytest
import torch
import transformers

from mindone.transformers import Wav2Vec2ForCTC, pipeline
from tests import parity
from tests.pipelines.test_pipelines_wav2vec2 import TINY, _save_feature_extractor, audio

PHONEMES = ["<pad>", "<s>", "</s>", "<unk>", "h", "ə", "l", "oʊ", "w", "ɜː", "d", "t", "s", "ʃ", "æ", "n"]


@pytest.fixture(scope="module")
def phoneme_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny-wav2vec2-phoneme")
    vocab_file = directory / "vocab.json"
    vocab_file.write_text(json.dumps({token: i for i, token in enumerate(PHONEMES)}, ensure_ascii=False))
    tokenizer = transformers.Wav2Vec2PhonemeCTCTokenizer(str(vocab_file), do_phonemize=False)
    config = transformers.Wav2Vec2Config(**TINY, vocab_size=len(PHONEMES), pad_token_id=tokenizer.pad_token_id)
    model = parity.torch_reference(transformers.Wav2Vec2ForCTC, config, seed=3)
    with torch.no_grad():
        model.lm_head.weight.mul_(20.0)  # frames disagree about their argmax: several phonemes come out
    model.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    _save_feature_extractor(str(directory))
    return str(directory)


@pytest.fixture(scope="module")
def asr_pair(phoneme_dir):
    return (pipeline("automatic-speech-recognition", model=phoneme_dir),
            transformers.pipeline("automatic-speech-recognition", model=phoneme_dir, device="cpu"))


def test_pipeline_loads_the_phoneme_tokenizer_and_ctc_model(asr_pair):
    ours, _ = asr_pair
    assert type(ours.model) is Wav2Vec2ForCTC
    assert type(ours.tokenizer).__name__ == "Wav2Vec2PhonemeCTCTokenizer"


@pytest.mark.parametrize("seconds", [0.3, 0.7])
def test_phoneme_transcripts_match_torch(asr_pair, seconds):
    ours, ref = asr_pair
    samples = audio(seconds, seed=int(seconds * 10) + 1)
    expected = ref(samples.copy())
    assert len(expected["text"].split()) > 2, expected  # several phonemes, space-separated
    assert ours(samples) == expected


def test_chunked_phoneme_transcript_matches_torch(asr_pair):
    ours, ref = asr_pair
    samples = audio(1.6, seed=4)
    assert ours(samples, chunk_length_s=0.5) == ref(samples.copy(), chunk_length_s=0.5)


def test_phoneme_char_timestamps_match_torch(asr_pair):
    ours, ref = asr_pair
    samples = audio(0.5, seed=6)
    out, expected = ours(samples, return_timestamps="char"), ref(samples.copy(), return_timestamps="char")
    assert out["text"] == expected["text"] and len(out["chunks"]) == len(expected["chunks"]) > 2
    for a, b in zip(out["chunks"], expected["chunks"]):
        assert a["text"] == b["text"] and np.allclose(a["timestamp"], b["timestamp"])
