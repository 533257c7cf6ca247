"""`resnetctl plan grid.yaml`: the cells a grid expands to, their resources and compute, nothing run.

The estimate itself is `orchestrator.estimate.plan_grid`; this command prints it as a table or JSON.
Planning never imports torch.
"""

from __future__ import annotations

import json
import math
from typing import Any

import click

from orchestrator.capacity import plan_warnings
from orchestrator.estimate import claim_power, plan_grid
from orchestrator.grid_loading import load_cells, unprepared_datasets
from orchestrator.report.stats import POWER
from resnetctl.redaction import for_rich, shown


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

    table = Table(title=for_rich(f"{summary['grid']}: {len(rows)} cells (experiment {summary['experiment']})"),
                  box=box.SIMPLE_HEAD)
    for column in ("name", "cell id", "resources", "MACs/img", "epochs", "compute", "GPU-h"):
        left = column in ("name", "cell id", "resources")
        table.add_column(column, justify="left" if left else "right", no_wrap=True)
    for row in rows:
        table.add_row(for_rich(row["name"]), row["cell_id"], _where(row["resources"]), _human(row["mult_adds_per_image"]),
                      f"{row['epochs']:.4g}", _human(row["compute_mult_adds"]), f"{row.get('gpu_hours', 0):.3g}")
    console = Console()
    console = Console(width=max(console.width, 110))  # a narrow or piped terminal wraps rather than truncates
    console.print(table)
    at_once = summary["max_concurrent_cells"]
    console.print(
        f"total: {_human(summary['compute_mult_adds'])} multiply-adds (x images x epochs, forward); "
        + (f"about {_human(summary['training_mult_adds_approx'])} to train. " if summary.get("kind") != "evaluation"
           else "one pass over the test split, in every view. ")
        + f"At most {at_once} cells at once, {summary['peak_cpus']:g} CPUs"
        + (f", {summary['peak_gpus']} GPUs" if summary["peak_gpus"] else "")
        + f". {math.ceil(len(rows) / at_once)} waves of cells."
    )
    if "cost" in summary:
        console.print(_cost_line(summary["cost"]))


def _cost_line(cost: dict[str, Any]) -> str:
    """Estimated GPU-hours (and money), already spent, and where the throughput came from."""
    money = f" = {cost['cost']:,.2f} at {cost['price_per_gpu_hour']:g} per GPU-hour" if "cost" in cost else ""
    return (f"GPU-hours: about {cost['gpu_hours']:,.3g}{money} ({_human(cost['macs_per_gpu_s'])} multiply-adds per "
            f"GPU-second, from the {cost['rate_from']}); {cost['gpu_hours_spent']:,.3g} spent by finished cells")


@click.command("plan")
@click.argument("grid_file", type=click.Path(dir_okay=False, path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@click.option("--address", envvar="RAY_ADDRESS", default=None,
              help="Ray dashboard (http://HEAD:8265) of the cluster to check the cells fit; default: this machine.")
@click.option("--yes", is_flag=True, help="Allow grids with more cells than the safety limit.")
@click.option("--check-data/--no-check-data", default=True, show_default=True,
              help="Check the prepared data the grid names (a folder not written yet is only noted).")
@click.option("--price-per-gpu-hour", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Money per GPU-hour for the cost estimate (default: the grid's price_per_gpu_hour).")
def plan_command(grid_file: str, as_json: bool, address: str | None, yes: bool, check_data: bool,
                 price_per_gpu_hour: float | None) -> None:
    """Show the cells GRID_FILE expands to, their resources and compute; run nothing."""
    spec, cells = load_cells(grid_file, yes=yes, check_data=check_data, unprepared_ok=True)
    for name, path in (unprepared_datasets(spec).items() if check_data and hasattr(spec, "datasets") else ()):
        click.echo(shown(f"note: {name} is not prepared yet ({path}): the estimate assumes its usual size; "
                         f"`resnetctl prepare {name} --root {path}` before `submit`"), err=True)
    for warning in plan_warnings(cells, address):
        click.echo(f"Warning: {shown(warning)}", err=True)
    summary, rows = plan_grid(spec, cells, price_per_gpu_hour=price_per_gpu_hour)
    claims = claim_power(spec)  # None: the store holds no runs of this grid yet
    if as_json:
        click.echo(json.dumps({"summary": summary, "cells": rows, "undecided_claims": claims}, indent=2))
        return
    _print_table(summary, rows)
    for claim in claims or ():
        click.echo(_power_line(claim))


def _power_line(claim: dict[str, Any]) -> str:
    """One undecided claim of the store's runs and the seeds its current spread suggests."""
    p = "no p-value" if claim["p_value"] is None else f"p={claim['p_value']:.3g}"
    needed = (f"about {claim['seeds_needed']} seeds per network for {POWER:.0%} power" if claim["seeds_needed"]
              else "no spread or difference yet to estimate seeds from")
    return (f"undecided: {claim['claim']} ({claim['dataset']}; {claim['source']}): {claim['n_a']} vs "
            f"{claim['n_b']} runs, {p}; {needed}")
