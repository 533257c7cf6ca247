"""What a grid will cost, before anything runs: each cell's resources and compute, and the grid's total.

The compute estimate is forward multiply-adds per image x training images x epochs, as the
paper counts FLOPs (Table 1); training costs roughly three times that (forward + backward).
Multiply-adds come from `models.arch`, counted analytically without torch, so `resnetctl plan`
never loads it. `plan` prints what `plan_grid` returns, as a table or as JSON. An evaluation cell
costs one forward pass of each network over the test split, in every view of its protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from models.arch import ArchError, multiply_adds, parse_arch, resolve_arch
from orchestrator.cells import AnyCell, Cell, EvalCell
from orchestrator.conventions import KIND_DETECTION
from pipelines.catalog import EVAL_RESIZE, MULTISCALE_SIDES, NUM_CLASSES, TRAIN_IMAGES, VARIANT_OF
from pipelines.manifest import load_manifest

TRAINING_FACTOR = 3  # forward + backward: about three forward passes' worth of multiply-adds


def cell_estimate(cell: Cell, train_images: int) -> dict[str, Any]:
    """Multiply-adds per image, epochs (iterations converted at the cell's batch size) and their product."""
    arch = resolve_arch(cell.depth, shortcut=cell.shortcut, variant=cell.variant,
                        num_classes=NUM_CLASSES[cell.dataset])
    macs = multiply_adds(arch, stride_in_1x1=cell.train.stride_in_1x1)
    train = cell.train
    if train.epochs is not None:
        epochs = float(train.epochs)
    else:
        epochs = train.iterations * train.batch_size / train_images
    return {
        "mult_adds_per_image": macs,
        "train_images": train_images,
        "epochs": round(epochs, 3),
        "compute_mult_adds": int(macs * train_images * epochs),
    }


def _resources(cell: AnyCell) -> dict[str, Any]:
    r = cell.resources
    return {
        "workers": r.workers_per_cell,
        "cpus": r.workers_per_cell * r.cpus_per_worker,
        "gpus": r.workers_per_cell * r.gpus,
    }


def _train_images(path: str, dataset: str, split: str) -> int:
    """Images of the split a cell trains on (train or trainval), from the prepared manifest where there is one,
    else the dataset's usual count."""
    try:
        return int(load_manifest(path)["splits"][split]["count"])
    except (KeyError, TypeError, ValueError):  # DatasetError is a ValueError
        usual = TRAIN_IMAGES[dataset]
        return usual.get(split, usual["train"])


def cell_rows(cells: Sequence[Cell]) -> list[dict[str, Any]]:
    """One row per cell: its name, id, arch, axes, resources and compute estimate."""
    keys = {(cell.dataset_path, cell.dataset, cell.train.train_split) for cell in cells}
    images = {key: _train_images(*key) for key in keys}
    return [
        {
            "name": cell.name,
            "cell_id": cell.cell_id,
            "arch": cell.arch,
            "dataset": cell.dataset,
            "seed": cell.seed,
            "axes": dict(cell.axes),
            "resources": _resources(cell),
            **cell_estimate(cell, images[(cell.dataset_path, cell.dataset, cell.train.train_split)]),
        }
        for cell in cells
    ]


def view_sides(protocol: str, variant: str) -> list[int]:
    """The side of every view a protocol scores per image: 10 crops, 5 scales x 2 mirrors, or one."""
    if variant != "imagenet":
        return [32] * (10 if protocol == "10crop" else 1)
    if protocol == "multiscale":
        return [side for side in MULTISCALE_SIDES for _ in range(2)]
    return [224] * 10 if protocol == "10crop" else [EVAL_RESIZE if protocol == "full" else 224]


def _view_mult_adds(arch: str, cell: EvalCell) -> int:
    """One image's multiply-adds in every view of the cell's protocol (0 for a network resnetctl did not name)."""
    variant = VARIANT_OF[cell.dataset]
    try:
        depth, _, shortcut = parse_arch(arch, variant=variant)
        spec = resolve_arch(depth, shortcut=shortcut, variant=variant, num_classes=NUM_CLASSES[cell.dataset])
    except ArchError:
        return 0
    return sum(multiply_adds(spec, image_size=side) for side in view_sides(cell.protocol, variant))


def evaluation_rows(cells: Sequence[EvalCell]) -> list[dict[str, Any]]:
    """One row per evaluation: its networks, views and compute (one pass over the test split)."""
    rows = []
    for cell in cells:
        try:
            images = int(load_manifest(cell.dataset_path)["splits"][cell.split]["count"])
        except (KeyError, TypeError, ValueError):  # DatasetError is a ValueError
            images = 0
        macs = sum(_view_mult_adds(member.arch, cell) for member in cell.members)
        rows.append({"name": cell.name, "cell_id": cell.cell_id, "arch": cell.arch, "dataset": cell.dataset,
                     "protocol": cell.protocol, "split": cell.split, "members": [m.label for m in cell.members],
                     "source_runs": [m.run_id for m in cell.members], "resources": _resources(cell),
                     "mult_adds_per_image": macs, "images": images, "epochs": 1.0,
                     "compute_mult_adds": macs * images})
    return rows


def plan_grid(spec, cells: Sequence[AnyCell]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The grid's summary (cells, peak resources, total compute) and one row per cell (see cell_rows)."""
    evaluating = bool(cells) and all(isinstance(c, EvalCell) for c in cells)
    detecting = bool(cells) and all(getattr(c, "kind", None) == KIND_DETECTION for c in cells)
    if detecting:  # Faster R-CNN cells (Tables 7-8)
        from orchestrator.detection_cells import detection_rows

        rows = detection_rows(cells)
    else:
        rows = evaluation_rows(cells) if evaluating else cell_rows(cells)
    total = sum(row["compute_mult_adds"] for row in rows)
    r = spec.resources
    at_once = min(r.max_concurrent_cells, len(rows))
    summary = {
        "grid": spec.name,
        "experiment": spec.experiment_name,
        "cells": len(rows),
        "max_concurrent_cells": r.max_concurrent_cells,
        "peak_cpus": at_once * r.workers_per_cell * r.cpus_per_worker,
        "peak_gpus": at_once * r.workers_per_cell * r.gpus,
        "compute_mult_adds": total,
        "training_mult_adds_approx": total if evaluating else TRAINING_FACTOR * total,
        "kind": "evaluation" if evaluating else KIND_DETECTION if detecting else "training",
    }
    return summary, rows


def claim_power(spec) -> list[dict[str, Any]] | None:
    """For each claim the grid's store has runs for and cannot decide yet: the seeds per network the current
    spread suggests (a power estimate, `report.stats.seeds_needed`). None where the store holds no runs of the
    grid yet; a store that does not exist is neither read nor created, and a tracking server is not asked."""
    import os

    from orchestrator.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(getattr(getattr(spec, "tracking", None), "uri", None))
    if not hasattr(spec, "claims") or not uri.startswith("sqlite:///") or not os.path.isfile(uri[len("sqlite:///"):]):
        return None
    from orchestrator.report.records import ReportError
    from orchestrator.report.source import open_reader, select_runs
    from orchestrator.report.stats import UNDECIDED
    from orchestrator.report.tables import RunIndex
    from orchestrator.report.verdicts import Settings, check_claims

    try:
        reader = open_reader(uri)
        selection = select_runs(reader, grid=spec.name, experiment=spec.experiment_name)
    except ReportError:  # not an MLflow store we know, or no runs of this grid yet
        return None
    settings = Settings(spec.verdicts.tolerance, spec.verdicts.alpha, tuple(spec.claims))
    results = check_claims(RunIndex(selection, settings.tolerance), settings, reader.histories)
    return [r.to_json() for r in results if r.verdict == UNDECIDED]


__all__ = ["TRAINING_FACTOR", "cell_estimate", "cell_rows", "claim_power", "evaluation_rows", "plan_grid",
           "view_sides"]
