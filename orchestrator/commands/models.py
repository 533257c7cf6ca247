"""`resnetctl models`: the paper's network family as a table (or JSON for scripts)."""

from __future__ import annotations

import json

import click

from models.arch import INPUT_SIZES, MODEL_FAMILY, VARIANTS


def _format_count(value: int) -> str:
    if value >= 1e9:
        return f"{value / 1e9:.2f}G"
    if value >= 1e6:
        return f"{value / 1e6:.2f}M"
    return f"{value / 1e3:.1f}K"


@click.command("models")
@click.option("--variant", type=click.Choice(VARIANTS), default=None, help="Only this family (default: both).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
def models_command(variant: str | None, as_json: bool) -> None:
    """List the paper's networks: name, layers, parameters, multiply-adds per image."""
    from models.measure import summarize  # torch is loaded only when the command runs

    variants = [variant] if variant else list(VARIANTS)
    rows = [summarize(name, v) for v in variants for name in MODEL_FAMILY[v]]
    if as_json:
        click.echo(json.dumps([row.to_dict() for row in rows], indent=2))
        return

    from rich.console import Console
    from rich.table import Table

    console = Console()
    for v in variants:
        height, width = INPUT_SIZES[v][1:]
        table = Table(title=f"{v}: multiply-adds for one {height}x{width} image")
        for column in ("name", "layers", "block", "shortcut", "params", "mult-adds"):
            table.add_column(column, justify="right" if column in ("layers", "params", "mult-adds") else "left")
        for row in rows:
            if row.variant == v:
                table.add_row(
                    row.name, str(row.layers), row.block, row.shortcut,
                    _format_count(row.params), _format_count(row.mult_adds),
                )
        console.print(table)
