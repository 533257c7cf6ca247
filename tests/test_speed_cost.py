"""Cost and budget (issue 15, item 6): GPU-hours per cell from the multiply-add estimate, calibrated by the
grid's finished cells; a grid `budget:` that submit refuses to exceed without --yes and that starts only
the cells it covers (the rest stay pending until a resubmit with a larger budget)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from orchestrator import estimate
from orchestrator.cli import main
from orchestrator.grid_loading import load_cells
from orchestrator.spec import GridError

GPU = {"use_gpu": True}


def _grid(grid_file, tmp_path, digits_root, **extra):
    import yaml

    path = grid_file(tmp_path / "grid.yaml", name="cost", data=digits_root, seeds=(0, 1, 2), resources=GPU)
    data = yaml.safe_load(path.read_text())
    data.update(extra)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_plan_prints_gpu_hours_per_cell_and_their_cost_at_the_price_given(grid_file, tmp_path, digits_root,
                                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)  # no store here: the default throughput
    path = _grid(grid_file, tmp_path, digits_root)
    result = CliRunner().invoke(main, ["plan", str(path), "--json", "--price-per-gpu-hour", "2.5"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    cost = plan["summary"]["cost"]
    hours = [row["gpu_hours"] for row in plan["cells"]]
    expected = estimate.TRAINING_FACTOR * plan["cells"][0]["compute_mult_adds"] / estimate.DEFAULT_GPU_MACS_PER_S / 3600
    assert hours[0] == pytest.approx(expected, rel=1e-3) and len(set(hours)) == 1
    assert cost["gpu_hours"] == pytest.approx(sum(hours), rel=1e-3)
    assert cost["cost"] == pytest.approx(2.5 * cost["gpu_hours"])
    assert cost["rate_from"].startswith("default") and not (tmp_path / "mlflow.db").exists()
    table = CliRunner().invoke(main, ["plan", str(path), "--price-per-gpu-hour", "2.5"])
    assert "GPU-hours: about" in table.stdout and "at 2.5 per GPU-hour" in table.stdout


def test_finished_cells_calibrate_the_rate_of_the_others(grid_file, tmp_path, digits_root, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec, cells = load_cells(str(_grid(grid_file, tmp_path, digits_root)))
    first = cells[0].cell_id
    summary, rows = estimate.plan_grid(spec, cells, spent={first: 0.5})
    train_macs = estimate.TRAINING_FACTOR * rows[0]["compute_mult_adds"]
    assert summary["cost"]["macs_per_gpu_s"] == pytest.approx(train_macs / 1800)
    assert [row["gpu_hours"] for row in rows] == pytest.approx([0.5] * 3)  # same cells: what the first took
    assert summary["cost"]["gpu_hours_spent"] == 0.5 and summary["cost"]["rate_from"] == "1 finished cells"


def test_submit_refuses_an_estimate_above_the_budget_without_yes(grid_file, tmp_path, digits_root, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = _grid(grid_file, tmp_path, digits_root, budget={"gpu_hours": 1e-9})
    result = CliRunner().invoke(main, ["submit", str(path)])
    assert result.exit_code == 2
    assert "exceeds its budget" in result.output and "--yes" in result.output
    assert not (tmp_path / "mlflow.db").exists()  # refused before the store or Ray is touched


def test_the_budget_starts_the_cells_it_covers_and_a_larger_one_the_rest(grid_file, tmp_path, digits_root,
                                                                         monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec, cells = load_cells(str(_grid(grid_file, tmp_path, digits_root, budget={"gpu_hours": 1.2})))
    monkeypatch.setattr(estimate, "spent_gpu_hours", lambda spec: {cells[0].cell_id: 0.5})  # one finished
    start, held = estimate.within_budget(spec, cells, cells[1:])
    assert start == [cells[1]] and held == [cells[2]]  # 0.5 spent + 0.5 started; another 0.5 would exceed 1.2
    bigger, _ = load_cells(str(_grid(grid_file, tmp_path, digits_root, budget={"gpu_hours": 2.0})))
    assert estimate.within_budget(bigger, cells, cells[1:]) == (cells[1:], [])


@pytest.mark.parametrize(("extra", "message"), [
    ({"budget": {"money": 10}}, "budget.money needs price_per_gpu_hour"),
    ({"budget": {"money": 10, "gpu_hours": 1}, "price_per_gpu_hour": 2}, "one of the two"),
    ({"budget": {}}, "one of the two"),
])
def test_a_budget_is_gpu_hours_or_money_at_a_price(grid_file, tmp_path, digits_root, extra, message):
    with pytest.raises(GridError, match=message):
        load_cells(str(_grid(grid_file, tmp_path, digits_root, **extra)))


def test_money_converts_at_the_price(grid_file, tmp_path, digits_root):
    spec, _ = load_cells(str(_grid(grid_file, tmp_path, digits_root, budget={"money": 10}, price_per_gpu_hour=4)))
    assert estimate.budget_gpu_hours(spec) == 2.5
