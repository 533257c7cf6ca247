"""`resnetctl plan`: cells, resources and compute (multiply-adds x images x epochs), nothing run."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from models.arch import multiply_adds, resolve_arch
from orchestrator.cli import main

GRID = """\
name: plan-test
dataset: {name: digits, path: data/digits}
grid:
  depth: [8, 20]
  shortcut: [plain, B]
  lr: [0.1, 0.05]
train: {epochs: 4, batch_size: 32}
resources: {workers_per_cell: 2, cpus_per_worker: 0.5, max_concurrent_cells: 3}
"""


def prepared(root: Path, train_count: int) -> None:
    root.mkdir(parents=True)
    (root / "train.beton").write_bytes(b"")
    manifest = {"dataset": "digits", "num_classes": 10, "image_size": 32,
                "splits": {"train": {"count": train_count, "file": "train.beton"}}}
    (root / "manifest.json").write_text(json.dumps(manifest))


def test_plan_json_counts_compute_from_the_prepared_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    prepared(tmp_path / "data" / "digits", train_count=1000)
    Path("grid.yaml").write_text(GRID)
    before = sorted(tmp_path.rglob("*"))
    result = CliRunner().invoke(main, ["plan", "grid.yaml", "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    cells = plan["cells"]
    assert len(cells) == 8 == plan["summary"]["cells"]
    assert len({c["cell_id"] for c in cells}) == 8
    row = next(c for c in cells if c["name"] == "resnet20-B-digits-s0-lr0.05")
    assert row["axes"] == {"depth": 20, "shortcut": "B", "lr": 0.05}
    assert row["resources"] == {"workers": 2, "cpus": 1.0, "gpus": 0}
    assert row["train_images"] == 1000 and row["epochs"] == 4
    assert row["mult_adds_per_image"] == multiply_adds(resolve_arch(20, shortcut="B", variant="cifar", num_classes=10))
    assert row["compute_mult_adds"] == row["mult_adds_per_image"] * 1000 * 4
    assert plan["summary"]["compute_mult_adds"] == sum(c["compute_mult_adds"] for c in cells)
    assert plan["summary"]["peak_cpus"] == 3 * 2 * 0.5
    assert sorted(tmp_path.rglob("*")) == before  # planning writes nothing


def test_plan_converts_iterations_to_epochs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("grid.yaml").write_text(GRID.replace("epochs: 4", "iterations: 500"))
    result = CliRunner().invoke(main, ["plan", "grid.yaml", "--json", "--no-check-data"])
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)["cells"][0]
    # no manifest: the digits default of 1258 training images; 500 iterations x 32 images
    assert row["train_images"] == 1258 and row["epochs"] == round(500 * 32 / 1258, 3)


def test_plan_table_names_every_cell(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    prepared(tmp_path / "data" / "digits", train_count=1000)
    Path("grid.yaml").write_text(GRID)
    result = CliRunner().invoke(main, ["plan", "grid.yaml"])
    assert result.exit_code == 0, result.output
    assert "plan-test: 8 cells" in result.stdout
    for name in ("plain8-digits-s0-lr0.1", "resnet20-B-digits-s0-lr0.05"):
        assert name in result.stdout
    assert "2x0.5cpu" in result.stdout and "At most 3 cells at once" in result.stdout


def test_plan_estimates_before_the_data_is_prepared_and_submit_refuses(tmp_path, monkeypatch):
    """A user plans before downloading 150 GB: plan notes the missing folder and estimates from the usual size."""
    monkeypatch.chdir(tmp_path)
    Path("grid.yaml").write_text(GRID)
    result = CliRunner().invoke(main, ["plan", "grid.yaml", "--json"])
    assert result.exit_code == 0, result.output
    assert f"digits is not prepared yet ({tmp_path.resolve()}/data/digits)" in result.stderr
    assert json.loads(result.stdout)["summary"]["cells"] > 0
    refused = CliRunner().invoke(main, ["submit", "grid.yaml"])
    assert refused.exit_code == 2
    assert f"grid.yaml:2: dataset.path: {tmp_path.resolve()}/data/digits: prepared-data folder does not exist" in (
        refused.stderr)
    Path("data/digits").mkdir(parents=True)  # a folder that exists is still checked: not prepared data
    assert CliRunner().invoke(main, ["plan", "grid.yaml"]).exit_code == 2
