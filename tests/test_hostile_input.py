"""Hostile strings reach the terminal as text (markup and escape sequences shown, passwords redacted), and a
value too large to print is described without building it (issue 13, items 1, 2, 4, 5)."""

from __future__ import annotations

import io
import time
from types import SimpleNamespace

import pytest
from rich.console import Console

from orchestrator import spec as grid_spec
from orchestrator.cells import Cell, TrainConfig
from orchestrator.progress import GridProgress

EVIL_NAME = "evil[/x]\x1b[2J\u202e"
SECRET = "hunter2"


def _cell() -> Cell:
    return Cell(grid="g", arch="resnet8-A", depth=8, shortcut="A", variant="cifar", dataset="digits",
                dataset_path="/data", seed=0, train=TrainConfig(batch_size=64, lr=0.1, epochs=2))


def _bomb(levels: int = 10):
    """Ten levels of ten references to one list: 10^10 values in a few hundred bytes of memory."""
    value: list = [0] * 10
    for _ in range(levels - 1):
        value = [value] * 10
    return value


@pytest.mark.timeout(30)
def test_a_value_in_an_error_message_is_cut_without_building_its_whole_repr():
    started = time.monotonic()
    text = grid_spec._short(_bomb())
    assert len(text) <= 60 and text.startswith("[[")
    assert "..." in grid_spec._short("x" * 10_000_000) and len(grid_spec._short("x" * 10_000_000)) <= 60
    assert time.monotonic() - started < 2


def test_progress_lines_show_markup_and_escape_sequences_as_text():
    out = io.StringIO()
    board = GridProgress([], console=Console(file=out, width=400, color_system=None))
    board.names.update({"x": EVIL_NAME, "y": "[bold]done-cell"})
    board.cell_finished("x", error=f"boom [/red] \x1b]0;title\x07 postgresql://u:{SECRET}@db/mlflow")
    board.cell_finished("y")
    printed = out.getvalue()
    assert "evil[/x]\\x1b[2J\\u202e" in printed and "[bold]done-cell" in printed
    assert "\x1b" not in printed and "\u202e" not in printed
    assert SECRET not in printed and "postgresql://u:***@db/mlflow" in printed


def test_the_plan_table_shows_markup_in_names_as_text(capsys):
    from orchestrator.commands.plan import _print_table

    summary = {"grid": "g[/x]", "experiment": "e\x1b[31m", "max_concurrent_cells": 1, "compute_mult_adds": 1,
               "training_mult_adds_approx": 3, "peak_cpus": 1, "peak_gpus": 0}
    row = {"name": EVIL_NAME, "cell_id": "0" * 12, "resources": {"workers": 1, "cpus": 1, "gpus": 0},
           "mult_adds_per_image": 1, "epochs": 1, "compute_mult_adds": 1}
    _print_table(summary, [row])
    printed = capsys.readouterr().out
    assert "g[/x]" in printed and "e\\x1b[31m" in printed and "evil[/x]" in printed
    assert "\x1b" not in printed


def test_submit_prints_the_store_with_its_password_redacted(monkeypatch, tmp_path, capsys):
    from orchestrator import grid_runner, library_logs, stores, tracking

    uri = f"postgresql+psycopg2://alice:{SECRET}@db.example:5432/mlflow"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(stores, "check_store", lambda uri, **options: None)
    monkeypatch.setattr(library_logs, "route_library_logs", lambda *args, **options: tmp_path / "x.log")
    monkeypatch.setattr(tracking, "ensure_experiment", lambda uri, name: "1")
    monkeypatch.setattr(grid_runner, "_cells_to_run", lambda *args, **options: [])
    spec = SimpleNamespace(name="g", experiment_name="g", tracking=SimpleNamespace(uri=uri),
                           resources=SimpleNamespace(max_concurrent_cells=1))
    assert grid_runner.run_grid(spec, [_cell()], storage_path=str(tmp_path)) == 0
    printed = capsys.readouterr().err
    assert "postgresql+psycopg2://alice:***@db.example:5432/mlflow" in printed and SECRET not in printed


def test_redaction_and_escaping_helpers():
    from resnetctl.redaction import for_rich, printable, redact, redact_uri, shown

    assert redact_uri(f"postgresql://u:{SECRET}@[::1]:5432/db") == "postgresql://u:***@[::1]:5432/db"
    assert redact_uri(f"postgresql://db/m?user=u&password={SECRET}&x=1") == "postgresql://db/m?user=u&password=***&x=1"
    assert redact(f"could not connect to mysql://root:{SECRET}@h/m (refused); http://h:5000 ok") == (
        "could not connect to mysql://root:***@h/m (refused); http://h:5000 ok")
    assert printable("a\x1b[31mb\nc\u202ed\x00") == "a\\x1b[31mb\\nc\\u202ed\\x00"
    assert printable("two\nlines", keep_newlines=True) == "two\nlines"
    assert for_rich("[/x]") == "\\[/x]"
    assert shown(f"{SECRET} stays, sqlite:///x.db too; redis://:{SECRET}@h goes") == (
        f"{SECRET} stays, sqlite:///x.db too; redis://:***@h goes")


def test_the_cli_prints_a_user_error_redacted_and_escaped(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from orchestrator.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "g.yaml").write_text(
        'name: t\ndataset: {name: digits, path: "d\\e]0;owned\\a"}\ngrid: {depth: [8]}\n'
        f"tracking: {{uri: 'postgresql://u:{SECRET}@db/m'}}\n")
    result = CliRunner().invoke(main, ["submit", "g.yaml"])
    assert result.exit_code == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "\x1b" not in result.stderr and "\x07" not in result.stderr
    assert "\\x1b]0;owned\\x07" in result.stderr


def test_a_path_the_file_system_refuses_is_one_line_not_a_traceback(tmp_path):
    """`prepare --root` with a 300-byte component: ENAMETOOLONG from deep inside, shown as one Error line."""
    from click.testing import CliRunner

    from orchestrator.cli import main

    root = tmp_path / ("d" * 300)
    result = CliRunner().invoke(main, ["prepare", "digits", "--root", str(root)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0] == f"Error: {root}: File name too long"
