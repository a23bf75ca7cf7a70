from .modeling_llava_next import *  # noqa: F401,F403
