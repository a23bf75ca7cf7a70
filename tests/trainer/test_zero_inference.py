"""ZeRO stage-3 inference (`shard_for_inference`): parameters sliced at rest and gathered per decoder block around
its forward give generate() the unsharded model's tokens; one process here (world size 1: the slices are whole, the
gather/release hooks run all the same), two msrun ranks in test_zero_msrun.py."""

import numpy as np
import pytest
import transformers

from mindone.transformers import LlamaForCausalLM
from mindone.transformers.trainer import load_sharded, shard_for_inference
from tests import parity


@pytest.fixture(scope="module", params=[False, True], ids=["untied", "tied"])
def checkpoint(request, tmp_path_factory):
    config = transformers.LlamaConfig(vocab_size=99, hidden_size=32, intermediate_size=37, num_hidden_layers=3,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                      pad_token_id=0, tie_word_embeddings=request.param)
    model = parity.torch_reference(transformers.LlamaForCausalLM, config, seed=3)
    return parity.save_torch(model, str(tmp_path_factory.mktemp("zero-inference")))


def test_generate_with_gathered_blocks_equals_the_plain_model(checkpoint):
    ids = np.random.RandomState(0).randint(3, 99, (2, 6)).astype(np.int64)
    plain = LlamaForCausalLM.from_pretrained(checkpoint, dtype="float32")
    expected = parity.to_numpy(plain.generate(ids, max_new_tokens=6, do_sample=False, disable_compile=True))
    total = sum(int(np.prod(p.shape)) * 4 for p in plain.get_parameters())

    model = LlamaForCausalLM.from_pretrained(checkpoint, dtype="float32")
    sharded = shard_for_inference(model)
    assert all(p.shape == (0,) for p in model.get_parameters()), "parameters are released at rest"
    out = parity.to_numpy(model.generate(ids, max_new_tokens=6, do_sample=False))
    np.testing.assert_array_equal(out, expected)
    assert all(p.shape == (0,) for p in model.get_parameters()), "released again after generate()"
    # one process keeps every slice; at most one unit's parameters were gathered at a time
    assert sharded.resident_bytes() == total
    block = sum(int(np.prod(p.shape)) * 4 for p in plain.model.layers[0].get_parameters())
    embed = int(np.prod(plain.model.embed_tokens.weight.shape)) * 4
    assert 0 < sharded.gathered_bytes_peak <= max(block, embed)

    # the same from a model that was never materialised (its slices read from the checkpoint)
    loaded = load_sharded(LlamaForCausalLM, checkpoint)
    assert all(p.shape == (0,) for p in loaded.get_parameters())
    assert shard_for_inference(loaded).resident_bytes() == total
    np.testing.assert_array_equal(parity.to_numpy(loaded.generate(ids, max_new_tokens=6, do_sample=False)), expected)


@pytest.mark.slow
def test_two_msrun_ranks_generate_the_single_process_tokens_holding_half(checkpoint, tmp_path):
    import json
    import os
    import subprocess
    import sys

    from tests.trainer.test_data_parallel import _free_port

    script = os.path.join(os.path.dirname(__file__), "zero_generate.py")
    bin_dir = os.path.dirname(sys.executable)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
           "PYTHONPATH": os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [os.path.join(bin_dir, "msrun"), "--worker_num=2", "--local_worker_num=2", f"--master_port={_free_port()}",
           f"--log_dir={tmp_path / 'logs'}", "--join=True", script, checkpoint, str(tmp_path)]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    log = tmp_path / "logs" / "worker_0.log"
    assert run.returncode == 0, log.read_text()[-3000:] if log.exists() else run.stderr[-3000:]
    ranks = [json.load(open(tmp_path / f"generate.{r}.json")) for r in (0, 1)]

    plain = LlamaForCausalLM.from_pretrained(checkpoint, dtype="float32")
    ids = np.random.RandomState(0).randint(3, 99, (2, 6)).astype(np.int64)
    expected = parity.to_numpy(plain.generate(ids, max_new_tokens=6, do_sample=False)).tolist()
    total = sum(int(np.prod(p.shape)) * 4 for p in plain.get_parameters())
    for rank in ranks:
        assert rank["world_size"] == 2
        assert rank["tokens"] == expected
        assert rank["tokens_sharded_load"] == expected
        # each rank holds half of every parameter (rounded up per parameter)
        assert total / 2 <= rank["resident_bytes"] <= total / 2 + 4 * len(list(plain.get_parameters()))
