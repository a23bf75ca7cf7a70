"""IDEFICS's Perceiver resampler (HF's `models/idefics/perceiver.py`, from Flamingo): a fixed set of learned latents
cross-attends to each image's vision states (concatenated with the latents themselves) for `resampler_depth` blocks,
compressing any number of image positions to `resampler_n_latents`."""

from mindspore import nn, ops
from mindspore.common.initializer import Normal

from ...backend import functional as F
from ...backend.layers import LayerNorm, Linear, new_parameter


class IdeficsPerceiverResampler(nn.Cell):
    def __init__(self, config, embed_dim: int, depth: int, n_heads: int, head_dim: int, n_latents: int):
        """
        Args:
            config (`IdeficsConfig`): config object
            embed_dim (`int`): size of the embeddings fed in (and of the latents returned)
            depth (`int`): number of (attention, MLP) blocks
            n_heads (`int`): attention heads of each block
            head_dim (`int`): size of each head
            n_latents (`int`): number of latents the input sequence is resampled to
        """
        super().__init__()
        self.embed_dim, self.n_heads, self.head_dim, self.n_latents = embed_dim, n_heads, head_dim, n_latents
        self.qk_layer_norms = config.perceiver_config.qk_layer_norms_perceiver
        self.latents = new_parameter((self.n_latents, self.embed_dim), Normal(1.0))
        self.intermediate_dim = (self.embed_dim * 4 if not hasattr(config.vision_config, "embed_dim")
                                 else config.vision_config.embed_dim * 4)
        self.blocks = nn.CellList([
            nn.CellList([IdeficsPerceiverAttention(self.embed_dim, self.n_heads, self.head_dim, self.qk_layer_norms),
                         IdeficsMLP(self.intermediate_dim, config)])
            for _ in range(depth)
        ])
        self.layer_norm = LayerNorm(self.embed_dim)

    def construct(self, context):
        """(N, S, embed_dim) context -> (N, n_latents, embed_dim)."""
        latents = ops.broadcast_to(self.latents[None], (context.shape[0],) + tuple(self.latents.shape))
        for block in self.blocks:
            attn, ff = block[0], block[1]
            latents = attn(context, latents) + latents
            latents = ff(latents) + latents
        return self.layer_norm(latents)


class IdeficsPerceiverAttention(nn.Cell):
    def __init__(self, embed_dim: int, n_heads: int, head_dim: int, qk_layer_norms: bool):
        """Cross-attention of the latents (queries) to the context followed by the latents (keys and values)."""
        super().__init__()
        self.embed_dim, self.n_heads, self.head_dim = embed_dim, n_heads, head_dim
        self.qk_layer_norms = qk_layer_norms
        self.context_layer_norm = LayerNorm(self.embed_dim)
        self.latents_layer_norm = LayerNorm(self.embed_dim)
        if self.qk_layer_norms:
            self.q_layer_norm = LayerNorm(self.head_dim)
            self.k_layer_norm = LayerNorm(self.head_dim)
        self.qk_scale = self.head_dim ** -0.5
        # no biases (Perceiver / Flamingo)
        self.q_proj = Linear(self.embed_dim, self.n_heads * self.head_dim, bias=False)
        self.k_proj = Linear(self.embed_dim, self.n_heads * self.head_dim, bias=False)
        self.v_proj = Linear(self.embed_dim, self.n_heads * self.head_dim, bias=False)
        self.output_proj = Linear(self.n_heads * self.head_dim, embed_dim, bias=False)

    def construct(self, context, latents):
        """context (N, S, D), latents (N, L, D) -> (N, L, D)."""
        context = self.context_layer_norm(context)
        latents = self.latents_layer_norm(latents)
        batch_size = context.shape[0]
        # Flamingo: keys and values see the context *and* the latents
        both = F.cat([context, latents], -2)

        def heads(x):
            return x.reshape(batch_size, x.shape[1], self.n_heads, self.head_dim).swapaxes(1, 2)

        q, k, v = heads(self.q_proj(latents)), heads(self.k_proj(both)), heads(self.v_proj(both))
        if self.qk_layer_norms:
            q = self.q_layer_norm(q)
            k = self.k_layer_norm(k)
        # HF scales the queries before the product and takes the softmax in the scores' dtype (the max subtraction
        # it writes out is what softmax does anyway)
        scores = ops.matmul(q * self.qk_scale, k.swapaxes(-1, -2))
        resampled = ops.matmul(F.softmax(scores, -1), v)
        return self.output_proj(resampled.swapaxes(1, 2).reshape(batch_size, -1, self.n_heads * self.head_dim))


class IdeficsMLP(nn.Cell):
    def __init__(self, intermediate_size, config):
        """LayerNorm -> Linear -> ReLU -> Linear on the vision embedding size (the resampler's feed-forward)."""
        super().__init__()
        self.embed_dim = config.vision_config.embed_dim
        self.ln = LayerNorm(self.embed_dim)
        self.fc = Linear(self.embed_dim, intermediate_size, bias=False)
        self.act = F.relu
        self.c_proj = Linear(intermediate_size, self.embed_dim, bias=False)

    def construct(self, hidden_states):
        return self.c_proj(self.act(self.fc(self.ln(hidden_states))))
