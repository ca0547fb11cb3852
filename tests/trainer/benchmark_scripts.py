"""Load a script of ``benchmarks/`` as a module, for the tests that run it with tiny settings."""

import importlib
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def load_benchmark(name: str):
    """``benchmarks/<name>.py`` as a fresh module (monkeypatching one test leaves the others alone)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def importable_benchmark(name: str):
    """``benchmarks.<name>``, a name a spawned process can import (``--jobs`` pickles its worker)."""
    sys.path.insert(0, str(ROOT))
    try:
        return importlib.import_module(f"benchmarks.{name}")
    finally:
        sys.path.remove(str(ROOT))
