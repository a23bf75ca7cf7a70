"""The `mindone-transformers` command line end to end, on a tiny random Llama + tokenizer saved to a temp dir."""

import os
import re
import shutil
import subprocess
import sys

import pytest

from mindone.transformers import LlamaForCausalLM
from mindone.transformers.cli import build_parser, encode_prompt
from tests.generation.helpers import tiny_llama_pair, tiny_tokenizer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny-llama")
    tiny_llama_pair(directory, seed=2)
    tiny_tokenizer().save_pretrained(str(directory))
    return str(directory)


def run_cli(args, stdin=None):
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO, "src"))
    return subprocess.run([sys.executable, "-m", "mindone.transformers"] + args, input=stdin, capture_output=True,
                          text=True, env=env, timeout=600)


def expected_text(directory, prompt, max_new_tokens, raw=False):
    tokenizer = tiny_tokenizer()
    args = build_parser().parse_args(["generate", "--prompt", prompt] + (["--raw"] if raw else []))
    ids = encode_prompt(tokenizer, prompt, args)
    model = LlamaForCausalLM.from_pretrained(directory)
    out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False, cache_implementation="dynamic",
                         pad_token_id=tokenizer.eos_token_id).asnumpy()
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True), ids.shape[1]


def test_generate_streams_the_greedy_text_to_stdout_and_a_summary_to_stderr(tiny_dir):
    """Prompt from stdin, wrapped in the tokenizer's chat template."""
    result = run_cli(["generate", "--model", tiny_dir, "--max-new-tokens", "12", "--no-compile"],
                     stdin="The capital of France")
    assert result.returncode == 0, result.stderr[-3000:]
    text, prompt_len = expected_text(tiny_dir, "The capital of France", 12)
    assert result.stdout == text + "\n"
    summary = [line for line in result.stderr.splitlines() if line.startswith("[")][-1]
    assert f"{prompt_len} prompt tokens" in summary and "12 new tokens" in summary and "tok/s" in summary


def test_chat_keeps_the_history(tiny_dir):
    result = run_cli(["chat", "--model", tiny_dir, "--max-new-tokens", "5", "--no-compile", "-v"],
                     stdin="Hello there\n/reset\nHello there\nAnd then?\n")
    assert result.returncode == 0, result.stderr[-3000:]
    prompt_sizes = [int(n) for n in re.findall(r"\[(\d+) prompt tokens", result.stderr)]
    assert len(prompt_sizes) == 3
    assert prompt_sizes[0] == prompt_sizes[1], "/reset must clear the history"
    assert prompt_sizes[2] > prompt_sizes[1] + 5, "the second turn must include the first exchange"


def test_bad_arguments_exit_with_an_error():
    result = run_cli(["generate", "--num-beams", "x"])
    assert result.returncode == 2 and "invalid int value" in result.stderr


def assert_one_line_usage_error(result, named):
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], result.stderr[-3000:]


@pytest.mark.parametrize("args, named", [
    (["--model", "/nonexistent/model-dir"], "--model /nonexistent/model-dir: no such file or directory"),
    (["--dtype", "float99"], "argument --dtype: invalid choice: 'float99'"),
    (["--max-new-tokens", "0"], "argument --max-new-tokens: must be >= 1, got 0"),
    (["--temperature", "-1"], "argument --temperature: must be >= 0"),
    (["--top-p", "0"], "argument --top-p: must be in (0, 1]"),
])
def test_usage_errors_are_one_line_with_status_2_before_anything_loads(args, named):
    result = run_cli(["generate", "--prompt", "hi"] + args)
    assert_one_line_usage_error(result, named)


@pytest.mark.parametrize("args, named", [
    (["--rank", "0"], "argument --rank: must be >= 1, got 0"),
    (["--dropout", "2"], "argument --dropout: must be in [0, 1]"),
    (["--learning-rate", "-1"], "argument --learning-rate: must be > 0"),
    (["--iters", "0"], "argument --iters: must be >= 1"),
])
def test_lora_option_values_are_checked_with_status_2(args, named):
    result = run_cli(["lora", "--data", "train.jsonl"] + args)
    assert_one_line_usage_error(result, named)


@pytest.mark.parametrize("args, named", [
    (["--model", "/nonexistent/model-dir"], "--model /nonexistent/model-dir: no such file or directory"),
    (["--dtype", "half"], "argument --dtype: invalid choice: 'half'"),
    (["--temperature", "-1"], "argument --temperature: must be >= 0"),
    (["--port", "0"], "argument --port: must be in [1, 65535]"),
])
def test_serve_usage_errors_are_one_line_with_status_2(args, named):
    result = run_cli(["serve"] + args)
    assert_one_line_usage_error(result, named)


def test_a_model_directory_of_gguf_files_without_gguf_file_is_a_usage_error(tmp_path):
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    result = run_cli(["generate", "--prompt", "hi", "--model", str(tmp_path)])
    assert result.returncode == 2 and "pass --gguf-file NAME" in result.stderr and "m.gguf" in result.stderr


def test_a_truncated_checkpoint_is_one_error_line_naming_the_file_with_status_1(tiny_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_dir, broken)
    weights = broken / "model.safetensors"
    with open(weights, "r+b") as f:
        f.truncate(weights.stat().st_size // 2)
    result = run_cli(["generate", "--prompt", "hi", "--model", str(broken), "--no-compile"])
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("error: ") and str(weights) in error and "truncated" in error


def test_verbose_adds_the_traceback_to_a_runtime_error(tmp_path):
    from tests.weights.test_gguf_io import write_tiny_gguf

    write_tiny_gguf(tmp_path / "full.gguf")
    data = (tmp_path / "full.gguf").read_bytes()
    (tmp_path / "cut.gguf").write_bytes(data[: len(data) - 1000])
    quiet = run_cli(["generate", "--prompt", "hi", "--model", str(tmp_path / "cut.gguf")])
    loud = run_cli(["generate", "--prompt", "hi", "--model", str(tmp_path / "cut.gguf"), "-v"])
    for result in (quiet, loud):
        assert result.returncode == 1, result.stderr[-3000:]
        error = result.stderr.strip().splitlines()[-1]
        assert error.startswith("error: ") and "cut.gguf" in error and "truncated" in error
    assert "Traceback" not in quiet.stderr and "-v shows the traceback" in quiet.stderr
    assert "Traceback (most recent call last)" in loud.stderr


@pytest.mark.slow
def test_generate_on_the_default_smollm2():
    result = run_cli(["generate", "--prompt", "What is the capital of France?", "--max-new-tokens", "20"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Paris" in result.stdout
    assert re.search(r"decode \d+\.\d tok/s", result.stderr)

