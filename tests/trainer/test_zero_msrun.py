"""ZeRO stages 1-3 with two msrun workers on CPU (stage 3 gathering one unit at a time): the loss curve and final
weights equal one process with the same global batch, the bytes a rank holds drop as each stage promises, and a
stage-2 checkpoint resumes exactly."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import transformers

from tests import parity
from tests.trainer.test_data_parallel import _free_port

SCRIPT = os.path.join(os.path.dirname(__file__), "zero_train.py")
# one decoder block of the tiny Llama below, float32: q, k, v, o, gate, up, down projections and two norms
BLOCK_BYTES = 4 * (32 * 32 + 2 * 16 * 32 + 32 * 32 + 3 * 37 * 32 + 2 * 32)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("zero_msrun")
    config = transformers.LlamaConfig(vocab_size=99, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                      pad_token_id=0, tie_word_embeddings=False)
    checkpoint = parity.save_torch(parity.torch_reference(transformers.LlamaForCausalLM, config),
                                   str(tmp_path / "ckpt"))
    bin_dir = os.path.dirname(sys.executable)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
           "PYTHONPATH": os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = tmp_path / "out"
    out.mkdir()
    cmd = [os.path.join(bin_dir, "msrun"), "--worker_num=2", "--local_worker_num=2", f"--master_port={_free_port()}",
           f"--log_dir={tmp_path / 'logs'}", "--join=True", SCRIPT, checkpoint, str(out)]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    worker_log = tmp_path / "logs" / "worker_0.log"
    assert run.returncode == 0, worker_log.read_text()[-3000:] if worker_log.exists() else run.stderr[-3000:]
    subprocess.run([sys.executable, SCRIPT, checkpoint, str(out), "--single"], env=env, check=True, timeout=1800,
                   capture_output=True)
    ranks = [json.load(open(out / f"result.{r}.json")) for r in (0, 1)]
    return ranks, json.load(open(out / "result.single.json")), out


@pytest.mark.slow
@pytest.mark.parametrize("stage", [1, 2, 3])
def test_two_ranks_follow_the_single_process_loss_curve(results, stage):
    ranks, single, _ = results
    key = f"stage{stage}"
    assert [r[key]["world_size"] for r in ranks] == [2, 2] and single["plain"]["world_size"] == 1
    assert ranks[0][key]["weight_checksum"] == ranks[1][key]["weight_checksum"]  # replicas agree
    assert ranks[0][key]["weight_checksum"] == pytest.approx(single["plain"]["weight_checksum"], rel=1e-5)
    got, want = ranks[0][key]["log_history"], single["plain"]["log_history"]
    assert len(got) == len(want) == 8
    for a, b in zip(got, want):
        for name in ("loss", "grad_norm", "learning_rate"):
            assert a[name] == pytest.approx(b[name], rel=1e-5), (name, a, b)


@pytest.mark.slow
def test_stage3_per_layer_gather_ends_with_the_single_process_weights(results):
    _, _, out = results
    want = np.load(out / "single" / "weights.0.npz")
    for rank in (0, 1):
        got = np.load(out / "zero3" / f"weights.{rank}.npz")
        assert set(got.files) == set(want.files)
        for name in want.files:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-7, err_msg=name)


@pytest.mark.slow
def test_stage3_from_load_sharded_trains_exactly_as_from_a_loaded_model(results):
    ranks, _, out = results
    for r, rank in enumerate(ranks):
        assert rank["stage3_sharded_load"]["log_history"] == rank["stage3"]["log_history"]
        got = np.load(out / "zero3_loaded" / f"weights.{r}.npz")
        want = np.load(out / "zero3" / f"weights.{r}.npz")
        for name in want.files:
            np.testing.assert_array_equal(got[name], want[name], err_msg=name)


@pytest.mark.slow
def test_per_rank_memory_drops_by_stage(results):
    ranks, single, _ = results
    for rank in ranks:
        mem = {s: rank[f"stage{s}"]["memory"] for s in (1, 2, 3)}
        one = {s: single[f"stage{s}"]["memory"] for s in (1, 2, 3)}  # the same stage on one process
        params = one[1]["parameters"]  # all trainable parameters, float32
        padding = 3 * 4 * 2  # at most one padded element per group (2 groups) in 3 float32 slices
        for s in (1, 2, 3):
            assert one[s]["optimizer_state"] == 3 * params  # parameter copy, exp_avg, exp_avg_sq
            assert 0 <= mem[s]["optimizer_state"] - one[s]["optimizer_state"] / 2 <= padding
        assert mem[1]["gradients"] == params  # stage 1 keeps full gradients
        for s in (2, 3):
            assert 0 <= mem[s]["gradients"] - params / 2 <= 4 * 2
        assert mem[1]["parameters"] == mem[2]["parameters"] == params
        assert mem[3]["parameters"] == 0  # released between steps (jit_mode=False); its slice is in the state
        # during a step: one unit at a time, the largest being a decoder block (its slice is in the state too)
        assert mem[3]["parameters_peak"] == one[3]["parameters_peak"] == BLOCK_BYTES < params / 2
        assert mem[1]["parameters_peak"] == mem[2]["parameters_peak"] == params


@pytest.mark.slow
def test_stage2_checkpoint_on_two_ranks_resumes_exactly(results):
    ranks, _, _ = results
    for rank in ranks:
        assert rank["stage2_resumed"]["log_history"] == rank["stage2"]["log_history"]
        assert rank["stage2_resumed"]["weight_checksum"] == rank["stage2"]["weight_checksum"]


@pytest.mark.slow
@pytest.mark.parametrize("stage,step", [(2, 8), (3, 8)])
def test_two_rank_shards_merge_into_the_model_rank0_saved(results, stage, step):
    from safetensors.numpy import load_file

    from mindone.transformers.trainer import merge_zero_checkpoint

    _, _, out = results
    checkpoint = out / f"zero{stage}" / f"checkpoint-{step}"
    assert sorted(p.name for p in checkpoint.glob("zero_shard_rank*")) == [
        "zero_shard_rank0.safetensors", "zero_shard_rank1.safetensors"]
    merge_zero_checkpoint(str(checkpoint), str(out / f"merged{stage}"))
    merged = transformers.LlamaForCausalLM.from_pretrained(str(out / f"merged{stage}"))
    saved = load_file(str(checkpoint / "model.safetensors"))
    loaded = {k: v.numpy() for k, v in merged.state_dict().items()}
    assert set(loaded) == set(saved)
    for name, value in saved.items():
        assert (loaded[name] == value).all(), name
