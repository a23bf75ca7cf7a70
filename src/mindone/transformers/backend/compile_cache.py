"""Persistent cache of compiled graphs across processes (MindSpore's compile cache, made safe to leave on).

Why: compiling a model's decode step with `mindspore.jit` takes seconds (SmolLM2-135M: ~5 s for the prefill chunk
graph, ~4 s for the one-token step on the development machine); MindSpore's compile cache stores the graph after
its front-end passes (parse, type inference, optimisation: most of that time) as MindIR and a later process runs
only the back-end actions.

How MindSpore 2.10's cache behaves on CPU (measured; see docs/performance.md):
- It is switched on by `MS_COMPILER_CACHE_ENABLE=1` (or `set_context(enable_compile_cache=True)`, deprecated) and
  files go to `MS_COMPILER_CACHE_PATH/rank_0/graph_cache/compile_cache_<N>.mindir`, where N counts the graphs the
  process compiled with the cache on, and the directory is the one in force at the process's first such compile.
- Its only validity check is a hash of the entry script and the imported files outside `sys.path` (none of ours when
  the package is installed): a process running other models, other shapes or other library code in the same order
  would load the wrong graphs ("Be aware of correctness risks", MindSpore logs).
- A `mindspore.jit` *function* loaded from the cache runs with zeroed weights (wrong outputs, silently): the cache
  binds the live Parameters only for a jit-compiled `Cell` method. So the cache must never be on globally.
- Turning the variable off around other compiles works: those compiles neither read nor write the cache nor count.

So this module turns the cache on only around the first call of our own compiled steps (Cells, see
`generation.utils`), for one directory per process chosen by the first graph's key, and keeps its own record of
which key every N in that directory was compiled for: a graph whose key does not match the record compiles without
the cache. The key holds MindSpore's, Python's and this package's versions, a hash of this package's sources, the
model class and config, dtypes, the input shapes, every Parameter's name/shape/dtype in the graph and the native
kernel library (its path is in the graph). A process takes an exclusive lock on its directory for its lifetime; a
second process that finds it locked compiles without the cache (concurrent processes never share files being
written).

Off as well where MindSpore's own check cannot run: no entry script file (`python -c`, an interactive session) or
an entry script whose imports MindSpore's scan rejects.

Where: `$MINDONE_TRANSFORMERS_CACHE/graphs` (default `~/.cache/mindone_transformers/graphs`), at most
`MAX_DIRECTORIES` process directories (least recently used ones are deleted). On by default on CPU;
`MINDONE_TRANSFORMERS_COMPILE_CACHE=0` turns it off; deleting the directory clears it. Left alone (off) when the
user set `MS_COMPILER_CACHE_ENABLE` themselves.
"""

import fcntl
import hashlib
import logging
import os
import sys
import threading
from contextlib import contextmanager

import mindspore as ms

from . import runtime

logger = logging.getLogger(__name__)

_ENV = "MINDONE_TRANSFORMERS_COMPILE_CACHE"
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # .../mindone/transformers

_lock = threading.Lock()
# directory of this process (None until the first cached compile), its lock file, graphs compiled with the cache on
_state = {"dir": None, "lock": None, "count": 0, "broken": False, "version": None}
_stats = {"hits": 0, "misses": 0, "skipped": 0}


def cache_root() -> str:
    root = os.environ.get("MINDONE_TRANSFORMERS_CACHE") or os.path.join(os.path.expanduser("~"), ".cache",
                                                                        "mindone_transformers")
    return os.path.join(root, "graphs")


def enabled() -> bool:
    """True when compiled steps use the persistent compile cache (CPU, not turned off, MindSpore's left to us)."""
    value = os.environ.get(_ENV, "1").strip().lower()
    if value in ("0", "false", "no", "off"):
        return False
    if os.environ.get("MS_COMPILER_CACHE_ENABLE") is not None and _state["dir"] is None:
        return False  # the user drives MindSpore's cache: do not interfere
    if ms.get_context("enable_compile_cache"):
        return False
    return runtime.is_cpu() and not _state["broken"]


def stats() -> dict:
    """Counts of this process: `hits` (graphs loaded from the cache), `misses` (compiled and stored), `skipped`
    (compiled without the cache: key recorded differently, directory locked by another process, cache off)."""
    return dict(_stats)


def _sources_hash() -> str:
    """Hash of this package's Python sources and kernel sources (sizes and contents), computed once."""
    if _state["version"] is None:
        digest = hashlib.sha256()
        for folder, dirs, files in os.walk(_PACKAGE_ROOT):
            dirs.sort()
            for name in sorted(files):
                if name.endswith((".py", ".cc")):
                    path = os.path.join(folder, name)
                    digest.update(os.path.relpath(path, _PACKAGE_ROOT).encode())
                    with open(path, "rb") as f:
                        digest.update(f.read())
        _state["version"] = digest.hexdigest()[:16]
    return _state["version"]


def _version_key() -> str:
    import numpy

    return "|".join([f"mindspore={ms.__version__}", f"python={sys.version.split()[0]}",
                     f"numpy={numpy.__version__}", f"sources={_sources_hash()}"])


def graph_key(*parts) -> str:
    """A graph's key text: the versions plus `parts` (strings describing what the graph depends on)."""
    env = sorted(f"{k}={v}" for k, v in os.environ.items()
                 if k.startswith(("MINDONE_TRANSFORMERS_", "MS_DEV_")) and k != "MINDONE_TRANSFORMERS_CACHE")
    return "\n".join([_version_key(), *map(str, parts), *env])


def _mindspore_check_works() -> bool:
    """MindSpore hashes the entry script (`sys.argv[0]`) and the files it imports at every cached compile, and raises
    when it cannot (`python -c`: no such file; an import of a missing module). Tried once here: False means the
    process compiles without the cache."""
    from mindspore.graph import api

    script = getattr(api, "entry_script_path", None)
    if not script or not os.path.isfile(script):
        logger.debug("compile cache off: no entry script file (%r)", script)
        return False
    try:
        api._get_compile_cache_dep_files()
    except Exception as err:  # noqa: BLE001 - whatever MindSpore's dependency scan raises, the cache stays off
        logger.debug("compile cache off: MindSpore cannot scan the entry script's imports: %s", err)
        return False
    return True


def _open_directory(first_key: str):
    """The process's directory (named after its first graph's key) with its lock held, or None."""
    if not _mindspore_check_works():
        return None
    name = hashlib.sha256(first_key.encode()).hexdigest()[:24]
    directory = os.path.join(cache_root(), name)
    try:
        os.makedirs(directory, exist_ok=True)
        handle = open(os.path.join(directory, "lock"), "w")
    except OSError as err:
        logger.info("compile cache unavailable (%s): compiling without it", err)
        return None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        logger.info("compile cache %s is in use by another process: compiling without it", directory)
        return None
    _state["lock"] = handle  # held (open) until the process exits
    os.utime(directory)  # most recently used first when pruning
    _prune(cache_root(), keep=directory)
    return directory


MAX_DIRECTORIES = 16


def _prune(root, keep):
    """Deletes the least recently used process directories beyond MAX_DIRECTORIES (each holds ~1 MB per graph;
    every new library version or first graph makes a new one). A directory locked by a running process stays."""
    import shutil

    try:
        names = [os.path.join(root, n) for n in os.listdir(root)]
    except OSError:
        return
    directories = sorted((d for d in names if os.path.isdir(d) and d != keep), key=os.path.getmtime, reverse=True)
    for directory in directories[MAX_DIRECTORIES - 1:]:
        try:
            with open(os.path.join(directory, "lock"), "w") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                shutil.rmtree(directory, ignore_errors=True)
        except OSError:
            continue  # in use (or already gone)


def _record_path(directory, index):
    return os.path.join(directory, f"graph_{index}.key")


def _mindir_path(directory, index):
    return os.path.join(directory, f"rank_{os.environ.get('RANK_ID', '0')}", "graph_cache",
                        f"compile_cache_{index}.mindir")


@contextmanager
def compiling(key: str):
    """Context for the call that compiles the graph `key` (text from `graph_key`): MindSpore's compile cache is on
    inside it when that is safe (see the module docstring), off otherwise."""
    with _lock:
        use = enabled()
        if use and _state["dir"] is None:
            _state["dir"] = _open_directory(key)
            if _state["dir"] is None:
                _state["broken"] = True
                use = False
        index = _state["count"]
        if use:
            record = _record_path(_state["dir"], index)
            recorded = None
            if os.path.exists(record):
                with open(record) as f:
                    recorded = f.read()
            if recorded is not None and recorded != key:
                use = False  # this slot holds another graph: compile without the cache
            elif recorded is None and os.path.exists(_mindir_path(_state["dir"], index)):
                # a graph stored without its record (a process stopped between the two): unknown, never loaded
                os.remove(_mindir_path(_state["dir"], index))
            hit = recorded == key and os.path.exists(_mindir_path(_state["dir"], index))
        if not use:
            _stats["skipped"] += 1
            yield
            return
        os.environ["MS_COMPILER_CACHE_ENABLE"] = "1"
        os.environ["MS_COMPILER_CACHE_PATH"] = _state["dir"]
        try:
            yield
        except BaseException:
            # MindSpore's count of cached graphs is unknown after a failed compile: no more caching in this process
            _state["broken"] = True
            raise
        finally:
            os.environ.pop("MS_COMPILER_CACHE_ENABLE", None)
        _state["count"] += 1
        if hit:
            _stats["hits"] += 1
            logger.debug("compile cache hit: graph %d of %s", index, _state["dir"])
        else:
            _stats["misses"] += 1
            tmp = f"{record}.{os.getpid()}.tmp"
            with open(tmp, "w") as f:
                f.write(key)
            os.replace(tmp, record)
            logger.debug("compile cache: stored graph %d in %s", index, _state["dir"])
