"""pipeline() on tiny checkpoints of the encoder families added for the model zoo, against torch `transformers`'
pipelines on the same files (one task per family; tokenizers built in place, no hub)."""

import pytest
import torch
import transformers

from tests import parity
from tests.pipelines.test_pipelines import LABELS, WORDS, both
from tests.pipelines.test_pipelines_roberta_distilbert import SENTENCE, SHARPENED, _roberta_tokenizer

# output layers scaled up so the random logits are not near-ties (BERT-style heads name theirs cls.predictions)
SHARPENED = SHARPENED + ("cls.predictions.decoder",)



def _fnet_tokenizer(directory):
    """FNet's (ALBERT-style) Unigram tokenizer over the test words; <pad> = 0, no attention mask in its outputs."""
    specials = [("<pad>", 0.0), ("<unk>", 0.0), ("[CLS]", 0.0), ("[SEP]", 0.0), ("[MASK]", 0.0)]
    words = sorted({w.lstrip("#") for w in WORDS})
    pieces = [("\u2581" + w, -1.0 - i / 100) for i, w in enumerate(words)]
    letters = [(c, -20.0) for c in sorted({c for w in words for c in w})]
    tokenizer = transformers.FNetTokenizer(vocab=specials + pieces + letters)
    assert tokenizer.unk_token_id not in tokenizer(" ".join(words))["input_ids"]
    return tokenizer


def _luke_tokenizer(directory):
    """LUKE's tokenizer: RoBERTa's byte-level BPE plus an entity vocabulary (its special entities and a few titles)."""
    roberta = _roberta_tokenizer(directory)
    entities = ["[PAD]", "[UNK]", "[MASK]", "[MASK2]", "Paris", "France", "Mary"]
    return transformers.LukeTokenizer(vocab=roberta.get_vocab(), merges=_roberta_merges(directory),
                                      entity_vocab={e: i for i, e in enumerate(entities)})


def _roberta_merges(directory):
    return [tuple(line.split()) for line in (directory / "merges.txt").read_text().splitlines()[1:] if line]


TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37)
ROBERTA_LIKE = dict(TINY, max_position_embeddings=130, type_vocab_size=1, pad_token_id=1, bos_token_id=0,
                    eos_token_id=2)
# family -> (config class, config kwargs, tokenizer builder); the vocabulary size comes from the tokenizer
FAMILIES = {
    "roberta-prelayernorm": (transformers.RobertaPreLayerNormConfig, ROBERTA_LIKE, _roberta_tokenizer),
    "data2vec-text": (transformers.Data2VecTextConfig, ROBERTA_LIKE, _roberta_tokenizer),
    "lilt": (transformers.LiltConfig, dict(ROBERTA_LIKE, hidden_size=48), _roberta_tokenizer),
    "luke": (transformers.LukeConfig, dict(ROBERTA_LIKE, entity_vocab_size=7, entity_emb_size=16), _luke_tokenizer),
    "fnet": (transformers.FNetConfig, dict(TINY, max_position_embeddings=64, pad_token_id=0), _fnet_tokenizer),
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


def test_fnet_fill_mask_matches_torch(model_dir):
    directory = model_dir("fnet", "FNetForMaskedLM", "fill-mask")
    both("fill-mask", directory, "the [MASK] sat on a mat .", top_k=3)
    both("fill-mask", directory, ["john [MASK] in paris", "mary likes [MASK] ."])


def test_lilt_text_classification_matches_torch(model_dir):
    """Text-only pipelines give LiLT no boxes: both sides use all-zero boxes."""
    directory = model_dir("lilt", "LiltForSequenceClassification", "text-classification")
    both("text-classification", directory, ["the dog sat", SENTENCE], top_k=None)


def test_luke_fill_mask_matches_torch(model_dir):
    """Text-only pipelines give LUKE no entities: the word stream alone, on both sides."""
    directory = model_dir("luke", "LukeForMaskedLM", "fill-mask")
    both("fill-mask", directory, "the <mask> sat on a <mask> .", top_k=3)


def test_luke_text_classification_matches_torch(model_dir):
    directory = model_dir("luke", "LukeForSequenceClassification", "text-classification")
    both("text-classification", directory, ["the dog sat", SENTENCE], top_k=None)


def test_luke_token_classification_matches_torch(model_dir):
    directory = model_dir("luke", "LukeForTokenClassification", "token-classification")
    both("token-classification", directory, SENTENCE, aggregation_strategy="simple", ignore_labels=[])
