"""Read a database-backed MLflow store (SQLite, PostgreSQL) with a few set-based SQL queries.

MLflow's own `search_runs` builds an ORM object per run, tag, param and metric; the report
only needs flat rows, so it reads the tables MLflow writes (experiments, runs, tags, params,
latest_metrics, metrics, model_versions) in one query each. The schema revision is checked
first (see `schema`), so a changed table layout fails loudly instead of reading wrong columns.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import column, table

from orchestrator import conventions as cv
from orchestrator.report.records import Histories, ReportError, RunRecord
from orchestrator.report.schema import check_revision, has_workspaces

DEFAULT_WORKSPACE = "default"
DELETED_MODEL_STAGE = "Deleted_Internal"
_CHUNK = 500  # run ids per IN (...) list, well under every backend's bound-parameter limit

experiments = table("experiments", column("experiment_id"), column("name"), column("lifecycle_stage"),
                    column("workspace"))
runs = table("runs", column("run_uuid"), column("name"), column("experiment_id"), column("status"),
             column("start_time"), column("end_time"), column("lifecycle_stage"))
tags = table("tags", column("run_uuid"), column("key"), column("value"))
experiment_tags = table("experiment_tags", column("experiment_id"), column("key"), column("value"))
params = table("params", column("run_uuid"), column("key"), column("value"))
latest_metrics = table("latest_metrics", column("run_uuid"), column("key"), column("value"), column("is_nan"))
metrics = table("metrics", column("run_uuid"), column("key"), column("step"), column("value"),
                column("is_nan"), column("timestamp"))
model_versions = table("model_versions", column("name"), column("version"), column("run_id"),
                       column("current_stage"), column("workspace"))


def is_database_uri(uri: str) -> bool:
    return uri.split(":", 1)[0].split("+", 1)[0] in ("sqlite", "postgresql", "postgres", "mysql", "mssql")


class SqlReader:
    """`StoreReader` over MLflow's tables; one engine, short connections."""

    def __init__(self, uri: str):
        if uri.startswith("sqlite:///"):
            path = uri.removeprefix("sqlite:///")
            if path not in ("", ":memory:") and not Path(path).is_file():
                raise ReportError(f"--tracking-uri {uri}: no such SQLite file {path}")
        try:
            self.engine = sa.create_engine(uri, poolclass=sa.pool.NullPool)
            with self.engine.connect() as conn:
                self.revision = check_revision(conn)
        except sa.exc.ArgumentError as err:
            raise ReportError(f"--tracking-uri {uri}: {err}") from err
        except sa.exc.OperationalError as err:
            raise ReportError(f"--tracking-uri {uri}: cannot connect ({err.orig})") from err
        self.workspaces = has_workspaces(self.revision)

    def _active_runs(self, experiment_id: str):
        return sa.select(runs.c.run_uuid).where(
            runs.c.experiment_id == int(experiment_id), runs.c.lifecycle_stage == "active"
        )

    def experiments(self) -> dict[str, str]:
        query = sa.select(experiments.c.experiment_id, experiments.c.name).where(
            experiments.c.lifecycle_stage == "active"
        )
        if self.workspaces:
            query = query.where(experiments.c.workspace == DEFAULT_WORKSPACE)
        with self.engine.connect() as conn:
            return {name: str(exp_id) for exp_id, name in conn.execute(query)}

    def grids(self) -> dict[str, int]:
        active = sa.select(experiments.c.experiment_id).where(experiments.c.lifecycle_stage == "active")
        if self.workspaces:
            active = active.where(experiments.c.workspace == DEFAULT_WORKSPACE)
        query = (
            sa.select(tags.c.value, sa.func.count())
            .select_from(tags.join(runs, tags.c.run_uuid == runs.c.run_uuid))
            .where(tags.c.key == cv.TAG_GRID, runs.c.lifecycle_stage == "active",
                   runs.c.experiment_id.in_(active))
            .group_by(tags.c.value)
        )
        with self.engine.connect() as conn:
            return {value: count for value, count in conn.execute(query)}

    def experiment_tags(self, experiment_id: str) -> dict[str, str]:
        query = sa.select(experiment_tags.c.key, experiment_tags.c.value).where(
            experiment_tags.c.experiment_id == int(experiment_id))
        with self.engine.connect() as conn:
            return {key: value for key, value in conn.execute(query)}

    def runs(self, experiment_id: str) -> list[RunRecord]:
        active = self._active_runs(experiment_id)
        run_rows = sa.select(runs.c.run_uuid, runs.c.name, runs.c.status, runs.c.start_time,
                             runs.c.end_time).where(runs.c.run_uuid.in_(active))
        by_run: dict[str, dict[str, dict]] = defaultdict(lambda: {"tags": {}, "params": {}, "metrics": {}})
        versions: dict[str, list[tuple[str, int]]] = defaultdict(list)
        with self.engine.connect() as conn:
            head = conn.execute(run_rows).all()
            for run_id, key, value in conn.execute(
                sa.select(tags.c.run_uuid, tags.c.key, tags.c.value).where(tags.c.run_uuid.in_(active))
            ):
                by_run[run_id]["tags"][key] = value
            for run_id, key, value in conn.execute(
                sa.select(params.c.run_uuid, params.c.key, params.c.value).where(params.c.run_uuid.in_(active))
            ):
                by_run[run_id]["params"][key] = value
            for run_id, key, value, is_nan in conn.execute(
                sa.select(latest_metrics.c.run_uuid, latest_metrics.c.key, latest_metrics.c.value,
                          latest_metrics.c.is_nan).where(latest_metrics.c.run_uuid.in_(active))
            ):
                by_run[run_id]["metrics"][key] = math.nan if is_nan else float(value)
            mv = sa.select(model_versions.c.run_id, model_versions.c.name, model_versions.c.version).where(
                model_versions.c.run_id.in_(active), model_versions.c.current_stage != DELETED_MODEL_STAGE
            )
            if self.workspaces:
                mv = mv.where(model_versions.c.workspace == DEFAULT_WORKSPACE)
            for run_id, name, version in conn.execute(mv):
                versions[run_id].append((name, int(version)))
        return [
            RunRecord(
                run_id=run_id, name=name or "", experiment_id=str(experiment_id), status=status,
                start_time=start, end_time=end, tags=by_run[run_id]["tags"], params=by_run[run_id]["params"],
                metrics=by_run[run_id]["metrics"],
                model_versions=tuple(f"{n} v{v}" for n, v in sorted(versions[run_id])),
            )
            for run_id, name, status, start, end in head
        ]

    def histories(self, run_ids: Sequence[str], keys: Sequence[str]) -> Histories:
        latest: dict[tuple[str, str, int], tuple[int, float]] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(run_ids), _CHUNK):
                query = sa.select(metrics.c.run_uuid, metrics.c.key, metrics.c.step, metrics.c.timestamp,
                                  metrics.c.value, metrics.c.is_nan).where(
                    metrics.c.run_uuid.in_(list(run_ids[start:start + _CHUNK])), metrics.c.key.in_(list(keys))
                )
                for run_id, key, step, timestamp, value, is_nan in conn.execute(query):
                    slot = (run_id, key, int(step))
                    point = (timestamp, math.nan if is_nan else float(value))
                    if slot not in latest or newer(point, latest[slot]):
                        latest[slot] = point
        return assemble_histories(((run_id, key, step, value) for (run_id, key, step), (_, value) in latest.items()))


def newer(point: tuple[int, float], than: tuple[int, float]) -> bool:
    """Several values at one step: the last logged wins (ties: the larger value, as MLflow's latest_metrics)."""
    return point[0] > than[0] or (point[0] == than[0] and not point[1] <= than[1])


def assemble_histories(points) -> Histories:
    """(run_id, key, step, value) points -> run -> key -> [(step, value)] sorted by step."""
    out: Histories = defaultdict(lambda: defaultdict(list))
    for run_id, key, step, value in points:
        out[run_id][key].append((step, value))
    return {run_id: {key: sorted(series) for key, series in per_key.items()} for run_id, per_key in out.items()}
