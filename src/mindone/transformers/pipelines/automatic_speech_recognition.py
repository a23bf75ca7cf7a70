"""automatic-speech-recognition: audio -> feature extractor -> model -> {"text": ...} (HF's format).

Whisper decodes with `model.generate`; CTC models (Wav2Vec2ForCTC) take the argmax of every frame's logits and the
CTC tokenizer collapses repeats and blanks. Long audio is cut into overlapping chunks (`chunk_length_s`,
`stride_length_s`) exactly as HF cuts it; CTC chunks drop the frames of their overlaps before the tokens are joined.

Audio inputs: a 1-D float array at the feature extractor's sampling rate, a dict {"raw" or "array": samples,
"sampling_rate": rate}, a path to a PCM WAV file (read with the standard `wave` module), or the file's bytes.
Other sampling rates are resampled by linear interpolation (HF uses a polyphase filter through torchaudio/librosa,
so resampled inputs can give slightly different features).
"""

import io
import wave

import mindspore as ms
import numpy as np

from .base import Pipeline


def read_wav(source):
    """(mono float32 samples in [-1, 1], sampling rate) of a PCM WAV file path, file object or bytes."""
    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    with wave.open(source, "rb") as f:
        width, channels, rate = f.getsampwidth(), f.getnchannels(), f.getframerate()
        frames = f.readframes(f.getnframes())
    if width == 1:
        audio = (np.frombuffer(frames, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        audio = np.frombuffer(frames, "<i2").astype(np.float32) / 32768.0
    elif width == 3:
        raw = np.frombuffer(frames, np.uint8).reshape(-1, 3)
        ints = (raw[:, 0].astype(np.int32) | (raw[:, 1].astype(np.int32) << 8) | (raw[:, 2].astype(np.int32) << 16))
        audio = (np.where(ints >= 1 << 23, ints - (1 << 24), ints)).astype(np.float32) / float(1 << 23)
    elif width == 4:
        audio = np.frombuffer(frames, "<i4").astype(np.float32) / float(1 << 31)
    else:
        raise ValueError(f"unsupported WAV sample width: {width} bytes")
    if channels > 1:
        audio = audio.reshape(-1, channels).mean(1)
    return audio, rate


def resample(audio, rate, target_rate):
    """Linear-interpolation resampling of a 1-D signal from `rate` to `target_rate`."""
    if rate == target_rate:
        return audio.astype(np.float32)
    n_out = int(round(len(audio) * target_rate / rate))
    positions = np.arange(n_out, dtype=np.float64) * rate / target_rate
    return np.interp(positions, np.arange(len(audio)), audio).astype(np.float32)


def load_audio(item, rate, pipeline_name):
    """A pipeline input (samples, {"raw"/"array", "sampling_rate"} dict, WAV path or bytes) as mono float32 samples
    at `rate`."""
    if isinstance(item, (str, bytes, bytearray)):
        audio, in_rate = read_wav(item)
    elif isinstance(item, dict):
        item = dict(item)
        in_rate = item.pop("sampling_rate", rate)
        audio = item.pop("raw", None)
        if audio is None:
            audio = item.pop("array", None)
        if audio is None:
            raise ValueError(f"When passing a dictionary to {pipeline_name}, the dict needs to contain a \"raw\" key "
                             "containing the numpy array or torch tensor representing the audio and a "
                             "\"sampling_rate\" key, containing the sampling_rate associated with that array")
        audio = np.asarray(audio, np.float32)
    else:
        audio, in_rate = np.asarray(item, np.float32), rate
    if audio.ndim != 1:
        raise ValueError(f"We expect a single channel audio input for {pipeline_name}, got shape {audio.shape}")
    return resample(np.asarray(audio, np.float32), in_rate, rate)


class AutomaticSpeechRecognitionPipeline(Pipeline):
    """Transcribes audio with a Whisper or a CTC model: each input gives {"text": transcript}.

    Call arguments: `chunk_length_s` (split longer audio into overlapping chunks of this length; their tokens are
    merged as HF merges them), `stride_length_s` (overlap on each side, default chunk_length_s / 6),
    `return_timestamps` (CTC: "char" or "word", adding HF's "chunks" list; Whisper: not supported yet),
    `generate_kwargs` (dict for `model.generate`), `max_new_tokens`.
    Whisper decoding defaults to beam search with 5 beams, as in transformers 5.
    """

    task = "automatic-speech-recognition"
    # transformers 5's defaults for parameters that neither the call nor the model's generation config set
    # (num_beams=5 follows OpenAI's Whisper; max_new_tokens is not added when max_length is set, e.g. Whisper's 448)
    _default_generation = {"max_new_tokens": 256, "num_beams": 5}

    def __init__(self, model, tokenizer=None, feature_extractor=None, **kwargs):
        if feature_extractor is None:
            raise ValueError("automatic-speech-recognition needs a feature extractor: pass `feature_extractor=`")
        super().__init__(model, tokenizer=tokenizer, feature_extractor=feature_extractor, **kwargs)
        self.type = "ctc" if type(model).__name__.endswith("ForCTC") else "seq2seq_whisper"

    @property
    def _align_to(self):
        """Audio samples per output frame (chunk and stride lengths are rounded to a multiple of it)."""
        return getattr(self.model.config, "inputs_to_logits_ratio", 1)

    def _is_single(self, inputs):
        # a plain list of samples is one waveform
        return len(inputs) > 0 and np.isscalar(inputs[0])

    def _sanitize_parameters(self, chunk_length_s=None, stride_length_s=None, return_timestamps=None,
                             return_language=None, generate_kwargs=None, max_new_tokens=None, **kwargs):
        if kwargs:
            raise TypeError(f"{type(self).__name__} got unexpected arguments: {sorted(kwargs)}")
        if self.type == "ctc":
            return self._sanitize_ctc(chunk_length_s, stride_length_s, return_timestamps, return_language,
                                      generate_kwargs, max_new_tokens)
        if return_timestamps:
            raise NotImplementedError("return_timestamps is not supported by mindone.transformers' "
                                      "automatic-speech-recognition pipeline yet")
        if return_language:
            raise NotImplementedError("return_language is not supported by mindone.transformers' "
                                      "automatic-speech-recognition pipeline yet")
        generate_kwargs = dict(generate_kwargs or {})
        if max_new_tokens is not None:
            if "max_new_tokens" in generate_kwargs:
                raise ValueError("`max_new_tokens` is defined both as an argument and inside `generate_kwargs` "
                                 "argument, please use only 1 version")
            generate_kwargs["max_new_tokens"] = max_new_tokens
        set_params = {**self.model.generation_config.to_diff_dict(), **generate_kwargs}
        for key, value in self._default_generation.items():
            if key not in set_params and not (key == "max_new_tokens" and "max_length" in set_params):
                generate_kwargs[key] = value
        self._generate_kwargs = generate_kwargs
        pre = {"chunk_length_s": chunk_length_s, "stride_length_s": stride_length_s}
        return pre, {}

    def _load(self, item):
        return load_audio(item, self.feature_extractor.sampling_rate, type(self).__name__)

    def _sanitize_ctc(self, chunk_length_s, stride_length_s, return_timestamps, return_language, generate_kwargs,
                      max_new_tokens):
        if return_language is not None:
            raise ValueError("Only Whisper can return language for now.")
        if generate_kwargs or max_new_tokens is not None:
            raise TypeError(f"{type(self).__name__}: a CTC model does not generate; got generate_kwargs / "
                            "max_new_tokens")
        if return_timestamps is not None and return_timestamps not in ("char", "word"):
            raise ValueError("CTC can either predict character level timestamps, or word level timestamps. "
                             "Set `return_timestamps='char'` or `return_timestamps='word'` as required.")
        pre = {"chunk_length_s": chunk_length_s, "stride_length_s": stride_length_s}
        return pre, {"return_timestamps": return_timestamps}

    def preprocess(self, item, chunk_length_s=None, stride_length_s=None):
        audio = self._load(item)
        if self.type == "ctc":
            return self._preprocess_ctc(audio, chunk_length_s, stride_length_s)
        extract = dict(sampling_rate=self.feature_extractor.sampling_rate, return_tensors="np")
        if not chunk_length_s:
            if audio.shape[0] > self.feature_extractor.n_samples:
                raise NotImplementedError(
                    f"audio longer than {self.feature_extractor.chunk_length} s needs Whisper's long-form decoding, "
                    "which mindone.transformers does not support yet: pass chunk_length_s=30")
            features = self.feature_extractor(audio, **extract)["input_features"]
            return {"input_features": np.asarray(features, np.float32)}
        if stride_length_s is None:
            stride_length_s = chunk_length_s / 6
        if isinstance(stride_length_s, (int, float)):
            stride_length_s = [stride_length_s, stride_length_s]
        rate = self.feature_extractor.sampling_rate
        chunk_len = int(round(chunk_length_s * rate))
        stride_left = int(round(stride_length_s[0] * rate))
        stride_right = int(round(stride_length_s[1] * rate))
        if chunk_len < stride_left + stride_right:
            raise ValueError("Chunk length must be superior to stride length")
        return [dict(part, input_features=np.asarray(self.feature_extractor(part.pop("chunk"), **extract)[
            "input_features"], np.float32)) for part in _chunks(audio, chunk_len, stride_left, stride_right)]

    def _preprocess_ctc(self, audio, chunk_length_s, stride_length_s):
        rate = self.feature_extractor.sampling_rate

        def extract(samples):
            out = self.feature_extractor(samples, sampling_rate=rate, return_tensors="np", return_attention_mask=True)
            return {"input_values": np.asarray(out["input_values"], np.float32),
                    "attention_mask": np.asarray(out["attention_mask"], np.int64)}

        if not chunk_length_s:
            return extract(audio)
        if stride_length_s is None:
            stride_length_s = chunk_length_s / 6
        if isinstance(stride_length_s, (int, float)):
            stride_length_s = [stride_length_s, stride_length_s]
        align_to = self._align_to
        chunk_len = int(round(chunk_length_s * rate / align_to) * align_to)
        stride_left = int(round(stride_length_s[0] * rate / align_to) * align_to)
        stride_right = int(round(stride_length_s[1] * rate / align_to) * align_to)
        if chunk_len < stride_left + stride_right:
            raise ValueError("Chunk length must be superior to stride length")
        return [dict(part, **extract(part.pop("chunk"))) for part in _chunks(audio, chunk_len, stride_left,
                                                                             stride_right)]

    def _run_ctc_batch(self, parts):
        # as HF's collate: right-pad the waveforms with the feature extractor's padding value and the masks with 0
        longest = max(p["input_values"].shape[-1] for p in parts)
        pad_value = getattr(self.feature_extractor, "padding_value", 0.0)

        def padded(name, value):
            return np.concatenate([np.pad(p[name], [(0, 0), (0, longest - p[name].shape[-1])], constant_values=value)
                                   for p in parts], 0)

        logits = self.model(input_values=ms.Tensor(padded("input_values", pad_value)),
                            attention_mask=ms.Tensor(padded("attention_mask", 0))).logits
        tokens = logits.astype(ms.float32).asnumpy().argmax(-1)
        results = []
        for i, p in enumerate(parts):
            item = {"tokens": tokens[i:i + 1]}
            if "stride" in p:
                item["stride"] = _rescale_stride(p["stride"], 1 / self._align_to)
            results.append(item)
        return results

    def _postprocess_ctc(self, outputs, return_timestamps=None):
        pieces = []
        for out in (outputs if isinstance(outputs, list) else [outputs]):
            tokens = out["tokens"]
            if "stride" in out:
                # the frames of the overlaps belong to the neighbouring chunks
                total, left, right = out["stride"]
                tokens = tokens[:, left:total - right]
            pieces.append(tokens)
        items = np.concatenate(pieces, 1).squeeze(0)
        text = self.tokenizer.decode(items, skip_special_tokens=False)
        if not return_timestamps:
            return {"text": text}
        offsets = self.tokenizer.decode(items, skip_special_tokens=False, output_char_offsets=True)["char_offsets"]
        if return_timestamps == "word":
            offsets = self.tokenizer._get_word_offsets(offsets, self.tokenizer.replace_word_delimiter_char)
        seconds = self._align_to / self.feature_extractor.sampling_rate
        chunks = [{"text": o[return_timestamps], "timestamp": (o["start_offset"] * seconds, o["end_offset"] * seconds)}
                  for o in offsets]
        return {"text": text, "chunks": chunks}

    def _run_batch(self, parts):
        if self.type == "ctc":
            return self._run_ctc_batch(parts)
        features = np.concatenate([p["input_features"] for p in parts], 0)
        sequences = self.model.generate(features, **self._generate_kwargs)
        sequences = sequences.asnumpy() if hasattr(sequences, "asnumpy") else np.asarray(sequences)
        return [dict(p, tokens=sequences[i:i + 1]) for i, p in enumerate(parts)]

    def postprocess(self, outputs, return_timestamps=None):
        if self.type == "ctc":
            return self._postprocess_ctc(outputs, return_timestamps)
        # as HF: Whisper's tokenizer decodes, and merges the tokens of overlapping chunks by their longest common
        # sequence; strides go to it in seconds
        rate = self.feature_extractor.sampling_rate
        model_outputs = []
        for out in (outputs if isinstance(outputs, list) else [outputs]):
            item = {"tokens": out["tokens"]}
            if "stride" in out:
                item["stride"] = tuple(n / rate for n in out["stride"])
            model_outputs.append(item)
        time_precision = self.feature_extractor.chunk_length / self.model.config.max_source_positions
        text, _ = self.tokenizer._decode_asr(model_outputs, return_timestamps=None, return_language=None,
                                             time_precision=time_precision)
        return {"text": text}


def _rescale_stride(stride, ratio):
    """(samples, left, right) of a chunk in output frames, rounded as HF rounds them."""
    input_n, left, right = stride
    token_n = int(round(input_n * ratio))
    return token_n, int(round(left / input_n * token_n)), int(round(right / input_n * token_n))


def _chunks(audio, chunk_len, stride_left, stride_right):
    """HF's chunk iterator: windows of `chunk_len` samples advancing by chunk_len - left - right, with the stride
    (window length, left overlap, right overlap) in samples; the first window has no left and the last no right."""
    step = chunk_len - stride_left - stride_right
    total = audio.shape[0]
    parts = []
    for start in range(0, total, step):
        end = start + chunk_len
        chunk = audio[start:end]
        left = 0 if start == 0 else stride_left
        is_last = end >= total
        right = 0 if is_last else stride_right
        if chunk.shape[0] > left:
            parts.append({"chunk": chunk, "stride": (chunk.shape[0], left, right)})
        if is_last:
            break
    return parts
