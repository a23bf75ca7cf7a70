from .modeling_qwen3_moe import *  # noqa: F401,F403
