"""Task losses with HF's semantics (ignore_index -100, shifted causal labels, problem_type inference)."""

import mindspore as ms
import numpy as np
from mindspore import ops

from .backend import functional as F
from .backend import runtime


def fixed_cross_entropy(logits, labels, num_items_in_batch=None, ignore_index=-100):
    """Mean over counted labels, or sum / num_items_in_batch when given (gradient accumulation)."""
    if num_items_in_batch is None:
        return F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="mean")
    return F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="sum") / num_items_in_batch


def causal_lm_loss(logits, labels, vocab_size, num_items_in_batch=None, ignore_index=-100, shift_labels=None):
    """Next-token loss: position t predicts labels[t + 1]; the last position has no target."""
    logits = logits.astype(ms.float32)
    if shift_labels is None:
        labels = F.pad(labels, (0, 1), value=ignore_index)
        shift_labels = labels[..., 1:]
    return fixed_cross_entropy(logits.reshape(-1, vocab_size), shift_labels.reshape(-1), num_items_in_batch,
                               ignore_index)


def causal_lm_head_loss(hidden_states, lm_head, logits, labels, vocab_size, num_items_in_batch=None, training=False,
                        ignore_index=-100):
    """`causal_lm_loss(logits, labels, ...)` for `logits = lm_head(hidden_states)`. In a compiled training step with
    a plain float32 `backend.layers.Linear` head (`is_plain_linear`, no bias) it runs as `F.linear_cross_entropy`
    from the hidden states, which keeps no logits-sized tensor for the backward (same loss and gradients up to float32
    rounding; the graph then drops the unused logits); otherwise from `logits`."""
    if not (training and runtime.in_graph() and getattr(lm_head, "is_plain_linear", False) and lm_head.bias is None
            and hidden_states.dtype == ms.float32 and lm_head.weight.dtype == ms.float32):
        return causal_lm_loss(logits, labels, vocab_size, num_items_in_batch, ignore_index)
    labels = F.pad(labels, (0, 1), value=ignore_index)[..., 1:]
    return F.linear_cross_entropy(hidden_states.reshape(-1, hidden_states.shape[-1]), lm_head.weight,
                                  labels.reshape(-1), ignore_index, num_items=num_items_in_batch)


def masked_lm_loss(logits, labels, vocab_size, num_items_in_batch=None, ignore_index=-100):
    return fixed_cross_entropy(logits.astype(ms.float32).reshape(-1, vocab_size), labels.reshape(-1),
                               num_items_in_batch, ignore_index)


def sequence_classification_loss(labels, pooled_logits, config):
    """regression (num_labels == 1), single-label (integer labels) or multi-label (float labels), as HF infers."""
    num_labels = config.num_labels
    problem_type = config.problem_type
    if problem_type is None:
        if num_labels == 1:
            problem_type = "regression"
        elif labels.dtype == ms.int64 or labels.dtype == ms.int32:
            problem_type = "single_label_classification"
        else:
            problem_type = "multi_label_classification"
        if not runtime.in_graph():
            config.problem_type = problem_type  # HF records the inferred type on the config
    if problem_type == "regression":
        if num_labels == 1:
            return F.mse_loss(pooled_logits.squeeze(), labels.squeeze())
        return F.mse_loss(pooled_logits, labels)
    if problem_type == "single_label_classification":
        return fixed_cross_entropy(pooled_logits.reshape(-1, num_labels), labels.reshape(-1))
    if problem_type == "multi_label_classification":
        return F.binary_cross_entropy_with_logits(pooled_logits, labels)
    raise ValueError(f"Invalid problem_type: {problem_type!r}")


def token_classification_loss(logits, labels, num_labels):
    return fixed_cross_entropy(logits.reshape(-1, num_labels).astype(ms.float32), labels.reshape(-1))


def question_answering_loss(start_logits, end_logits, start_positions, end_positions):
    """Positions outside the sequence are clamped to seq_len and ignored."""
    if start_positions.ndim > 1:
        start_positions = start_positions.squeeze(-1)
    if end_positions.ndim > 1:
        end_positions = end_positions.squeeze(-1)
    ignored = start_logits.shape[1]
    start_positions = start_positions.clip(0, ignored)
    end_positions = end_positions.clip(0, ignored)
    start_loss = fixed_cross_entropy(start_logits, start_positions, ignore_index=ignored)
    end_loss = fixed_cross_entropy(end_logits, end_positions, ignore_index=ignored)
    return (start_loss + end_loss) / 2


def load_balancing_loss(router_logits, num_experts, top_k, attention_mask=None):
    """Switch Transformer's auxiliary loss (eqs. 4-6) as HF computes it for its MoE decoders:
    num_experts * sum_e(fraction of top-k assignments to e * mean router probability of e), both over all layers'
    tokens, padding excluded when `attention_mask` (B, S) is given.

    Args:
        router_logits: tuple with one (B * S, num_experts) tensor per MoE layer; anything else gives 0 (as HF).
        attention_mask: (B, S) with 1 on real tokens; when it is longer than the routed tokens (a cached decoding
            step) its last S columns are used.
    """
    if not isinstance(router_logits, tuple) or not router_logits:
        return 0
    experts = F.arange(num_experts, dtype=ms.int64)
    flat_mask = None
    if attention_mask is not None:
        tokens = router_logits[0].shape[0] // attention_mask.shape[0]
        flat_mask = attention_mask[:, attention_mask.shape[1] - tokens:].reshape(-1).astype(ms.float32)
    tokens_per_expert = 0.0
    router_prob = 0.0
    rows = 0.0
    for logits in router_logits:
        probs = F.softmax(logits, -1)  # in the logits' dtype, as HF
        _, selected = F.topk(probs, top_k)
        hits = (selected[..., None] == experts).astype(ms.float32)  # (T, top_k, E), no gradient (like histc)
        probs = probs.astype(ms.float32)
        if flat_mask is None:
            tokens_per_expert = tokens_per_expert + hits.sum((0, 1))
            router_prob = router_prob + probs.sum(0)
            rows = rows + probs.shape[0]
        else:
            tokens_per_expert = tokens_per_expert + (hits * flat_mask[:, None, None]).sum((0, 1))
            router_prob = router_prob + (probs * flat_mask[:, None]).sum(0)
            rows = rows + flat_mask.sum()
    return (tokens_per_expert / rows * (router_prob / rows)).sum() * num_experts


# --- DETR-style set prediction loss (YOLOS; HF's `ForObjectDetectionLoss`) ---------------------------------------
# The bipartite matching is a host computation (scipy's Hungarian solver) without gradient, as in torch; the loss terms
# on the matched pairs are MindSpore ops, so the loss is differentiable in PyNative (value_and_grad). The matcher reads
# values on the host, so the loss cannot run inside `mindspore.jit`.


def _as_numpy(value, dtype):
    if isinstance(value, ms.Tensor):
        value = value.asnumpy()
    return np.asarray(value, dtype=dtype)


def _detection_targets(labels, batch_size):
    """HF's `labels`: a list of one dict per image with "class_labels" (n,) and "boxes" (n, 4) normalised
    (center_x, center_y, w, h). Returns numpy (classes, boxes) pairs; names the image and key that is wrong."""
    if not isinstance(labels, (list, tuple)) or len(labels) != batch_size:
        raise ValueError(f"labels must be a list of {batch_size} dicts (one per image) with 'class_labels' and "
                         f"'boxes'; got {type(labels).__name__}"
                         + (f" of length {len(labels)}" if isinstance(labels, (list, tuple)) else ""))
    targets = []
    for i, target in enumerate(labels):
        missing = [k for k in ("class_labels", "boxes") if not isinstance(target, dict) or k not in target]
        if missing:
            raise ValueError(f"labels[{i}] is missing {missing}: each image needs 'class_labels' (n,) and 'boxes' "
                             f"(n, 4)")
        classes = _as_numpy(target["class_labels"], np.int64).reshape(-1)
        boxes = _as_numpy(target["boxes"], np.float32).reshape(-1, 4) if classes.size else np.zeros((0, 4),
                                                                                                     np.float32)
        if boxes.shape[0] != classes.shape[0]:
            raise ValueError(f"labels[{i}]: {classes.shape[0]} class_labels but {boxes.shape[0]} boxes")
        targets.append((classes, boxes))
    return targets


def _corners(boxes):
    """(cx, cy, w, h) -> (x0, y0, x1, y1), for numpy arrays and MindSpore tensors alike."""
    cx, cy, w, h = boxes[..., 0], boxes[..., 1], boxes[..., 2], boxes[..., 3]
    parts = (cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h)
    if isinstance(boxes, ms.Tensor):
        return F.stack(parts, -1)
    return np.stack(parts, -1)


def _pairwise_giou(a, b):
    """Generalised IoU of every corner box in `a` (N, 4) with every one in `b` (M, 4), numpy."""
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    inter_wh = np.clip(np.minimum(a[:, None, 2:], b[None, :, 2:]) - np.maximum(a[:, None, :2], b[None, :, :2]), 0,
                       None)
    inter = inter_wh[..., 0] * inter_wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    hull_wh = np.clip(np.maximum(a[:, None, 2:], b[None, :, 2:]) - np.minimum(a[:, None, :2], b[None, :, :2]), 0,
                      None)
    hull = hull_wh[..., 0] * hull_wh[..., 1]
    return inter / union - (hull - union) / hull


def hungarian_match(logits, pred_boxes, targets, class_cost=1.0, bbox_cost=1.0, giou_cost=1.0):
    """Per image, the (prediction, target) index pairs minimising class + L1 + GIoU cost (DETR's matcher).

    Costs are computed on the host in float32 like torch's; NaN/inf costs become the largest float so they are only
    picked when nothing else is left. Returns a list of (pred_idx, target_idx) int64 numpy arrays.
    """
    from scipy.optimize import linear_sum_assignment

    if class_cost == 0 and bbox_cost == 0 and giou_cost == 0:
        raise ValueError("All costs of the Matcher can't be 0 (config.class_cost, bbox_cost, giou_cost)")
    logits = _as_numpy(logits.astype(ms.float32), np.float32)
    boxes = _as_numpy(pred_boxes.astype(ms.float32), np.float32)
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    probs = shifted / shifted.sum(-1, keepdims=True)
    matches = []
    for i, (classes, target_boxes) in enumerate(targets):
        if classes.size == 0:
            matches.append((np.zeros(0, np.int64), np.zeros(0, np.int64)))
            continue
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            cost = (bbox_cost * np.abs(boxes[i][:, None, :] - target_boxes[None, :, :]).sum(-1)
                    - class_cost * probs[i][:, classes]
                    - giou_cost * _pairwise_giou(_corners(boxes[i]), _corners(target_boxes)))
        big = np.finfo(np.float32).max
        cost = np.nan_to_num(cost.astype(np.float32), nan=big, posinf=big, neginf=big)
        rows, cols = linear_sum_assignment(cost)
        matches.append((rows.astype(np.int64), cols.astype(np.int64)))
    return matches


def object_detection_loss(logits, pred_boxes, labels, config):
    """DETR's set loss as HF computes it for YOLOS: Hungarian matching, then cross-entropy over all queries (unmatched
    ones labelled "no object", weighted by `config.eos_coefficient`), L1 and GIoU on the matched boxes (summed and
    divided by the number of target boxes, at least 1), weighted by `bbox_loss_coefficient` / `giou_loss_coefficient`.

    Returns (loss, loss_dict) with loss_dict's keys as HF's: loss_ce, loss_bbox, loss_giou, cardinality_error (the
    last is for logging, no gradient). Single process: the box count is not averaged over data-parallel ranks.
    """
    if getattr(config, "auxiliary_loss", False):
        raise NotImplementedError("config.auxiliary_loss=True: intermediate-layer detection losses are not "
                                  "implemented (YOLOS has no decoder layers to take them from); set it to False")
    batch_size, num_queries, num_outputs = logits.shape
    num_classes = num_outputs - 1
    targets = _detection_targets(labels, batch_size)
    for i, (classes, _) in enumerate(targets):
        if classes.size and (classes.min() < 0 or classes.max() >= num_classes):
            raise ValueError(f"labels[{i}]['class_labels'] must be in [0, {num_classes}) (config.num_labels); got "
                             f"{classes.tolist()}")
    matches = hungarian_match(logits, pred_boxes, targets, config.class_cost, config.bbox_cost, config.giou_cost)

    target_classes = np.full((batch_size, num_queries), num_classes, np.int32)
    flat_pred, matched_boxes = [], []
    for i, ((rows, cols), (classes, boxes)) in enumerate(zip(matches, targets)):
        target_classes[i, rows] = classes[cols]
        flat_pred.append(i * num_queries + rows)
        matched_boxes.append(boxes[cols])
    flat_pred = np.concatenate(flat_pred).astype(np.int32)
    matched_boxes = np.concatenate(matched_boxes).astype(np.float32)
    num_boxes = float(max(sum(len(classes) for classes, _ in targets), 1))

    class_weight = np.ones(num_outputs, np.float32)
    class_weight[-1] = config.eos_coefficient
    logits32 = logits.astype(ms.float32)
    loss_ce = F.cross_entropy(logits32.reshape(-1, num_outputs), ms.Tensor(target_classes.reshape(-1)),
                              weight=ms.Tensor(class_weight))

    if flat_pred.size:
        source = ops.gather(pred_boxes.astype(ms.float32).reshape(-1, 4), ms.Tensor(flat_pred), 0)
        target = ms.Tensor(matched_boxes)
        loss_bbox = ops.abs(source - target).sum() / num_boxes
        src, tgt = _corners(source), _corners(target)
        area_src = (src[:, 2] - src[:, 0]) * (src[:, 3] - src[:, 1])
        area_tgt = (tgt[:, 2] - tgt[:, 0]) * (tgt[:, 3] - tgt[:, 1])
        inter_wh = ops.clamp(ops.minimum(src[:, 2:], tgt[:, 2:]) - ops.maximum(src[:, :2], tgt[:, :2]), min=0.0)
        inter = inter_wh[:, 0] * inter_wh[:, 1]
        union = area_src + area_tgt - inter
        hull_wh = ops.clamp(ops.maximum(src[:, 2:], tgt[:, 2:]) - ops.minimum(src[:, :2], tgt[:, :2]), min=0.0)
        hull = hull_wh[:, 0] * hull_wh[:, 1]
        giou = inter / union - (hull - union) / hull
        loss_giou = (1 - giou).sum() / num_boxes
    else:  # no target box in the batch: torch's sums over nothing are 0 (and keep the graph connected)
        loss_bbox = pred_boxes.astype(ms.float32).sum() * 0.0
        loss_giou = loss_bbox

    predicted_objects = (ops.stop_gradient(logits).argmax(-1) != num_classes).astype(ms.float32).sum(1)
    target_lengths = ms.Tensor(np.array([len(classes) for classes, _ in targets], np.float32))
    cardinality_error = ops.abs(predicted_objects - target_lengths).mean()

    loss_dict = {"loss_ce": loss_ce, "loss_bbox": loss_bbox, "loss_giou": loss_giou,
                 "cardinality_error": cardinality_error}
    loss = loss_ce + config.bbox_loss_coefficient * loss_bbox + config.giou_loss_coefficient * loss_giou
    return loss, loss_dict
