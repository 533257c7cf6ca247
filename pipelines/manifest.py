"""The manifest written beside a prepared dataset, and the one error type for bad data input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from resnetctl.errors import UserError

MANIFEST_NAME = "manifest.json"
MAX_MANIFEST_BYTES = 16 << 20  # a manifest lists splits and class names; more is not one of ours


class DatasetError(UserError, ValueError):
    """Bad dataset input; the message names the path and what is wrong with it."""


def load_manifest(root: str | Path) -> dict[str, Any]:
    """`root/manifest.json` of a prepared dataset, checked; DatasetError naming the path otherwise (an
    unreadable folder or a name longer than the file system allows included)."""
    try:
        return _load_manifest(Path(root))
    except OSError as exc:
        raise DatasetError(f"{root}: cannot be read ({exc.strerror or exc})") from None


def _plain_name(value: Any) -> bool:
    return isinstance(value, str) and value not in ("", ".", "..") and Path(value).name == value


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _check_types(path: Path, manifest: dict[str, Any]) -> None:
    """The manifest's fields have the types resnetctl writes; split files are plain names inside the folder."""
    if not isinstance(manifest["dataset"], str):
        raise DatasetError(f"{path}: manifest 'dataset' must be a name (got {type(manifest['dataset']).__name__})")
    for key in ("num_classes", "image_size"):
        if not _positive_int(manifest[key]):
            raise DatasetError(f"{path}: manifest '{key}' must be a positive integer")
    splits = manifest["splits"] if isinstance(manifest["splits"], dict) else {}
    for split, info in splits.items():
        for key in ("file", "mean_image_file"):
            if isinstance(info, dict) and key in info and not _plain_name(info[key]):
                raise DatasetError(f"{path}: manifest split '{split}': '{key}' must be a file name inside "
                                   f"{path.parent}")
        if isinstance(info, dict) and "count" in info and not _positive_int(info["count"]):
            raise DatasetError(f"{path}: manifest split '{split}': 'count' must be a positive integer")


def _load_manifest(root: Path) -> dict[str, Any]:
    """Read `root/manifest.json` of a prepared dataset, checking that its split files exist.

    Keys: dataset, num_classes, image_size, classes, splits {name: {count, file[, mean_image_file,
    mean_image_count]}} (the mean image only for splits a cell may train on), source_checksum, writer
    (settings), split_seed.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: prepared-data folder does not exist (run `resnetctl prepare`)")
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise DatasetError(f"{path}: no manifest; {root} was not written by `resnetctl prepare`")
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise DatasetError(f"{path}: manifest is larger than {MAX_MANIFEST_BYTES >> 20} MiB")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise DatasetError(f"{path}: manifest is not valid JSON ({str(exc)[:200]})") from None
    if not isinstance(manifest, dict):
        raise DatasetError(f"{path}: manifest must be a JSON object")
    for key in ("dataset", "num_classes", "image_size", "splits"):
        if key not in manifest:
            raise DatasetError(f"{path}: manifest lacks the key '{key}'")
    _check_types(path, manifest)
    if not isinstance(manifest["splits"], dict) or not manifest["splits"]:
        raise DatasetError(f"{path}: manifest 'splits' must be a non-empty object")
    for split, info in manifest["splits"].items():
        if not isinstance(info, dict) or "file" not in info:
            raise DatasetError(f"{path}: manifest split '{split}' lacks 'file'")
        for key in ("file", "mean_image_file"):
            data_file = root / info[key] if key in info else None
            if data_file is not None and not data_file.is_file():
                raise DatasetError(f"{data_file}: split '{split}' listed in the manifest is missing")
    return manifest
