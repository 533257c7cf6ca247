"""Read an MLflow tracking server (http/https URI) through `MlflowClient`.

The fallback when the store's database is not reachable directly; it returns exactly the
records `query_sql.SqlReader` returns, at the price of the client's per-run objects.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from orchestrator import conventions as cv
from orchestrator.report.query_sql import assemble_histories, newer
from orchestrator.report.records import Histories, ReportError, RunRecord

_PAGE = 10_000


class ClientReader:
    """`StoreReader` over the MLflow REST API (or any tracking URI the client accepts)."""

    def __init__(self, uri: str):
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        self.client = MlflowClient(tracking_uri=uri)
        self._error = MlflowException
        try:
            self._experiments = {e.name: e.experiment_id for e in self._all_experiments()}
        except MlflowException as err:
            raise ReportError(f"--tracking-uri {uri}: {err.message}") from err
        except OSError as err:
            raise ReportError(f"--tracking-uri {uri}: cannot connect ({err})") from err

    def _all_experiments(self):
        token = None
        while True:
            page = self.client.search_experiments(max_results=1000, page_token=token)
            yield from page
            token = page.token
            if not token:
                return

    def _search(self, experiment_ids: list[str], filter_string: str = "", max_results: int = _PAGE):
        token = None
        while True:
            page = self.client.search_runs(experiment_ids, filter_string=filter_string,
                                           max_results=max_results, page_token=token)
            yield from page
            token = page.token
            if not token or len(page) == 0:
                return

    def experiments(self) -> dict[str, str]:
        return dict(self._experiments)

    def grids(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        ids = list(self._experiments.values())
        for start in range(0, len(ids), 100):  # the server caps experiment ids per search
            for run in self._search(ids[start:start + 100], f"tags.`{cv.TAG_GRID}` LIKE '%'"):
                grid = run.data.tags.get(cv.TAG_GRID)
                counts[grid] = counts.get(grid, 0) + 1
        return counts

    def experiment_tags(self, experiment_id: str) -> dict[str, str]:
        return dict(self.client.get_experiment(experiment_id).tags)

    def runs(self, experiment_id: str) -> list[RunRecord]:
        found = list(self._search([experiment_id]))
        versions: dict[str, list[tuple[str, int]]] = {}
        run_ids = [run.info.run_id for run in found]
        for start in range(0, len(run_ids), 100):
            quoted = ", ".join(f"'{r}'" for r in run_ids[start:start + 100])
            token = None
            while True:
                page = self.client.search_model_versions(f"run_id IN ({quoted})", page_token=token)
                for mv in page:
                    versions.setdefault(mv.run_id, []).append((mv.name, int(mv.version)))
                token = page.token
                if not token:
                    break
        return [
            RunRecord(
                run_id=run.info.run_id, name=run.info.run_name or "", experiment_id=str(experiment_id),
                status=run.info.status, start_time=run.info.start_time, end_time=run.info.end_time,
                tags=dict(run.data.tags), params=dict(run.data.params),
                metrics={k: float(v) for k, v in run.data.metrics.items()},
                model_versions=tuple(f"{n} v{v}" for n, v in sorted(versions.get(run.info.run_id, []))),
            )
            for run in found
        ]

    def histories(self, run_ids: Sequence[str], keys: Sequence[str]) -> Histories:
        latest: dict[tuple[str, str, int], tuple[int, float]] = {}
        for run_id in run_ids:
            for key in keys:
                for m in self.client.get_metric_history(run_id, key):
                    point = (m.timestamp, math.nan if m.value is None else float(m.value))
                    slot = (run_id, key, int(m.step))
                    if slot not in latest or newer(point, latest[slot]):
                        latest[slot] = point
        return assemble_histories((r, k, s, v) for (r, k, s), (_, v) in latest.items())
