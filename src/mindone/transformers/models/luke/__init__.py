from .modeling_luke import *  # noqa: F401,F403
