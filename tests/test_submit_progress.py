"""The progress board and the submit command's option handling (no Ray started)."""

from __future__ import annotations

import io
import pickle

from click.testing import CliRunner
from rich.console import Console

from orchestrator import conventions as cv
from orchestrator.cells import Cell, TrainConfig
from orchestrator.cli import main
from orchestrator.progress import GridProgress


def _cell(depth: int) -> Cell:
    return Cell(grid="g", arch=f"resnet{depth}-A", depth=depth, shortcut="A", variant="cifar", dataset="digits",
                dataset_path="/data", seed=0, train=TrainConfig(batch_size=64, lr=0.1, epochs=2))


def test_progress_counts_best_and_one_line_per_cell():
    cells = [_cell(8), _cell(14), _cell(20)]
    out = io.StringIO()
    board = GridProgress(cells, skipped=1, console=Console(file=out, width=200, color_system=None))
    assert "cells 4: 1 done (1 skipped), 0 running, 3 pending" in board.status_line().plain

    a, b, c = (cell.cell_id for cell in cells)
    board.cell_started(a)
    board.cell_started(b)
    assert "2 running, 1 pending" in board.status_line().plain
    board.cell_result(a, {"epoch": 2, cv.M_TRAIN_ERR: 5.0, cv.M_TEST_ERR: 12.5})
    line = board.cell_finished(a)
    assert "resnet8-A-digits-s0" in line and "test_err 12.50%" in line
    board.cell_result(b, {"epoch": 2, cv.M_TEST_ERR: 9.0})
    board.cell_finished(b)
    board.cell_started(c)
    board.cell_finished(c, error="RuntimeError: worker died\ntraceback")
    status = board.status_line().plain
    assert "3 done (1 skipped), 0 running, 0 pending, 1 failed" in status
    assert "best test_err 9.00% (resnet14-A-digits-s0)" in status
    printed = out.getvalue()
    assert printed.count("done resnet") == 2 and "FAILED resnet20-A-digits-s0: RuntimeError: worker died" in printed


def test_progress_pickles_without_its_terminal():
    board = GridProgress([_cell(8)], console=Console(file=io.StringIO()))
    with board:
        copy = pickle.loads(pickle.dumps(board))
    assert copy.names == board.names and copy._live is None


def _tiny_grid(tmp_path):
    data = tmp_path / "digits"
    data.mkdir()
    (data / "manifest.json").write_text('{"dataset": "digits", "num_classes": 10, "image_size": 32, '
                                        '"splits": {"train": {"file": "train.beton", "count": 1}}}')
    (data / "train.beton").write_bytes(b"")
    grid = tmp_path / "g.yaml"
    grid.write_text(f"name: g\ndataset: {{name: digits, path: {data}}}\ngrid: {{depth: [8]}}\n")
    return grid


def test_detach_without_address_is_a_usage_error(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    grid = _tiny_grid(tmp_path)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["submit", str(grid), "--detach"])
    assert result.exit_code == 2 and "--detach needs --address" in result.output
    assert not (tmp_path / "mlflow.db").exists()


def test_submit_with_an_address_hands_the_validated_grid_and_storage_to_the_cluster(tmp_path, monkeypatch):
    import orchestrator.remote

    calls = []

    def fake_submit(grid_path, spec, cells, **options):
        calls.append((grid_path, spec.name, [c.name for c in cells], options))
        return 0

    monkeypatch.setattr(orchestrator.remote, "submit_to_cluster", fake_submit)
    grid = _tiny_grid(tmp_path)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["submit", str(grid), "--address", "http://127.0.0.1:1", "--detach",
                                       "--storage", "s3://bucket/runs"])
    assert result.exit_code == 0, result.output
    assert calls == [(str(grid), "g", ["resnet8-A-digits-s0"], {"address": "http://127.0.0.1:1", "detach": True,
                                                                 "restart": False, "storage_path": "s3://bucket/runs"})]
    assert not (tmp_path / "mlflow.db").exists()


def test_submit_validates_the_grid_before_anything_else(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    grid = tmp_path / "g.yaml"
    grid.write_text("name: g\ndataset: {name: digits, path: missing}\ngrid: {depth: [8]}\nbogus: 1\n")
    for command in ("submit", "run"):
        result = CliRunner().invoke(main, [command, str(grid)])
        assert result.exit_code == 2, result.output
        assert "bogus" in result.output
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "results").exists()


def test_storage_is_absolute_or_a_uri_and_restart_clears_only_that_cell(tmp_path, monkeypatch):
    from orchestrator.tune_runner import clear_checkpoints, storage_root, train_run_name

    monkeypatch.chdir(tmp_path)
    assert storage_root(None) == str(tmp_path.resolve() / "results")
    assert storage_root("s3://bucket/runs/") == "s3://bucket/runs"
    keep, drop = _cell(8), _cell(14)
    assert train_run_name(drop) == f"resnet14-A-digits-s0-{drop.cell_id}"
    for cell in (keep, drop):
        (tmp_path / "results" / train_run_name(cell) / "checkpoint_x").mkdir(parents=True)
    clear_checkpoints(drop, "results")
    assert [p.name for p in (tmp_path / "results").iterdir()] == [train_run_name(keep)]


def test_progress_in_a_log_file_ends_its_last_status_line():
    """Not a terminal (CI logs, `make demo | tee`): what is printed after the board starts on its own line."""
    out = io.StringIO()
    console = Console(file=out, width=200, color_system=None)
    with GridProgress([_cell(8)], console=console):
        pass
    console.print("grid g: all 1 cells finished")
    assert "\ngrid g: all 1 cells finished" in out.getvalue()
