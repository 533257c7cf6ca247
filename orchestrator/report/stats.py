"""The statistics behind the verdicts: a t-interval per cell, a t-test per claim, a seed count per test.

Every number a table shows over seeds is a sample: n runs, their mean and sample std, and a 95%
t-interval of the mean (scipy.stats' Student t; it needs n >= 2). A cell is judged against the
paper's number with that interval widened by a tolerance; a claim "A < B" with a two-sided t-test,
paired where the seeds pair (the same seeds, one run each, on both sides), else Welch's. scipy is
imported on first use, so modules that only name things stay light.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

CONFIDENCE = 0.95
MAX_EXACT_SEEDS = 10_000  # beyond this the seed estimate stays the normal approximation
POWER = 0.8  # the chance a seed count suggested by `seeds_needed` gives of detecting the observed effect
# A cell against the paper's number (lower is better: errors)
REPRODUCED, BETTER, WORSE, UNDECIDED = "reproduced", "better", "worse", "undecided"
CELL_VERDICTS = (REPRODUCED, BETTER, WORSE, UNDECIDED)
# A claim "A < B"
HOLDS, FAILS, NOT_RUN = "holds", "fails", "not run"
CLAIM_VERDICTS = (HOLDS, FAILS, UNDECIDED, NOT_RUN)


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """The t-interval of the mean, or None for fewer than two values."""
    n = len(values)
    if n < 2:
        return None
    from scipy import stats

    mean = statistics.fmean(values)
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * statistics.stdev(values) / math.sqrt(n)
    return mean - half, mean + half


def cell_verdict(values: Sequence[float], reference: float | None, tolerance: float) -> str | None:
    """Our runs against the paper's number: None without one; `undecided` for one run or an interval wider
    than +-tolerance around the paper's value; else `reproduced`, `better` (our error lower) or `worse`."""
    if reference is None:
        return None
    interval = t_interval(values)
    if interval is None:
        return UNDECIDED
    low, high = interval
    if reference > high + tolerance:
        return BETTER
    if reference < low - tolerance:
        return WORSE
    return REPRODUCED if (high - low) / 2 <= tolerance else UNDECIDED


@dataclass(frozen=True)
class Comparison:
    """A two-sided t-test of mean(a) - mean(b): `effect` in the metric's units, `cohens_d` standardised."""

    test: str  # "paired" | "welch"
    effect: float
    p_value: float | None  # None where the test is undefined (no spread on either side)
    cohens_d: float | None
    spread: float  # the std the test divides by: of the differences (paired) or pooled (Welch)


def compare(a: Sequence[float], b: Sequence[float], *, paired: bool) -> Comparison:
    """Paired t-test (a[i] and b[i] share a seed) or Welch's; both sides need >= 2 values."""
    from scipy import stats

    if paired:
        diffs = [x - y for x, y in zip(a, b, strict=True)]
        effect, spread = statistics.fmean(diffs), statistics.stdev(diffs)
    else:
        effect = statistics.fmean(a) - statistics.fmean(b)
        spread = math.sqrt((statistics.variance(a) + statistics.variance(b)) / 2)
    test = "paired" if paired else "welch"
    scale = max(abs(v) for v in (*a, *b)) or 1.0
    if spread <= 1e-9 * scale:  # no spread (rounding aside): a t statistic is undefined, so no p-value
        return Comparison(test, effect, None, None, 0.0)
    result = stats.ttest_rel(a, b) if paired else stats.ttest_ind(a, b, equal_var=False)
    p_value = float(result.pvalue)
    return Comparison(test, effect, None if math.isnan(p_value) else p_value, effect / spread, spread)


def claim_verdict(n_a: int, n_b: int, comparison: Comparison | None, alpha: float) -> str:
    """`not run` without runs on a side; `holds`/`fails` when the test is significant at alpha (the sign says
    which); else `undecided` (not significant, fewer than two runs a side, or no spread to test)."""
    if n_a == 0 or n_b == 0:
        return NOT_RUN
    if comparison is None or comparison.p_value is None or comparison.p_value >= alpha:
        return UNDECIDED
    return HOLDS if comparison.effect < 0 else FAILS


def seeds_needed(comparison: Comparison, alpha: float, power: float = POWER) -> int | None:
    """Seeds per side for the two-sided t-test to detect the observed effect with `power`, at the observed
    spread (noncentral t); None where there is no effect or no spread to go on."""
    if comparison.cohens_d is None or comparison.effect == 0:
        return None
    from scipy import stats

    d = abs(comparison.cohens_d)
    paired = comparison.test == "paired"
    z = float(stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power))
    n = max(2, math.floor((z / d) ** 2 * (1 if paired else 2)))  # the normal approximation, then step up
    if n > MAX_EXACT_SEEDS:  # a difference this small: the approximation is as good as it gets
        return n
    while True:
        df = n - 1 if paired else 2 * n - 2
        ncp = d * math.sqrt(n if paired else n / 2)
        critical = float(stats.t.ppf(1 - alpha / 2, df))
        if float(stats.nct.sf(critical, df, ncp) + stats.nct.cdf(-critical, df, ncp)) >= power:
            return n
        n += 1
