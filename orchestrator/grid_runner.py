"""The local grid runner: run a grid's unfinished cells on Ray (embedded, or the cluster this process is in).

It is shared by `resnetctl submit` without an address (an embedded Ray on this machine) and by
`resnetctl run`, the entrypoint of the in-cluster job, so a grid runs the same code wherever it
runs. Finished cells (tagged `finished` in MLflow) are skipped, unfinished ones resume from their
checkpoints, and no cell's run is ever left RUNNING, whatever stops the grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext

from orchestrator.cells import Cell


def _cells_to_run(uri: str, experiment_id: str, cells: Sequence[Cell], *, restart: bool,
                  storage_path: str | None) -> list[Cell]:
    """The unfinished cells; with `restart`, every cell after deleting its runs and checkpoints."""
    from orchestrator import tracking, tune_runner

    if not restart:
        finished = tracking.finished_cell_ids(uri, experiment_id)
        return [c for c in cells if c.cell_id not in finished]
    for cell in cells:
        run = tracking.find_cell_run(uri, experiment_id, cell.cell_id)
        while run is not None:  # at most one, but never leave a stray one behind
            tracking.delete_run(uri, run.info.run_id)
            run = tracking.find_cell_run(uri, experiment_id, cell.cell_id)
        tune_runner.clear_checkpoints(cell, storage_path)
    return list(cells)


def _close_runs(uri: str, experiment_id: str, cells: Sequence[Cell]) -> None:
    """Mark the cells' runs that are still RUNNING/SCHEDULED as ended (a dead trial cannot do it itself)."""
    from orchestrator import tracking

    for cell in cells:
        run = tracking.find_cell_run(uri, experiment_id, cell.cell_id)
        if run is not None:
            tracking.close_dangling_runs(uri, experiment_id, [run.info.run_id])


def _run_on_ray(spec, todo: list[Cell], *, skipped: int, uri: str, experiment_id: str, console,
                storage_path: str | None, address: str | None, fallback_local: bool, verbose: bool,
                progress: bool) -> list:
    """Start (or join) Ray, run the cells under Tune with the progress board; the cells' outcomes."""
    from orchestrator import tune_runner

    started = tune_runner.init_ray(address, log_to_driver=verbose, fallback_local=fallback_local)
    try:
        from orchestrator.progress import GridProgress

        board = GridProgress(todo, skipped=skipped, console=console)
        with board if progress else nullcontext():
            return tune_runner.run_cells(
                todo, grid_name=spec.name, tracking_uri=uri, experiment_id=experiment_id,
                storage_path=storage_path, max_concurrent_cells=spec.resources.max_concurrent_cells,
                callbacks=[board] if progress else [],
            )
    except BaseException:  # Ctrl-C or a driver error: no cell's run is left RUNNING/SCHEDULED
        _close_runs(uri, experiment_id, todo)
        raise
    finally:
        if started:
            import ray

            ray.shutdown()


def run_grid(
    spec,
    cells: Sequence[Cell],
    *,
    restart: bool = False,
    storage_path: str | None = None,
    address: str | None = None,
    fallback_local: bool = False,
    verbose: bool = False,
    progress: bool = True,
) -> int:
    """Run the grid's unfinished cells (all of them with `restart`); 0 when every cell finished, else 1."""
    from rich.console import Console

    from orchestrator import tracking

    console = Console(stderr=True)
    uri = tracking.resolve_tracking_uri(spec.tracking.uri)
    experiment_id = tracking.ensure_experiment(uri, spec.experiment_name)
    todo = _cells_to_run(uri, experiment_id, cells, restart=restart, storage_path=storage_path)
    skipped = len(cells) - len(todo)
    console.print(f"grid [bold]{spec.name}[/]: {len(cells)} cells, {skipped} already finished, "
                  f"{len(todo)} to run; tracking {uri} (experiment {spec.experiment_name})")
    if not todo:
        return 0

    outcomes = _run_on_ray(spec, todo, skipped=skipped, uri=uri, experiment_id=experiment_id, console=console,
                           storage_path=storage_path, address=address, fallback_local=fallback_local,
                           verbose=verbose, progress=progress)
    for outcome in outcomes:
        if outcome.status != "finished":
            console.print(f"[red]cell {outcome.cell.name} failed[/]: {(outcome.error or '').strip()[-500:]}")
    finished = tracking.finished_cell_ids(uri, experiment_id)
    missing = [c for c in todo if c.cell_id not in finished]
    _close_runs(uri, experiment_id, missing)  # a trial that died hard, or never started, leaves no run open
    if missing:
        console.print(f"[red]{len(missing)} cell(s) did not finish[/]: {', '.join(c.name for c in missing)}; "
                      "submit again to resume them from their checkpoints")
        return 1
    console.print(f"grid [bold]{spec.name}[/]: all {len(cells)} cells finished")
    return 0


__all__ = ["run_grid"]
