"""`Pipeline`: tokenizer/processor from `transformers`, forward on our model, HF's output formats.

Each task subclass implements `preprocess(item) -> dict of numpy arrays (leading axis 1) plus extras`,
`_forward(batch) -> dict of numpy arrays` and `postprocess(one item's model output) -> HF's result`. The base class
runs items in groups of `batch_size`, padding token inputs to a common length and splitting the outputs back.
"""

import logging

import mindspore as ms
import numpy as np

logger = logging.getLogger(__name__)

# inputs padded along their last axis when items are batched, with the value used for padding
_PAD_VALUES = {"attention_mask": 0, "token_type_ids": 0, "special_tokens_mask": 1, "p_mask": 1}


class Pipeline:
    """Base class: `pipe(inputs, **kwargs)` with one input or a list of inputs."""

    task = ""

    def __init__(self, model, tokenizer=None, image_processor=None, feature_extractor=None, processor=None,
                 batch_size=1, **kwargs):
        self.model = model
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.feature_extractor = feature_extractor
        self.processor = processor
        self.batch_size = batch_size
        self._call_defaults = kwargs
        model.set_train(False)

    # subclasses override ------------------------------------------------------------------------------------------

    def _sanitize_parameters(self, **kwargs):
        """Splits call kwargs into (preprocess, postprocess) kwargs; unknown ones raise."""
        if kwargs:
            raise TypeError(f"{type(self).__name__} got unexpected arguments: {sorted(kwargs)}")
        return {}, {}

    def preprocess(self, item, **kwargs):
        raise NotImplementedError

    def _forward(self, model_inputs):
        outputs = self.model(**{k: ms.Tensor(v) for k, v in model_inputs.items()})
        return {k: v.astype(ms.float32).asnumpy() if v.dtype in (ms.float16, ms.bfloat16) else v.asnumpy()
                for k, v in outputs.items() if isinstance(v, ms.Tensor)}

    def postprocess(self, model_outputs, **kwargs):
        raise NotImplementedError

    # running ------------------------------------------------------------------------------------------------------

    def __call__(self, inputs, **kwargs):
        kwargs = {**self._call_defaults, **kwargs}
        batch_size = kwargs.pop("batch_size", self.batch_size)
        pre_kwargs, post_kwargs = self._sanitize_parameters(**kwargs)
        single = not isinstance(inputs, (list, tuple)) or self._is_single(inputs)
        items = [inputs] if single else list(inputs)
        results = []
        self._active_batch_size = max(1, int(batch_size))  # a call's batch_size overrides the pipeline's
        for start in range(0, len(items), batch_size):
            group = items[start:start + batch_size]
            prepared = [self.preprocess(item, **pre_kwargs) for item in group]
            for item_outputs in self._run_group(prepared):
                results.append(self.postprocess(item_outputs, **post_kwargs))
        return results[0] if single else results

    def _is_single(self, inputs):
        return False

    def _run_group(self, prepared):
        """Model outputs per item; an item's preprocess may yield several model inputs (a list), run in turn."""
        flat, owners = [], []
        for i, p in enumerate(prepared):
            for part in (p if isinstance(p, list) else [p]):
                flat.append(part)
                owners.append(i)
        outputs = []
        size = getattr(self, "_active_batch_size", max(1, self.batch_size))
        for start in range(0, len(flat), size):
            outputs.extend(self._run_batch(flat[start:start + size]))
        grouped = [[] for _ in prepared]
        for owner, out in zip(owners, outputs):
            grouped[owner].append(out)
        return [g if isinstance(p, list) else g[0] for p, g in zip(prepared, grouped)]

    def _model_input_names(self):
        return ("input_ids", "attention_mask", "token_type_ids")

    def _run_batch(self, parts):
        """Pads the token inputs of `parts` to one length, runs the model once, and splits the outputs back."""
        names = [k for k in self._model_input_names() if k in parts[0]]
        lengths = [p[names[0]].shape[-1] if names else 0 for p in parts]
        longest = max(lengths) if lengths else 0
        left = getattr(self.tokenizer, "padding_side", "right") == "left"
        batch = {}
        for name in names:
            pad_value = _PAD_VALUES.get(name, getattr(self.tokenizer, "pad_token_id", 0) or 0)
            rows = []
            for p, n in zip(parts, lengths):
                a = p[name]
                width = [(0, 0)] * (a.ndim - 1) + [((longest - n, 0) if left else (0, longest - n))]
                rows.append(np.pad(a, width, constant_values=pad_value))
            batch[name] = np.concatenate(rows, 0)
        for name in parts[0]:
            if name not in names and name in self._extra_model_inputs():
                batch[name] = np.concatenate([p[name] for p in parts], 0)
        outputs = self._forward(batch)
        split = []
        for i, (p, n) in enumerate(zip(parts, lengths)):
            item = dict(p)
            for key, value in outputs.items():
                v = value[i:i + 1]
                if v.ndim >= 2 and v.shape[1] == longest and longest != n:
                    v = v[:, longest - n:] if left else v[:, :n]
                item[key] = v
            split.append(item)
        return split

    def _extra_model_inputs(self):
        """Non-token model inputs batched by concatenation (e.g. pixel_values)."""
        return ()

    def save_pretrained(self, save_directory):
        self.model.save_pretrained(save_directory)
        for component in (self.tokenizer, self.image_processor, self.feature_extractor, self.processor):
            if component is not None:
                component.save_pretrained(save_directory)


def softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))
