import os

# tests never reach a hub
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


import pytest  # noqa: E402

# the longest tests of the default run, run by `make test-slow` instead (see the file's header)
_SLOW_LIST = os.path.join(os.path.dirname(__file__), "slow_tests.txt")


def _slow_node_ids():
    with open(_SLOW_LIST) as f:
        ids = (line.split("#")[0].strip() for line in f)  # node id, then "# seconds" (comment lines: empty)
        return {node_id for node_id in ids if node_id}


@pytest.hookimpl(tryfirst=True)  # before `-m 'not slow'` deselects
def pytest_collection_modifyitems(config, items):
    slow = _slow_node_ids()
    for item in items:
        if item.nodeid in slow:
            item.add_marker(pytest.mark.slow)
