"""Qwen2-MoE family parity with torch `transformers` on tiny random checkpoints: routing (norm_topk_prob, shared
expert, decoder_sparse_step / mlp_only_layers), router logits, the auxiliary load-balancing loss, per-expert and
stacked checkpoints, compiled greedy decoding and Trainer steps."""

import numpy as np
import pytest
import transformers

from mindone.transformers import (
    AutoModelForCausalLM,
    Qwen2MoeForCausalLM,
    Qwen2MoeForQuestionAnswering,
    Qwen2MoeForSequenceClassification,
    Qwen2MoeForTokenClassification,
    Qwen2MoeModel,
)
from tests import parity
from tests.models.head_parity import (
    assert_gradients_match_torch,
    assert_greedy_tokens_match_torch,
    assert_matches_torch,
    checkpoint_factory,
    compiled_decode_steps,
    left_padded_batch,
)
from tests.models.moe_parity import (
    assert_moe_causal_lm_matches_torch,
    assert_moe_fp16_close_to_torch,
    assert_missing_expert_is_a_clear_error,
    assert_moe_trainer_matches_torch,
    assert_stacked_checkpoint_loads_and_saves_hf_layout,
)

VOCAB = 99
# experts_implementation="eager": the torch reference runs HF's per-expert loop (the default grouped_mm needs
# 16-byte-aligned strides this tiny config does not have)
BASE = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0, tie_word_embeddings=False,
            num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16, shared_expert_intermediate_size=24,
            experts_implementation="eager")
# each variant exercises a config feature of HF's Qwen2Moe
VARIANTS = {
    "gqa_untied": {},
    # layer 0 dense (decoder_sparse_step=2), top-k renormalised, sliding window on layer 0
    "sparse_step_norm_topk_sliding": dict(decoder_sparse_step=2, norm_topk_prob=True, num_experts=5,
                                          num_experts_per_tok=3, use_sliding_window=True, sliding_window=4,
                                          max_window_layers=1),
    "mlp_only_layer_tied_no_bias": dict(mlp_only_layers=[1], num_key_value_heads=4, tie_word_embeddings=True,
                                        qkv_bias=False, num_experts_per_tok=1),
}


def make_config(**overrides):
    return transformers.Qwen2MoeConfig(**{**BASE, **overrides})


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return checkpoint_factory(tmp_path_factory, make_config)


# every variant compiled (graph), the base one also in PyNative: the suite shares 2 cores
@pytest.mark.parametrize("variant, mode", [(v, "graph") for v in VARIANTS] + [("gqa_untied", "pynative")])
def test_causal_lm_with_router_logits_and_aux_loss_matches_torch_fp32(checkpoints, variant, mode):
    torch_model, path = checkpoints(transformers.Qwen2MoeForCausalLM, **VARIANTS[variant])
    assert_moe_causal_lm_matches_torch(Qwen2MoeForCausalLM, torch_model, path, VOCAB, mode)


def test_aux_loss_without_attention_mask_and_router_logits_from_config(checkpoints):
    torch_model, path = checkpoints(transformers.Qwen2MoeForCausalLM, output_router_logits=True,
                                    router_aux_loss_coef=0.5)
    ids, _, labels = left_padded_batch(VOCAB, seed=2, left_pad=0)
    out, ref = assert_matches_torch(Qwen2MoeForCausalLM, torch_model, path, dict(input_ids=ids, labels=labels),
                                    ["logits", "loss", "aux_loss", "router_logits"], "graph")
    assert len(out["router_logits"]) == BASE["num_hidden_layers"]  # both layers sparse by default
    # the coefficient really enters the loss: loss = next-token loss + coef * aux_loss
    plain = parity.run_torch(torch_model, dict(input_ids=ids, labels=labels, output_router_logits=False)).loss
    assert float(ref.aux_loss) > 0
    assert abs(float(out["loss"]) - (float(plain) + 0.5 * float(out["aux_loss"]))) < 1e-5


@pytest.mark.parametrize("mode", parity.MODES)
def test_causal_lm_fp16_close_to_torch_fp32(checkpoints, mode):
    torch_model, path = checkpoints(transformers.Qwen2MoeForCausalLM)
    assert_moe_fp16_close_to_torch(Qwen2MoeForCausalLM, torch_model, path, VOCAB, mode)


@pytest.mark.parametrize("mode", parity.MODES)
def test_parameter_gradients_with_aux_loss_match_torch(checkpoints, mode):
    torch_model, path = checkpoints(transformers.Qwen2MoeForCausalLM, **VARIANTS["sparse_step_norm_topk_sliding"])
    ids, mask, labels = left_padded_batch(VOCAB, seed=1)
    # router gradients come both through the routing weights and through the aux loss
    assert_gradients_match_torch(Qwen2MoeForCausalLM, torch_model, path,
                                 dict(input_ids=ids, attention_mask=mask, labels=labels, output_router_logits=True),
                                 mode)


def test_greedy_generation_matches_torch_on_the_compiled_static_cache_path(checkpoints):
    torch_model, path = checkpoints(transformers.Qwen2MoeForCausalLM, **VARIANTS["sparse_step_norm_topk_sliding"])
    ours = assert_greedy_tokens_match_torch(Qwen2MoeForCausalLM, torch_model, path, VOCAB)
    assert compiled_decode_steps(ours), "generate() did not take the compiled static-cache path"


def test_greedy_generation_matches_torch_with_the_native_routed_experts_kernel(checkpoints):
    # 2 rows x top-2 < 8 experts: each compiled decode step runs the native routed-SwiGLU kernel on the stacked
    # weights (F.routed_swiglu_experts), not the gather + batched matmuls
    torch_model, path = checkpoints(transformers.Qwen2MoeForCausalLM, num_experts=8, num_experts_per_tok=2)
    ours = assert_greedy_tokens_match_torch(Qwen2MoeForCausalLM, torch_model, path, VOCAB)
    assert compiled_decode_steps(ours), "generate() did not take the compiled static-cache path"


@pytest.mark.parametrize("ours_cls, fields", [
    (Qwen2MoeModel, ["last_hidden_state"]),
    (Qwen2MoeForSequenceClassification, ["logits", "loss"]),
    (Qwen2MoeForTokenClassification, ["logits", "loss"]),
    (Qwen2MoeForQuestionAnswering, ["start_logits", "end_logits", "loss"]),
])
def test_task_heads_match_torch(checkpoints, ours_cls, fields):
    torch_model, path = checkpoints(getattr(transformers, ours_cls.__name__), num_labels=3)
    ids, mask, _ = left_padded_batch(VOCAB, seed=4)
    inputs = dict(input_ids=ids, attention_mask=mask)
    if ours_cls is Qwen2MoeForSequenceClassification:
        inputs["labels"] = np.array([0, 2], np.int64)
    elif ours_cls is Qwen2MoeForTokenClassification:
        inputs["labels"] = np.where(mask == 1, ids % 3, -100)
    elif ours_cls is Qwen2MoeForQuestionAnswering:
        inputs.update(start_positions=np.array([1, 4], np.int64), end_positions=np.array([3, 20], np.int64))
    assert_matches_torch(ours_cls, torch_model, path, inputs, fields, "graph", rows=mask.astype(bool))


def test_stacked_checkpoint_loads_and_save_writes_hf_per_expert_layout(checkpoints, tmp_path):
    torch_model, path = checkpoints(transformers.Qwen2MoeForCausalLM)
    saved = assert_stacked_checkpoint_loads_and_saves_hf_layout(Qwen2MoeForCausalLM, transformers.Qwen2MoeForCausalLM,
                                                                 torch_model, tmp_path, VOCAB)
    # HF's on-disk names: gate_proj/up_proj/down_proj per expert
    assert "model.layers.0.mlp.experts.3.up_proj.weight" in saved
    assert "model.layers.1.mlp.shared_expert_gate.weight" in saved
    assert not any("gate_up_proj" in k or k.endswith("experts.down_proj") for k in saved)
    assert isinstance(AutoModelForCausalLM.from_pretrained(path), Qwen2MoeForCausalLM)


def test_checkpoint_missing_an_expert_is_a_clear_error(checkpoints, tmp_path):
    _, path = checkpoints(transformers.Qwen2MoeForCausalLM)
    assert_missing_expert_is_a_clear_error(Qwen2MoeForCausalLM, path, tmp_path, ".experts.3.",
                                           r"model\.layers\.0\.mlp\.experts\.\w+: .*4 experts")


def test_trainer_steps_with_aux_loss_match_torch_trainer(tmp_path):
    config = make_config(output_router_logits=True, router_aux_loss_coef=0.1)
    assert_moe_trainer_matches_torch(Qwen2MoeForCausalLM, transformers.Qwen2MoeForCausalLM, config, tmp_path)
