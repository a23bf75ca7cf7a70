from .modeling_mistral import *  # noqa: F401,F403
