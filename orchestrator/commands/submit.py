"""`resnetctl submit grid.yaml` and its in-cluster twin `resnetctl run grid.yaml`.

Both validate the grid first (a bad grid exits 2 before Ray or MLflow is touched). Without
an address, `submit` runs the grid right here on an embedded Ray, tracking into
`./mlflow.db` unless the grid or MLFLOW_TRACKING_URI says otherwise. With `--address`
(or RAY_ADDRESS) it hands the grid to a cluster through the Ray Jobs API, where
`resnetctl run` is the entrypoint. A resubmit skips finished cells, resumes unfinished
ones from their checkpoints and runs new ones; `--restart` starts every cell afresh.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext

import click

from orchestrator.cells import Cell
from orchestrator.commands._grid import load_cells_or_exit


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
    """Run the grid's unfinished cells (all of them with `restart`); 0 when every cell finished."""
    from rich.console import Console

    from orchestrator import tracking, tune_runner

    console = Console(stderr=True)
    uri = tracking.resolve_tracking_uri(spec.tracking.uri)
    experiment_id = tracking.ensure_experiment(uri, spec.experiment_name)

    if restart:
        for cell in cells:
            run = tracking.find_cell_run(uri, experiment_id, cell.cell_id)
            while run is not None:  # at most one, but never leave a stray one behind
                tracking.delete_run(uri, run.info.run_id)
                run = tracking.find_cell_run(uri, experiment_id, cell.cell_id)
            tune_runner.clear_checkpoints(cell, storage_path)
        todo = list(cells)
    else:
        finished = tracking.finished_cell_ids(uri, experiment_id)
        todo = [c for c in cells if c.cell_id not in finished]
    skipped = len(cells) - len(todo)
    console.print(f"grid [bold]{spec.name}[/]: {len(cells)} cells, {skipped} already finished, "
                  f"{len(todo)} to run; tracking {uri} (experiment {spec.experiment_name})")
    if not todo:
        return 0

    started = tune_runner.init_ray(address, log_to_driver=verbose, fallback_local=fallback_local)
    try:
        from orchestrator.progress import GridProgress

        board = GridProgress(todo, skipped=skipped, console=console)
        with board if progress else nullcontext():
            outcomes = tune_runner.run_cells(
                todo, grid_name=spec.name, tracking_uri=uri, experiment_id=experiment_id,
                storage_path=storage_path, max_concurrent_cells=spec.resources.max_concurrent_cells,
                callbacks=[board] if progress else [],
            )
    except BaseException:  # Ctrl-C or a driver error: no cell's run is left RUNNING/SCHEDULED
        for cell in todo:
            run = tracking.find_cell_run(uri, experiment_id, cell.cell_id)
            if run is not None:
                tracking.close_dangling_runs(uri, experiment_id, [run.info.run_id])
        raise
    finally:
        if started:
            import ray

            ray.shutdown()

    for outcome in outcomes:
        if outcome.status != "finished":
            console.print(f"[red]cell {outcome.cell.name} failed[/]: {(outcome.error or '').strip()[-500:]}")
    finished = tracking.finished_cell_ids(uri, experiment_id)
    missing = [c for c in todo if c.cell_id not in finished]
    for cell in missing:  # a trial that died hard, or never started, leaves no run RUNNING/SCHEDULED
        run = tracking.find_cell_run(uri, experiment_id, cell.cell_id)
        if run is not None:
            tracking.close_dangling_runs(uri, experiment_id, [run.info.run_id])
    if missing:
        console.print(f"[red]{len(missing)} cell(s) did not finish[/]: {', '.join(c.name for c in missing)}; "
                      "submit again to resume them from their checkpoints")
        return 1
    console.print(f"grid [bold]{spec.name}[/]: all {len(cells)} cells finished")
    return 0


_common = [
    click.argument("grid_path", metavar="GRID", type=click.Path(dir_okay=False)),
    click.option("--restart", is_flag=True, help="Rerun every cell from scratch (deletes their runs and checkpoints)."),
    click.option("--yes", is_flag=True, help="Accept a grid with more cells than the safety limit."),
    click.option("--storage", "storage_path", default=None, envvar="RESNETCTL_STORAGE",
                 help="Where Ray keeps checkpoints (default ./results); a rerun resumes from here."),
    click.option("--verbose", is_flag=True, help="Stream the Ray workers' logs to this terminal."),
]


def _with_common(fn):
    for decorator in reversed(_common):
        fn = decorator(fn)
    return fn


@click.command("submit")
@_with_common
@click.option("--address", envvar="RAY_ADDRESS", default=None,
              help="Ray cluster (Jobs API address, e.g. http://head:8265); env RAY_ADDRESS. "
                   "Without it the grid runs here on an embedded Ray.")
@click.option("--detach", is_flag=True, help="With --address: return once the job is submitted.")
def submit_command(grid_path: str, restart: bool, yes: bool, storage_path: str | None, verbose: bool,
                   address: str | None, detach: bool) -> None:
    """Run GRID's cells (skipping finished ones), here or on the cluster at --address."""
    spec, cells = load_cells_or_exit(grid_path, yes=yes)
    if address:
        from orchestrator.remote import submit_to_cluster

        raise SystemExit(submit_to_cluster(grid_path, spec, cells, address=address, detach=detach, restart=restart,
                                           storage_path=storage_path))
    if detach:
        raise click.UsageError("--detach needs --address (a cluster to leave the job on)")
    raise SystemExit(run_grid(spec, cells, restart=restart, storage_path=storage_path, verbose=verbose))


@click.command("run")
@_with_common
def run_command(grid_path: str, restart: bool, yes: bool, storage_path: str | None, verbose: bool) -> None:
    """Run GRID's cells on the Ray cluster this process is in (the Jobs entrypoint), else locally."""
    spec, cells = load_cells_or_exit(grid_path, yes=yes)
    raise SystemExit(run_grid(spec, cells, restart=restart, storage_path=storage_path, address="auto",
                              fallback_local=True, verbose=verbose))
