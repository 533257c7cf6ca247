"""Property tests of the grid parser: valid grids expand to their product, anything else is one GridError."""

from __future__ import annotations

import math
import os
import string

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.cells import Resources
from orchestrator.expand import expand_cells
from orchestrator.spec import (
    AXES,
    DatasetSpec,
    GridError,
    GridSpec,
    TrackingSpec,
    TrainOverrides,
    load_grid,
    load_yaml,
    parse_grid,
)

SETTINGS = settings(max_examples=int(os.environ.get("GRID_FUZZ_EXAMPLES", "60")), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
CIFAR_DEPTHS = [8, 14, 20, 32, 44, 56, 110]
SECTIONS = ("dataset", "grid", "train", "resources", "tracking")


def parse_text(text: str, source: str = "g.yaml") -> GridSpec:
    data, lines = load_yaml(text, source)
    return parse_grid(data, source, lines)


def check_error(exc: GridError, source: str, text: str | None = None) -> None:
    """Every refusal is one line that starts with the file name (and a line of that file)."""
    message = str(exc)
    assert "\n" not in message and message.startswith(source + ":")
    if exc.line is not None:
        assert message.startswith(f"{source}:{exc.line}: ")
        if text is not None:
            assert 1 <= exc.line <= len(text.splitlines()) + 1  # YAML also breaks lines at \x85, \u2028


def subset(values):
    return st.lists(st.sampled_from(values), min_size=1, max_size=len(values), unique=True)


@st.composite
def valid_grids(draw) -> dict:
    dataset = draw(st.sampled_from(["cifar10", "cifar100", "digits"]))
    axes = {"depth": draw(subset(CIFAR_DEPTHS))}
    if draw(st.booleans()):
        axes["shortcut"] = draw(subset(["plain", "A", "B", "C"]))
    if draw(st.booleans()):
        axes["seed"] = draw(st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=3, unique=True))
    if draw(st.booleans()):
        axes["lr"] = draw(st.lists(st.sampled_from([0.2, 0.1, 0.05, 0.01]), min_size=1, max_size=3, unique=True))
    train = {}
    if draw(st.booleans()):
        train["epochs"] = draw(st.integers(1, 200))
    if draw(st.booleans()):
        train["batch_size"] = draw(st.integers(1, 1024))
    grid = {
        "name": draw(st.text(string.ascii_letters + string.digits + "._-", min_size=1, max_size=20).filter(
            lambda s: s[0].isalnum())),
        "dataset": {"name": dataset, "path": draw(st.sampled_from(["data/x", "/abs/data", "~/d"]))},
        "grid": axes,
    }
    if train:
        grid["train"] = train
    if draw(st.booleans()):
        grid["resources"] = {"workers_per_cell": draw(st.integers(1, 8)),
                             "max_concurrent_cells": draw(st.integers(1, 8))}
    return grid


@SETTINGS
@given(valid_grids())
def test_valid_grids_expand_to_their_product(grid):
    text = yaml.safe_dump(grid, sort_keys=False)
    spec = parse_text(text)
    cells = expand_cells(spec)
    assert len(cells) == math.prod(len(values) for values in grid["grid"].values())
    assert len({c.name for c in cells}) == len(cells) == len({c.cell_id for c in cells})
    for cell in cells:
        assert {axis for axis, _ in cell.axes} == set(grid["grid"])
        for axis, value in cell.axes:
            assert value in grid["grid"][axis]
        assert cell.dataset == grid["dataset"]["name"] and cell.grid == grid["name"]
        for key, value in grid.get("train", {}).items():
            assert getattr(cell.train, key) == value
    again = expand_cells(parse_text(text))
    assert [c.cell_id for c in again] == [c.cell_id for c in cells]


@SETTINGS
@given(valid_grids(), st.sampled_from(("",) + SECTIONS), st.text(string.ascii_lowercase + "_", min_size=1, max_size=12))
def test_unknown_keys_are_named(grid, section, key):
    target = grid if section == "" else grid.setdefault(section, {})
    allowed = set(GridSpec.model_fields) if section == "" else (
        set(AXES) if section == "grid" else set(type(getattr(parse_text(yaml.safe_dump(grid)), section)).model_fields)
    )
    if key in allowed or key in target:
        return
    target[key] = 1
    text = yaml.safe_dump(grid, sort_keys=False)
    with pytest.raises(GridError) as info:
        parse_text(text)
    check_error(info.value, "g.yaml", text)
    assert info.value.field == (f"{section}.{key}" if section else key)
    assert "unknown key" in str(info.value)


@SETTINGS
@given(st.integers(-10, 3000), st.sampled_from(["cifar10", "imagenet"]))
def test_depths_are_accepted_exactly_when_models_can_build_them(depth, dataset):
    text = f"name: t\ndataset: {{name: {dataset}, path: d}}\ngrid:\n  depth: [{depth}]\n"
    buildable = (depth >= 8 and (depth - 2) % 6 == 0) if dataset == "cifar10" else depth in (18, 34, 50, 101, 152)
    if buildable:
        assert expand_cells(parse_text(text))[0].depth == depth
    else:
        with pytest.raises(GridError) as info:
            parse_text(text)
        check_error(info.value, "g.yaml", text)
        assert info.value.field == "grid.depth[0]" and info.value.line == 4


SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=8),
)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.text(max_size=6), inner, max_size=3), max_leaves=8)


@SETTINGS
@given(valid_grids(), st.data())
def test_any_leaf_replaced_by_any_value_is_accepted_or_refused_cleanly(grid, data):
    paths = []

    def walk(node, path):
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, (*path, key))
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, (*path, index))
        paths.append(path)

    walk(grid, ())
    path = data.draw(st.sampled_from([p for p in paths if p]))
    parent = grid
    for part in path[:-1]:
        parent = parent[part]
    parent[path[-1]] = data.draw(VALUES)
    text = yaml.safe_dump(grid, sort_keys=False)
    try:
        expand_cells(parse_text(text))
    except GridError as exc:
        check_error(exc, "g.yaml", text)


@SETTINGS
@given(st.text(max_size=200))
def test_any_text_is_a_grid_or_one_grid_error(text):
    try:
        expand_cells(parse_text(text))
    except GridError as exc:
        check_error(exc, "g.yaml", text)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("grid-bytes")


@SETTINGS
@given(st.binary(max_size=200))
def test_any_bytes_on_disk_are_a_grid_or_one_grid_error(scratch, blob):
    path = scratch / "grid.yaml"
    path.write_bytes(blob)
    try:
        expand_cells(load_grid(path))
    except GridError as exc:
        check_error(exc, str(path))


# ----------------------------------------------------------------------------- hostile YAML (issue 13)
# What a careless or hostile file holds that the grids above never do: tags PyYAML cannot construct,
# impossible dates, integers past Python's digit limit, object tags, anchors and (recursive, undefined)
# aliases, rich markup and escape sequences, bidi controls. Whatever mix of them, the loader answers with
# a grid or one GridError: never another exception.
HOSTILE_SCALARS = [
    "!!int abc", "!!int 0x", "!!bool maybe", "!!float many", "!!timestamp yesterday", "!!timestamp 2024-13-45",
    "2024-02-30", "2023-13-01 25:61:00", "1" * 4400, "-" + "9" * 5000, "0x" + "f" * 4000, "!!binary '???'",
    "!!null x", "!!set {a, b}", "!!omap [a: 1]", "!!pairs [a: 1]", "!!python/object/apply:os.system [x]",
    "!include depths.yaml", "1.0e400", ".nan", "-.inf", "0o9", "&a [1, *a]", "*undefined", "&s [8]", "*s",
    '"[/x]"', '"\\e[2J\\e[31mred"', '"\\u202eevil"', '"\\x00"', '"../../etc"', "'/abs/path'", "1.0e-300",
    "0.00015", "4096", "null", "[]", "{}", "<<: {a: 1}",
]
FIELDS = ("name", "dataset", "grid", "train", "resources", "tracking", "depth", "seed", "shortcut", "path", "uri",
          "experiment", "lr", "cpus_per_worker", "workers_per_cell", "batch_size", "paths", "cifar10")
SCALAR_TEXT = st.one_of(st.sampled_from(HOSTILE_SCALARS), st.integers(-10, 10**6).map(str),
                        st.text(string.ascii_letters + string.digits + "._-/", min_size=1, max_size=8))
FLOW = st.recursive(SCALAR_TEXT, lambda inner: st.one_of(
    st.lists(inner, max_size=3).map(lambda items: "[" + ", ".join(items) + "]"),
    st.lists(st.tuples(st.sampled_from(FIELDS), inner), max_size=3).map(
        lambda pairs: "{" + ", ".join(f"{k}: {v}" for k, v in pairs) + "}")), max_leaves=8)
YAML_DOCUMENTS = st.lists(st.tuples(st.sampled_from(FIELDS), FLOW), min_size=1, max_size=6).map(
    lambda pairs: "".join(f"{key}: {value}\n" for key, value in pairs))


def load_or_refuse(text: str) -> None:
    try:
        expand_cells(parse_text(text))
    except GridError as exc:
        check_error(exc, "g.yaml")


@SETTINGS
@given(YAML_DOCUMENTS)
def test_any_yaml_document_is_a_grid_or_one_grid_error(text):
    load_or_refuse(text)


@SETTINGS
@given(valid_grids(), st.sampled_from(("train", "resources", "tracking", "dataset")), st.data())
def test_a_hostile_value_in_a_valid_grid_is_one_grid_error(grid, section, data):
    """The hostile value reaches validation: one section of an otherwise valid grid holds it."""
    model = {"train": TrainOverrides, "resources": Resources, "tracking": TrackingSpec, "dataset": DatasetSpec}[section]
    field = data.draw(st.sampled_from(sorted(model.model_fields)))
    grid.pop(section, None)
    text = yaml.safe_dump(grid, sort_keys=False) + f"{section}:\n  {field}: {data.draw(FLOW)}\n"
    load_or_refuse(text)


@SETTINGS
@given(st.lists(st.one_of(st.binary(max_size=12), st.sampled_from([s.encode() for s in HOSTILE_SCALARS]),
                          st.sampled_from([f"\n{f}: ".encode() for f in FIELDS])), max_size=12))
def test_any_bytes_with_yaml_in_them_are_a_grid_or_one_grid_error(scratch, parts):
    path = scratch / "hostile.yaml"
    path.write_bytes(b"".join(parts))
    try:
        expand_cells(load_grid(path))
    except GridError as exc:
        check_error(exc, str(path))
