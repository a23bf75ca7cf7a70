"""Writing files so that a reader never sees one half-written: temp name in the same directory, then rename."""

import contextlib
import os
import uuid
from typing import BinaryIO, Callable

TEMP_SUFFIX = ".tmp"


def temp_path_for(path: str) -> str:
    """A fresh hidden name beside `path` that no weight-file pattern matches."""
    directory, name = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f".{name}.{uuid.uuid4().hex[:12]}{TEMP_SUFFIX}")


def write_temp(path: str, write: Callable[[BinaryIO], None]) -> str:
    """Write a temp file beside `path` with `write(file)`, flushed to disk; returns the temp path (removed on error)."""
    temp = temp_path_for(path)
    # os.open rather than tempfile: the file gets the usual umask permissions, not 0600
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
    except BaseException:
        remove_quietly(temp)
        raise
    return temp


def fsync_directory(directory: str) -> None:
    """Make the renames in `directory` durable (a no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Replace `path` with `data` in one step: readers see the old file or the new one, never a part."""
    temp = write_temp(path, lambda file: file.write(data))
    os.replace(temp, path)
    fsync_directory(os.path.dirname(os.path.abspath(path)))


def atomic_write_text(path: str, text: str) -> None:
    """Replace the file at `path` with `text` (UTF-8) atomically.

    Args:
        path: destination file; its directory must exist.
        text: the full new contents.
    """
    atomic_write_bytes(path, text.encode("utf-8"))
