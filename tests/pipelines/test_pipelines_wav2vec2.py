"""automatic-speech-recognition with a CTC model and audio-classification, against torch `transformers.pipeline` on
the same tiny random Wav2Vec2 checkpoints (a character vocabulary with Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor).
"""

import json

import numpy as np
import pytest
import torch
import transformers

from mindone.transformers import Wav2Vec2ForCTC, pipeline
from tests import parity

RATE = 16000
TINY = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, conv_dim=(16, 16, 16),
            conv_kernel=(10, 3, 3), conv_stride=(5, 2, 2), num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=2, feat_extract_norm="layer", do_stable_layer_norm=True)
VOCAB = ["<pad>", "<s>", "</s>", "<unk>", "|", "A", "B", "C", "D", "E", "F", "G"]


def audio(seconds, seed=0):
    t = np.arange(int(seconds * RATE)) / RATE
    rng = np.random.RandomState(seed)
    return (0.3 * np.sin(2 * np.pi * 180 * t) * np.sin(2 * np.pi * 1.3 * t) + 0.3 * rng.randn(t.size)).astype(
        np.float32)


def _save_feature_extractor(directory):
    transformers.Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=RATE, padding_value=0.0, do_normalize=True,
                                          return_attention_mask=True).save_pretrained(directory)


@pytest.fixture(scope="module")
def ctc_dir(tmp_path_factory):
    """A tiny random Wav2Vec2ForCTC whose lm_head is scaled up so that frames disagree about their argmax."""
    directory = tmp_path_factory.mktemp("tiny-wav2vec2-ctc")
    vocab_file = directory / "vocab.json"
    vocab_file.write_text(json.dumps({token: i for i, token in enumerate(VOCAB)}))
    tokenizer = transformers.Wav2Vec2CTCTokenizer(str(vocab_file), word_delimiter_token="|")
    config = transformers.Wav2Vec2Config(**TINY, vocab_size=len(VOCAB), pad_token_id=tokenizer.pad_token_id)
    model = parity.torch_reference(transformers.Wav2Vec2ForCTC, config)
    with torch.no_grad():
        model.lm_head.weight.mul_(20.0)
    model.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    _save_feature_extractor(str(directory))
    return str(directory)


@pytest.fixture(scope="module")
def data2vec_ctc_dir(tmp_path_factory, ctc_dir):
    """A tiny Data2VecAudioForCTC with the same tokenizer and feature extractor."""
    directory = str(tmp_path_factory.mktemp("tiny-data2vec-audio-ctc"))
    shared = {k: v for k, v in TINY.items() if k not in ("feat_extract_norm", "do_stable_layer_norm")}
    config = transformers.Data2VecAudioConfig(**{**shared, "num_conv_pos_embeddings": 2}, conv_pos_kernel_size=5,
                                              vocab_size=len(VOCAB), pad_token_id=0)
    model = parity.torch_reference(transformers.Data2VecAudioForCTC, config)
    with torch.no_grad():
        model.lm_head.weight.mul_(20.0)
    model.save_pretrained(directory)
    transformers.AutoTokenizer.from_pretrained(ctc_dir).save_pretrained(directory)
    _save_feature_extractor(directory)
    return directory


def test_data2vec_audio_ctc_transcripts_match_torch(data2vec_ctc_dir):
    ours = pipeline("automatic-speech-recognition", model=data2vec_ctc_dir)
    ref = transformers.pipeline("automatic-speech-recognition", model=data2vec_ctc_dir, device="cpu")
    assert type(ours.model).__name__ == "Data2VecAudioForCTC"
    samples = audio(1.2, seed=11)
    expected = ref(samples.copy(), chunk_length_s=0.5)
    assert len(expected["text"]) > 3, expected
    assert ours(samples, chunk_length_s=0.5) == expected


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("tiny-wav2vec2-cls"))
    config = transformers.Wav2Vec2Config(**TINY, num_labels=4, classifier_proj_size=8,
                                         id2label={0: "yes", 1: "no", 2: "up", 3: "down"},
                                         label2id={"yes": 0, "no": 1, "up": 2, "down": 3})
    parity.torch_reference(transformers.Wav2Vec2ForSequenceClassification, config).save_pretrained(directory)
    _save_feature_extractor(directory)
    return directory


@pytest.fixture(scope="module")
def asr_pair(ctc_dir):
    return (pipeline("automatic-speech-recognition", model=ctc_dir),
            transformers.pipeline("automatic-speech-recognition", model=ctc_dir, device="cpu"))


def test_ctc_pipeline_builds_the_ctc_model(asr_pair):
    ours, _ = asr_pair
    assert type(ours.model) is Wav2Vec2ForCTC and ours.type == "ctc"


@pytest.mark.parametrize("seconds", [0.3, 0.7])
def test_ctc_transcripts_match_torch(asr_pair, seconds):
    ours, ref = asr_pair
    samples = audio(seconds, seed=int(seconds * 10))
    expected = ref(samples.copy())
    assert len(expected["text"]) > 3, expected  # the checkpoint emits several characters
    assert ours(samples) == expected


@pytest.mark.parametrize("chunk_length_s,stride_length_s", [(0.5, None), (0.4, (0.1, 0.05))])
def test_chunked_long_audio_matches_torch(asr_pair, chunk_length_s, stride_length_s):
    ours, ref = asr_pair
    samples = audio(1.6, seed=3)
    kwargs = {"chunk_length_s": chunk_length_s}
    if stride_length_s is not None:
        kwargs["stride_length_s"] = stride_length_s
    assert len(ours.preprocess(samples, **kwargs)) >= 4  # several windows, each with overlaps to drop
    assert ours(samples, **kwargs) == ref(samples.copy(), **kwargs)


@pytest.mark.parametrize("level", ["char", "word"])
def test_ctc_timestamps_match_torch(asr_pair, level):
    ours, ref = asr_pair
    samples = audio(0.5, seed=5)
    out, expected = ours(samples, return_timestamps=level), ref(samples.copy(), return_timestamps=level)
    assert out["text"] == expected["text"] and len(out["chunks"]) == len(expected["chunks"])
    for a, b in zip(out["chunks"], expected["chunks"]):
        assert a["text"] == b["text"] and np.allclose(a["timestamp"], b["timestamp"])


def test_ctc_rejects_segment_timestamps(asr_pair):
    with pytest.raises(ValueError, match="character level timestamps"):
        asr_pair[0](audio(0.2), return_timestamps=True)


@pytest.fixture(scope="module")
def classification_pair(classifier_dir):
    return (pipeline("audio-classification", model=classifier_dir),
            transformers.pipeline("audio-classification", model=classifier_dir, device="cpu"))


@pytest.mark.parametrize("kwargs", [{}, {"top_k": 2}, {"function_to_apply": "sigmoid"}])
def test_audio_classification_matches_torch(classification_pair, kwargs):
    ours, ref = classification_pair
    for seed, seconds in [(0, 0.3), (1, 0.5)]:
        samples = audio(seconds, seed=seed)
        out, expected = ours(samples, **kwargs), ref(samples.copy(), **kwargs)
        assert [o["label"] for o in out] == [e["label"] for e in expected]
        assert np.allclose([o["score"] for o in out], [e["score"] for e in expected], rtol=1e-5, atol=1e-6)


def test_audio_classification_accepts_a_dict_and_a_list(classification_pair):
    ours, ref = classification_pair
    a, b = audio(0.3, seed=7), audio(0.4, seed=8)
    outs = ours([{"raw": a, "sampling_rate": RATE}, b])
    assert [[o["label"] for o in out] for out in outs] == [[e["label"] for e in ref(x.copy())] for x in (a, b)]
