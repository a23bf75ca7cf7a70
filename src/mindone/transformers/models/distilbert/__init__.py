from .modeling_distilbert import *  # noqa: F401,F403
