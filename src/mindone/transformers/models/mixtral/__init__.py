from .modeling_mixtral import *  # noqa: F401,F403
