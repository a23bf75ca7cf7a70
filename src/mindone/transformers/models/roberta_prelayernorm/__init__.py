from .modeling_roberta_prelayernorm import *  # noqa: F401,F403
