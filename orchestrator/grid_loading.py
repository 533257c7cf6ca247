"""The front door every grid-taking command shares: load, expand and check a grid, or raise GridError.

Everything a bad grid can get wrong is found here, before Ray or MLflow is imported: the file,
its fields, the depths, the cell count and the prepared data the cells will read. GridError is
a UserError, so the CLI prints it as one line and exits 2; the in-cluster job (`resnetctl run`)
goes through the same door.
"""

from __future__ import annotations

import os

from orchestrator.cells import AnyCell, Cell
from orchestrator.detection_spec import DetectionGridSpec, is_detection_grid, load_detection_cells
from orchestrator.eval_spec import EvalGridSpec, is_evaluation_grid
from orchestrator.expand import MAX_CELLS, count_cells, expand_cells
from orchestrator.spec import GridSpec, parse_grid, read_grid_file
from pipelines.catalog import TRAIN_IMAGES
from pipelines.manifest import DatasetError, load_manifest

CELL_LIMIT = 512  # more cells than this need --yes: a product of long axes is easy to write by mistake


def _data_location(spec: GridSpec, name: str):
    """Where the grid names dataset `name`'s prepared folder: (path, field)."""
    path = spec.dataset.path_for(name) or spec.dataset.path
    return path, ("dataset", "paths", name) if name in spec.dataset.paths else ("dataset", "path")


def unprepared_datasets(spec: GridSpec) -> dict[str, str]:
    """Datasets whose prepared folder does not exist yet (name -> path): `plan` estimates without them."""
    missing = {}
    for name in spec.datasets():
        path, _ = _data_location(spec, name)
        if path is not None and not os.path.exists(path):
            missing[name] = str(path)
    return missing


def check_prepared_data(spec: GridSpec, *, skip: frozenset[str] = frozenset()) -> dict[str, dict]:
    """Each dataset's manifest (but those in `skip`), checked against the grid; GridError naming the path otherwise."""
    manifests = {}
    for name in spec.datasets():
        if name in skip:
            continue
        path, field = _data_location(spec, name)
        try:
            manifest = load_manifest(path)
        except DatasetError as exc:
            raise spec.error(field, str(exc)) from None
        if manifest.get("dataset") != name:
            raise spec.error(field, f"{path} holds prepared {manifest.get('dataset')!r} data, not {name!r}")
        if "train" not in manifest["splits"]:
            raise spec.error(field, f"{path}: the manifest has no 'train' split")
        manifests[name] = manifest
    return manifests


def check_cells_data(spec: GridSpec, cells: list[Cell], manifests: dict[str, dict]) -> None:
    """Each cell's training split, and its mean image where the cell subtracts one, is in the prepared data."""
    for cell in cells:
        if cell.dataset not in manifests:  # not prepared yet, and the caller said that is fine
            continue
        path, field = _data_location(spec, cell.dataset)
        split = cell.train.train_split
        info = manifests[cell.dataset]["splits"].get(split)
        if info is None:
            why = ("prepared by an older resnetctl: run `resnetctl prepare` again" if split in TRAIN_IMAGES[cell.dataset]
                   else f"{cell.dataset} has none (only CIFAR's val is part of its training images)")
            raise spec.error(field, f"{path}: no '{split}' split, which {cell.name} trains on (train_split): {why}")
        # a manifest of version 1 (before per-split mean images) lacks what the paper's normalisation needs
        if cell.train.normalization == "pixel_mean" and manifests[cell.dataset].get("manifest_version") == 1:
            raise spec.error(field, f"{path}: no per-pixel mean image of the '{split}' split, which {cell.name} "
                                    "subtracts (normalization: pixel_mean); prepared by an older resnetctl: run "
                                    "`resnetctl prepare` again, or set normalization: channel")


def load_cells(
    path: str | os.PathLike[str], *, yes: bool = False, check_data: bool = True, unprepared_ok: bool = False
) -> tuple[GridSpec | EvalGridSpec | DetectionGridSpec, list[AnyCell]]:
    """load_grid + the cell-count limit + expand_cells + the prepared-data check; raises GridError.

    `unprepared_ok` (plan): a dataset folder that does not exist yet is not an error (a user plans before
    downloading); one that exists must still be valid prepared data.

    An evaluation grid (an `evaluate:` section) goes through `evaluation.load_evaluation_cells` instead, a
    detection grid (`task: detection`) through `detection_spec.load_detection_cells`.
    """
    data, lines, source = read_grid_file(path)
    if is_evaluation_grid(data):
        from orchestrator.evaluation import load_evaluation_cells

        return load_evaluation_cells(data, lines, source, yes=yes, check_data=check_data)
    if is_detection_grid(data):  # `task: detection`: Faster R-CNN cells (Tables 7-8)
        return load_detection_cells(data, lines, source, yes=yes, check_data=check_data, unprepared_ok=unprepared_ok)
    spec = parse_grid(data, source, lines)
    count = count_cells(spec)
    if count > CELL_LIMIT and not yes:
        raise spec.error(("grid",), f"expands to {count} cells, more than {CELL_LIMIT}; pass --yes to run them all")
    cells = expand_cells(spec, limit=MAX_CELLS)
    if check_data:
        skip = frozenset(unprepared_datasets(spec)) if unprepared_ok else frozenset()
        check_cells_data(spec, cells, check_prepared_data(spec, skip=skip))
    return spec, cells


__all__ = ["CELL_LIMIT", "check_cells_data", "check_prepared_data", "load_cells", "unprepared_datasets"]
