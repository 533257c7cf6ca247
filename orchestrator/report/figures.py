"""The paper's figures from metric histories: training curves (Figs. 4 and 6) and layer responses (Fig. 7).

Figures are built as `matplotlib.figure.Figure` objects (no pyplot state, Agg canvas), so tests
can inspect their lines and the CLI can save them as PNG files or embed them in HTML. Each comes
with a caption (which paper figure, which runs) and alt text (what the lines show, with their
last values) for the HTML page, both from the same runs and histories as the lines.
"""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from matplotlib.figure import Figure

from orchestrator import conventions as cv
from orchestrator.report.records import Histories, RunRecord, StoreReader
from orchestrator.report.tables import latest_finished

HISTORY_KEYS = (cv.M_TRAIN_ERR, cv.M_VAL_ERR, cv.M_TEST_ERR, cv.M_ITERATION, cv.M_LAYER_RESPONSE)
_FIGURE_NAMES = {"cifar10": "fig6", "imagenet": "fig4"}
_PAPER_FIGURES = {"fig6": "Fig. 6 (CIFAR-10 training curves)", "fig4": "Fig. 4 (ImageNet training curves)",
                  "curves": "Training curves in the manner of Figs. 4 and 6"}


@dataclass(frozen=True)
class ReportFigure:
    """A drawn figure with what a reader needs beside it: a caption and alt text."""

    name: str  # file stem: "fig6_cifar10_curves"
    figure: Figure
    caption: str  # which paper figure, which runs
    alt: str  # what the image shows, for a reader who cannot see it

    @cached_property
    def png(self) -> bytes:
        return png_bytes(self.figure)


def mean_series(runs: Sequence[RunRecord], histories: Histories, key: str) -> list[tuple[int, float]]:
    """A metric averaged over seeds, step by step (steps some seeds lack average the others)."""
    by_step: dict[int, list[float]] = defaultdict(list)
    for run in runs:
        for step, value in histories.get(run.run_id, {}).get(key, []):
            by_step[step].append(value)
    return [(step, sum(vals) / len(vals)) for step, vals in sorted(by_step.items())]


def _eval_metric(dataset: str, runs: Sequence[RunRecord], histories: Histories) -> str:
    """ImageNet curves use the validation error (Fig. 4), CIFAR's the test error (Fig. 6)."""
    if dataset != "imagenet" and any(histories.get(r.run_id, {}).get(cv.M_TEST_ERR) for r in runs):
        return cv.M_TEST_ERR
    return cv.M_VAL_ERR


def _depth_order(arch_runs: dict[str, list[RunRecord]]) -> list[str]:
    return sorted(arch_runs, key=lambda a: (arch_runs[a][0].depth or 0, a))


def training_curves(dataset: str, runs: Sequence[RunRecord], histories: Histories) -> Figure:
    """Plain nets left, ResNets right; per network its training error dashed and eval error solid."""
    eval_key = _eval_metric(dataset, runs, histories)
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    groups: dict[bool, dict[str, list[RunRecord]]] = {False: defaultdict(list), True: defaultdict(list)}
    several = len({run.eval_protocol for run in runs}) > 1  # never average across evaluation protocols
    for run in runs:
        label = f"{run.arch} ({run.eval_protocol})" if several else run.arch
        groups[run.shortcut != "plain"][label].append(run)
    for ax, residual in zip(axes, (False, True), strict=True):
        arch_runs = groups[residual]
        for index, arch in enumerate(_depth_order(arch_runs)):
            members = arch_runs[arch]
            iterations = dict(mean_series(members, histories, cv.M_ITERATION))
            color = f"C{index % 10}"
            for key, style in ((cv.M_TRAIN_ERR, "--"), (eval_key, "-")):
                series = mean_series(members, histories, key)
                if not series:
                    continue
                xs = [iterations.get(step, step) for step, _ in series]
                ax.plot(xs, [v for _, v in series], linestyle=style, color=color,
                        linewidth=1.0 if style == "--" else 1.8, label=f"{arch} {key}")
        ax.set_title(("ResNet" if residual else "plain") + f" ({dataset})")
        ax.set_xlabel("iteration" if any(mean_series(m, histories, cv.M_ITERATION) for m in arch_runs.values())
                      else "epoch")
        ax.grid(alpha=0.3)
        if arch_runs:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no finished runs", ha="center", va="center", transform=ax.transAxes)
    axes[0].set_ylabel("error (%): train dashed, " + eval_key.replace("_err", "") + " solid")
    return fig


def layer_responses(dataset: str, runs: Sequence[RunRecord], histories: Histories) -> Figure:
    """Std of each 3x3 conv's response (after BN, before the nonlinearity): layer order, then sorted."""
    fig = Figure(figsize=(9, 6.5), layout="constrained")
    top, bottom = fig.subplots(2, 1)
    arch_runs: dict[str, list[RunRecord]] = defaultdict(list)
    for run in runs:
        if histories.get(run.run_id, {}).get(cv.M_LAYER_RESPONSE):
            arch_runs[run.arch].append(run)
    for index, arch in enumerate(sorted(arch_runs, key=lambda a: (arch_runs[a][0].shortcut != "plain",
                                                                  arch_runs[a][0].depth or 0))):
        series = mean_series(arch_runs[arch], histories, cv.M_LAYER_RESPONSE)
        style = "--" if arch.startswith("plain") else "-"
        top.plot([s + 1 for s, _ in series], [v for _, v in series], style, color=f"C{index % 10}", label=arch)
        ordered = sorted((v for _, v in series), reverse=True)
        bottom.plot(range(1, len(ordered) + 1), ordered, style, color=f"C{index % 10}", label=arch)
    top.set_title(f"std of layer responses ({dataset}): original order")
    bottom.set_title("sorted by magnitude")
    for ax in (top, bottom):
        ax.set_xlabel("layer index")
        ax.set_ylabel("std")
        ax.grid(alpha=0.3)
        if arch_runs:
            ax.legend(fontsize=7)
    return fig


def build_report_figures(runs: Sequence[RunRecord], reader: StoreReader) -> list[ReportFigure]:
    """Every figure the finished runs support, with its caption and alt text, in file-stem order."""
    done = latest_finished(runs)
    histories = reader.histories([r.run_id for r in done], HISTORY_KEYS)
    by_dataset: dict[str, list[RunRecord]] = defaultdict(list)
    for run in done:
        by_dataset[run.dataset or "unknown"].append(run)
    figures: list[ReportFigure] = []
    for dataset, members in sorted(by_dataset.items()):
        prefix = _FIGURE_NAMES.get(dataset, "curves")
        drawn = [r for r in members if histories.get(r.run_id, {}).get(cv.M_TRAIN_ERR)]
        if drawn:
            figures.append(ReportFigure(f"{prefix}_{dataset}_curves", training_curves(dataset, members, histories),
                                        _curves_caption(prefix, dataset, drawn),
                                        _curves_alt(dataset, drawn, histories)))
        drawn = [r for r in members if histories.get(r.run_id, {}).get(cv.M_LAYER_RESPONSE)]
        if drawn:
            figures.append(ReportFigure(f"fig7_{dataset}_layer_responses", layer_responses(dataset, members, histories),
                                        _responses_caption(dataset, drawn), _responses_alt(dataset, drawn, histories)))
    return sorted(figures, key=lambda f: f.name)


def build_figures(runs: Sequence[RunRecord], reader: StoreReader) -> dict[str, Figure]:
    """Every figure the finished runs support, keyed by file stem ("fig6_cifar10_curves")."""
    return {f.name: f.figure for f in build_report_figures(runs, reader)}


def _by_arch(runs: Sequence[RunRecord]) -> dict[str, list[RunRecord]]:
    """The runs by network, plain nets first, then by depth (the order a reader scans the legend in)."""
    groups: dict[str, list[RunRecord]] = defaultdict(list)
    for run in runs:
        groups[run.arch].append(run)
    order = sorted(groups, key=lambda a: (groups[a][0].shortcut != "plain", groups[a][0].depth or 0, a))
    return {arch: groups[arch] for arch in order}


def _runs_words(runs: Sequence[RunRecord]) -> str:
    """"plain8 (seeds 0, 1), resnet8-A (seed 0) of grid g": the networks drawn and their seeds."""
    by_arch = _by_arch(runs)
    parts = []
    for arch in by_arch:
        seeds = sorted(r.seed for r in by_arch[arch] if r.seed is not None)
        parts.append(f"{arch} ({'seed' if len(seeds) == 1 else 'seeds'} {', '.join(map(str, seeds))})" if seeds
                     else f"{arch} ({len(by_arch[arch])} runs)")
    grids = sorted({r.grid for r in runs if r.grid})
    return ", ".join(parts) + (f" of grid {', '.join(grids)}" if grids else "")


def _curves_caption(prefix: str, dataset: str, runs: Sequence[RunRecord]) -> str:
    return (f"{_PAPER_FIGURES[prefix]}, ours on {dataset}: training error (dashed) and evaluation error (solid), "
            f"plain networks left, ResNets right, each line the mean over its seeds. "
            f"Runs: {_runs_words(runs)} ({len(runs)} finished).")


def _last_means(runs: Sequence[RunRecord], histories: Histories, key: str) -> list[str]:
    """"resnet8-A 12.30" per network: the last value of the seeds' mean series of `key`."""
    words = []
    for arch, members in _by_arch(runs).items():
        series = mean_series(members, histories, key)
        if series:
            words.append(f"{arch} {series[-1][1]:.2f}")
    return words


def _curves_alt(dataset: str, runs: Sequence[RunRecord], histories: Histories) -> str:
    eval_key = _eval_metric(dataset, runs, histories)
    plain = [r for r in runs if r.shortcut == "plain"]
    residual = [r for r in runs if r.shortcut != "plain"]
    sides = [f"{side}: " + ", ".join(_last_means(members, histories, eval_key))
             for side, members in (("Plain networks", plain), ("ResNets", residual)) if members]
    return (f"Two line charts of error in percent against training progress on {dataset}. Last mean {eval_key} "
            f"(%) per network. " + ". ".join(sides) + ".")


def _responses_caption(dataset: str, runs: Sequence[RunRecord]) -> str:
    return (f"Fig. 7 (standard deviations of layer responses), ours on {dataset}: the std of each 3x3 layer's output "
            f"after batch normalisation and before the nonlinearity, in layer order (top) and sorted by magnitude "
            f"(bottom), each line the mean over its seeds. Runs: {_runs_words(runs)} ({len(runs)} finished).")


def _responses_alt(dataset: str, runs: Sequence[RunRecord], histories: Histories) -> str:
    means = []
    for arch, members in _by_arch(runs).items():
        values = [v for _, v in mean_series(members, histories, cv.M_LAYER_RESPONSE)]
        if values:
            means.append(f"{arch} {sum(values) / len(values):.2f} over {len(values)} layers")
    return (f"Two line charts of the standard deviation of each layer's response on {dataset}, by layer index and "
            f"sorted. Mean std per network: " + "; ".join(means) + ".")


def png_bytes(fig: Figure, dpi: int = 100) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()
