"""Verdicts end to end on digits (issue 14): the session's trained grid (conftest `verdicts_digits_grid`:
depth [8, 20] x shortcut [plain, A] x 2 seeds, the grid claim "resnet8-A < plain8", submitted with
--until-decided) through `resnetctl report --format json` and `resnetctl plan`."""

from __future__ import annotations

import json

import pytest

from orchestrator import conventions as cv

pytestmark = pytest.mark.slow


def test_the_json_report_has_every_cells_interval_and_the_claims_with_verdicts_and_p_values(verdicts_digits_grid,
                                                                                          resnetctl):
    grid = verdicts_digits_grid
    assert "until decided: " in grid["proc"].stderr  # the rounds measured the store once and stopped at the cap
    proc = resnetctl(grid["workdir"], "report", "--grid", grid["name"], "--format", "json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    cells = [v for t in doc["tables"] for row in t["rows"] for v in row if isinstance(v, dict) and "values" in v]
    assert len(cells) == 4  # the pivot: depth x shortcut, two seeds each
    for cell in cells:
        assert cell["n"] == 2 and len(cell["ci95"]) == 2 and cell["ci95"][0] <= cell["mean"] <= cell["ci95"][1]
    claims = {(c["claim"], c["source"] == "grid"): c for c in doc["claims"]}
    assert set(claims) == {("resnet8-A < plain8", True), ("resnet8-A < plain8", False),
                           ("resnet20-A < plain20", False)}  # the grid's own and the built-in residual-vs-plain
    for claim in claims.values():
        assert claim["verdict"] in ("holds", "fails", "undecided") and claim["p_value"] is not None, claim
        assert (claim["n_a"], claim["n_b"], claim["metric"], claim["test"]) == (2, 2, "test_err", "paired")
    assert doc["verdicts"]["claims"] == ["resnet8-A < plain8"]  # recorded by submit as an experiment tag


def test_plan_estimates_seeds_for_the_undecided_claims_from_the_store(verdicts_digits_grid, resnetctl):
    grid = verdicts_digits_grid
    proc = resnetctl(grid["workdir"], "plan", str(grid["grid"]), "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    undecided = json.loads(proc.stdout)["undecided_claims"]
    assert isinstance(undecided, list)  # the store has runs: a list (perhaps empty), not None
    for claim in undecided:
        assert claim["verdict"] == "undecided" and (claim["seeds_needed"] is None or claim["seeds_needed"] >= 2)


def test_each_run_logs_its_mean_layer_response_for_fig7s_claims(verdicts_digits_grid):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=verdicts_digits_grid["uri"])
    experiment = client.get_experiment_by_name(verdicts_digits_grid["name"])
    for run in client.search_runs([experiment.experiment_id]):
        history = [m.value for m in client.get_metric_history(run.info.run_id, cv.M_LAYER_RESPONSE)]
        assert history and run.data.metrics[cv.M_LAYER_RESPONSE_MEAN] == pytest.approx(sum(history) / len(history))
