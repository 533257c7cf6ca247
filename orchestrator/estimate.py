"""What a grid will cost, before anything runs: each cell's resources and compute, and the grid's total.

The compute estimate is forward multiply-adds per image x training images x epochs, as the
paper counts FLOPs (Table 1); training costs roughly three times that (forward + backward).
Multiply-adds come from `models.arch`, counted analytically without torch, so `resnetctl plan`
never loads it. `plan` prints what `plan_grid` returns, as a table or as JSON. An evaluation cell
costs one forward pass of each network over the test split, in every view of its protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
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


def plan_grid(spec, cells: Sequence[AnyCell], *, price_per_gpu_hour: float | None = None,
              spent: dict[str, float] | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The grid's summary (cells, peak resources, total compute, GPU-hours and cost) and one row per cell
    (see cell_rows; each with its `gpu_hours`). `spent`: GPU-hours of finished cells (default: the store's)."""
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
    if not detecting:
        price = price_per_gpu_hour or getattr(spec, "price_per_gpu_hour", None)
        summary["cost"] = cost_estimate(rows, spent_gpu_hours(spec) if spent is None else spent, price)
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


# What one GPU sustains training these networks, in multiply-adds per second, before any cell of the grid
# has finished: ResNet-50 (4.1 G forward multiply-adds per 224 image, x3 to train) at NVIDIA's published
# 2,470 img/s on an A100 with AMP is 3.0e13; small CIFAR networks keep a GPU far less busy, so the default
# assumes a third of that. Finished GPU cells of the grid replace it with what they measured.
DEFAULT_GPU_MACS_PER_S = 1.0e13


def gpu_hours(row: dict[str, Any], macs_per_s: float) -> float:
    """A cell's estimated GPU-hours: its training multiply-adds at `macs_per_s` per GPU (0 for a CPU cell)."""
    if not row["resources"]["gpus"]:
        return 0.0
    factor = 1 if row.get("kind") == "evaluation" or "protocol" in row else TRAINING_FACTOR
    return factor * row["compute_mult_adds"] / macs_per_s / 3600.0


def measured_macs_per_s(rows: Sequence[dict[str, Any]], spent: dict[str, float]) -> float | None:
    """Multiply-adds per GPU-second the grid's finished GPU cells achieved (`spent`: cell id -> GPU-hours)."""
    done = [row for row in rows if spent.get(row["cell_id"], 0.0) > 0]
    seconds = sum(spent[row["cell_id"]] for row in done) * 3600.0
    if not done or seconds <= 0:
        return None
    return sum(TRAINING_FACTOR * row["compute_mult_adds"] for row in done) / seconds


def cost_estimate(rows: list[dict[str, Any]], spent: dict[str, float], price_per_gpu_hour: float | None
                  ) -> dict[str, Any]:
    """Each row's `gpu_hours` (set in place) and the grid's: estimated, already spent, the rate used, money."""
    measured = measured_macs_per_s(rows, spent)
    rate = measured or DEFAULT_GPU_MACS_PER_S
    for row in rows:
        row["gpu_hours"] = gpu_hours(row, rate)
    total = sum(row["gpu_hours"] for row in rows)
    summary = {"gpu_hours": total, "gpu_hours_spent": sum(spent.values()),
               "macs_per_gpu_s": rate, "rate_from": (f"{sum(1 for r in rows if spent.get(r['cell_id']))} finished "
                                                     "cells" if measured else "default (no finished GPU cell yet)")}
    if price_per_gpu_hour is not None:
        summary["price_per_gpu_hour"] = price_per_gpu_hour
        summary["cost"] = total * price_per_gpu_hour
    return summary


def spent_gpu_hours(spec) -> dict[str, float]:
    """GPU-hours each finished cell of the grid logged (cell id -> hours); {} where the store has none or does
    not exist yet (a SQLite file that is not there is neither read nor created; a server is asked)."""
    import os

    from orchestrator import conventions as cv
    from orchestrator.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(getattr(getattr(spec, "tracking", None), "uri", None))
    if uri.startswith("sqlite:///") and not os.path.isfile(uri[len("sqlite:///"):]):
        return {}
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(spec.experiment_name)
    if experiment is None:
        return {}
    runs = client.search_runs([experiment.experiment_id],
                              filter_string=f"tags.`{cv.TAG_STATUS}` = '{cv.STATUS_FINISHED}'", max_results=50000)
    return {r.data.tags[cv.TAG_CELL_ID]: float(r.data.metrics.get(cv.M_GPU_HOURS, 0.0))
            for r in runs if cv.TAG_CELL_ID in r.data.tags}


def budget_gpu_hours(spec) -> float | None:
    """The grid's budget in GPU-hours (money divided by its price), or None without a budget."""
    budget = getattr(spec, "budget", None)
    if budget is None:
        return None
    return budget.gpu_hours if budget.gpu_hours is not None else budget.money / spec.price_per_gpu_hour


def over_budget(spec, cells: Sequence[AnyCell]) -> str | None:
    """Why submit refuses the grid without --yes (its estimate exceeds its budget), or None."""
    limit = budget_gpu_hours(spec)
    if limit is None:
        return None
    cost = plan_grid(spec, cells)[0].get("cost")
    if cost is None or cost["gpu_hours"] <= limit:
        return None
    return (f"budget: the grid's estimate, {cost['gpu_hours']:,.4g} GPU-hours, exceeds its budget of {limit:,.4g} "
            "(--yes submits it anyway: cells stop starting once the budget would be spent)")


@dataclass(frozen=True)
class BudgetPlan:
    """What a grid's budget check needs (`budget_plan`), all in GPU-hours, by cell id; `budget.BudgetSearcher`
    applies it while the grid runs."""

    limit: float
    spent: float  # by the grid's cells that finished in earlier submits
    estimates: dict[str, float]  # each cell's estimate, at the throughput its finished cells measured
    gpus: dict[str, float]  # the GPUs each cell holds while it runs (workers x gpus_per_worker)


def budget_plan(spec, cells: Sequence[AnyCell]) -> BudgetPlan | None:
    """The grid's budget, what its finished cells spent and what each of `cells` is expected to; None without
    a budget."""
    limit = budget_gpu_hours(spec)
    if limit is None:
        return None
    spent = spent_gpu_hours(spec)
    _, rows = plan_grid(spec, cells, spent=spent)  # the throughput calibrated on the finished cells
    return BudgetPlan(limit=limit, spent=sum(spent.values()),
                      estimates={row["cell_id"]: row.get("gpu_hours", 0.0) for row in rows},
                      gpus={row["cell_id"]: float(row["resources"]["gpus"]) for row in rows})


def within_budget(spec, cells: Sequence[AnyCell], todo: Sequence[AnyCell]) -> tuple[list[AnyCell], list[AnyCell]]:
    """The unfinished cells the budget covers by their estimates (in order, while the GPU-hours finished cells
    spent plus the estimates of those started stay within it) and those left pending. `submit --until-decided`
    asks it which new seeds to add; while a grid runs, `budget.BudgetSearcher` applies the same rule to
    what the cells actually spend."""
    plan = budget_plan(spec, cells) if todo else None
    if plan is None:
        return list(todo), []
    used = plan.spent
    for index, cell in enumerate(todo):
        cost = plan.estimates.get(cell.cell_id, 0.0)
        if used + cost > plan.limit:
            return list(todo[:index]), list(todo[index:])
        used += cost
    return list(todo), []


def check_budget(spec, cells: Sequence[AnyCell], *, yes: bool) -> None:
    """`submit`: refuse (one GridError line, exit 2) a grid whose estimate exceeds its budget, unless --yes."""
    problem = None if yes else over_budget(spec, cells)
    if problem is not None:
        from orchestrator.spec import GridError

        raise GridError(f"{spec.source}: {problem}", source=spec.source)
