from .modeling_lilt import *  # noqa: F401,F403
