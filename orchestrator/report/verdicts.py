"""Verdicts: did the grid reproduce the paper? Each cell against the paper's number, each claim tested.

The tables judge every cell the paper gives a number for (`tables.Stat.verdict`); this module tests
claims "A < B" (the paper's own, `paper.CLAIMS` plus a ResNet beating the plain net of its depth
wherever a grid trains both, and the grid's `claims:`) on the finished runs, in every (dataset,
evaluation protocol) the grid has, and assembles the whole report. What the grid's file said
(claims, tolerance, alpha) reaches the report through an experiment tag `submit` writes
(`cv.verdicts_tag`); the report's --tolerance and --alpha override it.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from models.arch import parse_arch
from orchestrator import conventions as cv
from orchestrator.claims import (
    DEFAULT_ALPHA,
    DEFAULT_TOLERANCE,
    Claim,
    default_metric,
    parse_claim,
)
from orchestrator.report import paper, stats
from orchestrator.report.records import Histories, ReportError, RunRecord, Selection
from orchestrator.report.tables import EMPTY, RunIndex, Stat, Table, build_tables

HistoryReader = Callable[[Sequence[str], Sequence[str]], Histories]
_NETWORK_AXES = (cv.axis_tag(cv.PARAM_DEPTH), cv.axis_tag(cv.PARAM_SHORTCUT))


@dataclass(frozen=True)
class Settings:
    """How verdicts are reached: the tolerance of cell verdicts, the claims' significance level, the grid's claims;
    and the grid's price per GPU-hour, which the cells' cost is counted at (not a verdict setting: to_json omits it)."""

    tolerance: float = DEFAULT_TOLERANCE
    alpha: float = DEFAULT_ALPHA
    claims: tuple[str, ...] = ()
    price_per_gpu_hour: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"tolerance": self.tolerance, "alpha": self.alpha, "confidence": stats.CONFIDENCE,
                "claims": list(self.claims)}


def settings_for(selection: Selection, *, tolerance: float | None = None, alpha: float | None = None,
                 price_per_gpu_hour: float | None = None) -> Settings:
    """The grid's recorded settings (defaults where it recorded none), then the command line's."""
    raw = selection.experiment_tags.get(cv.verdicts_tag(selection.grid)) if selection.grid else None
    try:
        stored = json.loads(raw) if raw else {}
    except ValueError:
        stored = {}
    stored = stored if isinstance(stored, dict) else {}
    return Settings(
        tolerance=tolerance if tolerance is not None else float(stored.get("tolerance", DEFAULT_TOLERANCE)),
        alpha=alpha if alpha is not None else float(stored.get("alpha", DEFAULT_ALPHA)),
        claims=tuple(str(c) for c in stored.get("claims", ())),
        price_per_gpu_hour=price_per_gpu_hour if price_per_gpu_hour is not None else _price(stored),
    )


def _price(stored: dict) -> float | None:
    """The grid's price_per_gpu_hour as `submit` recorded it; None where it recorded none (or not a number)."""
    try:
        price = float(stored["price_per_gpu_hour"])
    except (KeyError, TypeError, ValueError):
        return None
    return price if price > 0 and price == price else None


@dataclass(frozen=True)
class ClaimResult:
    """One claim tested in one (dataset, protocol): the verdict, the test and what it measured."""

    claim: Claim
    dataset: str | None
    protocol: str | None
    metric: str
    verdict: str  # stats.CLAIM_VERDICTS
    alpha: float
    n_a: int = 0
    n_b: int = 0
    mean_a: float | None = None
    mean_b: float | None = None
    comparison: stats.Comparison | None = None
    seeds_needed: int | None = None  # per side, where the claim is undecided and the spread is known
    cell_ids: frozenset[str] = field(default=frozenset(), compare=False)  # the cells measured, both sides

    def to_json(self) -> dict[str, Any]:
        c = self.comparison
        return {"claim": self.claim.text, "source": self.claim.source, "dataset": self.dataset,
                "protocol": self.protocol, "metric": self.metric, "verdict": self.verdict,
                "p_value": c.p_value if c else None, "effect": c.effect if c else None,
                "cohens_d": c.cohens_d if c else None, "test": c.test if c else None, "alpha": self.alpha,
                "n_a": self.n_a, "n_b": self.n_b, "mean_a": self.mean_a, "mean_b": self.mean_b,
                "seeds_needed": self.seeds_needed}


def _value(run: RunRecord, metric: str, histories: Histories) -> float | None:
    """A run's number for a claim: Fig. 7's mean layer response (logged with the responses; from their history
    for runs logged before it was), else the final test where the run has one, else the last epoch's."""
    if metric == cv.M_LAYER_RESPONSE:
        if run.metric(cv.M_LAYER_RESPONSE_MEAN) is not None:
            return run.metric(cv.M_LAYER_RESPONSE_MEAN)
        series = histories.get(run.run_id, {}).get(metric, [])
        return statistics.fmean(v for _, v in series) if series else None
    found = run.metric(cv.FINAL_PREFIX + metric)
    return found if found is not None else run.metric(metric)


def _pair_axes(runs: Sequence[RunRecord]) -> tuple[str, ...]:
    """The axis tags that say what a run is apart from its network (seed and the other axes), over `runs`."""
    names = set().union(*(r.tags.keys() for r in runs)) if runs else set()
    return tuple(sorted(k for k in names if k.startswith(cv.TAG_AXIS_PREFIX) and k not in _NETWORK_AXES))


def _pair_key(run: RunRecord, axes: tuple[str, ...]) -> tuple:
    """Runs with equal keys are the same cell but for the network: they pair."""
    return (*(run.tags.get(k) for k in axes), run.seed)


def _paired(a: list[tuple[tuple, float]], b: list[tuple[tuple, float]]) -> list[float] | None:
    """b's values in a's order when both sides hold the same keys once each (>= 2), else None."""
    keys_a, keys_b = [k for k, _ in a], dict(b)
    if len(a) < 2 or len(set(keys_a)) != len(a) or len(keys_b) != len(b) or set(keys_a) != set(keys_b):
        return None
    return [keys_b[k] for k in keys_a]


def judge_claim(claim: Claim, a: list[tuple[tuple, float]], b: list[tuple[tuple, float]], *, dataset: str | None,
               protocol: str | None, alpha: float, cell_ids: frozenset[str] = frozenset()) -> ClaimResult:
    """The verdict on `claim` from (pair key, value) per run of its first (`a`) and second (`b`) network."""
    metric = claim.metric or default_metric(dataset)
    values_a, values_b = [v for _, v in a], [v for _, v in b]
    comparison, needed = None, None
    if len(a) >= 2 and len(b) >= 2:
        paired = _paired(a, b)
        comparison = stats.compare(values_a, paired or values_b, paired=paired is not None)
    verdict = stats.claim_verdict(len(a), len(b), comparison, alpha)
    if verdict == stats.UNDECIDED and comparison is not None:
        needed = stats.seeds_needed(comparison, alpha)
    return ClaimResult(claim, dataset, protocol, metric, verdict, alpha, len(a), len(b),
                       statistics.fmean(values_a) if a else None, statistics.fmean(values_b) if b else None,
                       comparison, needed, cell_ids)


def _network_order(arch: str) -> tuple[int, str]:
    """(depth, name) of a network name; depth 0 for names that are none (an ensemble's)."""
    try:
        return parse_arch(arch)[0], arch
    except ValueError:
        return 0, arch


def applicable_claims(index: RunIndex, settings: Settings) -> list[tuple[Claim, str | None, str | None]]:
    """(claim, dataset, protocol) for every scope the grid has: its own claims first, then the paper's."""
    scopes = sorted({(d, p) for d, p, _ in index.planned if d}, key=lambda s: (s[0], s[1] or ""))
    planned = {scope: {a for d, p, a in index.planned if (d, p) == scope} for scope in scopes}
    out: list[tuple[Claim, str | None, str | None]] = []
    for text in settings.claims:
        try:
            claim = parse_claim(text)
        except ValueError as exc:  # the grid validated its claims; a tag written by hand may not be
            raise ReportError(f"the grid's recorded claims: {exc}") from None
        where = [s for s in scopes if {claim.better, claim.worse} & planned[s]]
        out += [(claim, d, p) for d, p in where] or [(claim, None, None)]
    for dataset, protocol in scopes:
        claims = [c for c in paper.CLAIMS if c.dataset == dataset]
        pairs = {(c.better, c.worse) for c in claims if c.metric is None}
        for arch in sorted(planned[(dataset, protocol)], key=_network_order):
            plain = f"plain{_network_order(arch)[0]}"
            if arch.startswith("resnet") and plain in planned[(dataset, protocol)] and (arch, plain) not in pairs:
                claims.append(Claim(arch, plain, source=paper.RESIDUAL_CLAIM_SOURCE, dataset=dataset))
        out += [(c, dataset, protocol) for c in claims]
    return out


def check_claims(index: RunIndex, settings: Settings, histories: HistoryReader | None = None) -> list[ClaimResult]:
    """Every applicable claim tested on the finished runs (histories: Fig. 7's layer responses)."""
    scoped = applicable_claims(index, settings)
    wanted = [r.run_id for c, d, p in scoped if (c.metric or default_metric(d)) == cv.M_LAYER_RESPONSE
              for arch in (c.better, c.worse) for r in index.get(d, p, arch)
              if r.metric(cv.M_LAYER_RESPONSE_MEAN) is None]  # older runs: from the per-layer history
    responses = histories(sorted(set(wanted)), (cv.M_LAYER_RESPONSE,)) if wanted and histories else {}
    measured: dict[tuple, tuple[list[tuple[tuple, float]], set[str]]] = {}  # a network is in several claims
    axes = _pair_axes(index.done)

    def side(dataset: str | None, protocol: str | None, arch: str, metric: str):
        key = (dataset, protocol, arch, metric)
        if key not in measured:
            runs = [(r, v) for r in (index.get(dataset, protocol, arch) if dataset else [])
                    if (v := _value(r, metric, responses)) is not None]
            measured[key] = [(_pair_key(r, axes), v) for r, v in runs], {r.cell_id for r, _ in runs}
        return measured[key]

    results = []
    for claim, dataset, protocol in scoped:
        metric = claim.metric or default_metric(dataset)
        (a, ids_a), (b, ids_b) = (side(dataset, protocol, arch, metric) for arch in (claim.better, claim.worse))
        results.append(judge_claim(claim, a, b, dataset=dataset, protocol=protocol, alpha=settings.alpha,
                                  cell_ids=frozenset(ids_a | ids_b)))
    return results


def _scope(result: ClaimResult) -> str | None:
    if result.dataset is None:
        return EMPTY
    return f"{result.dataset} ({result.protocol})" if result.protocol else result.dataset


def claims_table(results: Sequence[ClaimResult], settings: Settings) -> Table:
    """The claims as a table every format renders (JSON also lists them at the top level)."""
    table = Table(
        "claims", "Claims: the paper's and the grid's",
        f"two-sided t-test over runs, paired where both networks have the same seeds (one run each), else Welch's; "
        f"alpha={settings.alpha:g}; effect: mean of the first minus mean of the second, and Cohen's d; seeds "
        f"needed: per network, for {stats.POWER:.0%} power at the observed effect and spread",
        ("claim", "source", "data", "metric", "n", "means", "effect", "p", "test", "verdict", "seeds needed"),
        counts_compute=False,
    )
    for r in results:
        c = r.comparison
        means = f"{r.mean_a:.2f} vs {r.mean_b:.2f}" if r.mean_a is not None and r.mean_b is not None else EMPTY
        effect = EMPTY if c is None else f"{c.effect:+.2f}" + (f" (d={c.cohens_d:+.2f})" if c.cohens_d else "")
        table.rows.append((r.claim.text, r.claim.source, _scope(r), r.metric, f"{r.n_a} vs {r.n_b}", means, effect,
                           EMPTY if c is None or c.p_value is None else f"{c.p_value:.3g}", c.test if c else EMPTY,
                           r.verdict, r.seeds_needed))
    counts = {v: sum(r.verdict == v for r in results) for v in stats.CLAIM_VERDICTS}
    table.notes.append(", ".join(f"{n} {v}" for v, n in counts.items() if n) or "no claims apply to this grid")
    table.notes.append("holds: significant in the claimed direction; fails: significant against it; undecided: not "
                       "significant, fewer than 2 runs a side, or no spread to test; not run: a side has no finished run")
    return table


def verdict_summary(tables: Sequence[Table], claims: Sequence[ClaimResult]) -> list[str]:
    """One line per verdict the report reaches, for a reader who wants the answer before the tables: the
    claims' verdicts, then each table's cell verdicts against the paper (cells it gives no number for are
    counted apart: they are measured, not judged)."""
    counts = {v: sum(r.verdict == v for r in claims) for v in stats.CLAIM_VERDICTS}
    lines = [f"claims: {_counted(counts)} (of {len(claims)})" if claims else "claims: none apply to this grid"]
    for table in tables:
        cells = [v for row in table.rows for v in row if isinstance(v, Stat)]
        if not cells or table.key == "cells":  # the cells table repeats single runs
            continue
        judged = [c.verdict for c in cells if c.verdict]
        found = {v: judged.count(v) for v in stats.CELL_VERDICTS}
        unjudged = len(cells) - len(judged)
        words = [f"{_counted(found)} (of {len(judged)} cells with a paper number)"] if judged else []
        words += [f"{unjudged} cell(s) measured, with no paper number to judge them by"] if unjudged else []
        lines.append(f"{table.title}: {'; '.join(words)}")
    return lines


def _counted(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {v}" for v, n in counts.items() if n)


@dataclass
class Report:
    """Everything `resnetctl report` prints: the tables (the claims table last but one), the claims, the settings."""

    tables: list[Table]
    claims: list[ClaimResult]
    settings: Settings

    def undecided_cell_ids(self) -> set[str]:
        """Cells behind an undecided claim or an undecided cell verdict: where more seeds would help."""
        ids = {i for r in self.claims if r.verdict == stats.UNDECIDED for i in r.cell_ids}
        for table in self.tables:
            ids |= {i for row in table.rows for v in row
                    if isinstance(v, Stat) and v.verdict == stats.UNDECIDED for i in v.cell_ids}
        return ids


def build_report(selection: Selection, histories: HistoryReader | None = None, *, rows: str | None = None,
                 cols: str | None = None, metric: str | None = None, tolerance: float | None = None,
                 alpha: float | None = None, price_per_gpu_hour: float | None = None,
                 settings: Settings | None = None) -> Report:
    """The tables, the claims tested and the settings used, for one selection: `settings` as given, else the
    grid's recorded ones (`settings_for`) with `tolerance`, `alpha` and `price_per_gpu_hour` where given."""
    settings = settings or settings_for(selection, tolerance=tolerance, alpha=alpha,
                                        price_per_gpu_hour=price_per_gpu_hour)
    index = RunIndex(selection, settings.tolerance, settings.price_per_gpu_hour)
    tables = build_tables(selection, rows=rows, cols=cols, metric=metric, tolerance=settings.tolerance, index=index)
    claims = check_claims(index, settings, histories)
    if claims:
        tables.insert(len(tables) - 1, claims_table(claims, settings))  # before the per-run cells table
    return Report(tables, claims, settings)


__all__ = ["ClaimResult", "Report", "Settings", "applicable_claims", "build_report", "check_claims", "claims_table",
           "settings_for", "judge_claim", "verdict_summary"]
