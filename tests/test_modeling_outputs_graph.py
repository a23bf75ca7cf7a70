"""`model_output` inside a compiled graph: a plain dict, the set fields first and the None ones after them."""

import mindspore as ms
import numpy as np
from mindspore import ops

from mindone.transformers.modeling_outputs import MoeCausalLMOutputWithPast, model_output


def test_graph_output_dict_with_none_before_float16_matmul_tuple_compiles_and_keeps_every_key():
    # MindSpore 2.10 fails on {"loss": None, "router_logits": (fp16 MatMul output,)} returned from a graph
    # ("Invalid host tensor size ... for pyexecute"): the None fields go last
    x = ms.Tensor(np.random.RandomState(0).randn(12, 32).astype(np.float16))
    w = ms.Tensor(np.random.RandomState(1).randn(4, 32).astype(np.float16))
    matmul = ops.MatMul(transpose_b=True)

    def forward(x, w):
        router = matmul(x, w)
        return model_output(MoeCausalLMOutputWithPast, {"loss": None, "aux_loss": router.sum(), "logits": x,
                                                        "past_key_values": None, "router_logits": (router,)})

    out = ms.jit(forward)(x, w)
    assert list(out) == ["aux_loss", "logits", "router_logits", "loss", "past_key_values"]
    assert out["loss"] is None and out["past_key_values"] is None
    np.testing.assert_array_equal(out["router_logits"][0].asnumpy(), matmul(x, w).asnumpy())
    eager = forward(x, w)  # PyNative: the ModelOutput, whose keys skip None fields
    assert isinstance(eager, MoeCausalLMOutputWithPast) and list(eager) == ["aux_loss", "logits", "router_logits"]
