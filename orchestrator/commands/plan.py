"""`resnetctl plan grid.yaml`: the cells a grid expands to, their resources and compute, nothing run.

The estimate itself is `orchestrator.estimate.plan_grid`; this command prints it as a table or JSON.
Planning never imports torch.
"""

from __future__ import annotations

import json
import math
from typing import Any

import click

from orchestrator.estimate import plan_grid
from orchestrator.grid_loading import load_cells


def _human(value: float) -> str:
    for unit, scale in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if value >= scale:
            return f"{value / scale:.2f}{unit}"
    return f"{value:.0f}"


def _where(resources: dict[str, Any]) -> str:
    """2x0.5cpu+2gpu: workers x CPUs each, plus GPUs."""
    workers = resources["workers"]
    gpus = f"+{resources['gpus']}gpu" if resources["gpus"] else ""
    return f"{workers}x{resources['cpus'] / workers:g}cpu{gpus}"


def _print_table(summary: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{summary['grid']}: {len(rows)} cells (experiment {summary['experiment']})",
                  box=box.SIMPLE_HEAD)
    for column in ("name", "cell id", "resources", "MACs/img", "epochs", "compute"):
        left = column in ("name", "cell id", "resources")
        table.add_column(column, justify="left" if left else "right", no_wrap=True)
    for row in rows:
        table.add_row(row["name"], row["cell_id"], _where(row["resources"]), _human(row["mult_adds_per_image"]),
                      f"{row['epochs']:.4g}", _human(row["compute_mult_adds"]))
    console = Console()
    console = Console(width=max(console.width, 110))  # a narrow or piped terminal wraps rather than truncates
    console.print(table)
    at_once = summary["max_concurrent_cells"]
    console.print(
        f"total: {_human(summary['compute_mult_adds'])} multiply-adds (x images x epochs, forward); "
        f"about {_human(summary['training_mult_adds_approx'])} to train. "
        f"At most {at_once} cells at once, {summary['peak_cpus']:g} CPUs"
        + (f", {summary['peak_gpus']} GPUs" if summary["peak_gpus"] else "")
        + f". {math.ceil(len(rows) / at_once)} waves of cells."
    )


@click.command("plan")
@click.argument("grid_file", type=click.Path(dir_okay=False, path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@click.option("--yes", is_flag=True, help="Allow grids with more cells than the safety limit.")
@click.option("--check-data/--no-check-data", default=True, show_default=True,
              help="Check that the dataset's prepared data exists.")
def plan_command(grid_file: str, as_json: bool, yes: bool, check_data: bool) -> None:
    """Show the cells GRID_FILE expands to, their resources and compute; run nothing."""
    spec, cells = load_cells(grid_file, yes=yes, check_data=check_data)
    summary, rows = plan_grid(spec, cells)
    if as_json:
        click.echo(json.dumps({"summary": summary, "cells": rows}, indent=2))
    else:
        _print_table(summary, rows)
