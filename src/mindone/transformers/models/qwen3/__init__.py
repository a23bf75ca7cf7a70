from .modeling_qwen3 import *  # noqa: F401,F403
