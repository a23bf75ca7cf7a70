"""`msrun --worker_num=2 ... zero_generate.py CKPT OUT_DIR`: stage-3 inference of the tiny Llama over the ranks;
each rank writes its generated tokens (from `from_pretrained` + `shard_for_inference`, and from `load_sharded`), the
parameter bytes it holds at rest and the most it held gathered."""

import json
import os
import sys

import numpy as np
from mindspore.communication import get_rank, init

from mindone.transformers import LlamaForCausalLM
from mindone.transformers.trainer import load_sharded, shard_for_inference

checkpoint, out_dir = sys.argv[1], sys.argv[2]
init()
model = LlamaForCausalLM.from_pretrained(checkpoint, dtype="float32")
sharded = shard_for_inference(model)
ids = np.random.RandomState(0).randint(3, 99, (2, 6)).astype(np.int64)
tokens = model.generate(ids, max_new_tokens=6, do_sample=False).asnumpy().tolist()
loaded = load_sharded(LlamaForCausalLM, checkpoint)  # never materialised: each rank reads its slices
shard_for_inference(loaded)
tokens_sharded_load = loaded.generate(ids, max_new_tokens=6, do_sample=False).asnumpy().tolist()
with open(os.path.join(out_dir, f"generate.{get_rank()}.json"), "w") as f:
    json.dump({"tokens": tokens, "tokens_sharded_load": tokens_sharded_load, "world_size": sharded.world_size,
               "resident_bytes": sharded.resident_bytes(), "gathered_bytes_peak": sharded.gathered_bytes_peak}, f)
