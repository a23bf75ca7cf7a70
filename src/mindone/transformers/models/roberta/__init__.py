from .modeling_roberta import *  # noqa: F401,F403
