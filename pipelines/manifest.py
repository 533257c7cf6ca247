"""The manifest written beside a prepared dataset, and the one error type for bad data input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from resnetctl.errors import UserError

MANIFEST_NAME = "manifest.json"


class DatasetError(UserError, ValueError):
    """Bad dataset input; the message names the path and what is wrong with it."""


def load_manifest(root: str | Path) -> dict[str, Any]:
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
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: manifest is not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict):
        raise DatasetError(f"{path}: manifest must be a JSON object")
    for key in ("dataset", "num_classes", "image_size", "splits"):
        if key not in manifest:
            raise DatasetError(f"{path}: manifest lacks the key '{key}'")
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
