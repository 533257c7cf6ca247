"""The HTML report in a browser (issue 16, item 5) and each table cell's cost (issue 15, item 6), read from
the session's trained grid (conftest `verdicts_digits_grid`: digits, depth [8, 20] x shortcut [plain, A] x
seeds [0, 1] on CPUs, the grid claim "resnet8-A < plain8"). The page is rendered by headless Chromium and
its DOM read back: what a reader's browser builds, not the string the report wrote."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from html.parser import HTMLParser

import pytest
from click.testing import CliRunner

from orchestrator import conventions as cv
from orchestrator.claims import settings_json
from orchestrator.cli import main
from orchestrator.report.cost import hours_text
from orchestrator.report.records import Selection
from orchestrator.report.render import to_html
from orchestrator.report.tables import build_tables
from orchestrator.report.verdicts import settings_for

_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node | str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text for c in self.children)

    def elements(self, tag: str | None = None) -> list[Node]:
        """Child elements (`tag`: of that tag only)."""
        return [c for c in self.children if isinstance(c, Node) and tag in (None, c.tag)]

    def find_all(self, tag: str) -> list[Node]:
        found = []
        for child in self.elements():
            found += ([child] if child.tag == tag else []) + child.find_all(tag)
        return found


class _Tree(HTMLParser):
    """The DOM Chromium dumped, as a tree of Nodes (the standard library has no DOM for HTML)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag, attrs):
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in _VOID:
            self.stack.append(node)

    def handle_endtag(self, tag):
        while len(self.stack) > 1 and self.stack.pop().tag != tag:
            pass

    def handle_data(self, data):
        self.stack[-1].children.append(data)


def _dom(render_dom, page) -> Node:
    parser = _Tree()
    parser.feed(render_dom(page.as_uri()))
    return parser.root


def _table_rows(section: Node) -> dict[str, dict[str, str]]:
    """A section's table as {first cell: {column: cell text}}."""
    table = section.find_all("table")[0]
    header = [th.text for th in table.find_all("th")]
    rows = {}
    for tr in table.find_all("tbody")[0].elements("tr"):
        cells = [td.text for td in tr.elements("td")]
        rows[cells[0]] = dict(zip(header, cells, strict=True))
    return rows


def _report(uri: str, *args: str):
    result = CliRunner().invoke(main, ["report", "--tracking-uri", uri, *args])
    assert result.exit_code == 0, result.output
    return result.output


def _finished_runs(grid: dict) -> dict[tuple[str, str], list]:
    """The grid's finished runs as MLflow gives them, by (depth, shortcut): what the report must add up."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=grid["uri"])
    experiment = client.get_experiment_by_name(grid["name"])
    cells = defaultdict(list)
    for run in client.search_runs([experiment.experiment_id]):
        if run.data.tags.get(cv.TAG_STATUS) == cv.STATUS_FINISHED:
            cells[(run.data.params[cv.PARAM_DEPTH], run.data.params[cv.PARAM_SHORTCUT])].append(run)
    return cells


@pytest.mark.slow
def test_the_html_report_opens_with_the_verdicts_then_the_tables_then_captioned_figures(
        verdicts_digits_grid, render_dom, tmp_path):
    grid = verdicts_digits_grid
    _report(grid["uri"], "--grid", grid["name"], "--format", "html", "--out", str(tmp_path))
    claims = json.loads(_report(grid["uri"], "--grid", grid["name"], "--format", "json", "--no-figures"))["claims"]
    dom = _dom(render_dom, tmp_path / "report.html")
    main_ = dom.find_all("main")[0]
    assert "resnetctl report: grid verdicts" in dom.find_all("h1")[0].text  # the page rendered
    sections = main_.elements("section")
    assert [s.attrs["id"] for s in sections] == ["verdicts", "pivot", "cells", "figures"]  # the answer first

    verdicts = sections[0]
    summary = [li.text for li in verdicts.find_all("ul")[0].elements("li")]
    counts = {v: sum(c["verdict"] == v for c in claims) for v in ("holds", "fails", "undecided", "not run")}
    assert summary[0] == "claims: " + ", ".join(f"{n} {v}" for v, n in counts.items() if n) + f" (of {len(claims)})"
    claim_rows = [[td.text for td in tr.elements("td")] for tr in verdicts.find_all("tbody")[0].elements("tr")]
    assert sorted((row[0], row[9]) for row in claim_rows) == sorted((c["claim"], c["verdict"]) for c in claims)

    pivot = _table_rows(sections[1])
    assert sorted(pivot, key=int) == ["8", "20"]
    for (depth, shortcut), runs in _finished_runs(grid).items():
        errors = [run.data.metrics.get(cv.FINAL_PREFIX + cv.M_TEST_ERR, run.data.metrics[cv.M_TEST_ERR])
                  for run in runs]
        cell = pivot[depth][f"shortcut={shortcut}"]
        assert cell.startswith(f"{min(errors):.2f} ({statistics.fmean(errors):.2f}±") and "n=2)" in cell, cell
        hours = sum(run.data.metrics[cv.M_WORKER_HOURS] for run in runs)
        assert pivot[depth][f"cost (shortcut={shortcut})"] == f"{hours_text(hours)} CPU worker-h"

    figures = sections[3].find_all("figure")
    assert len(figures) == 2  # training curves and Fig. 7's layer responses
    for figure in figures:
        image, caption = figure.find_all("img")[0], figure.find_all("figcaption")[0].text
        assert image.attrs["src"].startswith("data:image/png;base64,")
        assert all(arch in image.attrs["alt"] for arch in ("plain8", "plain20", "resnet8-A", "resnet20-A"))
        assert "Runs: plain8 (seeds 0, 1), plain20 (seeds 0, 1), resnet8-A (seeds 0, 1), resnet20-A (seeds 0, 1) " \
               "of grid verdicts (8 finished)." in caption
    assert "Fig. 7" in figures[1].find_all("figcaption")[0].text


@pytest.mark.slow
def test_each_table_cell_costs_the_sum_of_its_runs_own_hours(verdicts_digits_grid):
    grid = verdicts_digits_grid
    doc = json.loads(_report(grid["uri"], "--grid", grid["name"], "--format", "json", "--price-per-gpu-hour", "3"))
    pivot = next(t for t in doc["tables"] if t["key"] == "pivot")
    rows = {row[0]: dict(zip(pivot["columns"], row, strict=True)) for row in pivot["rows"]}
    total = 0.0
    for (depth, shortcut), runs in _finished_runs(grid).items():
        hours = [run.data.metrics[cv.M_WORKER_HOURS] for run in runs]
        assert all(run.data.metrics[cv.M_GPU_HOURS] == 0 for run in runs)  # CPU cells: no GPU-hours
        cost = rows[depth][f"cost (shortcut={shortcut})"]
        assert cost == {"runs": 2, "device": "cpu", "worker_hours": pytest.approx(sum(hours)), "gpu_hours": 0.0,
                        "cpu_worker_hours": pytest.approx(sum(hours)), "price_per_gpu_hour": 3.0, "money": 0.0}
        assert sum(hours) > 0
        total += sum(hours)
    assert pivot["cost"]["worker_hours"] == pytest.approx(total) and pivot["cost"]["gpu_hours"] == 0.0
    text = _report(grid["uri"], "--grid", grid["name"], "--no-figures", "--price-per-gpu-hour", "3")
    assert f"compute: {hours_text(total)} worker-hours ({hours_text(total)} of them on CPUs), 0.00 GPU-hours, " \
           "cost 0.00\n" in text  # a CPU cell is never called GPU-hours, nor priced as one


def test_the_grids_price_reaches_the_report_and_the_option_overrides_it():
    tags = {cv.verdicts_tag("g"): settings_json(["resnet8-A < plain8"], 0.5, 0.05, 2.5)}
    selection = Selection("g", "g", (), experiment_tags=tags)
    assert settings_for(selection).price_per_gpu_hour == 2.5  # as `submit` records it
    assert settings_for(selection, price_per_gpu_hour=4.0).price_per_gpu_hour == 4.0
    unpriced = Selection("g", "g", (), experiment_tags={cv.verdicts_tag("g"): settings_json([], 0.5, 0.05)})
    assert settings_for(unpriced).price_per_gpu_hour is None


def test_a_grid_name_is_text_on_the_page_never_markup(render_dom, tmp_path):
    name = '<img src=x onerror="document.title=1"><script>document.title=2</script>&amp;'
    selection = Selection(name, name, ())
    page = tmp_path / "report.html"
    page.write_text(to_html(selection, build_tables(selection)))
    dom = _dom(render_dom, page)
    assert not dom.find_all("img") and not dom.find_all("script")
    assert dom.find_all("h1")[0].text == f"resnetctl report: grid {name} (experiment {name}, 0 runs)"
    assert dom.find_all("title")[0].text == dom.find_all("h1")[0].text
