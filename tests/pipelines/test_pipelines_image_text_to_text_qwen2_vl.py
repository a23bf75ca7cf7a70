"""image-text-to-text pipeline vs torch's on the same tiny Qwen2-VL checkpoint and HF's Qwen2-VL processor (a
word-level tokenizer with the vision tokens + the image processor with tiny patches; no hub).

HF's Qwen2VLProcessor also wants a video processor, which needs torchvision (not installed here): the test builds the
processor with the image processor and tokenizer only, so HF's own image processing and placeholder expansion run."""

import numpy as np
import pytest
import torch
import transformers
from PIL import Image
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers.processing_utils import ProcessorMixin

from mindone.transformers import pipeline
from tests import parity
from tests.models.qwen2_vl.test_modeling_qwen2_vl import IMAGE, MERGE, PATCH, TEMPORAL, VOCAB, make_config

SPECIAL = ["<pad>", "<s>", "</s>", "<unk>"]
WORDS = ["user", "assistant", ":", "what", "is", "this", "a", "cat", "dog", "describe", "the", "image", "photo"]
VISION = ["<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }} : "
    "{% if m['content'] is string %}{{ m['content'] }} {% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|> <|image_pad|> <|vision_end|> {% else %}{{ c['text'] }} "
    "{% endif %}{% endfor %}{% endif %}{% endfor %}{% if add_generation_prompt %}assistant : {% endif %}"
)


class _ImageOnlyQwen2VLProcessor(transformers.Qwen2VLProcessor):
    """HF's Qwen2VLProcessor without its (torchvision-only) video processor."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        self.image_token, self.video_token = tokenizer.image_token, tokenizer.video_token
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)


def build_processor():
    filler = [f"w{i}" for i in range(VOCAB - len(SPECIAL) - len(WORDS) - len(VISION))]
    vocab = {t: i for i, t in enumerate(SPECIAL + WORDS + filler + VISION)}
    assert vocab["<|image_pad|>"] == IMAGE
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"})
    image_processor = transformers.Qwen2VLImageProcessorPil(min_pixels=64, max_pixels=256, patch_size=PATCH,
                                                            merge_size=MERGE, temporal_patch_size=TEMPORAL)
    return _ImageOnlyQwen2VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                      chat_template=CHAT_TEMPLATE)


def _image(seed, size):
    return Image.fromarray(np.random.RandomState(seed).randint(0, 255, size + (3,), dtype=np.uint8))


@pytest.fixture(scope="module")
def pipes(tmp_path_factory):
    config = make_config()
    model = parity.torch_reference(transformers.Qwen2VLForConditionalGeneration, config, seed=11)
    directory = parity.save_torch(model, str(tmp_path_factory.mktemp("qwen2_vl_pipe")))
    processor = build_processor()
    return (pipeline("image-text-to-text", model=directory, processor=processor),
            transformers.pipeline("image-text-to-text", model=directory, processor=processor, dtype=torch.float32))


def test_chat_with_images_matches_torch_pipeline(pipes):
    ours, ref = pipes
    kwargs = dict(max_new_tokens=5, do_sample=False)
    # images of different sizes give different patch grids (dynamic resolution)
    messages = [{"role": "user", "content": [{"type": "image", "image": _image(1, (20, 16))},
                                             {"type": "text", "text": "describe the image"}]}]
    out = ours(text=messages, **kwargs)
    assert out == ref(text=messages, **kwargs)
    assert out[0]["generated_text"][-1]["role"] == "assistant"
    two = [{"role": "user", "content": [{"type": "image", "image": _image(2, (12, 24))}, {"type": "text", "text": "a"},
                                        {"type": "image", "image": _image(3, (16, 16))},
                                        {"type": "text", "text": "what is this"}]}]
    assert ours(text=two, return_full_text=False, **kwargs) == ref(text=two, return_full_text=False, **kwargs)


def test_image_and_prompt_token_ids_match_torch_pipeline(pipes):
    ours, ref = pipes
    image = _image(4, (14, 30))
    prompt = "<|vision_start|> <|image_pad|> <|vision_end|> what is this"
    tensors = ours(images=image, text=prompt, max_new_tokens=4, return_tensors=True)
    expected = ref(images=image, text=prompt, max_new_tokens=4, return_tensors=True)
    np.testing.assert_array_equal(tensors[0]["generated_token_ids"], expected[0]["generated_token_ids"].numpy())
