"""Export (mindone.transformers.exporters, `mindone-transformers export`): the MindIR graph loaded back with
MindSpore and the ONNX graph run by onnxruntime give our model's outputs, and torch's within the parity bar, on tiny
seeded random checkpoints; the exported decode step driven by a NumPy loop reproduces generate()'s greedy tokens."""

import json
import os
import shutil

import mindspore as ms
import numpy as np
import pytest
import transformers
from mindspore import nn

from mindone.transformers import cli, exporters
from mindone.transformers.backend import native
from tests import parity

ort = pytest.importorskip("onnxruntime")

VOCAB = 99
BERT = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=64, type_vocab_size=2, num_labels=3, pad_token_id=0)
LLAMA = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64, bos_token_id=1, eos_token_id=2, pad_token_id=0)
VIT = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=16,
           patch_size=4, num_labels=3, hidden_act="gelu")
# (task, torch class): each encoder task on one tiny BERT checkpoint
BERT_TASKS = [("feature-extraction", transformers.BertModel),
              ("text-classification", transformers.BertForSequenceClassification),
              ("token-classification", transformers.BertForTokenClassification),
              ("fill-mask", transformers.BertForMaskedLM),
              ("question-answering", transformers.BertForQuestionAnswering)]
ABS_BAR = 1e-5  # exported graph vs our model, max abs


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    made = {}

    def get(torch_cls, config):
        if torch_cls not in made:
            model = parity.torch_reference(torch_cls, config)
            made[torch_cls] = (model, parity.save_torch(model, str(tmp_path_factory.mktemp(torch_cls.__name__))))
        return made[torch_cls]

    return get


def text_inputs(batch=2, seq=8, seed=0):
    rng = np.random.RandomState(seed)
    ids = rng.randint(1, VOCAB, (batch, seq)).astype(np.int64)
    mask = np.ones((batch, seq), np.int64)
    mask[1, seq - 3:] = 0
    types = (np.arange(seq)[None] >= seq // 2).astype(np.int64).repeat(batch, 0)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


_LOADED = {}


def run_mindir(path, arrays):
    # a GraphCell compiles at its first call for those shapes: the decode loop reuses it
    key = (path, tuple(a.shape for a in arrays))
    if key not in _LOADED:
        _LOADED[key] = nn.GraphCell(ms.load(path))
    out = _LOADED[key](*[ms.Tensor(a) for a in arrays])
    return [o.asnumpy() for o in (out if isinstance(out, (tuple, list)) else (out,))]


def run_onnx(path, feeds):
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feeds)


def run_exported(directory, stem, feeds):
    """Runs graph `stem` of an export directory with inputs by name (as export.json lists them)."""
    meta = json.load(open(os.path.join(directory, exporters.METADATA_FILE)))
    graph = meta["graphs"][stem]
    names = [spec["name"] for spec in graph["inputs"]]
    path = os.path.join(directory, graph["file"])
    if meta["format"] == "mindir":
        outputs = run_mindir(path, [feeds[n] for n in names])
    else:
        outputs = run_onnx(path, {n: feeds[n] for n in names})
    assert len(outputs) == len(graph["outputs"])
    for value, spec in zip(outputs, graph["outputs"]):
        assert list(value.shape) == spec["shape"], spec["name"]
        assert str(value.dtype) == spec["dtype"], spec["name"]
    return dict(zip([spec["name"] for spec in graph["outputs"]], outputs))


@pytest.mark.parametrize("file_format", exporters.FORMATS)
@pytest.mark.parametrize("task,torch_cls", BERT_TASKS, ids=[t for t, _ in BERT_TASKS])
def test_encoder_task_export_matches_our_model_and_torch(checkpoint, tmp_path, task, torch_cls, file_format):
    labels = 2 if task == "question-answering" else 3  # HF's QA head splits 2 labels into start / end
    torch_model, path = checkpoint(torch_cls, transformers.BertConfig(**{**BERT, "num_labels": labels}))
    meta = exporters.export(path, str(tmp_path), task, file_format=file_format, seq_len=8, batch_size=2)
    assert {"config.json", exporters.METADATA_FILE, meta["graphs"]["model"]["file"]} <= set(os.listdir(tmp_path))
    assert [spec["name"] for spec in meta["graphs"]["model"]["inputs"]] == list(text_inputs())
    inputs = text_inputs(seed=3)
    exported = run_exported(str(tmp_path), "model", inputs)
    ours = exporters._load(path, task, None)[0](**parity.to_ms_inputs(inputs))
    ref = parity.run_torch(torch_model, inputs)
    for name, value in exported.items():
        assert np.abs(value - ours[name].asnumpy()).max() <= ABS_BAR, name
        parity.assert_close({name: parity.rel_error(value, ref[name])}, parity.FP32_BAR, f"{task}/{file_format}")


@pytest.mark.parametrize("file_format", exporters.FORMATS)
def test_image_classification_export_matches_our_model_and_torch(checkpoint, tmp_path, file_format):
    torch_model, path = checkpoint(transformers.ViTForImageClassification, transformers.ViTConfig(**VIT))
    exporters.export(path, str(tmp_path), "image-classification", file_format=file_format, batch_size=2)
    pixels = np.random.RandomState(0).randn(2, 3, 16, 16).astype(np.float32)
    exported = run_exported(str(tmp_path), "model", {"pixel_values": pixels})
    ours = exporters._load(path, "image-classification", None)[0](pixel_values=ms.Tensor(pixels)).logits.asnumpy()
    ref = parity.run_torch(torch_model, {"pixel_values": pixels}).logits
    assert np.abs(exported["logits"] - ours).max() <= ABS_BAR
    parity.assert_close({"logits": parity.rel_error(exported["logits"], ref)}, parity.FP32_BAR, file_format)


def greedy_with_exported_steps(directory, prompt, max_new_tokens):
    """Greedy decoding with the exported prefill and decode graphs, the KV cache held as NumPy arrays."""
    meta = json.load(open(os.path.join(directory, exporters.METADATA_FILE)))
    cache_len, batch = meta["cache_len"], prompt.shape[0]
    seq = prompt.shape[1]
    cache = {spec["name"]: np.zeros(spec["shape"], spec["dtype"]) for spec in meta["graphs"]["prefill"]["inputs"]
             if spec["name"].startswith("past_key_values.")}
    mask = np.zeros((batch, cache_len), np.int64)
    mask[:, :seq] = 1
    feeds = dict(cache, input_ids=prompt, attention_mask=mask, position_ids=np.arange(seq)[None].repeat(batch, 0),
                 cache_position=np.arange(seq))
    out = run_exported(directory, "prefill", feeds)
    first_logits = out["logits"]
    tokens = [first_logits[:, -1].argmax(-1)]
    for step in range(seq, seq + max_new_tokens - 1):
        cache = {name.replace("present.", "past_key_values."): v for name, v in out.items() if name != "logits"}
        mask[:, step] = 1
        feeds = dict(cache, input_ids=tokens[-1][:, None].astype(np.int64), attention_mask=mask,
                     position_ids=np.full((batch, 1), step, np.int64), cache_position=np.array([step], np.int64))
        out = run_exported(directory, "decode", feeds)
        tokens.append(out["logits"][:, -1].argmax(-1))
    return np.stack(tokens, 1), first_logits


def test_causal_lm_steps_reproduce_generate_and_torch(checkpoint, tmp_path):
    torch_model, path = checkpoint(transformers.LlamaForCausalLM, transformers.LlamaConfig(**LLAMA))
    meta = exporters.export(path, str(tmp_path), "text-generation", file_format="mindir", seq_len=5, cache_len=16)
    assert set(meta["graphs"]) == {"prefill", "decode"} and meta["cache_len"] == 16
    assert [s["name"] for s in meta["graphs"]["decode"]["inputs"]][:4] == ["input_ids", "attention_mask",
                                                                             "position_ids", "cache_position"]
    assert "generation_config.json" in os.listdir(tmp_path)
    prompt = np.random.RandomState(1).randint(3, VOCAB, (1, 5)).astype(np.int64)
    tokens, prefill_logits = greedy_with_exported_steps(str(tmp_path), prompt, max_new_tokens=8)

    model = exporters._load(path, "text-generation", None)[0]
    expected = model.generate(ms.Tensor(prompt), max_new_tokens=8, do_sample=False, min_new_tokens=8).asnumpy()
    np.testing.assert_array_equal(tokens, expected[:, 5:])
    assert np.abs(prefill_logits - model(input_ids=ms.Tensor(prompt)).logits.asnumpy()).max() <= ABS_BAR
    ref = parity.run_torch(torch_model, {"input_ids": prompt}).logits
    parity.assert_close({"logits": parity.rel_error(prefill_logits, ref)}, parity.FP32_BAR, "prefill")


T5 = dict(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_decoder_layers=3, num_heads=4,
          relative_attention_num_buckets=8, relative_attention_max_distance=12, decoder_start_token_id=0,
          pad_token_id=0, eos_token_id=1)


BART = dict(vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=37, decoder_ffn_dim=37, max_position_embeddings=40,
            pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2, forced_eos_token_id=None)


@pytest.mark.parametrize("torch_cls, config", [
    (transformers.T5ForConditionalGeneration, transformers.T5Config(**T5)),
    (transformers.BartForConditionalGeneration, transformers.BartConfig(**BART)),
], ids=["t5", "bart"])
def test_seq2seq_encoder_and_decoder_step_reproduce_generate_and_torch(checkpoint, tmp_path, torch_cls, config):
    torch_model, path = checkpoint(torch_cls, config)
    meta = exporters.export(path, str(tmp_path), "text2text-generation", seq_len=6, batch_size=2,
                            cache_len=12)
    assert set(meta["graphs"]) == {"encoder", "decoder"}
    inputs = text_inputs(batch=2, seq=6, seed=5)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    encoded = run_exported(str(tmp_path), "encoder", {"input_ids": ids, "attention_mask": mask})["last_hidden_state"]
    model = exporters._load(path, "text2text-generation", None)[0]
    ours = model.get_encoder()(input_ids=ms.Tensor(ids), attention_mask=ms.Tensor(mask), return_dict=True)
    assert np.abs(encoded - ours[0].asnumpy()).max() <= ABS_BAR
    ref = torch_model.get_encoder()(**parity.to_torch_inputs({"input_ids": ids, "attention_mask": mask}))
    parity.assert_close({"encoder": parity.rel_error(encoded, ref.last_hidden_state, mask == 1)}, parity.FP32_BAR)

    cache = {s["name"]: np.zeros(s["shape"], s["dtype"]) for s in meta["graphs"]["decoder"]["inputs"]
             if s["name"].startswith("past_key_values.")}
    token = np.full((2, 1), config.decoder_start_token_id, np.int64)
    tokens = []
    for step in range(8):
        out = run_exported(str(tmp_path), "decoder", dict(
            cache, decoder_input_ids=token, encoder_hidden_states=encoded, encoder_attention_mask=mask,
            cache_position=np.array([step], np.int64)))
        token = out["logits"][:, -1].argmax(-1)[:, None].astype(np.int64)
        tokens.append(token[:, 0])
        cache = {name.replace("present.", "past_key_values."): v for name, v in out.items() if name != "logits"}
    expected = model.generate(ms.Tensor(ids), attention_mask=ms.Tensor(mask), max_new_tokens=8, min_new_tokens=8,
                              do_sample=False).asnumpy()
    np.testing.assert_array_equal(np.stack(tokens, 1), expected[:, 1:])


def test_decode_graph_holds_no_native_kernel(checkpoint, tmp_path):
    """Batch-1 decoding is where the forward picks the native matrix-vector kernel; the export must not. Exporting a
    model object leaves its parameter names as they were."""
    _, path = checkpoint(transformers.LlamaForCausalLM, transformers.LlamaConfig(**LLAMA))
    model = exporters._load(path, "text-generation", None)[0]
    names = [p.name for p in model.get_parameters()]
    exporters.export(model, str(tmp_path), "text-generation", seq_len=3, cache_len=8)
    assert [p.name for p in model.get_parameters()] == names and names[0] == "model.embed_tokens.weight"
    data = open(tmp_path / "decode.mindir", "rb").read()
    assert b"MatMul" in data
    assert b"LinearNT" not in data and b"Custom" not in data
    if native.available():
        assert native.library_path().encode() not in data


def test_dynamic_axes_mindir_runs_other_shapes(checkpoint, tmp_path):
    _, path = checkpoint(transformers.BertForTokenClassification, transformers.BertConfig(**BERT))
    meta = exporters.export(path, str(tmp_path), "token-classification", dynamic=True)
    assert meta["graphs"]["model"]["inputs"][0]["shape"] == [None, None]
    assert meta["graphs"]["model"]["outputs"][0]["shape"] == [None, None, 3]
    # with a dynamic row count the forward's single-row native branch must not be traced either
    assert b"Custom" not in open(tmp_path / "model.mindir", "rb").read()
    model = exporters._load(path, "token-classification", None)[0]
    for batch, seq in ((1, 5), (3, 11)):
        inputs = text_inputs(batch=max(batch, 2), seq=seq)
        inputs = {k: v[:batch] for k, v in inputs.items()}
        out = run_mindir(str(tmp_path / "model.mindir"), list(inputs.values()))[0]
        assert np.abs(out - model(**parity.to_ms_inputs(inputs)).logits.asnumpy()).max() <= ABS_BAR


def test_unsupported_combinations_raise_naming_the_reason(checkpoint, tmp_path):
    _, bert = checkpoint(transformers.BertForTokenClassification, transformers.BertConfig(**BERT))
    _, llama = checkpoint(transformers.LlamaForCausalLM, transformers.LlamaConfig(**LLAMA))
    with pytest.raises(exporters.ExportError, match="dynamic axes are not supported for ONNX"):
        exporters.export(bert, str(tmp_path / "a"), "token-classification", file_format="onnx", dynamic=True)
    with pytest.raises(exporters.ExportError, match="dynamic axes are not supported for text-generation"):
        exporters.export(llama, str(tmp_path / "b"), "text-generation", dynamic=True)
    with pytest.raises(exporters.ExportError, match="Assign"):
        exporters.export(llama, str(tmp_path / "c"), "text-generation", file_format="onnx", seq_len=3, cache_len=8)
    with pytest.raises(exporters.ExportError, match="text2text-generation: .* Assign"):
        exporters.export(bert, str(tmp_path / "e"), "text2text-generation", file_format="onnx")
    with pytest.raises(exporters.ExportError, match="_supports_static_cache is False"):
        exporters.export(bert, str(tmp_path / "f"), "text-generation")  # BERT as a causal LM (is_decoder)
    with pytest.raises(ValueError, match="not exportable"):
        exporters.export(bert, str(tmp_path / "d"), "summarization")


def test_cli_export_writes_the_directory(checkpoint, tmp_path, capsys):
    _, path = checkpoint(transformers.BertForSequenceClassification, transformers.BertConfig(**BERT))
    code = cli.main(["export", "--model", path, "--task", "text-classification", "--format", "onnx",
                     "--output", str(tmp_path), "--seq-len", "6", "--batch", "2"])
    assert code == 0
    meta = json.load(open(tmp_path / exporters.METADATA_FILE))
    assert meta["graphs"]["model"]["inputs"][0]["shape"] == [2, 6] and meta["format"] == "onnx"
    assert "model.onnx" in capsys.readouterr().err
    # the checkpoint has no tokenizer: none is invented for the export (AutoTokenizer would build an empty one)
    assert not (tmp_path / "tokenizer_config.json").exists() and not (tmp_path / "tokenizer.json").exists()


def test_the_tokenizer_of_the_checkpoint_is_copied(checkpoint, tmp_path):
    from tests.generation.helpers import tiny_tokenizer

    _, path = checkpoint(transformers.BertForSequenceClassification, transformers.BertConfig(**BERT))
    source = tmp_path / "src"
    shutil.copytree(path, source)
    tiny_tokenizer().save_pretrained(str(source))
    exporters.export(str(source), str(tmp_path / "out"), "text-classification", file_format="mindir", seq_len=6)
    copied = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "out"))
    assert copied("the capital")["input_ids"] == tiny_tokenizer()("the capital")["input_ids"]


@pytest.mark.parametrize("argv,message", [
    (["--format", "tflite"], "invalid choice: 'tflite'"),
    (["--task", "summarization"], "invalid choice: 'summarization'"),
    (["--seq-len", "0"], "must be >= 1"),
])
def test_cli_export_usage_errors_exit_2_with_one_line(tmp_path, capsys, argv, message):
    base = {"--model": str(tmp_path), "--task": "fill-mask", "--format": "mindir", "--output": str(tmp_path / "o")}
    for flag, value in zip(argv[::2], argv[1::2]):
        base[flag] = value
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["export"] + [x for item in base.items() for x in item])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_cli_export_missing_model_exits_2(tmp_path, capsys):
    code = cli.main(["export", "--model", str(tmp_path / "nope"), "--task", "fill-mask", "--output", str(tmp_path)])
    assert code == 2
    assert "no such file or directory" in capsys.readouterr().err
