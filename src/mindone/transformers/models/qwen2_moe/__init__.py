from .modeling_qwen2_moe import *  # noqa: F401,F403
