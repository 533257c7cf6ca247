"""Package attributes imported on first use (PEP 562), so that importing a package stays cheap.

`models`, `pipelines` and `training` expose their torch-free names directly and the rest through
this: the grid is validated without loading torch, FFCV or numba.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_attributes(package: str, modules: Mapping[str, str]) -> Callable[[str], Any]:
    """A module-level `__getattr__` that imports `modules[name]` and returns its `name` on first access."""

    def __getattr__(name: str) -> Any:
        if name in modules:
            return getattr(importlib.import_module(modules[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
