from .modeling_qwen2_vl import *  # noqa: F401,F403
