"""Shared fixtures for generation tests: tiny random Llamas (torch reference + ours) and a tiny byte-level tokenizer."""

import numpy as np
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from mindone.transformers import LlamaForCausalLM
from tests import parity

VOCAB = 320
BOS, EOS, PAD = 1, 2, 0
CHAT_TEMPLATE = ("{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<s>assistant:{% endif %}")
CORPUS = ["The capital of France is Paris. The capital of Germany is Berlin.",
          "Once upon a time there was a small model that liked to generate text.",
          "def generate(model, tokens):\n    return model(tokens)\n", "1 2 3 4 5 6 7 8 9 10, stop here. END"] * 20


def llama_config(**overrides):
    base = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=128, bos_token_id=BOS, eos_token_id=EOS,
                pad_token_id=PAD, tie_word_embeddings=False)
    return transformers.LlamaConfig(**{**base, **overrides})


def tiny_llama_pair(directory, seed=0, **overrides):
    """(torch model, our model) with the same random weights; the torch model is saved to `directory`."""
    torch_model = parity.torch_reference(transformers.LlamaForCausalLM, llama_config(**overrides), seed=seed)
    # sharpen the random logits so greedy choices are not near-ties
    with torch.no_grad():
        torch_model.lm_head.weight.mul_(4.0)
    torch_model.generation_config.pad_token_id = PAD
    parity.save_torch(torch_model, str(directory))
    return torch_model, LlamaForCausalLM.from_pretrained(str(directory), dtype="float32")


def tiny_tokenizer():
    """A byte-level BPE tokenizer trained in memory (VOCAB ids, like GPT-2/SmolLM2 tokenizers)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                                eos_token="</s>", padding_side="left")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def left_padded_batch(seed=0, batch_size=3, length=8, pads=(0, 3, 5)):
    rng = np.random.RandomState(seed)
    ids = rng.randint(3, VOCAB, (batch_size, length)).astype(np.int64)
    mask = np.ones_like(ids)
    for row, n in enumerate(pads[:batch_size]):
        ids[row, :n] = PAD
        mask[row, :n] = 0
    return ids, mask
