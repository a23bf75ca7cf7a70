from .modeling_llava import *  # noqa: F401,F403
