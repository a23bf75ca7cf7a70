from .modeling_data2vec_text import *  # noqa: F401,F403
