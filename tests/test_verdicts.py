"""Verdicts: seed statistics and the paper's number per cell, claims tested over seeds, seeds added where undecided.

The stores are synthetic (test_report's writer, in the writers' names) with known values: a real
difference, a null difference, a single seed, cells that reproduce, beat and miss the paper's number.
Adaptive seeding runs its loop with a stubbed runner: once against a stubbed measurement, once
against a store the stub fills as the grid runner would.
"""

from __future__ import annotations

import json
import random
import statistics
import time

import pytest

from orchestrator import conventions as C
from orchestrator.adaptive import Undecided, measure_store, more_seeds, run_until_decided
from orchestrator.claims import settings_json
from orchestrator.expand import expand_cells, with_seed
from orchestrator.report import stats
from orchestrator.report.query_sql import SqlReader
from orchestrator.report.source import select_runs
from orchestrator.report.verdicts import build_report
from orchestrator.spec import parse_grid

REAL, ONE, CIFAR = "digits-real", "digits-one", "cifar-verdicts"
# digits, 4 seeds: ResNet-8 clearly better than plain-8; ResNet-20 and plain-20 the same network in effect
DIGITS = {("resnet8-A", 8, "A"): [5.0, 5.4, 4.8, 5.2], ("plain8", 8, "plain"): [8.1, 7.7, 8.4, 7.9],
          ("resnet20-A", 20, "A"): [6.0, 6.3, 5.8, 6.1], ("plain20", 20, "plain"): [6.1, 5.9, 6.2, 6.0]}
GRID_CLAIMS = ["resnet8-A < plain8", "plain8 < resnet8-A", "resnet20-A < plain20"]
# CIFAR-10 ResNets against Table 6: 20 reproduces (8.75), 56 is better (6.97), 110 worse (mean 6.61), 44's
# seeds spread too far to judge (7.17 inside a wide interval), 32 has one seed (7.51)
CIFAR_CELLS = {
    ("resnet20-A", 20): [(s, v) for s, v in enumerate([8.70, 8.80, 8.75, 8.72, 8.78])],
    ("resnet32-A", 32): [(0, 7.5)],
    ("resnet44-A", 44): [(0, 5.0), (1, 9.0), (2, 7.0)],
    ("resnet56-A", 56): [(3, 5.0), (4, 5.1), (5, 4.9)],  # other seeds than 110's: Welch, not paired
    ("resnet110-A", 110): [(0, 9.0), (1, 9.1), (2, 8.9)],
    ("plain20", 20): [(s, 7.0 + 0.1 * s) for s in range(5)],
}


def _experiment(client, tmp_path, name: str, claims=(), tolerance=0.5, alpha=0.05) -> str:
    from orchestrator.tracking import record_verdict_settings

    experiment = client.create_experiment(name, artifact_location=(tmp_path / name).as_uri())
    record_verdict_settings(str(client.tracking_uri), experiment, name, settings_json(claims, tolerance, alpha))
    return experiment


def _responses(client, run_id: str, values) -> None:
    """Fig. 7's layer responses, one value per layer (step = layer index)."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(C.M_LAYER_RESPONSE, v, now, i) for i, v in enumerate(values)])


@pytest.fixture(scope="module")
def store(tmp_path_factory, report_helpers):
    from mlflow import MlflowClient

    _log_cell = report_helpers._log_cell

    tmp_path = tmp_path_factory.mktemp("verdicts")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    real = _experiment(client, tmp_path, REAL, GRID_CLAIMS)
    for (arch, depth, shortcut), values in DIGITS.items():
        for seed, value in enumerate(values):
            _log_cell(client, real, grid=REAL, arch=arch, depth=depth, shortcut=shortcut, dataset="digits", seed=seed,
                      final={C.M_TEST_ERR: value, C.M_VAL_ERR: value}, protocol=C.EVAL_FULL)
    one = _experiment(client, tmp_path, ONE, ["resnet8-A < plain8"])
    for (arch, depth, shortcut), values in DIGITS.items():
        _log_cell(client, one, grid=ONE, arch=arch, depth=depth, shortcut=shortcut, dataset="digits", seed=0,
                  final={C.M_TEST_ERR: values[0], C.M_VAL_ERR: values[0]}, protocol=C.EVAL_FULL)
    cifar = _experiment(client, tmp_path, CIFAR)
    for (arch, depth), cells in CIFAR_CELLS.items():
        shortcut = "plain" if arch.startswith("plain") else "A"
        for seed, value in cells:
            run_id = _log_cell(client, cifar, grid=CIFAR, arch=arch, depth=depth, shortcut=shortcut, dataset="cifar10",
                               seed=seed, final={C.M_TEST_ERR: value, C.M_VAL_ERR: value}, protocol=C.EVAL_FULL)
            if depth == 20:  # ResNet-20's responses smaller than plain-20's, seed by seed
                base = 1.0 + 0.05 * seed if shortcut == "plain" else 0.5 + 0.02 * seed
                _responses(client, run_id, [base + 0.01 * layer for layer in range(18)])
    return uri


def _report(uri: str, *args: str):
    from click.testing import CliRunner

    from orchestrator.cli import main

    return CliRunner().invoke(main, ["report", "--tracking-uri", uri, *args])


def _json(uri: str, grid: str, *args: str) -> dict:
    result = _report(uri, "--grid", grid, "--format", "json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def _claims(doc: dict) -> dict[tuple[str, str], dict]:
    return {(c["claim"], "grid" if c["source"] == "grid" else "paper"): c for c in doc["claims"]}


# --------------------------------------------------------------------------- statistics
def test_the_interval_is_students_t_and_needs_two_runs():
    from scipy import stats as scipy_stats

    values = [8.70, 8.80, 8.75, 8.72, 8.78]
    low, high = stats.t_interval(values)
    mean, sem = statistics.fmean(values), statistics.stdev(values) / len(values) ** 0.5
    expected = scipy_stats.t.interval(0.95, len(values) - 1, loc=mean, scale=sem)
    assert (low, high) == pytest.approx(expected)
    assert stats.t_interval([8.7]) is None and stats.t_interval([]) is None


@pytest.mark.parametrize(("values", "reference", "tolerance", "verdict"), [
    ([8.70, 8.80, 8.75, 8.72, 8.78], 8.75, 0.5, "reproduced"),
    ([8.70, 8.80, 8.75, 8.72, 8.78], 9.40, 0.5, "better"),  # the paper's error above our interval + 0.5
    ([8.70, 8.80, 8.75, 8.72, 8.78], 8.10, 0.5, "worse"),
    ([8.70, 8.80, 8.75, 8.72, 8.78], 9.40, 1.0, "reproduced"),  # a wider tolerance
    ([5.0, 9.0, 7.0], 7.17, 0.5, "undecided"),  # inside, but the interval is far wider than +-0.5
    ([5.0, 9.0, 7.0], 30.0, 0.5, "better"),  # a wide interval still decides what lies far outside it
    ([8.75], 8.75, 0.5, "undecided"),  # one run: never reproduced, however close
    ([8.70, 8.80], None, 0.5, None),  # no paper number: no verdict
])
def test_cell_verdicts(values, reference, tolerance, verdict):
    assert stats.cell_verdict(values, reference, tolerance) == verdict


def test_on_known_distributions_a_real_difference_is_detected_and_a_null_one_rarely():
    rng = random.Random(1)
    trials, alpha = 300, 0.05

    def holds(shift: float, paired: bool) -> int:
        count = 0
        for _ in range(trials):
            a = [rng.gauss(6.0 - shift, 0.3) for _ in range(5)]
            b = [rng.gauss(6.0, 0.3) for _ in range(5)]
            comparison = stats.compare(a, b, paired=paired)
            count += stats.claim_verdict(5, 5, comparison, alpha) == stats.HOLDS
        return count

    for paired in (False, True):
        assert holds(1.0, paired) >= 0.95 * trials  # a 3.3-sigma difference, 5 seeds a side
        assert holds(0.0, paired) <= 2 * alpha / 2 * trials  # two-sided: "holds" is the wrong-way half


def test_seeds_needed_falls_as_the_effect_grows_and_reaches_the_power():
    from scipy import stats as scipy_stats

    small = stats.compare([6.0, 6.3, 5.8, 6.1], [6.2, 6.4, 6.0, 6.3], paired=False)
    large = stats.compare([5.0, 5.3, 4.8, 5.1], [6.2, 6.4, 6.0, 6.3], paired=False)
    n_small, n_large = stats.seeds_needed(small, 0.05), stats.seeds_needed(large, 0.05)
    assert n_small > n_large >= 2
    d, df = abs(small.cohens_d), 2 * n_small - 2
    critical = scipy_stats.t.ppf(0.975, df)
    assert scipy_stats.nct.sf(critical, df, d * (n_small / 2) ** 0.5) >= stats.POWER
    no_spread = stats.compare([5.0, 5.0], [6.0, 6.0], paired=False)
    assert no_spread.p_value is None and stats.seeds_needed(no_spread, 0.05) is None


# --------------------------------------------------------------------------- claims in the report
def test_a_real_difference_holds_and_a_null_difference_is_not_detected(store):
    doc = _json(store, REAL)
    claims = _claims(doc)
    real = claims[("resnet8-A < plain8", "grid")]
    a, b = DIGITS[("resnet8-A", 8, "A")], DIGITS[("plain8", 8, "plain")]
    assert real["verdict"] == "holds" and real["test"] == "paired" and real["p_value"] < 0.01
    assert real["effect"] == pytest.approx(statistics.fmean(a) - statistics.fmean(b))
    assert (real["n_a"], real["n_b"], real["metric"], real["dataset"]) == (4, 4, "test_err", "digits")
    assert claims[("resnet8-A < plain8", "paper")]["verdict"] == "holds"  # built in: a ResNet beats its plain net
    assert claims[("resnet8-A < plain8", "paper")]["p_value"] == pytest.approx(real["p_value"])
    assert claims[("plain8 < resnet8-A", "grid")]["verdict"] == "fails"
    null = claims[("resnet20-A < plain20", "grid")]
    assert null["verdict"] == "undecided" and null["p_value"] > 0.3 and null["seeds_needed"] > 4
    assert doc["verdicts"] == {"tolerance": 0.5, "alpha": 0.05, "confidence": 0.95, "claims": GRID_CLAIMS}


def test_alpha_from_the_command_line_decides_a_weak_claim_differently(store):
    p_value = _claims(_json(store, REAL))[("resnet8-A < plain8", "grid")]["p_value"]
    strict = _claims(_json(store, REAL, "--alpha", str(p_value / 2)))
    assert strict[("resnet8-A < plain8", "grid")]["verdict"] == "undecided"
    assert strict[("resnet8-A < plain8", "grid")]["alpha"] == p_value / 2


def test_a_single_seed_is_undecided_everywhere(store):
    doc = _json(store, ONE)
    for claim in doc["claims"]:
        assert claim["verdict"] == "undecided" and claim["p_value"] is None and claim["effect"] is None
        assert (claim["n_a"], claim["n_b"]) == (1, 1)
    cifar = next(t for t in _json(store, CIFAR)["tables"] if t["key"] == "table6")
    row32 = dict(zip(cifar["columns"], cifar["rows"][1], strict=True))
    assert row32["ResNet err"]["n"] == 1 and row32["ResNet err"]["ci95"] is None
    assert row32["ResNet err"]["verdict"] == "undecided"


def test_json_gives_every_cell_n_mean_std_ci95_and_verdict(store):
    doc = _json(store, CIFAR)
    cells = [v for t in doc["tables"] for row in t["rows"] for v in row if isinstance(v, dict) and "values" in v]
    assert len(cells) >= 6
    for cell in cells:
        assert {"n", "mean", "std", "ci95", "verdict", "best"} <= set(cell)
        assert cell["n"] == len(cell["values"]) and cell["mean"] == pytest.approx(statistics.fmean(cell["values"]))
        if cell["n"] > 1:
            low, high = cell["ci95"]
            assert low < cell["mean"] < high
    table6 = next(t for t in doc["tables"] if t["key"] == "table6")
    rows = {row[0]: dict(zip(table6["columns"], row, strict=True)) for row in table6["rows"]}
    verdicts = {depth: rows[depth]["ResNet err"]["verdict"] for depth in (20, 32, 44, 56, 110)}
    assert verdicts == {20: "reproduced", 32: "undecided", 44: "undecided", 56: "better", 110: "worse"}
    assert rows[110]["ResNet err"]["reference"] == 6.61  # the paper's mean of 5 runs, not its best
    assert rows[20]["plain err"]["verdict"] is None  # the paper tabulates no plain CIFAR errors
    assert rows[1202]["ResNet err"] is None  # not run: nothing claimed
    for claim in doc["claims"]:
        assert {"claim", "metric", "verdict", "p_value", "effect", "n_a", "n_b"} <= set(claim)


def test_the_papers_claims_are_checked_on_whatever_cells_exist(store):
    claims = {c["claim"]: c for c in _json(store, CIFAR)["claims"]}
    assert claims["resnet110-A < resnet56-A"]["verdict"] == "fails"  # our 110 is worse than our 56 ...
    assert claims["resnet110-A < resnet56-A"]["test"] == "welch"  # ... on other seeds: unpaired
    assert claims["resnet56-A < resnet44-A"]["verdict"] == "undecided"
    assert claims["resnet20-A < plain20"]["verdict"] == "fails"  # plain-20 is better here, seed by seed
    response = claims["resnet20-A < plain20 on layer_response_std"]
    assert response["verdict"] == "holds" and response["test"] == "paired" and response["metric"] == C.M_LAYER_RESPONSE
    assert response["mean_a"] == pytest.approx(0.5 + 0.02 * 2 + 0.01 * 8.5)
    for not_run in ("plain18 < plain34", "resnet110-A < resnet1202-A", "plain44 < plain56"):
        assert not_run not in claims or claims[not_run]["verdict"] == "not run"
    assert claims["resnet110-A < resnet1202-A"]["n_b"] == 0 and claims["plain44 < plain56"]["verdict"] == "not run"
    assert "plain18 < plain34" not in claims  # ImageNet's claims only where the grid trains on ImageNet


def test_markdown_shows_marks_a_legend_the_statistic_and_the_claims(store, report_helpers):
    _md_rows = report_helpers._md_rows
    result = _report(store, "--grid", CIFAR)
    assert result.exit_code == 0, result.output
    rows = _md_rows(result.output, "Table 6: CIFAR-10 test error (%)")
    assert rows["20"]["ResNet err"].endswith(", n=5) ✓") and rows["56"]["ResNet err"].endswith(" ↓")
    assert rows["110"]["ResNet err"].endswith(" ↑") and rows["32"]["ResNet err"] == "7.50 (n=1) ?"
    assert "marks: ✓ reproduced, ↓ better, ↑ worse, ? undecided" in result.output
    assert "widened by ±0.5" in result.output
    assert "each of our cells: best (mean±std, 95% t-interval of the mean, n runs)" in result.output
    claims = _md_rows(result.output, "Claims: the paper's and the grid's")
    assert claims["resnet110-A < resnet56-A"]["verdict"] == "fails"
    latex = _report(store, "--grid", CIFAR, "--format", "latex").output
    assert r"resnet110-A $<$ resnet56-A" in latex and r"$\surd$ reproduced" in latex and "✓" not in latex


def test_the_tolerance_comes_from_the_grid_and_the_command_line_overrides_it(store, tmp_path, report_helpers):
    from mlflow import MlflowClient

    _log_cell = report_helpers._log_cell

    wide = _json(store, CIFAR, "--tolerance", "3")
    table6 = next(t for t in wide["tables"] if t["key"] == "table6")
    rows = {row[0]: dict(zip(table6["columns"], row, strict=True)) for row in table6["rows"]}
    assert rows[110]["ResNet err"]["verdict"] == "reproduced" and wide["verdicts"]["tolerance"] == 3
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = _experiment(client, tmp_path, "tolerant", tolerance=3.0)
    for seed, value in CIFAR_CELLS[("resnet110-A", 110)]:
        _log_cell(client, experiment, grid="tolerant", arch="resnet110-A", depth=110, shortcut="A",
                  dataset="cifar10", seed=seed, final={C.M_TEST_ERR: value, C.M_VAL_ERR: value}, protocol=C.EVAL_FULL)
    doc = _json(uri, "tolerant")
    assert doc["verdicts"]["tolerance"] == 3.0
    table6 = next(t for t in doc["tables"] if t["key"] == "table6")
    assert dict(zip(table6["columns"], table6["rows"][4], strict=True))["ResNet err"]["verdict"] == "reproduced"
    assert next(t for t in _json(uri, "tolerant", "--tolerance", "0.5")["tables"] if t["key"] == "table6")[
        "rows"][4][5]["verdict"] == "worse"


def test_sql_and_client_readers_reach_the_same_verdicts(store):
    from orchestrator.report.query_client import ClientReader
    from orchestrator.report.render import to_json

    for grid in (REAL, CIFAR):
        texts = []
        for reader in (SqlReader(store), ClientReader(store)):
            selection = select_runs(reader, grid=grid)
            report = build_report(selection, reader.histories)
            texts.append(to_json(selection, report.tables, report.claims, report.settings.to_json()))
        assert texts[0] == texts[1]


def test_fig7_claims_compare_the_logged_mean_response_without_reading_histories():
    from orchestrator.report.records import RunRecord, Selection
    from orchestrator.report.tables import RunIndex
    from orchestrator.report.verdicts import Settings, check_claims

    def run(arch: str, seed: int, mean: float) -> RunRecord:
        tags = {C.TAG_GRID: "g", C.TAG_CELL_ID: f"{arch}-{seed}", C.TAG_ARCH: arch, C.TAG_DATASET: "cifar10",
                C.TAG_EVAL_PROTOCOL: C.EVAL_FULL, C.axis_tag("seed"): str(seed), C.TAG_STATUS: C.STATUS_FINISHED}
        return RunRecord(f"{arch}-{seed}", arch, "1", "FINISHED", 0, 1, tags=tags,
                         metrics={C.M_LAYER_RESPONSE_MEAN: mean, C.M_TEST_ERR: 8.0 + seed})

    runs = [run("resnet20-A", s, 0.50 + 0.01 * s) for s in range(3)] + [run("plain20", s, 1.0 + 0.03 * s)
                                                                          for s in range(3)]
    results = check_claims(RunIndex(Selection("g", "g", tuple(runs))), Settings(),
                           histories=lambda *_: pytest.fail("read the per-layer histories"))
    (fig7,) = [r for r in results if r.claim.text == "resnet20-A < plain20 on layer_response_std"]
    assert fig7.verdict == "holds" and fig7.comparison.test == "paired"
    assert fig7.mean_a == pytest.approx(0.51) and fig7.mean_b == pytest.approx(1.03)


# --------------------------------------------------------------------------- adaptive seeding
GRID = {"name": "adaptive", "dataset": {"name": "digits", "path": "data/digits"},
        "grid": {"depth": [8, 20], "shortcut": ["plain", "A"], "seed": [0, 1]},
        "claims": ["resnet8-A < plain8"]}


def _spec(**changes):
    return parse_grid({**GRID, **changes})


def test_a_new_seed_is_the_cell_the_grid_would_expand_to():
    spec = _spec()
    cells = expand_cells(spec)
    wider = {c.cell_id: c for c in expand_cells(_spec(grid={**GRID["grid"], "seed": [0, 1, 2]}))}
    for cell in cells:
        assert with_seed(spec, cell, cell.seed) == cell
        assert with_seed(spec, cell, 2).cell_id in wider
    no_axis = _spec(grid={"depth": [8], "shortcut": ["A"]}, claims=[])
    (only,) = expand_cells(no_axis)
    listed = {c.cell_id for c in expand_cells(_spec(grid={"depth": [8], "shortcut": ["A"], "seed": [0, 1]}, claims=[]))}
    assert with_seed(no_axis, only, 1).cell_id in listed


def test_adaptive_seeding_adds_seeds_only_where_undecided_until_the_cap():
    spec = _spec()
    rounds: list[list] = []

    def run_cells(todo, round_number):
        rounds.append(list(todo))
        return 0

    def measure():  # the 8-layer claim stays undecided until each side has 4 seeds; nothing else is in doubt
        behind = [c for c in rounds[-1] if c.depth == 8]
        if all(sum(c.arch == arch for c in behind) >= 4 for arch in ("resnet8-A", "plain8")):
            return Undecided()
        return Undecided(frozenset(c.cell_id for c in behind), ("resnet8-A < plain8",))

    log: list[str] = []
    assert run_until_decided(spec, expand_cells(spec), max_seeds=10, run_cells=run_cells, measure=measure,
                             log=log.append) == 0
    assert [len(r) for r in rounds] == [8, 10, 12]
    added = rounds[-1][8:]
    assert [c.name for c in added] == ["plain8-digits-s2", "resnet8-A-digits-s2", "plain8-digits-s3",
                                       "resnet8-A-digits-s3"]
    wider = {c.cell_id for c in expand_cells(_spec(grid={**GRID["grid"], "seed": [0, 1, 2, 3]}))}
    assert {c.cell_id for c in added} <= wider  # the very cells a grid listing those seeds has
    assert log[0] == ("until decided, round 2: 1 claim(s) undecided (resnet8-A < plain8): adding a seed to "
                      "plain8 (seed 2), resnet8-A (seed 2)")
    assert log[-1] == "until decided: every verdict decided after round 3"


def test_adaptive_seeding_stops_at_max_seeds_and_on_a_failed_round():
    spec = _spec()
    cells = expand_cells(spec)
    undecided = frozenset(c.cell_id for c in cells if c.arch == "plain20")
    assert [c.name for c in more_seeds(spec, cells, undecided, 3)] == ["plain20-digits-s2"]
    assert more_seeds(spec, cells, undecided, 2) == []
    calls = []
    status = run_until_decided(spec, cells, max_seeds=5, run_cells=lambda todo, n: calls.append(n) or 1,
                               measure=lambda: pytest.fail("measured after a failed round"), log=lambda _: None)
    assert status == 1 and calls == [1]
    log: list[str] = []
    everything = frozenset(c.cell_id for c in cells)
    seen = []
    assert run_until_decided(spec, cells, max_seeds=3, run_cells=lambda todo, n: seen.append(len(todo)) or 0,
                             measure=lambda: Undecided(everything, ("x",)), log=log.append) == 0
    assert seen == [8, 12] and "every cell behind them has 3 seeds (--max-seeds)" in log[-1]
    seen.clear()
    offered = []  # the budget covers one more seed (the first offered), then none
    afford = lambda todo, added: [] if offered else offered.append(added) or added[:1]  # noqa: E731
    assert run_until_decided(spec, cells, max_seeds=5, run_cells=lambda todo, n: seen.append(len(todo)) or 0,
                             measure=lambda: Undecided(everything, ("x",)), log=log.append, affordable=afford) == 0
    assert seen == [8, 9] and len(offered[0]) == 4 and log[-1].endswith("the grid's budget covers no more seeds")


def test_adaptive_seeding_against_a_store_seeds_only_the_undecided_claim(tmp_path, report_helpers):
    """The stub runner logs each new cell as the grid runner would; the store's verdicts decide the next round:
    ResNet-8 beats plain-8 after the grid's two seeds, ResNet-20 and plain-20 never differ."""
    from mlflow import MlflowClient

    from orchestrator import tracking

    _log_cell = report_helpers._log_cell
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = _spec(tracking={"uri": uri})
    values = {"resnet8-A": [5.0, 5.1], "plain8": [8.0, 8.3],
              "resnet20-A": [6.0, 6.4, 5.9, 6.2], "plain20": [6.2, 6.0, 6.3, 5.9]}
    client = MlflowClient(tracking_uri=uri)
    experiment = tracking.ensure_experiment(uri, spec.experiment_name)
    logged: set[str] = set()

    def run_cells(todo, round_number):
        for cell in todo:
            if cell.cell_id not in logged:
                value = values[cell.arch][cell.seed]
                _log_cell(client, experiment, grid=spec.name, arch=cell.arch, depth=cell.depth, shortcut=cell.shortcut,
                          dataset="digits", seed=cell.seed, final={C.M_TEST_ERR: value, C.M_VAL_ERR: value},
                          protocol=C.EVAL_FULL, cell_id=cell.cell_id)
                logged.add(cell.cell_id)
        return 0

    log: list[str] = []
    assert run_until_decided(spec, expand_cells(spec), max_seeds=4, run_cells=run_cells,
                             measure=lambda: measure_store(spec), log=log.append) == 0
    runs = select_runs(SqlReader(uri), grid=spec.name).runs
    seeds = {arch: sorted(r.seed for r in runs if r.arch == arch) for arch in values}
    assert seeds == {"resnet8-A": [0, 1], "plain8": [0, 1], "resnet20-A": [0, 1, 2, 3], "plain20": [0, 1, 2, 3]}
    assert len(log) == 3 and "resnet20-A < plain20 (digits)" in log[0] and "resnet8-A < plain8" not in log[0]
    assert log[0].endswith("adding a seed to plain20 (seed 2), resnet20-A (seed 2)")
    assert "every cell behind them has 4 seeds (--max-seeds)" in log[-1]
