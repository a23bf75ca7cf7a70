"""What HF users bring from torch: their inputs, token-id mistakes, `model.device` and tokenizers decoding our tensors.

Everything here runs on the host, where a user's call enters (`PreTrainedModel.__call__`, `generate()`): never inside
a function `mindspore.jit` traces (there Cell calls go straight to `construct`), so it costs compiled code nothing.
torch is never imported: torch objects are recognised by the module their type lives in.
"""

import contextlib
import sys
import threading

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor

from .backend import runtime


class TokenIdError(IndexError, ValueError):
    """A token id outside the model's embedding table: an IndexError as torch's embedding raises, and a ValueError."""


# ----------------------------------------------------------------------------------------------------------------
# model inputs
# ----------------------------------------------------------------------------------------------------------------

def is_torch_object(value, kind="Tensor") -> bool:
    """True for torch.Tensor (and subclasses such as Parameter), torch.device or torch.dtype, without importing torch."""
    return any(c.__name__ == kind and c.__module__.split(".")[0] == "torch" for c in type(value).__mro__)


def _numbers_only(value) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_numbers_only(v) for v in value)
    return isinstance(value, (bool, int, float, np.number))


def to_model_input(name, value):
    """A forward argument as the model takes it: numpy arrays and (nested) lists of numbers become Tensors (int64 /
    float32, as torch.tensor makes them); a torch tensor raises a TypeError saying what to pass instead."""
    if isinstance(value, np.ndarray):
        return Tensor(value)
    if isinstance(value, list) and value and _numbers_only(value):
        array = np.asarray(value)
        return Tensor(array.astype(np.float32) if array.dtype == np.float64 else array)
    reject_torch(name, value)
    return value


def reject_torch(name, value):
    if is_torch_object(value):
        raise TypeError(f"{name} is a torch.Tensor, but mindone.transformers models take MindSpore tensors, numpy "
                        f"arrays or lists: tokenize with return_tensors='np' instead of 'pt' (or pass "
                        f"mindspore.Tensor(t.numpy()))")


# ----------------------------------------------------------------------------------------------------------------
# token ids
# ----------------------------------------------------------------------------------------------------------------

_checked = threading.local()


@contextlib.contextmanager
def ids_checked():
    """Model calls inside skip the token-id check: the caller checked the ids (a model's entry, generate's prompt)
    or produced them itself (the decode loop)."""
    depth = getattr(_checked, "depth", 0)
    _checked.depth = depth + 1
    try:
        yield
    finally:
        _checked.depth = depth


def ids_already_checked() -> bool:
    return getattr(_checked, "depth", 0) > 0


def embedding_rows(model):
    """Number of rows of the model's input embedding (the ids it accepts), or None if it has no single one."""
    try:
        embedding = model.get_input_embeddings()
    except (NotImplementedError, AttributeError):
        return None
    weight = getattr(embedding, "weight", None)
    if weight is None:
        return None
    # a parameter sharded at rest (ZeRO-3 inference) records its full shape
    shape = getattr(weight, "_full_shape", None) or weight.shape
    # a decoupled embedding (IDEFICS) holds the ids past its weight's rows in a second table
    return int(shape[0]) + int(getattr(embedding, "num_additional_embeddings", 0) or 0)


def check_token_ids(name, ids, vocab_size):
    """Raises TokenIdError when `ids` (numpy, list or Tensor, on the host) holds an id < 0 or >= vocab_size."""
    if vocab_size is None or ids is None:
        return
    if isinstance(ids, (Tensor, Parameter)):
        if ids.has_init or any(d is None or d < 0 for d in ids.shape):
            return  # no data (a shape placeholder)
        ids = ids.asnumpy()
    ids = np.asarray(ids)
    if ids.size == 0 or not np.issubdtype(ids.dtype, np.integer):
        return
    low, high = ids.min(), ids.max()
    if low >= 0 and high < vocab_size:
        return
    bad = int(low) if low < 0 else int(high)
    where = ", ".join(str(int(i)) for i in np.argwhere(ids == bad)[0])
    message = (f"{name}[{where}] = {bad} is not a token id of this model: its input embedding has {vocab_size} rows, "
               f"so ids must be in [0, {vocab_size - 1}].")
    if bad < 0:
        message += (" Negative ids are not tokens (-100 is the label ignore index: it belongs in `labels`); use the "
                    "pad token id at masked positions.")
    else:
        message += (" Was the tokenizer made for this model (len(tokenizer) vs config.vocab_size)? After adding "
                    "tokens, call model.resize_token_embeddings(len(tokenizer)).")
    raise TokenIdError(message)


# ----------------------------------------------------------------------------------------------------------------
# devices
# ----------------------------------------------------------------------------------------------------------------

# torch-style device type -> MindSpore device target
_DEVICE_TARGETS = {"cpu": "CPU", "cuda": "GPU", "gpu": "GPU", "npu": "Ascend", "ascend": "Ascend"}
_TORCH_NAMES = {"CPU": "cpu", "GPU": "cuda", "Ascend": "npu"}


class Device(str):
    """`model.device`: the device MindSpore runs on, spelt like torch ("cpu", "cuda:0", "npu:0" for Ascend as in
    torch_npu). A str, so `model.device == "cpu"` and f-strings work; `.type` and `.index` as on torch.device."""

    def __new__(cls, type_, index=None):
        self = super().__new__(cls, type_ if index is None else f"{type_}:{index}")
        self.type = type_
        self.index = index
        return self

    def __repr__(self):
        return f"device(type='{self.type}')" if self.index is None else \
            f"device(type='{self.type}', index={self.index})"


def current_device() -> Device:
    target = runtime.device_target()
    if target == "CPU":
        return Device("cpu")
    return Device(_TORCH_NAMES.get(target, target.lower()), int(ms.get_context("device_id")))


def check_device(device) -> None:
    """Accepts a device that names the one MindSpore runs on (models live there from creation); raises otherwise."""
    if isinstance(device, int):
        device = f"{current_device().type}:{device}"
    text = str(device)
    target = _DEVICE_TARGETS.get(text.split(":")[0].lower())
    if target is None and text in ("CPU", "GPU", "Ascend"):
        target = text
    if target is None:
        raise ValueError(f"unknown device {text!r}: use 'cpu', 'cuda' (MindSpore 'GPU') or 'npu' (MindSpore 'Ascend')")
    if target != runtime.device_target():
        raise ValueError(f"model.to({text!r}): this process runs MindSpore on {runtime.device_target()}, and a model "
                         f"lives on that device from creation. Call mindspore.set_device({target!r}) before building "
                         f"or loading the model instead.")


# ----------------------------------------------------------------------------------------------------------------
# tokenizers
# ----------------------------------------------------------------------------------------------------------------

_installed = []


def install_tokenizer_support():
    """Lets HF tokenizers and processors take MindSpore tensors wherever they take torch tensors
    (`tokenizer.decode(out[0])`, `tokenizer.batch_decode(model.generate(...))`).

    They turn ids into Python lists with `transformers.utils.generic.to_py_obj`, which knows torch and numpy only;
    it is wrapped once with a MindSpore branch (also where other transformers modules imported it by name).
    """
    if _installed:
        return
    from transformers.utils import generic

    original = generic.to_py_obj

    def to_py_obj(obj):
        if isinstance(obj, (Tensor, Parameter)):
            return obj.asnumpy().tolist()
        return original(obj)

    to_py_obj.__doc__ = original.__doc__
    to_py_obj.__wrapped__ = original
    for name, module in list(sys.modules.items()):
        # vars(), not getattr: transformers' lazy modules would import on a missing attribute
        if (name == "transformers" or name.startswith("transformers.")) and module is not None and \
                vars(module).get("to_py_obj") is original:
            module.to_py_obj = to_py_obj
    generic.to_py_obj = to_py_obj
    _installed.append(original)
