"""`mindone-transformers lora / fuse / generate --adapter` end to end on a tiny random Llama + tokenizer."""

import json
import os

import numpy as np
import peft
import pytest
import torch
import transformers

from mindone.transformers import LlamaForCausalLM
from mindone.transformers.cli_lora import IGNORE_INDEX, build_rows, encode_row
from tests import parity
from tests.generation.helpers import tiny_llama_pair, tiny_tokenizer
from tests.test_cli import run_cli

QA = [("What is the capital of France?", "Paris."), ("What is the capital of Spain?", "Madrid."),
      ("What is the capital of Italy?", "Rome."), ("What is the capital of Peru?", "Lima.")]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora-cli")
    model_dir = root / "model"
    tiny_llama_pair(model_dir, seed=5)
    tiny_tokenizer().save_pretrained(str(model_dir))
    data = root / "data"
    data.mkdir()
    with open(data / "train.jsonl", "w") as f:
        for q, a in QA * 2:
            f.write(json.dumps({"prompt": q, "completion": a}) + "\n")
    with open(data / "valid.jsonl", "w") as f:
        f.write(json.dumps({"messages": [{"role": "user", "content": QA[0][0]},
                                         {"role": "assistant", "content": QA[0][1]}]}) + "\n")
    return root


def test_prompt_masking_keeps_only_the_answer_in_the_labels():
    tokenizer = tiny_tokenizer()
    row = {"prompt": QA[0][0], "completion": QA[0][1]}
    ids, offset = encode_row(tokenizer, row, mask_prompt=True)
    messages = [{"role": "user", "content": QA[0][0]}, {"role": "assistant", "content": QA[0][1]}]
    assert ids == list(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False))
    prompt = tokenizer.apply_chat_template(messages[:1], add_generation_prompt=True, tokenize=True, return_dict=False)
    assert offset == len(prompt) > 0
    assert encode_row(tokenizer, row, mask_prompt=False)[1] == 0
    text_ids, _ = encode_row(tokenizer, {"text": "hello world"}, mask_prompt=False)
    assert text_ids[-1] == tokenizer.eos_token_id
    with pytest.raises(SystemExit, match="a row needs"):
        encode_row(tokenizer, {"question": "?"}, mask_prompt=False, where="x.jsonl:3")


def test_rows_are_padded_to_one_shape_with_masked_labels(workspace):
    tokenizer = tiny_tokenizer()
    rows = build_rows(tokenizer, str(workspace / "data" / "train.jsonl"), mask_prompt=True, max_seq_length=2048)
    assert len({r["input_ids"].shape for r in rows}) == 1
    for r in rows:
        trained = r["labels"] != IGNORE_INDEX
        assert trained.any() and not trained[0]
        assert np.array_equal(r["labels"][trained], r["input_ids"][trained])
        assert not (trained & (r["attention_mask"] == 0)).any()


@pytest.mark.slow
def test_lora_fuse_and_generate_with_adapter(workspace):
    model_dir, adapter = str(workspace / "model"), str(workspace / "adapters")
    result = run_cli(["lora", "--model", model_dir, "--data", str(workspace / "data"), "--iters", "6",
                      "--batch-size", "4", "--learning-rate", "3e-2", "--steps-per-eval", "3", "--steps-per-report",
                      "2", "--mask-prompt", "--rank", "4", "--adapter-path", adapter])
    assert result.returncode == 0, result.stderr[-3000:]
    val = [float(line.rsplit(" ", 1)[1]) for line in result.stdout.splitlines() if "Val loss" in line]
    assert len(val) == 3 and val[-1] < val[0], result.stdout
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(os.listdir(adapter))
    # torch peft loads what the CLI wrote, and agrees with our model + adapter
    ids = np.asarray([[5, 9, 14, 3, 22, 7]], np.int64)
    ours = LlamaForCausalLM.from_pretrained(model_dir)
    ours.load_adapter(adapter)
    reference = peft.PeftModel.from_pretrained(transformers.LlamaForCausalLM.from_pretrained(model_dir), adapter)
    with torch.no_grad():
        expected = reference.eval()(input_ids=torch.from_numpy(ids)).logits.numpy()
    assert parity.rel_error(ours(input_ids=ids).logits, expected) <= parity.FP32_BAR

    fused = str(workspace / "fused")
    result = run_cli(["fuse", "--model", model_dir, "--adapter", adapter, "--save-path", fused])
    assert result.returncode == 0, result.stderr[-3000:]
    torch_fused = transformers.LlamaForCausalLM.from_pretrained(fused, attn_implementation="eager").eval()
    with torch.no_grad():
        assert parity.rel_error(torch_fused(input_ids=torch.from_numpy(ids)).logits.numpy(), expected) <= 1e-5

    prompt = QA[1][0]
    with_adapter = run_cli(["generate", "--model", model_dir, "--adapter", adapter, "--prompt", prompt,
                            "--max-new-tokens", "6", "--no-compile"])
    from_fused = run_cli(["generate", "--model", fused, "--prompt", prompt, "--max-new-tokens", "6", "--no-compile"])
    assert with_adapter.returncode == 0 and from_fused.returncode == 0, with_adapter.stderr[-2000:]
    assert with_adapter.stdout == from_fused.stdout
