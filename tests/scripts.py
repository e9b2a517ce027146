"""The repository's scripts (scripts/, benchmarks/) loaded as modules, for the tests that check them."""

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_script(relative: str) -> ModuleType:
    """Execute ROOT/relative as a module named after its file, registered in sys.modules (pydantic resolves
    the annotations of a script's models through it)."""
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec and spec.loader, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module
