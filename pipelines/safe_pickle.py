"""CIFAR's python pickles, read without running anything a pickle asks for.

The `cifar-10-batches-py` / `cifar-100-python` files are pickles: Python's stock unpickler calls any
function a file names (`os.system` included), so a batch file from an untrusted mirror would run code
as soon as it is read. `load_cifar_pickle` admits only what the official files hold: dicts, lists,
strings, bytes, numbers and numpy arrays of plain numbers (numpy's array and dtype reconstructors,
nothing else), and refuses any other name in the file before it is called. `read_cifar_split` reads a
split as torchvision's CIFAR10/CIFAR100 do, through it.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


class UnsafePickleError(pickle.UnpicklingError):
    """The file asks for something outside CIFAR's structure; nothing it names was called."""


class CifarPickleError(ValueError):
    """A CIFAR file that cannot be read as CIFAR; `path` is the file, the message says why."""

    def __init__(self, path: Path, reason: str):
        super().__init__(reason)
        self.path = path


def _numpy_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


def _plain_dtype(*args: Any) -> np.dtype:
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise UnsafePickleError("an array of Python objects, not of numbers")
    return dtype


def _reconstruct(subtype: Any, shape: Any, dtype_char: Any) -> np.ndarray:
    if subtype is not np.ndarray:
        raise UnsafePickleError(f"an array of type {getattr(subtype, '__name__', subtype)!r}, not numpy.ndarray")
    return _numpy_reconstruct()(np.ndarray, shape, dtype_char)


def _frombuffer(buffer: Any, dtype: np.dtype, shape: Any, order: str) -> np.ndarray:  # numpy's pickle protocol 5
    return np.frombuffer(buffer, dtype=_plain_dtype(dtype)).reshape(shape, order=order)


def _latin1_bytes(text: Any, encoding: str = "utf-8") -> bytes:  # how protocol 2 (Python 3) writes bytes
    if not isinstance(text, str) or encoding.lower().replace("-", "") != "latin1":
        raise UnsafePickleError("a _codecs.encode call that is not a latin-1 byte string")
    return text.encode("latin-1")


# (module, name) -> what it is read as: numpy 1.x and 2.x names of the array and dtype reconstructors, and
# the latin-1 encoding a protocol-2 pickle written by Python 3 spells its byte strings with
_ALLOWED = {
    ("_codecs", "encode"): _latin1_bytes,
    **{(module, "_reconstruct"): _reconstruct for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(module, "_frombuffer"): _frombuffer for module in ("numpy.core.numeric", "numpy._core.numeric")},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _plain_dtype,
}


class _CifarUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(f"it names {module}.{name}, which CIFAR's data never holds") from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("it refers to a persistent object")


def load_cifar_pickle(path: Path) -> Any:
    """One CIFAR file unpickled as torchvision reads it (latin-1 strings), refusing anything but plain data."""
    with open(path, "rb") as handle:
        return _CifarUnpickler(handle, encoding="latin1").load()


def _entry(path: Path) -> dict:
    try:
        entry = load_cifar_pickle(path)
    except UnsafePickleError as exc:
        raise CifarPickleError(path, f"refused to unpickle it: {exc}; only plain data is read") from None
    except (pickle.UnpicklingError, EOFError, ValueError, KeyError, TypeError, IndexError, AttributeError,
            MemoryError, RecursionError) as exc:
        raise CifarPickleError(path, f"{type(exc).__name__}: {str(exc)[:200]}") from None
    if not isinstance(entry, dict):
        raise CifarPickleError(path, f"holds a {type(entry).__name__}, not CIFAR's dict")
    return entry


def read_cifar_split(folder: Path, files: Sequence[str], meta_file: str, meta_key: str
                     ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The images (N x 32 x 32 x 3 uint8), labels and class names of one split's batch files."""
    images, labels = [], []
    for name in files:
        path = folder / name
        entry = _entry(path)
        data, targets = entry.get("data"), entry.get("labels", entry.get("fine_labels"))
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            shape = getattr(data, "shape", type(data).__name__)
            raise CifarPickleError(path, f"'data' is {shape} {getattr(data, 'dtype', '')}, expected N x 3072 uint8")
        if not isinstance(targets, list) or len(targets) != len(data) or not all(
                isinstance(t, int) and not isinstance(t, bool) for t in targets):
            raise CifarPickleError(path, f"'labels' must be a list of {len(data)} integers")
        images.append(data)
        labels.extend(targets)
    meta = _entry(folder / meta_file)
    classes = meta.get(meta_key)
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise CifarPickleError(folder / meta_file, f"'{meta_key}' must be a list of class names")
    stacked = np.vstack(images) if images else np.zeros((0, 3072), np.uint8)
    return stacked.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), np.asarray(labels, dtype=np.int64), classes


__all__ = ["CifarPickleError", "UnsafePickleError", "load_cifar_pickle", "read_cifar_split"]
