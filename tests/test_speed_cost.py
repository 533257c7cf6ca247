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


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, hours: float) -> None:
        self.now += hours * 3600.0


def _searcher(cells, *, limit: float, spent: float = 0.0, estimate_h: float = 0.5):
    from orchestrator.budget import BudgetSearcher

    plan = estimate.BudgetPlan(limit=limit, spent=spent, estimates={c.cell_id: estimate_h for c in cells},
                               gpus={c.cell_id: 1.0 for c in cells})
    clock = _Clock()
    return BudgetSearcher(cells, plan, clock=clock), clock


def test_while_the_grid_runs_cells_start_only_while_what_they_actually_spend_leaves_room(grid_file, tmp_path,
                                                                                         digits_root):
    from ray.tune.search import Searcher

    _, cells = load_cells(str(_grid(grid_file, tmp_path, digits_root)))
    searcher, clock = _searcher(cells, limit=1.2)  # the estimates (3 x 0.5) would let two cells start
    assert searcher.suggest("t0")["cell"] == cells[0].to_dict()
    assert searcher.suggest("t1")["cell"] == cells[1].to_dict()  # 0.5 running + 0.5 <= 1.2: runs beside it
    assert searcher.suggest("t2") is None  # 1.0 committed + 0.5 > 1.2, but a running cell may end early: wait
    clock.advance(0.9)  # both cells ran for 0.9 h: more than their estimates
    searcher.on_trial_complete("t0")
    assert searcher.committed() == pytest.approx(0.9 + 0.9)  # spent, plus t1's 0.9 h held so far
    assert searcher.suggest("t2") is None
    searcher.on_trial_complete("t1", error=True)  # a failed cell spent its GPU time too
    assert searcher.suggest("t2") == Searcher.FINISHED and searcher.held == [cells[2]]
    assert searcher.spent == pytest.approx(1.8)


def test_a_cell_finishing_under_its_estimate_leaves_room_and_a_larger_budget_continues(grid_file, tmp_path,
                                                                                       digits_root):
    from ray.tune.search import Searcher

    _, cells = load_cells(str(_grid(grid_file, tmp_path, digits_root)))
    searcher, clock = _searcher(cells, limit=1.2)
    searcher.suggest("t0"), searcher.suggest("t1")
    clock.advance(0.1)
    searcher.on_trial_complete("t0")  # 0.1 spent + t1's estimate 0.5 + 0.5 <= 1.2
    assert searcher.suggest("t2")["cell"] == cells[2].to_dict()
    assert searcher.suggest("t3") == Searcher.FINISHED and searcher.held == []
    spent_before = 1.25  # a resubmit: finished cells spent more than the old budget; the held cell's turn
    assert _searcher(cells[2:], limit=1.2, spent=spent_before)[0].suggest("t0") == Searcher.FINISHED
    assert _searcher(cells[2:], limit=2.0, spent=spent_before)[0].suggest("t0")["cell"] == cells[2].to_dict()
