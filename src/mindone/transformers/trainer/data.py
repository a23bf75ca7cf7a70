"""Turning datasets into batches: samplers, collation to numpy, data-parallel sharding.

Accepted datasets: HF `datasets.Dataset` (and anything indexable with `__len__` returning dict rows, e.g. a list of
dicts), iterables of dicts without a length (then `max_steps` is required), and `mindspore.dataset` pipelines
(iterated as unbatched dict rows). Collators are HF's (`default_data_collator`, `DataCollatorWithPadding`,
`DataCollatorForLanguageModeling`, ...) called with `return_tensors="np"`, or any callable returning a dict of arrays.
"""

import inspect
import logging

import numpy as np

logger = logging.getLogger(__name__)


def has_length(dataset) -> bool:
    try:
        return len(dataset) is not None
    except (TypeError, NotImplementedError, AttributeError):
        return False


def is_mindspore_dataset(dataset) -> bool:
    try:
        import mindspore.dataset as msds
    except ImportError:
        return False
    return isinstance(dataset, msds.Dataset)


def iterate_rows(dataset):
    """Rows of any accepted dataset, as dicts."""
    if is_mindspore_dataset(dataset):
        yield from dataset.create_dict_iterator(num_epochs=1, output_numpy=True)
    elif has_length(dataset) and hasattr(dataset, "__getitem__"):
        for i in range(len(dataset)):
            yield dataset[i]
    else:
        yield from dataset


def default_collator(processing_class=None):
    """HF's rule: pad with the tokenizer when there is one, else stack features as they are."""
    from transformers import DataCollatorWithPadding, default_data_collator

    if processing_class is not None and hasattr(processing_class, "pad"):
        return DataCollatorWithPadding(processing_class, return_tensors="np")
    return lambda features: default_data_collator(features, return_tensors="np")


def to_numpy_batch(batch):
    """A collator's output as {name: numpy array}; torch tensors (a collator left at return_tensors="pt") too."""
    out = {}
    for key, value in dict(batch).items():
        if value is None:
            continue
        if type(value).__module__.startswith("torch"):
            value = value.detach().cpu().numpy()
        elif hasattr(value, "asnumpy"):
            value = value.asnumpy()
        if isinstance(value, (list, tuple)):
            value = np.asarray(value)
        if isinstance(value, np.ndarray) and value.dtype == np.float64:
            value = value.astype(np.float32)
        out[key] = value
    return out


def signature_columns(model, label_names):
    """Argument names the model's forward accepts, plus label names (HF's `_set_signature_columns_if_needed`)."""
    params = inspect.signature(model.construct).parameters
    names = [n for n, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    return list(dict.fromkeys(names + ["label", "label_ids"] + list(label_names)))


def remove_unused_columns(dataset, columns, description=""):
    """Drops columns the model does not accept (HF datasets and lists of dicts; others are left as they are)."""
    if hasattr(dataset, "column_names") and hasattr(dataset, "remove_columns"):
        ignored = [c for c in dataset.column_names if c not in columns]
        if ignored:
            logger.info("The following columns in the %s set don't have a corresponding argument in the model's "
                        "forward and have been ignored: %s.", description, ", ".join(ignored))
            dataset = dataset.remove_columns(ignored)
        return dataset
    if isinstance(dataset, list) and dataset and isinstance(dataset[0], dict):
        return [{k: v for k, v in row.items() if k in columns} for row in dataset]
    return dataset


class BatchLoader:
    """Index-based batching with HF's order rules.

    Training order: a permutation drawn from `numpy.random.default_rng(seed + epoch)` ("random") or 0..n-1
    ("sequential"). With `world_size > 1`, each global batch of `batch_size * world_size` consecutive indices is split
    so rank r takes the r-th slice, i.e. the global batch equals a single-process batch of that size.
    """

    def __init__(self, dataset, batch_size, collate_fn, shuffle=False, seed=0, drop_last=False, world_size=1,
                 rank=0):
        self.dataset = dataset
        self.batch_size = batch_size
        self.collate_fn = collate_fn
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.world_size = world_size
        self.rank = rank
        self.epoch = 0
        self.indexable = has_length(dataset) and hasattr(dataset, "__getitem__") and not is_mindspore_dataset(dataset)

    def set_epoch(self, epoch):
        self.epoch = epoch

    def order(self):
        n = len(self.dataset)
        if self.shuffle:
            return np.random.default_rng(self.seed + self.epoch).permutation(n)
        return np.arange(n)

    def __len__(self):
        if not has_length(self.dataset):
            raise TypeError("this dataset has no length")
        global_batch = self.batch_size * self.world_size
        n = len(self.dataset)
        return n // global_batch if self.drop_last else -(-n // global_batch)

    def num_examples(self):
        return len(self.dataset)

    def _index_batches(self):
        order = self.order()
        global_batch = self.batch_size * self.world_size
        for start in range(0, len(order), global_batch):
            chunk = order[start:start + global_batch]
            if len(chunk) < global_batch:
                if self.drop_last:
                    return
                # like accelerate's even batches: wrap around so every rank gets a batch of the same size
                if self.world_size > 1:
                    chunk = np.concatenate([chunk, order[: global_batch - len(chunk)]])
            per_rank = -(-len(chunk) // self.world_size)
            yield chunk[self.rank * per_rank:(self.rank + 1) * per_rank]

    def _row_batches(self):
        rows, global_batch = [], self.batch_size * self.world_size
        for row in iterate_rows(self.dataset):
            rows.append(row)
            if len(rows) == global_batch:
                yield rows[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]
                rows = []
        if rows and not self.drop_last and self.world_size == 1:
            yield rows

    def __iter__(self):
        if self.indexable:
            for indices in self._index_batches():
                if hasattr(self.dataset, "__getitems__"):
                    rows = self.dataset.__getitems__([int(i) for i in indices])
                else:
                    rows = [self.dataset[int(i)] for i in indices]
                yield to_numpy_batch(self.collate_fn(rows))
        else:
            for rows in self._row_batches():
                yield to_numpy_batch(self.collate_fn(rows))


# --------------------------------------------------------------------------------------------------------------------
# sequence-length buckets: one compiled graph per bucket instead of one per distinct batch length
# --------------------------------------------------------------------------------------------------------------------

# token-level inputs that can be padded on the right without changing a loss, and what they are padded with
# (None: the model's pad token id)
_TOKEN_KEYS = {"input_ids": None, "attention_mask": 0, "token_type_ids": 0, "position_ids": 0,
               "special_tokens_mask": 1, "labels": -100}
_DECODER_KEYS = {"labels": -100, "decoder_input_ids": None, "decoder_attention_mask": 0}


def bucket_lengths(buckets, max_length=None):
    """The sorted bucket lengths: `buckets` as given, or for "auto" each power of two from 16 and 1.5x it
    (16, 32, 48, 64, 96, 128, 192, ...) up to `max_length` (which is then a bucket itself) or 65536."""
    if buckets == "auto":
        limit = max_length or 65536
        out, n = [], 16
        while n < limit:
            out += [n] + ([n * 3 // 2] if n >= 32 else [])
            n *= 2
        out = [b for b in out if b < limit] + [limit]
    else:
        out = list(buckets or [])
        if max_length:
            out = [b for b in out if b <= max_length]
    return sorted(set(out))


def _bucket_of(length, lengths):
    for b in lengths:
        if b >= length:
            return b
    return length


def pad_to_bucket(batch, lengths, pad_token_id, causal, encoder_decoder=False):
    """`batch` (a dict of numpy arrays) with its token dimension padded on the right up to the next bucket length.

    Only padding that leaves the loss (and each real position's outputs) unchanged is done: labels get -100 (not
    counted), `attention_mask` 0 (masked keys) and ids the pad token. The encoder/decoder-only token dimension is
    padded when the batch has an `attention_mask`, or when the model is causal (`causal`: later positions cannot
    affect earlier ones) and then ids are padded with `pad_token_id` (0 if None). With `encoder_decoder`, labels and
    `decoder_*` (a causal decoder) are padded along their own length. A batch is left as it is when it holds another
    array of the same (batch, length) shape whose padding value is unknown, when its ids would need an unknown pad
    token (no `pad_token_id` and not causal), or when no bucket is at least its length.
    """
    if not lengths:
        return batch
    out = dict(batch)
    groups = [(_DECODER_KEYS, "decoder_attention_mask", True)] if encoder_decoder else []
    token_keys = {k: v for k, v in _TOKEN_KEYS.items() if not (encoder_decoder and k == "labels")}
    groups.insert(0, (token_keys, "attention_mask", causal and not encoder_decoder))
    for keys, mask_key, is_causal in groups:
        present = [k for k in keys if isinstance(out.get(k), np.ndarray) and out[k].ndim >= 2]
        if not present:
            continue
        ref = out[mask_key] if mask_key in present else out[present[0]]
        size, length = ref.shape[0], ref.shape[1]
        if mask_key not in present and not is_causal:
            continue
        same_shape = [k for k, v in out.items() if isinstance(v, np.ndarray) and v.ndim >= 2 and
                      v.shape[:2] == (size, length)]
        if any(k not in keys or (k == "labels" and not np.issubdtype(out[k].dtype, np.integer))
               for k in same_shape):
            continue
        target = _bucket_of(length, lengths)
        if target == length:
            continue
        if pad_token_id is None and not is_causal and any(keys[k] is None for k in same_shape):
            continue
        for k in same_shape:
            value = keys[k] if keys[k] is not None else (pad_token_id if pad_token_id is not None else 0)
            arr = out[k]
            width = [(0, 0)] * arr.ndim
            width[1] = (0, target - length)
            out[k] = np.pad(arr, width, constant_values=np.asarray(value, arr.dtype))
    return out
