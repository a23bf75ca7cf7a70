"""pipeline() on tiny checkpoints of the encoder families added for the model zoo, against torch `transformers`'
pipelines on the same files (one task per family; tokenizers built in place, no hub)."""

import pytest
import torch
import transformers

from tests import parity
from tests.pipelines.test_pipelines import LABELS, both
from tests.pipelines.test_pipelines_roberta_distilbert import SENTENCE, SHARPENED, _roberta_tokenizer

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37)
ROBERTA_LIKE = dict(TINY, max_position_embeddings=130, type_vocab_size=1, pad_token_id=1, bos_token_id=0,
                    eos_token_id=2)
# family -> (config class, config kwargs, tokenizer builder); the vocabulary size comes from the tokenizer
FAMILIES = {
    "roberta-prelayernorm": (transformers.RobertaPreLayerNormConfig, ROBERTA_LIKE, _roberta_tokenizer),
    "data2vec-text": (transformers.Data2VecTextConfig, ROBERTA_LIKE, _roberta_tokenizer),
}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """(family, torch head class name, task) -> directory with a tiny random model and the family's tokenizer."""
    made = {}

    def get(family, head, task):
        if (family, head) not in made:
            config_class, kwargs, make_tokenizer = FAMILIES[family]
            tokenizer = make_tokenizer(tmp_path_factory.mktemp("tokenizer"))
            labels = LABELS.get(task, ["A", "B"])
            config = config_class(vocab_size=len(tokenizer), id2label=dict(enumerate(labels)),
                                  label2id={l: i for i, l in enumerate(labels)}, **kwargs)
            model = parity.torch_reference(getattr(transformers, head), config, seed=len(made))
            with torch.no_grad():  # sharper random logits, so rankings are not near-ties
                for name, p in model.named_parameters():
                    if name.startswith(SHARPENED):
                        p.mul_(8.0)
            directory = str(tmp_path_factory.mktemp(head))
            model.save_pretrained(directory)
            tokenizer.save_pretrained(directory)
            made[(family, head)] = directory
        return made[(family, head)]

    return get


def test_roberta_prelayernorm_fill_mask_matches_torch(model_dir):
    directory = model_dir("roberta-prelayernorm", "RobertaPreLayerNormForMaskedLM", "fill-mask")
    both("fill-mask", directory, "the <mask> sat on a <mask> .", top_k=3)


def test_data2vec_text_token_classification_matches_torch(model_dir):
    directory = model_dir("data2vec-text", "Data2VecTextForTokenClassification", "token-classification")
    both("token-classification", directory, SENTENCE, aggregation_strategy="simple", ignore_labels=[])
