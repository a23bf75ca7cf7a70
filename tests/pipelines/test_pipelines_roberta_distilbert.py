"""Text pipelines on tiny RoBERTa (byte-level BPE, <pad> = 1, no segment ids) and DistilBERT (WordPiece, no segment
ids) checkpoints, against torch `transformers`' pipelines on the same files."""

import json

import numpy as np
import pytest
import torch
import transformers
from tokenizers import ByteLevelBPETokenizer

from mindone.transformers import pipeline
from tests import parity
from tests.pipelines.test_pipelines import LABELS, SCORE_TOL, SPECIAL, WORDS, both

FAMILIES = ("roberta", "distilbert")
SENTENCE = "johnny lives in paris , france and mary likes music"
TORCH_HEADS = {
    "roberta": {"fill-mask": "RobertaForMaskedLM", "text-classification": "RobertaForSequenceClassification",
                "zero-shot-classification": "RobertaForSequenceClassification",
                "token-classification": "RobertaForTokenClassification",
                "question-answering": "RobertaForQuestionAnswering"},
    "distilbert": {"fill-mask": "DistilBertForMaskedLM", "text-classification": "DistilBertForSequenceClassification",
                   "zero-shot-classification": "DistilBertForSequenceClassification",
                   "token-classification": "DistilBertForTokenClassification",
                   "question-answering": "DistilBertForQuestionAnswering"},
}
# output layers scaled up so the random logits are not near-ties (rankings must be stable across frameworks)
SHARPENED = ("classifier", "qa_outputs", "lm_head.decoder", "lm_head.bias", "vocab_projector")


def _roberta_tokenizer(directory):
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([" ".join(w for w in WORDS if not w.startswith("##"))] * 3, vocab_size=330,
                            min_frequency=1, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                            show_progress=False)
    bpe.save_model(str(directory))
    vocab = json.loads((directory / "vocab.json").read_text())
    merges = [tuple(line.split()) for line in (directory / "merges.txt").read_text().splitlines()[1:] if line]
    return transformers.RobertaTokenizer(vocab=vocab, merges=merges)


def _distilbert_tokenizer(directory):
    vocab = directory / "vocab.txt"
    vocab.write_text("\n".join(SPECIAL + WORDS) + "\n")
    return transformers.DistilBertTokenizer(vocab_file=str(vocab))


def _config(family, tokenizer, labels):
    label_maps = dict(id2label=dict(enumerate(labels)), label2id={l: i for i, l in enumerate(labels)})
    if family == "roberta":
        return transformers.RobertaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                          num_attention_heads=4, intermediate_size=37, max_position_embeddings=130,
                                          type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                                          **label_maps)
    return transformers.DistilBertConfig(vocab_size=len(tokenizer), dim=32, n_layers=2, n_heads=4, hidden_dim=37,
                                         max_position_embeddings=128, **label_maps)


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    """(family, task) -> directory with a tiny random model for the task and the family's tokenizer."""
    tokenizers = {"roberta": _roberta_tokenizer(tmp_path_factory.mktemp("bpe")),
                  "distilbert": _distilbert_tokenizer(tmp_path_factory.mktemp("wordpiece"))}
    made = {}

    def get(family, task):
        if (family, task) not in made:
            labels = LABELS.get(task, ["A", "B"])
            config = _config(family, tokenizers[family], labels)
            torch_cls = getattr(transformers, TORCH_HEADS[family][task])
            model = parity.torch_reference(torch_cls, config, seed=len(made))
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if name.startswith(SHARPENED):
                        p.mul_(8.0)
            directory = str(tmp_path_factory.mktemp(f"{family}-{task}"))
            model.save_pretrained(directory)
            tokenizers[family].save_pretrained(directory)
            made[(family, task)] = directory
        return made[(family, task)]

    return get


@pytest.mark.parametrize("family", FAMILIES)
def test_text_classification_matches_torch(model_dirs, family):
    directory = model_dirs(family, "text-classification")
    both("text-classification", directory, "the cat sat on a mat", top_k=None)
    both("text-classification", directory, ["the dog sat", SENTENCE], batch_size=2)


@pytest.mark.parametrize("family", FAMILIES)
def test_fill_mask_matches_torch(model_dirs, family):
    directory = model_dirs(family, "fill-mask")
    mask = "<mask>" if family == "roberta" else "[MASK]"
    both("fill-mask", directory, f"the {mask} sat on a mat .", top_k=3)
    both("fill-mask", directory, f"the {mask} sat on a {mask} .")


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("strategy", ["none", "simple", "first"])
def test_token_classification_matches_torch(model_dirs, family, strategy):
    directory = model_dirs(family, "token-classification")
    both("token-classification", directory, SENTENCE, aggregation_strategy=strategy, ignore_labels=[])


@pytest.mark.parametrize("family", FAMILIES)
def test_zero_shot_classification_matches_torch(model_dirs, family):
    directory = model_dirs(family, "zero-shot-classification")
    both("zero-shot-classification", directory, "john likes music", candidate_labels=["music", "paris", "dogs"])


@pytest.mark.parametrize("family", FAMILIES)
def test_question_answering_finds_torch_models_best_span(model_dirs, family):
    """transformers 5 removed its QA pipeline, so the reference is HF's span rule applied to the torch logits."""
    directory = model_dirs(family, "question-answering")
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    torch_model = getattr(transformers, TORCH_HEADS[family]["question-answering"]).from_pretrained(directory).eval()
    context = "johnny lives in paris , france . mary works at google in london ."
    question = "where is mary ?"
    enc = tokenizer(question, context, return_offsets_mapping=True, return_tensors="pt")
    with torch.no_grad():
        out = torch_model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
    in_context = np.array([s == 1 for s in enc.sequence_ids(0)])
    # HF's rule: the softmax also covers the first special token (the "no answer" slot), spans only the context
    allowed = torch.from_numpy(~(in_context | (enc["input_ids"][0] == tokenizer.cls_token_id).numpy()))
    start = torch.softmax(out.start_logits[0].masked_fill(allowed, -10000.0), -1).numpy()
    end = torch.softmax(out.end_logits[0].masked_fill(allowed, -10000.0), -1).numpy()
    spans = sorted(((start[s] * end[e], s, e) for s in np.nonzero(in_context)[0] for e in np.nonzero(in_context)[0]
                    if s <= e < s + 15), reverse=True)
    offsets = enc["offset_mapping"][0].tolist()
    qa = pipeline("question-answering", model=directory)
    # token spans as they are, and (the default) widened to whole words of the context, as HF's pipeline did
    raw = [(offsets[s][0], offsets[e][1]) for _, s, e in spans[:3]]
    words = [(enc.word_to_chars(enc.token_to_word(s), sequence_index=1)[0],
              enc.word_to_chars(enc.token_to_word(e), sequence_index=1)[1]) for _, s, e in spans[:3]]
    for align, expected in ((False, raw), (True, words)):
        ours = qa(question=question, context=context, top_k=3, align_to_words=align)
        assert len(ours) == 3
        for answer, (char_start, char_end), (score, _, _) in zip(ours, expected, spans[:3]):
            assert (answer["start"], answer["end"]) == (char_start, char_end)
            assert answer["answer"] == context[char_start:char_end]
            assert abs(answer["score"] - float(score)) <= SCORE_TOL
