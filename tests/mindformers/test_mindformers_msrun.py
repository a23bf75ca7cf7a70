"""init_context(use_parallel=True) data parallelism under msrun on CPU equals one process with the same global batch."""

import json
import os
import subprocess
import sys

import pytest
import transformers

from tests import parity
from tests.trainer.test_data_parallel import _free_port

SCRIPT = os.path.join(os.path.dirname(__file__), "mf_dp_train.py")


@pytest.mark.slow
def test_init_context_data_parallel_under_msrun_matches_single_process(tmp_path):
    config = transformers.LlamaConfig(vocab_size=99, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                      pad_token_id=0, tie_word_embeddings=False)
    checkpoint = parity.save_torch(parity.torch_reference(transformers.LlamaForCausalLM, config),
                                   str(tmp_path / "ckpt"))
    bin_dir = os.path.dirname(sys.executable)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
           "PYTHONPATH": os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", "")}
    dp_out = str(tmp_path / "dp.json")
    cmd = [os.path.join(bin_dir, "msrun"), "--worker_num=2", "--local_worker_num=2", f"--master_port={_free_port()}",
           f"--log_dir={tmp_path / 'logs'}", "--join=True", SCRIPT, checkpoint, dp_out]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)
    worker_log = tmp_path / "logs" / "worker_0.log"
    assert run.returncode == 0, worker_log.read_text()[-3000:] if worker_log.exists() else run.stderr[-3000:]
    single_out = str(tmp_path / "single.json")
    subprocess.run([sys.executable, SCRIPT, checkpoint, single_out, "--single"], env=env, check=True, timeout=1200,
                   capture_output=True)

    ranks = [json.load(open(f"{dp_out}.rank{r}")) for r in (0, 1)]
    single = json.load(open(f"{single_out}.rank0"))
    assert [(r["rank"], r["device_num"]) for r in ranks] == [(0, 2), (1, 2)]  # init_context's return value
    assert (single["rank"], single["device_num"]) == (0, 1)
    assert ranks[0]["weight_checksum"] == ranks[1]["weight_checksum"]  # replicas stay identical
    assert ranks[0]["weight_checksum"] == pytest.approx(single["weight_checksum"], rel=1e-5)
    dp_logs = [h for h in ranks[0]["log_history"] if "grad_norm" in h]
    ref_logs = [h for h in single["log_history"] if "grad_norm" in h]
    assert len(dp_logs) == len(ref_logs) == 8  # 16 rows / global batch 4, 2 epochs
    for a, b in zip(dp_logs, ref_logs):
        for key in ("loss", "grad_norm", "learning_rate"):
            assert a[key] == pytest.approx(b[key], rel=1e-5), (key, a, b)
