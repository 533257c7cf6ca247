"""Terminal progress for a grid: cells done / running / pending, the best so far, time so far.

A Ray Tune `Callback` (it runs in the driver, beside the Tune loop) feeding a rich `Live`
line, and one summary line per finished cell printed above it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.text import Text

from orchestrator import conventions as cv
from orchestrator.cells import AnyCell, cell_from_dict
from resnetctl.redaction import for_rich, redact

try:  # Ray is imported lazily everywhere else; the progress callback needs Tune's base class
    from ray.tune import Callback
except ImportError:  # pragma: no cover - ray is a hard dependency
    Callback = object  # type: ignore[assignment,misc]


def _err(metrics: dict[str, Any]) -> tuple[str, float] | None:
    for key in (cv.M_TEST_ERR, cv.M_VAL_ERR):
        if isinstance(metrics.get(key), int | float):
            return key, float(metrics[key])
    return None


def _hms(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class GridProgress(Callback):
    """Live counts of the grid's cells, updated from Tune's trial events."""

    def __init__(self, cells: Iterable[AnyCell], *, skipped: int = 0, console: Console | None = None):
        self.names = {c.cell_id: c.name for c in cells}
        self.total = len(self.names) + skipped
        self.skipped = skipped
        self.console = console or Console(stderr=True)
        self.running: set[str] = set()
        self.done: set[str] = set()
        self.failed: set[str] = set()
        self.best: tuple[str, str, float] | None = None  # (cell name, metric, value)
        self.last: dict[str, dict[str, Any]] = {}
        self.start = time.monotonic()
        self._live: Live | None = None

    def __getstate__(self) -> dict[str, Any]:
        """Tune pickles its callbacks with the experiment state; the terminal handles stay here."""
        state = dict(self.__dict__)
        state["console"] = None
        state["_live"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.console = Console(stderr=True)

    # -- rendering ---------------------------------------------------------------------
    def status_line(self) -> Text:
        pending = self.total - self.skipped - len(self.done) - len(self.failed) - len(self.running)
        text = Text()
        text.append(f"cells {self.total}: ", style="bold")
        text.append(f"{len(self.done) + self.skipped} done", style="green")
        if self.skipped:
            text.append(f" ({self.skipped} skipped)")
        text.append(f", {len(self.running)} running", style="cyan")
        text.append(f", {max(pending, 0)} pending")
        if self.failed:
            text.append(f", {len(self.failed)} failed", style="red")
        if self.best is not None:
            name, key, value = self.best
            text.append(f" | best {key} {value:.2f}% ({name})")
        text.append(f" | {_hms(time.monotonic() - self.start)}")
        return text

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.update(self.status_line())

    def __enter__(self) -> GridProgress:
        self._live = Live(self.status_line(), console=self.console, refresh_per_second=2, transient=False)
        self._live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            self._live.update(self.status_line())
            self._live.__exit__(*exc)
            self._live = None
            if not self.console.is_terminal:  # rich leaves the last status line unterminated in logs
                self.console.line()

    # -- bookkeeping (also driven directly by tests) -----------------------------------
    def _cell_id(self, trial) -> str:
        return cell_from_dict(trial.config["cell"]).cell_id

    def cell_started(self, cell_id: str) -> None:
        self.running.add(cell_id)
        self._refresh()

    def cell_result(self, cell_id: str, metrics: dict[str, Any]) -> None:
        self.last[cell_id] = dict(metrics)
        self._refresh()

    def cell_finished(self, cell_id: str, *, error: str | None = None) -> str:
        self.running.discard(cell_id)
        name = self.names.get(cell_id, cell_id)
        metrics = self.last.get(cell_id, {})
        if error is not None:
            self.failed.add(cell_id)
            line = f"[red]FAILED[/] {for_rich(name)}: {for_rich(redact(error.splitlines()[0][:200] if error else 'error'))}"
        else:
            self.done.add(cell_id)
            scored = _err(metrics)
            if scored is not None and (self.best is None or scored[1] < self.best[2]):
                self.best = (name, scored[0], scored[1])
            parts = [f"[green]done[/] {for_rich(name)}"]
            if "epoch" in metrics:
                parts.append(f"epochs {int(metrics['epoch'])}")
            for key in (cv.M_TRAIN_ERR, cv.M_VAL_ERR, cv.M_TEST_ERR):
                if isinstance(metrics.get(key), int | float):
                    parts.append(f"{key} {metrics[key]:.2f}%")
            line = "  ".join(parts)
        self.console.print(line)
        self._refresh()
        return line

    # -- Tune callback hooks ----------------------------------------------------------
    def on_trial_start(self, iteration, trials, trial, **info):
        self.cell_started(self._cell_id(trial))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.cell_result(self._cell_id(trial), result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.cell_finished(self._cell_id(trial))

    def on_trial_error(self, iteration, trials, trial, **info):
        error = getattr(trial, "error_msg", None) or "trial failed"
        self.cell_finished(self._cell_id(trial), error=str(error))
