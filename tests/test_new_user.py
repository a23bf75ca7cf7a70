"""What a user coming from torch `transformers` hits first: bad token ids, torch habits, tokenizers on our tensors."""

import numpy as np
import pytest
import tokenizers
import torch
import transformers

import mindspore as ms
from mindone.transformers import (
    BertForSequenceClassification,
    LlamaForCausalLM,
    T5ForConditionalGeneration,
    pipeline,
)
from tests import parity

VOCAB = 99
LLAMA = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2)


@pytest.fixture(scope="module")
def llama():
    """(torch model, our model loaded from its checkpoint), tied embeddings so a parameter is shared."""
    config = transformers.LlamaConfig(**LLAMA, tie_word_embeddings=True)
    ref = parity.torch_reference(transformers.LlamaForCausalLM, config)
    return ref, parity.load_ours(LlamaForCausalLM, parity.save_torch(ref))


@pytest.fixture(scope="module")
def t5():
    config = transformers.T5Config(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=37, num_layers=1, num_heads=4,
                                   decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    return T5ForConditionalGeneration(config).eval()


def word_tokenizer(size):
    vocab = {f"w{i}": i for i in range(size)}
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="w0"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="w0", pad_token="w0")


# ---------------------------------------------------------------------------------------------------------------
# token ids out of range: a short Python error naming the id and the embedding size
# ---------------------------------------------------------------------------------------------------------------

def test_negative_input_id_raises_instead_of_wrapping_to_another_token(llama):
    _, model = llama
    with pytest.raises(IndexError, match=r"input_ids\[0, 1\] = -1 .* 99 rows"):
        model(ms.Tensor(np.array([[5, -1, 7]], np.int64)))


def test_id_at_vocab_size_raises_a_python_error_not_a_gather_kernel_error(llama):
    _, model = llama
    with pytest.raises(ValueError, match=r"input_ids\[1, 2\] = 99 .* 99 rows.*resize_token_embeddings"):
        model(input_ids=np.array([[5, 6, 7], [5, 6, 99]]))
    with pytest.raises(IndexError, match="= 150 "):
        model(ms.Tensor(np.array([[150]], np.int64)))  # positional, as a Tensor


def test_labels_with_ignore_index_are_not_token_ids(llama):
    _, model = llama
    out = model(input_ids=np.array([[5, 6, 7]]), labels=np.array([[-100, 6, 7]]))
    assert np.isfinite(out.loss.asnumpy())


@pytest.mark.parametrize("cache", ["static", "dynamic"])
def test_generate_checks_the_prompt_once_and_still_decodes_afterwards(llama, monkeypatch, cache):
    _, model = llama
    prompt = np.array([[5, 6, 7]])
    want = model.generate(prompt, max_new_tokens=4, do_sample=False, cache_implementation=cache).asnumpy()
    for bad, value in ((np.array([[5, VOCAB, 7]]), VOCAB), (np.array([[5, -3, 7]]), -3)):
        with pytest.raises(IndexError, match=rf"input_ids\[0, 1\] = {value} .* 99 rows"):
            model.generate(bad, max_new_tokens=4, do_sample=False, cache_implementation=cache)
    # a bad id that reached the compiled step's Gather used to leave the step broken for every later call
    from mindone.transformers import tensor_interop

    calls = []
    check = tensor_interop.check_token_ids
    monkeypatch.setattr(tensor_interop, "check_token_ids", lambda *a: calls.append(a[0]) or check(*a))
    got = model.generate(prompt, max_new_tokens=4, do_sample=False, cache_implementation=cache).asnumpy()
    np.testing.assert_array_equal(got, want)
    assert calls == ["input_ids"]  # the prompt only: no host check per decode step


def test_encoder_decoder_generate_checks_encoder_and_decoder_ids(t5):
    with pytest.raises(IndexError, match=r"input_ids\[0, 0\] = 120 .* 99 rows"):
        t5.generate(np.array([[120, 4, 1]]), max_new_tokens=2)
    with pytest.raises(IndexError, match=r"decoder_input_ids\[0, 1\] = -5 "):
        t5.generate(np.array([[3, 4, 1]]), decoder_input_ids=np.array([[0, -5]]), max_new_tokens=2)
    with pytest.raises(IndexError, match=r"decoder_input_ids\[0, 0\] = 99 "):
        t5(input_ids=np.array([[3, 4, 1]]), decoder_input_ids=np.array([[99]]))


def test_pipeline_with_a_tokenizer_larger_than_the_model_names_the_id():
    config = transformers.BertConfig(vocab_size=20, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                     intermediate_size=37, max_position_embeddings=32, num_labels=2)
    model = BertForSequenceClassification(config).eval()
    classify = pipeline("text-classification", model=model, tokenizer=word_tokenizer(30))
    assert len(classify("w3 w4 w5")) == 1
    assert classify.tokenizer("w3 w25 w5")["input_ids"] == [3, 25, 5]
    with pytest.raises(IndexError, match=r"= 25 .* 20 rows"):
        classify("w3 w25 w5")


# ---------------------------------------------------------------------------------------------------------------
# torch habits
# ---------------------------------------------------------------------------------------------------------------

def test_tokenizer_decodes_generate_output_like_torch(llama):
    _, model = llama
    tokenizer = word_tokenizer(VOCAB)
    out = model.generate(np.array([[5, 6, 7], [8, 9, 10]]), max_new_tokens=3, do_sample=False)
    rows = out.asnumpy().tolist()
    assert tokenizer.batch_decode(out) == tokenizer.batch_decode(rows)
    assert tokenizer.decode(out[0]) == tokenizer.decode(rows[0])
    assert tokenizer.decode(out[1, -1]) == tokenizer.decode(rows[1][-1])
    assert tokenizer.batch_decode(out, skip_special_tokens=True) == tokenizer.batch_decode(rows,
                                                                                          skip_special_tokens=True)


def test_list_inputs_work_and_torch_tensors_name_the_fix(llama):
    _, model = llama
    ids = [[5, 6, 7]]
    want = model(input_ids=np.array(ids)).logits.asnumpy()
    np.testing.assert_array_equal(model(input_ids=ids, attention_mask=[[1, 1, 1]]).logits.asnumpy(), want)
    np.testing.assert_array_equal(model(ids).logits.asnumpy(), want)
    with pytest.raises(TypeError, match="input_ids is a torch.Tensor.*return_tensors='np'"):
        model(input_ids=torch.tensor(ids))
    with pytest.raises(TypeError, match="attention_mask is a torch.Tensor"):
        model(np.array(ids), torch.ones(1, 3))  # positional: named after construct's parameter
    with pytest.raises(TypeError, match="input_ids is a torch.Tensor.*return_tensors='np'"):
        model.generate(torch.tensor(ids), max_new_tokens=2)


def test_device_parameters_and_memory_footprint_match_torch(llama):
    ref, model = llama
    assert model.device == "cpu" and str(model.device) == "cpu" and model.device.type == "cpu"
    assert repr(model.device) == "device(type='cpu')"
    ours = dict(model.named_parameters())
    theirs = dict(ref.named_parameters())  # the tied lm_head.weight appears once, as in torch
    assert list(ours) == list(theirs)
    assert all(isinstance(p, ms.Parameter) for p in model.parameters())
    assert len(list(model.parameters())) == len(list(ref.parameters()))
    assert [n for n, _ in model.named_parameters(prefix="m")][0] == "m.model.embed_tokens.weight"
    assert model.get_memory_footprint(return_buffers=False) == ref.get_memory_footprint(return_buffers=False)
    assert model.get_memory_footprint() >= model.get_memory_footprint(return_buffers=False)
    # the Cell API the Trainer and MindSpore optimizers use is unchanged
    assert {id(p) for p in model.trainable_params()} == {id(p) for p in model.parameters()}


def test_to_cpu_and_dtype_casts_like_torch():
    model = LlamaForCausalLM(transformers.LlamaConfig(**LLAMA)).eval()
    assert model.to("cpu") is model and model.cpu() is model and model.to(torch.device("cpu")) is model
    assert model.to("cpu", torch.float16).dtype == ms.float16
    assert model.float().dtype == ms.float32
    assert model.to(dtype="float16").dtype == ms.float16
    assert model.to(ms.Tensor(np.zeros(1, np.float32))).dtype == ms.float32
    assert model.half().to(device="cpu", dtype=torch.float32).dtype == ms.float32
    with pytest.raises(ValueError, match=r"set_device\('GPU'\)"):
        model.to("cuda")
    with pytest.raises(ValueError, match="unknown device 'mps'"):
        model.to("mps")
