"""`resnetctl report`: the paper's tables (and figures) from a grid's runs, beside the paper's numbers."""

from __future__ import annotations

from pathlib import Path

import click

from orchestrator.claims import DEFAULT_ALPHA, DEFAULT_TOLERANCE
from orchestrator.commands.ui import DEFAULT_STORE
from orchestrator.report.render import FORMATS

_SUFFIX = {"md": "md", "latex": "tex", "html": "html", "json": "json"}


@click.command("report")
@click.option("--grid", default=None, help="Grid name (its MLflow experiment); default: the store's only grid.")
@click.option("--experiment", default=None, help="MLflow experiment to read, when not named after the grid.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="md", show_default=True,
              help="md prints to the terminal; html is one self-contained page: the verdicts first, then the tables, "
                   "then the figures embedded with captions and alt text.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write the report (and the figures as PNG) into this folder instead of printing it.")
@click.option("--tracking-uri", envvar="MLFLOW_TRACKING_URI", default=DEFAULT_STORE, show_default=True,
              help="Database URI (read with SQL) or MLflow server URL (read with the client); env MLFLOW_TRACKING_URI.")
@click.option("--rows", default=None, help="Generic pivot: grid axis for the rows (e.g. depth).")
@click.option("--cols", default=None, help="Generic pivot: grid axis for the columns (e.g. shortcut).")
@click.option("--metric", default=None, help="Generic pivot: metric (default test_err, else val_err).")
@click.option("--figures/--no-figures", default=True, show_default=True,
              help="Draw the figures (with --out or --format html).")
@click.option("--tolerance", type=click.FloatRange(0, 100), default=None,
              help=f"Percentage points the paper's number may lie outside our 95% interval and still be reproduced "
                   f"(default: the grid's verdicts.tolerance, else {DEFAULT_TOLERANCE:g}).")
@click.option("--alpha", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
              help=f"Significance level of the claims' t-tests (default: the grid's, else {DEFAULT_ALPHA:g}).")
@click.option("--price-per-gpu-hour", type=click.FloatRange(0, 1e6, min_open=True), default=None,
              help="Money per GPU-hour for each cell's cost (default: the grid's price_per_gpu_hour, as submit "
                   "recorded it; without one the cost is in hours only).")
def report_command(grid: str | None, experiment: str | None, fmt: str, out_dir: Path | None, tracking_uri: str,
                   rows: str | None, cols: str | None, metric: str | None, figures: bool, tolerance: float | None,
                   alpha: float | None, price_per_gpu_hour: float | None) -> None:
    """Print the paper's tables (6, 2, 3, 4) with our numbers beside the paper's and verdicts, the claims tested,
    and what each cell cost."""
    from orchestrator.report.render import render
    from orchestrator.report.source import open_reader, select_runs
    from orchestrator.report.verdicts import build_report

    reader = open_reader(tracking_uri)  # a ReportError (bad store, no such grid) is a UserError: one line, exit 2
    selection = select_runs(reader, grid=grid, experiment=experiment)
    report = build_report(selection, reader.histories, rows=rows, cols=cols, metric=metric, tolerance=tolerance,
                          alpha=alpha, price_per_gpu_hour=price_per_gpu_hour)

    drawn: list = []
    if figures and (out_dir is not None or fmt == "html"):
        from orchestrator.report.figures import build_report_figures

        drawn = build_report_figures(selection.runs, reader)
    text = render(fmt, selection, report.tables, drawn, report.claims, report.settings.to_json())
    if out_dir is None:
        click.echo(text)
        return
    for path in _write(out_dir, fmt, text, report.tables, drawn):
        click.echo(str(path))


def _write(out_dir: Path, fmt: str, text: str, tables: list, drawn: list) -> list[Path]:
    """The report (CSV: one file per table) and the figures as PNG into `out_dir`; the paths written."""
    from orchestrator.report.render import table_to_csv

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    if fmt == "csv":
        for table in tables:
            written.append(out_dir / f"{table.key}.csv")
            written[-1].write_text(table_to_csv(table))
    else:
        written.append(out_dir / f"report.{_SUFFIX[fmt]}")
        written[-1].write_text(text)
    if fmt != "html":
        for figure in drawn:  # report.figures.ReportFigure
            written.append(out_dir / f"{figure.name}.png")
            written[-1].write_bytes(figure.png)
    return written
