"""`mindone-transformers chat --image PATH` on a tiny LLaVA + processor saved to a temp dir: the reply is torch's
greedy continuation of the same chat-templated prompt with the image."""

import io
import logging
import sys

import numpy as np
import pytest
import torch
import transformers

from mindone.transformers.cli import main
from tests import parity
from tests.models.llava.test_modeling_llava import make_config
from tests.pipelines.test_pipelines_image_text_to_text import _image, build_processor


def run_cli(argv, stdin, monkeypatch, capsys):
    """The command line in this process (a subprocess would import MindSpore again): (status, stdout, stderr)."""
    loggers = [logging.getLogger(n) for n in ("mindone.transformers", "transformers")]
    saved = [(lg, list(lg.handlers), lg.level) for lg in loggers]
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    try:
        status = main(argv)
    finally:
        for lg, handlers, level in saved:
            lg.handlers[:] = handlers
            lg.setLevel(level)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture(scope="module")
def vlm_dir(tmp_path_factory):
    model = parity.torch_reference(transformers.LlavaForConditionalGeneration, make_config("clip", "llama"))
    directory = parity.save_torch(model, str(tmp_path_factory.mktemp("llava_cli")))
    build_processor().save_pretrained(directory)
    return directory, model


def test_chat_with_an_image_replies_as_torch_generates(vlm_dir, tmp_path, monkeypatch, capsys):
    directory, torch_model = vlm_dir
    image = tmp_path / "photo.png"
    _image(4).save(image)
    status, stdout, stderr = run_cli(["chat", "--model", directory, "--image", str(image), "--max-new-tokens", "5"],
                                     "describe the image\nexit\n", monkeypatch, capsys)
    assert status == 0, stderr[-3000:]
    processor = build_processor()
    messages = [{"role": "user", "content": [{"type": "image", "path": str(image)},
                                             {"type": "text", "text": "describe the image"}]}]
    inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt")
    with torch.no_grad():
        out = torch_model.generate(**inputs, max_new_tokens=5, do_sample=False)
    expected = processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert stdout.strip() == expected.strip() and expected.strip()
    assert np.sum(inputs["input_ids"].numpy() == processor.tokenizer.convert_tokens_to_ids("<image>")) == 9


def test_image_errors_are_usage_errors(vlm_dir, tmp_path, monkeypatch, capsys):
    directory, _ = vlm_dir
    status, _, stderr = run_cli(["chat", "--model", directory, "--image", str(tmp_path / "missing.png")], "hi\n",
                                monkeypatch, capsys)
    assert status == 2 and "--image" in stderr and "no such file" in stderr


def test_chat_with_an_image_on_qwen2_vl_replies_as_torch_generates(tmp_path, monkeypatch, capsys):
    """Qwen2-VL's processor outputs (patch grids, mm_token_type_ids) reach generate(). HF's Qwen2VLProcessor needs
    torchvision for its video part, so AutoProcessor gives the image-only processor of the pipeline test."""
    from tests.models.qwen2_vl.test_modeling_qwen2_vl import make_config as qwen2_vl_config
    from tests.pipelines.test_pipelines_image_text_to_text_qwen2_vl import build_processor as qwen2_vl_processor

    model = parity.torch_reference(transformers.Qwen2VLForConditionalGeneration, qwen2_vl_config(), seed=5)
    directory = parity.save_torch(model, str(tmp_path / "qwen2_vl"))
    monkeypatch.setattr(transformers.AutoProcessor, "from_pretrained", lambda *a, **k: qwen2_vl_processor())
    image = tmp_path / "photo.png"
    _image(6).save(image)
    status, stdout, stderr = run_cli(["chat", "--model", directory, "--image", str(image), "--max-new-tokens", "5"],
                                     "describe the image\nexit\n", monkeypatch, capsys)
    assert status == 0, stderr[-3000:]
    processor = qwen2_vl_processor()
    messages = [{"role": "user", "content": [{"type": "image", "path": str(image)},
                                             {"type": "text", "text": "describe the image"}]}]
    inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt")
    assert "image_grid_thw" in inputs and "mm_token_type_ids" in inputs
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    expected = processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert stdout.strip() == expected.strip() and expected.strip()
