"""Pick the reader for a tracking URI and the runs of one grid from it."""

from __future__ import annotations

from orchestrator.report.records import ReportError, Selection, StoreReader


def open_reader(uri: str) -> StoreReader:
    """SQL tables for database URIs; the MLflow client for http(s) tracking servers."""
    from orchestrator.report.query_sql import SqlReader, is_database_uri

    if is_database_uri(uri):
        return SqlReader(uri)
    if uri.startswith(("http://", "https://")):
        from orchestrator.report.query_client import ClientReader

        return ClientReader(uri)
    raise ReportError(
        f"--tracking-uri {uri!r}: expected a database URI (sqlite:///mlflow.db, postgresql://...) "
        "or an MLflow server URL (http://host:port)"
    )


def select_runs(reader: StoreReader, *, grid: str | None = None, experiment: str | None = None) -> Selection:
    """The runs of one grid: its experiment (named after it unless `experiment` says otherwise),
    keeping only runs tagged with that grid, so other grids' runs are never mixed in."""
    experiments = reader.experiments()
    if grid is None and experiment is None:
        grids = reader.grids()
        if len(grids) != 1:
            listed = ", ".join(sorted(grids)) or "none"
            raise ReportError(f"give --grid or --experiment: the store holds {len(grids)} grids ({listed})")
        grid = next(iter(grids))
    name = experiment or grid
    if name not in experiments:
        known = ", ".join(sorted(experiments)) or "none"
        flag = "--experiment" if experiment else "--grid"
        raise ReportError(f"{flag} {name!r}: no such experiment in the store (experiments: {known})")
    runs = reader.runs(experiments[name])
    if grid is None:
        grids = sorted({r.grid for r in runs if r.grid})
        if len(grids) > 1:
            raise ReportError(f"--experiment {name!r} holds runs of grids {', '.join(grids)}: add --grid NAME")
        grid = grids[0] if grids else None
    kept = tuple(r for r in runs if grid is None or r.grid == grid)
    if grid is not None and not kept:
        raise ReportError(f"--grid {grid!r}: experiment {name!r} has no runs of this grid")
    return Selection(experiment=name, grid=grid, runs=kept, ignored=len(runs) - len(kept),
                     experiment_tags=reader.experiment_tags(experiments[name]))


def grid_experiment(reader: StoreReader, grid: str | None = None) -> tuple[str, str]:
    """(grid, experiment id) to open in the UI: `grid`, else the store's only grid, else the newest one.

    A grid's experiment is named after it (the default of the grid file's `tracking.experiment`); SQL
    stores number experiments in creation order, so the highest id is the newest.
    """
    experiments = reader.experiments()
    grids = [name for name in reader.grids() if name in experiments]
    if grid is None:
        if not grids:
            raise ReportError("the store holds no grid's runs yet: `resnetctl submit GRID` first")
        grid = max(grids, key=lambda name: int(experiments[name]) if experiments[name].isdigit() else -1)
    elif grid not in experiments:
        known = ", ".join(sorted(grids)) or "none"
        raise ReportError(f"--grid {grid!r}: no such experiment in the store (grids: {known})")
    return grid, experiments[grid]


def runs_page(base_url: str, experiment_id: str) -> str:
    """The MLflow UI page listing an experiment's runs in its model-training view (not the GenAI home)."""
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
