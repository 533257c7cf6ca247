"""The paper's tables (6, 2, 3, 4), a generic pivot and the per-run cells table, from run records.

Tables hold typed values (`Stat`, `PaperStat`, `Delta`, `cost.Cost`, `None` for an empty mark) and
leave formatting to `render`, so every output format shows the same numbers. Each of our cells has
its cost beside it: the hours its finished runs logged (`cost.cost_of`).
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from orchestrator import conventions as cv
from orchestrator.claims import DEFAULT_TOLERANCE
from orchestrator.report import paper, stats
from orchestrator.report.cost import Cost, cost_of, cost_words
from orchestrator.report.records import RunRecord, Selection

EMPTY = None  # an empty mark: no finished run for this cell


# What each of our cells shows, for the protocol line of every table
STAT_WORDS = "each of our cells: best (mean±std, 95% t-interval of the mean, n runs)"


@dataclass(frozen=True)
class Stat:
    """Our error over seeds: best (lowest), mean, sample std and 95% t-interval of the mean, and, where the
    paper gives a number for the cell (`reference`), the verdict against it (`stats.cell_verdict`)."""

    values: tuple[float, ...]
    reference: float | None = None  # the paper's number: its mean where it gives one, else its one value
    tolerance: float = DEFAULT_TOLERANCE
    cell_ids: tuple[str, ...] = field(default=(), compare=False)  # the cells measured (adaptive seeding)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def best(self) -> float:
        return min(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float:
        return statistics.stdev(self.values) if self.n > 1 else 0.0

    @cached_property
    def ci95(self) -> tuple[float, float] | None:
        return stats.t_interval(self.values)

    @cached_property
    def verdict(self) -> str | None:
        """reproduced | better | worse | undecided against `reference`; None where the paper gives none."""
        return stats.cell_verdict(self.values, self.reference, self.tolerance)


@dataclass(frozen=True)
class Delta:
    """Ours minus the paper's (best against best), in percentage points."""

    value: float


@dataclass
class Table:
    key: str  # "table6", "table3-center", "pivot", "cells"
    title: str
    protocol: str  # how our numbers and the paper's were measured
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    missing: int = 0  # planned cells without a finished run
    cost: Cost = field(default_factory=Cost)  # the table's runs together (the compute line)
    counts_compute: bool = True  # False where the rows are no runs (the claims): no compute line

    @property
    def worker_hours(self) -> float:
        return self.cost.worker_hours

    @property
    def gpu_hours(self) -> float:
        return self.cost.gpu_hours


def latest_finished(runs: Iterable[RunRecord]) -> list[RunRecord]:
    """Finished runs, one per cell: a rerun of the same cell replaces the earlier run."""
    best: dict[str, RunRecord] = {}
    for run in runs:
        if run.finished:
            kept = best.get(run.cell_id)
            if kept is None or (run.end_time or 0, run.run_id) > (kept.end_time or 0, kept.run_id):
                best[run.cell_id] = run
    return sorted(best.values(), key=lambda r: (r.arch, r.seed if r.seed is not None else -1, r.run_id))


def stat(runs: Sequence[RunRecord], metric: str, reference: float | paper.PaperStat | None = None,
         tolerance: float = DEFAULT_TOLERANCE) -> Stat | None:
    """Our cell over `runs`, judged against the paper's number `reference` where there is one."""
    measured = [(r.cell_id, v) for r, v in ((r, r.final_metric(metric)) for r in runs) if v is not None]
    if isinstance(reference, paper.PaperStat):
        reference = reference.mean if reference.mean is not None else reference.best
    return Stat(tuple(v for _, v in measured), reference, tolerance, tuple(c for c, _ in measured)) \
        if measured else EMPTY


def delta(ours: Stat | None, theirs: float | None) -> Delta | None:
    return Delta(ours.best - theirs) if ours is not None and theirs is not None else EMPTY


def cell_cost(runs: Sequence[RunRecord], price_per_gpu_hour: float | None) -> Cost | None:
    """A table cell's cost: its finished runs' hours; an empty mark where it has none."""
    return cost_of(runs, price_per_gpu_hour) if runs else EMPTY


def _format_count(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.1f}K"


class RunIndex:
    """Indexes a selection once: finished runs and planned cells by (dataset, protocol, arch)."""

    def __init__(self, selection: Selection, tolerance: float = DEFAULT_TOLERANCE,
                 price_per_gpu_hour: float | None = None):
        self.runs = selection.runs
        self.tolerance = tolerance  # how far the paper's number may lie outside our interval (cell verdicts)
        self.price = price_per_gpu_hour  # money per GPU-hour, for each cell's cost (None: hours only)
        self.done = latest_finished(self.runs)
        self.finished: dict[tuple, list[RunRecord]] = defaultdict(list)
        for r in self.done:
            self.finished[(r.dataset, r.eval_protocol, r.arch)].append(r)
        # `submit` opens a (SCHEDULED) run for every cell of the grid up front: the runs are the plan
        self.planned: dict[tuple, set[str]] = defaultdict(set)  # (dataset, protocol, arch) -> cell ids
        for r in self.runs:
            self.planned[(r.dataset, r.eval_protocol, r.arch)].add(r.cell_id)
        self.failed = [r for r in self.runs if not r.finished and _failed(r)]
        self.unfinished = [r for r in self.runs if not r.finished and not _failed(r)]

    def get(self, dataset: str, protocol: str | None, arch: str) -> list[RunRecord]:
        if protocol is None:  # any protocol
            return [r for (d, _, a), runs in self.finished.items() if d == dataset and a == arch for r in runs]
        return self.finished.get((dataset, protocol, arch), [])

    def is_planned(self, dataset: str, protocol: str | None, arch: str) -> bool:
        return bool(self.planned_cells(dataset, protocol, arch))

    def planned_cells(self, dataset: str, protocol: str | None, arch: str) -> set[str]:
        """Cell ids of the grid's cells of this arch (any protocol when None), finished or not."""
        keys = [k for k in self.planned if k[0] == dataset and k[2] == arch and protocol in (None, k[1])]
        return set().union(*(self.planned[k] for k in keys))

    def protocols(self, dataset: str) -> list[str]:
        return sorted({p or "" for d, p, _ in self.planned if d == dataset})


def _failed(run: RunRecord) -> bool:
    return run.status in ("FAILED", "KILLED") or run.tags.get(cv.TAG_STATUS) == cv.STATUS_FAILED


def _account(table: Table, grid: RunIndex, dataset: str, protocol: str | None, archs: Sequence[str]) -> None:
    """Missing-cell count, not-run note and compute totals of a paper table."""
    used, missing_by_arch, not_run = [], {}, []
    for arch in archs:
        runs = grid.get(dataset, protocol, arch)
        used += runs
        planned = grid.planned_cells(dataset, protocol, arch)
        if planned:
            gap = len(planned - {r.cell_id for r in runs})
            if gap:
                missing_by_arch[arch] = gap
        elif not arch.startswith("plain") or table.key.startswith(("table2", "table3")):
            not_run.append(arch)
    table.missing = sum(missing_by_arch.values())
    if missing_by_arch:
        listed = ", ".join(f"{a} ({n})" for a, n in missing_by_arch.items())
        table.notes.append(f"missing: {table.missing} planned cell(s) without a finished run: {listed}")
    if not_run:
        table.notes.append(f"not in this grid: {', '.join(not_run)}")
    table.cost = cost_of(used, grid.price)


def _ours(dataset: str, protocol: str | None, metric: str, runs: Iterable[RunRecord]) -> str:
    how = paper.EVAL_PROTOCOL_WORDS.get(protocol or "", protocol or "eval protocol not tagged")
    runs = list(runs)
    if runs and all(r.is_evaluation for r in runs):
        return f"ours: {dataset} {metric} of {_evaluation_words(runs)}; {how}"
    return f"ours: {dataset} {metric} after the last epoch; {_training_words(runs)}; {how}"


def _evaluation_words(runs: Sequence[RunRecord]) -> str:
    """Which trained networks evaluation runs tested, and on which split."""
    grids = sorted({g for r in runs for g in (r.tags.get(cv.TAG_SOURCE_GRID) or "").split(",") if g})
    splits = sorted({r.tags.get(cv.TAG_EVAL_SPLIT, "?") for r in runs})
    source = f"grid {', '.join(grids)}" if grids else "registered models"
    return f"the finished networks of {source}, each tested once after training on its {'/'.join(splits)} split"


def _training_words(runs: Iterable[RunRecord]) -> str:
    """What the runs trained on and how they normalised, from their params; differing values joined by '/'."""
    runs = list(runs)
    trained = sorted({_images_words(r) for r in runs if cv.PARAM_TRAIN_IMAGES in r.params})
    normalised = sorted({paper.NORMALIZATION_WORDS.get(n, n) for r in runs
                         if (n := r.params.get(cv.PARAM_NORMALIZATION))})
    plateau = _plateau_words(runs)
    precision = _precision_words(runs)
    return (f"trained on {' / '.join(trained) or 'images not logged'}, "
            f"{' / '.join(normalised) or 'normalisation not logged'}" + (f"; {plateau}" if plateau else "")
            + (f"; {precision}" if precision else ""))


def _precision_words(runs: Sequence[RunRecord]) -> str:
    """Mixed precision the runs trained in (GPU cells default to bf16, `presets.GPU_PRESET`): a departure from
    the paper's fp32. `amp` is ignored on a CPU, so CPU runs say nothing."""
    modes = sorted({amp for r in runs if (amp := r.params.get(cv.param_train("amp"), "off")) != "off"
                    and r.params.get(cv.param_numerics("device"), "cpu") != "cpu"})
    return f"{' / '.join(modes)} mixed precision (the paper: fp32)" if modes else ""


def _plateau_words(runs: Sequence[RunRecord]) -> str:
    """The plateau rule the runs trained with (ImageNet, Sec. 3.4): metric, split, patience, drops allowed and made."""
    rules = set()
    for run in runs:
        if run.params.get(cv.param_train("lr_on_plateau")) != "True":
            continue
        split = run.params.get(cv.param_train("plateau_split"), "val")
        cap = run.params.get(cv.param_train("plateau_max_drops"), "None")
        rules.add(f"lr x{run.params.get(cv.param_train('lr_gamma'), '?')} after "
                  f"{run.params.get(cv.param_train('plateau_patience'), '?')} epochs without a lower {split} top-1 "
                  f"error ({paper.PLATEAU_SPLIT_WORDS.get(split, split)}), "
                  + ("no limit on drops" if cap == "None" else f"at most {cap} drops"))
    if not rules:
        return ""
    made = sorted({int(d) for r in runs if (d := r.metric(cv.M_PLATEAU_DROPS)) is not None})
    return " / ".join(sorted(rules)) + (f"; drops made: {'/'.join(map(str, made))}" if made else "")


def _images_words(run: RunRecord) -> str:
    words = f"{int(run.params[cv.PARAM_TRAIN_IMAGES]):,} images"
    split = run.params.get(cv.PARAM_TRAIN_SPLIT)
    return f"{words} ({paper.TRAIN_SPLIT_WORDS.get(split, split)})" if split else words


def table6(grid: RunIndex) -> Table | None:
    dataset = "cifar10"
    if not any(d == dataset for d, _, _ in grid.planned):
        return None
    extra = {r.depth for r in grid.runs if r.dataset == dataset and r.depth is not None
             and r.shortcut in ("plain", paper.TABLE6_SHORTCUT)}
    by_depth = {row.depth: row for row in paper.TABLE6}
    depths = [row.depth for row in paper.TABLE6] + sorted(extra - set(by_depth))
    protocols = sorted({p for d, p, _ in grid.planned if d == dataset and p}) or [None]
    ours = _ours(dataset, "/".join(p or "" for p in protocols) or None, cv.M_TEST_ERR,
                 (r for r in grid.runs if r.dataset == dataset))
    table = Table(
        "table6", "Table 6: CIFAR-10 test error (%)",
        f"{ours}; paper: {paper.TABLE6_PROTOCOL}",
        ("layers", "params", "params (paper)", "plain err", "plain err (paper)", "ResNet err",
         "ResNet err (paper)", "Δ ResNet", "runs", "plain cost", "ResNet cost"),
    )
    archs = []
    for depth in depths:
        plain_arch, res_arch = f"plain{depth}", f"resnet{depth}-{paper.TABLE6_SHORTCUT}"
        archs += [plain_arch, res_arch]
        plain_runs, res_runs = grid.get(dataset, None, plain_arch), grid.get(dataset, None, res_arch)
        planned = sum(len(grid.planned_cells(dataset, None, a)) for a in (plain_arch, res_arch))
        ref = by_depth.get(depth)
        counted = res_runs or plain_runs
        params = _format_count(int(counted[0].params[cv.PARAM_NUM_PARAMS])) if counted and \
            cv.PARAM_NUM_PARAMS in counted[0].params else EMPTY
        ours_res = stat(res_runs, cv.M_TEST_ERR, ref.resnet if ref else None, grid.tolerance)
        table.rows.append((
            depth, params, ref.params if ref else EMPTY, stat(plain_runs, cv.M_TEST_ERR), EMPTY, ours_res,
            ref.resnet if ref else EMPTY, delta(ours_res, ref.resnet.best if ref else None),
            f"{len(plain_runs) + len(res_runs)}/{planned}" if planned else EMPTY,
            cell_cost(plain_runs, grid.price), cell_cost(res_runs, grid.price),
        ))
    _account(table, grid, dataset, None, archs)
    return table


def _imagenet_table(grid: RunIndex, key: str, title: str, rows: Sequence[paper.ImageNetRow], protocol: str,
                    paper_protocol: str, with_top5: bool) -> Table | None:
    dataset = "imagenet"
    if not any(grid.is_planned(dataset, protocol, row.arch) for row in rows):
        return None
    how = _ours(dataset, protocol, "val_err" + (" / val_top5_err" if with_top5 else ""),
                (r for r in grid.runs if r.dataset == dataset and r.eval_protocol == protocol))
    if protocol != (paper.TABLE4_EVAL_PROTOCOL if key.startswith("table4") else cv.EVAL_10CROP):
        how += " (not the paper's protocol)"
    columns = ("model", "top-1 err", "top-1 (paper)", "Δ top-1")
    if with_top5:
        columns += ("top-5 err", "top-5 (paper)", "Δ top-5")
    table = Table(f"{key}-{protocol}", title, f"{how}; paper: {paper_protocol}",
                  columns + ("runs", "cost"))
    for row in rows:
        runs = grid.get(dataset, protocol, row.arch)
        top1 = stat(runs, cv.M_VAL_ERR, row.top1, grid.tolerance)
        values: tuple[Any, ...] = (row.label, top1, row.top1, delta(top1, row.top1))
        if with_top5:
            top5 = stat(runs, cv.M_VAL_TOP5_ERR, row.top5, grid.tolerance)
            values += (top5, row.top5, delta(top5, row.top5))
        planned = len(grid.planned_cells(dataset, protocol, row.arch))
        values += (f"{len(runs)}/{planned}" if planned else EMPTY, cell_cost(runs, grid.price))
        table.rows.append(values)
    _account(table, grid, dataset, protocol, [row.arch for row in rows])
    return table


def imagenet_tables(grid: RunIndex) -> list[Table]:
    tables = []
    for protocol in grid.protocols("imagenet"):
        if protocol == paper.TABLE4_EVAL_PROTOCOL:
            found = _imagenet_table(grid, "table4", "Table 4: ImageNet single-model error (%), multi-scale",
                                    paper.TABLE4, protocol, paper.TABLE4_PROTOCOL, with_top5=True)
            tables += [found] if found else []
            continue
        for key, title, rows, text, top5 in (
            ("table2", "Table 2: ImageNet top-1 error (%), plain vs ResNet", paper.TABLE2, paper.TABLE2_PROTOCOL,
             False),
            ("table3", "Table 3: ImageNet error (%), deeper ResNets and shortcut options", paper.TABLE3,
             paper.TABLE3_PROTOCOL, True),
        ):
            found = _imagenet_table(grid, key, title, rows, protocol, text, with_top5=top5)
            tables += [found] if found else []
    return tables


def ensembles_table(grid: RunIndex) -> Table | None:
    """Every ensemble evaluation: its members' averaged softmax, tested once; ImageNet's beside Table 5's 3.57."""
    planned = {r.cell_id: r for r in sorted(grid.runs, key=lambda r: r.start_time or 0) if r.ensemble}
    if not planned:
        return None
    done = {r.cell_id: r for r in grid.done if r.ensemble}
    table = Table("ensembles", "Ensembles: averaged softmax of several networks (Table 5)",
                  "ours: the members' softmax averaged image by image, tested once on the split named (ImageNet: "
                  f"val); paper: {paper.TABLE5_PROTOCOL}",
                  ("ensemble", "protocol", "split", "members", "top-1 err", "top-5 err", "top-5 (paper)",
                   "cost"))
    for cell_id, run in sorted(planned.items(), key=lambda item: (item[1].ensemble, item[1].eval_protocol or "")):
        found = done.get(cell_id)
        split = run.tags.get(cv.TAG_EVAL_SPLIT, "test")
        top1_key, top5_key = f"{split}_err", f"{split}_top5_err"
        runs = [found] if found else []
        table.rows.append((run.ensemble, run.eval_protocol, split, run.tags.get(cv.TAG_ENSEMBLE_MEMBERS, EMPTY),
                           stat(runs, top1_key), stat(runs, top5_key),
                           paper.TABLE5_RESNET_TOP5 if run.dataset == "imagenet" else EMPTY,
                           cell_cost(runs, grid.price)))
    table.missing = len(set(planned) - set(done))
    if table.missing:
        table.notes.append(f"missing: {table.missing} planned ensemble evaluation(s) without a finished run")
    table.cost = cost_of(done.values(), grid.price)
    return table


def _sort_key(value: str | None) -> tuple:
    if value is None:
        return (2, 0, "")
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0, value)


def pivot(grid: RunIndex, rows: str, cols: str, metric: str) -> Table:
    """Any metric of any grid by two axes; everything else (seeds, ...) is aggregated as best (mean+-std)."""
    cells: dict[tuple, list[RunRecord]] = defaultdict(list)
    planned: dict[tuple, set[str]] = defaultdict(set)  # cell ids
    for r in grid.runs:
        if not r.ensemble:  # ensembles have a table of their own
            planned[(r.value(rows), r.value(cols))].add(r.cell_id)
    for r in grid.done:
        if not r.ensemble:
            cells[(r.value(rows), r.value(cols))].append(r)
    row_values = sorted({k[0] for k in planned}, key=_sort_key)
    col_values = sorted({k[1] for k in planned}, key=_sort_key)
    table = Table("pivot", f"{metric} (%) by {rows} x {cols}", f"ours: {metric} at the last epoch",
                  (rows, *(name for c in col_values for name in (f"{cols}={c}", f"cost ({cols}={c})"))))
    for rv in row_values:
        found = [cells.get((rv, c), []) for c in col_values]
        table.rows.append((rv, *(v for runs in found for v in (stat(runs, metric), cell_cost(runs, grid.price)))))
    table.missing = sum(len(ids - {r.cell_id for r in cells.get(key, [])}) for key, ids in planned.items())
    if table.missing:
        table.notes.append(f"missing: {table.missing} planned cell(s) without a finished run")
    table.notes.append("each cell: the runs sharing its row and column")
    table.cost = cost_of((r for r in grid.done if not r.ensemble), grid.price)
    return table


def cells_table(grid: RunIndex) -> Table:
    """Every run of the grid, finished or not: its final errors and the compute it used."""
    table = Table("cells", "Cells: final errors and compute per run",
                  "ours: each run's final test (the last epoch's value where it ran none)",
                  ("run", "arch", "dataset", "seed", "status", "test err", "val err", "cost", "model"))
    order = sorted(grid.runs, key=lambda r: (r.dataset or "", r.arch, _sort_key(str(r.seed)), r.start_time or 0,
                                             r.run_id))
    kept = {r.run_id for r in grid.done}
    for r in order:
        status = ("finished" if r.run_id in kept else "superseded") if r.finished else r.status
        table.rows.append((r.name, r.arch, r.dataset, r.seed, status, r.final_metric(cv.M_TEST_ERR),
                           r.final_metric(cv.M_VAL_ERR),
                           cost_of([r], grid.price), ", ".join(r.model_versions) or EMPTY))
    table.cost = cost_of(grid.runs, grid.price)
    counts = f"{len(grid.done)} finished"
    if len(kept) < sum(r.finished for r in grid.runs):
        counts += f", {sum(r.finished for r in grid.runs) - len(kept)} superseded by a rerun of the same cell"
    if grid.failed:
        counts += f", {len(grid.failed)} failed ({', '.join(sorted(r.name for r in grid.failed))})"
    if grid.unfinished:
        counts += f", {len(grid.unfinished)} not finished"
    table.notes.append(counts)
    table.notes.extend(disagreeing_reruns(grid.runs))
    return table


# besides the cell id: what must match for two runs of a cell to end with the same numbers (`training.numerics`)
AGREEMENT_PARAMS = (*cv.NUMERICS_PARAMS, cv.param_train("deterministic"), "resources.workers_per_cell")


def _should_agree(run: RunRecord) -> bool:
    """Whether reruns with the same numerics should reproduce this run: on a CPU, or with `deterministic`."""
    device = run.params.get(cv.param_numerics("device"))
    return device == "cpu" or run.params.get(cv.param_train("deterministic")) == "True"


def disagreeing_reruns(runs: Iterable[RunRecord]) -> list[str]:
    """A note per cell whose finished runs should agree (same cell, same numerics params, a CPU or the
    `deterministic` switch) and end with different test errors. Runs without the numerics params are left out."""
    groups: dict[tuple, list[RunRecord]] = defaultdict(list)
    for run in runs:
        if run.finished and not run.is_evaluation and all(k in run.params for k in cv.NUMERICS_PARAMS) \
                and _should_agree(run):
            groups[(run.cell_id, *(run.params.get(k) for k in AGREEMENT_PARAMS))].append(run)
    notes = []
    for members in groups.values():
        errors = {r.name + f" ({r.run_id[:8]})": r.final_metric(cv.M_TEST_ERR) for r in members}
        if len({e for e in errors.values() if e is not None}) > 1:
            listed = ", ".join(f"{name}: {err:g}" for name, err in sorted(errors.items()) if err is not None)
            notes.append(f"runs of cell {members[0].cell_id} should agree (same config, seed and numerics) and "
                         f"do not: test err {listed}")
    return notes


def legend(tolerance: float) -> str:
    """What a cell's verdict mark means (render draws the marks)."""
    return (f"verdict against the paper's number (its mean where it gives one): reproduced when it lies within our "
            f"95% interval widened by ±{tolerance:g} and the interval is no wider than ±{tolerance:g}; better or "
            f"worse when it lies above or below that widened interval; undecided with one run or a wider interval")


def _explain(table: Table, tolerance: float) -> None:
    """The protocol line says which statistic our cells are; tables judged against the paper get the legend."""
    cells = [v for row in table.rows for v in row if isinstance(v, Stat)]
    if table.key != "cells":  # the cells table shows each run's own value
        table.protocol += f"; {STAT_WORDS}"
    if any(c.startswith("Δ") for c in table.columns):
        table.protocol += "; Δ: our best minus the paper's best"
    if any(c.reference is not None for c in cells):
        table.notes.append(legend(tolerance))


def build_tables(selection: Selection, *, rows: str | None = None, cols: str | None = None,
                 metric: str | None = None, tolerance: float = DEFAULT_TOLERANCE,
                 index: RunIndex | None = None) -> list[Table]:
    """Every table that applies to the selection, paper tables first, then the pivot and the cells (`index`: the
    selection's, where the caller has built it)."""
    grid = index or RunIndex(selection, tolerance)
    tables = [t for t in [table6(grid)] if t] + imagenet_tables(grid)
    from orchestrator.report.detection import detection_tables  # it imports this module

    tables += detection_tables(grid)  # Tables 7-8, from detection cells
    if rows or cols or not tables and any(not r.ensemble for r in grid.runs):
        if metric is None:
            metric = cv.M_TEST_ERR if any(r.metric(cv.M_TEST_ERR) is not None for r in grid.done) else cv.M_VAL_ERR
        tables.append(pivot(grid, rows or cv.PARAM_DEPTH, cols or cv.PARAM_SHORTCUT, metric))
    tables += [t for t in [ensembles_table(grid)] if t]
    tables.append(cells_table(grid))
    for table in tables:
        _explain(table, tolerance)
        if any(isinstance(v, Cost) for row in table.rows for v in row):
            table.notes.append(cost_words(grid.price, per_run=table.key == "cells"))
    return tables


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value)
