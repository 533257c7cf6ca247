"""A cell is one point of the grid: one architecture, dataset and seed with a resolved config.

Cells are plain frozen dataclasses so that they pickle into Ray Tune trials unchanged and
hash to a stable id: the same resolved config always gives the same `cell_id`, which is
how reruns find their MLflow run and their checkpoint. A training grid's cells are `Cell`s; an
evaluation grid's are `EvalCell`s: trained networks (one, or an ensemble) re-tested once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from models.arch import Shortcut, Variant
from orchestrator.conventions import KIND_DETECTION, KIND_EVALUATION, run_name
from pipelines.catalog import EvalProtocol, LoaderName
from training.config import TrainConfig

if TYPE_CHECKING:
    from orchestrator.detection_cells import DetectionCell  # it imports this module

RESOURCE_UNIT = 0.0001  # Ray's granularity: a resource amount is a whole number of 0.0001s (less is 0 to it)
MAX_CELL_CPUS = 65_536  # workers x CPUs of one cell: more is a typo, not a cluster


class Resources(BaseModel):
    """What each cell of a grid gets from Ray (the grid's `resources:` section)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)

    workers_per_cell: int = Field(1, ge=1, le=4096, description="Ray Train workers (DDP ranks) per cell")
    use_gpu: bool = Field(False, description="train on GPUs: gpus_per_worker GPUs for each worker")
    gpus_per_worker: float = Field(1.0, ge=RESOURCE_UNIT, le=64, description=(
        "GPUs each worker takes with use_gpu; a fraction packs single-worker cells on one GPU through Ray's "
        "fractional GPUs (0.25: four cells share it); above 1, whole GPUs"))
    cpus_per_worker: float = Field(1.0, ge=RESOURCE_UNIT, le=1024,
                                   description="CPUs Ray reserves for each worker, in steps of 0.0001 (Ray's unit)")
    max_concurrent_cells: int = Field(1, ge=1, le=100_000, description="cells Ray Tune runs at once")

    @field_validator("cpus_per_worker", "gpus_per_worker")
    @classmethod
    def _whole_ray_units(cls, value: float) -> float:
        units = value / RESOURCE_UNIT
        if abs(units - round(units)) > 1e-6:
            raise ValueError(f"{value!r} is not a multiple of {RESOURCE_UNIT}, the smallest amount Ray schedules")
        return value

    @model_validator(mode="after")
    def _cell_size_is_plausible(self) -> Resources:
        cpus = self.workers_per_cell * self.cpus_per_worker
        if cpus > MAX_CELL_CPUS:
            raise ValueError(f"workers_per_cell x cpus_per_worker is {cpus:,.10g} CPUs for one cell, more than "
                             f"{MAX_CELL_CPUS:,}")
        gpus = self.gpus_per_worker
        if gpus > 1 and gpus != int(gpus):
            raise ValueError(f"gpus_per_worker {gpus:g}: Ray gives fractions of one GPU only; above 1, whole GPUs")
        if gpus < 1 and self.workers_per_cell > 1:  # two ranks on one GPU: NCCL refuses a duplicate device
            raise ValueError(f"gpus_per_worker {gpus:g} packs single-worker cells; the {self.workers_per_cell} "
                             "workers of a DDP cell need a whole GPU each")
        return self

    @property
    def gpus(self) -> float:
        """GPUs one worker reserves (0 without use_gpu)."""
        return self.gpus_per_worker if self.use_gpu else 0.0


# TrainConfig fields added after cell ids were first handed out, each with the value that keeps the
# behaviour from before it existed. A cell holding that value hashes without the field, so its id (and
# with it its MLflow run and its checkpoints) stays what it was; any other value is a new cell.
ID_NEUTRAL_FIELDS: dict[str, Any] = {"epoch_eval_protocol": None, "compile": False, "plateau_max_drops": None,
                                      "plateau_split": "val", "deterministic": False}
# TrainConfig fields that change how fast a cell trains, never what it trains (with the per-sample seeded
# augmentation, the images and their order do not depend on the loading threads; channels-last is a memory layout): hashed at the value
# every cell held when ids were first handed out, whatever the cell holds, so a grid whose loader threads
# default from the cell's CPUs on GPUs (expand.py) keeps the ids, runs and checkpoints it had at 1.
ID_SPEED_FIELDS: dict[str, Any] = {"num_workers": 1, "channels_last": False}


def cell_data(cell: Cell | DetectionCell) -> dict[str, Any]:
    """A training or detection cell's fields as plain data, its config and resources as dicts too."""
    data = {f.name: getattr(cell, f.name) for f in dataclasses.fields(cell)}
    data["train"] = cell.train.model_dump()
    data["resources"] = cell.resources.model_dump()
    return data


def trained_cell_id(payload: dict[str, Any]) -> str:
    """The 12-hex id of a training or detection cell's plain data, less where it runs and reads (resources,
    dataset_path): they change where a cell runs, not what it trains, so a grid resubmitted from another
    folder or cluster finds its runs."""
    payload = {key: value for key, value in payload.items() if key not in ("resources", "dataset_path")}
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


@dataclass(frozen=True)
class Cell:
    """One trial of the grid. `name` is the MLflow run name and the Tune trial name."""

    grid: str
    arch: str  # models' readable name: "resnet56-A", "plain20", "resnet50-B"
    depth: int
    shortcut: Shortcut
    variant: Variant
    dataset: str
    dataset_path: str
    seed: int
    train: TrainConfig
    resources: Resources = field(default_factory=Resources)
    axes: tuple[tuple[str, Any], ...] = ()  # the grid axes that produced this cell, in order
    # training-field axes in the name ("lr0.05"), so cells differing only in them get distinct names
    label: str = ""

    @property
    def name(self) -> str:
        base = run_name(self.arch, self.dataset, self.seed)
        return f"{base}-{self.label}" if self.label else base

    @property
    def cell_id(self) -> str:
        """Stable 12-hex id of what is trained (`trained_cell_id`: not where it runs and reads); fields of
        ID_NEUTRAL_FIELDS are left out at their neutral value, and ID_SPEED_FIELDS hash at one value."""
        payload = self.to_dict()
        for name, neutral in ID_NEUTRAL_FIELDS.items():
            if payload["train"].get(name, neutral) == neutral:
                payload["train"].pop(name, None)
        for name, hashed_as in ID_SPEED_FIELDS.items():
            payload["train"][name] = hashed_as
        return trained_cell_id(payload)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (the TrainConfig as a dict too): what Tune's param space carries and the id hashes."""
        return cell_data(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Cell:
        data = dict(data)
        train = TrainConfig.model_validate(data.pop("train"), strict=False)  # JSON-ish: lists for tuples
        resources = data.pop("resources", {})
        axes = tuple(tuple(a) for a in data.pop("axes", ()))
        return cls(train=train, resources=Resources.model_validate(resources, strict=False), axes=axes, **data)


@dataclass(frozen=True)
class EvalMember:
    """One trained network an evaluation loads: a registered model version (or a run's logged model).

    `run_id` is the training run it came from ("" for a version registered without one); `train` is that
    run's resolved TrainConfig where it was a resnetctl cell, so the test sees the images as training did.
    """

    model_uri: str  # models:/<name>/<version>, or runs:/<run_id>/model
    run_id: str
    arch: str
    label: str  # readable: the training run's name ("resnet50-B-imagenet-s0") or "<model> v<version>"
    grid: str = ""  # the grid that trained it
    seed: int | None = None
    train: TrainConfig | None = None

    @property
    def key(self) -> str:
        """What identifies the network: its training run, however it is named (grid or registry)."""
        return self.run_id or self.model_uri

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["train"] = None if self.train is None else self.train.model_dump()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalMember:
        data = dict(data)
        train = data.pop("train", None)
        return cls(train=None if train is None else TrainConfig.model_validate(train, strict=False), **data)


@dataclass(frozen=True)
class EvalCell:
    """One evaluation: `members` (one network, or an ensemble's) tested once in `protocol` on `split`.

    Its id hashes what is measured (the networks' training runs, protocol, dataset, split), never how the
    networks were named or where the data lies: a resubmit finds the run, and a retrained source (a new
    run) is a new evaluation.
    """

    grid: str
    protocol: EvalProtocol
    dataset: str
    dataset_path: str
    split: str  # "test", or "val" where it doubles as the test set (ImageNet)
    members: tuple[EvalMember, ...]
    ensemble: str = ""  # the ensemble's name; "" for a single network
    batch_size: int = 64
    loader: LoaderName = "ffcv"
    num_workers: int = 1
    resources: Resources = field(default_factory=Resources)

    kind = KIND_EVALUATION

    @property
    def name(self) -> str:
        base = f"ensemble-{self.ensemble}" if self.ensemble else self.members[0].label
        return f"{base}-{self.protocol}"

    @property
    def arch(self) -> str:
        return "ensemble" if self.ensemble else self.members[0].arch

    @property
    def cell_id(self) -> str:
        keys = sorted(m.key for m in self.members)  # an average does not depend on the members' order
        payload = {"kind": KIND_EVALUATION, "protocol": self.protocol, "dataset": self.dataset, "split": self.split,
                   "members": keys, "ensemble": bool(self.ensemble)}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["members"] = [m.to_dict() for m in self.members]
        data["resources"] = self.resources.model_dump()
        return {"kind": KIND_EVALUATION, **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalCell:
        data = {k: v for k, v in data.items() if k != "kind"}
        members = tuple(EvalMember.from_dict(m) for m in data.pop("members"))
        resources = Resources.model_validate(data.pop("resources", {}), strict=False)
        return cls(members=members, resources=resources, **data)


AnyCell = Cell | EvalCell


def cell_from_dict(data: dict[str, Any]) -> AnyCell:
    """A cell back from its `to_dict()` (Tune's param space): an EvalCell or a DetectionCell when it says so,
    else a training Cell."""
    if data.get("kind") == KIND_DETECTION:
        from orchestrator.detection_cells import DetectionCell  # it imports this module

        return DetectionCell.from_dict(data)
    return EvalCell.from_dict(data) if data.get("kind") == KIND_EVALUATION else Cell.from_dict(data)
