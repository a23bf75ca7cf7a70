"""Fixtures for the weights tests: torch is the reference writer and reader only."""

import pytest


@pytest.fixture
def mixed_torch_state():
    import torch

    generator = torch.Generator().manual_seed(0)
    return {
        "fp32": torch.randn(5, 7, generator=generator),
        "fp16": torch.randn(3, 4, generator=generator).half(),
        "bf16": torch.randn(6, 2, generator=generator).bfloat16(),
        "int64": torch.arange(-3, 9, dtype=torch.int64).reshape(3, 4),
        "int8": torch.tensor([-128, 0, 127], dtype=torch.int8),
        "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 3),
    }


@pytest.fixture(scope="session")
def tiny_llama_config():
    import transformers

    return transformers.LlamaConfig(
        vocab_size=96,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )


@pytest.fixture(scope="session")
def tiny_llama(tiny_llama_config):
    import torch
    import transformers

    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(tiny_llama_config).eval()
