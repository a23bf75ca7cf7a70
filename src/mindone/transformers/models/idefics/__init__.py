from .modeling_idefics import *  # noqa: F401,F403
