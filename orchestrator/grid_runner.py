"""The local grid runner: run a grid's unfinished cells on Ray (embedded, or the cluster this process is in).

It is shared by `resnetctl submit` without an address (an embedded Ray on this machine) and by
`resnetctl run`, the entrypoint of the in-cluster job, so a grid runs the same code wherever it
runs. Finished cells (tagged `finished` in MLflow) are skipped, unfinished ones resume from their
checkpoints, and no cell's run is ever left RUNNING, whatever stops the grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

from orchestrator.cells import AnyCell
from orchestrator.estimate import budget_plan


def _cells_to_run(uri: str, experiment_id: str, cells: Sequence[AnyCell], *, restart: bool,
                  storage_path: str | None) -> list[AnyCell]:
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


def _close_runs(uri: str, experiment_id: str, cells: Sequence[AnyCell]) -> None:
    """Mark the cells' runs that are still RUNNING/SCHEDULED as ended (a dead trial cannot do it itself)."""
    from orchestrator import tracking

    for cell in cells:
        run = tracking.find_cell_run(uri, experiment_id, cell.cell_id)
        if run is not None:
            tracking.close_dangling_runs(uri, experiment_id, [run.info.run_id])


def _warn_unschedulable(cells: Sequence, console) -> None:
    """Cells that no node of the Ray this driver joined can ever hold: they would wait, so say so first."""
    import ray

    from orchestrator.capacity import fit_warnings, ray_nodes
    from resnetctl.redaction import for_rich

    for warning in fit_warnings(cells, ray_nodes(ray.nodes()), "this Ray cluster"):
        console.print(f"[yellow]Warning:[/] {for_rich(warning)}")


def _run_on_ray(spec, todo: list[AnyCell], *, skipped: int, uri: str, experiment_id: str, console,
                storage_path: str | None, address: str | None, fallback_local: bool, verbose: bool,
                progress: bool, budget=None) -> list:
    """Start (or join) Ray, run the cells under Tune with the progress board; the cells' outcomes."""
    from orchestrator import tune_runner

    started = tune_runner.init_ray(address, log_to_driver=verbose, fallback_local=fallback_local)
    try:
        _warn_unschedulable(todo, console)
        from orchestrator.progress import GridProgress

        board = GridProgress(todo, skipped=skipped, console=console)
        with board if progress else nullcontext():
            return tune_runner.run_cells(
                todo, grid_name=spec.name, tracking_uri=uri, experiment_id=experiment_id,
                storage_path=storage_path, max_concurrent_cells=spec.resources.max_concurrent_cells,
                callbacks=[board] if progress else [], budget=budget,
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
    cells: Sequence[AnyCell],
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

    from orchestrator import tracking, tune_runner
    from orchestrator.library_logs import route_library_logs
    from orchestrator.stores import check_store
    from resnetctl.redaction import for_rich, redact_uri

    console = Console(stderr=True)
    uri = tracking.resolve_tracking_uri(spec.tracking.uri)
    check_store(uri)  # one line naming the store, within seconds, before anything is written
    storage = tune_runner.storage_root(storage_path)
    logs = Path("logs") if "://" in storage else Path(storage) / "logs"  # beside the checkpoints when local
    log_file = route_library_logs(logs, f"submit-{spec.name}", verbose=verbose)
    experiment_id = tracking.ensure_experiment(uri, spec.experiment_name)
    if hasattr(spec, "verdicts"):  # a training grid: its claims and verdict settings, for `resnetctl report`
        from orchestrator.claims import settings_json

        tracking.record_verdict_settings(uri, experiment_id, spec.name,
                                         settings_json(spec.claims, spec.verdicts.tolerance, spec.verdicts.alpha,
                                                       getattr(spec, "price_per_gpu_hour", None)))
    todo = _cells_to_run(uri, experiment_id, cells, restart=restart, storage_path=storage_path)
    skipped = len(cells) - len(todo)
    console.print(f"grid [bold]{for_rich(spec.name)}[/]: {len(cells)} cells, {skipped} already finished, "
                  f"{len(todo)} to run; tracking {for_rich(redact_uri(uri))} (experiment "
                  f"{for_rich(spec.experiment_name)})")
    if not todo:
        return 0

    budget = budget_plan(spec, cells)  # a grid `budget:` starts cells only while it covers them
    outcomes = _run_on_ray(spec, todo, skipped=skipped, uri=uri, experiment_id=experiment_id, console=console,
                           storage_path=storage_path, address=address, fallback_local=fallback_local,
                           verbose=verbose, progress=progress, budget=budget)
    return _how_cells_ended(spec, cells, todo, outcomes, budget=budget, uri=uri, experiment_id=experiment_id,
                            console=console, log_file=log_file)


def _how_cells_ended(spec, cells: Sequence[AnyCell], todo: Sequence[AnyCell], outcomes: list, *, budget, uri: str,
                     experiment_id: str, console, log_file) -> int:
    """Say which cells failed, which the budget held back and which did not finish; 0 when every cell finished."""
    from orchestrator import tracking
    from resnetctl.redaction import for_rich, redact

    held = [o.cell for o in outcomes if o.status == "held"]
    if held:
        names = for_rich(", ".join(c.name for c in held))
        console.print(f"[yellow]budget[/]: {len(held)} cell(s) stay pending ({names}): the grid's budget of "
                      f"{budget.limit:,.4g} GPU-hours does not cover them; raise it and submit again to run them")
    for outcome in outcomes:
        if outcome.status not in ("finished", "held"):
            error = for_rich(redact((outcome.error or "").strip()[-500:]), keep_newlines=True)
            console.print(f"[red]cell {for_rich(outcome.cell.name)} failed[/]: {error}")
    finished = tracking.finished_cell_ids(uri, experiment_id)
    held_ids = {c.cell_id for c in held}
    missing = [c for c in todo if c.cell_id not in finished and c.cell_id not in held_ids]
    # a trial that died hard, or never started, leaves no run open; a held cell's run stays SCHEDULED (pending)
    _close_runs(uri, experiment_id, missing)
    if missing:
        names = for_rich(", ".join(c.name for c in missing))
        console.print(f"[red]{len(missing)} cell(s) did not finish[/]: {names}; "
                      "submit again to resume them from their checkpoints")
    if missing or held:
        return 1
    console.print(f"grid [bold]{for_rich(spec.name)}[/]: all {len(cells)} cells finished (library logs: "
                  f"{for_rich(log_file)})")
    return 0


__all__ = ["run_grid"]
