"""GridSpec -> cells: the Cartesian product of each block's axes, each cell with a resolved config.

A cell's TrainConfig is its dataset's paper preset (with the ResNet-110+ warm-up where the
depth calls for it), then the grid's `train:` overrides, then the cell's own axis values.
When an override changes the schedule's length or unit (e.g. `epochs: 3` on CIFAR's 64k
iterations) and gives no `lr_milestones`, the preset's milestones keep their place in the
schedule: 32k and 48k of 64k become 50% and 75% of the new length.
"""

from __future__ import annotations

import itertools
import math
import re
from typing import Any

from models.arch import arch_name, default_shortcut
from orchestrator.cells import Cell
from orchestrator.conventions import run_name
from orchestrator.presets import GPU_PRESET, WARMUP_FIELDS, preset
from orchestrator.spec import AXES, CELL_AXES, GridSpec, Loc
from pipelines.catalog import VARIANT_OF, loader_problem
from training.config import TrainConfig

MAX_CELLS = 100_000  # even with --yes: beyond this a grid is a typo, not an experiment
SCHEDULE_FIELDS = ("iterations", "epochs")


def count_cells(spec: GridSpec) -> int:
    """How many cells the grid expands to (before removing duplicates across blocks), without expanding."""
    total = 0
    for block in spec.grid:
        sizes = [len(values) for values in block.values().values()]
        total += math.prod(sizes)
    return total


def _label_value(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "_".join(_label_value(v) for v in value)
    return re.sub(r"[^A-Za-z0-9.]", "_", repr(value) if isinstance(value, float) else str(value))


def _scaled_milestones(milestones: tuple[int, ...], old_total: int, new_total: int) -> tuple[int, ...]:
    """Milestones at the same fractions of a schedule of a different length."""
    scaled = sorted({round(m * new_total / old_total) for m in milestones})
    return tuple(m for m in scaled if 0 < m < new_total)


def resolve_train(dataset: str, depth: int, overrides: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The preset for (dataset, depth) with `overrides` applied, and the problems found (field, text)."""
    base = preset(dataset).for_depth(depth)
    values = dict(base)
    values.update(overrides)
    given_schedule = [name for name in SCHEDULE_FIELDS if name in overrides and overrides[name] is not None]
    if len(given_schedule) == 1:
        other = "epochs" if given_schedule[0] == "iterations" else "iterations"
        if other not in overrides:
            values[other] = None  # the override replaces the preset's schedule, whatever its unit
        if "lr_milestones" not in overrides and base.get("lr_milestones"):
            old_unit = "iterations" if base.get("iterations") else "epochs"
            values["lr_milestones"] = _scaled_milestones(
                tuple(base["lr_milestones"]), base[old_unit], values[given_schedule[0]]
            )
    if overrides.get("lr_milestones") and "lr_on_plateau" not in overrides:
        values["lr_on_plateau"] = False  # ImageNet: "/10 on plateau or at given epochs"
    values["lr_milestones"] = tuple(values.get("lr_milestones") or ())

    problems: list[tuple[str, str]] = []
    for name in ("eval_protocol", "epoch_eval_protocol"):
        if values.get(name) == "multiscale" and VARIANT_OF[dataset] != "imagenet":
            problems.append((name, f"multiscale testing is for ImageNet-size images, not {dataset}"))
    if problem := loader_problem(values.get("loader"), dataset):
        problems.append(("loader", problem))
    schedule = [name for name in SCHEDULE_FIELDS if values.get(name) is not None]
    if not schedule:
        problems.append(("iterations", "the schedule needs iterations or epochs"))
    elif len(schedule) == 2:
        problems.append(("epochs", "give either iterations or epochs, not both"))
    else:
        total = values[schedule[0]]
        milestones = values["lr_milestones"]
        if list(milestones) != sorted(set(milestones)):
            problems.append(("lr_milestones", f"{list(milestones)} must be strictly increasing"))
        elif milestones and milestones[-1] >= total:
            problems.append(
                ("lr_milestones", f"{milestones[-1]} is not before the end of the schedule ({schedule[0]}={total})")
            )
    if values.get("warmup_lr") is not None and not (
        values.get("warmup_iterations") or values.get("warmup_until_train_err") is not None
    ):
        problems.append(("warmup_lr", "a warm-up needs warmup_iterations or warmup_until_train_err"))
    elif values.get("warmup_lr") is not None and values.get("warmup_until_train_err") == 0 and not (
        values.get("warmup_iterations")
    ):
        problems.append(("warmup_until_train_err", "0 is never reached: the warm-up would not end without "
                                                   "warmup_iterations as a cap"))
    return values, problems


def gpu_loader_threads(cpus_per_worker: float) -> int:
    """FFCV's decoding threads for a GPU worker that did not name them: one per CPU Ray reserves for it (one
    thread cannot decode ImageNet fast enough to keep a GPU busy). Not part of the cell id (cells.ID_SPEED_FIELDS)."""
    return max(1, int(cpus_per_worker))


def _cell(spec: GridSpec, b: int, combo: dict[str, tuple[int, Any]]) -> Cell:
    """One cell from a block's axis values (`combo`: axis -> (index in the axis, value))."""
    datasets = spec.datasets()
    dataset = combo["dataset"][1] if "dataset" in combo else datasets[0]
    variant = VARIANT_OF[dataset]
    depth = combo["depth"][1]
    shortcut = combo["shortcut"][1] if "shortcut" in combo else default_shortcut(variant)
    seed = combo["seed"][1] if "seed" in combo else 0
    axis_values = {axis: value for axis, (_, value) in combo.items() if axis not in CELL_AXES}
    overrides = {**spec.train.given(), **{k: tuple(v) if isinstance(v, list) else v for k, v in axis_values.items()}}
    values, problems = resolve_train(dataset, depth, overrides)
    if problems:
        field, text = problems[0]
        related = (field, *SCHEDULE_FIELDS, *WARMUP_FIELDS)
        loc: Loc = ("train", field)
        for name in related:
            if name in combo:
                loc = ("grid", b, name, combo[name][0])
                break
            if name in spec.train.model_fields_set:
                loc = ("train", name)
                break
        raise spec.error(loc, f"{text} (cell {run_name(arch_name(depth, shortcut), dataset, seed)})")
    if spec.resources.use_gpu:
        values.update({name: value for name, value in GPU_PRESET.items() if name not in overrides})
        if "num_workers" not in overrides:
            values["num_workers"] = gpu_loader_threads(spec.resources.cpus_per_worker)
    return Cell(
        grid=spec.name,
        arch=arch_name(depth, shortcut),
        depth=depth,
        shortcut=shortcut,
        variant=variant,
        dataset=dataset,
        dataset_path=str(spec.dataset.path_for(dataset) or spec.dataset.path),
        seed=seed,
        train=TrainConfig(**values),
        resources=spec.resources,
        axes=tuple((axis, tuple(v) if isinstance(v, list) else v) for axis, (_, v) in combo.items()),
        label="-".join(f"{axis}{_label_value(value)}" for axis, value in axis_values.items()),
    )


def expand_cells(spec: GridSpec, *, limit: int | None = MAX_CELLS) -> list[Cell]:
    """Every cell of the grid, in file order, duplicates across blocks removed; GridError on bad cells."""
    count = count_cells(spec)
    if limit is not None and count > limit:
        raise spec.error(("grid",), f"expands to {count} cells, more than the limit of {limit}")
    cells: dict[str, Cell] = {}
    for b, block in enumerate(spec.grid):
        axes = block.values()
        names = list(axes)
        for combo in itertools.product(*(list(enumerate(values)) for values in axes.values())):
            cell = _cell(spec, b, dict(zip(names, combo, strict=True)))
            cells.setdefault(cell.cell_id, cell)
    return list(cells.values())


def with_seed(spec: GridSpec, cell: Cell, seed: int) -> Cell:
    """`cell` trained with another seed: the very cell (same id, so the same MLflow run and checkpoints) the
    grid would expand to had its seed axis listed `seed` too. `submit --until-decided` adds seeds this way."""
    values = {**dict(cell.axes), "seed": seed}
    return _cell(spec, 0, {axis: (0, values[axis]) for axis in AXES if axis in values})
