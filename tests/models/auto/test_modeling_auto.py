"""Auto classes: config.model_type -> our class, lazily imported, with HF's loading behaviour."""

import subprocess
import sys

import numpy as np
import pytest
import transformers

import mindspore as ms
import mindone.transformers as mt
from mindone.transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    BertForMaskedLM,
    BertForSequenceClassification,
    BertModel,
    LlamaForCausalLM,
)
from mindone.transformers.models.auto.modeling_auto import MODEL_FAMILIES, TASKS
from tests import parity

BERT = dict(vocab_size=99, hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=4,
            max_position_embeddings=32)


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    model = parity.torch_reference(transformers.BertForMaskedLM, transformers.BertConfig(**BERT))
    return model, parity.save_torch(model, str(tmp_path_factory.mktemp("bert")))


def test_auto_model_picks_the_family_class_and_matches_torch(bert_dir):
    torch_model, path = bert_dir
    ours = AutoModelForMaskedLM.from_pretrained(path)
    assert type(ours) is BertForMaskedLM
    ids = np.random.RandomState(0).randint(1, 99, (2, 7)).astype(np.int64)
    ref = parity.run_torch(torch_model, dict(input_ids=ids)).logits
    assert parity.rel_error(ours(ms.Tensor(ids)).logits, ref) <= parity.FP32_BAR
    assert type(AutoModel.from_pretrained(path)) is BertModel


def test_config_overrides_and_dtype_reach_the_model(bert_dir):
    _, path = bert_dir
    ours, info = AutoModelForSequenceClassification.from_pretrained(path, num_labels=5, dtype="float16",
                                                                    output_loading_info=True)
    assert type(ours) is BertForSequenceClassification
    assert ours.config.num_labels == 5 and ours.classifier.weight.shape == (5, 32)
    assert ours.dtype == ms.float16
    assert sorted(info["missing_keys"]) == ["bert.pooler.dense.bias", "bert.pooler.dense.weight",
                                            "classifier.bias", "classifier.weight"]


def test_from_config_builds_random_model_in_dtype():
    config = transformers.LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=20, num_hidden_layers=1,
                                      num_attention_heads=2)
    model = AutoModelForCausalLM.from_config(config, dtype="float16")
    assert type(model) is LlamaForCausalLM and model.dtype == ms.float16


def test_unsupported_model_type_lists_supported_ones():
    config = transformers.LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=20, num_hidden_layers=1,
                                      num_attention_heads=2)
    with pytest.raises(ValueError, match=r"model_type='llama'.*AutoModelForMaskedLM: bert, data2vec-text, distilbert, fnet, luke, perceiver, roberta, roberta-prelayernorm"):
        AutoModelForMaskedLM.from_config(config)
    config = transformers.ReformerConfig()
    with pytest.raises(ValueError, match=r"model_type='reformer'.*supported by AutoModel: .*bert.*llama"):
        AutoModel.from_config(config)


def test_every_listed_class_name_is_exported_or_reported_missing():
    """Names listed for families that are not implemented yet fail with a message, not an AttributeError."""
    for model_type, names in MODEL_FAMILIES.items():
        for task, listed in names.items():
            assert task in TASKS
            for name in listed if isinstance(listed, tuple) else (listed,):
                if name in mt._LAZY:
                    assert getattr(mt, name).__name__ == name


def test_importing_auto_imports_no_model_family_and_no_torch():
    code = ("import sys; from mindone.transformers import AutoModel; "
            "loaded = [m for m in sys.modules if '.models.' in m and 'auto' not in m]; "
            "assert not loaded, loaded; assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_register_adds_a_custom_class():
    class MyConfig(transformers.PretrainedConfig):
        model_type = "my-test-model"

    class MyModel:
        def __init__(self, config):
            self.config = config

    AutoModel.register(MyConfig, MyModel)
    assert isinstance(AutoModel.from_config(MyConfig()), MyModel)
    with pytest.raises(ValueError, match="already registered"):
        AutoModel.register(MyConfig, MyModel)
