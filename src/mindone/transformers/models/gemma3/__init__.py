from .modeling_gemma3 import *  # noqa: F401,F403
