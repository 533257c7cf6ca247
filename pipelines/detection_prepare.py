"""Checked detection splits -> `<split>.json` files plus `manifest.json`, all or nothing.

Detection images vary in size and are resized per batch by the detector itself (shorter side 600),
so they are not packed into FFCV files: each split is written as one COCO-format JSON (what both the
training `Dataset` and pycocotools read) and the images are read from the official layout, whose
folder the manifest records. As in `pipelines.prepare`, every file is written under a temporary name
and renamed into place only when all of them are written, the manifest last.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pipelines.detection_catalog import DETECTION_TASK
from pipelines.detection_sources import DetectionSource, load_detection_source
from pipelines.manifest import DatasetError, load_manifest

DETECTION_MANIFEST_VERSION = 1
DETECTION_IMAGE_SIZE = 600  # Appendix A / Faster R-CNN: images rescaled to a shorter side of 600


def _manifest(found: DetectionSource, splits: dict[str, dict[str, Any]], source: Path, checksum: str) -> dict:
    return {
        "manifest_version": DETECTION_MANIFEST_VERSION,
        "task": DETECTION_TASK,
        "dataset": found.name,
        "num_classes": len(found.classes),
        # images keep their own sizes; the detector resizes each to a shorter side of min_size (the paper's 600)
        "image_size": DETECTION_IMAGE_SIZE,
        "classes": found.classes,
        "splits": splits,
        "format": "coco-json",  # each split file: COCO's instances format (VOC adds `difficult` per box)
        "images_root": str(found.images_root),
        "source": str(source.resolve()),
        "source_checksum": checksum,
        "notes": found.notes,
    }


def prepare_detection(name: str, root: str | Path, *, source: str | Path | None) -> dict[str, Any]:
    """Write `root/<split>.json` for every split found in `source` and `root/manifest.json`; return the manifest."""
    if source is None:
        raise DatasetError(f"{name}: give --source (the {'COCO' if name == 'coco' else 'VOCdevkit'} folder); "
                           "resnetctl downloads no detection data")
    root, source = Path(root), Path(source)
    if root.exists() and not root.is_dir():
        raise DatasetError(f"{root}: exists and is not a folder")
    found = load_detection_source(name, source)
    # imported here: loading a detection grid reads this module, and must not load numpy
    from pipelines.prepare import StagedFiles

    root.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with StagedFiles(root) as staged:
        splits: dict[str, dict[str, Any]] = {}
        for split, data in found.splits.items():
            text = json.dumps(data, separators=(",", ":"))
            digest.update(split.encode() + text.encode())
            staged.stage(f"{split}.json").write_text(text)
            splits[split] = {"count": len(data["images"]), "boxes": len(data["annotations"]), "file": f"{split}.json"}
        return staged.commit(_manifest(found, splits, source, "sha256:" + digest.hexdigest()))


def load_split(root: str | Path, manifest: dict[str, Any], split: str) -> dict[str, Any]:
    """One prepared split's COCO-format dict; DatasetError naming the file when it is missing or unreadable."""
    info = manifest["splits"].get(split)
    if info is None:
        raise DatasetError(f"{root}: no split {split!r} (prepared: {', '.join(manifest['splits'])})")
    path = Path(root) / info["file"]
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: unreadable split file ({exc}); run `resnetctl prepare` again") from None


def detection_manifest(root: str | Path) -> dict[str, Any]:
    """A prepared folder's manifest, refused when it holds classification data."""
    manifest = load_manifest(root)
    if manifest.get("task") != DETECTION_TASK:
        raise DatasetError(f"{root}: holds prepared {manifest.get('dataset')!r} classification data, not a "
                           "detection dataset (run `resnetctl prepare voc2007|voc2012|coco`)")
    return manifest
