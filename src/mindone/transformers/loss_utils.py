"""Task losses with HF's semantics (ignore_index -100, shifted causal labels, problem_type inference)."""

import mindspore as ms

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
