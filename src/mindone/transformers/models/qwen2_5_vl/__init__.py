from .modeling_qwen2_5_vl import *  # noqa: F401,F403
