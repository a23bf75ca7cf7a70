"""pipeline() outputs against torch `transformers`' pipeline on the same tiny checkpoints and tokenizer."""

import numpy as np
import pytest
import torch
import transformers

from mindone.transformers import BertForSequenceClassification, pipeline
from tests import parity

WORDS = ("the cat sat on a mat . dog ##s who where what is lives in paris france john ##ny big city , ? "
         "london works at google and mary likes music").split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
LABELS = {"token-classification": ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"],
          "text-classification": ["NEGATIVE", "POSITIVE", "NEUTRAL"],
          "zero-shot-classification": ["contradiction", "neutral", "entailment"]}
TORCH_HEAD = {"feature-extraction": transformers.BertModel, "fill-mask": transformers.BertForMaskedLM,
              "text-classification": transformers.BertForSequenceClassification,
              "zero-shot-classification": transformers.BertForSequenceClassification,
              "token-classification": transformers.BertForTokenClassification,
              "question-answering": transformers.BertForQuestionAnswering}
SCORE_TOL = 1e-5


@pytest.fixture(scope="module")
def bert_dirs(tmp_path_factory):
    """task -> directory holding a tiny random BERT for the task and its WordPiece tokenizer."""
    # vocab= (not vocab_file=): transformers 5's BertTokenizerFast(vocab_file=) keeps only the special tokens, so every
    # word would be [UNK] and the comparisons below would run on meaningless inputs
    tokenizer = transformers.BertTokenizer(vocab={w: i for i, w in enumerate(SPECIAL + WORDS)})
    assert tokenizer.unk_token_id not in tokenizer(" ".join(WORDS[:5]))["input_ids"]
    made = {}

    def get(task):
        if task not in made:
            labels = LABELS.get(task, ["A", "B"])
            config = transformers.BertConfig(vocab_size=len(SPECIAL) + len(WORDS), hidden_size=32, num_hidden_layers=2,
                                             num_attention_heads=4, intermediate_size=37, max_position_embeddings=64,
                                             id2label=dict(enumerate(labels)),
                                             label2id={l: i for i, l in enumerate(labels)})
            model = parity.torch_reference(TORCH_HEAD[task], config, seed=len(made))
            with torch.no_grad():  # sharper random logits, so rankings are not near-ties
                for name, p in model.named_parameters():
                    if name.startswith(("classifier", "qa_outputs", "cls.predictions.decoder")):
                        p.mul_(8.0)
            directory = str(tmp_path_factory.mktemp(task))
            model.save_pretrained(directory)
            tokenizer.save_pretrained(directory)
            made[task] = directory
        return made[task]

    return get


def assert_same_result(ours, ref, path="result", tol=SCORE_TOL):
    """Same structure, strings and integers; floats within `tol` (SCORE_TOL unless a test says why)."""
    if isinstance(ref, dict):
        assert isinstance(ours, dict) and sorted(ours) == sorted(ref), f"{path}: keys {ours} != {ref}"
        for key in ref:
            assert_same_result(ours[key], ref[key], f"{path}.{key}", tol)
    elif isinstance(ref, (list, tuple)):
        assert isinstance(ours, (list, tuple)) and len(ours) == len(ref), f"{path}: {ours} != {ref}"
        for i, (a, b) in enumerate(zip(ours, ref)):
            assert_same_result(a, b, f"{path}[{i}]", tol)
    elif isinstance(ref, (float, np.floating)):
        assert abs(float(ours) - float(ref)) <= tol, f"{path}: {ours} != {ref}"
    else:
        assert ours == ref, f"{path}: {ours!r} != {ref!r}"


def both(task, directory, *args, **kwargs):
    ours = pipeline(task, model=directory)(*args, **kwargs)
    ref = transformers.pipeline(task, model=directory, device="cpu")(*args, **kwargs)
    assert_same_result(ours, ref)
    return ours


@pytest.mark.parametrize("kwargs", [{}, {"top_k": None}, {"top_k": 2}, {"function_to_apply": "sigmoid"}])
def test_text_classification_matches_torch(bert_dirs, kwargs):
    directory = bert_dirs("text-classification")
    both("text-classification", directory, "the cat sat on a mat", **kwargs)
    both("text-classification", directory, ["the dog sat", "john lives in paris , france"], batch_size=2, **kwargs)


def test_sentiment_alias_and_sentence_pairs(bert_dirs):
    directory = bert_dirs("text-classification")
    both("sentiment-analysis", directory, {"text": "the cat", "text_pair": "sat on a mat"})


@pytest.mark.parametrize("kwargs", [{}, {"top_k": 3}, {"targets": ["cat", "dog", "mat"]}])
def test_fill_mask_matches_torch(bert_dirs, kwargs):
    directory = bert_dirs("fill-mask")
    both("fill-mask", directory, "the [MASK] sat on a mat .", **kwargs)
    both("fill-mask", directory, "the [MASK] sat on a [MASK] .", **kwargs)


@pytest.mark.parametrize("strategy", ["none", "simple", "first", "average", "max"])
def test_token_classification_matches_torch(bert_dirs, strategy):
    directory = bert_dirs("token-classification")
    both("token-classification", directory, "johnny lives in paris , france and mary likes dogs",
         aggregation_strategy=strategy, ignore_labels=[])


def test_question_answering_finds_torch_models_best_span(bert_dirs):
    """transformers 5 removed its QA pipeline, so the reference is HF's span rule applied to the torch logits."""
    directory = bert_dirs("question-answering")
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    torch_model = transformers.BertForQuestionAnswering.from_pretrained(directory).eval()
    context = "johnny lives in paris , france . mary works at google in london ."
    for question in ("where is mary ?", "who lives in paris ?"):
        enc = tokenizer(question, context, return_offsets_mapping=True, return_tensors="pt")
        with torch.no_grad():
            out = torch_model(input_ids=enc["input_ids"], token_type_ids=enc["token_type_ids"])
        in_context = np.array([s == 1 for s in enc.sequence_ids(0)])
        # HF's rule: the softmax also covers [CLS] (the "no answer" slot), spans only the context
        allowed = torch.from_numpy(~(in_context | (enc["input_ids"][0] == tokenizer.cls_token_id).numpy()))
        start = torch.softmax(out.start_logits[0].masked_fill(allowed, -10000.0), -1).numpy()
        end = torch.softmax(out.end_logits[0].masked_fill(allowed, -10000.0), -1).numpy()
        spans = [(start[s] * end[e], s, e) for s in np.nonzero(in_context)[0] for e in np.nonzero(in_context)[0]
                 if s <= e < s + 15]
        spans.sort(reverse=True)
        # align_to_words (HF's default): an answer starts at the start of its first token's word and ends at the end
        # of its last token's word ("##ny" -> "johnny")
        words = enc.word_ids(0)
        ours = pipeline("question-answering", model=directory)(question=question, context=context, top_k=3)
        assert len(ours) == 3
        for answer, (score, s, e) in zip(ours, spans[:3]):
            char_start = enc.word_to_chars(words[s], sequence_index=1)[0]
            char_end = enc.word_to_chars(words[e], sequence_index=1)[1]
            assert (answer["start"], answer["end"]) == (char_start, char_end)
            assert answer["answer"] == context[char_start:char_end]
            assert abs(answer["score"] - float(score)) <= SCORE_TOL
        single = pipeline("question-answering", model=directory)(question, context)
        assert single == ours[0]


def test_feature_extraction_matches_torch(bert_dirs):
    directory = bert_dirs("feature-extraction")
    ours = pipeline("feature-extraction", model=directory)("the big city", return_tensors=True)
    ref = transformers.pipeline("feature-extraction", model=directory, device="cpu")("the big city",
                                                                                      return_tensors=True)
    assert parity.rel_error(ours, ref) <= parity.FP32_BAR
    nested = pipeline("feature-extraction", model=directory)(["the big city", "a cat"], batch_size=2)
    assert len(nested) == 2 and np.array(nested[1]).shape == (1, 4, 32)


@pytest.mark.parametrize("multi_label", [False, True])
def test_zero_shot_classification_matches_torch(bert_dirs, multi_label):
    directory = bert_dirs("zero-shot-classification")
    both("zero-shot-classification", directory, "john likes music", candidate_labels=["music", "paris", "dogs"],
         multi_label=multi_label)


def test_task_model_mismatch_names_what_is_needed(bert_dirs, llama_dir):
    directory = bert_dirs("text-classification")
    with pytest.raises(ValueError, match="model_type 'llama' is not supported for task 'fill-mask'.*bert"):
        pipeline("fill-mask", model=llama_dir)
    model = BertForSequenceClassification.from_pretrained(directory)
    with pytest.raises(ValueError, match="needs a BertForMaskedLM"):
        pipeline("fill-mask", model=model, tokenizer=directory)
    with pytest.raises(KeyError, match="Unknown task 'summarise'"):
        pipeline("summarise", model=directory)


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    from tests.generation.helpers import tiny_llama_pair, tiny_tokenizer

    directory = tmp_path_factory.mktemp("llama")
    tiny_llama_pair(directory)
    tiny_tokenizer().save_pretrained(str(directory))
    return str(directory)


@pytest.mark.parametrize("kwargs", [{}, {"return_full_text": False}])
def test_text_generation_greedy_matches_torch(llama_dir, kwargs):
    both("text-generation", llama_dir, "The capital of France", max_new_tokens=8, do_sample=False, **kwargs)
    chat = [{"role": "user", "content": "Once upon a time"}]
    both("text-generation", llama_dir, chat, max_new_tokens=6, do_sample=False, **kwargs)


def test_call_time_batch_size_batches_the_model_calls(bert_dirs):
    """`pipe(inputs, batch_size=4)` runs the model on 4 inputs at a time (as HF), with the unbatched results."""
    directory = bert_dirs("feature-extraction")
    pipe = pipeline("feature-extraction", model=directory)
    texts = ["the big city", "a cat", "the cat sat on a mat", "john lives in paris", "dog"]
    calls = []
    forward = pipe._forward
    pipe._forward = lambda batch: calls.append(batch["input_ids"].shape[0]) or forward(batch)
    batched = pipe(texts, batch_size=4)
    assert calls == [4, 1]
    one_by_one = pipe(texts)
    assert calls[2:] == [1] * 5
    for a, b in zip(batched, one_by_one):
        assert parity.rel_error(np.array(a), np.array(b)) <= parity.FP32_BAR


def generate_calls(pipe):
    """Replaces `pipe.model.generate` by a recorder of its keyword arguments (inputs left out, configs as dicts)."""
    calls = []

    def record(*args, **kwargs):
        kwargs = {k: v for k, v in kwargs.items() if k not in ("input_ids", "attention_mask")}
        if kwargs.get("generation_config") is not None:
            kwargs["generation_config"] = kwargs["generation_config"].to_diff_dict()
        calls.append(kwargs)
        raise StopIteration

    pipe.model.generate = record
    return calls


@pytest.mark.parametrize("init_kwargs, call_kwargs", [
    ({}, {}),                                      # HF's defaults: 256 new tokens, sampling at temperature 0.7
    ({}, {"temperature": 0.2}),                    # the other defaults still apply
    ({"max_new_tokens": 3}, {"do_sample": False}),  # greedy: no temperature default
    ({}, {"max_length": 30}),                       # a max_length keeps the default max_new_tokens out
    ({}, {"generation_config": transformers.GenerationConfig(top_k=5)}),
])
def test_text_generation_pipeline_resolves_generate_arguments_as_torch(llama_dir, init_kwargs, call_kwargs):
    ours = pipeline("text-generation", model=llama_dir, **init_kwargs)
    ref = transformers.pipeline("text-generation", model=llama_dir, device="cpu", **init_kwargs)
    got, expected = generate_calls(ours), generate_calls(ref)
    for pipe in (ours, ref):
        with pytest.raises((StopIteration, RuntimeError)):  # torch re-raises a StopIteration as RuntimeError
            pipe("The capital of France", **call_kwargs)
    assert got == expected and len(got) == 1


def test_text_generation_follows_the_models_generation_config(tmp_path):
    """A generation_config.json saying greedy, 5 new tokens: both pipelines, called without arguments, give the same
    5-token continuation."""
    from tests.generation.helpers import tiny_llama_pair, tiny_tokenizer

    torch_model, _ = tiny_llama_pair(tmp_path, seed=3)
    torch_model.generation_config.do_sample = False
    torch_model.generation_config.max_new_tokens = 5
    torch_model.generation_config.save_pretrained(str(tmp_path))
    tiny_tokenizer().save_pretrained(str(tmp_path))
    ours = both("text-generation", str(tmp_path), "Once upon a time", return_tensors=True)
    prompt = tiny_tokenizer()("Once upon a time")["input_ids"]
    assert len(ours[0]["generated_token_ids"]) == len(prompt) + 5


def test_text_generation_from_a_gguf_file_in_model_kwargs(bert_dirs, tmp_path):
    """`model_kwargs={"gguf_file": ...}` reaches the config loading too (it failed with "Unrecognized model")."""
    from tests.weights.test_gguf_io import write_tiny_gguf

    write_tiny_gguf(tmp_path / "tiny.gguf", quantised=False)
    tokenizer = transformers.AutoTokenizer.from_pretrained(bert_dirs("fill-mask"))  # ids < the GGUF's 128 tokens
    kwargs = dict(model_kwargs={"gguf_file": "tiny.gguf"}, tokenizer=tokenizer)
    ours = pipeline("text-generation", model=str(tmp_path), **kwargs)
    ref = transformers.pipeline("text-generation", model=str(tmp_path), device="cpu", **kwargs)
    call = dict(max_new_tokens=6, do_sample=False, return_tensors=True)
    assert_same_result(ours("the cat sat on", **call), ref("the cat sat on", **call))


@pytest.mark.parametrize("init_kwargs", [{"top_k": None}, {"top_k": 2}, {"top_k": 1}])
def test_text_classification_top_k_given_to_pipeline_sorts_as_torch(bert_dirs, init_kwargs):
    directory = bert_dirs("text-classification")
    ours = pipeline("text-classification", model=directory, **init_kwargs)
    ref = transformers.pipeline("text-classification", model=directory, device="cpu", **init_kwargs)
    for inputs in ("the cat sat on a mat", ["the dog sat", "john lives in paris , france"]):
        assert_same_result(ours(inputs), ref(inputs))


def test_text_classification_return_all_scores_is_handled_as_torch(bert_dirs):
    directory = bert_dirs("text-classification")
    ours_init = pipeline("text-classification", model=directory, return_all_scores=True)
    ref_init = transformers.pipeline("text-classification", model=directory, device="cpu", return_all_scores=True)
    ours, ref = pipeline("text-classification", model=directory), \
        transformers.pipeline("text-classification", model=directory, device="cpu")
    for inputs in ("the cat sat on a mat", ["the dog sat", "john lives in paris , france"]):
        assert_same_result(ours_init(inputs), ref_init(inputs))
        assert_same_result(ours(inputs, return_all_scores=True), ref(inputs, return_all_scores=True))


@pytest.mark.slow
def test_text_generation_on_the_embedded_smollm2_gguf_matches_torch():
    """The real GGUF through model_kwargs only (config, weights and tokenizer all read from it), as torch loads it."""
    from mindone.transformers.cli import default_model

    path, gguf = default_model()
    chat = [{"role": "user", "content": "What is the capital of France?"}]
    call = dict(max_new_tokens=8, do_sample=False)
    ours = pipeline("text-generation", model=path, model_kwargs={"gguf_file": gguf})(chat, **call)
    ref = transformers.pipeline("text-generation", model=path, device="cpu", dtype=torch.float32,
                                model_kwargs={"gguf_file": gguf})(chat, **call)
    assert_same_result(ours, ref)
    assert "Paris" in ours[0]["generated_text"][-1]["content"]
