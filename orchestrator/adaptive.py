"""`submit --until-decided`: more seeds, round after round, only where a verdict is still undecided.

After the grid's cells finish, the report's verdicts are read back from the store: a claim that is
undecided (too few runs, or a difference not yet significant) or a cell whose interval is too wide to
judge against the paper's number names the cells behind it. Each of those cells' families (the same
network and axes, any seed) gets one more seed, a new cell made exactly as the grid would expand it
(`expand.with_seed`, so its id, run and checkpoints are those of the same cell however it came
about, and a rerun trains nothing twice); then the round repeats, until nothing is undecided or every
family behind an undecided verdict has `max_seeds` seeds, or the grid's `budget:` covers no more
seeds. The loop takes its runner, its measurement and the budget check as functions, so it is tested
without Ray.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from orchestrator.cells import Cell
from orchestrator.expand import with_seed
from orchestrator.spec import GridSpec


@dataclass(frozen=True)
class Undecided:
    """What a round measured: the cells behind undecided verdicts, and the undecided claims (for the log)."""

    cell_ids: frozenset[str] = frozenset()
    claims: tuple[str, ...] = ()
    cells: int = 0  # table cells whose interval is too wide (or has one run) for a verdict


def family(cell: Cell) -> tuple:
    """What a cell is apart from its seed: runs of one family are the seeds of one table cell."""
    return cell.dataset, cell.arch, tuple((axis, value) for axis, value in cell.axes if axis != "seed")


def more_seeds(spec: GridSpec, cells: Sequence[Cell], undecided: frozenset[str] | set[str],
               max_seeds: int) -> list[Cell]:
    """One new seed (the lowest unused) for each family with a cell in `undecided` and fewer than `max_seeds`."""
    families: dict[tuple, list[Cell]] = defaultdict(list)
    for cell in cells:
        if isinstance(cell, Cell):
            families[family(cell)].append(cell)
    added = []
    for members in families.values():
        seeds = {cell.seed for cell in members}
        if len(seeds) >= max_seeds or not any(cell.cell_id in undecided for cell in members):
            continue
        seed = next(s for s in itertools.count() if s not in seeds)
        added.append(with_seed(spec, min(members, key=lambda c: c.seed), seed))
    return added


def run_until_decided(spec: GridSpec, cells: Sequence[Cell], *, max_seeds: int,
                      run_cells: Callable[[list[Cell], int], int], measure: Callable[[], Undecided],
                      log: Callable[[str], None] = print,
                      affordable: Callable[[list[Cell], list[Cell]], list[Cell]] | None = None) -> int:
    """Run the cells (`run_cells(cells, round)` -> exit status), measure, add seeds where undecided, repeat.

    `affordable(all cells, new seeds)` keeps the new seeds the grid's budget still covers. Returns the first
    non-zero status of a round, else 0 once nothing is undecided, the cap is reached or the budget is spent.
    """
    todo, round_number = list(cells), 1
    while True:
        status = run_cells(todo, round_number)
        if status:
            return status
        found = measure()
        added = more_seeds(spec, todo, found.cell_ids, max_seeds)
        what = _describe(found)
        if not added:
            log(f"until decided: {what} after round {round_number}" + (
                f"; every cell behind them has {max_seeds} seeds (--max-seeds)" if found.cell_ids else ""))
            return 0
        if affordable is not None:
            added = affordable([*todo, *added], added)
            if not added:
                log(f"until decided: {what} after round {round_number}; the grid's budget covers no more seeds")
                return 0
        log(f"until decided, round {round_number + 1}: {what}: adding a seed to "
            + ", ".join(f"{c.arch} (seed {c.seed})" for c in added))
        todo += added
        round_number += 1


def _describe(found: Undecided) -> str:
    if not found.cell_ids:
        return "every verdict decided"
    parts = []
    if found.claims:
        parts.append(f"{len(found.claims)} claim(s) undecided ({'; '.join(found.claims)})")
    if found.cells:
        parts.append(f"{found.cells} table cell(s) without a verdict")
    return ", ".join(parts) or "verdicts undecided"


def measure_store(spec: GridSpec) -> Undecided:
    """The grid's verdicts as `resnetctl report` reaches them (with the grid file's claims and settings), read
    from its store."""
    from orchestrator.report.source import open_reader, select_runs
    from orchestrator.report.stats import UNDECIDED
    from orchestrator.report.tables import Stat
    from orchestrator.report.verdicts import Settings, build_report
    from orchestrator.tracking import resolve_tracking_uri

    reader = open_reader(resolve_tracking_uri(spec.tracking.uri))
    selection = select_runs(reader, grid=spec.name, experiment=spec.experiment_name)
    settings = Settings(spec.verdicts.tolerance, spec.verdicts.alpha, tuple(spec.claims))
    report = build_report(selection, reader.histories, settings=settings)
    claims = tuple(f"{r.claim.text} ({r.dataset})" for r in report.claims if r.verdict == UNDECIDED)
    cells = sum(isinstance(v, Stat) and v.verdict == UNDECIDED for t in report.tables for row in t.rows for v in row)
    return Undecided(frozenset(report.undecided_cell_ids()), claims, cells)


def run_grid_until_decided(spec: GridSpec, cells: Sequence[Cell], *, max_seeds: int, restart: bool = False,
                           **run_options) -> int:
    """`resnetctl submit --until-decided`: the grid runner, round after round (`restart` only in the first)."""
    from rich.console import Console

    from orchestrator.grid_runner import run_grid

    console = Console(stderr=True)

    def run_cells(todo: list[Cell], round_number: int) -> int:
        return run_grid(spec, todo, restart=restart and round_number == 1, **run_options)

    def affordable(todo: list[Cell], added: list[Cell]) -> list[Cell]:
        from orchestrator.estimate import within_budget

        return within_budget(spec, todo, added)[0]

    return run_until_decided(spec, cells, max_seeds=max_seeds, run_cells=run_cells, measure=lambda: measure_store(spec),
                             log=lambda text: console.print(text, markup=False), affordable=affordable)


__all__ = ["Undecided", "family", "measure_store", "more_seeds", "run_grid_until_decided", "run_until_decided"]
