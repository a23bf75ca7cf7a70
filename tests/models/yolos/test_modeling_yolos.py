"""YOLOS parity with torch `transformers` on a tiny random checkpoint (tests/parity.py): detection logits and boxes,
position tables resized to another image size, fp16, gradients of a scalar of the outputs, Auto classes."""

import copy

import mindspore as ms
import numpy as np
import pytest
import torch
import transformers

from mindone.transformers import YolosForObjectDetection, YolosModel
from tests import parity
from tests.models import head_parity, vision_parity

IMAGE = (16, 24)
CONFIG = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=list(IMAGE),
              patch_size=4, num_detection_tokens=5, num_labels=3, hidden_act="gelu")


def make_config(**overrides):
    return transformers.YolosConfig(**{**CONFIG, **overrides})


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    made = {}

    def get(torch_cls, **overrides):
        key = (torch_cls.__name__, tuple(sorted((k, repr(v)) for k, v in overrides.items())))
        if key not in made:
            model = parity.torch_reference(torch_cls, make_config(**overrides), seed=len(made))
            # HF starts the class/detection tokens and position tables at zero: randomise them so they are tested
            with torch.no_grad():
                g = torch.Generator().manual_seed(7)
                for name, p in model.named_parameters():
                    if name.endswith(("cls_token", "detection_tokens", "position_embeddings")):
                        p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            made[key] = (model, parity.save_torch(model, str(tmp_path_factory.mktemp(torch_cls.__name__))))
        return made[key]

    return get


def pixels(seed=0, batch=2, size=IMAGE):
    return np.random.RandomState(seed).randn(batch, 3, *size).astype(np.float32)


@pytest.mark.parametrize("mode", parity.MODES)
def test_object_detection_matches_torch_fp32(checkpoints, mode):
    torch_model, path = checkpoints(transformers.YolosForObjectDetection)
    inputs = dict(pixel_values=pixels(), output_hidden_states=True)
    head_parity.assert_matches_torch(YolosForObjectDetection, torch_model, path, inputs,
                                     ["logits", "pred_boxes", "last_hidden_state", "hidden_states"], mode)


@pytest.mark.parametrize("size", [(20, 28), (12, 12)])
def test_other_image_sizes_resize_positions_like_torch(checkpoints, size):
    torch_model, path = checkpoints(transformers.YolosForObjectDetection)
    head_parity.assert_matches_torch(YolosForObjectDetection, torch_model, path,
                                     dict(pixel_values=pixels(seed=1, size=size)), ["logits", "pred_boxes"])


def test_model_without_mid_positions_and_attentions(checkpoints):
    torch_model, path = checkpoints(transformers.YolosModel, use_mid_position_embeddings=False)
    head_parity.assert_matches_torch(YolosModel, torch_model, path, dict(pixel_values=pixels(seed=2)),
                                     ["last_hidden_state", "pooler_output"])
    out = parity.run_ours(parity.load_ours(YolosModel, path), dict(pixel_values=pixels(seed=2),
                                                                   output_attentions=True))
    ref = parity.run_torch(torch_model, dict(pixel_values=pixels(seed=2), output_attentions=True))
    assert len(out["attentions"]) == len(ref.attentions) == CONFIG["num_hidden_layers"]
    parity.assert_close({i: parity.rel_error(a, b) for i, (a, b) in enumerate(zip(out["attentions"], ref.attentions))},
                        parity.FP32_BAR)


@pytest.mark.parametrize("mode", parity.MODES)
def test_fp16_close_to_torch_fp32(checkpoints, mode):
    torch_model, path = checkpoints(transformers.YolosForObjectDetection)
    for field in ("logits", "pred_boxes"):
        vision_parity.assert_fp16_close(YolosForObjectDetection, torch_model, path, dict(pixel_values=pixels(seed=3)),
                                        field, mode)


@pytest.mark.parametrize("mode", parity.MODES)
def test_gradients_match_torch(checkpoints, mode):
    """Gradients of logits.sum() + pred_boxes.sum() (no detection loss yet) vs torch in float64."""
    torch_model, path = checkpoints(transformers.YolosForObjectDetection)
    x = pixels(seed=4)
    ref_model = copy.deepcopy(torch_model).double()
    out = ref_model(pixel_values=torch.from_numpy(x.astype(np.float64)))
    (out.logits.sum() + out.pred_boxes.sum()).backward()
    # torch keeps the mid position tables under `interpolation.`; the checkpoint key (ours) does not
    ref = {n.replace("encoder.interpolation.", "encoder."): p.grad for n, p in ref_model.named_parameters()
           if p.grad is not None}

    model = parity.load_ours(YolosForObjectDetection, path)
    params = model.trainable_params()

    def scalar(pixel_values):
        o = model(pixel_values=pixel_values)
        return o["logits"].sum() + o["pred_boxes"].sum()

    grad_fn = ms.value_and_grad(scalar, None, params)
    if mode == "graph":
        grad_fn = ms.jit(grad_fn)
    _, grads = grad_fn(ms.Tensor(x))
    grads = {p.name: g for p, g in zip(params, grads)}
    key_biases = [n for n in ref if n.endswith("key.bias")]
    for name in key_biases:
        assert float(np.abs(parity.to_numpy(grads[name])).max()) < 1e-6, f"{name}: gradient should be ~0"
    errors = parity.compare_gradients(grads, {n: g for n, g in ref.items() if n not in key_biases})
    parity.assert_close(errors, parity.GRAD_BAR, f"grads/{mode}")


def detection_labels(seed=0):
    """Two images: three boxes and one box; (cx, cy, w, h) normalised, class ids < num_labels."""
    rng = np.random.RandomState(seed)
    labels = []
    for n in (3, 1):
        centers = rng.uniform(0.25, 0.75, (n, 2))
        sizes = rng.uniform(0.1, 0.4, (n, 2))
        labels.append({"class_labels": rng.randint(0, CONFIG["num_labels"], n).astype(np.int64),
                       "boxes": np.concatenate([centers, sizes], 1).astype(np.float32)})
    return labels


def torch_labels(labels, dtype=torch.float32):
    return [{"class_labels": torch.from_numpy(t["class_labels"]), "boxes": torch.from_numpy(t["boxes"]).to(dtype)}
            for t in labels]


@pytest.mark.parametrize("coefficients", [{}, dict(eos_coefficient=0.3, bbox_loss_coefficient=3,
                                                   giou_loss_coefficient=1, class_cost=2)])
def test_detection_loss_matches_torch(checkpoints, coefficients):
    """Hungarian matching + class / L1 / GIoU / cardinality terms: loss and every loss_dict entry as torch's."""
    torch_model, path = checkpoints(transformers.YolosForObjectDetection)
    torch_model = copy.deepcopy(torch_model)
    for key, value in coefficients.items():
        setattr(torch_model.config, key, value)
    x, labels = pixels(seed=5), detection_labels(seed=1)
    with torch.no_grad():
        ref = torch_model(pixel_values=torch.from_numpy(x), labels=torch_labels(labels))
    model = parity.load_ours(YolosForObjectDetection, path, **coefficients)
    out = model(pixel_values=ms.Tensor(x), labels=labels)
    assert list(out.loss_dict) == list(ref.loss_dict)
    errors = {k: abs(float(out.loss_dict[k].asnumpy()) - float(ref.loss_dict[k])) for k in ref.loss_dict}
    errors["loss"] = abs(float(out.loss.asnumpy()) - float(ref.loss))
    parity.assert_close(errors, parity.FP32_BAR, "detection loss")
    # labels given as MindSpore tensors and lists work too
    as_tensors = [{"class_labels": ms.Tensor(t["class_labels"]), "boxes": t["boxes"].tolist()} for t in labels]
    again = model(pixel_values=ms.Tensor(x), labels=as_tensors)
    assert float(again.loss.asnumpy()) == float(out.loss.asnumpy())


def test_detection_loss_with_an_image_without_objects(checkpoints):
    torch_model, path = checkpoints(transformers.YolosForObjectDetection)
    x = pixels(seed=6)
    labels = detection_labels(seed=2)
    labels[1] = {"class_labels": np.zeros(0, np.int64), "boxes": np.zeros((0, 4), np.float32)}
    with torch.no_grad():
        ref = torch_model(pixel_values=torch.from_numpy(x), labels=torch_labels(labels))
    out = parity.load_ours(YolosForObjectDetection, path)(pixel_values=ms.Tensor(x), labels=labels)
    parity.assert_close({"loss": abs(float(out.loss.asnumpy()) - float(ref.loss))}, parity.FP32_BAR)


def test_detection_loss_gradients_match_torch(checkpoints):
    """Gradients of the detection loss vs torch in float64 (the matcher runs on the host, so PyNative only)."""
    torch_model, path = checkpoints(transformers.YolosForObjectDetection)
    x, labels = pixels(seed=7), detection_labels(seed=3)
    ref_model = copy.deepcopy(torch_model).double()
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # HF builds the class-weight buffer with torch.ones at call time
    try:
        ref_model(pixel_values=torch.from_numpy(x.astype(np.float64)),
                  labels=torch_labels(labels, torch.float64)).loss.backward()
    finally:
        torch.set_default_dtype(default)
    ref = {n.replace("encoder.interpolation.", "encoder."): p.grad for n, p in ref_model.named_parameters()
           if p.grad is not None}
    model = parity.load_ours(YolosForObjectDetection, path)
    params = model.trainable_params()
    grad_fn = ms.value_and_grad(lambda pv: model(pixel_values=pv, labels=labels).loss, None, params)
    _, grads = grad_fn(ms.Tensor(x))
    grads = {p.name: g for p, g in zip(params, grads)}
    key_biases = [n for n in ref if n.endswith("key.bias")]
    errors = parity.compare_gradients(grads, {n: g for n, g in ref.items() if n not in key_biases})
    parity.assert_close(errors, parity.GRAD_BAR, "detection loss grads")


def test_detection_labels_errors_name_the_problem(checkpoints):
    _, path = checkpoints(transformers.YolosForObjectDetection)
    model = parity.load_ours(YolosForObjectDetection, path)
    x = ms.Tensor(pixels())
    labels = detection_labels()
    with pytest.raises(ValueError, match="list of 2 dicts"):
        model(pixel_values=x, labels=labels[:1])
    with pytest.raises(ValueError, match=r"labels\[1\] is missing \['boxes'\]"):
        model(pixel_values=x, labels=[labels[0], {"class_labels": np.array([0])}])
    with pytest.raises(ValueError, match=r"labels\[0\]\['class_labels'\] must be in \[0, 3\)"):
        model(pixel_values=x, labels=[{"class_labels": np.array([3]), "boxes": np.full((1, 4), .5)}, labels[1]])
    with pytest.raises(ValueError, match="2 class_labels but 1 boxes"):
        model(pixel_values=x, labels=[{"class_labels": np.array([0, 1]), "boxes": np.full((1, 4), .5)}, labels[1]])
    aux = parity.load_ours(YolosForObjectDetection, path, auxiliary_loss=True)
    with pytest.raises(NotImplementedError, match="auxiliary_loss"):
        aux(pixel_values=x, labels=labels)


def test_auto_classes_resolve_yolos(checkpoints):
    from mindone.transformers import AutoModel, AutoModelForObjectDetection

    _, path = checkpoints(transformers.YolosForObjectDetection)
    assert type(AutoModelForObjectDetection.from_pretrained(path)) is YolosForObjectDetection
    assert type(AutoModel.from_pretrained(path)) is YolosModel
