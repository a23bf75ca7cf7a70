"""Source to put at the top of a subprocess script so that the process runs as if torch were not installed."""

BLOCK_TORCH = '''
import importlib.abc, importlib.util, sys
class _NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError("No module named 'torch' (blocked by the test)")
sys.meta_path.insert(0, _NoTorch())
_find_spec = importlib.util.find_spec
# what `transformers` uses to probe for optional packages: as if torch were not installed
importlib.util.find_spec = lambda name, *a: None if name.split(".")[0] == "torch" else _find_spec(name, *a)
'''
