"""VisionEncoderDecoder parity with torch `transformers` on tiny random checkpoints (tests/parity.py): vision encoders
of our own families (through AutoModel) with causal-LM decoders that have cross-attention (through
AutoModelForCausalLM), logits / loss / gradients, greedy and beam tokens, and the image-to-text pipeline."""

import copy

import numpy as np
import pytest
import torch
import transformers
from safetensors.numpy import load_file
from transformers import VisionEncoderDecoderConfig

import mindspore as ms
from mindone.transformers import (
    AutoModelForImageTextToText,
    BertLMHeadModel,
    CLIPVisionModel,
    Dinov2Model,
    GPT2LMHeadModel,
    RobertaForCausalLM,
    SiglipVisionModel,
    ViTModel,
    VisionEncoderDecoderModel,
)
from tests import parity
from tests.models.head_parity import compiled_decode_steps

SIZE = 16
VOCAB = 99
BOS, EOS, PAD = 1, 2, 0
ENCODER = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4)
VISION = {
    "vit": lambda: transformers.ViTConfig(**ENCODER, intermediate_size=37, image_size=SIZE, patch_size=4),
    "clip_vision_model": lambda: transformers.CLIPVisionConfig(**ENCODER, intermediate_size=37, image_size=SIZE,
                                                               patch_size=4),
    "dinov2": lambda: transformers.Dinov2Config(**ENCODER, mlp_ratio=2, image_size=SIZE, patch_size=4),
    "siglip_vision_model": lambda: transformers.SiglipVisionConfig(**ENCODER, intermediate_size=37, image_size=SIZE,
                                                                   patch_size=4),
}
DECODER = dict(is_decoder=True, add_cross_attention=True, bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD)
TEXT = {
    # 24 wide: the encoder's 32-wide states go through enc_to_dec_proj
    "gpt2": lambda vocab=VOCAB: transformers.GPT2Config(vocab_size=vocab, n_embd=24, n_layer=2, n_head=4,
                                                        n_positions=64, **DECODER),
    "bert": lambda vocab=VOCAB: transformers.BertConfig(**ENCODER, vocab_size=vocab, intermediate_size=37,
                                                        max_position_embeddings=64, **DECODER),
    "roberta": lambda vocab=VOCAB: transformers.RobertaConfig(hidden_size=32, num_hidden_layers=2,
                                                              num_attention_heads=4, vocab_size=vocab,
                                                              intermediate_size=37, max_position_embeddings=66,
                                                              **{**DECODER, "pad_token_id": 3}),
}
OURS = {"vit": ViTModel, "clip_vision_model": CLIPVisionModel, "dinov2": Dinov2Model,
        "siglip_vision_model": SiglipVisionModel, "gpt2": GPT2LMHeadModel, "bert": BertLMHeadModel,
        "roberta": RobertaForCausalLM}
# (encoder, decoder) pairs; every test uses the first unless it says otherwise
COMBOS = [("vit", "gpt2"), ("clip_vision_model", "bert"), ("dinov2", "roberta"), ("siglip_vision_model", "gpt2")]
FIELDS = ["logits", "loss", "encoder_last_hidden_state"]


def ved_config(encoder, decoder, vocab=VOCAB):
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(VISION[encoder](), TEXT[decoder](vocab))
    config.decoder_start_token_id = BOS
    config.pad_token_id = config.decoder.pad_token_id
    config.eos_token_id = EOS
    for sub in (config.encoder, config.decoder):
        sub._attn_implementation = "eager"
    return config


def torch_ved(config, seed=0):
    model = parity.torch_reference(transformers.VisionEncoderDecoderModel, config, seed=seed)
    with torch.no_grad():
        # sharpen the tied head's random logits so greedy / beam choices are not near-ties, and strengthen the
        # image's path (three 0.02-std matrices in a row at initialisation) so the tokens depend on the image
        model.decoder.get_output_embeddings().weight.mul_(4.0)
        if model.config.decoder.model_type == "gpt2":
            model.decoder.transformer.wpe.weight.mul_(8.0)
            for block in model.decoder.transformer.h:
                block.crossattention.c_attn.weight.mul_(20.0)
                block.crossattention.c_proj.weight.mul_(20.0)
        if getattr(model, "enc_to_dec_proj", None) is not None:
            model.enc_to_dec_proj.weight.mul_(20.0)
    return model


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    cache = {}

    def get(encoder, decoder):
        if (encoder, decoder) not in cache:
            model = torch_ved(ved_config(encoder, decoder))
            cache[(encoder, decoder)] = (model, parity.save_torch(
                model, str(tmp_path_factory.mktemp(f"ved-{encoder}-{decoder}"))))
        return cache[(encoder, decoder)]

    return get


def pixels(seed=0, batch=2):
    """Images of different mean colours (the encoder's states then differ beyond noise that attention averages)."""
    rng = np.random.RandomState(seed)
    return (rng.randn(batch, 3, 1, 1) * 2 + 0.5 * rng.randn(batch, 3, SIZE, SIZE)).astype(np.float32)


def labels(seed=0):
    """Two rows of targets, the second ending in ignored (-100) positions."""
    out = np.random.RandomState(seed).randint(3, VOCAB, (2, 7)).astype(np.int64)
    out[1, 5:] = -100
    return out


@pytest.mark.parametrize("combo, mode", [(c, "pynative") for c in COMBOS] + [(COMBOS[0], "graph")] + [
    pytest.param(COMBOS[1], "graph", marks=pytest.mark.slow)])
def test_logits_and_loss_match_torch_fp32(checkpoints, combo, mode):
    torch_model, path = checkpoints(*combo)
    ours = parity.load_ours(VisionEncoderDecoderModel, path)
    assert type(ours.encoder) is OURS[combo[0]] and type(ours.decoder) is OURS[combo[1]]
    assert (ours.enc_to_dec_proj is not None) == (combo[1] == "gpt2")
    inputs = dict(pixel_values=pixels(), labels=labels())
    errors = parity.compare_outputs(parity.run_ours(ours, inputs, mode), parity.run_torch(torch_model, inputs), FIELDS)
    parity.assert_close(errors, parity.FP32_BAR, f"{combo}/{mode}")


def test_all_outputs_match_torch_with_decoder_mask(checkpoints):
    """decoder_input_ids with a padding mask; hidden states, self- and cross-attentions of both parts."""
    torch_model, path = checkpoints(*COMBOS[0])
    ours = parity.load_ours(VisionEncoderDecoderModel, path)
    ids = np.random.RandomState(1).randint(3, VOCAB, (2, 6)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[1, 4:] = 0
    inputs = dict(pixel_values=pixels(1), decoder_input_ids=ids, decoder_attention_mask=mask,
                  output_attentions=True, output_hidden_states=True)
    out, ref = parity.run_ours(ours, inputs), parity.run_torch(torch_model, inputs)
    fields = ["logits", "decoder_hidden_states", "decoder_attentions", "cross_attentions", "encoder_hidden_states",
              "encoder_attentions"]
    rows = mask.astype(bool)
    errors = parity.compare_outputs(out, ref, ["logits", "decoder_hidden_states"], rows=rows)
    errors.update(parity.compare_outputs(out, ref, fields[2:]))
    parity.assert_close(errors, parity.FP32_BAR)


@pytest.mark.parametrize("mode", ["pynative", pytest.param("graph", marks=pytest.mark.slow)])
def test_fp16_within_torch_fp16_error(checkpoints, mode):
    """fp16 vs torch fp32: within FP16_BAR, or within 1.25x of torch's own fp16 error if that is larger."""
    torch_model, path = checkpoints(*COMBOS[0])
    inputs = dict(pixel_values=pixels(2), labels=labels(2))
    ref = parity.run_torch(torch_model, inputs)
    torch_fp16 = copy.deepcopy(torch_model).half()
    torch_errors = parity.compare_outputs(parity.run_torch(torch_fp16, dict(
        pixel_values=inputs["pixel_values"].astype(np.float16), labels=inputs["labels"])), ref, FIELDS)
    ours = parity.load_ours(VisionEncoderDecoderModel, path, dtype="float16")
    assert ours.decoder.transformer.wte.weight.dtype == ms.float16
    assert ours.enc_to_dec_proj.weight.dtype == ms.float16
    errors = parity.compare_outputs(parity.run_ours(ours, dict(
        pixel_values=inputs["pixel_values"].astype(np.float16), labels=inputs["labels"]), mode), ref, FIELDS)
    bad = {k: (v, torch_errors[k]) for k, v in errors.items() if v > max(parity.FP16_BAR, 1.25 * torch_errors[k])}
    assert not bad, f"fp16/{mode}: (ours, torch fp16) errors vs torch fp32: {bad}"


@pytest.mark.parametrize("mode", ["pynative", pytest.param("graph", marks=pytest.mark.slow)])
def test_gradients_match_torch(checkpoints, mode):
    # SigLIP's torch module names are its checkpoint keys (HF 5's ViT renames its modules in memory)
    torch_model, path = checkpoints(*COMBOS[3])
    ours = parity.load_ours(VisionEncoderDecoderModel, path)
    inputs = dict(pixel_values=pixels(3), labels=labels(3))
    # judged against torch in float64: the cross-attention query gradients are sums of cancelling terms, on which
    # torch fp32 itself is 1e-4-ish from float64
    ref_loss, ref_grads = parity.torch_gradients(copy.deepcopy(torch_model).double(),
                                                 dict(inputs, pixel_values=inputs["pixel_values"].astype(np.float64)))
    loss, grads = parity.our_gradients(ours, inputs, mode)
    # a key bias shifts every score of a query equally, so softmax makes its true gradient zero: both sides hold noise
    key_biases = [k for k in ref_grads if k.endswith("k_proj.bias")]
    assert max(float(np.abs(parity.to_numpy(grads[k])).max()) for k in key_biases) < 1e-6
    # the token / position tables get gradient only on the rows in the batch: those rows are compared, the others
    # must be zero on our side too
    tables = ["decoder.transformer.wte.weight", "decoder.transformer.wpe.weight"]
    # LOOSENED (bar 2e-4 vs float64, the cross-attention query weights only): their gradients are sums of
    # cancelling terms. Measured vs float64: torch fp32 1.6e-4 (layer 0) / 6.4e-5 (layer 1), ours 1.0e-4 / 1.2e-4
    queries = [k for k in ref_grads if k.endswith("crossattention.q_attn.weight")]
    bad = {k: parity.rel_error(grads[k], ref_grads[k]) for k in queries}
    assert not {k: e for k, e in bad.items() if e > 2 * parity.GRAD_BAR}, f"query gradients vs float64: {bad}"
    skip = key_biases + tables + queries
    errors = parity.compare_gradients(grads, {k: v for k, v in ref_grads.items() if k not in skip})
    for name in tables:
        used = ref_grads[name].abs().sum(-1).numpy() > 0
        assert not np.abs(parity.to_numpy(grads[name])[~used]).any(), f"{name}: gradient on unused rows"
        errors[name] = parity.rel_error(grads[name], ref_grads[name], rows=used)
    errors["loss"] = parity.rel_error(loss, ref_loss)
    parity.assert_close(errors, parity.GRAD_BAR, f"grads/{mode}")


@pytest.fixture(scope="module")
def generation_pair(checkpoints):
    """(torch model, ours) for the generation tests: one instance of ours, so its compiled decode steps are reused."""
    torch_model, path = checkpoints(*COMBOS[0])
    return torch_model, parity.load_ours(VisionEncoderDecoderModel, path)


@pytest.mark.parametrize("num_beams", [1, 3])
def test_generate_matches_torch_on_the_compiled_path(generation_pair, num_beams):
    """GPT-2 decoder: the image is encoded once, decode steps run compiled with the encoder's cross-attention
    keys/values in an EncoderDecoderStaticCache; a PyNative run with a growing cache gives the same tokens."""
    torch_model, ours = generation_pair
    # 3 images greedy or 1 image with 3 beams: one compiled step (3 rows) serves both
    pix = pixels(4, batch=3 // num_beams)
    with torch.no_grad():
        ref = torch_model.generate(torch.from_numpy(pix), max_new_tokens=8, num_beams=num_beams).numpy()
    if num_beams == 1:
        assert len({tuple(r) for r in ref}) == 3  # the tokens depend on the image
    out = parity.to_numpy(ours.generate(pix, max_new_tokens=8, num_beams=num_beams))
    assert np.array_equal(out, ref), f"ours:\n{out}\ntorch:\n{ref}"
    assert compiled_decode_steps(ours)
    eager = parity.to_numpy(ours.generate(pixel_values=pix, max_new_tokens=8, num_beams=num_beams,
                                          cache_implementation="dynamic"))
    assert np.array_equal(eager, ref)


def test_generate_with_bert_decoder_and_decoder_prompt_matches_torch(checkpoints):
    """A decoder without static-cache support decodes in PyNative; `decoder_input_ids` continue a prompt."""
    torch_model, path = checkpoints(*COMBOS[1])
    ours = parity.load_ours(VisionEncoderDecoderModel, path)
    pix = pixels(5)
    prompt = np.array([[BOS, 7, 9], [BOS, 11, 4]], np.int64)
    with torch.no_grad():
        ref = torch_model.generate(torch.from_numpy(pix), decoder_input_ids=torch.from_numpy(prompt),
                                   max_new_tokens=6).numpy()
    out = parity.to_numpy(ours.generate(pix, decoder_input_ids=prompt, max_new_tokens=6))
    assert np.array_equal(out, ref), f"ours:\n{out}\ntorch:\n{ref}"
    assert not compiled_decode_steps(ours)


def test_generate_from_given_encoder_outputs(generation_pair):
    torch_model, ours = generation_pair
    pix = pixels(6, batch=3)
    encoder_outputs = ours.get_encoder()(pixel_values=ms.Tensor(pix))
    with torch.no_grad():
        ref = torch_model.generate(torch.from_numpy(pix), max_new_tokens=5).numpy()
    out = ours.generate(encoder_outputs=encoder_outputs, max_new_tokens=5)
    assert np.array_equal(parity.to_numpy(out), ref)


def test_return_dict_false_gives_hf_tuple_order(checkpoints):
    torch_model, path = checkpoints(*COMBOS[0])
    ours = parity.load_ours(VisionEncoderDecoderModel, path)
    inputs = dict(pixel_values=pixels(), labels=labels(), return_dict=False, use_cache=False)
    out, ref = parity.run_ours(ours, inputs), parity.run_torch(torch_model, inputs)
    assert isinstance(out, tuple) and len(out) == len(ref)
    for a, b in zip(out, ref):
        assert parity.rel_error(a, b) <= parity.FP32_BAR


def test_checkpoint_keys_and_save_round_trip_through_torch(checkpoints, tmp_path):
    torch_model, path = checkpoints(*COMBOS[0])
    ours = parity.load_ours(VisionEncoderDecoderModel, path)
    assert ours.decoder.lm_head.weight is ours.decoder.transformer.wte.weight  # the decoder's own tying
    ours.save_pretrained(str(tmp_path))
    saved, original = load_file(str(tmp_path / "model.safetensors")), load_file(f"{path}/model.safetensors")
    assert sorted(saved) == sorted(original)
    assert any(k.endswith("crossattention.q_attn.weight") for k in saved) and "enc_to_dec_proj.weight" in saved
    reloaded = transformers.VisionEncoderDecoderModel.from_pretrained(str(tmp_path)).eval()
    inputs = dict(pixel_values=pixels(), labels=labels())
    parity.assert_close(parity.compare_outputs(parity.run_ours(ours, inputs), parity.run_torch(reloaded, inputs),
                                               FIELDS), parity.FP32_BAR)


def test_auto_class_as_hf(checkpoints):
    """HF 5 lists the model under AutoModelForImageTextToText only (there is no AutoModelForVision2Seq)."""
    _, path = checkpoints(*COMBOS[0])
    assert type(transformers.AutoModelForImageTextToText.from_pretrained(path)).__name__ == \
        "VisionEncoderDecoderModel"
    assert type(AutoModelForImageTextToText.from_pretrained(path)) is VisionEncoderDecoderModel


def test_from_encoder_decoder_pretrained_loads_the_same_parts_as_torch(tmp_path):
    """A ViT and a GPT-2 without cross-attention, saved by torch: the decoder gets cross-attention layers (new, as in
    HF) and every other weight equals torch's `from_encoder_decoder_pretrained`."""
    encoder = parity.torch_reference(transformers.ViTModel, VISION["vit"]())
    decoder_config = TEXT["gpt2"]()
    decoder_config.is_decoder, decoder_config.add_cross_attention = False, False
    decoder = parity.torch_reference(transformers.GPT2LMHeadModel, decoder_config, seed=1)
    encoder.save_pretrained(str(tmp_path / "enc"))
    decoder.save_pretrained(str(tmp_path / "dec"))
    ref = transformers.VisionEncoderDecoderModel.from_encoder_decoder_pretrained(str(tmp_path / "enc"),
                                                                                str(tmp_path / "dec"))
    ours = VisionEncoderDecoderModel.from_encoder_decoder_pretrained(str(tmp_path / "enc"), str(tmp_path / "dec"))
    assert ours.config.decoder.add_cross_attention and ours.config.decoder.is_decoder
    assert not ours.training
    ref.save_pretrained(str(tmp_path / "ref"))
    saved = load_file(str(tmp_path / "ref" / "model.safetensors"))
    state = ours.state_dict()
    assert sorted(state) == sorted(saved)
    new = [k for k in saved if "crossattention" in k or "ln_cross_attn" in k or k.startswith("enc_to_dec_proj")]
    assert new
    for key, value in saved.items():
        if key not in new:
            np.testing.assert_array_equal(state[key], value, err_msg=key)
    with pytest.raises(ValueError, match="decoder_pretrained_model_name_or_path"):
        VisionEncoderDecoderModel.from_encoder_decoder_pretrained(str(tmp_path / "enc"))


def test_built_from_config_or_parts():
    config = ved_config(*COMBOS[2])
    model = VisionEncoderDecoderModel(config)
    assert type(model.encoder) is Dinov2Model and type(model.decoder) is RobertaForCausalLM
    assert model.enc_to_dec_proj is None and model.decoder.config is model.config.decoder
    again = VisionEncoderDecoderModel(encoder=model.encoder, decoder=model.decoder)
    assert again.config.decoder.model_type == "roberta"
    with pytest.raises(ValueError, match="Either a configuration"):
        VisionEncoderDecoderModel()


@pytest.fixture(scope="module")
def caption_dir(tmp_path_factory):
    """A tiny ViT+GPT-2 captioner with a byte-level tokenizer and a ViT image processor saved beside it."""
    from tests.generation.helpers import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    try:
        import torchvision  # noqa: F401  (the default processor's backend)
        image_processor = transformers.ViTImageProcessor(size={"height": SIZE, "width": SIZE})
    except ImportError:
        image_processor = transformers.ViTImageProcessorPil(size={"height": SIZE, "width": SIZE})
    config = ved_config("vit", "gpt2", vocab=len(tokenizer))
    model = torch_ved(config, seed=7)
    directory = str(tmp_path_factory.mktemp("ved-caption"))
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    image_processor.save_pretrained(directory)
    return directory, model, tokenizer, image_processor


def test_image_to_text_pipeline_matches_torch(caption_dir):
    """transformers 5 has no image-to-text pipeline any more (it becomes image-text-to-text, which needs a processor
    and a prompt): the reference is what HF 4.x's pipeline computed, torch's generate on the image processor's
    pixels decoded with skip_special_tokens=True."""
    from PIL import Image

    from mindone.transformers import pipeline

    directory, torch_model, tokenizer, image_processor = caption_dir
    rng = np.random.RandomState(0)
    colours = [(230, 40, 40), (30, 200, 60), (40, 60, 220)]
    images = [Image.fromarray(np.clip(np.array(c) + rng.randint(-30, 30, (20 + 5 * i, 24, 3)), 0, 255)
                              .astype(np.uint8)) for i, c in enumerate(colours)]
    pix = torch.from_numpy(np.asarray(image_processor(images=images, return_tensors="np")["pixel_values"]))
    with torch.no_grad():
        ref_ids = torch_model.generate(pix, max_new_tokens=6)
    expected = [[{"generated_text": t}] for t in tokenizer.batch_decode(ref_ids, skip_special_tokens=True)]
    assert len({e[0]["generated_text"] for e in expected}) > 1

    captioner = pipeline("image-to-text", model=directory)
    assert type(captioner.model) is VisionEncoderDecoderModel
    # PyNative decoding: the compiled path is checked above, here it would only compile a graph per batch shape
    captioner.model.generation_config.cache_implementation = "dynamic"
    assert captioner(images, max_new_tokens=6, batch_size=2) == expected
    assert captioner(images[1], generate_kwargs={"max_new_tokens": 6}) == expected[1]

    prompt = "The capital"
    prompt_ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        ref_prompted = torch_model.generate(pix[:1], decoder_input_ids=prompt_ids, max_new_tokens=4)
    assert captioner(images[0], prompt=prompt, max_new_tokens=4) == \
        [{"generated_text": tokenizer.decode(ref_prompted[0], skip_special_tokens=True)}]


def test_docs_captioning_snippet_matches_torch(caption_dir, tmp_path):
    """docs/models.md's captioning snippet, run as written from a directory holding the tiny captioner under the
    snippet's name."""
    import os
    import shutil

    from PIL import Image

    from tests.docs.test_t5_clip_snippets import ROOT, python_blocks, run

    directory, torch_model, tokenizer, image_processor = caption_dir
    shutil.copytree(directory, str(tmp_path / "vit-gpt2-image-captioning"))
    (block,) = python_blocks(os.path.join(ROOT, "docs/models.md"), must_contain="vit-gpt2-image-captioning")
    image = Image.fromarray(np.full((20, 24, 3), (30, 200, 60), np.uint8))
    ns, printed = run(block, str(tmp_path), image=image)
    pix = torch.from_numpy(np.asarray(image_processor(images=[image], return_tensors="np")["pixel_values"]))
    with torch.no_grad():
        greedy = torch_model.generate(pix, max_new_tokens=16)
    assert np.array_equal(parity.to_numpy(ns["output_ids"]), greedy.numpy())
    assert ns["captions"] == tokenizer.batch_decode(greedy, skip_special_tokens=True)
    assert compiled_decode_steps(ns["model"])
    expected = [{"generated_text": tokenizer.decode(greedy[0], skip_special_tokens=True)}]
    assert printed.strip() == str(expected)
