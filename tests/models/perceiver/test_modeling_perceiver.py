"""Perceiver IO parity with torch `transformers` on tiny random checkpoints (tests/parity.py): the bare model on
padded feature inputs, the masked-LM and sequence-classification heads (text preprocessor, trainable-position
decoders) with losses, the image heads (learned, Fourier, conv processing), optical flow and multimodal
autoencoding (subsampled decoding, per-modality postprocessors), fp16 and gradients."""

import copy

import numpy as np
import pytest
import torch
import transformers

from mindone.transformers import (
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    PerceiverForImageClassificationConvProcessing,
    PerceiverForImageClassificationFourier,
    PerceiverForImageClassificationLearned,
    PerceiverForMaskedLM,
    PerceiverForMultimodalAutoencoding,
    PerceiverForOpticalFlow,
    PerceiverForSequenceClassification,
    PerceiverModel,
)
from tests import parity
from tests.models import head_parity, vision_parity

VOCAB, MAX_POSITIONS = 30, 12
# two blocks over two weight-shared self-attention layers; d_model divisible by the MLM decoder's 8 heads
CONFIG = dict(num_latents=6, d_latents=16, d_model=16, num_blocks=2, num_self_attends_per_block=2,
              num_self_attention_heads=2, num_cross_attention_heads=1, vocab_size=VOCAB,
              max_position_embeddings=MAX_POSITIONS, num_labels=3, attention_probs_dropout_prob=0.0, image_size=4)


def make_config(**overrides):
    return transformers.PerceiverConfig(**{**CONFIG, **overrides})


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    get = head_parity.checkpoint_factory(tmp_path_factory, make_config)

    def sharpened(torch_cls, **overrides):
        model, path = get(torch_cls, **overrides)
        if not getattr(model, "_sharpened", False):
            # initializer_range 0.02 leaves every attention near-uniform, and the query/key gradients then are tiny
            # sums of cancelling terms that neither fp32 side computes to 1e-4 (torch fp32 is up to 1e-3 off float64
            # there): scaled query/key weights give the attention real structure
            with torch.no_grad():
                for name, p in model.named_parameters():
                    if name.endswith(("query.weight", "key.weight")):
                        p.mul_(8.0)
            model._sharpened = True
            parity.save_torch(model, path)
        return model, path

    return sharpened


def text(seed=0, length=MAX_POSITIONS):
    rng = np.random.RandomState(seed)
    ids = rng.randint(1, VOCAB, (2, length))
    mask = np.ones((2, length), np.int64)
    mask[1, length - 4:] = 0
    ids[mask == 0] = 0
    return ids, mask


FIELDS = ["last_hidden_state", "hidden_states", "attentions", "cross_attentions"]


@pytest.mark.parametrize("mode", parity.MODES)
def test_model_on_features_matches_torch(checkpoints, mode):
    torch_model, path = checkpoints(transformers.PerceiverModel)
    _, mask = text(seed=1, length=9)
    inputs = dict(inputs=np.random.RandomState(1).randn(2, 9, 16).astype(np.float32), attention_mask=mask,
                  output_hidden_states=True, output_attentions=True)
    out, _ = head_parity.assert_matches_torch(PerceiverModel, torch_model, path, inputs, FIELDS, mode)
    assert len(out["hidden_states"]) == 2 * (2 + 1) and out.get("logits") is None


@pytest.mark.parametrize("mode", vision_parity.PYNATIVE_AND_SLOW_GRAPH)
def test_masked_lm_matches_torch(checkpoints, mode):
    torch_model, path = checkpoints(transformers.PerceiverForMaskedLM)
    ids, mask = text(seed=2)
    labels = np.where(np.random.RandomState(2).rand(2, MAX_POSITIONS) < 0.5, ids, -100)
    inputs = dict(inputs=ids, attention_mask=mask, labels=labels, output_hidden_states=True, output_attentions=True)
    head_parity.assert_matches_torch(PerceiverForMaskedLM, torch_model, path, inputs,
                                     ["logits", "loss", "hidden_states", "attentions", "cross_attentions"], mode)


@pytest.mark.parametrize("mode", vision_parity.PYNATIVE_AND_SLOW_GRAPH)
def test_sequence_classification_matches_torch(checkpoints, mode):
    torch_model, path = checkpoints(transformers.PerceiverForSequenceClassification)
    ids, mask = text(seed=3, length=9)
    inputs = dict(input_ids=ids, attention_mask=mask, labels=np.array([2, 0], np.int64), output_attentions=True)
    head_parity.assert_matches_torch(PerceiverForSequenceClassification, torch_model, path, inputs,
                                     ["logits", "loss", "cross_attentions"], mode)


@pytest.mark.parametrize("mode", vision_parity.PYNATIVE_AND_SLOW_GRAPH)
@pytest.mark.parametrize("head", [PerceiverForImageClassificationLearned, PerceiverForImageClassificationFourier],
                         ids=["learned", "fourier"])
def test_image_classification_matches_torch(checkpoints, head, mode):
    """4x4 images: a 1x1 conv + 16 learned positions, or the pixels + Fourier features of a [-1, 1] grid (built in
    float32 as torch builds them)."""
    torch_model, path = checkpoints(getattr(transformers, head.__name__))
    inputs = dict(pixel_values=np.random.RandomState(6).randn(2, 3, 4, 4).astype(np.float32),
                  labels=np.array([0, 2], np.int64), output_hidden_states=True, output_attentions=True)
    out, ref = head_parity.assert_matches_torch(head, torch_model, path, inputs, ["logits", "loss", "hidden_states"],
                                                mode)
    # probabilities (16 inputs, mean 1/16): the metric doubles softmax noise, as for the other attention maps
    error = parity.compare_outputs(out, ref, ["cross_attentions"])["cross_attentions"] / 2
    parity.assert_close({"cross_attentions": error}, parity.FP32_BAR, mode)


def test_fp16_within_torch_fp16_error(checkpoints):
    torch_model, path = checkpoints(transformers.PerceiverForMaskedLM)
    ids, mask = text(seed=4)
    vision_parity.assert_fp16_close(PerceiverForMaskedLM, torch_model, path, dict(inputs=ids, attention_mask=mask),
                                    "logits", "pynative")


@pytest.mark.parametrize("head", [PerceiverForMaskedLM, PerceiverForSequenceClassification,
                                  PerceiverForImageClassificationLearned,
                                  PerceiverForImageClassificationConvProcessing], ids=lambda h: h.__name__)
def test_gradients_match_torch(checkpoints, head):
    """Against torch in float64: <= 1e-4 relative. Gradients whose float64 value is below 1e-6 everywhere (the
    decoder's query/key path: the latents it attends to are nearly alike, so its attention barely moves the loss;
    key biases: softmax is shift-invariant) are rounding noise on both sides (torch fp32 is up to 1e-3 off float64
    there, relatively) and are checked absolutely (< 1e-6). Embedding rows no token uses must have exactly zero
    gradients and are left out of the relative metric."""
    torch_model, path = checkpoints(getattr(transformers, head.__name__))
    ids, mask = text(seed=5)
    labels = ids.copy() if head is PerceiverForMaskedLM else np.array([1, 2], np.int64)
    inputs = dict(inputs=ids, attention_mask=mask, labels=labels)
    if head is PerceiverForImageClassificationLearned:
        inputs = dict(inputs=np.random.RandomState(5).randn(2, 3, 4, 4).astype(np.float32), labels=labels)
    if head is PerceiverForImageClassificationConvProcessing:
        inputs = dict(inputs=np.random.RandomState(5).randn(2, 3, 16, 16).astype(np.float32), labels=labels)
    inputs64 = {k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in inputs.items()}
    ref_loss, ref = parity.torch_gradients(copy.deepcopy(torch_model).double(), inputs64)
    loss, ours = parity.our_gradients(parity.load_ours(head, path), inputs)
    errors = {"loss": parity.rel_error(loss, ref_loss)}
    for name, grad in ref.items():
        grad, mine = grad.numpy(), parity.to_numpy(ours[name])
        if np.abs(grad).max() < 1e-6:
            assert np.abs(mine).max() < 1e-6, f"{name}: gradient should be ~0, got {np.abs(mine).max():.2e}"
            continue
        used = grad != 0
        assert np.all(mine[~used] == 0), f"{name}: gradient should be 0 where torch's is exactly 0"
        errors[name] = parity.rel_error(mine, grad, used if not used.all() else None)
    parity.assert_close(errors, parity.GRAD_BAR, f"grads/{head.__name__}")


def test_auto_classes_resolve_perceiver(checkpoints):
    _, path = checkpoints(transformers.PerceiverForMaskedLM)
    assert type(AutoModelForMaskedLM.from_pretrained(path)) is PerceiverForMaskedLM
    _, path = checkpoints(transformers.PerceiverForSequenceClassification)
    assert type(AutoModelForSequenceClassification.from_pretrained(path)) is PerceiverForSequenceClassification


# --- conv-processing image classifier, optical flow, multimodal autoencoding --------------------------------------

# optical flow on 4x6 frames; a 2-frame 8x8 video (2x2 patches of 4x4 per frame), 16 audio samples in patches of 4
FLOW = dict(train_size=[4, 6])
MULTIMODAL = dict(num_frames=2, audio_samples_per_frame=8, samples_per_patch=4, image_size=8,
                  output_shape=[1, 2, 8, 8], output_num_channels=8, _label_trainable_num_channels=6)


@pytest.fixture(scope="module")
def conv_processing(checkpoints):
    """The conv-processing classifier with non-trivial batch-norm statistics and affine parameters."""
    torch_model, path = checkpoints(transformers.PerceiverForImageClassificationConvProcessing)
    if not getattr(torch_model, "_batchnorm_set", False):
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            norm = torch_model.perceiver.input_preprocessor.convnet.batchnorm
            for tensor, low, high in ((norm.running_mean, -0.5, 0.5), (norm.running_var, 0.5, 2.0),
                                      (norm.weight, 0.5, 1.5), (norm.bias, -0.5, 0.5)):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) * (high - low) + low)
        torch_model._batchnorm_set = True
        parity.save_torch(torch_model, path)
    return torch_model, path


def flow_inputs(seed=0):
    """Two frames of 3x3 patches around each pixel of a 4x6 image: (B, 2, 27, H, W)."""
    return np.random.RandomState(seed).randn(2, 2, 27, 4, 6).astype(np.float32)


def multimodal_inputs(seed=0):
    """(inputs, subsampled_output_points): audio, a 2-frame video, a label (masked by the model) and the decoded
    points (flat patch indices of the audio, flat (T, H, W) pixel indices of the video)."""
    rng = np.random.RandomState(seed)
    inputs = {"audio": rng.randn(2, 16, 1).astype(np.float32), "image": rng.randn(2, 2, 3, 8, 8).astype(np.float32),
              "label": np.eye(3, dtype=np.float32)[[0, 2]]}
    points = {"audio": np.array([1, 2], np.int64), "image": np.array([0, 5, 17, 63, 100, 127], np.int64),
              "label": None}
    return inputs, points


def _ms(value):
    import mindspore as ms

    return {k: _ms(v) for k, v in value.items()} if isinstance(value, dict) else (
        None if value is None else ms.Tensor(value))


def _torch(value):
    return {k: _torch(v) for k, v in value.items()} if isinstance(value, dict) else (
        None if value is None else torch.from_numpy(value))


def _multimodal_graph(model, inputs, points, **flags):
    """The model under mindspore.jit with its dict inputs built inside the compiled function."""
    import mindspore as ms

    def forward(audio, image, label, audio_points, image_points):
        return model(inputs={"audio": audio, "image": image, "label": label},
                     subsampled_output_points={"audio": audio_points, "image": image_points, "label": None},
                     **flags)

    tensors, indices = _ms(inputs), _ms(points)
    return ms.jit(forward)(tensors["audio"], tensors["image"], tensors["label"], indices["audio"], indices["image"])


def test_new_heads_have_torchs_checkpoint_keys(checkpoints):

    for head, overrides in ((PerceiverForImageClassificationConvProcessing, {}), (PerceiverForOpticalFlow, FLOW),
                            (PerceiverForMultimodalAutoencoding, MULTIMODAL)):
        torch_model = getattr(transformers, head.__name__)(make_config(**overrides))
        ours = head(make_config(**overrides))
        assert set(ours.parameters_dict()) == set(torch_model.state_dict()), head.__name__


@pytest.mark.parametrize("mode", vision_parity.PYNATIVE_AND_SLOW_GRAPH)
def test_conv_processing_classifier_matches_torch(conv_processing, mode):
    """16x16 images: 7x7 stride-2 conv ("same" padding), batch norm (running statistics), ReLU, 3x3 max pool ->
    3x3 positions with 64 channels + Fourier features."""

    torch_model, path = conv_processing
    inputs = dict(pixel_values=np.random.RandomState(7).randn(2, 3, 16, 16).astype(np.float32),
                  labels=np.array([0, 2], np.int64), output_hidden_states=True, output_attentions=True)
    out, ref = head_parity.assert_matches_torch(PerceiverForImageClassificationConvProcessing, torch_model, path,
                                                inputs, ["logits", "loss", "hidden_states", "attentions"], mode)
    error = parity.compare_outputs(out, ref, ["cross_attentions"])["cross_attentions"] / 2
    parity.assert_close({"cross_attentions": error}, parity.FP32_BAR, mode)


@pytest.mark.parametrize("mode", vision_parity.PYNATIVE_AND_SLOW_GRAPH)
def test_optical_flow_matches_torch(checkpoints, mode):

    torch_model, path = checkpoints(transformers.PerceiverForOpticalFlow, **FLOW)
    inputs = dict(inputs=flow_inputs(8), output_hidden_states=True, output_attentions=True)
    out, ref = head_parity.assert_matches_torch(PerceiverForOpticalFlow, torch_model, path, inputs,
                                                ["logits", "hidden_states", "attentions"], mode)
    # probabilities: the metric doubles softmax noise, as for the image heads' attention maps
    error = parity.compare_outputs(out, ref, ["cross_attentions"])["cross_attentions"] / 2
    parity.assert_close({"cross_attentions": error}, parity.FP32_BAR, mode)
    assert out["logits"].shape == (2, 4, 6, 2) and out.get("loss") is None


@pytest.mark.parametrize("mode", vision_parity.PYNATIVE_AND_SLOW_GRAPH)
def test_multimodal_autoencoding_matches_torch(checkpoints, mode):
    """Subsampled decoding: 2 audio patches, 6 video pixels and the label; logits per modality."""

    torch_model, path = checkpoints(transformers.PerceiverForMultimodalAutoencoding, **MULTIMODAL)
    inputs, points = multimodal_inputs(9)
    flags = dict(output_hidden_states=True, output_attentions=True)
    with torch.no_grad():
        ref = torch_model(inputs=_torch(inputs), subsampled_output_points=_torch(points), **flags)
    ours = parity.load_ours(PerceiverForMultimodalAutoencoding, path)
    out = (ours(inputs=_ms(inputs), subsampled_output_points=_ms(points), **flags) if mode == "pynative"
           else _multimodal_graph(ours, inputs, points, **flags))
    errors = {f"logits.{k}": parity.rel_error(out["logits"][k], ref.logits[k]) for k in ("audio", "image", "label")}
    errors.update(parity.compare_outputs(out, ref, ["hidden_states", "attentions"]))
    # probabilities: the metric doubles softmax noise, as for the image heads' attention maps
    errors["cross_attentions"] = parity.compare_outputs(out, ref, ["cross_attentions"])["cross_attentions"] / 2
    parity.assert_close(errors, parity.FP32_BAR, f"multimodal/{mode}")
    assert {k: tuple(v.shape) for k, v in out["logits"].items()} == {"audio": (2, 8), "image": (2, 6, 3),
                                                                     "label": (2, 3)}


def test_new_heads_fp16_within_torch_fp16_error(checkpoints, conv_processing):

    # torch cannot run this head in fp16 on CPU (its batch_norm wants float32 parameters for fp16 inputs): the
    # project's absolute fp16 bar against torch fp32
    torch_model, path = conv_processing
    pixels = np.random.RandomState(10).randn(2, 3, 16, 16).astype(np.float32)
    ref = parity.run_torch(torch_model, dict(pixel_values=pixels))["logits"]
    out = parity.run_ours(parity.load_ours(PerceiverForImageClassificationConvProcessing, path, dtype="float16"),
                          dict(pixel_values=pixels))["logits"]
    parity.assert_close({"logits": parity.rel_error(out, ref)}, parity.FP16_BAR, "fp16/conv-processing")
    torch_model, path = checkpoints(transformers.PerceiverForOpticalFlow, **FLOW)
    vision_parity.assert_fp16_close(PerceiverForOpticalFlow, torch_model, path, dict(inputs=flow_inputs(10)),
                                    "logits", "pynative")
    # nor this one (its float32 Bernoulli mask promotes the fp16 inputs to float32 before the encoder's fp16
    # layer norm): the absolute bar again
    torch_model, path = checkpoints(transformers.PerceiverForMultimodalAutoencoding, **MULTIMODAL)
    inputs, points = multimodal_inputs(10)
    with torch.no_grad():
        ref = torch_model(inputs=_torch(inputs), subsampled_output_points=_torch(points)).logits
    out = parity.load_ours(PerceiverForMultimodalAutoencoding, path, dtype="float16")(
        inputs=_ms(inputs), subsampled_output_points=_ms(points))["logits"]
    parity.assert_close({name: parity.rel_error(out[name], ref[name]) for name in ("audio", "image", "label")},
                        parity.FP16_BAR, "fp16/multimodal")


def _assert_scalar_gradients_match(torch_model, ours, torch_call, our_call, context):
    """Gradients of sum(logits * fixed random weights) (the heads have no loss: HF raises on labels) against torch
    in float64: <= 1e-4, or within 1.5x torch fp32's own error against float64 where that is larger (the decoder's
    query path: its attention over nearly alike latents barely moves the output, and both fp32 sides round there
    at ~1e-4). Gradients below 1e-6 everywhere are rounding noise and are checked absolutely."""
    import mindspore as ms

    def torch_grads(model, cast):
        logits = torch_call(model, cast)
        logits = logits if isinstance(logits, dict) else {"logits": logits}
        loss = sum((logits[k] * torch.from_numpy(weights[k]).to(cast)).sum() for k in sorted(weights))
        loss.backward()
        return loss.detach(), {n: p.grad.numpy() for n, p in model.named_parameters() if p.grad is not None}

    with torch.no_grad():
        shapes = torch_call(torch_model, torch.float32)
    shapes = shapes if isinstance(shapes, dict) else {"logits": shapes}
    weights = {k: np.random.RandomState(i).randn(*v.shape) for i, (k, v) in enumerate(sorted(shapes.items()))}
    torch_loss, ref = torch_grads(copy.deepcopy(torch_model).double(), torch.float64)
    _, ref32 = torch_grads(copy.deepcopy(torch_model), torch.float32)

    params = ours.trainable_params()
    names = {id(p): n for n, p in ours.parameters_and_names()}

    def loss_fn():
        out = our_call(ours)
        out = out if isinstance(out, dict) else {"logits": out}
        return sum((out[k] * ms.Tensor(weights[k].astype(np.float32))).sum() for k in sorted(weights))

    loss, grads = ms.value_and_grad(loss_fn, None, params)()
    ours_grads = {names[id(p)]: parity.to_numpy(g) for p, g in zip(params, grads)}
    assert set(ours_grads) >= set(ref), sorted(set(ref) - set(ours_grads))
    bad = {}
    if not parity.rel_error(loss, torch_loss) <= parity.FP32_BAR:
        bad["loss"] = parity.rel_error(loss, torch_loss)
    for name, grad in ref.items():
        mine = ours_grads[name]
        if np.abs(grad).max() < 1e-6:
            assert np.abs(mine).max() < 1e-6, f"{name}: gradient should be ~0, got {np.abs(mine).max():.2e}"
            continue
        error, bar = parity.rel_error(mine, grad), max(parity.GRAD_BAR, 1.5 * parity.rel_error(ref32[name], grad))
        if not error <= bar:
            bad[name] = (error, bar)
    assert not bad, f"{context}: (error vs float64, bar) above the bar: {bad}"


def test_optical_flow_gradients_match_torch(checkpoints):

    torch_model, path = checkpoints(transformers.PerceiverForOpticalFlow, **FLOW)
    frames = flow_inputs(11)
    _assert_scalar_gradients_match(
        torch_model, parity.load_ours(PerceiverForOpticalFlow, path),
        lambda model, dtype: model(inputs=torch.from_numpy(frames).to(dtype)).logits,
        lambda model: model(inputs=_ms(frames))["logits"], "grads/optical-flow")


def test_multimodal_autoencoding_gradients_match_torch(checkpoints):

    torch_model, path = checkpoints(transformers.PerceiverForMultimodalAutoencoding, **MULTIMODAL)
    inputs, points = multimodal_inputs(12)
    _assert_scalar_gradients_match(
        torch_model, parity.load_ours(PerceiverForMultimodalAutoencoding, path),
        lambda model, dtype: model(inputs={k: v.to(dtype) for k, v in _torch(inputs).items()},
                                   subsampled_output_points=_torch(points)).logits,
        lambda model: model(inputs=_ms(inputs), subsampled_output_points=_ms(points))["logits"],
        "grads/multimodal")


def test_image_classification_auto_class_follows_architectures(checkpoints, conv_processing):
    from mindone.transformers import AutoModelForImageClassification

    _, path = conv_processing
    assert type(AutoModelForImageClassification.from_pretrained(path)) is PerceiverForImageClassificationConvProcessing
    _, path = checkpoints(transformers.PerceiverForImageClassificationFourier)
    assert type(AutoModelForImageClassification.from_pretrained(path)) is PerceiverForImageClassificationFourier
