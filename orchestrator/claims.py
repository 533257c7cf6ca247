"""Claims a grid tests: "<arch> < <arch> [on <metric>]", the first network's metric lower than the second's.

A grid lists its own under `claims:` (validated with the grid: both networks must be cells of it, the
metric one the report knows); the paper's own claims are built into the report (`report.paper.CLAIMS`).
Every metric a claim can name is lower-is-better (errors, losses, layer responses), so "<" always reads
"better than" for errors and "smaller than" for responses. How a claim is decided (a t-test over seeds)
lives in `report.verdicts`; this module only parses and names, and imports nothing heavy, so a bad claim
is refused before torch, Ray or MLflow load.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from models.arch import ArchError, arch_name, parse_arch
from orchestrator import conventions as cv

# The metrics a claim may compare, each lower-is-better. layer_response_std is Fig. 7's: the mean over a
# run's 3x3 conv layers of the std of their responses.
CLAIM_METRICS: tuple[str, ...] = (cv.M_TEST_ERR, cv.M_VAL_ERR, cv.M_TEST_TOP5_ERR, cv.M_VAL_TOP5_ERR, cv.M_TRAIN_ERR,
                                  cv.M_TRAIN_LOSS, cv.M_LAYER_RESPONSE)
DEFAULT_TOLERANCE = 0.5  # percentage points: how far the paper's number may lie outside our 95% interval
DEFAULT_ALPHA = 0.05  # significance level of a claim's test
DEFAULT_MAX_SEEDS = 5  # `submit --until-decided`: the most seeds a cell gets (the paper's 110-layer row: 5 runs)
SOURCE_GRID = "grid"

_CLAIM = re.compile(r"^\s*(?P<a>\S+)\s*<\s*(?P<b>[^\s<]+)(?:\s+on\s+(?P<metric>\S+))?\s*$")


@dataclass(frozen=True)
class Claim:
    """`better`'s metric is lower than `worse`'s; `metric` None: the dataset's test error (`default_metric`)."""

    better: str  # arch, as models.arch.arch_name spells it
    worse: str
    metric: str | None = None
    source: str = SOURCE_GRID  # "grid", or where the paper makes the claim ("Table 6 / Fig. 6: ...")
    dataset: str | None = None  # None: every dataset of the grid

    @property
    def text(self) -> str:
        return f"{self.better} < {self.worse}" + (f" on {self.metric}" if self.metric else "")


def settings_json(claims: Sequence[str], tolerance: float, alpha: float,
                  price_per_gpu_hour: float | None = None) -> str:
    """What `submit` records for the report (experiment tag `cv.verdicts_tag(grid)`): the grid's claims and
    verdict settings, and its price per GPU-hour (each cell's cost); `report.verdicts.settings_for` reads it back."""
    return json.dumps({"claims": list(claims), "tolerance": tolerance, "alpha": alpha,
                       "price_per_gpu_hour": price_per_gpu_hour})


def default_metric(dataset: str | None) -> str:
    """The error a dataset's claims compare by default: test_err (ImageNet: val_err, its test set)."""
    return cv.M_VAL_ERR if dataset == "imagenet" else cv.M_TEST_ERR


def _arch(name: str, variant: str | None, archs: Collection[str] | None) -> str:
    try:
        depth, _, shortcut = parse_arch(name, variant=variant)
    except ArchError as exc:
        raise ValueError(f"{name!r}: {exc.problem}") from None
    canonical = arch_name(depth, shortcut)
    if archs is not None and canonical not in archs:
        raise ValueError(f"{name!r} is not a network of this grid (it has {', '.join(archs)})")
    return canonical


def parse_claim(text: object, *, archs: Collection[str] | None = None, variant: str | None = None) -> Claim:
    """"resnet8-A < plain8 [on metric]" -> Claim; ValueError saying what is wrong (`archs`: the grid's networks)."""
    match = _CLAIM.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"{text!r}: expected '<arch> < <arch> [on <metric>]', e.g. 'resnet8-A < plain8'")
    better, worse = (_arch(match[k], variant, archs) for k in ("a", "b"))
    if better == worse:
        raise ValueError(f"{text!r} compares {better} with itself")
    metric = match["metric"]
    if metric is not None and metric not in CLAIM_METRICS:
        raise ValueError(f"{text!r}: unknown metric {metric!r} (metrics: {', '.join(CLAIM_METRICS)})")
    return Claim(better, worse, metric)
