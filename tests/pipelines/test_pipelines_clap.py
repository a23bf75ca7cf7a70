"""zero-shot-audio-classification against torch `transformers.pipeline` on the same tiny random CLAP checkpoint, with
HF's ClapProcessor (ClapFeatureExtractor on numpy + a byte-level BPE RobertaTokenizer) saved beside it."""

import numpy as np
import pytest
import transformers

from mindone.transformers import ClapModel, pipeline
from tests import parity
from tests.pipelines.test_pipelines import assert_same_result
from tests.pipelines.test_pipelines_roberta_distilbert import _roberta_tokenizer

RATE = 8000
LABELS = ["dog barking", "music", "rain on a window", "a car engine"]


def audio(seconds, seed=0):
    t = np.arange(int(seconds * RATE)) / RATE
    rng = np.random.RandomState(seed)
    return (0.3 * np.sin(2 * np.pi * (150 + 200 * seed) * t) + 0.2 * rng.randn(t.size)).astype(np.float32)


def _clap_dir(tmp_path_factory, fused):
    directory = tmp_path_factory.mktemp("tiny-clap-fused" if fused else "tiny-clap")
    tokenizer = _roberta_tokenizer(tmp_path_factory.mktemp("bpe"))
    # 1 s at 8 kHz, hop 128 -> 63 frames of 16 mel bins (resized by the model to its 64). Unfused: clips shorter
    # than a second are repeat-padded and `rand_trunc` only crops longer ones, so the features are deterministic.
    # Fused: longer clips give the global mel + 3 random crops (numpy's RNG, seeded before each call)
    # (HF's fusion extractor shrinks the global mel to a hard-coded 64 bins: the fused model has 64, a square spec)
    mels = 64 if fused else 16
    feature_extractor = transformers.ClapFeatureExtractor(feature_size=mels, sampling_rate=RATE, hop_length=128,
                                                          max_length_s=1, fft_window_size=256, frequency_max=4000,
                                                          truncation="fusion" if fused else "rand_trunc")
    text = dict(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=37, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=64, pad_token_id=1)
    patch = 4 if fused else 2
    audio_config = dict(spec_size=2 * mels if not fused else mels, num_mel_bins=mels, patch_size=patch,
                        patch_stride=patch, window_size=4, depths=[2, 2], num_attention_heads=[2, 4],
                        patch_embeds_hidden_size=8, hidden_size=16, enable_fusion=fused)
    config = transformers.ClapConfig(text_config=text, audio_config=audio_config, projection_dim=8)
    model = parity.torch_reference(transformers.ClapModel, config)
    model.save_pretrained(str(directory))
    transformers.ClapProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(
        str(directory))
    return str(directory)


@pytest.fixture(scope="module")
def clap_dir(tmp_path_factory):
    return _clap_dir(tmp_path_factory, fused=False)


@pytest.fixture(scope="module")
def pipelines(clap_dir):
    return (pipeline("zero-shot-audio-classification", model=clap_dir),
            transformers.pipeline("zero-shot-audio-classification", model=clap_dir, device="cpu"))


def test_pipeline_builds_clap_with_its_processor(pipelines):
    ours, _ = pipelines
    assert type(ours.model) is ClapModel
    assert type(ours.feature_extractor).__name__ == "ClapFeatureExtractor"


@pytest.mark.parametrize("kwargs", [{}, {"hypothesis_template": "{}"}])
def test_zero_shot_audio_classification_matches_torch(pipelines, kwargs):
    ours, ref = pipelines
    for seed, seconds in [(0, 0.4), (1, 0.9)]:
        samples = audio(seconds, seed=seed)
        expected = ref(samples.copy(), candidate_labels=LABELS, **kwargs)
        out = ours(samples, candidate_labels=LABELS, **kwargs)
        assert_same_result(out, expected)
        # the random checkpoint separates the labels: the ranking is tested, not a tie
        scores = [e["score"] for e in expected]
        assert max(scores) - min(scores) > 1e-3, expected


def test_a_list_of_audios_gives_a_list_of_results(pipelines):
    ours, ref = pipelines
    clips = [audio(0.5, seed=2), audio(0.7, seed=3)]
    out = ours(clips, candidate_labels=LABELS[:2])
    assert_same_result(out, [ref(c.copy(), candidate_labels=LABELS[:2]) for c in clips])


def test_candidate_labels_are_required(pipelines):
    with pytest.raises(ValueError, match="candidate_labels"):
        pipelines[0](audio(0.3))


def test_fused_model_on_long_and_short_audio_matches_torch(tmp_path_factory):
    """A fused checkpoint: a 1.6 s clip is longer than the extractor's 1 s (global mel + local crops, fused in the
    model); a short one gets HF's random `is_longer` flag. numpy's RNG is seeded before each pipeline call."""
    directory = _clap_dir(tmp_path_factory, fused=True)
    ours = pipeline("zero-shot-audio-classification", model=directory)
    ref = transformers.pipeline("zero-shot-audio-classification", model=directory, device="cpu")
    for seed, seconds in [(4, 1.6), (5, 0.5)]:
        samples = audio(seconds, seed=seed)
        np.random.seed(seed)
        expected = ref(samples.copy(), candidate_labels=LABELS)
        np.random.seed(seed)
        assert_same_result(ours(samples, candidate_labels=LABELS), expected)
