"""The T5 / CLIP / Stable Diffusion text-encoder snippets of docs/t5_clip.md (and the README's copy of the SDXL one)
run *as written*, from a directory that holds tiny checkpoints under the snippets' names, and give torch's numbers.

The checkpoints are tiny random models saved by torch `transformers`; the tokenizers are tiny too (a character-level
CLIP BPE, a word-level T5 stand-in), since the real ones cannot be downloaded here.
"""

import io
import json
import os
import re
import string
from contextlib import redirect_stdout

import numpy as np
import pytest
import torch
import transformers
from PIL import Image
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

from tests import parity

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORDS = ("studies have been shown that owning a dog is good for you show dogs are the walks in park cute photo of "
         "cat").split()


def python_blocks(path, must_contain=None):
    with open(path) as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), re.S)
    return [b for b in blocks if must_contain is None or must_contain in b]


def save_clip_tokenizer(directory):
    # character-level BPE: every letter is a token, "x</w>" ends a word; no merges
    os.makedirs(directory, exist_ok=True)
    letters = list(string.ascii_lowercase)
    vocab = ["<|startoftext|>", "<|endoftext|>"] + letters + [c + "</w>" for c in letters]
    with open(os.path.join(directory, "vocab.json"), "w") as f:
        json.dump({w: i for i, w in enumerate(vocab)}, f)
    with open(os.path.join(directory, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n")
    return transformers.CLIPTokenizer.from_pretrained(directory)


def save_t5_tokenizer(directory):
    vocab = {w: i for i, w in enumerate(["<pad>", "</s>", "<unk>"] + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                                unk_token="<unk>")
    fast.save_pretrained(directory)


def clip_text_config(**extra):
    return dict(vocab_size=60, hidden_size=32, intermediate_size=37, num_hidden_layers=3, num_attention_heads=4,
                max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1, projection_dim=16, **extra)


def t5_config(**extra):
    return transformers.T5Config(vocab_size=40, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                                 relative_attention_num_buckets=8, relative_attention_max_distance=12,
                                 decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, **extra)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A directory laid out like the snippets' checkpoint names; returns (path, torch models by name)."""
    root = tmp_path_factory.mktemp("snippets")
    made = {}

    def save(name, model):
        model.save_pretrained(root / name)
        made[name] = model.eval()

    sdxl = "stable-diffusion-xl-base-1.0"
    save_clip_tokenizer(str(root / sdxl / "tokenizer"))
    save(f"{sdxl}/text_encoder", parity.torch_reference(transformers.CLIPTextModel,
                                                        transformers.CLIPTextConfig(**clip_text_config()), seed=1))
    save(f"{sdxl}/text_encoder_2", parity.torch_reference(
        transformers.CLIPTextModelWithProjection,
        transformers.CLIPTextConfig(**clip_text_config(hidden_act="gelu")), seed=2))

    clip_config = transformers.CLIPConfig(
        text_config=clip_text_config(), projection_dim=16,
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8))
    save("clip-vit-large-patch14", parity.torch_reference(transformers.CLIPModel, clip_config, seed=3))
    processor = transformers.CLIPProcessor(
        image_processor=transformers.CLIPImageProcessor(size={"shortest_edge": 32},
                                                        crop_size={"height": 32, "width": 32}),
        tokenizer=save_clip_tokenizer(str(root / "clip-vit-large-patch14")))
    processor.save_pretrained(root / "clip-vit-large-patch14")

    save_t5_tokenizer(str(root / "t5-small"))
    save("t5-small", parity.torch_reference(transformers.T5Model, t5_config(feed_forward_proj="relu"), seed=4))
    save("t5-v1_1-xxl", parity.torch_reference(
        transformers.T5EncoderModel, t5_config(feed_forward_proj="gated-gelu", tie_word_embeddings=False), seed=5))
    flan = parity.torch_reference(transformers.T5ForConditionalGeneration,
                                  t5_config(feed_forward_proj="gated-gelu", tie_word_embeddings=False), seed=6)
    flan.lm_head.weight = torch.nn.Parameter(torch.randn(flan.lm_head.weight.shape,
                                                         generator=torch.Generator().manual_seed(6)))
    save("flan-t5-large", flan)
    return root, made


def run(block, directory, **namespace):
    cwd = os.getcwd()
    os.chdir(directory)
    out = io.StringIO()
    try:
        with redirect_stdout(out):
            exec(compile(block, "<snippet>", "exec"), namespace)
    finally:
        os.chdir(cwd)
    return namespace, out.getvalue()


@pytest.mark.parametrize("doc", ["docs/t5_clip.md", "README.md"])
def test_sdxl_text_encoder_snippet(workdir, doc):
    root, torch_models = workdir
    (block,) = python_blocks(os.path.join(ROOT, doc), must_contain="text_encoder_2")
    ns, _ = run(block, root)
    ids = torch.from_numpy(np.asarray(ns["ids"]))
    with torch.no_grad():
        ref = torch_models["stable-diffusion-xl-base-1.0/text_encoder"](ids, output_hidden_states=True)
        ref_2 = torch_models["stable-diffusion-xl-base-1.0/text_encoder_2"](ids, output_hidden_states=True)
    assert parity.rel_error(ns["prompt_embeds"], ref.hidden_states[-2]) <= parity.FP32_BAR
    assert parity.rel_error(ns["pooled_prompt_embeds"], ref_2.text_embeds) <= parity.FP32_BAR


def test_clip_zero_shot_snippet(workdir):
    root, torch_models = workdir
    (block,) = python_blocks(os.path.join(ROOT, "docs/t5_clip.md"), must_contain="CLIPProcessor")
    rng = np.random.RandomState(0)
    image = Image.fromarray(rng.randint(0, 255, (48, 40, 3), dtype=np.uint8))
    ns, _ = run(block, root, image=image)
    inputs = {k: torch.from_numpy(np.asarray(v)) for k, v in ns["inputs"].items()}
    with torch.no_grad():
        ref = torch_models["clip-vit-large-patch14"](**inputs)
        ref_features = torch_models["clip-vit-large-patch14"].get_image_features(
            pixel_values=inputs["pixel_values"]).pooler_output
    assert parity.rel_error(ns["probs"], ref.logits_per_image.softmax(dim=1)) <= parity.FP32_BAR
    assert parity.rel_error(ns["image_features"], ref_features) <= parity.FP32_BAR


def test_t5_snippet(workdir):
    root, torch_models = workdir
    (block,) = python_blocks(os.path.join(ROOT, "docs/t5_clip.md"), must_contain="T5EncoderModel")
    ns, printed = run(block, root)
    input_ids = torch.from_numpy(np.asarray(ns["input_ids"]))
    with torch.no_grad():
        t5 = torch_models["t5-small"]
        ref = t5(input_ids=input_ids, decoder_input_ids=t5._shift_right(torch.from_numpy(
            ns["tokenizer"]("Studies show that", return_tensors="np").input_ids))).last_hidden_state
        ref_xxl = torch_models["t5-v1_1-xxl"](input_ids=input_ids).last_hidden_state
        ref_out = torch_models["flan-t5-large"].generate(input_ids, max_new_tokens=20, num_beams=4)
    assert parity.rel_error(ns["last_hidden_states"], ref) <= parity.FP32_BAR
    assert parity.rel_error(ns["prompt_embeds"], ref_xxl) <= parity.FP16_BAR  # the snippet loads it in float16
    np.testing.assert_array_equal(parity.to_numpy(ns["out"]), ref_out.numpy())
    assert printed.strip() == str(ns["tokenizer"].batch_decode(ref_out.numpy(), skip_special_tokens=True))
    assert np.isfinite(parity.to_numpy(ns["loss"])).all()
