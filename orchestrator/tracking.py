"""MLflow bookkeeping for cells: one run per cell, found again by its `cell_id` tag.

The driver resolves the store URI (made absolute, so Ray workers with other working
directories write the same store), creates the schema and the experiment once, and opens
or reuses each cell's run. Rank 0 of a cell's Train workers writes per-epoch metrics with
`log_batch` through `CellRunLogger`, skipping epochs the run already holds, so a resumed
cell continues its own run and every epoch's metrics exist exactly once.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator import conventions as cv
from orchestrator.cells import Cell, EvalCell

DEFAULT_DB_NAME = "mlflow.db"


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    # the registry explicitly too: MLflow's default is the process-wide registry URI, which anything in the
    # process may have set (`mlflow.set_registry_uri`), and a cell's model belongs in its own store
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@contextmanager
def using_store(uri: str):
    """MLflow's fluent API and `models:/` URIs on `uri` (tracking and registry) for the block, then as before.

    The fluent API reads process-wide settings, which `mlflow.set_tracking_uri`/`set_registry_uri` also
    copy into MLFLOW_TRACKING_URI/MLFLOW_REGISTRY_URI for every child process, and which a `None` does not
    fully undo; so the previous state is saved and put back exactly: a driver, an evaluation trial or a test
    that touched one store never leaves the next one's models registered in (or loaded from) it.
    """
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_state
    from mlflow.tracking._tracking_service import utils as tracking_state

    names = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    saved_env = {name: os.environ.get(name) for name in names}
    saved = (tracking_state._tracking_uri, registry_state._registry_uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(saved[0])
        registry_state._registry_uri = saved[1]
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def absolute_sqlite_uri(uri: str, base: str | Path | None = None) -> str:
    """Rewrite `sqlite:///relative.db` to `sqlite:////abs/relative.db` (relative to `base` or cwd)."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return uri
    path = uri[len(prefix):]
    if path.startswith("/") or path == ":memory:" or not path:
        return uri
    root = Path(base) if base is not None else Path.cwd()
    return prefix + str((root / path).resolve())


def resolve_tracking_uri(grid_uri: str | None = None, *, cwd: str | Path | None = None) -> str:
    """The store a grid tracks into: the grid's URI > MLFLOW_TRACKING_URI > ./mlflow.db, made absolute."""
    root = Path(cwd) if cwd is not None else Path.cwd()
    uri = grid_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root.resolve() / DEFAULT_DB_NAME}"
    if "://" not in uri:  # a bare path: MLflow's file store is deprecated, so treat it as a SQLite file
        uri = f"sqlite:///{uri}"
    return absolute_sqlite_uri(uri, root)


def default_artifact_location(uri: str, experiment: str) -> str | None:
    """Beside a SQLite file: `<dir>/mlruns/<experiment>`; elsewhere let the server/store decide.

    The grid's rule for names keeps `experiment` one plain folder name; anything else is refused here too.
    """
    if experiment in ("", ".", "..") or "/" in experiment or os.sep in experiment:
        raise ValueError(f"experiment name {experiment!r} is not a plain folder name")
    if uri.startswith("sqlite:////"):
        return (Path(uri[len("sqlite:///"):]).parent / "mlruns" / experiment).as_uri()
    return None


def ensure_experiment(uri: str, name: str) -> str:
    """Create the store's schema (first connection does it) and the experiment; return its id.

    Called once in the driver before any trial starts, so concurrent writers never race on
    schema creation or on creating the same experiment. A store MLflow cannot use (a database
    of another program, a server that refuses) is a StoreError naming the store, password redacted.
    """
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    from orchestrator.stores import StoreError
    from resnetctl.redaction import redact, redact_uri

    try:
        client = _client(uri)
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            if experiment.lifecycle_stage == "deleted":
                client.restore_experiment(experiment.experiment_id)
            return experiment.experiment_id
        return client.create_experiment(name, artifact_location=default_artifact_location(uri, name))
    except (MlflowException, SQLAlchemyError, OSError) as exc:
        reason = (redact(str(exc)).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise StoreError(f"tracking store {redact_uri(uri)} cannot be used: {reason}") from None


def record_verdict_settings(uri: str, experiment_id: str, grid: str, settings: str) -> None:
    """The grid's claims and verdict settings (`claims.settings_json`) as an experiment tag, for the report."""
    _client(uri).set_experiment_tag(experiment_id, cv.verdicts_tag(grid), settings)


def find_cell_run(uri: str, experiment_id: str, cell_id: str):
    """The run of one cell (by its `cell_id` tag), or None. Prefers a finished run over others."""
    runs = _client(uri).search_runs(
        [experiment_id],
        filter_string=f"tags.`{cv.TAG_CELL_ID}` = '{cell_id}'",
        order_by=["attributes.start_time ASC"],
    )
    if not runs:
        return None
    return next((run for run in runs if is_finished(run)), runs[0])


def is_finished(run) -> bool:
    return run is not None and run.data.tags.get(cv.TAG_STATUS) == cv.STATUS_FINISHED


def finished_cell_ids(uri: str, experiment_id: str) -> set[str]:
    """Cell ids whose run is finished: a resubmit skips these."""
    runs = _client(uri).search_runs(
        [experiment_id], filter_string=f"tags.`{cv.TAG_STATUS}` = '{cv.STATUS_FINISHED}'", max_results=50000,
    )
    return {r.data.tags[cv.TAG_CELL_ID] for r in runs if cv.TAG_CELL_ID in r.data.tags}


def cell_tags(cell: Cell) -> dict[str, str]:
    """Grid, cell id, arch, dataset, eval protocol, and one tag per grid axis."""
    tags = {
        cv.TAG_GRID: cell.grid,
        cv.TAG_CELL_ID: cell.cell_id,
        cv.TAG_ARCH: cell.arch,
        cv.TAG_DATASET: cell.dataset,
        cv.TAG_EVAL_PROTOCOL: cell.train.eval_protocol,
        cv.TAG_STATUS: cv.STATUS_RUNNING,
    }
    for axis, value in cell.axes:
        tags[cv.axis_tag(axis)] = str(value)
    return tags


def cell_params(cell: Cell) -> dict[str, str]:
    """The resolved config, flattened: what is trained, plus the resources it ran with."""
    params = {
        cv.PARAM_DEPTH: cell.depth,
        cv.PARAM_SHORTCUT: cell.shortcut,
        cv.PARAM_SEED: cell.seed,
        cv.PARAM_DATASET: cell.dataset,
        "arch": cell.arch,
        "variant": cell.variant,
        "dataset_path": cell.dataset_path,
    }
    for key, value in cell.to_dict()["train"].items():
        params[cv.param_train(key)] = list(value) if isinstance(value, tuple) else value
    for key, value in cell.to_dict()["resources"].items():
        params[f"resources.{key}"] = value
    return {k: str(v)[:6000] for k, v in params.items()}


def protocol_params(cell: Cell) -> dict[str, str]:
    """How the cell trains, as the report's protocol line reads it: the split, its images, the normalisation.

    `train_images` comes from the prepared manifest (the driver checked it before any run opens); where
    that cannot be read here the param is left out, and the worker fails on the data with the reason.
    """
    from pipelines.manifest import load_manifest

    params = {cv.PARAM_TRAIN_SPLIT: cell.train.train_split, cv.PARAM_NORMALIZATION: cell.train.normalization}
    try:
        count = load_manifest(cell.dataset_path)["splits"][cell.train.train_split]["count"]
        params[cv.PARAM_TRAIN_IMAGES] = str(int(count))
    except (KeyError, TypeError, ValueError):  # DatasetError is a ValueError
        pass
    return params


def dataset_input(cell: Cell):
    """The cell's prepared data as an MLflow dataset input: the UI's Dataset column and lineage.

    The digest is that of the prepared folder's manifest (which records the raw data's checksum, the
    split sizes and the writer's settings), so two runs show the same digest exactly when they read
    the same prepared data; the profile carries the split sizes. None when the folder cannot be read.
    """
    import hashlib

    from mlflow.entities import Dataset, DatasetInput, InputTag

    from pipelines.manifest import MANIFEST_NAME, load_manifest

    manifest_path = Path(cell.dataset_path) / MANIFEST_NAME
    try:
        manifest = load_manifest(cell.dataset_path)
        digest = hashlib.sha256(manifest_path.read_bytes()).hexdigest()[:16]
    except (ValueError, OSError):  # DatasetError is a ValueError; the driver checked the data before this
        return None
    splits = {name: int(info["count"]) for name, info in manifest["splits"].items()}
    entity = Dataset(
        name=cell.dataset,
        digest=digest,
        source_type="local",
        source=json.dumps({"uri": str(cell.dataset_path)}),
        profile=json.dumps({"splits": splits, "num_classes": manifest.get("num_classes"),
                            "image_size": manifest.get("image_size"),
                            "source_checksum": manifest.get("source_checksum")}),
    )
    return DatasetInput(entity, tags=[InputTag(cv.INPUT_CONTEXT_TAG, cv.INPUT_CONTEXT_TRAINING)])


def open_cell_run(uri: str, experiment_id: str, cell: Cell, *, restart: bool = False,
                  status: str = "RUNNING") -> str:
    """Return the run id the cell trains into: its own unfinished run, or a new one.

    A finished run is only replaced when `restart` is set (the old one is deleted so the
    cell still has exactly one run). An unfinished run (crashed driver, killed job) is
    reused and set back to RUNNING, so a resumed cell never gets a duplicate run.
    """
    from mlflow.entities import Param

    client = _client(uri)
    run = find_cell_run(uri, experiment_id, cell.cell_id)
    if run is not None and restart:
        client.delete_run(run.info.run_id)
        run = None
    if run is not None:
        run_id = reopen_cell_run(client, run, status)
        missing = {k: v for k, v in protocol_params(cell).items() if k not in run.data.params}  # older runs
        if missing:
            client.log_batch(run_id, params=[Param(k, v) for k, v in missing.items()])
        return run_id
    params, dataset = {**cell_params(cell), **protocol_params(cell)}, dataset_input(cell)
    return new_cell_run(client, experiment_id, cell.name, cell_tags(cell), params, status=status,
                        datasets=[dataset] if dataset is not None else [])


def reopen_cell_run(client, run, status: str) -> str:
    """A cell's unfinished run set back to `status` and tagged running: the cell goes on in it, with no second run."""
    client.update_run(run.info.run_id, status=status)
    client.set_tag(run.info.run_id, cv.TAG_STATUS, cv.STATUS_RUNNING)
    return run.info.run_id


def new_cell_run(client, experiment_id: str, name: str, tags: dict[str, str], params: dict[str, str], *,
                 status: str, datasets=()) -> str:
    """A cell's new run: its tags and params in one batch, its input datasets, then `status` (e.g. SCHEDULED
    until its trial starts; RUNNING is MLflow's own)."""
    from mlflow.entities import Param, RunTag

    run = client.create_run(experiment_id, run_name=name, tags=tags)
    client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in params.items()],
                     tags=[RunTag(k, v) for k, v in tags.items()])
    if datasets:
        client.log_inputs(run.info.run_id, datasets=list(datasets))
    if status != "RUNNING":
        client.update_run(run.info.run_id, status=status)
    return run.info.run_id


def delete_run(uri: str, run_id: str) -> None:
    """`--restart`: the old run goes (soft-deleted, as the MLflow UI does), so one run per cell stays."""
    client = _client(uri)
    run = client.get_run(run_id)
    if run.info.status == "RUNNING":
        client.set_terminated(run_id, status="KILLED")
    client.delete_run(run_id)


def mark_run_failed(uri: str, run_id: str) -> None:
    """A cell whose trial errored ends FAILED, never left RUNNING; the next submit resumes it."""
    client = _client(uri)
    client.set_tag(run_id, cv.TAG_STATUS, cv.STATUS_FAILED)
    client.set_terminated(run_id, status="FAILED")


def close_dangling_runs(uri: str, experiment_id: str, run_ids: Iterable[str]) -> list[str]:
    """Mark FAILED the given runs still RUNNING/SCHEDULED but not finished (their trial died or never ran)."""
    closed = []
    client = _client(uri)
    for run_id in run_ids:
        run = client.get_run(run_id)
        if run.info.status in ("RUNNING", "SCHEDULED") and not is_finished(run):
            mark_run_failed(uri, run_id)
            closed.append(run_id)
    return closed


@dataclass
class CellRunLogger:
    """Rank 0's writer into one cell's run: per-epoch metrics exactly once, then the final model."""

    uri: str
    run_id: str

    def __post_init__(self) -> None:
        self._client = _client(self.uri)
        self._client.update_run(self.run_id, status="RUNNING")  # from SCHEDULED (or FAILED, on a retry)
        history = self._client.get_metric_history(self.run_id, cv.M_ITERATION)
        self._logged_steps = {m.step for m in history}
        self._system_metrics = None

    def start_system_metrics(self, interval_s: float = cv.SYSTEM_METRICS_INTERVAL_S) -> None:
        """MLflow's system-metrics sampler (CPU, memory, disk, network; GPU where pynvml sees one).

        One sample and one small `log_batch` per interval: at 10 s that is well under 1% of an epoch.
        A resumed run continues the metrics' steps instead of starting them again at 0.
        """
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        self._system_metrics = SystemMetricsMonitor(self.run_id, sampling_interval=interval_s,
                                                    resume_logging=bool(self._logged_steps),
                                                    tracking_uri=self.uri)
        self._system_metrics.start()

    def stop_system_metrics(self) -> None:
        if self._system_metrics is not None:
            self._system_metrics.finish()
            self._system_metrics = None

    def logged_epochs(self) -> set[int]:
        return set(self._logged_steps)

    def log_epoch(self, epoch: int, metrics: Mapping[str, float]) -> bool:
        """Log one epoch's metrics in one `log_batch`; a no-op if this epoch is already in the run."""
        from mlflow.entities import Metric

        if epoch in self._logged_steps:
            return False
        now = int(time.time() * 1000)
        batch = [Metric(key, float(value), now, epoch) for key, value in metrics.items()]
        # write `iteration` last: it is the marker `logged_epochs` reads, so a half-written
        # epoch is rewritten on resume rather than skipped
        batch.sort(key=lambda m: m.key == cv.M_ITERATION)
        self._client.log_batch(self.run_id, metrics=batch)
        self._logged_steps.add(epoch)
        return True

    def log_numerics(self, facts: Mapping[str, str]) -> None:
        """The facts that decide the run's numbers (`training.numerics`), as `numerics.*` params.

        Params cannot change: a resumed run keeps the facts of the process that first logged them.
        """
        from mlflow.entities import Param

        logged = self._client.get_run(self.run_id).data.params
        params = [Param(cv.param_numerics(k), str(v)) for k, v in facts.items() if cv.param_numerics(k) not in logged]
        if params:
            self._client.log_batch(self.run_id, params=params)

    def log_model_size(self, *, num_params: int, mult_adds: int) -> None:
        """Parameters and multiply-adds per image of the trained network (the report's Table 6 column)."""
        from mlflow.entities import Param

        self._client.log_batch(self.run_id, params=[Param(cv.PARAM_NUM_PARAMS, str(num_params)),
                                                    Param(cv.PARAM_MULT_ADDS, str(mult_adds))])

    def log_final(self, metrics: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])

    def log_layer_responses(self, responses: list[float]) -> None:
        """Fig. 7: one metric value per 3x3 conv layer (step = layer index) and a JSON artifact."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        existing = {m.step for m in self._client.get_metric_history(self.run_id, cv.M_LAYER_RESPONSE)}
        batch = [Metric(cv.M_LAYER_RESPONSE, float(v), now, i) for i, v in enumerate(responses) if i not in existing]
        if responses:  # one number per run for the claims, read with the other final metrics
            batch.append(Metric(cv.M_LAYER_RESPONSE_MEAN, sum(map(float, responses)) / len(responses), now, 0))
        for start in range(0, len(batch), 1000):  # log_batch takes at most 1000 metrics
            self._client.log_batch(self.run_id, metrics=batch[start:start + 1000])
        self._client.log_dict(self.run_id, {"layer_response_std": responses}, cv.ARTIFACT_LAYER_RESPONSES)

    def log_curves(self, curves: Mapping[str, list[Any]]) -> None:
        self._client.log_text(self.run_id, json.dumps(curves, indent=1), cv.ARTIFACT_CURVES)

    def log_model(self, model, *, dataset: str, arch: str) -> str:
        """Log the trained network (pickle format, explicit requirements) and register it.

        Once per run: a cell that died after registering but before its `finished` tag keeps its
        one model version when the rerun gets here again.
        """
        import mlflow
        import mlflow.pytorch
        import torch

        registered = self._client.search_model_versions(f"run_id = '{self.run_id}'")
        if registered:
            return f"models:/{registered[0].name}/{registered[0].version}"
        requirements = [f"torch=={torch.__version__.split('+')[0]}", "resnetctl"]
        with using_store(self.uri), mlflow.start_run(run_id=self.run_id):
            info = mlflow.pytorch.log_model(
                model,
                name=cv.ARTIFACT_MODEL,
                serialization_format="pickle",
                pip_requirements=requirements,
                registered_model_name=cv.registered_model_name(dataset, arch),
                await_registration_for=0,
            )
        # `start_run(run_id=...)` ends the run FINISHED on exit; the status tag below decides
        return info.model_uri

    def mark_finished(self) -> None:
        self.stop_system_metrics()
        self._client.set_tag(self.run_id, cv.TAG_STATUS, cv.STATUS_FINISHED)
        self._client.set_terminated(self.run_id, status="FINISHED")


# ----------------------------------------------------------------------------- evaluation cells
def _joined(values: Iterable[str], limit: int = 5000) -> str:
    """Distinct non-empty values, comma-joined, within an MLflow tag's length."""
    return ",".join(dict.fromkeys(v for v in values if v))[:limit]


def evaluation_tags(cell: EvalCell) -> dict[str, str]:
    """Grid, cell id, kind, what was tested (arch, dataset, split, protocol) and the training runs it came from."""
    members = cell.members
    tags = {
        cv.TAG_GRID: cell.grid,
        cv.TAG_CELL_ID: cell.cell_id,
        cv.TAG_CELL_KIND: cv.KIND_EVALUATION,
        cv.TAG_ARCH: cell.arch,
        cv.TAG_DATASET: cell.dataset,
        cv.TAG_EVAL_PROTOCOL: cell.protocol,
        cv.TAG_EVAL_SPLIT: cell.split,
        cv.TAG_STATUS: cv.STATUS_RUNNING,
        cv.TAG_SOURCE_RUN_ID: _joined(m.run_id for m in members),
        cv.TAG_SOURCE_GRID: _joined(m.grid for m in members),
        cv.TAG_SOURCE_MODEL: _joined(m.model_uri for m in members),
    }
    if cell.ensemble:
        tags[cv.TAG_ENSEMBLE] = cell.ensemble
        tags[cv.TAG_ENSEMBLE_MEMBERS] = ", ".join(m.label for m in members)[:5000]
    return {k: v for k, v in tags.items() if v}


def evaluation_params(cell: EvalCell) -> dict[str, str]:
    """How the test ran; a single network's depth, shortcut and seed too (the report's pivots read them)."""
    from models.arch import ArchError, parse_arch

    params: dict[str, Any] = {cv.PARAM_DATASET: cell.dataset, "dataset_path": cell.dataset_path, "split": cell.split,
                              "protocol": cell.protocol, "batch_size": cell.batch_size, "loader": cell.loader,
                              "num_workers": cell.num_workers, "members": len(cell.members)}
    if not cell.ensemble:
        member = cell.members[0]
        try:
            depth, _, shortcut = parse_arch(member.arch)
            params.update({cv.PARAM_DEPTH: depth, cv.PARAM_SHORTCUT: shortcut})
        except ArchError:  # a registered model resnetctl did not train
            pass
        if member.seed is not None:
            params[cv.PARAM_SEED] = member.seed
    for key, value in cell.resources.model_dump().items():
        params[f"resources.{key}"] = value
    return {k: str(v)[:6000] for k, v in params.items()}


def open_evaluation_run(uri: str, experiment_id: str, cell: EvalCell, *, status: str = "RUNNING") -> str:
    """The run an evaluation logs into: its own unfinished one (a rerun tests again), or a new one."""
    client = _client(uri)
    run = find_cell_run(uri, experiment_id, cell.cell_id)
    if run is not None:
        return reopen_cell_run(client, run, status)
    return new_cell_run(client, experiment_id, cell.name, evaluation_tags(cell), evaluation_params(cell),
                        status=status)


def open_run(uri: str, experiment_id: str, cell: Cell | EvalCell, *, status: str = "RUNNING") -> str:
    """The run a cell of any kind writes into (see open_cell_run, open_evaluation_run, open_detection_run)."""
    if getattr(cell, "kind", None) == cv.KIND_DETECTION:
        from orchestrator.detection_tracking import open_detection_run  # it imports this module

        return open_detection_run(uri, experiment_id, cell, status=status)
    if isinstance(cell, EvalCell):
        return open_evaluation_run(uri, experiment_id, cell, status=status)
    return open_cell_run(uri, experiment_id, cell, status=status)


def mark_run_running(uri: str, run_id: str) -> None:
    """A cell's trial has started: its run leaves SCHEDULED (or FAILED, when a rerun picks it up)."""
    _client(uri).update_run(run_id, status="RUNNING")


def log_evaluation(uri: str, run_id: str, cell: EvalCell, result, *, seconds: float, on_gpu: bool) -> None:
    """An evaluation's errors (`<split>_err`, `<split>_top5_err`), its members' own and its compute, and the
    `finished` tag, in one `log_batch`: a run holds all of them or none (its rerun then tests again)."""
    from mlflow.entities import Metric, RunTag

    from training import metrics

    now = int(time.time() * 1000)
    top1, top5 = metrics.split_errors(cell.split)
    hours = seconds / 3600.0
    values = {top1: result.top1, top5: result.top5, cv.M_EVAL_IMAGES: result.images,
              cv.M_WORKER_HOURS: hours, cv.M_GPU_HOURS: hours if on_gpu else 0.0}
    client = _client(uri)
    if cell.ensemble:  # first, so that the last batch (the errors and `finished`) stays one write
        members = [Metric(key, float(value), now, i) for i, own in enumerate(result.members)
                   for key, value in zip((cv.M_MEMBER_ERR, cv.M_MEMBER_TOP5_ERR), own, strict=True)]
        for start in range(0, len(members), 1000):  # log_batch takes at most 1000 metrics
            client.log_batch(run_id, metrics=members[start:start + 1000])
    client.log_batch(run_id, metrics=[Metric(key, float(value), now, 0) for key, value in values.items()],
                     tags=[RunTag(cv.TAG_STATUS, cv.STATUS_FINISHED)])
    client.set_terminated(run_id, status="FINISHED")
