"""image-text-to-text pipeline vs torch's on the same tiny LLaVA checkpoint and processor (a word-level tokenizer with
an `<image>` token + CLIPImageProcessor, with a chat template, saved to one directory; no hub)."""

import numpy as np
import pytest
import torch
import transformers
from PIL import Image
from tokenizers import Tokenizer, models, pre_tokenizers

from mindone.transformers import pipeline
from tests import parity
from tests.models.llava.test_modeling_llava import IMAGE_SIZE, IMAGE_TOKEN, VOCAB, make_config

SPECIAL = ["<pad>", "<s>", "</s>", "<unk>"]
WORDS = ["user", "assistant", ":", "what", "is", "this", "a", "cat", "dog", "describe", "the", "image", "photo"]
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }} : "
    "{% if m['content'] is string %}{{ m['content'] }} {% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image> {% else %}{{ c['text'] }} {% endif %}{% endfor %}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}assistant : {% endif %}"
)


def build_processor():
    filler = [f"w{i}" for i in range(VOCAB - len(SPECIAL) - len(WORDS) - 1)]
    vocab = {t: i for i, t in enumerate(SPECIAL + WORDS + filler + ["<image>"])}
    assert vocab["<image>"] == IMAGE_TOKEN
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                                     eos_token="</s>", unk_token="<unk>",
                                                     extra_special_tokens={"image_token": "<image>"})
    image_processor = transformers.CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                                                      crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    return transformers.LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=4,
                                       vision_feature_select_strategy="default", num_additional_image_tokens=1,
                                       chat_template=CHAT_TEMPLATE, image_token="<image>")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    config = make_config("clip", "llama")
    model = parity.torch_reference(transformers.LlavaForConditionalGeneration, config)
    directory = parity.save_torch(model, str(tmp_path_factory.mktemp("llava_pipe")))
    build_processor().save_pretrained(directory)
    return directory


def _image(seed, size=(20, 16)):
    rng = np.random.RandomState(seed)
    return Image.fromarray(rng.randint(0, 255, size + (3,), dtype=np.uint8))


@pytest.fixture(scope="module")
def pipes(model_dir):
    """(ours, torch's), built once: the compiled decode steps are reused across the calls."""
    return (pipeline("image-text-to-text", model=model_dir),
            transformers.pipeline("image-text-to-text", model=model_dir, dtype=torch.float32))


def test_chat_with_images_matches_torch_pipeline(pipes, tmp_path):
    ours, ref = pipes
    path = tmp_path / "cat.png"
    _image(1).save(path)
    messages = [{"role": "user", "content": [{"type": "image", "path": str(path)},
                                             {"type": "text", "text": "describe the image"}]}]
    kwargs = dict(max_new_tokens=6, do_sample=False)
    out = ours(text=messages, **kwargs)
    expected = ref(text=messages, **kwargs)
    assert out == expected
    assert out[0]["generated_text"][-1]["role"] == "assistant"
    # two chats (one with an image given as a PIL image, one text-only), new text only
    chats = [[{"role": "user", "content": [{"type": "image", "image": _image(2)}, {"type": "text", "text": "what"}]}],
             [{"role": "user", "content": [{"type": "text", "text": "what is this"}]}]]
    assert ours(text=chats, return_full_text=False, **kwargs) == ref(text=chats, return_full_text=False, **kwargs)


def test_image_and_prompt_matches_torch_pipeline(pipes, model_dir):
    ours, ref = pipes
    image = _image(3, size=(14, 30))
    # generation parameters go as `generate_kwargs` per call or to the pipeline at construction (as in HF); beam
    # search with images is checked in tests/models/llava
    kwargs = dict(generate_kwargs={"max_new_tokens": 4, "repetition_penalty": 1.5})
    assert ours(images=image, text="<image> what is this", **kwargs) == \
        ref(images=image, text="<image> what is this", **kwargs)
    beams = pipeline("image-text-to-text", model=model_dir, num_beams=2)
    assert beams._init_generate_kwargs == {"num_beams": 2}
    tensors = ours(images=image, text="<image> what is this", max_new_tokens=3, return_tensors=True)
    expected = ref(images=image, text="<image> what is this", max_new_tokens=3, return_tensors=True)
    np.testing.assert_array_equal(tensors[0]["generated_token_ids"], expected[0]["generated_token_ids"].numpy())
