from .modeling_qwen2 import *  # noqa: F401,F403
