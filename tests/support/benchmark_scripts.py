"""The scripts under ``benchmarks/``, for the tests that check them: path and module."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

#: The repository root.
REPO = Path(__file__).resolve().parents[2]


def benchmark_script(name: str) -> Path:
    """``benchmarks/<name>.py``."""
    return REPO / "benchmarks" / f"{name}.py"


def load_benchmark(name: str) -> ModuleType:
    """Import ``benchmarks/<name>.py`` as the module ``<name>_benchmark``.

    The module is registered in ``sys.modules`` before it runs (dataclasses look their module up
    by name), and a second call returns the registered one.
    """
    module_name = f"{name}_benchmark"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, benchmark_script(name))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module
