from .modeling_gemma import *  # noqa: F401,F403
