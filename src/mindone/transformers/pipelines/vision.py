"""Image pipelines: image-classification, image-feature-extraction, zero-shot-image-classification,
image-to-text (captioning), image-segmentation, object-detection and depth-estimation on our vision models, with
`transformers`' image processors (HF's call arguments and result formats).

Inputs: PIL images, local paths or URLs (loaded with `transformers.image_utils.load_image`) and NumPy arrays (given
to the image processor as they are), one or a list.
"""

import numpy as np

from .base import Pipeline, sigmoid, softmax

_FUNCTIONS = ("sigmoid", "softmax", "none")
# SigLIP 2 image processors' extra outputs: which patches are real, and each image's patch grid
_NAFLEX_INPUTS = ("pixel_attention_mask", "spatial_shapes")


class _ImagePipeline(Pipeline):
    def __init__(self, model, image_processor=None, **kwargs):
        if image_processor is None:
            raise ValueError(f"{type(self).__name__} needs an image processor: pass `image_processor=`")
        super().__init__(model, image_processor=image_processor, **kwargs)

    def _load(self, image, timeout=None):
        if isinstance(image, np.ndarray):
            return image
        from transformers.image_utils import load_image

        return load_image(image, timeout=timeout)

    def _pixels(self, image, timeout=None, **processor_kwargs):
        """The processor's model inputs: pixel_values, plus SigLIP 2's NaFlex patch mask and grid shapes."""
        inputs = self.image_processor(images=self._load(image, timeout), return_tensors="np", **processor_kwargs)
        pixels = {"pixel_values": np.asarray(inputs["pixel_values"], np.float32)}
        pixels.update({k: np.asarray(inputs[k]) for k in _NAFLEX_INPUTS if k in inputs})
        return pixels

    def _model_input_names(self):
        return ()

    def _extra_model_inputs(self):
        return ("pixel_values",) + _NAFLEX_INPUTS


class ImageClassificationPipeline(_ImagePipeline):
    """`pipe(images, top_k=5, function_to_apply=None)` -> [{"label", "score"}] by decreasing score (a list of
    those for a list of images). The default function is HF's: sigmoid for multi-label or single-output models,
    softmax otherwise, none for regression."""

    task = "image-classification"

    def _sanitize_parameters(self, top_k=None, function_to_apply=None, timeout=None):
        post = {}
        if top_k is not None:
            post["top_k"] = top_k
        if function_to_apply is not None:
            function_to_apply = str(getattr(function_to_apply, "value", function_to_apply)).lower()
            if function_to_apply not in _FUNCTIONS:
                raise ValueError(f"Unrecognized `function_to_apply` argument: {function_to_apply}")
            post["function_to_apply"] = function_to_apply
        return ({"timeout": timeout} if timeout is not None else {}), post

    def preprocess(self, image, timeout=None):
        return self._pixels(image, timeout)

    def _default_function(self):
        config = self.model.config
        if config.problem_type == "regression":
            return "none"
        if config.problem_type == "multi_label_classification" or config.num_labels == 1:
            return "sigmoid"
        if config.problem_type == "single_label_classification" or config.num_labels > 1:
            return "softmax"
        return getattr(config, "function_to_apply", None) or "none"

    def postprocess(self, model_outputs, function_to_apply=None, top_k=5):
        function_to_apply = function_to_apply or self._default_function()
        top_k = min(top_k, self.model.config.num_labels)
        logits = model_outputs["logits"][0].astype(np.float32)
        scores = {"sigmoid": sigmoid, "softmax": softmax, "none": lambda x: x}[function_to_apply](logits)
        ranked = sorted(({"label": self.model.config.id2label[i], "score": float(s)} for i, s in enumerate(scores)),
                        key=lambda d: d["score"], reverse=True)
        return ranked[:top_k]


class ImageFeatureExtractionPipeline(_ImagePipeline):
    """`pipe(images, pool=False, return_tensors=False)` -> the model's first output (last_hidden_state) or, with
    `pool=True`, its pooler_output, as nested lists of shape (1, ...) per image (NumPy arrays with
    `return_tensors=True`)."""

    task = "image-feature-extraction"

    def _sanitize_parameters(self, image_processor_kwargs=None, return_tensors=None, pool=None, timeout=None):
        pre = dict(image_processor_kwargs or {})
        if timeout is not None:
            pre["timeout"] = timeout
        post = {}
        if pool is not None:
            post["pool"] = pool
        if return_tensors is not None:
            post["return_tensors"] = return_tensors
        return pre, post

    def preprocess(self, image, timeout=None, **processor_kwargs):
        return self._pixels(image, timeout, **processor_kwargs)

    def _forward(self, model_inputs):
        outputs = super()._forward(model_inputs)
        # the first output (HF's `model_outputs[0]`), remembered by name: the base class returns a plain dict
        first = next(iter(outputs))
        outputs["__first__"] = outputs[first]
        return outputs

    def postprocess(self, model_outputs, pool=False, return_tensors=False):
        if pool:
            if "pooler_output" not in model_outputs:
                raise ValueError("No pooled output was returned. Make sure the model has a `pooler` layer when using "
                                 "the `pool` option.")
            outputs = model_outputs["pooler_output"]
        else:
            outputs = model_outputs["__first__"]
        return outputs if return_tensors else outputs.tolist()


class ZeroShotImageClassificationPipeline(_ImagePipeline):
    """`pipe(images, candidate_labels=[...], hypothesis_template="This is a photo of {}.")` -> [{"score", "label"}]
    by decreasing score: the softmax over the labels of CLIP's image-text logits (sigmoid for SigLIP models)."""

    task = "zero-shot-image-classification"

    def _sanitize_parameters(self, candidate_labels=None, hypothesis_template=None, timeout=None,
                             tokenizer_kwargs=None):
        pre = {}
        if candidate_labels is not None:
            pre["candidate_labels"] = candidate_labels
        if hypothesis_template is not None:
            pre["hypothesis_template"] = hypothesis_template
        if timeout is not None:
            pre["timeout"] = timeout
        if tokenizer_kwargs is not None:
            pre["tokenizer_kwargs"] = tokenizer_kwargs
        return pre, {}

    def preprocess(self, image, candidate_labels=None, hypothesis_template="This is a photo of {}.", timeout=None,
                   tokenizer_kwargs=None):
        if not candidate_labels:
            raise ValueError("zero-shot-image-classification needs `candidate_labels`")
        if isinstance(candidate_labels, str):
            candidate_labels = [candidate_labels]
        inputs = self._pixels(image, timeout)
        text_kwargs = {"padding": True}
        if "siglip" in self.model.config.model_type:
            text_kwargs.update(padding="max_length", max_length=64, truncation=True)
        text_kwargs.update(tokenizer_kwargs or {})
        text = self.tokenizer([hypothesis_template.format(x) for x in candidate_labels], return_tensors="np",
                              **text_kwargs)
        inputs.update({k: np.asarray(v) for k, v in text.items() if k in ("input_ids", "attention_mask")})
        inputs["candidate_labels"] = list(candidate_labels)
        return inputs

    def _run_batch(self, parts):
        # every image has its own label set: one model call per image
        split = []
        for part in parts:
            inputs = {k: v for k, v in part.items()
                      if k in ("pixel_values", "input_ids", "attention_mask") + _NAFLEX_INPUTS}
            outputs = Pipeline._forward(self, inputs)
            split.append({"candidate_labels": part["candidate_labels"], "logits": outputs["logits_per_image"]})
        return split

    def postprocess(self, model_outputs):
        logits = model_outputs["logits"][0].astype(np.float32)
        scores = sigmoid(logits) if "siglip" in self.model.config.model_type else softmax(logits)
        ranked = sorted(zip(scores.tolist(), model_outputs["candidate_labels"]), key=lambda x: -x[0])
        return [{"score": score, "label": label} for score, label in ranked]


class ImageToTextPipeline(_ImagePipeline):
    """Captioning with an image-to-text generation model (VisionEncoderDecoderModel, Pix2Struct): HF 4.x's
    `image-to-text` pipeline (transformers 5 folded the task into `image-text-to-text`, which needs a processor and
    a text prompt).

    `pipe(images, max_new_tokens=None, generate_kwargs=None, prompt=None, timeout=None)` -> [{"generated_text"}]
    per image (one record per returned sequence; a list of those for a list of images). The images of a batch are
    encoded together and `model.generate` runs on their pixel values (Pix2Struct: flattened patches and their
    mask); `prompt` (a string) is tokenized and given to `generate` as the decoder's prompt (its text is part of the
    output, as in HF 4.x) — for Pix2Struct it is rendered above the image as a header, as HF 4.x did (HF's renderer
    downloads its font from the Hub). Texts are decoded with `skip_special_tokens=True`.
    """

    task = "image-to-text"

    def __init__(self, model, tokenizer=None, image_processor=None, **kwargs):
        if tokenizer is None:
            raise ValueError("ImageToTextPipeline needs a tokenizer to decode the generated ids: pass `tokenizer=`")
        super().__init__(model, tokenizer=tokenizer, image_processor=image_processor, **kwargs)

    def _sanitize_parameters(self, max_new_tokens=None, generate_kwargs=None, prompt=None, timeout=None):
        generate_kwargs = dict(generate_kwargs or {})
        if max_new_tokens is not None:
            if "max_new_tokens" in generate_kwargs:
                raise ValueError("'max_new_tokens' is defined twice, once in 'generate_kwargs' and once as a direct "
                                 "parameter, please use only one")
            generate_kwargs["max_new_tokens"] = max_new_tokens
        self._generate_kwargs = generate_kwargs
        pre = {"prompt": prompt}
        if timeout is not None:
            pre["timeout"] = timeout
        return pre, {}

    def preprocess(self, image, prompt=None, timeout=None):
        if self.model.main_input_name == "flattened_patches":
            if prompt is not None and not isinstance(prompt, str):
                raise ValueError(f"Received an invalid text input, got - {type(prompt)} - but expected a single "
                                 "string.")
            extra = {"header_text": prompt} if prompt is not None else {}
            inputs = self.image_processor(images=self._load(image, timeout), return_tensors="np", **extra)
            return {"flattened_patches": np.asarray(inputs["flattened_patches"], np.float32),
                    "attention_mask": np.asarray(inputs["attention_mask"], np.int64)}
        inputs = self._pixels(image, timeout)
        if prompt is not None:
            if not isinstance(prompt, str):
                raise ValueError(f"Received an invalid text input, got - {type(prompt)} - but expected a single "
                                 "string. Note also that one single text can be provided for conditional image to "
                                 "text generation.")
            ids = self.tokenizer(prompt, return_tensors="np")["input_ids"]
            inputs["input_ids"] = np.asarray(ids, np.int64)
        return inputs

    def _run_group(self, prepared):
        # a batch shares one decoder prompt length: items with different prompts are generated separately
        groups = {}
        for i, p in enumerate(prepared):
            key = tuple(p["input_ids"][0]) if "input_ids" in p else None
            groups.setdefault(key, []).append(i)
        outputs = [None] * len(prepared)
        for key, members in groups.items():
            kwargs = dict(self._generate_kwargs)
            for name in prepared[members[0]]:
                if name != "input_ids":
                    kwargs[name] = np.concatenate([prepared[i][name] for i in members], 0)
            if key is not None:
                kwargs["decoder_input_ids"] = np.repeat(prepared[members[0]]["input_ids"], len(members), 0)
            out = self.model.generate(**kwargs)
            sequences = out.sequences if hasattr(out, "sequences") else out
            sequences = sequences.asnumpy() if hasattr(sequences, "asnumpy") else np.asarray(sequences)
            per_image = sequences.shape[0] // len(members)
            for j, i in enumerate(members):
                outputs[i] = {"sequences": sequences[j * per_image:(j + 1) * per_image]}
        return outputs

    def postprocess(self, model_outputs):
        return [{"generated_text": self.tokenizer.decode(ids, skip_special_tokens=True)}
                for ids in model_outputs["sequences"]]
class ImageSegmentationPipeline(_ImagePipeline):
    """`pipe(images, subtask=None)` -> [{"score", "label", "mask"}] per image: for semantic segmentation models
    (UperNet, DPT, ...) one entry per class present in the predicted map, by increasing class id, with `score` None
    and `mask` a PIL "L" image of the original size (255 on the class's pixels). The logits are resized (bilinear) to
    the image and arg-maxed per pixel, as the image processor's `post_process_semantic_segmentation` does. Panoptic and
    instance subtasks need models this package does not implement yet."""

    task = "image-segmentation"

    def _sanitize_parameters(self, subtask=None, threshold=None, mask_threshold=None,
                             overlap_mask_area_threshold=None, timeout=None):
        pre = {"timeout": timeout} if timeout is not None else {}
        post = {"subtask": subtask} if subtask is not None else {}
        return pre, post

    def preprocess(self, image, timeout=None):
        image = self._load(image, timeout)
        inputs = self._pixels(image)
        height, width = (image.shape[:2] if isinstance(image, np.ndarray) else (image.height, image.width))
        inputs["target_size"] = (height, width)
        return inputs

    def postprocess(self, model_outputs, subtask=None):
        if subtask not in (None, "semantic") or not hasattr(self.image_processor, "post_process_semantic_segmentation"):
            raise ValueError(f"Subtask {subtask} is not supported for model {type(self.model)}")
        import mindspore as ms
        from PIL import Image

        from ..backend import functional as F

        logits = ms.Tensor(np.asarray(model_outputs["logits"], np.float32))
        resized = F.interpolate(logits, model_outputs["target_size"], mode="bilinear", align_corners=False)
        segmentation = resized.asnumpy()[0].argmax(0)
        annotation = []
        for label in np.unique(segmentation):
            mask = Image.fromarray(((segmentation == label) * 255).astype(np.uint8), mode="L")
            annotation.append({"score": None, "label": self.model.config.id2label[int(label)], "mask": mask})
        return annotation


class DepthEstimationPipeline(_ImagePipeline):
    """`pipe(images)` -> {"predicted_depth", "depth"} per image (a list of those for a list of images), as HF's
    pipeline: `predicted_depth` is the model's depth map resized (bicubic, as the image processor's
    `post_process_depth_estimation`) to the original image's (height, width), here a float32 NumPy array instead of
    a torch tensor; `depth` is that map min-max normalised to a PIL "L" image."""

    task = "depth-estimation"

    def _sanitize_parameters(self, timeout=None, parameters=None):
        pre = {}
        if timeout is not None:
            pre["timeout"] = timeout
        if isinstance(parameters, dict) and "timeout" in parameters:
            pre["timeout"] = parameters["timeout"]
        return pre, {}

    def preprocess(self, image, timeout=None):
        image = self._load(image, timeout)
        inputs = self._pixels(image)
        inputs["target_size"] = image.shape[:2] if isinstance(image, np.ndarray) else (image.height, image.width)
        return inputs

    def postprocess(self, model_outputs):
        if "predicted_depth" not in model_outputs:
            raise ValueError(f"depth-estimation needs a model returning `predicted_depth`; "
                             f"{type(self.model).__name__} returned {sorted(model_outputs)}")
        import mindspore as ms
        from PIL import Image

        from ..backend import functional as F

        depth = ms.Tensor(np.asarray(model_outputs["predicted_depth"], np.float32)[:, None])
        predicted = F.interpolate(depth, tuple(model_outputs["target_size"]), mode="bicubic",
                                  align_corners=False).asnumpy()[0, 0]
        normalised = (predicted - predicted.min()) / (predicted.max() - predicted.min())
        return {"predicted_depth": predicted, "depth": Image.fromarray((normalised * 255).astype("uint8"))}


class ObjectDetectionPipeline(_ImagePipeline):
    """`pipe(images, threshold=0.5)` -> [{"score", "label", "box": {"xmin", "ymin", "xmax", "ymax"}}] per image, as
    HF's pipeline (boxes in pixels of the original image, truncated to int). The post-processing is that of the
    DETR-family image processors' `post_process_object_detection` (which needs torch), redone in NumPy: softmax over
    the classes, the best real class (the last one is "no object") kept above `threshold`, (cx, cy, w, h) boxes in
    [0, 1] turned into corners scaled to the image size."""

    task = "object-detection"

    def _sanitize_parameters(self, threshold=None, timeout=None):
        pre = {"timeout": timeout} if timeout is not None else {}
        post = {"threshold": threshold} if threshold is not None else {}
        return pre, post

    def preprocess(self, image, timeout=None):
        image = self._load(image, timeout)
        inputs = self._pixels(image)
        height, width = (image.shape[:2] if isinstance(image, np.ndarray) else (image.height, image.width))
        inputs["target_size"] = (height, width)
        return inputs

    def postprocess(self, model_outputs, threshold=0.5):
        if "pred_boxes" not in model_outputs:
            raise ValueError(f"object-detection needs a model returning `pred_boxes`; {type(self.model).__name__} "
                             f"returned {sorted(model_outputs)}")
        logits = np.asarray(model_outputs["logits"], np.float32)[0]
        boxes = np.asarray(model_outputs["pred_boxes"], np.float32)[0]
        probs = softmax(logits)[..., :-1]
        scores, labels = probs.max(-1), probs.argmax(-1)
        cx, cy, w, h = np.moveaxis(boxes, -1, 0)
        corners = np.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], -1)
        height, width = model_outputs["target_size"]
        corners = corners * np.array([width, height, width, height], np.float32)
        keep = scores > threshold
        annotation = []
        for score, label, box in zip(scores[keep], labels[keep], corners[keep]):
            xmin, ymin, xmax, ymax = (int(v) for v in box.astype(np.int32))
            annotation.append({"score": float(score), "label": self.model.config.id2label[int(label)],
                               "box": {"xmin": xmin, "ymin": ymin, "xmax": xmax, "ymax": ymax}})
        return annotation
