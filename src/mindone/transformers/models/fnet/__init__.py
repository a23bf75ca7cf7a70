from .modeling_fnet import *  # noqa: F401,F403
