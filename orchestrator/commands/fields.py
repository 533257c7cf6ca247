"""`resnetctl fields`: every setting a grid's `train:` and `resources:` sections take, as the README shows them."""

from __future__ import annotations

import click

from orchestrator.grid_fields import SECTIONS, field_rows


def fields_markdown(section: str) -> str:
    """A section's fields as a Markdown table (the README embeds this text verbatim)."""
    lines = ["| field | values | default | paper presets | what it does |", "|---|---|---|---|---|"]
    for row in field_rows(section):
        cells = (f"`{row.name}`", row.values, row.default, row.presets or "-", row.description)
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)


@click.command("fields")
@click.argument("section", type=click.Choice(list(SECTIONS)), required=False)
def fields_command(section: str | None) -> None:
    """Print the grid's training (and resources) settings: values, defaults, presets, meaning."""
    for name in [section] if section else list(SECTIONS):
        title = "`train:` of a detection grid (`task: detection`)" if name == "detection" else f"`{name}:`"
        click.echo(f"{title}\n\n{fields_markdown(name)}\n")
