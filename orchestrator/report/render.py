"""Write tables (and figures) as Markdown, CSV, LaTeX, self-contained HTML or JSON.

All formats share `format_value`, so a number reads the same everywhere; an empty mark
("–", "--" in LaTeX, empty in CSV, null in JSON) stands for a cell without a finished run. Our
cells read "best (mean±std, [95% interval], n=runs)" followed by the verdict's mark where the
paper gives a number (✓ reproduced, ↓ better, ↑ worse, ? undecided; words in CSV), explained
under each table, with each cell's cost beside it ("1.20 GPU-h (cost 3.60)", "0.0031 CPU worker-h");
JSON carries the same as fields, and the claims as a top-level list. The HTML page answers first
(the verdicts and the claims), then shows the tables, then the figures with captions and alt text.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, get_args

from orchestrator.report.cost import Cost, cost_text, hours_text
from orchestrator.report.paper import PaperStat
from orchestrator.report.records import Selection
from orchestrator.report.tables import Delta, Stat, Table
from orchestrator.report.verdicts import verdict_summary

if TYPE_CHECKING:  # matplotlib loads only where figures are drawn
    from orchestrator.report.figures import ReportFigure

ReportFormat = Literal["md", "csv", "latex", "html", "json"]
FORMATS: tuple[str, ...] = get_args(ReportFormat)
EMPTY_MARK = {"md": "–", "csv": "", "latex": "--", "html": "–"}
PM = {"md": "±", "csv": "±", "latex": r"$\pm$", "html": "±"}
_MARKS = {"reproduced": "✓", "better": "↓", "worse": "↑", "undecided": "?"}
VERDICT_MARKS = {"md": _MARKS, "html": _MARKS, "csv": {v: v for v in _MARKS},
                 "latex": {"reproduced": r"$\surd$", "better": r"$\downarrow$", "worse": r"$\uparrow$",
                           "undecided": "?"}}


def format_value(value: Any, style: str = "md") -> str:
    if value is None:
        return EMPTY_MARK[style]
    if isinstance(value, Stat):
        return _stat_text(value, style)
    if isinstance(value, PaperStat):
        if value.mean is None:
            return f"{value.best:.2f}"
        runs = f", n={value.runs}" if value.runs else ""
        return f"{value.best:.2f} ({value.mean:.2f}{PM[style]}{value.std:.2f}{runs})"
    if isinstance(value, Delta):
        return f"{value.value:+.2f}"
    if isinstance(value, Cost):
        return cost_text(value)
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def _stat_text(value: Stat, style: str) -> str:
    """best (mean±std, [95% interval], n=runs) and the verdict's mark; one run: best (n=1)."""
    if value.ci95 is None:
        text = f"{value.best:.2f} (n={value.n})"
    else:
        low, high = value.ci95
        text = f"{value.best:.2f} ({value.mean:.2f}{PM[style]}{value.std:.2f}, [{low:.2f}, {high:.2f}], n={value.n})"
    return f"{text} {VERDICT_MARKS[style][value.verdict]}" if value.verdict else text


def _marks_key(table: Table, style: str) -> list[str]:
    """The verdict marks' key, where a cell of the table carries one (already in the style's markup)."""
    if not any(isinstance(v, Stat) and v.verdict for row in table.rows for v in row):
        return []
    marks = VERDICT_MARKS[style]
    return ["marks: " + ", ".join(f"{marks[v]} {v}" for v in _MARKS)]


def _notes(table: Table, style: str) -> list[str]:
    return [*table.notes, *_marks_key(table, style)]


def json_value(value: Any) -> Any:
    if isinstance(value, Stat):
        return {"best": value.best, "mean": value.mean, "std": value.std, "n": value.n, "values": list(value.values),
                "ci95": list(value.ci95) if value.ci95 else None, "verdict": value.verdict,
                "reference": value.reference}
    if isinstance(value, PaperStat):
        return {"best": value.best, "mean": value.mean, "std": value.std, "n": value.runs}
    if isinstance(value, Delta):
        return value.value
    if isinstance(value, Cost):
        return value.to_json()
    return value


def _compute_lines(table: Table) -> list[str]:
    if not table.counts_compute:
        return []
    cost = table.cost
    cpu = f" ({hours_text(cost.cpu_worker_hours)} of them on CPUs)" if cost.cpu_worker_hours else ""
    money = f", cost {cost.money:,.2f}" if cost.money is not None else ""
    return [f"compute: {hours_text(cost.worker_hours)} worker-hours{cpu}, {hours_text(cost.gpu_hours)} GPU-hours"
            f"{money}"]


def _header(selection: Selection) -> str:
    return (f"resnetctl report: grid {selection.grid or '-'} (experiment {selection.experiment}, "
            f"{len(selection.runs)} runs)")


def to_markdown(selection: Selection, tables: Sequence[Table], figures: Sequence[ReportFigure] = ()) -> str:
    """The tables; with `figures` (--out writes their PNGs beside the report) each as an image with its caption."""
    out = [f"# {_header(selection)}", ""]
    for t in tables:
        out += [f"## {t.title}", "", f"_Protocol: {t.protocol}_", ""]
        out.append("| " + " | ".join(t.columns) + " |")
        out.append("|" + "|".join("---" for _ in t.columns) + "|")
        out += ["| " + " | ".join(format_value(v, "md") for v in row) + " |" for row in t.rows]
        out += ["", *(f"- {note}" for note in [*_notes(t, "md"), *_compute_lines(t)]), ""]
    if figures:
        out += ["## Figures", ""]
        for figure in figures:
            out += [f"![{figure.alt}]({figure.name}.png)", "", f"_{figure.caption}_", ""]
    return "\n".join(out)


def table_to_csv(table: Table) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(table.columns)
    writer.writerows([format_value(v, "csv") for v in row] for row in table.rows)
    return buffer.getvalue()


def to_csv(selection: Selection, tables: Sequence[Table]) -> str:
    """All tables in one stream, each after a `# title` line (one file per table with --out)."""
    return "\n".join(f"# {t.title}\n# {t.protocol}\n{table_to_csv(t)}" for t in tables)


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "Δ": r"$\Delta$",
                  "±": r"$\pm$", "–": "--", "<": r"$<$", ">": r"$>$"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def table_to_latex(table: Table) -> str:
    spec = "l" + "r" * (len(table.columns) - 1)
    lines = [r"\begin{table}[ht]", r"\centering", rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(latex_escape(c) for c in table.columns) + r" \\", r"\midrule"]
    for row in table.rows:
        cells = [format_value(v, "latex") if isinstance(v, Stat | PaperStat) else latex_escape(format_value(v, "latex"))
                 for v in row]
        lines.append(" & ".join(cells) + r" \\")
    notes = "; ".join([*map(latex_escape, [*table.notes, *_compute_lines(table)]), *_marks_key(table, "latex")])
    lines += [r"\bottomrule", r"\end{tabular}",
              rf"\caption{{{latex_escape(table.title)}. Protocol: {latex_escape(table.protocol)}. "
              rf"{notes}.}}", rf"\label{{tab:{table.key}}}", r"\end{table}"]
    return "\n".join(lines)


def to_latex(selection: Selection, tables: Sequence[Table]) -> str:
    """Table environments for a document with \\usepackage{booktabs}."""
    return f"% {latex_escape(_header(selection))}\n" + "\n\n".join(table_to_latex(t) for t in tables) + "\n"


def to_json(selection: Selection, tables: Sequence[Table], claims: Sequence[Any] = (),
            verdicts: Mapping[str, Any] | None = None) -> str:
    """The tables' typed values; `claims` (report.verdicts.ClaimResult) and the verdict settings at the top level."""
    doc = {
        "grid": selection.grid, "experiment": selection.experiment, "runs": len(selection.runs),
        "verdicts": dict(verdicts) if verdicts is not None else None,
        "claims": [claim.to_json() for claim in claims],
        "tables": [
            {"key": t.key, "title": t.title, "protocol": t.protocol, "columns": list(t.columns),
             "rows": [[json_value(v) for v in row] for row in t.rows], "notes": t.notes, "missing": t.missing,
             "worker_hours": t.worker_hours, "gpu_hours": t.gpu_hours, "cost": t.cost.to_json()}
            for t in tables
        ],
    }
    return json.dumps(doc, indent=2, ensure_ascii=False)


_STYLE = """body{font-family:sans-serif;margin:2em;max-width:80em}table{border-collapse:collapse;margin:.5em 0}
th,td{border:1px solid #bbb;padding:.2em .6em;text-align:right}th:first-child,td:first-child{text-align:left}
th{background:#eee}.protocol{color:#555;font-style:italic}img{max-width:100%}figure{margin:1.5em 0}
figcaption{color:#333;max-width:60em}#verdicts{border-left:4px solid #468;padding-left:1em}"""


def table_to_html(table: Table, level: int = 2) -> str:
    """One table in a section of its own (`level`: its heading's), every string escaped."""
    head = "".join(f'<th scope="col">{html.escape(c)}</th>' for c in table.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(format_value(v, 'html'))}</td>" for v in row) + "</tr>"
        for row in table.rows
    )
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in [*_notes(table, "html"), *_compute_lines(table)])
    return (f'<section id="{html.escape(table.key)}"><h{level}>{html.escape(table.title)}</h{level}>'
            f'<p class="protocol">Protocol: {html.escape(table.protocol)}</p>'
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table><ul>{notes}</ul></section>")


def _verdicts_html(tables: Sequence[Table], claims: Sequence[Any], verdicts: Mapping[str, Any] | None) -> str:
    """The answer first: a line per verdict the report reaches, the settings that reached them, the claims."""
    lines = "".join(f"<li>{html.escape(line)}</li>" for line in verdict_summary(tables, claims))
    how = (f'<p class="protocol">tolerance ±{verdicts["tolerance"]:g} percentage points, alpha '
           f'{verdicts["alpha"]:g}</p>' if verdicts else "")
    claims_table = "".join(table_to_html(t, level=3) for t in tables if t.key == "claims")
    return f'<section id="verdicts"><h2>Verdicts</h2><ul class="summary">{lines}</ul>{how}{claims_table}</section>'


def _figure_html(figure: ReportFigure) -> str:
    data = base64.b64encode(figure.png).decode()
    return (f'<figure id="{html.escape(figure.name)}"><img alt="{html.escape(figure.alt)}" '
            f'src="data:image/png;base64,{data}"><figcaption>{html.escape(figure.caption)}</figcaption></figure>')


def to_html(selection: Selection, tables: Sequence[Table], figures: Sequence[ReportFigure] = (),
            claims: Sequence[Any] = (), verdicts: Mapping[str, Any] | None = None) -> str:
    """One self-contained page: the verdicts (with the claims), the other tables, then each figure as an
    embedded base64 PNG with its caption and alt text."""
    title = html.escape(_header(selection))
    parts = [f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
             f"<style>{_STYLE}</style></head><body><header><h1>{title}</h1></header><main>",
             _verdicts_html(tables, claims, verdicts)]
    parts += [table_to_html(t) for t in tables if t.key != "claims"]
    if figures:
        parts.append('<section id="figures"><h2>Figures</h2>' + "".join(map(_figure_html, figures)) + "</section>")
    parts.append("</main></body></html>")
    return "\n".join(parts)


def render(fmt: str, selection: Selection, tables: Sequence[Table], figures: Sequence[ReportFigure] = (),
           claims: Sequence[Any] = (), verdicts: Mapping[str, Any] | None = None) -> str:
    """One format; the claims are a table in every format, JSON also lists them (and `verdicts`) on top, and
    HTML opens with them."""
    if fmt == "html":
        return to_html(selection, tables, figures, claims, verdicts)
    if fmt == "json":
        return to_json(selection, tables, claims, verdicts)
    if fmt == "md":
        return to_markdown(selection, tables, figures)
    return {"md": to_markdown, "csv": to_csv, "latex": to_latex}[fmt](selection, tables)
