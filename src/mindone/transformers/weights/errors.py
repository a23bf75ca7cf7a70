"""The one error type for a checkpoint that cannot be read, found or written."""


class CheckpointError(ValueError):
    """A missing, malformed, truncated or unsafe checkpoint. The message names the file, and the tensor key if any."""
