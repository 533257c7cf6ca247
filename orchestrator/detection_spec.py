"""Detection grids (`task: detection`): Faster R-CNN cells validated like training grids, expanded into cells.

    name: voc2007-detection
    task: detection
    dataset: {name: voc2007, path: data/voc}     # `resnetctl prepare voc2007 --source VOCdevkit --root data/voc`
    grid: {depth: [101], shortcut: [B], seed: [0]}
    train:                                       # overrides of the dataset's preset (paper Appendix A)
      init: models:/imagenet-resnet101-B/1        # the backbone's ImageNet weights, from the registry

The axes are the backbone's (depth, shortcut: ImageNet layouts of Table 1), the seed, and any
`train:` field (`training.detection_config.DetectionConfig`). Errors are the training grid's: one
GridError naming the file, line and field, before torch, Ray or MLflow load. A cell's config is
its dataset's preset, then `train:`, then its axis values; an `iterations` override keeps the preset's
milestones at the same fractions of the schedule.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, create_model, field_validator

from models.arch import Shortcut, arch_name, default_shortcut, layout_problem
from orchestrator.cells import Resources
from orchestrator.detection_cells import DetectionCell, detector_arch
from orchestrator.detection_presets import detection_preset
from orchestrator.expand import MAX_CELLS, _label_value, _scaled_milestones
from orchestrator.spec import (
    MAX_AXIS_VALUES,
    Depth,
    GridFile,
    Loc,
    Seed,
    TrackingSpec,
    _as_yaml_type,
    _freeze,
    _Overrides,
    _path_string,
    _Strict,
    check_axis_values,
    validation_error,
)
from pipelines.detection_catalog import DETECTION_TASK, DetectionDatasetName
from training.detection_config import DetectionConfig

CELL_LIMIT = 512  # as for training grids: more need --yes


def is_detection_grid(data: Any) -> bool:
    """Whether loaded grid data is a detection grid (`task: detection`)."""
    return isinstance(data, dict) and data.get("task") == DETECTION_TASK


def _field_type(name: str) -> Any:
    info = DetectionConfig.model_fields[name]
    annotation = _as_yaml_type(info.annotation)
    return Annotated[(annotation, *info.metadata)] if info.metadata else annotation


def _axis(item: Any) -> Any:
    return Annotated[list[item], Field(min_length=1, max_length=MAX_AXIS_VALUES)]


DetectionOverrides = create_model(
    "DetectionOverrides", __base__=_Overrides,
    __doc__="A detection grid's `train:` section: overrides of the dataset's preset, one per DetectionConfig field.",
    **{name: (_field_type(name), Field(None, description=info.description))
       for name, info in DetectionConfig.model_fields.items()},
)
CELL_AXES: tuple[str, ...] = ("depth", "shortcut", "seed")
AXES: tuple[str, ...] = CELL_AXES + tuple(DetectionOverrides.model_fields)


class _BackboneAxes(_Strict):
    depth: Annotated[list[Depth], Field(min_length=1, max_length=MAX_AXIS_VALUES)]
    shortcut: _axis(Shortcut) = None
    seed: _axis(Seed) = None

    def values(self) -> dict[str, list[Any]]:
        return {name: getattr(self, name) for name in AXES if name in self.model_fields_set}


DetectionAxes = create_model("DetectionAxes", __base__=_BackboneAxes,
                             **{name: (_axis(_field_type(name)), None) for name in DetectionOverrides.model_fields})


class DetectionDatasetSpec(_Strict):
    """The prepared detection data the cells train and test on."""

    name: DetectionDatasetName
    path: Path

    @field_validator("path", mode="before")
    @classmethod
    def _resolve_path(cls, value: Any) -> Any:
        return _path_string(value)

    @property
    def paths(self) -> dict[str, Path]:  # one dataset per detection grid (the training grid's per-dataset paths)
        return {}

    def path_for(self, dataset: str) -> Path | None:
        return self.path if dataset == self.name else None


class DetectionGridSpec(GridFile):
    """A validated detection grid; built by `parse_detection_grid` (the front door dispatches on `task:`)."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    task: Literal["detection"]
    dataset: DetectionDatasetSpec
    grid: Annotated[list[DetectionAxes], Field(min_length=1, max_length=1000)]
    train: DetectionOverrides = Field(default_factory=DetectionOverrides)
    resources: Resources = Field(default_factory=Resources)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)

    @field_validator("grid", mode="before")
    @classmethod
    def _one_block_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, dict) else value

    def datasets(self) -> list[str]:
        return [self.dataset.name]


def _check_axes(spec: DetectionGridSpec) -> None:
    """Repeated axis values, axes also given in `train:`, and backbones that are not ImageNet ResNets."""
    for b, block in enumerate(spec.grid):
        check_axis_values(spec, b, block)
        for i, depth in enumerate(block.depth):
            problem = layout_problem(depth, "imagenet")
            if problem:
                raise spec.error(("grid", b, "depth", i), f"{problem.problem} (a detection backbone is an "
                                                          "ImageNet ResNet of Table 1)")
            for j, shortcut in enumerate(block.shortcut or []):
                problem = layout_problem(depth, "imagenet", shortcut)
                if problem:
                    raise spec.error(("grid", b, "shortcut", j), problem.problem)


def resolve_detection(dataset: str, overrides: dict[str, Any], workers: int) -> tuple[dict[str, Any], list]:
    """The preset with `overrides` applied, and the problems found as (field, text)."""
    base = detection_preset(dataset)
    values = {**base, **overrides}
    if "iterations" in overrides and "lr_milestones" not in overrides:
        values["lr_milestones"] = _scaled_milestones(tuple(base["lr_milestones"]), base["iterations"],
                                                     values["iterations"])
    values["lr_milestones"] = tuple(values["lr_milestones"])
    problems = []
    milestones = values["lr_milestones"]
    if list(milestones) != sorted(set(milestones)):
        problems.append(("lr_milestones", f"{list(milestones)} must be strictly increasing"))
    elif milestones and milestones[-1] >= values["iterations"]:
        problems.append(("lr_milestones", f"{milestones[-1]} is not before the end of the schedule "
                                          f"(iterations={values['iterations']})"))
    if values["max_size"] < values["min_size"]:
        problems.append(("max_size", f"{values['max_size']} is below min_size ({values['min_size']})"))
    if values["batch_size"] < workers:
        problems.append(("batch_size", f"{values['batch_size']} images cannot be shared by {workers} workers "
                                       "(each takes batch_size / workers_per_cell)"))
    if values["test_split"] in values["train_splits"]:
        problems.append(("test_split", f"{values['test_split']!r} is also a training split"))
    return values, problems


def _cell(spec: DetectionGridSpec, b: int, combo: dict[str, tuple[int, Any]]) -> DetectionCell:
    depth = combo["depth"][1]
    shortcut = combo["shortcut"][1] if "shortcut" in combo else default_shortcut("imagenet")
    seed = combo["seed"][1] if "seed" in combo else 0
    axis_values = {axis: _freeze(value) for axis, (_, value) in combo.items() if axis not in CELL_AXES}
    values, problems = resolve_detection(spec.dataset.name, {**spec.train.given(), **axis_values},
                                         spec.resources.workers_per_cell)
    if problems:
        field, text = problems[0]
        loc: Loc = ("grid", b, field, combo[field][0]) if field in combo else ("train", field)
        if field == "batch_size" and loc == ("train", field) and field not in spec.train.model_fields_set:
            loc = ("resources", "workers_per_cell")
        name = f"{detector_arch(arch_name(depth, shortcut))}-{spec.dataset.name}-s{seed}"
        raise spec.error(loc, f"{text} (cell {name})")
    return DetectionCell(
        grid=spec.name, arch=arch_name(depth, shortcut), depth=depth, shortcut=shortcut, dataset=spec.dataset.name,
        dataset_path=str(spec.dataset.path), seed=seed, train=DetectionConfig(**values), resources=spec.resources,
        axes=tuple((axis, _freeze(v)) for axis, (_, v) in combo.items()),
        label="-".join(f"{axis}{_label_value(value)}" for axis, value in axis_values.items()))


def count_detection_cells(spec: DetectionGridSpec) -> int:
    return sum(math.prod(len(v) for v in block.values().values()) for block in spec.grid)


def expand_detection_cells(spec: DetectionGridSpec) -> list[DetectionCell]:
    """Every cell of the grid, in file order, duplicates across blocks removed; GridError on bad cells."""
    cells: dict[str, DetectionCell] = {}
    for b, block in enumerate(spec.grid):
        axes = block.values()
        for combo in itertools.product(*(list(enumerate(values)) for values in axes.values())):
            cell = _cell(spec, b, dict(zip(axes, combo, strict=True)))
            cells.setdefault(cell.cell_id, cell)
    return list(cells.values())


def parse_detection_grid(data: dict, source: str = "<grid>", lines: dict[Loc, int] | None = None) -> DetectionGridSpec:
    """Validate already-loaded detection-grid data; `lines` (from load_yaml) puts line numbers in errors."""
    lines = lines or {}
    grid_is_list = isinstance(data.get("grid"), list)
    try:
        spec = DetectionGridSpec.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, source, lines, grid_is_list, root=DetectionGridSpec) from None
    spec._source, spec._lines, spec._grid_is_list = source, lines, grid_is_list
    _check_axes(spec)
    return spec


def check_detection_data(spec: DetectionGridSpec, cells: list[DetectionCell]) -> None:
    """The prepared folder holds this dataset's detection data with every split the cells read."""
    from pipelines.detection_prepare import detection_manifest
    from pipelines.manifest import DatasetError

    path, field = spec.dataset.path, ("dataset", "path")
    try:
        manifest = detection_manifest(path)
    except DatasetError as exc:
        raise spec.error(field, str(exc)) from None
    if manifest.get("dataset") != spec.dataset.name:
        raise spec.error(field, f"{path} holds prepared {manifest.get('dataset')!r} data, not {spec.dataset.name!r}")
    for cell in cells:
        for split in (*cell.train.train_splits, cell.train.test_split):
            if split not in manifest["splits"]:
                raise spec.error(_split_field(spec, split), f"{path} has no split {split!r}, which {cell.name} "
                                 f"reads (prepared: {', '.join(manifest['splits'])})")


def _split_field(spec: DetectionGridSpec, split: str) -> Loc:
    for name in ("train_splits", "test_split"):
        given = getattr(spec.train, name) if name in spec.train.model_fields_set else ()
        if split in ((given,) if isinstance(given, str) else given):
            return ("train", name)
    return ("dataset", "path")


def load_detection_cells(data: dict, lines: dict[Loc, int], source: str, *, yes: bool = False, check_data: bool = True,
                         unprepared_ok: bool = False) -> tuple[DetectionGridSpec, list[DetectionCell]]:
    """parse + the cell-count limit + expansion + the prepared-data check; raises GridError.

    `unprepared_ok` (plan): a dataset folder that does not exist yet is not an error; one that exists is checked.
    """
    spec = parse_detection_grid(data, source, lines)
    count = count_detection_cells(spec)
    if count > MAX_CELLS:
        raise spec.error(("grid",), f"expands to {count} cells, more than the limit of {MAX_CELLS}")
    if count > CELL_LIMIT and not yes:
        raise spec.error(("grid",), f"expands to {count} cells, more than {CELL_LIMIT}; pass --yes to run them all")
    cells = expand_detection_cells(spec)
    if check_data and not (unprepared_ok and not spec.dataset.path.exists()):
        check_detection_data(spec, cells)
    return spec, cells


__all__ = ["DetectionGridSpec", "expand_detection_cells", "is_detection_grid", "load_detection_cells"]
