"""Tables 7 and 8: Faster R-CNN with our ResNets on PASCAL VOC and COCO, beside the paper's mAP.

A row per backbone, starting weights and arrangement found in the grid's finished detection runs
(seeds pooled: best is the highest mAP, with mean and spread), the paper's VGG-16 and ResNet-101 rows
beside them. Table 7's VOC 07 column is the VOC2007 devkit's 11-point mAP of `voc2007` runs, its
VOC 12 column the area-under-the-curve mAP of `voc2012` runs; Table 8 shows pycocotools' mAP@.5 and
mAP@[.5, .95] of `coco` runs. The protocol line says what our runs trained and tested on, and every
way they depart from the paper's recipe is a note.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from orchestrator import conventions as cv
from orchestrator.detection_presets import detection_preset
from orchestrator.report import paper
from orchestrator.report.cost import cost_of
from orchestrator.report.records import RunRecord
from orchestrator.report.tables import EMPTY, Delta, RunIndex, Stat, Table, cell_cost, latest_finished

VOC = ("voc2007", "voc2012")


@dataclass(frozen=True)
class MapStat(Stat):
    """Our mAP over seeds: higher is better, so `best` is the highest (no verdict: the paper gives one run)."""

    @property
    def best(self) -> float:
        return max(self.values)


def _map(runs: Sequence[RunRecord], metric: str) -> MapStat | None:
    values = tuple(v for v in (r.metric(metric) for r in runs) if v is not None)
    return MapStat(values) if values else EMPTY


def _delta(ours: MapStat | None, theirs: float | None) -> Delta | None:
    return Delta(ours.best - theirs) if ours is not None and theirs is not None else EMPTY


def _init_words(init: str) -> str:
    """models:/imagenet-resnet101-B/1 -> "imagenet-resnet101-B v1"; scratch stays."""
    if init.startswith("models:/"):
        name, _, version = init[len("models:/"):].rpartition("/")
        return f"{name} v{version}"
    return init or "not tagged"


def _group(runs: Sequence[RunRecord]) -> dict[tuple[str, str, str], list[RunRecord]]:
    """Runs by (backbone, starting weights, arrangement), in a stable order."""
    groups: dict[tuple[str, str, str], list[RunRecord]] = defaultdict(list)
    for run in runs:
        key = (run.arch, run.tags.get(cv.TAG_BACKBONE_INIT, ""), run.tags.get(cv.TAG_DETECTION_ARRANGEMENT, "c4"))
        groups[key].append(run)
    return dict(sorted(groups.items()))


def _departures(runs: Sequence[RunRecord]) -> list[str]:
    """How the runs' recipes differ from the paper's preset of their dataset, one phrase per difference."""
    found: dict[str, set[str]] = defaultdict(set)
    for run in runs:
        preset = detection_preset(run.dataset)
        if run.tags.get(cv.TAG_BACKBONE_INIT) == "scratch":
            found["init"].add("backbone from scratch, not ImageNet-initialised")
        if run.tags.get(cv.TAG_DETECTION_ARRANGEMENT) == "fpn":
            found["arrangement"].add("FPN arrangement, not the paper's conv4-shared / conv5-per-region")
        for key, shown in (("iterations", "iterations"), ("batch_size", "images per step"),
                           ("min_size", "shorter side")):
            value = run.params.get(cv.param_train(key))
            if value is not None and value != str(preset[key]):
                found[key].add(f"{run.dataset}: {shown} {value} (paper: {preset[key]})")
        splits = run.params.get(cv.PARAM_TRAIN_SPLITS)
        if splits is not None and splits != "+".join(preset["train_splits"]):
            found["splits"].add(f"{run.dataset}: trained on {splits} (paper: {'+'.join(preset['train_splits'])})")
        test = run.params.get(cv.PARAM_TEST_SPLIT)
        if test is not None and test != preset["test_split"]:
            found["test"].add(f"{run.dataset}: tested on {test} (paper: {preset['test_split']})")
    return [phrase for key in sorted(found) for phrase in sorted(found[key])]


def _ours_words(runs: Sequence[RunRecord]) -> str:
    parts = set()
    for run in runs:
        images = run.params.get(cv.PARAM_TRAIN_IMAGES, "?")
        tested = run.metric(cv.M_TEST_IMAGES)
        parts.add(f"{run.dataset}: trained on {run.params.get(cv.PARAM_TRAIN_SPLITS, '?')} ({images} images), "
                  f"{run.params.get(cv.param_train('iterations'), '?')} iterations; tested on "
                  f"{run.params.get(cv.PARAM_TEST_SPLIT, '?')} ({int(tested) if tested is not None else '?'} images)")
    return "; ".join(sorted(parts)) or "no finished run"


def _table(grid: RunIndex, key: str, title: str, datasets: tuple[str, ...], columns: tuple[str, str],
           metrics: tuple[tuple[str, str], tuple[str, str]], rows: Sequence[paper.DetectionRow], how: str,
           paper_protocol: str) -> Table | None:
    """Table 7 or 8: `metrics` gives (dataset, metric) of the two mAP columns."""
    planned = [r for r in grid.runs if r.tags.get(cv.TAG_CELL_KIND) == cv.KIND_DETECTION and r.dataset in datasets]
    if not planned:
        return None
    done = latest_finished(planned)
    table = Table(key, title, f"ours: {_ours_words(done)}; {how}; paper: {paper_protocol}",
                  ("network", "init", columns[0], f"{columns[0]} (paper)", "Δ", columns[1], f"{columns[1]} (paper)",
                   "Δ", "runs", "cost"))
    by_arch = {row.arch: row for row in rows if row.arch}
    groups = _group(done)
    for row in rows:
        if row.arch is None or row.arch not in {arch for arch, _, _ in groups}:
            table.rows.append((row.label, "ImageNet (paper)", EMPTY, row.first, EMPTY, EMPTY, row.second, EMPTY,
                               EMPTY, EMPTY))
    for (arch, init, arrangement), runs in groups.items():
        ref = by_arch.get(arch)
        label = (ref.label if ref else arch) + (" (FPN)" if arrangement == "fpn" else "")
        first, second = (_map([r for r in runs if r.dataset == d], m) for d, m in metrics)
        table.rows.append((label, _init_words(init), first, ref.first if ref else EMPTY, _delta(first, ref and ref.first),
                           second, ref.second if ref else EMPTY, _delta(second, ref and ref.second), len(runs),
                           cell_cost(runs, grid.price)))
    table.missing = len({r.cell_id for r in planned} - {r.cell_id for r in done})
    if table.missing:
        table.notes.append(f"missing: {table.missing} planned cell(s) without a finished run")
    table.notes.append("VGG-16 is not one of our networks: its row is the paper's alone")
    table.notes += [f"departure: {phrase}" for phrase in _departures(done)]
    table.cost = cost_of(done, grid.price)
    return table


def detection_tables(grid: RunIndex) -> list[Table]:
    """Table 7 (VOC) and Table 8 (COCO), where the grid has detection runs of their datasets."""
    table7 = _table(grid, "table7", "Table 7: Faster R-CNN on PASCAL VOC, mAP@0.5 (%)", VOC,
                    ("VOC 07 test", "VOC 12 test"), (("voc2007", cv.M_MAP_VOC07), ("voc2012", cv.M_MAP_VOC)),
                    paper.TABLE7, "VOC 07: the VOC2007 devkit's 11-point AP; VOC 12: area under the curve",
                    paper.TABLE7_PROTOCOL)
    table8 = _table(grid, "table8", "Table 8: Faster R-CNN on COCO val, mAP (%)", ("coco",),
                    ("mAP@.5", "mAP@[.5, .95]"), (("coco", cv.M_COCO_MAP50), ("coco", cv.M_COCO_MAP)),
                    paper.TABLE8, "pycocotools' bbox evaluation", paper.TABLE8_PROTOCOL)
    return [t for t in (table7, table8) if t is not None]
