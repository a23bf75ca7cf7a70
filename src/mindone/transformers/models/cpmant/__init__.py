from .modeling_cpmant import *  # noqa: F401,F403
