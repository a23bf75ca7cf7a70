"""Device-specific kernel choices live here and nowhere else (see DESIGN.md)."""

from . import runtime

runtime.configure()

from . import functional, layers  # noqa: E402

__all__ = ["runtime", "functional", "layers"]
