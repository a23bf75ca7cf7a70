"""smolagents models running on MindSpore: `from mindone.transformers.agents import TransformersModel` in place of
`from smolagents import TransformersModel`.

smolagents is optional (`pip install smolagents`, or `pip install 'mindone-transformers[agents]'`): it is imported
when `TransformersModel` is first used, never by the rest of the package.
"""

_LAZY = {"TransformersModel": ".transformers_model"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))


__all__ = ["TransformersModel"]
