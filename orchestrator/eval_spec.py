"""Evaluation grids: trained networks re-tested once in a protocol, validated like training grids.

The paper tests its ImageNet models twice: 10-crop testing for Tables 2-3 and fully-convolutional
multi-scale testing for Table 4 (Sec. 3.4), then averages six of them into the ensemble of Table 5.
A training grid would retrain the networks to test them another way; an evaluation grid names
networks that are already trained and how to test them:

    name: imagenet-table4
    dataset: {name: imagenet, path: data/imagenet-640}   # the data the test reads (its test split)
    evaluate:
      protocol: [multiscale]                 # one evaluation per network (and ensemble) and protocol
      models:
        - grid: imagenet-table3              # every finished cell of a trained grid ...
          arch: [resnet34-B, resnet50-B]     # ... of these networks (default: all); `seed` filters too
        - model: imagenet-resnet152-B        # a registered model version
          version: 1
      ensembles:
        - name: six-models                   # averaged softmax of all its members, one run
          members:
            - {grid: imagenet-table3, arch: [resnet34-B, resnet34-C, resnet50-B, resnet101-B, resnet152-B]}

A file with an `evaluate:` section is an evaluation grid (it has no `grid:` or `train:`). This module
checks the file alone, without the store; `orchestrator.evaluation` then finds the networks in MLflow.
Errors are the training grid's: one GridError naming the file, line and field.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, ValidationError, model_validator

from orchestrator.cells import Resources
from orchestrator.spec import (
    DatasetSpec,
    GridError,
    GridFile,
    Loc,
    Seed,
    TrackingSpec,
    _Strict,
    validation_error,
)
from pipelines.catalog import VARIANT_OF, EvalProtocol, LoaderName, loader_problem

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"  # grid and ensemble names (the training grid's rule)
MAX_SOURCES = 1000


class ModelSource(_Strict):
    """Trained networks to test: the finished cells of a grid (optionally some archs and seeds), or one
    registered model version."""

    grid: Annotated[str, Field(pattern=NAME_PATTERN)] | None = None
    experiment: str | None = None  # the grid's MLflow experiment, when not named after the grid
    arch: Annotated[list[str], Field(min_length=1, max_length=1000)] | None = None
    seed: Annotated[list[Seed], Field(min_length=1, max_length=10_000)] | None = None
    model: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    version: Annotated[int, Field(ge=1, le=10**9)] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> ModelSource:
        if (self.grid is None) == (self.model is None):
            raise ValueError("give either `grid` (its finished cells) or `model` with `version` (a registered model)")
        if self.model is not None and self.version is None:
            raise ValueError("`model` needs a `version` (the registered version to test)")
        if self.model is not None and (self.arch or self.seed or self.experiment):
            raise ValueError("`arch`, `seed` and `experiment` select cells of a `grid`, not a registered model")
        if self.grid is not None and self.version is not None:
            raise ValueError("`version` belongs to a registered `model`, not to a `grid`")
        return self


class EnsembleSpec(_Strict):
    """Several networks whose softmax outputs are averaged and tested as one (the paper's Table 5)."""

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    members: Annotated[list[ModelSource], Field(min_length=1, max_length=MAX_SOURCES)]


class EvaluateSpec(_Strict):
    """The `evaluate:` section: what to test, how, and with which loader settings."""

    protocol: Annotated[list[EvalProtocol], Field(min_length=1, max_length=4)]
    models: Annotated[list[ModelSource], Field(max_length=MAX_SOURCES)] = Field(default_factory=list)
    ensembles: Annotated[list[EnsembleSpec], Field(max_length=MAX_SOURCES)] = Field(default_factory=list)
    batch_size: int = Field(64, ge=1, le=65_536, description="images per batch (each scored in every view)")
    loader: LoaderName = Field("ffcv", description="ffcv, torch or device, as in training")
    num_workers: int = Field(1, ge=0, le=256, description="data-loading threads (FFCV) or processes (torch)")

    @model_validator(mode="after")
    def _something_to_test(self) -> EvaluateSpec:
        if not self.models and not self.ensembles:
            raise ValueError("name what to test: `models` (networks) or `ensembles`, or both")
        return self


class EvalGridSpec(GridFile):
    """A validated evaluation grid. Build it with `parse_eval_grid` (the front door dispatches on `evaluate:`)."""

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    dataset: DatasetSpec
    evaluate: EvaluateSpec
    resources: Resources = Field(default_factory=Resources)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)

    def datasets(self) -> list[str]:
        return [self.dataset.name] if self.dataset.name else []


def is_evaluation_grid(data: Any) -> bool:
    """Whether loaded grid data is an evaluation grid (it has an `evaluate:` section)."""
    return isinstance(data, dict) and "evaluate" in data


def _check(spec: EvalGridSpec) -> EvalGridSpec:
    """Rules across fields: one dataset with its path, protocols the data allows, one worker, distinct names."""
    data = spec.dataset
    if data.name is None:
        raise spec.error(("dataset", "name"), "required: the dataset the networks are tested on")
    if data.paths:
        raise spec.error(("dataset", "paths"), "an evaluation grid reads one dataset: give `name` and `path`")
    if data.path is None:
        raise spec.error(("dataset", "path"), f"required: where `resnetctl prepare {data.name}` wrote the data")
    seen: dict[str, int] = {}
    for i, protocol in enumerate(spec.evaluate.protocol):
        if protocol in seen:
            raise spec.error(("evaluate", "protocol", i), f"{protocol!r} repeats protocol[{seen[protocol]}]")
        seen[protocol] = i
        if protocol == "multiscale" and VARIANT_OF[data.name] != "imagenet":
            raise spec.error(("evaluate", "protocol", i),
                             f"multiscale testing is for ImageNet-size images, not {data.name}")
    if problem := loader_problem(spec.evaluate.loader, data.name):
        raise spec.error(("evaluate", "loader"), problem)
    names: dict[str, int] = {}
    for i, ensemble in enumerate(spec.evaluate.ensembles):
        if ensemble.name in names:
            raise spec.error(("evaluate", "ensembles", i, "name"),
                             f"{ensemble.name!r} repeats ensembles[{names[ensemble.name]}].name")
        names[ensemble.name] = i
    if spec.resources.workers_per_cell != 1:
        raise spec.error(("resources", "workers_per_cell"),
                         "an evaluation runs on one worker (give cpus_per_worker, use_gpu, max_concurrent_cells)")
    return spec


def parse_eval_grid(data: Any, source: str = "<grid>", lines: dict[Loc, int] | None = None) -> EvalGridSpec:
    """Validate already-loaded evaluation-grid data; `lines` (from load_yaml) puts line numbers in errors."""
    lines = lines or {}
    for key in ("grid", "train"):
        if key in data:
            raise GridError.at_path(source, lines, (key,), "a file with `evaluate:` tests trained networks and trains "
                                                           "none: give the training grid a file of its own")
    try:
        spec = EvalGridSpec.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, source, lines, root=EvalGridSpec) from None
    spec._source = source
    spec._lines = lines
    return _check(spec)
