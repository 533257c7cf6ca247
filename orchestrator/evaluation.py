"""Evaluation grid -> evaluation cells: the networks it names, found in the MLflow store.

An evaluation grid names trained networks by the grid that trained them (its finished cells) or by
registered model and version; this module looks them up in the store the grid tracks into, before
Ray starts, and makes one `EvalCell` per network (and per ensemble) and protocol. Anything it cannot
find is a GridError on the line that named it: an unknown grid or model, a grid with no finished
cell yet, an arch or seed the grid did not train, networks trained on another dataset.

A store that does not exist yet (a SQLite file never written) holds no network: that is said without
creating the file or importing MLflow.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from orchestrator import conventions as cv
from orchestrator.cells import ID_NEUTRAL_FIELDS, EvalCell, EvalMember
from orchestrator.eval_spec import EvalGridSpec, ModelSource
from orchestrator.spec import Loc
from pipelines.catalog import VARIANT_OF
from training.config import TrainConfig


def eval_split(manifest: dict | None, dataset: str) -> str:
    """The split a test reads: "test" where the data has one, else "val" (ImageNet's val doubles as test)."""
    if manifest is not None:
        return "test" if "test" in manifest.get("splits", {}) else "val"
    return "val" if VARIANT_OF.get(dataset) == "imagenet" else "test"


# What a run logged before a TrainConfig field existed ran with: the behaviour from before the field (the
# cells' id-neutral values, plus the per-channel normalisation and the train split every earlier run used).
BEFORE_FIELDS: dict[str, Any] = {**ID_NEUTRAL_FIELDS, "normalization": "channel", "train_split": "train"}


def train_config_from_params(params: dict[str, str]) -> TrainConfig | None:
    """A training run's TrainConfig back from its `train.<field>` params (None when they do not make one).

    A field the run has no param for (it predates the field) takes its value from BEFORE_FIELDS, not the
    field's default: the network was trained the old way, and is tested the way it was trained.
    """
    from pydantic import ValidationError

    values: dict[str, Any] = {}
    for name in TrainConfig.model_fields:
        text = params.get(f"train.{name}")
        if text is None:
            if name in BEFORE_FIELDS:
                values[name] = BEFORE_FIELDS[name]
            continue
        try:
            values[name] = ast.literal_eval(text)  # numbers, None, True, [32000, 48000]
        except (ValueError, SyntaxError):
            values[name] = text  # a plain word: "ffcv", "10crop"
    try:
        return TrainConfig.model_validate(values, strict=False)
    except ValidationError:
        return None


class SourceStore:
    """The trained networks of one MLflow store, looked up for an evaluation grid's sources."""

    def __init__(self, spec: EvalGridSpec, uri: str):
        self.spec, self.uri = spec, uri
        self._client = None
        path = uri.removeprefix("sqlite:///") if uri.startswith("sqlite:///") else None
        self.missing = path is not None and path not in ("", ":memory:") and not Path(path).is_file()

    @property
    def client(self):
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    def members(self, source: ModelSource, loc: Loc) -> list[EvalMember]:
        """The networks `source` names, each checked to be trained on the grid's dataset."""
        if self.missing:
            what = f"no grid {source.grid!r}" if source.grid else f"no registered model {source.model!r}"
            field = "grid" if source.grid else "model"
            raise self.spec.error((*loc, field), f"{what}: the store {self.uri} does not exist yet (nothing was "
                                                 "trained there; check tracking.uri or MLFLOW_TRACKING_URI)")
        found = self._grid_members(source, loc) if source.grid else [self._registered_member(source, loc)]
        dataset = self.spec.dataset.name
        for member, trained_on in found:
            if trained_on and trained_on != dataset:
                raise self.spec.error((*loc, "grid" if source.grid else "model"),
                                      f"{member.label} was trained on {trained_on}, not {dataset}")
        return [member for member, _ in found]

    # -- grids --------------------------------------------------------------------------
    def _grid_runs(self, source: ModelSource, loc: Loc) -> list:
        """The grid's finished training runs, one per cell (the latest where a cell was rerun)."""
        name = source.experiment or source.grid
        experiment = self.client.get_experiment_by_name(name)
        if experiment is None or experiment.lifecycle_stage == "deleted":
            known = sorted(e.name for e in self.client.search_experiments())
            field = "experiment" if source.experiment else "grid"
            raise self.spec.error((*loc, field), f"no grid {name!r} in {self.uri} (grids there: "
                                                 f"{', '.join(known) or 'none'})")
        runs = self.client.search_runs([experiment.experiment_id], f"tags.`{cv.TAG_GRID}` = '{source.grid}'",
                                       max_results=50_000)
        if any(r.data.tags.get(cv.TAG_CELL_KIND) == cv.KIND_EVALUATION for r in runs):
            raise self.spec.error((*loc, "grid"), f"{source.grid!r} is an evaluation grid: name the grid that "
                                                  "trained the networks")
        finished: dict[str, Any] = {}
        for run in runs:
            if run.data.tags.get(cv.TAG_STATUS) == cv.STATUS_FINISHED:
                cell = run.data.tags.get(cv.TAG_CELL_ID, run.info.run_id)
                kept = finished.get(cell)
                if kept is None or (run.info.end_time or 0) > (kept.info.end_time or 0):
                    finished[cell] = run
        if not finished:
            state = f"{len(runs)} cell(s), none finished yet" if runs else f"no runs in experiment {name!r}"
            raise self.spec.error((*loc, "grid"), f"grid {source.grid!r} has no finished cell to test ({state})")
        return sorted(finished.values(), key=lambda r: (r.info.run_name or "", r.info.run_id))

    def _grid_members(self, source: ModelSource, loc: Loc) -> list[tuple[EvalMember, str]]:
        runs = self._grid_runs(source, loc)
        for axis, wanted in (("arch", source.arch), ("seed", source.seed)):
            values = {str(self._run_value(run, axis)) for run in runs}
            for k, value in enumerate(wanted or ()):
                if str(value) not in values:
                    raise self.spec.error((*loc, axis, k), f"no finished cell of grid {source.grid!r} has {axis} "
                                                           f"{value} ({axis}s: {', '.join(sorted(values))})")
            if wanted:
                runs = [run for run in runs if str(self._run_value(run, axis)) in {str(v) for v in wanted}]
        uris = self._model_uris([run.info.run_id for run in runs])
        return [(self._member(run, uris[run.info.run_id]), run.data.tags.get(cv.TAG_DATASET, "")) for run in runs]

    @staticmethod
    def _run_value(run, axis: str) -> str | None:
        return run.data.tags.get(cv.TAG_ARCH) if axis == "arch" else run.data.params.get(cv.PARAM_SEED)

    def _model_uris(self, run_ids: Sequence[str]) -> dict[str, str]:
        """Each run's registered model version (models:/name/version), else its logged model (runs:/id/model)."""
        uris = {run_id: f"runs:/{run_id}/{cv.ARTIFACT_MODEL}" for run_id in run_ids}
        for start in range(0, len(run_ids), 100):
            quoted = ", ".join(f"'{r}'" for r in run_ids[start:start + 100])
            versions = self.client.search_model_versions(f"run_id IN ({quoted})")
            for mv in sorted(versions, key=lambda v: int(v.version), reverse=True):  # the earliest wins
                uris[mv.run_id] = f"models:/{mv.name}/{mv.version}"
        return uris

    # -- registered models --------------------------------------------------------------
    def _registered_member(self, source: ModelSource, loc: Loc) -> tuple[EvalMember, str]:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(source.model)
        except MlflowException:
            raise self.spec.error((*loc, "model"), f"no registered model {source.model!r} in {self.uri}") from None
        try:
            version = self.client.get_model_version(source.model, str(source.version))
        except MlflowException:
            raise self.spec.error((*loc, "version"),
                                  f"registered model {source.model!r} has no version {source.version}") from None
        uri = f"models:/{source.model}/{source.version}"
        if not version.run_id:
            return EvalMember(uri, "", arch="", label=f"{source.model}-v{source.version}"), ""
        run = self.client.get_run(version.run_id)
        member = self._member(run, uri)
        return EvalMember(uri, run.info.run_id, member.arch, f"{source.model}-v{source.version}", member.grid,
                          member.seed, member.train), run.data.tags.get(cv.TAG_DATASET, "")

    @staticmethod
    def _member(run, model_uri: str) -> EvalMember:
        tags, params = run.data.tags, run.data.params
        seed = params.get(cv.PARAM_SEED)
        return EvalMember(model_uri, run.info.run_id, arch=tags.get(cv.TAG_ARCH, ""),
                          label=run.info.run_name or run.info.run_id, grid=tags.get(cv.TAG_GRID, ""),
                          seed=int(seed) if seed and seed.isdigit() else None,
                          train=train_config_from_params(dict(params)))


def expand_evaluation(spec: EvalGridSpec, *, uri: str, manifest: dict | None = None) -> list[EvalCell]:
    """One EvalCell per named network and protocol, then one per ensemble and protocol; GridError when a
    source cannot be found. Duplicates (a network named twice) are evaluated once."""
    store = SourceStore(spec, uri)
    evaluate = spec.evaluate
    singles = [m for i, source in enumerate(evaluate.models) for m in store.members(source, ("evaluate", "models", i))]
    groups: list[tuple[str, tuple[EvalMember, ...]]] = []
    for i, ensemble in enumerate(evaluate.ensembles):
        loc = ("evaluate", "ensembles", i, "members")
        members = {m.key: m for j, source in enumerate(ensemble.members) for m in store.members(source, (*loc, j))}
        if len(members) < 2:
            raise spec.error(loc, f"an ensemble averages two networks or more; these sources name {len(members)}")
        groups.append((ensemble.name, tuple(members.values())))
    common = {"grid": spec.name, "dataset": spec.dataset.name, "dataset_path": str(spec.dataset.path),
              "split": eval_split(manifest, spec.dataset.name), "batch_size": evaluate.batch_size,
              "loader": evaluate.loader, "num_workers": evaluate.num_workers, "resources": spec.resources}
    cells: dict[str, EvalCell] = {}
    for protocol in evaluate.protocol:
        for member in singles:
            cell = EvalCell(protocol=protocol, members=(member,), **common)
            cells.setdefault(cell.cell_id, cell)
        for name, members in groups:
            cell = EvalCell(protocol=protocol, members=members, ensemble=name, **common)
            cells.setdefault(cell.cell_id, cell)
    return list(cells.values())


def check_evaluation_data(spec: EvalGridSpec) -> dict:
    """The prepared data's manifest, checked to be the grid's dataset with a split to test on."""
    from pipelines.manifest import DatasetError, load_manifest

    field = ("dataset", "path")
    try:
        manifest = load_manifest(spec.dataset.path)
    except DatasetError as exc:
        raise spec.error(field, str(exc)) from None
    if manifest.get("dataset") != spec.dataset.name:
        raise spec.error(field, f"{spec.dataset.path} holds prepared {manifest.get('dataset')!r} data, "
                                f"not {spec.dataset.name!r}")
    if eval_split(manifest, spec.dataset.name) not in manifest["splits"]:
        raise spec.error(field, f"{spec.dataset.path}: no 'test' or 'val' split to test on")
    return manifest


def load_evaluation_cells(data: Any, lines: dict, source: str, *, yes: bool = False,
                          check_data: bool = True) -> tuple[EvalGridSpec, list[EvalCell]]:
    """The front door's evaluation half: validate, check the data, find the networks; GridError otherwise."""
    from orchestrator.eval_spec import parse_eval_grid
    from orchestrator.grid_loading import CELL_LIMIT
    from orchestrator.tracking import resolve_tracking_uri

    spec = parse_eval_grid(data, source, lines)
    manifest = check_evaluation_data(spec) if check_data else None
    cells = expand_evaluation(spec, uri=resolve_tracking_uri(spec.tracking.uri), manifest=manifest)
    if len(cells) > CELL_LIMIT and not yes:
        raise spec.error(("evaluate",), f"expands to {len(cells)} evaluations, more than {CELL_LIMIT}; "
                                        "pass --yes to run them all")
    return spec, cells


__all__ = ["SourceStore", "check_evaluation_data", "eval_split", "expand_evaluation", "load_evaluation_cells",
           "train_config_from_params"]
