"""automatic-speech-recognition against torch `transformers.pipeline` (tiny random Whisper with whisper-tiny.en's
tokenizer; the real checkpoint in the slow test), and text2text-generation / summarization / translation on a tiny
T5 against HF 4.x's documented behaviour: prefix + text -> torch `model.generate` -> decoded text under
"generated_text" / "summary_text" / "translation_text" (transformers 5 removed these torch pipelines)."""

import wave

import numpy as np
import pytest
import torch
import transformers

from mindone.transformers import pipeline
from tests import parity
from tests.models.whisper.fixtures import speech_wav, whisper_tiny_en_dir

RATE = 16000


def write_wav(path, audio, rate=RATE):
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(np.clip(np.round(audio * 32768), -32768, 32767).astype("<i2").tobytes())


@pytest.fixture(scope="module")
def tiny_whisper_dir(tmp_path_factory):
    """A tiny random Whisper with 1 s windows (100 mel frames) and the real English tokenizer / generation ids."""
    real = whisper_tiny_en_dir()
    tokenizer = transformers.AutoTokenizer.from_pretrained(real)
    real_config = transformers.WhisperConfig.from_pretrained(real)
    config = transformers.WhisperConfig(
        vocab_size=real_config.vocab_size, num_mel_bins=8, d_model=16, encoder_layers=1, decoder_layers=2,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
        max_source_positions=50, max_target_positions=64, pad_token_id=real_config.pad_token_id,
        bos_token_id=real_config.bos_token_id, eos_token_id=real_config.eos_token_id,
        decoder_start_token_id=real_config.decoder_start_token_id, init_std=0.3)
    model = parity.torch_reference(transformers.WhisperForConditionalGeneration, config)
    model.generation_config = transformers.GenerationConfig.from_pretrained(real)
    directory = str(tmp_path_factory.mktemp("tiny-whisper"))
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    transformers.WhisperFeatureExtractor(feature_size=8, chunk_length=1).save_pretrained(directory)
    return directory


def audio(seconds, seed=0):
    t = np.arange(int(seconds * RATE)) / RATE
    rng = np.random.RandomState(seed)
    return (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.randn(t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def asr_pair(tiny_whisper_dir):
    ours = pipeline("automatic-speech-recognition", model=tiny_whisper_dir)
    ref = transformers.pipeline("automatic-speech-recognition", model=tiny_whisper_dir, device="cpu")
    return ours, ref


GENERATE = {"max_new_tokens": 6}


@pytest.mark.parametrize("kind", ["array", "dict_raw", "dict_array", "wav_path", "wav_bytes", "list_of_arrays"])
def test_asr_inputs_give_torch_transcripts(asr_pair, tmp_path, kind):
    ours, ref = asr_pair
    samples = audio(0.8)
    expected = ref(samples.copy(), generate_kwargs=GENERATE)
    if kind == "array":
        inputs = samples
    elif kind == "dict_raw":
        inputs = {"raw": samples, "sampling_rate": RATE}
    elif kind == "dict_array":
        inputs = {"array": samples, "sampling_rate": RATE}
    else:
        path = tmp_path / "clip.wav"
        write_wav(path, samples)
        with wave.open(str(path), "rb") as f:  # the reference gets the 16-bit rounded samples
            rounded = np.frombuffer(f.readframes(f.getnframes()), "<i2").astype(np.float32) / 32768
        expected = ref(rounded, generate_kwargs=GENERATE)
        inputs = str(path) if kind == "wav_path" else path.read_bytes()
    if kind == "list_of_arrays":
        second = audio(0.5, seed=1)
        expected = [expected, ref(second, generate_kwargs=GENERATE)]
        assert ours([samples, second], generate_kwargs=GENERATE) == expected
        assert ours([samples, second], generate_kwargs=GENERATE, batch_size=2) == expected
        return
    assert ours(inputs, generate_kwargs=GENERATE) == expected
    assert set(expected) == {"text"}


def test_asr_chunked_long_audio_matches_torch(asr_pair):
    ours, ref = asr_pair
    samples = audio(2.6, seed=2)  # 2.6 windows of the 1 s feature extractor
    kwargs = dict(chunk_length_s=1.0, stride_length_s=0.2, generate_kwargs=GENERATE)
    assert ours(samples, **kwargs) == ref(samples, **kwargs)
    with pytest.raises(NotImplementedError, match="chunk_length_s"):
        ours(samples, generate_kwargs=GENERATE)


def test_asr_resamples_other_rates_and_rejects_timestamps(asr_pair):
    ours, _ = asr_pair
    samples = audio(0.8)
    at_8k = samples[::2]
    assert set(ours({"raw": at_8k, "sampling_rate": 8000}, generate_kwargs=GENERATE)) == {"text"}
    with pytest.raises(NotImplementedError):
        ours(samples, return_timestamps=True)


@pytest.mark.slow
def test_whisper_tiny_en_transcribes_espeak_speech_like_torch():
    path, wav = whisper_tiny_en_dir(), speech_wav()
    ours = pipeline("automatic-speech-recognition", model=path)(wav)
    from mindone.transformers.pipelines.automatic_speech_recognition import read_wav

    samples, rate = read_wav(wav)
    assert rate == RATE
    ref = transformers.pipeline("automatic-speech-recognition", model=path, device="cpu")(samples)
    assert ours == ref
    # the model hears the sentence (espeak's "jumps" is often heard as "jump")
    words = ours["text"].lower()
    assert "quick brown fox" in words and "lazy dog" in words, ours


@pytest.mark.slow
def test_whisper_tiny_en_generate_tokens_equal_torch():
    from mindone.transformers import WhisperForConditionalGeneration
    from mindone.transformers.pipelines.automatic_speech_recognition import read_wav

    path = whisper_tiny_en_dir()
    samples, _ = read_wav(speech_wav())
    features = transformers.WhisperFeatureExtractor.from_pretrained(path)(samples, sampling_rate=RATE,
                                                                          return_tensors="np")["input_features"]
    ref_model = transformers.WhisperForConditionalGeneration.from_pretrained(path, attn_implementation="eager")
    ours = WhisperForConditionalGeneration.from_pretrained(path)
    for kwargs in (dict(), dict(num_beams=2)):
        with torch.no_grad():
            ref = ref_model.eval().generate(torch.from_numpy(features), **kwargs).numpy()
        np.testing.assert_array_equal(parity.to_numpy(ours.generate(features, **kwargs)), ref)


# ------------------------------------------------------------------------------------------------------------------
# text2text-generation / summarization / translation on T5
# ------------------------------------------------------------------------------------------------------------------

WORDS = ("the cat sat on a mat . dog ##s who where what is lives in paris france john ##ny big city , ? "
         "london works at google and mary likes music summarize translate english to french german :").split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TASK_PARAMS = {
    "summarization": {"prefix": "summarize : ", "max_length": 9, "num_beams": 2, "early_stopping": True},
    "translation_en_to_fr": {"prefix": "translate english to french : ", "max_length": 8},
    "translation_en_to_de": {"prefix": "translate english to german : ", "max_length": 7},
}


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory):
    # transformers 5's BertTokenizerFast(vocab_file=) keeps only the special tokens; vocab= builds the real one
    tokenizer = transformers.BertTokenizer(vocab={w: i for i, w in enumerate(SPECIAL + WORDS)})
    assert tokenizer("john lives")["input_ids"] == [2, SPECIAL.__len__() + WORDS.index("john"),
                                                    len(SPECIAL) + WORDS.index("lives"), 3]
    config = transformers.T5Config(vocab_size=len(SPECIAL) + len(WORDS), d_model=32, d_kv=8, d_ff=37, num_layers=2,
                                   num_heads=4, decoder_start_token_id=0, pad_token_id=0,
                                   eos_token_id=tokenizer.sep_token_id, task_specific_params=TASK_PARAMS,
                                   feed_forward_proj="gated-gelu", tie_word_embeddings=False)
    model = parity.torch_reference(transformers.T5ForConditionalGeneration, config)
    with torch.no_grad():  # a sharp separate LM head, so generations are varied words rather than one repeated id
        g = torch.Generator().manual_seed(7)
        head = torch.randn(model.lm_head.weight.shape, generator=g) * 4
        head[[0, 1, 2, 4]] = 0  # [PAD] [UNK] [CLS] [MASK] are never the best; [SEP] (EOS) rarely
        head[3] *= 0.3
        model.lm_head.weight = torch.nn.Parameter(head)
    directory = str(tmp_path_factory.mktemp("t5"))
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return model, tokenizer, directory


def torch_texts(model, tokenizer, text, prefix="", **generate_kwargs):
    ids = tokenizer(prefix + text, return_tensors="pt", return_token_type_ids=False)
    with torch.no_grad():
        out = model.generate(**ids, **generate_kwargs)
    return [tokenizer.decode(row, skip_special_tokens=True) for row in out]


TEXTS = ["john lives in paris", "the cat sat on a mat . what is the dog ?"]


@pytest.mark.parametrize("task, key, params", [
    ("text2text-generation", "generated_text", {}),
    ("summarization", "summary_text", TASK_PARAMS["summarization"]),
    ("translation_en_to_fr", "translation_text", TASK_PARAMS["translation_en_to_fr"]),
    ("translation_en_to_de", "translation_text", TASK_PARAMS["translation_en_to_de"]),
])
def test_seq2seq_pipelines_follow_hf_format_and_torch_tokens(t5_dir, task, key, params):
    model, tokenizer, directory = t5_dir
    pipe = pipeline(task, model=directory)
    # the task's task_specific_params (prefix, max_length, beams) are the pipeline's defaults
    gen = {k: v for k, v in params.items() if k != "prefix"} if params else {"max_new_tokens": 6}
    call = {} if params else {"max_new_tokens": 6}
    expected = [torch_texts(model, tokenizer, t, params.get("prefix", ""), **gen) for t in TEXTS]
    assert all(e[0].strip() for e in expected), expected  # real words, so the comparison means something
    assert pipe(TEXTS[0], **call) == [{key: expected[0][0]}]
    assert pipe(TEXTS, **call) == [{key: e[0]} for e in expected]


def test_text2text_num_return_sequences_and_token_ids(t5_dir):
    model, tokenizer, directory = t5_dir
    pipe = pipeline("text2text-generation", model=directory)
    kwargs = dict(num_beams=3, num_return_sequences=2, max_new_tokens=5)
    expected = torch_texts(model, tokenizer, TEXTS[1], **kwargs)
    assert pipe(TEXTS[1], **kwargs) == [{"generated_text": t} for t in expected]
    assert pipe(TEXTS, **kwargs)[1] == [{"generated_text": t} for t in expected]
    ids = pipe(TEXTS[0], return_tensors=True, max_new_tokens=4)[0]["generated_token_ids"]
    with torch.no_grad():
        ref = model.generate(**tokenizer(TEXTS[0], return_tensors="pt", return_token_type_ids=False),
                             max_new_tokens=4)[0].numpy()
    np.testing.assert_array_equal(np.asarray(ids), ref)


def test_translation_task_name_must_be_xx_to_yy(t5_dir):
    _, _, directory = t5_dir
    with pytest.raises(KeyError):
        pipeline("translation_en_fr", model=directory)
