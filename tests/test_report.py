"""`resnetctl report` on a store the test fills through the MLflow client, in the writers' names.

The store has several grids (CIFAR Table 6, ImageNet Tables 2-4, a digits grid), several seeds,
a rerun of one cell, a failed run, a never-started seed, a running run, stray runs of another
grid inside an experiment, a deleted run and registered model versions.
"""

from __future__ import annotations

import base64
import csv
import json
import shutil
import sqlite3
import statistics
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestrator import conventions as C
from orchestrator.cli import main
from orchestrator.report import paper
from orchestrator.report.query_client import ClientReader
from orchestrator.report.query_sql import SqlReader
from orchestrator.report.render import to_json
from orchestrator.report.source import select_runs
from orchestrator.report.tables import build_tables

EPOCHS = 3
CIFAR_GRID = "cifar10-table6"
IMAGENET_GRID = "imagenet-tables"
DIGITS_GRID = "digits-quick"
OTHER_GRID = "cifar10-other"
FAILED_GRID = "all-failed"


def final_cifar_err(depth: int, shortcut: str, seed: int) -> float:
    """Final test error of a CIFAR cell: plain nets get worse with depth, ResNets better."""
    return (6.0 + depth / 20 if shortcut == "plain" else 9.0 - depth / 40) + 0.4 * seed


def _log_cell(client, experiment_id: str, *, grid: str, arch: str, depth: int, shortcut: str, dataset: str,
              seed: int, final: dict[str, float], protocol: str, finished: bool = True, failed: bool = False,
              hours: float = 0.5, responses: int = 0, cell_id: str | None = None, started: bool = True):
    from mlflow.entities import Metric, Param, RunTag

    tags = {C.TAG_GRID: grid, C.TAG_CELL_ID: cell_id or f"{grid}-{arch}-{seed}", C.TAG_ARCH: arch,
            C.TAG_DATASET: dataset, C.TAG_EVAL_PROTOCOL: protocol, C.axis_tag("depth"): str(depth),
            C.axis_tag("shortcut"): shortcut, C.axis_tag("seed"): str(seed)}
    run = client.create_run(experiment_id, run_name=C.run_name(arch, dataset, seed), tags=tags)
    if not started:  # `submit` opens every cell's run SCHEDULED before any trial starts
        client.update_run(run.info.run_id, status="SCHEDULED")
        return run.info.run_id
    now = int(time.time() * 1000)
    params = {C.PARAM_DEPTH: depth, C.PARAM_SHORTCUT: shortcut, C.PARAM_SEED: seed, C.PARAM_DATASET: dataset,
              C.PARAM_NUM_PARAMS: 270_000 * depth // 20, C.PARAM_MULT_ADDS: 41_000_000, "lr": 0.1}
    metrics = []
    epochs = EPOCHS if finished or not failed else 1
    for epoch in range(1, epochs + 1):
        scale = (EPOCHS - epoch) * 10.0  # errors fall towards their final values
        values = {key: value + scale for key, value in final.items()}
        values.update({C.M_TRAIN_ERR: final[C.M_VAL_ERR] - 3 + scale, C.M_TRAIN_LOSS: 1.0 / epoch,
                       C.M_LR: 0.1, C.M_IMAGES_PER_S: 1000.0, C.M_ITERATION: 100.0 * epoch})
        metrics += [Metric(key, value, now + epoch, epoch) for key, value in values.items()]
    if finished:
        metrics += [Metric(C.M_WORKER_HOURS, hours, now, 0), Metric(C.M_GPU_HOURS, hours / 2, now, 0)]
        metrics += [Metric(C.M_LAYER_RESPONSE, (1.0 if shortcut == "plain" else 0.5) + 0.01 * (i % 7), now, i)
                    for i in range(responses)]
        tags = {C.TAG_STATUS: C.STATUS_FINISHED}
    else:
        tags = {}
    client.log_batch(run.info.run_id, metrics=metrics, params=[Param(k, str(v)) for k, v in params.items()],
                     tags=[RunTag(k, v) for k, v in tags.items()])
    client.set_terminated(run.info.run_id, status="FAILED" if failed else "FINISHED" if finished else "RUNNING")
    return run.info.run_id


def fill_store(uri: str, artifacts: Path) -> dict[str, str]:
    """Fill the store (artifacts under `artifacts`, never the cwd); returns run ids the tests look up."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)

    def create_experiment(name: str) -> str:
        return client.create_experiment(name, artifact_location=(artifacts / name).as_uri())
    ids: dict[str, str] = {}
    cifar = create_experiment(CIFAR_GRID)
    # a superseded run (logged first, rerun below) of resnet20-A seed 0 (same cell id): must not count
    ids["stale"] = _log_cell(client, cifar, grid=CIFAR_GRID, arch="resnet20-A", depth=20, shortcut="A",
                             dataset="cifar10", seed=0, final={C.M_TEST_ERR: 55.0, C.M_VAL_ERR: 55.0},
                             protocol=C.EVAL_FULL, hours=9.0, cell_id=f"{CIFAR_GRID}-resnet20-A-0")
    for depth in (20, 56, 110):
        for shortcut in ("plain", "A"):
            arch = f"plain{depth}" if shortcut == "plain" else f"resnet{depth}-A"
            for seed in (0, 1, 2):
                if arch == "plain110":
                    continue  # never planned
                if arch == "resnet110-A" and seed == 2:  # missing: never started
                    _log_cell(client, cifar, grid=CIFAR_GRID, arch=arch, depth=depth, shortcut=shortcut,
                              dataset="cifar10", seed=seed, final={}, protocol=C.EVAL_FULL, started=False)
                    continue
                err = final_cifar_err(depth, shortcut, seed)
                failed = arch == "resnet56-A" and seed == 2
                ids[f"{arch}-s{seed}"] = _log_cell(
                    client, cifar, grid=CIFAR_GRID, arch=arch, depth=depth, shortcut=shortcut, dataset="cifar10",
                    seed=seed, final={C.M_TEST_ERR: err, C.M_VAL_ERR: err + 0.5, C.M_TEST_TOP5_ERR: 0.3,
                                      C.M_VAL_TOP5_ERR: 0.4},
                    protocol=C.EVAL_FULL, finished=not failed, failed=failed, responses=depth - 2,
                    hours=0.1 * depth / 20,
                )
    # a stray run of another grid inside this experiment
    _log_cell(client, cifar, grid=OTHER_GRID, arch="resnet20-A", depth=20, shortcut="A", dataset="cifar10", seed=0,
              final={C.M_TEST_ERR: 77.0, C.M_VAL_ERR: 77.0}, protocol=C.EVAL_FULL, hours=100.0)
    other = create_experiment(OTHER_GRID)
    _log_cell(client, other, grid=OTHER_GRID, arch="resnet32-A", depth=32, shortcut="A", dataset="cifar10", seed=0,
              final={C.M_TEST_ERR: 66.0, C.M_VAL_ERR: 66.0}, protocol=C.EVAL_FULL)

    imagenet = create_experiment(IMAGENET_GRID)
    for arch, depth, shortcut, top1 in (("plain18", 18, "plain", 30.0), ("resnet18-A", 18, "A", 29.0),
                                        ("plain34", 34, "plain", 31.0), ("resnet34-A", 34, "A", 26.0),
                                        ("resnet34-B", 34, "B", 25.5), ("resnet50-B", 50, "B", 24.0)):
        ids[arch] = _log_cell(client, imagenet, grid=IMAGENET_GRID, arch=arch, depth=depth, shortcut=shortcut,
                              dataset="imagenet", seed=0, final={C.M_VAL_ERR: top1, C.M_VAL_TOP5_ERR: top1 / 3},
                              protocol=C.EVAL_CENTER, hours=2.0)
    ids["resnet50-B-multiscale"] = _log_cell(
        client, imagenet, grid=IMAGENET_GRID, arch="resnet50-B", depth=50, shortcut="B", dataset="imagenet", seed=0,
        final={C.M_VAL_ERR: 21.0, C.M_VAL_TOP5_ERR: 5.5}, protocol=C.EVAL_MULTISCALE, hours=3.0,
        cell_id="resnet50-B-multiscale")

    digits = create_experiment(DIGITS_GRID)
    for depth in (8, 14):
        for shortcut in ("plain", "A"):
            for seed in (0, 1):
                arch = f"plain{depth}" if shortcut == "plain" else f"resnet{depth}-A"
                _log_cell(client, digits, grid=DIGITS_GRID, arch=arch, depth=depth, shortcut=shortcut,
                          dataset="digits", seed=seed, final={C.M_TEST_ERR: depth / 2 + seed, C.M_VAL_ERR: 1.0},
                          protocol=C.EVAL_FULL, finished=not (depth == 14 and shortcut == "A" and seed == 1))

    failed = create_experiment(FAILED_GRID)
    _log_cell(client, failed, grid=FAILED_GRID, arch="resnet20-A", depth=20, shortcut="A", dataset="cifar10",
              seed=0, final={C.M_TEST_ERR: 90.0, C.M_VAL_ERR: 90.0}, protocol=C.EVAL_FULL, finished=False,
              failed=True)

    client.create_registered_model("cifar10-resnet56-A")
    client.create_model_version("cifar10-resnet56-A", "file:///tmp/model", run_id=ids["resnet56-A-s0"])
    client.create_model_version("cifar10-resnet56-A", "file:///tmp/model", run_id=ids["resnet56-A-s1"])
    deleted = client.create_run(create_experiment("deleted-grid"), tags={C.TAG_GRID: "deleted-grid"})
    client.delete_run(deleted.info.run_id)
    return ids


@pytest.fixture(scope="session")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("report-store") / "mlflow.db"
    uri = f"sqlite:///{path}"
    ids = fill_store(uri, path.parent / "artifacts")
    return uri, ids, path


def _report(uri: str, *args: str):
    return CliRunner().invoke(main, ["report", "--tracking-uri", uri, *args])


def _md_rows(text: str, title: str) -> dict[str, list[str]]:
    """The rows of one Markdown table (by its title), keyed by the first column."""
    section = text.split(f"## {title}", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = dict(zip(header, cells, strict=True))
    return rows


def _expected(arch_depth: int, shortcut: str, seeds) -> tuple[float, float, float]:
    values = [final_cifar_err(arch_depth, shortcut, s) for s in seeds]
    return min(values), statistics.fmean(values), statistics.stdev(values)


def test_table6_markdown_numbers_means_paper_column_and_empty_marks(store):
    uri, _, _ = store
    result = _report(uri, "--grid", CIFAR_GRID)
    assert result.exit_code == 0, result.output
    rows = _md_rows(result.output, "Table 6: CIFAR-10 test error (%)")
    assert list(rows) == ["20", "32", "44", "56", "110", "1202"]  # the paper's row order
    best, mean, std = _expected(20, "A", (0, 1, 2))  # the superseded rerun (55 %) does not count
    assert rows["20"]["ResNet err"].startswith(f"{best:.2f} ({mean:.2f}±{std:.2f}, ")
    assert rows["20"]["ResNet err"] == "8.50 (8.90±0.40, [7.91, 9.89], n=3) ?"  # wider than ±0.5: undecided
    assert rows["20"]["ResNet err (paper)"] == "8.75"
    assert rows["20"]["Δ ResNet"] == f"{best - 8.75:+.2f}"
    assert rows["20"]["plain err"] == "7.00 (7.40±0.40, [6.41, 8.39], n=3)"  # no paper number: no verdict
    assert rows["20"]["plain err (paper)"] == "–"  # the paper tabulates no plain CIFAR errors
    assert rows["56"]["ResNet err"] == "7.60 (7.80±0.28, [5.26, 10.34], n=2) ?"  # seed 2 failed: two seeds only
    assert rows["56"]["runs"] == "5/6"
    assert rows["110"]["ResNet err (paper)"] == "6.43 (6.61±0.16, n=5)"
    assert rows["110"]["ResNet err"] == "6.25 (6.45±0.28, [3.91, 8.99], n=2) ?"
    assert rows["110"]["plain err"] == "–"
    assert [rows["32"][k] for k in ("ResNet err", "plain err", "Δ ResNet", "runs")] == ["–"] * 4
    assert rows["32"]["ResNet err (paper)"] == "7.51" and rows["1202"]["params (paper)"] == "19.4M"
    # each cell's cost beside it: its three finished runs' own gpu_hours (0.05 each), summed
    assert rows["20"]["plain cost"] == "0.15 GPU-h" and rows["20"]["ResNet cost"] == "0.15 GPU-h"
    assert rows["56"]["ResNet cost"] == "0.28 GPU-h"  # two finished seeds: the failed one logged no hours
    assert rows["32"]["ResNet cost"] == "–"
    assert "missing: 2 planned cell(s) without a finished run: resnet56-A (1), resnet110-A (1)" in result.output
    assert "not in this grid: resnet32-A, resnet44-A, resnet1202-A" in result.output
    assert "compute: 3.10 worker-hours, 1.55 GPU-hours" in result.output
    assert "full image (no crop)" in result.output and "paper: CIFAR-10 test set" in result.output
    assert "77.00" not in result.output and "66.00" not in result.output  # other grid's runs
    cells = _md_rows(result.output, "Cells: final errors and compute per run")
    assert cells["resnet56-A-cifar10-s2"]["status"] == "FAILED"
    assert cells["resnet56-A-cifar10-s0"]["model"] == "cifar10-resnet56-A v1"
    assert "1 failed (resnet56-A-cifar10-s2)" in result.output and "1 superseded" in result.output


def test_json_has_raw_means_stds_paper_and_nulls(store):
    uri, _, _ = store
    result = _report(uri, "--grid", CIFAR_GRID, "--format", "json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["grid"] == CIFAR_GRID and doc["runs"] == 16  # 14 cells, a superseded run, a SCHEDULED one
    table6 = next(t for t in doc["tables"] if t["key"] == "table6")
    row56 = dict(zip(table6["columns"], table6["rows"][3], strict=True))
    best, mean, std = _expected(56, "A", (0, 1))
    assert row56["ResNet err"]["n"] == 2
    assert row56["ResNet err"]["best"] == pytest.approx(best)
    assert row56["ResNet err"]["mean"] == pytest.approx(mean)
    assert row56["ResNet err"]["std"] == pytest.approx(std)
    assert row56["ResNet err (paper)"]["best"] == 6.97 and row56["plain err (paper)"] is None
    row1202 = dict(zip(table6["columns"], table6["rows"][5], strict=True))
    assert row1202["ResNet err"] is None and row1202["ResNet err (paper)"]["best"] == 7.93
    assert table6["missing"] == 2
    assert table6["worker_hours"] == pytest.approx(sum(0.1 * d / 20 * n for d, n in ((20, 6), (56, 5), (110, 2))))


def test_csv_files_per_table_with_empty_cells(store, tmp_path):
    uri, _, _ = store
    result = _report(uri, "--grid", CIFAR_GRID, "--format", "csv", "--out", str(tmp_path), "--no-figures")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cells.csv", "claims.csv", "table6.csv"]
    with (tmp_path / "table6.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["layers"] for r in rows] == ["20", "32", "44", "56", "110", "1202"]
    assert rows[4]["ResNet err (paper)"] == "6.43 (6.61±0.16, n=5)" and rows[4]["plain err"] == ""
    assert rows[0]["ResNet err"] == "8.50 (8.90±0.40, [7.91, 9.89], n=3) undecided"


def test_latex_keeps_the_paper_row_order_and_escapes(store):
    uri, _, _ = store
    result = _report(uri, "--grid", IMAGENET_GRID, "--format", "latex")
    assert result.exit_code == 0, result.output
    table3 = result.output.split(r"\label{tab:table2-center}", 1)[1].split(r"\label{tab:table3-center}")[0]
    body = table3.split(r"\midrule", 1)[1].split(r"\bottomrule")[0]
    labels = [line.split(" & ")[0] for line in body.strip().splitlines()]
    assert labels == [row.label for row in paper.TABLE3]
    assert r"\begin{tabular}{lrrrrrrrr}" in table3 and r"\toprule" in table3
    assert r"ResNet-50 & 24.00 (n=1) ? & 22.85 & +1.15 & 8.00 (n=1) ? & 6.71 & +1.29 & 1/1 & 1.00 GPU-h \\" in body
    assert r"ResNet-101 & -- & 21.75 & -- & -- & 6.05" in body
    assert r"val\_err" in table3 and "%" not in table3.replace(r"\%", "")
    assert r"\$" not in result.output and result.output.count(r"\begin{table}") == result.output.count(r"\end{table}")


def test_imagenet_tables_state_protocols_and_keep_table4_to_multiscale_runs(store):
    uri, _, _ = store
    result = _report(uri, "--grid", IMAGENET_GRID)
    assert result.exit_code == 0, result.output
    table2 = _md_rows(result.output, "Table 2: ImageNet top-1 error (%), plain vs ResNet")
    assert list(table2) == ["plain-18", "ResNet-18", "plain-34", "ResNet-34"]
    assert table2["ResNet-34"]["top-1 err"] == "26.00 (n=1) ?" and table2["ResNet-34"]["top-1 (paper)"] == "25.03"
    table3 = _md_rows(result.output, "Table 3: ImageNet error (%), deeper ResNets and shortcut options")
    assert table3["ResNet-50"]["top-1 err"] == "24.00 (n=1) ?"  # centre-crop run only, not the multi-scale one
    assert table3["ResNet-34 C"]["top-1 err"] == "–"
    table4 = _md_rows(result.output, "Table 4: ImageNet single-model error (%), multi-scale")
    assert table4["ResNet-50"]["top-1 err"] == "21.00 (n=1) ?" and table4["ResNet-50"]["top-1 (paper)"] == "20.74"
    assert table4["ResNet-50"]["top-5 err"] == "5.50 (n=1) ?" and table4["ResNet-50"]["Δ top-5"] == "+0.25"
    assert table4["ResNet-34 B"]["top-1 err"] == "–"
    sections = result.output.split("\n## ")
    assert "single centre crop (not the paper's protocol); paper: ImageNet validation, 10-crop" in sections[1]
    assert "fully-convolutional multi-scale testing; paper:" in sections[3]
    assert "Table 6" not in result.output


def test_pivot_for_any_grid(store):
    uri, _, _ = store
    result = _report(uri, "--grid", DIGITS_GRID, "--rows", "depth", "--cols", "shortcut")
    assert result.exit_code == 0, result.output
    rows = _md_rows(result.output, "test_err (%) by depth x shortcut")
    assert list(rows) == ["8", "14"]  # numeric order
    assert rows["8"]["shortcut=plain"] == "4.00 (4.50±0.71, [-1.85, 10.85], n=2)"  # no paper number: no verdict
    assert rows["14"]["shortcut=A"] == "7.00 (n=1)"  # the running seed does not count ...
    assert "missing: 1 planned cell(s)" in result.output  # ... and is counted as missing
    result = _report(uri, "--grid", CIFAR_GRID, "--rows", "shortcut", "--cols", "depth", "--metric", "val_err")
    rows = _md_rows(result.output, "val_err (%) by shortcut x depth")
    assert rows["A"]["depth=110"] == "6.75 (6.95±0.28, [4.41, 9.49], n=2)" and rows["plain"]["depth=110"] == "–"


def test_cells_with_their_own_seed_counts_are_not_reported_missing(tmp_path):
    """examples/cifar10-table6.yaml runs ResNet-110 with 5 seeds and the others with 1: all finished, none missing."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("uneven", artifact_location=(tmp_path / "a").as_uri())
    cells = [("resnet20-A", 20, 0)] + [("resnet110-A", 110, seed) for seed in range(5)]
    for arch, depth, seed in cells:
        _log_cell(client, experiment, grid="uneven", arch=arch, depth=depth, shortcut="A", dataset="cifar10",
                  seed=seed, final={C.M_TEST_ERR: 7.0, C.M_VAL_ERR: 7.0}, protocol=C.EVAL_FULL)
    result = _report(uri, "--grid", "uneven")
    assert result.exit_code == 0, result.output
    rows = _md_rows(result.output, "Table 6: CIFAR-10 test error (%)")
    assert rows["20"]["runs"] == "1/1" and rows["110"]["runs"] == "5/5"
    assert "missing" not in result.output


def test_grids_without_finished_runs_report_empty_marks_not_crashes(store):
    uri, _, _ = store
    result = _report(uri, "--grid", FAILED_GRID)
    assert result.exit_code == 0, result.output
    rows = _md_rows(result.output, "Table 6: CIFAR-10 test error (%)")
    assert rows["20"]["ResNet err"] == "–" and rows["20"]["runs"] == "0/1" and rows["20"]["ResNet err (paper)"] == "8.75"
    assert "missing: 1 planned cell(s) without a finished run: resnet20-A (1)" in result.output
    assert "0 finished, 1 failed (resnet20-A-cifar10-s0)" in result.output
    empty = _report(uri, "--experiment", "Default", "--format", "json")
    assert empty.exit_code == 0, empty.output
    assert json.loads(empty.output)["runs"] == 0


def test_html_is_one_self_contained_page_with_figures(store, tmp_path):
    uri, _, _ = store
    result = _report(uri, "--grid", CIFAR_GRID, "--format", "html", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]
    page = (tmp_path / "report.html").read_text()
    images = page.split('src="data:image/png;base64,')[1:]
    assert len(images) == 2  # Fig. 6 curves and Fig. 7 layer responses
    for image in images:
        png = base64.b64decode(image.split('"', 1)[0])
        assert png.startswith(b"\x89PNG") and len(png) > 5000
    assert "http://" not in page and "https://" not in page and "<link" not in page
    assert "<td>8.50 (8.90±0.40, [7.91, 9.89], n=3) ?</td>" in page and "<td>–</td>" in page


def test_markdown_with_out_shows_each_figure_with_its_caption(store, tmp_path):
    uri, _, _ = store
    result = _report(uri, "--grid", CIFAR_GRID, "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    text = (tmp_path / "report.md").read_text()
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == ["fig6_cifar10_curves.png", "fig7_cifar10_layer_responses.png"]
    assert all(f"]({name})" in text for name in pngs)  # beside the report, linked by a relative path
    assert "_Fig. 6 (CIFAR-10 training curves), ours on cifar10" in text
    assert "Runs: plain20 (seeds 0, 1, 2), plain56 (seeds 0, 1, 2), resnet20-A (seeds 0, 1, 2)" in text


def test_a_price_turns_each_cells_gpu_hours_into_money(store):
    uri, _, _ = store
    result = _report(uri, "--grid", CIFAR_GRID, "--price-per-gpu-hour", "2.5")
    assert result.exit_code == 0, result.output
    rows = _md_rows(result.output, "Table 6: CIFAR-10 test error (%)")
    assert rows["20"]["ResNet cost"] == "0.15 GPU-h (cost 0.38)"  # 3 runs x 0.05 GPU-h x 2.5
    assert "compute: 3.10 worker-hours, 1.55 GPU-hours, cost 3.88" in result.output
    doc = json.loads(_report(uri, "--grid", CIFAR_GRID, "--format", "json", "--price-per-gpu-hour", "2.5").output)
    table6 = next(t for t in doc["tables"] if t["key"] == "table6")
    row110 = dict(zip(table6["columns"], table6["rows"][4], strict=True))
    assert row110["ResNet cost"] == {"runs": 2, "device": "gpu", "worker_hours": pytest.approx(1.1),
                                     "gpu_hours": pytest.approx(0.55), "cpu_worker_hours": 0.0,
                                     "price_per_gpu_hour": 2.5, "money": pytest.approx(1.375)}
    assert row110["plain cost"] is None  # no finished run: an empty mark, not zero


def test_figures_have_the_papers_lines(store):
    from orchestrator.report.figures import build_figures

    uri, _, _ = store
    reader = SqlReader(uri)
    figures = build_figures(select_runs(reader, grid=CIFAR_GRID).runs, reader)
    assert sorted(figures) == ["fig6_cifar10_curves", "fig7_cifar10_layer_responses"]
    plain, resnet = figures["fig6_cifar10_curves"].axes
    assert len(plain.get_lines()) == 4 and len(resnet.get_lines()) == 6  # train + test per network
    for line in resnet.get_lines():
        assert line.get_linestyle() == ("--" if line.get_label().endswith(C.M_TRAIN_ERR) else "-")
        assert list(line.get_xdata()) == [100.0, 200.0, 300.0]  # iterations, not epochs
    (test56,) = [ln for ln in resnet.get_lines() if ln.get_label() == "resnet56-A test_err"]
    assert list(test56.get_ydata()) == pytest.approx([27.8, 17.8, 7.8])  # mean of the two finished seeds
    imagenet = build_figures(select_runs(reader, grid=IMAGENET_GRID).runs, reader)
    assert sorted(imagenet) == ["fig4_imagenet_curves"]
    plain, resnet = imagenet["fig4_imagenet_curves"].axes
    assert len(plain.get_lines()) == 4 and len(resnet.get_lines()) == 10  # resnet50-B: centre and multiscale
    assert {ln.get_label() for ln in resnet.get_lines()} >= {"resnet50-B (center) val_err",
                                                             "resnet50-B (multiscale) val_err"}
    original, ordered = figures["fig7_cifar10_layer_responses"].axes
    assert len(original.get_lines()) == len(ordered.get_lines()) == 5
    (r56,) = [ln for ln in ordered.get_lines() if ln.get_label() == "resnet56-A"]
    assert len(r56.get_ydata()) == 54 and list(r56.get_ydata()) == sorted(r56.get_ydata(), reverse=True)


def test_sql_and_client_paths_give_identical_tables(store):
    uri, _, _ = store
    sql, client = SqlReader(uri), ClientReader(uri)
    assert sql.experiments() == client.experiments()
    assert sql.grids() == client.grids() == {CIFAR_GRID: 16, OTHER_GRID: 2, IMAGENET_GRID: 7, DIGITS_GRID: 8,
                                                                 FAILED_GRID: 1}
    for grid in (CIFAR_GRID, IMAGENET_GRID, DIGITS_GRID):
        a, b = select_runs(sql, grid=grid), select_runs(client, grid=grid)
        assert sorted(a.runs, key=lambda r: r.run_id) == sorted(b.runs, key=lambda r: r.run_id)
        assert to_json(a, build_tables(a)) == to_json(b, build_tables(b))
        ids = [r.run_id for r in a.runs]
        keys = (C.M_TRAIN_ERR, C.M_TEST_ERR, C.M_LAYER_RESPONSE)
        assert sql.histories(ids, keys) == client.histories(ids, keys)


def test_bad_selection_and_unknown_schema_exit_2(store, tmp_path):
    uri, _, path = store
    for args, message in (
        (["--grid", "nope"], "--grid 'nope': no such experiment"),
        (["--experiment", "nope"], "--experiment 'nope': no such experiment"),
        ([], "give --grid or --experiment: the store holds 5 grids"),
        (["--experiment", CIFAR_GRID], f"holds runs of grids {OTHER_GRID}, {CIFAR_GRID}"),
    ):
        result = _report(uri, *args)
        assert result.exit_code == 2 and message in result.output, (args, result.output)
    both = _report(uri, "--experiment", CIFAR_GRID, "--grid", CIFAR_GRID, "--format", "json")
    assert both.exit_code == 0 and json.loads(both.output)["runs"] == 16
    missing = tmp_path / "absent.db"
    result = _report(f"sqlite:///{missing}")
    assert result.exit_code == 2 and "no such SQLite file" in result.output and not missing.exists()
    assert _report("file:///tmp/x").exit_code == 2
    newer = tmp_path / "newer.db"
    shutil.copy(path, newer)
    with sqlite3.connect(newer) as conn:
        conn.execute("UPDATE alembic_version SET version_num = 'ffffffffffff'")
    result = _report(f"sqlite:///{newer}", "--grid", CIFAR_GRID)
    assert result.exit_code == 2 and "MLflow schema revision ffffffffffff is unknown" in result.output


@pytest.mark.slow
def test_a_real_mlflow_server_gives_the_same_report(store, tmp_path):
    from cluster.mlflow_server import start_mlflow_server
    from cluster.net import free_port
    from cluster.processes import stop_process_group

    uri, _, path = store
    copy = tmp_path / "served.db"
    shutil.copy(path, copy)
    server = start_mlflow_server(f"sqlite:///{copy}", state_dir=tmp_path / "server", port=free_port())
    try:
        assert server.url.startswith("http://127.0.0.1:")
        for grid in (CIFAR_GRID, IMAGENET_GRID):
            over_http = _report(server.url, "--grid", grid, "--format", "json")
            direct = _report(uri, "--grid", grid, "--format", "json")
            assert over_http.exit_code == 0, over_http.output
            assert json.loads(over_http.output) == json.loads(direct.output)
        client, sql = ClientReader(server.url), SqlReader(uri)
        ids = [r.run_id for r in select_runs(sql, grid=CIFAR_GRID).runs]
        assert client.histories(ids, (C.M_TEST_ERR,)) == sql.histories(ids, (C.M_TEST_ERR,))
        assert _report(server.url, "--grid", "nope").exit_code == 2
    finally:
        stop_process_group(server.pid)


@pytest.mark.slow
def test_postgresql_store_reads_the_same_as_sqlite(store, tmp_path):
    from cluster.postgres import PostgresServer, find_pg_bin

    if find_pg_bin() is None:
        pytest.skip("Debian's postgresql package is not installed")
    uri, _, _ = store
    pg = PostgresServer.create(tmp_path / "pg").start()
    try:
        fill_store(pg.uri, tmp_path / "artifacts")
        reader = SqlReader(pg.uri)
        assert reader.workspaces and set(reader.grids()) == {CIFAR_GRID, OTHER_GRID, IMAGENET_GRID, DIGITS_GRID,
                                                                      FAILED_GRID}
        for grid in (CIFAR_GRID, IMAGENET_GRID):
            on_pg = _report(pg.uri, "--grid", grid, "--format", "json")
            assert on_pg.exit_code == 0, on_pg.output
            assert json.loads(on_pg.output) == json.loads(_report(uri, "--grid", grid, "--format", "json").output)
        by_sql, by_client = select_runs(reader, grid=CIFAR_GRID), select_runs(ClientReader(pg.uri), grid=CIFAR_GRID)
        assert to_json(by_sql, build_tables(by_sql)) == to_json(by_client, build_tables(by_client))
    finally:
        pg.remove()
