"""The persistent compile cache (backend/compile_cache.py): a second process loads the compiled decode graphs that a
first one stored (counted by `compile_cache.stats()`, not by timing) and generates the same tokens; a recorded key
that does not match, a locked directory, no entry script or the opt-out variable mean compiling without the cache
(those checked in this process with the module's state reset)."""

import json
import os
import subprocess
import sys

import pytest

from tests.generation.helpers import tiny_llama_pair

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SCRIPT = """
import json, sys
import numpy as np
from mindone.transformers import LlamaForCausalLM
from mindone.transformers.backend import compile_cache

model = LlamaForCausalLM.from_pretrained(sys.argv[1], dtype="float32")
ids = np.array([[5, 9, 14, 3, 22, 7]], np.int64)
out = model.generate(ids, max_new_tokens=4, do_sample=False, cache_implementation="static")
print(json.dumps({"tokens": out.asnumpy().tolist(), "stats": compile_cache.stats()}))
"""


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("compile-cache")
    model_dir = root / "tiny-llama"
    tiny_llama_pair(model_dir, seed=3)
    script = root / "generate_once.py"  # a script file: MindSpore's own check hashes the entry script
    script.write_text(SCRIPT)
    return root, str(model_dir), str(script)


def run(prepared, cache_dir, **env):
    root, model_dir, script = prepared
    environment = dict(os.environ, PYTHONPATH=os.path.join(REPO, "src"), MINDONE_TRANSFORMERS_CACHE=str(cache_dir),
                       **env)
    environment.pop("MS_COMPILER_CACHE_ENABLE", None)
    result = subprocess.run([sys.executable, script, model_dir], capture_output=True, text=True, env=environment,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_second_process_loads_the_stored_graphs_and_generates_the_same_tokens(prepared, tmp_path):
    first = run(prepared, tmp_path)
    # two graphs: the prefill chunk and the one-token step
    assert first["stats"] == {"hits": 0, "misses": 2, "skipped": 0}
    second = run(prepared, tmp_path)
    assert second["stats"] == {"hits": 2, "misses": 0, "skipped": 0}
    assert second["tokens"] == first["tokens"]


def _real_check():
    from mindone.transformers.backend import compile_cache

    return compile_cache._mindspore_check_works


# MindSpore's entry-script check as the module defines it (fresh_state replaces it in this process)
_REAL_CHECK = _real_check()


@pytest.fixture
def fresh_state(monkeypatch, tmp_path):
    """compile_cache's process state reset (and restored afterwards), its root in tmp_path."""
    from mindone.transformers.backend import compile_cache

    monkeypatch.setattr(compile_cache, "_state", {"dir": None, "lock": None, "count": 0, "broken": False,
                                                  "version": None})
    monkeypatch.setattr(compile_cache, "_stats", {"hits": 0, "misses": 0, "skipped": 0})
    monkeypatch.setenv("MINDONE_TRANSFORMERS_CACHE", str(tmp_path))
    monkeypatch.delenv("MS_COMPILER_CACHE_ENABLE", raising=False)
    # these tests check our bookkeeping in this process: under pytest-xdist the worker has no entry script file
    # (`python -c`), on which MindSpore's own check (and so the cache) is off; the subprocess tests cover that check
    monkeypatch.setattr(compile_cache, "_mindspore_check_works", lambda: True)
    yield compile_cache
    if compile_cache._state["lock"] is not None:
        compile_cache._state["lock"].close()


def test_a_directory_locked_by_another_process_is_not_used(fresh_state, tmp_path):
    import fcntl
    import hashlib

    key = fresh_state.graph_key("a graph")
    directory = tmp_path / "graphs" / hashlib.sha256(key.encode()).hexdigest()[:24]
    directory.mkdir(parents=True)
    with open(directory / "lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running process holds it
        with fresh_state.compiling(key):
            assert "MS_COMPILER_CACHE_ENABLE" not in os.environ
    assert fresh_state.stats() == {"hits": 0, "misses": 0, "skipped": 1}
    assert not fresh_state.enabled()  # the rest of the process compiles without the cache


def test_opt_out_variable_and_mindspore_variable_set_by_the_user(fresh_state, monkeypatch):
    assert fresh_state.enabled()
    monkeypatch.setenv("MINDONE_TRANSFORMERS_COMPILE_CACHE", "0")
    assert not fresh_state.enabled()
    monkeypatch.delenv("MINDONE_TRANSFORMERS_COMPILE_CACHE")
    monkeypatch.setenv("MS_COMPILER_CACHE_ENABLE", "1")  # the user drives MindSpore's cache themselves
    assert not fresh_state.enabled()


def test_a_slot_recorded_for_another_graph_is_not_loaded(fresh_state):
    with fresh_state.compiling(fresh_state.graph_key("graph A")):  # slot 0
        pass
    directory = fresh_state._state["dir"]
    with open(os.path.join(directory, "graph_1.key"), "w") as f:
        f.write(fresh_state.graph_key("graph C"))  # slot 1 was compiled for another graph by an earlier process
    with fresh_state.compiling(fresh_state.graph_key("graph B")):
        assert "MS_COMPILER_CACHE_ENABLE" not in os.environ  # compiled without the cache, slot 1 untouched
    assert fresh_state.stats() == {"hits": 0, "misses": 1, "skipped": 1}
    with open(os.path.join(directory, "graph_1.key")) as f:
        assert f.read() == fresh_state.graph_key("graph C")


def test_cache_is_on_only_inside_the_compile(fresh_state):
    key = fresh_state.graph_key("a graph")
    with fresh_state.compiling(key):
        assert os.environ["MS_COMPILER_CACHE_ENABLE"] == "1"
    assert "MS_COMPILER_CACHE_ENABLE" not in os.environ
    assert fresh_state.stats() == {"hits": 0, "misses": 1, "skipped": 0}


def test_a_stored_graph_without_its_record_is_removed_not_loaded(fresh_state, tmp_path):
    key = fresh_state.graph_key("a graph")
    with fresh_state.compiling(key):  # opens the directory
        pass
    directory = fresh_state._state["dir"]
    stray = fresh_state._mindir_path(directory, 1)
    os.makedirs(os.path.dirname(stray), exist_ok=True)
    with open(stray, "wb") as f:
        f.write(b"a graph of unknown key")
    with fresh_state.compiling(fresh_state.graph_key("another graph")):
        assert not os.path.exists(stray)
    assert fresh_state.stats() == {"hits": 0, "misses": 2, "skipped": 0}


def test_no_entry_script_file_means_no_cache(fresh_state, monkeypatch):
    """`python -c` (sys.argv[0] == "-c"): MindSpore's dependency scan would raise inside the compile."""
    from mindspore.graph import api

    monkeypatch.setattr(api, "entry_script_path", os.path.join(os.getcwd(), "-c"))
    from mindone.transformers.backend import compile_cache

    monkeypatch.setattr(compile_cache, "_mindspore_check_works", _REAL_CHECK)  # the real check, undone by the fixture
    with fresh_state.compiling(fresh_state.graph_key("a graph")):
        assert "MS_COMPILER_CACHE_ENABLE" not in os.environ
    assert fresh_state.stats() == {"hits": 0, "misses": 0, "skipped": 1}


def test_least_recently_used_directories_are_pruned(tmp_path):
    """Beyond MAX_DIRECTORIES the oldest process directories go, except one another process holds locked."""
    import fcntl
    import time

    from mindone.transformers.backend import compile_cache

    root = tmp_path / "graphs"
    made = []
    for i in range(compile_cache.MAX_DIRECTORIES + 3):
        d = root / f"d{i:02d}"
        d.mkdir(parents=True)
        (d / "lock").write_text("")
        os.utime(d, (time.time() - 1000 + i, time.time() - 1000 + i))
        made.append(d)
    with open(made[0] / "lock", "w") as held:  # the oldest, but in use
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        compile_cache._prune(str(root), keep=str(made[-1]))
    left = sorted(p.name for p in root.iterdir())
    # kept: the one in use, the newest MAX_DIRECTORIES - 1 others, and `keep`
    assert left == sorted([made[0].name] + [d.name for d in made[-compile_cache.MAX_DIRECTORIES:]])
