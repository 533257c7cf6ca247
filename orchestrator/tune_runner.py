"""Ray Tune schedules the cells; each trial is a function that builds and fits a TorchTrainer.

(An evaluation grid's trials are `eval_entry.evaluation_trainable` instead: one worker, no TorchTrainer;
its docstring says why.)

This is Ray's Train V2 + Tune pattern (`Tuner(trainer)` is gone): the Tune trial is a thin
driver that opens the cell's MLflow run and calls `TorchTrainer.fit()`. The Train run's
name is derived from the cell and its storage path is fixed, so a rerun finds the previous
run's checkpoints there and resumes instead of restarting. The trial driver reserves only
a little memory, never a CPU, so it cannot starve its own Train workers on small machines.

A single-worker cell (most of a CIFAR grid) skips Ray Train: its trial reserves the worker's CPUs
and GPU and runs the same epoch loop itself (`train_in_trial`), reporting and checkpointing through
Tune (`tune.report(..., checkpoint=)`, `tune.get_checkpoint()`); Tune's failure config restarts a
killed trial from its checkpoint, and the trial's folder (named after the cell, as the Train run is)
holds the checkpoints a later submit resumes from.

A restart caused by a preempted node (drained for preemption, then gone) is not charged to a cell's
failure budget: Ray's own rule, which Tune's trials and Ray Train's workers follow (`preemption.py` says
how); `preemption.RestartLog` records each restart's cause in the cell's MLflow run.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.cells import AnyCell, EvalCell, cell_from_dict
from orchestrator.conventions import KIND_DETECTION
from orchestrator.estimate import BudgetPlan

DEFAULT_STORAGE = "results"
DRIVER_MEMORY_BYTES = 64 * 1024**2  # the trial driver's only reservation: no CPU
TRAIN_MAX_FAILURES = 2  # a killed worker restarts from its latest checkpoint this many times
# a trial whose own process died (its node was lost) is started again, on a live node; its
# TorchTrainer finds the cell's checkpoints under the same run name and resumes from them
TRIAL_MAX_FAILURES = 1
# a Train worker lost with a preempted node restarts from its checkpoint on this budget, not max_failures:
# unbounded, as the cloud decides how often it takes a spot node back (-1 is also Ray's default; said here)
TRAIN_MAX_PREEMPTIONS = -1
FAST_RAY_ENV = {
    # the Train controller polls its workers every 2 s by default: a tiny trial waits on it
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
    # the Train state actor (dashboard bookkeeping) is not used here
    "RAY_TRAIN_ENABLE_STATE_ACTOR_RECONCILIATION": "0",
    # preemption watching only matters on spot clusters; it adds an actor per run
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    # Tune's controller loop and result buffering: report results as they come
    "TUNE_RESULT_BUFFER_LENGTH": "1",
    "TUNE_GLOBAL_CHECKPOINT_S": "30",
    "TUNE_MAX_PENDING_TRIALS_PG": "8",
    # Tune's table printer writes to stdout under the rich progress board; resnetctl draws its own
    "RAY_AIR_NEW_OUTPUT": "0",
}


def train_run_name(cell: AnyCell) -> str:
    """The Ray Train run name of a cell: readable and unique, the same on every rerun."""
    return f"{cell.name}-{cell.cell_id}"


def storage_root(storage_path: str | os.PathLike | None = None) -> str:
    """Where Tune and Train keep results and checkpoints: an absolute folder, or a URI kept as given.

    Multi-node clusters need storage every node reaches (s3://, gs://, or a shared mount).
    """
    value = str(storage_path or DEFAULT_STORAGE)
    if "://" in value:
        return value.rstrip("/")
    return str(Path(value).expanduser().resolve())


def apply_fast_env() -> None:
    """Set the env knobs that cut Ray's fixed per-trial cost (unless the user already set them)."""
    for key, value in FAST_RAY_ENV.items():
        os.environ.setdefault(key, value)


def init_ray(
    address: str | None = None, *, num_cpus: int | None = None, log_to_driver: bool = True,
    fallback_local: bool = False,
) -> bool:
    """Connect to `address` (or RAY_ADDRESS), else start a lean local Ray; True if this call started it.

    `address="auto"` with `fallback_local` joins a cluster running on this machine if there is
    one, else starts a local Ray. A local Ray skips the dashboard, which is most of Ray's
    start-up time here; the env knobs in FAST_RAY_ENV cut the per-trial fixed cost.
    """
    import ray

    apply_fast_env()
    if ray.is_initialized():
        return False
    env_vars = {k: os.environ[k] for k in FAST_RAY_ENV}
    env_vars.update({k: os.environ[k] for k in ("MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK") if k in os.environ})
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        try:
            ray.init(address=address, runtime_env={"env_vars": env_vars}, log_to_driver=log_to_driver)
            return True
        except ConnectionError:
            if not fallback_local:
                raise
    # a local Ray's workers inherit this process's environment: no runtime env needed, so the
    # pre-started worker processes can be used for the trials' actors
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=log_to_driver,
             logging_level="WARNING")
    return True


def tune_run_name(grid_name: str) -> str:
    """The Ray Tune experiment of a grid (its folder under the storage root)."""
    return f"tune-{grid_name}"


def cell_folders(cell: AnyCell, storage_path: str | os.PathLike | None = None) -> list[str]:
    """Where a cell's checkpoints live: its Train run (multi-worker cells) and its Tune trial (single-worker)."""
    root = storage_root(storage_path)
    return [f"{root}/{train_run_name(cell)}", f"{root}/{tune_run_name(cell.grid)}/{train_run_name(cell)}"]


def clear_checkpoints(cell: AnyCell, storage_path: str | os.PathLike | None = None) -> None:
    """`--restart`: forget the cell's Train run and Tune trial (checkpoints and state) so it starts from scratch."""
    for location in cell_folders(cell, storage_path):
        if "://" in location:
            import pyarrow.fs

            fs, path = pyarrow.fs.FileSystem.from_uri(location)
            if fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound:
                fs.delete_dir(path)
        elif Path(location).exists():
            shutil.rmtree(location)


def trains_in_trial(cell: dict[str, Any]) -> bool:
    """Whether a cell (its to_dict()) trains inside its Tune trial: a single-worker training cell.

    Such a cell needs no Train controller, worker group or process group: the trial reserves the
    worker's CPUs and GPU and runs the same epoch loop (`train_entry.run_cell`) with Tune's own
    report and checkpoints, which cuts the controller and worker-group start (about half of the
    fixed cost per cell). Cells of several workers keep Ray Train (DDP, its restarts of the group).
    """
    return "kind" not in cell and int(cell.get("resources", {}).get("workers_per_cell", 1)) == 1


def _trial_resources(config: dict[str, Any]):
    """A trial's reservation: the worker's own for a cell trained in the trial, else the driver's (no CPU)."""
    from ray import tune

    if not trains_in_trial(config["cell"]):
        return tune.PlacementGroupFactory([{"CPU": 0, "memory": DRIVER_MEMORY_BYTES}])
    res = config["cell"]["resources"]
    # a fraction of a GPU (gpus_per_worker < 1) packs several such cells on one GPU
    return tune.PlacementGroupFactory([{"CPU": res["cpus_per_worker"],
                                        "GPU": res.get("gpus_per_worker", 1) if res["use_gpu"] else 0}])


def cell_trainable(config: dict[str, Any], tracking_uri: str | None = None) -> None:
    """One Tune trial: fit the cell's TorchTrainer into the MLflow run the driver opened for it.

    The trial process never imports MLflow on the way to training (the driver opened the
    run, rank 0 writes to it): each import here is paid again by every cell. `tracking_uri` comes
    through Ray's object store (`_trainable`), never the trial's config.
    """
    trial_started_at = time.time()
    config = {**config, "tracking_uri": tracking_uri}
    if trains_in_trial(config["cell"]):
        return train_in_trial(config, trial_started_at)
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from orchestrator.train_entry import train_loop_per_worker

    cell = cell_from_dict(config["cell"])
    if config["cell"].get("kind") == KIND_DETECTION:  # Faster R-CNN cells (Tables 7-8): their own worker loop
        from orchestrator.detection_entry import detection_loop_per_worker as train_loop_per_worker
    uri = config["tracking_uri"]
    run_id = (config.get("run_ids") or {}).get(cell.cell_id)
    res = cell.resources
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=_worker_config(config, trial_started_at),
        torch_config=TorchConfig(backend="nccl" if res.use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=res.workers_per_cell, use_gpu=res.use_gpu,
            resources_per_worker={"CPU": res.cpus_per_worker, **({"GPU": res.gpus} if res.use_gpu else {})},
        ),
        run_config=ray.train.RunConfig(
            name=train_run_name(cell),
            storage_path=config["storage_path"],
            failure_config=ray.train.FailureConfig(max_failures=config.get("max_failures", TRAIN_MAX_FAILURES),
                                                   max_preemption_failures=TRAIN_MAX_PREEMPTIONS),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            callbacks=[TuneReportCallback()],
        ),
    )
    try:
        trainer.fit()
    except BaseException:
        if run_id is not None:
            from orchestrator.tracking import mark_run_failed

            mark_run_failed(uri, run_id)
        raise


def _worker_config(config: dict[str, Any], trial_started_at: float) -> dict[str, Any]:
    """What the epoch loop (`train_entry.run_cell`) reads from a trial's config."""
    cell = config["cell"]
    return {"cell": cell, "tracking_uri": config["tracking_uri"],
            "run_id": (config.get("run_ids") or {}).get(cell_from_dict(cell).cell_id),
            "threads_per_worker": max(1, int(cell["resources"]["cpus_per_worker"])),
            "trial_started_at": trial_started_at, "fit_started_at": time.time()}


def train_in_trial(config: dict[str, Any], trial_started_at: float) -> None:
    """A single-worker cell trained in its Tune trial (`trains_in_trial` says why).

    It resumes from Tune's checkpoint after a restart of the trial (a killed process: the Tuner's
    failure config), else from the newest checkpoint a previous submit left in the trial's folder.
    """
    import torch
    from ray import tune

    from orchestrator.train_entry import run_cell

    worker = _worker_config(config, trial_started_at)
    cell = cell_from_dict(config["cell"])

    def report(metrics: dict[str, Any], folder: str | None) -> None:
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder) if folder else None)

    # Ray set CUDA_VISIBLE_DEVICES to the GPU it gave (a share of one, with fractional GPUs); a cluster that
    # declares GPUs it has not (the tests' logical GPUs) trains on the CPU
    device = torch.device("cuda" if cell.resources.use_gpu and torch.cuda.is_available() else "cpu")
    checkpoint = tune.get_checkpoint() or _previous_checkpoint(cell_folders(cell, config["storage_path"])[1])
    try:
        run_cell(worker, rank=0, world_size=1, device=device, wrap_model=None, checkpoint=checkpoint,
                 report=report, worker_started_at=time.time())
    except BaseException:
        if worker["run_id"] is not None:
            from orchestrator.tracking import mark_run_failed

            mark_run_failed(worker["tracking_uri"], worker["run_id"])
        raise


def _previous_checkpoint(trial_folder: str):
    """The newest complete checkpoint an earlier Tune run of this trial left (Tune numbers a new run's from 0
    again, over the old ones, so the newest state file decides, not the folder's number); None if none."""
    import pyarrow.fs
    from ray import tune

    from training.checkpoint import CHECKPOINT_FILE

    fs, path = pyarrow.fs.FileSystem.from_uri(trial_folder)
    infos = fs.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True))
    folders = [i.path for i in infos if i.type == pyarrow.fs.FileType.Directory and i.base_name.startswith("checkpoint_")]
    states = [i for i in fs.get_file_info([f"{f}/{CHECKPOINT_FILE}" for f in folders]) if i.type == pyarrow.fs.FileType.File]
    if not states:
        return None
    newest = max(states, key=lambda i: i.mtime_ns or 0)
    return tune.Checkpoint(newest.path.rsplit("/", 1)[0], filesystem=fs)


@dataclass
class CellOutcome:
    cell: AnyCell
    status: str  # "finished" | "error" | "held" (the grid's budget did not cover it: never started)
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def run_cells(
    cells: Sequence[AnyCell],
    *,
    grid_name: str,
    tracking_uri: str | None,
    experiment_id: str | None,
    storage_path: str | os.PathLike | None = None,
    max_concurrent_cells: int = 1,
    callbacks: Sequence[Any] = (),
    max_failures: int = TRAIN_MAX_FAILURES,
    budget: BudgetPlan | None = None,
) -> list[CellOutcome]:
    """Run `cells` as one Tune experiment (one trial per cell) and say how each ended.

    Each cell's MLflow run is opened (or its unfinished one reused) here in the driver,
    one after another, before any trial starts: no two processes race to create runs.
    With a `budget`, cells start only while it covers them (`budget.BudgetSearcher`); the rest are "held".
    """
    if not cells:
        return []
    run_ids: dict[str, str] = {}
    if tracking_uri:
        from orchestrator.tracking import open_run

        run_ids = {c.cell_id: open_run(tracking_uri, experiment_id, c, status="SCHEDULED") for c in cells}
    storage = storage_root(storage_path)
    if "://" not in storage:
        Path(storage).mkdir(parents=True, exist_ok=True)
    searcher = None
    if budget is not None:
        from orchestrator.budget import BudgetSearcher

        searcher = BudgetSearcher(cells, budget)
    tuner = _tuner(cells, grid_name=grid_name, tracking_uri=tracking_uri, run_ids=run_ids, storage=storage,
                   max_concurrent_cells=max_concurrent_cells, callbacks=callbacks, max_failures=max_failures,
                   searcher=searcher)
    results = tuner.fit()
    return _outcomes(results, cells, {c.cell_id for c in searcher.held} if searcher is not None else set())


def _trainable(cells: Sequence[AnyCell], tracking_uri: str | None):
    """Training cells: the driver that fits a TorchTrainer (its workers hold the CPUs); evaluation cells:
    the evaluation itself, holding the cell's CPUs and GPU. A grid's cells are all of one kind.

    The store's URI is handed over by `tune.with_parameters` (Ray's object store), not in the trial's
    config: Tune writes a config to params.json, params.pkl, every result.json line and its experiment
    state, and a PostgreSQL URI carries its password."""
    from ray import tune

    if not all(isinstance(c, EvalCell) for c in cells):
        return tune.with_resources(tune.with_parameters(cell_trainable, tracking_uri=tracking_uri), _trial_resources)
    from orchestrator.eval_entry import evaluation_trainable

    res = cells[0].resources
    return tune.with_resources(tune.with_parameters(evaluation_trainable, tracking_uri=tracking_uri),
                               {"CPU": res.cpus_per_worker, "GPU": 1 if res.use_gpu else 0})


def _tuner(cells: Sequence[AnyCell], *, grid_name: str, tracking_uri: str | None, run_ids: dict[str, str],
           storage: str, max_concurrent_cells: int, callbacks: Sequence[Any], max_failures: int, searcher=None):
    """One Tune experiment with one trial per cell, each named (and foldered) after its cell: Tune's grid
    search over the cells, or the budget's `searcher`, which hands them out while the budget covers them."""
    from ray import tune

    from orchestrator.preemption import RestartLog

    def trial_name(trial) -> str:
        return cell_from_dict(trial.config["cell"]).name

    def trial_dirname(trial) -> str:
        return train_run_name(cell_from_dict(trial.config["cell"]))

    return tune.Tuner(
        _trainable(cells, tracking_uri),
        param_space={
            **({} if searcher is not None else {"cell": tune.grid_search([c.to_dict() for c in cells])}),
            "run_ids": run_ids,
            "storage_path": str(storage),
            "max_failures": max_failures,
        },
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            num_samples=len(cells) if searcher is not None else 1,  # a searcher's trials; grid search's are its cells
            max_concurrent_trials=max(1, max_concurrent_cells),
            trial_name_creator=trial_name,
            trial_dirname_creator=trial_dirname,
            # an evaluation's process keeps torch, MLflow and its store connection for the next one (most of
            # its cost on small data); a training trial's TorchTrainer starts its own workers anyway
            reuse_actors=all(isinstance(c, EvalCell) for c in cells),
        ),
        run_config=tune.RunConfig(
            name=tune_run_name(grid_name),
            storage_path=str(storage),
            callbacks=[*callbacks, RestartLog(tracking_uri, run_ids)],
            verbose=0,
            # a cell trained in its trial is restarted by Tune from its checkpoint, as Train restarts workers;
            # a restart after a preemption is not counted against this (Tune's Trial.handle_error)
            failure_config=tune.FailureConfig(max_failures=TRIAL_MAX_FAILURES + (
                max_failures if any(trains_in_trial(c.to_dict()) for c in cells) else 0)),
            checkpoint_config=tune.CheckpointConfig(checkpoint_frequency=0, num_to_keep=2),
        ),
    )


def _outcomes(results, cells: Sequence[AnyCell], held: set[str] = frozenset()) -> list[CellOutcome]:
    """How each cell ended, matched by trial folder: a trial that died early may come back without its config.
    `held`: the cells the budget never started."""
    by_id = {c.cell_id: c for c in cells}
    by_dirname = {train_run_name(c): c for c in cells}
    outcomes = {}
    for result in results:
        cell = by_dirname.get(str(result.path or "").rstrip("/").rsplit("/", 1)[-1])
        if cell is None and result.config:
            cell = by_id.get(cell_from_dict(result.config["cell"]).cell_id)
        if cell is None:
            continue
        if result.error is not None:
            outcomes[cell.cell_id] = CellOutcome(cell, "error", dict(result.metrics or {}), error=str(result.error))
        else:
            outcomes[cell.cell_id] = CellOutcome(cell, "finished", dict(result.metrics or {}))
    return [outcomes.get(c.cell_id) or (CellOutcome(c, "held") if c.cell_id in held else
                                        CellOutcome(c, "error", error="Ray Tune returned no result for this cell"))
            for c in cells]
