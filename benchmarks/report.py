"""Benchmark: `resnetctl report` via SQL against the same tables built with mlflow.search_runs.

Builds a SQLite MLflow store with 10,000 finished runs (10 CIFAR networks x 1,000 seeds, each with
per-epoch metrics and one layer-response value per 3x3 conv, and the grid's claims as the experiment
tag `submit` writes) by direct SQL that mirrors what MLflow writes, checks that MLflow reads it back,
then times, in one process:

  sql          the report's SQL path (open store, select runs, all tables with their intervals and
               verdicts, every claim's t-test, Markdown)
  client       the report's MLflow-client path (MlflowClient.search_runs pages), the same report
  search_runs  mlflow.search_runs(...) as a pandas DataFrame turned into the same report

and prints each, the ratios and the whole `resnetctl report` process. Target: sql < 2 s at 10,000
runs and >= 10x faster than search_runs.

    .venv/bin/python benchmarks/report.py [--runs 10000] [--epochs 20] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from orchestrator import conventions as cv  # noqa: E402
from orchestrator.claims import settings_json  # noqa: E402
from orchestrator.report.records import RunRecord, Selection  # noqa: E402
from orchestrator.report.render import to_markdown  # noqa: E402
from orchestrator.report.source import open_reader, select_runs  # noqa: E402
from orchestrator.report.verdicts import build_report  # noqa: E402

GRID = "bench-table6"
CLAIMS = ["resnet110-A < plain110", "resnet20-A < resnet32-A"]  # the grid's own claims, beside the paper's
TARGET_S = 2.0
ARCHS = [(d, s) for s in ("plain", "A") for d in (20, 32, 44, 56, 110)]


def build_store(db: Path, runs: int, epochs: int) -> tuple[str, list[str]]:
    """Create the schema with MLflow, then bulk-insert runs exactly as MLflow lays them out."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{db}"
    client = MlflowClient(tracking_uri=uri)  # runs MLflow's migrations: the schema is MLflow's own
    experiment_id = int(client.create_experiment(GRID, artifact_location=(db.parent / "artifacts").as_uri()))
    rng = random.Random(0)
    now = int(time.time() * 1000)
    run_rows, tag_rows, param_rows, metric_rows, latest_rows, ids = [], [], [], [], [], []
    for index in range(runs):
        depth, shortcut = ARCHS[index % len(ARCHS)]
        seed = index // len(ARCHS)
        arch = f"plain{depth}" if shortcut == "plain" else f"resnet{depth}-{shortcut}"
        run_id, name = uuid.uuid4().hex, cv.run_name(arch, "cifar10", seed)
        ids.append(run_id)
        start = now + index * 10
        run_rows.append((run_id, name, "UNKNOWN", "", "", "bench", "FINISHED", start, start + 5, "", "active",
                         f"{(db.parent / 'artifacts').as_uri()}/{run_id}/artifacts", experiment_id))
        tags = {cv.TAG_GRID: GRID, cv.TAG_CELL_ID: f"{arch}-{seed}", cv.TAG_ARCH: arch, cv.TAG_DATASET: "cifar10",
                cv.TAG_EVAL_PROTOCOL: cv.EVAL_FULL, cv.axis_tag("depth"): str(depth),
                cv.axis_tag("shortcut"): shortcut, cv.axis_tag("seed"): str(seed), cv.TAG_STATUS: cv.STATUS_FINISHED,
                "mlflow.runName": name, "mlflow.user": "bench"}
        tag_rows += [(k, v, run_id) for k, v in tags.items()]
        params = {cv.PARAM_DEPTH: depth, cv.PARAM_SHORTCUT: shortcut, cv.PARAM_SEED: seed, cv.PARAM_DATASET: "cifar10",
                  cv.PARAM_NUM_PARAMS: 270_000 * depth // 20, cv.PARAM_MULT_ADDS: 41_000_000 * depth // 20,
                  "lr": 0.1, "batch_size": 128, "momentum": 0.9, "weight_decay": 0.0001}
        param_rows += [(k, str(v), run_id) for k, v in params.items()]
        final = (6 + depth / 20 if shortcut == "plain" else 9 - depth / 40) + rng.gauss(0, 0.2)
        latest: dict[str, tuple] = {}
        for epoch in range(1, epochs + 1):  # history rows; latest_metrics keeps the last step of each key
            gap = (epochs - epoch) * 2.0
            values = {cv.M_TRAIN_LOSS: 2.0 / epoch, cv.M_TRAIN_ERR: final - 3 + gap, cv.M_VAL_ERR: final + 0.3 + gap,
                      cv.M_VAL_TOP5_ERR: 0.5 + gap / 5, cv.M_TEST_ERR: final + gap, cv.M_TEST_TOP5_ERR: 0.4 + gap / 5,
                      cv.M_LR: 0.1, cv.M_IMAGES_PER_S: 2000.0 + rng.random(), cv.M_ITERATION: 391.0 * epoch}
            for key, value in values.items():
                metric_rows.append((key, value, start + epoch, run_id, epoch, 0))
                latest[key] = (key, value, start + epoch, epoch, 0, run_id)
        for key, value in ((cv.M_WORKER_HOURS, 0.01 * depth), (cv.M_GPU_HOURS, 0.005 * depth)):
            latest[key] = (key, value, start + epochs + 1, 0, 0, run_id)
            metric_rows.append((key, value, start + epochs + 1, run_id, 0, 0))
        for layer in range(depth - 2):
            value = (1.0 if shortcut == "plain" else 0.5) + 0.1 * rng.random()
            metric_rows.append((cv.M_LAYER_RESPONSE, value, start + epochs + 1, run_id, layer, 0))
        latest[cv.M_LAYER_RESPONSE] = (cv.M_LAYER_RESPONSE, value, start + epochs + 1, depth - 3, 0, run_id)
        mean = (1.0 if shortcut == "plain" else 0.5) + 0.05  # the writer logs the responses' mean beside them
        latest[cv.M_LAYER_RESPONSE_MEAN] = (cv.M_LAYER_RESPONSE_MEAN, mean, start + epochs + 1, 0, 0, run_id)
        metric_rows.append((cv.M_LAYER_RESPONSE_MEAN, mean, start + epochs + 1, run_id, 0, 0))
        latest_rows += latest.values()
    with sqlite3.connect(db) as conn:
        conn.executemany(
            "INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, user_id, status, "
            "start_time, end_time, source_version, lifecycle_stage, artifact_uri, experiment_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", run_rows)
        conn.executemany("INSERT INTO tags (key, value, run_uuid) VALUES (?, ?, ?)", tag_rows)
        conn.executemany("INSERT INTO params (key, value, run_uuid) VALUES (?, ?, ?)", param_rows)
        conn.executemany("INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan) "
                         "VALUES (?, ?, ?, ?, ?, ?)", metric_rows)
        conn.executemany("INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid) "
                         "VALUES (?, ?, ?, ?, ?, ?)", latest_rows)
        conn.execute("INSERT INTO experiment_tags (key, value, experiment_id) VALUES (?, ?, ?)",
                     (cv.verdicts_tag(GRID), settings_json(CLAIMS, 0.5, 0.05), experiment_id))
    print(f"store: {runs} runs, {len(metric_rows)} metric rows, {len(tag_rows)} tags, {len(param_rows)} params")
    return uri, ids


def verify_through_mlflow(uri: str, ids: list[str], runs: int, epochs: int) -> None:
    """The bulk-inserted store must read back through MLflow exactly as if MLflow had logged it."""
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(GRID)
    found = client.search_runs([experiment.experiment_id], f"tags.`{cv.TAG_GRID}` = '{GRID}'", max_results=50_000)
    assert len(found) == runs, len(found)
    run = client.get_run(ids[7])
    assert run.info.status == "FINISHED" and run.data.tags[cv.TAG_STATUS] == cv.STATUS_FINISHED
    assert run.data.params[cv.PARAM_DEPTH] == str(ARCHS[7][0])
    history = client.get_metric_history(ids[7], cv.M_TEST_ERR)
    assert [m.step for m in history] == list(range(1, epochs + 1))
    assert history[-1].value == run.data.metrics[cv.M_TEST_ERR]
    assert len(client.get_metric_history(ids[7], cv.M_LAYER_RESPONSE)) == ARCHS[7][0] - 2
    mlflow.set_tracking_uri(uri)
    assert len(mlflow.search_runs([experiment.experiment_id])) == runs
    print("verified: search_runs, get_run, get_metric_history read the bulk-inserted store back")


def _markdown(selection: Selection, histories=None) -> str:
    return to_markdown(selection, build_report(selection, histories).tables)


def report_sql(uri: str) -> str:
    reader = open_reader(uri)
    return _markdown(select_runs(reader, grid=GRID), reader.histories)


def report_client(uri: str) -> str:
    from orchestrator.report.query_client import ClientReader

    reader = ClientReader(uri)
    return _markdown(select_runs(reader, grid=GRID), reader.histories)


def report_search_runs(uri: str) -> str:
    """The same tables, from the DataFrame `mlflow.search_runs` returns."""
    import math

    import mlflow

    mlflow.set_tracking_uri(uri)
    experiment = mlflow.get_experiment_by_name(GRID)
    frame = mlflow.search_runs([experiment.experiment_id], filter_string=f"tags.`{cv.TAG_GRID}` = '{GRID}'",
                               max_results=50_000)
    records = []
    for row in frame.to_dict("records"):
        def section(prefix: str, row=row) -> dict:
            return {k[len(prefix):]: v for k, v in row.items() if k.startswith(prefix)
                    and v is not None and not (isinstance(v, float) and math.isnan(v))}
        records.append(RunRecord(
            run_id=row["run_id"], name=row.get("tags.mlflow.runName") or "", experiment_id=row["experiment_id"],
            status=row["status"], start_time=int(row["start_time"].timestamp() * 1000),
            end_time=int(row["end_time"].timestamp() * 1000), tags=section("tags."), params=section("params."),
            metrics={k: float(v) for k, v in section("metrics.").items()},
        ))
    selection = Selection(experiment=GRID, grid=GRID, runs=tuple(records), experiment_tags=experiment.tags)
    return _markdown(selection)


def timed(fn, uri: str, repeat: int) -> tuple[float, float, str]:
    """Best wall-clock seconds of `repeat` calls, the CPU seconds of that call (what a loaded machine
    inflates least), and the text."""
    best, cpu, text = float("inf"), 0.0, ""
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        text = fn(uri)
        if time.perf_counter() - start < best:
            best, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    return best, cpu, text


def timed_cli(uri: str) -> tuple[float, float]:
    """`resnetctl report` in a new process (imports included): wall and CPU seconds."""
    import resource

    cli = [str(Path(sys.executable).with_name("resnetctl")), "report", "--tracking-uri", uri, "--grid", GRID]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cli, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", type=Path, default=None,
                        help="build the store here and keep it (a store already there is reused as it is)")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="report-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        uri = f"sqlite:///{root / 'mlflow.db'}"
        if not (root / "mlflow.db").exists():
            start = time.perf_counter()
            uri, ids = build_store(root / "mlflow.db", args.runs, args.epochs)
            print(f"built in {time.perf_counter() - start:.1f} s")
            verify_through_mlflow(uri, ids, args.runs, args.epochs)
        import scipy.stats  # noqa: F401  (imported once per process; the CLI line below includes it)

        sql_s, sql_cpu, sql_text = timed(report_sql, uri, args.repeat)
        client_s, client_cpu, client_text = timed(report_client, uri, 1)  # the slow alternatives: once
        search_s, search_cpu, search_text = timed(report_search_runs, uri, 1)
        assert sql_text == client_text, "SQL and client paths disagree"
        table6 = sql_text.split("## Cells")[0]
        assert table6 == search_text.split("## Cells")[0], "SQL and search_runs tables disagree"
        print(f"report via SQL           : {sql_s:8.3f} s, CPU {sql_cpu:.3f} s  (best of {args.repeat}; "
              f"{len(sql_text)} chars)")
        print(f"same report, MlflowClient: {client_s:8.3f} s, CPU {client_cpu:.3f} s  "
              f"({client_cpu / sql_cpu:5.1f}x the SQL path's CPU)")
        print(f"same report, search_runs : {search_s:8.3f} s, CPU {search_cpu:.3f} s  "
              f"({search_cpu / sql_cpu:5.1f}x the SQL path's CPU)")
        from orchestrator.report.figures import build_figures, png_bytes

        start = time.perf_counter()
        reader = open_reader(uri)
        drawn = {name: png_bytes(fig) for name, fig in build_figures(select_runs(reader, grid=GRID).runs,
                                                                     reader).items()}
        print(f"figures (not in target)  : {time.perf_counter() - start:8.3f} s  ({', '.join(drawn)})")
        cli_s, cli_cpu = timed_cli(uri)
        print(f"`resnetctl report` CLI   : {cli_s:8.3f} s, CPU {cli_cpu:.3f} s  (new process, imports included)")
        print(f"target: SQL < {TARGET_S:g} s at {args.runs:,} runs: {'yes' if sql_s < TARGET_S else 'NO'} "
              f"(CPU: {'yes' if sql_cpu < TARGET_S else 'NO'}); >= 10x faster than search_runs: "
              f"{'yes' if search_s / sql_s >= 10 else 'NO'} (CPU: {'yes' if search_cpu / sql_cpu >= 10 else 'NO'})")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
