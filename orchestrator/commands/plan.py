"""`resnetctl plan grid.yaml`: the cells a grid expands to, their resources and compute, nothing run.

The compute estimate is forward multiply-adds per image x training images x epochs, as the
paper counts FLOPs (Table 1); training costs roughly three times that (forward + backward).
Multiply-adds are counted analytically here (convs and the fc, as models.count_multiply_adds
does on the meta device; a test checks both agree), so planning never imports torch.
"""

from __future__ import annotations

import json
import math
from typing import Any

import click

from models.names import IMAGENET_STAGE_BLOCKS
from orchestrator.cells import Cell
from orchestrator.commands._grid import load_cells_or_exit
from orchestrator.presets import NUM_CLASSES, TRAIN_IMAGES
from pipelines.manifest import load_manifest


def _conv(size: int, c_in: int, c_out: int, k: int) -> int:
    return size * size * c_in * c_out * k * k


def multiply_adds(depth: int, shortcut: str, variant: str, num_classes: int, *, stride_in_1x1: bool = True) -> int:
    """Forward multiply-adds of one image through the network models.build_model builds.

    Stage resolutions: CIFAR 32/16/8 after a 3x3 stem; ImageNet 56/28/14/7 after the 7x7
    stride-2 stem (at 112) and max-pool. The first block of every stage after the first has stride 2.
    """
    if variant == "cifar":
        n = (depth - 2) // 6
        block, stages, width0, size = "basic", (n, n, n), 16, 32
        total = _conv(32, 3, 16, 3)
    else:
        block, stages, width0, size = ("basic" if depth < 50 else "bottleneck"), IMAGENET_STAGE_BLOCKS[depth], 64, 56
        total = _conv(112, 3, 64, 7)
    expansion = 1 if block == "basic" else 4
    c_in = width0
    for stage, blocks in enumerate(stages):
        width = width0 * 2**stage
        c_out = width * expansion
        for index in range(blocks):
            stride = 2 if stage > 0 and index == 0 else 1
            s_in, s_out = size, size // stride
            if block == "basic":
                total += _conv(s_out, c_in, width, 3) + _conv(s_out, width, width, 3)
            else:
                s_first = s_out if stride_in_1x1 else s_in
                total += _conv(s_first, c_in, width, 1) + _conv(s_out, width, width, 3) + _conv(s_out, width, c_out, 1)
            if shortcut == "C" or (shortcut == "B" and (stride != 1 or c_in != c_out)):
                total += _conv(s_out, c_in, c_out, 1)
            c_in, size = c_out, s_out
    return total + c_in * num_classes


def cell_estimate(cell: Cell, train_images: int) -> dict[str, Any]:
    """Multiply-adds per image, epochs (iterations converted at the cell's batch size) and their product."""
    num_classes = NUM_CLASSES[cell.dataset]
    macs = multiply_adds(cell.depth, cell.shortcut, cell.variant, num_classes, stride_in_1x1=cell.train.stride_in_1x1)
    train = cell.train
    if train.epochs is not None:
        epochs = float(train.epochs)
    else:
        epochs = train.iterations * train.batch_size / train_images
    return {
        "mult_adds_per_image": macs,
        "train_images": train_images,
        "epochs": round(epochs, 3),
        "compute_mult_adds": int(macs * train_images * epochs),
    }


def _resources(cell: Cell) -> dict[str, Any]:
    r = cell.resources
    return {
        "workers": r.workers_per_cell,
        "cpus": r.workers_per_cell * r.cpus_per_worker,
        "gpus": r.workers_per_cell if r.use_gpu else 0,
    }


def _human(value: float) -> str:
    for unit, scale in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if value >= scale:
            return f"{value / scale:.2f}{unit}"
    return f"{value:.0f}"


def _train_images(spec_dataset_paths: dict[str, str], dataset: str) -> int:
    """Training images from the prepared manifest where there is one, else the dataset's usual count."""
    try:
        manifest = load_manifest(spec_dataset_paths[dataset])
        return int(manifest["splits"]["train"]["count"])
    except (KeyError, TypeError, ValueError):  # DatasetError is a ValueError
        return TRAIN_IMAGES[dataset]


@click.command("plan")
@click.argument("grid_file", type=click.Path(dir_okay=False, path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@click.option("--yes", is_flag=True, help="Allow grids with more cells than the safety limit.")
@click.option("--check-data/--no-check-data", default=True, show_default=True,
              help="Check that the dataset's prepared data exists.")
def plan_command(grid_file: str, as_json: bool, yes: bool, check_data: bool) -> None:
    """Show the cells GRID_FILE expands to, their resources and compute; run nothing."""
    spec, cells = load_cells_or_exit(grid_file, yes=yes, check_data=check_data)
    paths = {cell.dataset: cell.dataset_path for cell in cells}
    images = {name: _train_images(paths, name) for name in paths}
    rows = []
    for cell in cells:
        rows.append({
            "name": cell.name,
            "cell_id": cell.cell_id,
            "arch": cell.arch,
            "dataset": cell.dataset,
            "seed": cell.seed,
            "axes": dict(cell.axes),
            "resources": _resources(cell),
            **cell_estimate(cell, images[cell.dataset]),
        })
    total = sum(row["compute_mult_adds"] for row in rows)
    r = spec.resources
    summary = {
        "grid": spec.name,
        "experiment": spec.experiment_name,
        "cells": len(rows),
        "max_concurrent_cells": r.max_concurrent_cells,
        "peak_cpus": min(r.max_concurrent_cells, len(rows)) * r.workers_per_cell * r.cpus_per_worker,
        "peak_gpus": min(r.max_concurrent_cells, len(rows)) * r.workers_per_cell if r.use_gpu else 0,
        "compute_mult_adds": total,
        "training_mult_adds_approx": 3 * total,
    }
    if as_json:
        click.echo(json.dumps({"summary": summary, "cells": rows}, indent=2))
        return

    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{spec.name}: {len(rows)} cells (experiment {spec.experiment_name})", box=box.SIMPLE_HEAD)
    for column in ("name", "cell id", "resources", "MACs/img", "epochs", "compute"):
        left = column in ("name", "cell id", "resources")
        table.add_column(column, justify="left" if left else "right", no_wrap=True)
    for row in rows:
        res = row["resources"]
        where = f"{res['workers']}x{res['cpus'] / res['workers']:g}cpu" + (f"+{res['gpus']}gpu" if res["gpus"] else "")
        table.add_row(
            row["name"], row["cell_id"], where,
            _human(row["mult_adds_per_image"]), f"{row['epochs']:.4g}", _human(row["compute_mult_adds"]),
        )
    console = Console()
    console = Console(width=max(console.width, 110))  # a narrow or piped terminal wraps rather than truncates
    console.print(table)
    console.print(
        f"total: {_human(total)} multiply-adds (x images x epochs, forward); about {_human(3 * total)} to train. "
        f"At most {r.max_concurrent_cells} cells at once, {summary['peak_cpus']:g} CPUs"
        + (f", {summary['peak_gpus']} GPUs" if r.use_gpu else "")
        + f". {math.ceil(len(rows) / r.max_concurrent_cells)} waves of cells."
    )
