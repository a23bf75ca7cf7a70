from .modeling_canine import *  # noqa: F401,F403
