"""Cache FFCV's numba-compiled pipeline stages on disk, so a new process skips most of the compile.

FFCV 1.0.2 compiles every Loader's pipeline with `numba.njit` and no cache: 7-15 s per process on
2 cores before the first batch, paid again by every Ray Train worker and every trial. Compiling
with `cache=True` stores the machine code under numba's cache folder (beside the FFCV sources,
else `~/.cache/numba`, or `NUMBA_CACHE_DIR`). It is safe for FFCV's closures: numba keys each
cache entry on the function's bytecode *and* the pickled contents of its closure cells, so a
pipeline with other parameters (padding, flip probability, output size) compiles anew rather than
reusing stale code. Functions that close over ctypes pointers or large arrays (the JPEG decoder,
memcpy, normalisation tables) cannot be cached and are still compiled each time; they are cheap.

Set RESNETCTL_FFCV_CACHE=0 to turn this off.
"""

from __future__ import annotations

import os
import warnings

_enabled = False


def enable_ffcv_numba_cache() -> bool:
    """Make FFCV's `Compiler.compile` pass `cache=True` to numba (once per process). Returns whether it is on."""
    global _enabled
    if _enabled or os.environ.get("RESNETCTL_FFCV_CACHE", "1") == "0":
        return _enabled
    from ffcv.pipeline.compiler import Compiler
    from numba import njit
    from numba.core.errors import NumbaWarning

    def compile(cls, code, signature=None):  # FFCV's Compiler.compile, plus cache=True
        parallel = getattr(code, "is_parallel", False) and cls.num_threads > 1
        if not cls.is_enabled:
            return code
        return njit(signature, fastmath=True, nogil=True, error_model="numpy", parallel=parallel, cache=True)(code)

    Compiler.compile = classmethod(compile)
    # "Cannot cache compiled function ... dynamic globals": expected for the ctypes-backed helpers
    warnings.filterwarnings("ignore", message="Cannot cache compiled function", category=NumbaWarning)
    _enabled = True
    return True
