"""The front door every grid-taking command shares: load, expand and check a grid, or raise GridError.

Everything a bad grid can get wrong is found here, before Ray or MLflow is imported: the file,
its fields, the depths, the cell count and the prepared data the cells will read. GridError is
a UserError, so the CLI prints it as one line and exits 2; the in-cluster job (`resnetctl run`)
goes through the same door.
"""

from __future__ import annotations

import os

from orchestrator.cells import Cell
from orchestrator.expand import MAX_CELLS, count_cells, expand_cells
from orchestrator.spec import GridSpec, load_grid
from pipelines.manifest import DatasetError, load_manifest

CELL_LIMIT = 512  # more cells than this need --yes: a product of long axes is easy to write by mistake


def check_prepared_data(spec: GridSpec) -> dict[str, dict]:
    """Each dataset's manifest, checked against the grid; GridError naming the path otherwise."""
    manifests = {}
    for name in spec.datasets():
        path = spec.dataset.path_for(name) or spec.dataset.path
        field = ("dataset", "paths", name) if name in spec.dataset.paths else ("dataset", "path")
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


def load_cells(
    path: str | os.PathLike[str], *, yes: bool = False, check_data: bool = True
) -> tuple[GridSpec, list[Cell]]:
    """load_grid + the cell-count limit + expand_cells + the prepared-data check; raises GridError."""
    spec = load_grid(path)
    count = count_cells(spec)
    if count > CELL_LIMIT and not yes:
        raise spec.error(("grid",), f"expands to {count} cells, more than {CELL_LIMIT}; pass --yes to run them all")
    cells = expand_cells(spec, limit=MAX_CELLS)
    if check_data:
        check_prepared_data(spec)
    return spec, cells


__all__ = ["CELL_LIMIT", "check_prepared_data", "load_cells"]
