"""`grid.yaml` -> a validated `GridSpec`, or one `GridError` naming the file, line and field.

The file is read as UTF-8, parsed with PyYAML's safe loader (plain data only: no object tags)
and validated by strict pydantic models that forbid unknown keys. Every error message looks
like ``grid.yaml:12: grid.depth[2]: 57 is not a valid CIFAR depth (6n+2: 20, 32, 44, ...)`` so
the user can jump to the line. Nothing here imports torch, Ray or MLflow: a bad grid is
refused before any of them start.

`grid` is either one mapping of axes (their Cartesian product is the set of cells) or a list
of such mappings (the union of their products), which is how a grid says "ResNet-18/34 with
A, B and C, but ResNet-50/101/152 with B only" (paper Table 3).
"""

from __future__ import annotations

import difflib
import os
import re
import reprlib
import sys
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from models.arch import Shortcut, arch_name, default_shortcut, layout_problem
from orchestrator.cells import Resources
from orchestrator.claims import DEFAULT_ALPHA, DEFAULT_TOLERANCE, parse_claim
from pipelines.catalog import DATASETS, VARIANT_OF, DatasetName
from resnetctl.errors import UserError
from training.config import TrainConfig

MAX_FILE_BYTES = 1 << 20  # a grid is a page of YAML, not a data file
MAX_AXIS_VALUES = 10_000
MAX_DEPTH = 10_000  # ResNet-1202 is the paper's deepest; this only refuses absurd numbers
# values a grid may stand for once YAML aliases are expanded: a page of settings is a few hundred; a
# 1 KiB file of nested aliases can stand for 10^9, which validation would visit one by one
MAX_YAML_NODES = 100_000
NAME_MAX_BYTES = 255  # one path component, as Linux file systems allow (NAME_MAX)
PATH_MAX_BYTES = 4095
# grid and experiment names: they become MLflow experiment names, artifact folders and terminal text
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
NAME_RULE = "must be letters, digits, '.', '_' or '-', starting with a letter or digit, at most 64"
TRACKING_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "file", "databricks")

Loc = tuple[str | int, ...]


class GridError(UserError, ValueError):
    """Bad grid input; the message is ready to print: "FILE:LINE: FIELD: what is wrong"."""

    def __init__(self, message: str, *, source: str | None = None, line: int | None = None, field: str | None = None):
        super().__init__(message)
        self.source = source
        self.line = line
        self.field = field

    @classmethod
    def at(cls, source: str, line: int | None, field: str | None, text: str) -> GridError:
        where = f"{source}:{line}" if line else source
        message = f"{where}: {field}: {text}" if field else f"{where}: {text}"
        return cls(message, source=source, line=line, field=field)

    @classmethod
    def at_path(cls, source: str, lines: dict[Loc, int], loc: Loc, text: str) -> GridError:
        """A GridError at a path into the file (as in `evaluate.models[0].grid`), on the line the path is on."""
        return cls.at(source, _line_of(lines, loc), _format_loc(loc) or None, text)


# ----------------------------------------------------------------------------- models
class _Strict(BaseModel):
    # strict: YAML already typed the values, so "128" stays a string and is refused as a batch size
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]
Depth = Annotated[int, Field(ge=1, le=MAX_DEPTH)]


def _path_string(value: Any) -> Path:
    """A path as the user typed it, made absolute against the current working directory."""
    if not isinstance(value, str):
        raise ValueError(f"must be a path string (got {type(value).__name__})")
    if not value.strip() or "\x00" in value:
        raise ValueError("must be a non-empty path")
    path = os.path.abspath(os.path.expanduser(value))
    longest = max((part for part in path.split(os.sep)), key=lambda part: len(part.encode("utf-8", "replace")))
    if len(longest.encode("utf-8", "replace")) > NAME_MAX_BYTES:
        raise ValueError(f"a path component is longer than {NAME_MAX_BYTES} bytes, more than file systems allow "
                         f"({_short(longest)})")
    if len(path.encode("utf-8", "replace")) > PATH_MAX_BYTES:
        raise ValueError(f"the path is longer than {PATH_MAX_BYTES} bytes, more than file systems allow")
    return Path(path)


class DatasetSpec(_Strict):
    """Which prepared data the cells train on; `paths` names one folder per dataset of a dataset axis."""

    name: DatasetName | None = None
    path: Path | None = None
    paths: dict[DatasetName, Path] = Field(default_factory=dict)

    @field_validator("path", mode="before")
    @classmethod
    def _resolve_path(cls, value: Any) -> Any:
        return None if value is None else _path_string(value)

    @field_validator("paths", mode="before")
    @classmethod
    def _resolve_paths(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {key: _path_string(path) for key, path in value.items()}
        return value

    def path_for(self, dataset: str) -> Path | None:
        if dataset in self.paths:
            return self.paths[dataset]
        return self.path if self.name in (None, dataset) else None


def _as_yaml_type(annotation: Any) -> Any:
    """A TrainConfig annotation as YAML delivers it: a list where the config holds a tuple."""
    if get_origin(annotation) is tuple:
        return list[get_args(annotation)[0]]
    return annotation


def _override_type(name: str) -> Any:
    """The type (with bounds) a grid may give TrainConfig field `name` in `train:` or as an axis value."""
    info = TrainConfig.model_fields[name]
    annotation = _as_yaml_type(info.annotation)
    return Annotated[(annotation, *info.metadata)] if info.metadata else annotation


class _Overrides(_Strict):
    def given(self) -> dict[str, Any]:
        """The fields the file set, as TrainConfig keyword arguments (lists become tuples)."""
        return {name: _freeze(getattr(self, name)) for name in self.model_fields_set}


# Overrides of the dataset's paper preset: every TrainConfig field, each optional. A field left out
# keeps the preset's value; `null` sets it to None where TrainConfig allows it (`warmup_lr: null`
# turns the ResNet-110 warm-up off).
TrainOverrides = create_model(
    "TrainOverrides",
    __base__=_Overrides,
    __doc__="The grid's `train:` section: overrides of the dataset's preset, one per TrainConfig field.",
    **{name: (_override_type(name), Field(None, description=info.description))
       for name, info in TrainConfig.model_fields.items()},
)


def _axis(item: Any) -> Any:
    # default None means "not an axis"; an explicit `null` is refused (an axis is a list of values)
    return Annotated[list[item], Field(min_length=1, max_length=MAX_AXIS_VALUES)]


# The axes a grid may take products over: the cell's identity, then any training field.
CELL_AXES: tuple[str, ...] = ("depth", "shortcut", "dataset", "seed")
TRAIN_AXES: tuple[str, ...] = tuple(TrainOverrides.model_fields)
AXES: tuple[str, ...] = CELL_AXES + TRAIN_AXES


class _CellAxes(_Strict):
    """One block of axes; every list must be non-empty. `depth` is required."""

    depth: Annotated[list[Depth], Field(min_length=1, max_length=MAX_AXIS_VALUES)]
    shortcut: _axis(Shortcut) = None
    dataset: _axis(DatasetName) = None
    seed: _axis(Seed) = None

    def values(self) -> dict[str, list[Any]]:
        """The axes this block sets, in the canonical order of AXES (stable cell ids and names)."""
        return {name: getattr(self, name) for name in AXES if name in self.model_fields_set}


# the training-field axes are declared from TrainConfig, like the overrides, so none can drift apart
GridAxes = create_model(
    "GridAxes",
    __base__=_CellAxes,
    __doc__=_CellAxes.__doc__,
    **{name: (_axis(_override_type(name)), None) for name in TRAIN_AXES},
)


class TrackingSpec(_Strict):
    """Where MLflow writes; None means MLFLOW_TRACKING_URI or `sqlite:///mlflow.db` in the cwd."""

    uri: str | None = None
    # None: the grid's name. The name's rule: it becomes an artifact folder (`../x` would leave the project)
    experiment: Annotated[str, Field(pattern=NAME_PATTERN)] | None = None

    @field_validator("uri")
    @classmethod
    def _known_scheme(cls, value: str | None) -> str | None:
        if value is None:
            return value
        scheme = value.split("://", 1)[0].split("+", 1)[0].lower() if "://" in value else ""
        if scheme not in TRACKING_SCHEMES:
            raise ValueError(f"{_short(value)} is not an MLflow tracking URI (schemes: {', '.join(TRACKING_SCHEMES)})")
        return value


class VerdictsSpec(_Strict):
    """How `resnetctl report` judges this grid (the report's --tolerance and --alpha override these)."""

    tolerance: float = Field(DEFAULT_TOLERANCE, ge=0, le=100, description=(
        "percentage points the paper's number may lie outside our 95% interval and still count as reproduced"))
    alpha: float = Field(DEFAULT_ALPHA, gt=0, lt=1, description="significance level of the claims' t-tests")


class BudgetSpec(_Strict):
    """What a grid may spend (`budget:`): GPU-hours, or money at the grid's price_per_gpu_hour; one of the two."""

    gpu_hours: float | None = Field(None, gt=0, le=1e9, description="GPU-hours the grid's cells may use in all")
    money: float | None = Field(None, gt=0, le=1e12, description="money at price_per_gpu_hour")

    @model_validator(mode="after")
    def _one_of_the_two(self) -> BudgetSpec:
        if (self.gpu_hours is None) == (self.money is None):
            raise ValueError("give the budget as gpu_hours or as money (one of the two)")
        return self


class GridFile(_Strict):
    """What every kind of grid file (training, evaluation, detection) shares: where it was read from, so an
    error names FILE:LINE: field, and the MLflow experiment its runs go to. No fields: each kind declares its own."""

    _source: str = PrivateAttr(default="<grid>")
    _lines: dict[Loc, int] = PrivateAttr(default_factory=dict)
    _grid_is_list: bool = PrivateAttr(default=False)

    @property
    def source(self) -> str:
        return self._source

    @property
    def experiment_name(self) -> str:
        return self.tracking.experiment or self.name

    def error(self, loc: Loc, text: str) -> GridError:
        """A GridError at `loc` (a path into the file, as in `grid[0].depth[2]`) with its line."""
        return GridError.at_path(self._source, self._lines, _raw_loc(loc, self._grid_is_list), text)


class GridSpec(GridFile):
    """A validated grid file. Build it with `load_grid` (or `parse_grid` for data already loaded)."""

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    # detection grids (Tables 7-8) are validated by orchestrator.detection_spec; load_cells dispatches on this key
    task: Literal["classification", "detection"] = "classification"
    dataset: DatasetSpec
    grid: Annotated[list[GridAxes], Field(min_length=1, max_length=1000)]
    train: TrainOverrides = Field(default_factory=TrainOverrides)
    resources: Resources = Field(default_factory=Resources)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    claims: Annotated[list[str], Field(max_length=1000)] = Field(default_factory=list)  # "resnet8-A < plain8"
    verdicts: VerdictsSpec = Field(default_factory=VerdictsSpec)
    price_per_gpu_hour: float | None = Field(None, gt=0, le=1e6)  # money per GPU-hour: plan's cost, budget.money
    budget: BudgetSpec | None = None  # submit refuses an estimate above it without --yes; stops starting cells

    @model_validator(mode="after")
    def _money_needs_a_price(self) -> GridSpec:
        if self.budget is not None and self.budget.money is not None and self.price_per_gpu_hour is None:
            raise ValueError("budget.money needs price_per_gpu_hour")
        return self

    @field_validator("grid", mode="before")
    @classmethod
    def _one_block_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, dict) else value

    def datasets(self) -> list[str]:
        """Every dataset a cell of this grid trains on, in first-use order."""
        names: list[str] = []
        for block in self.grid:
            for name in block.dataset or [self.dataset.name]:
                if name not in names:
                    names.append(name)
        return names



def _freeze(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


# ----------------------------------------------------------------------------- YAML
def _read_text(path: Path, source: str) -> str:
    try:
        if path.is_dir():
            raise GridError(f"{source}: is a folder, not a grid file", source=source)
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise GridError(f"{source}: no such grid file", source=source) from None
    except OSError as exc:
        raise GridError(f"{source}: cannot read the grid file ({exc.strerror})", source=source) from None
    if len(data) > MAX_FILE_BYTES:
        raise GridError(f"{source}: grid file is larger than {MAX_FILE_BYTES // 1024} KiB", source=source)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise GridError.at(
            source, line, None, f"not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})"
        ) from None


class _UnreadableValue(yaml.YAMLError):
    """A scalar PyYAML's constructors fail on (`!!int abc`, 2024-02-30, an integer of 5000 digits)."""

    def __init__(self, node: yaml.Node, exc: Exception):
        super().__init__(str(exc))
        self.node, self.exc = node, exc


_TAG_WORDS = {"int": "not an integer", "float": "not a number", "bool": "not true or false",
              "timestamp": "not a date or time", "binary": "not base64 data", "null": "not null"}


def _unreadable_text(problem: _UnreadableValue) -> str:
    tag = str(problem.node.tag).rsplit(":", 1)[-1]
    reason = _TAG_WORDS.get(tag, f"not a valid {tag}")
    detail = str(problem.exc)
    if "integer string conversion" in detail:
        reason = f"an integer of more than {sys.get_int_max_str_digits()} digits"
    elif isinstance(problem.exc, ValueError) and tag == "timestamp" and detail:
        reason += f" ({detail})"
    value = problem.node.value if isinstance(problem.node, yaml.ScalarNode) else f"<{problem.node.id}>"
    return f"{_short(value)} is {reason} (YAML tag !!{tag})"


class _GridLoader(yaml.SafeLoader):
    """PyYAML's safe loader whose constructor failures name the node (PyYAML raises bare ValueErrors)."""

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, KeyError, AttributeError, TypeError, OverflowError, IndexError) as exc:
            raise _UnreadableValue(node, exc) from None


def _yaml_error(source: str, text: str, exc: yaml.YAMLError, lines: dict[Loc, int] | None = None) -> GridError:
    if isinstance(exc, _UnreadableValue):
        line = exc.node.start_mark.line + 1
        at_line = [loc for loc, number in (lines or {}).items() if number == line and loc]
        field = _format_loc(max(at_line, key=len)) if at_line else None
        return GridError.at(source, line, field, _unreadable_text(exc))
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if isinstance(exc, yaml.reader.ReaderError):
        line = text[: exc.position].count("\n") + 1
        char = chr(exc.character) if isinstance(exc.character, int) else exc.character
        return GridError.at(source, line, None, f"YAML: control character {char!r} is not allowed")
    if isinstance(exc, yaml.constructor.ConstructorError) and "constructor for the tag" in str(exc.problem):
        tag = str(exc.problem).split("tag", 1)[1].strip().strip("'")
        line = mark.line + 1 if mark else None
        return GridError.at(source, line, None, f"YAML tag {tag!r} is not allowed: a grid file is plain data")
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    text_ = f"YAML syntax error: {problem}" + (f" ({context})" if context else "")
    return GridError.at(source, mark.line + 1 if mark else None, None, text_)


def _walk(node: yaml.Node, loc: Loc, lines: dict[Loc, int], source: str, seen: set[int]) -> None:
    """Record the line of every key and item; refuse duplicate and non-scalar keys."""
    if id(node) in seen:  # an alias: walked once already (and cycles end here)
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        keys: dict[str, int] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                raise GridError.at(source, line, _format_loc(loc) or None, "keys must be plain names")
            key = key_node.value
            if key in keys:
                raise GridError.at(
                    source, line, _format_loc((*loc, key)), f"duplicate key (first given on line {keys[key]})"
                )
            keys[key] = line
            lines[(*loc, key)] = line
            _walk(value_node, (*loc, key), lines, source, seen)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[(*loc, index)] = item.start_mark.line + 1
            _walk(item, (*loc, index), lines, source, seen)


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """How many values `node` stands for once aliases are expanded (each shared node counted once per use)."""
    if id(node) in sizes:  # computed already, or an alias cycle being walked (counted once)
        return sizes[id(node)]
    sizes[id(node)] = 1
    children: list[yaml.Node] = []
    if isinstance(node, yaml.MappingNode):
        children = [part for pair in node.value for part in pair]
    elif isinstance(node, yaml.SequenceNode):
        children = node.value
    total = 1 + sum(_expanded_size(child, sizes) for child in children)
    sizes[id(node)] = min(total, MAX_YAML_NODES + 1)  # the count stops growing at the cap
    return sizes[id(node)]


def _check_size(node: yaml.Node, source: str) -> None:
    """GridError, before any value is validated, when the document stands for more than MAX_YAML_NODES values."""
    sizes: dict[int, int] = {}
    if _expanded_size(node, sizes) <= MAX_YAML_NODES:
        return
    line, field = node.start_mark.line + 1, None
    if isinstance(node, yaml.MappingNode):  # name the section that explodes
        for key, value in node.value:
            if sizes.get(id(value), 0) > MAX_YAML_NODES and isinstance(key, yaml.ScalarNode):
                line, field = key.start_mark.line + 1, str(key.value)
                break
    raise GridError.at(source, line, field, f"stands for more than {MAX_YAML_NODES:,} values once its YAML "
                                            "aliases are expanded; a grid is a page of settings")


def load_yaml(text: str, source: str) -> tuple[Any, dict[Loc, int]]:
    """Safe-load one YAML document; return the data and the line of every key/item path."""
    loader = None
    lines: dict[Loc, int] = {}
    try:
        loader = _GridLoader(text)
        node = loader.get_single_node()
        if node is None:
            raise GridError(f"{source}: the grid file is empty", source=source)
        lines[()] = node.start_mark.line + 1
        _walk(node, (), lines, source, set())
        _check_size(node, source)
        data = loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise _yaml_error(source, text, exc, lines) from None
    except RecursionError:
        raise GridError(f"{source}: the YAML nests too deeply", source=source) from None
    finally:
        if loader is not None:
            loader.dispose()
    return data, lines


# ----------------------------------------------------------------------------- errors
def _format_loc(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _raw_loc(loc: Loc, grid_is_list: bool) -> Loc:
    """Map a model path (grid is always a list there) back to the file's shape."""
    if not grid_is_list and len(loc) >= 2 and loc[0] == "grid" and loc[1] == 0:
        return ("grid", *loc[2:])
    return loc


def _line_of(lines: dict[Loc, int], loc: Loc) -> int | None:
    while loc not in lines and loc:
        loc = loc[:-1]
    return lines.get(loc)


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds, through lists, optionals and Annotated: list[GridAxes] -> GridAxes."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def _allowed_keys(parent: Loc, root: type[BaseModel]) -> list[str]:
    """The keys the model at `parent` (a path into a file validated as `root`) accepts."""
    if len(parent) >= 2 and parent[0] == "dataset" and parent[1] == "paths":
        return list(DATASETS)
    model = root
    for part in parent:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if isinstance(part, str):
            model = _inner_model(field.annotation) if field is not None else None
        if model is None:
            return []
    return list(model.model_fields)


class _ShortRepr(reprlib.Repr):
    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 128:  # repr() itself refuses past 4300 digits; the digits say nothing here anyway
            return f"<an integer of {x.bit_length()} bits>"
        return super().repr_int(x, level)


_REPR = _ShortRepr()  # builds at most a few dozen characters of a value, however large the value is
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict, _REPR.maxset = 2, 6, 6, 4, 6
_REPR.maxstring, _REPR.maxlong, _REPR.maxother = 60, 40, 60


def _short(value: Any) -> str:
    """The value's repr, cut to 60 characters without first building the whole of it."""
    text = _REPR.repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _describe(error: dict[str, Any], raw: Loc, root: type[BaseModel]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(raw[:-1], root)
        close = difflib.get_close_matches(str(raw[-1]), allowed, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"unknown key; {hint}allowed: {', '.join(allowed)}"
    if kind == "missing":
        return "required"
    if kind == "string_pattern_mismatch" and raw in (("name",), ("tracking", "experiment")):
        return f"{NAME_RULE} (got {_short(error.get('input'))})"
    if kind == "too_short" and raw and raw[0] == "grid":
        return "an axis needs at least one value"
    message = error["msg"]
    message = re.sub(r"^Input should be ", "must be ", message)
    message = re.sub(r"^Value error, ", "", message)
    if kind in ("list_type", "dict_type", "model_type") and raw and raw[0] == "grid":
        message += " (an axis is a list of values, e.g. [20, 32])" if kind == "list_type" else ""
    if kind == "value_error":  # our validators' messages already show the value
        return message
    return f"{message} (got {_short(error.get('input'))})"


def validation_error(exc: ValidationError, source: str, lines: dict[Loc, int], grid_is_list: bool = False,
                     root: type[BaseModel] | None = None) -> GridError:
    """The first of pydantic's errors as one GridError with its line (`root`: the model the file was validated as)."""
    errors = exc.errors(include_url=False)
    located = []
    for error in errors:
        raw = _raw_loc(tuple(error["loc"]), grid_is_list)
        if error["type"] == "missing" and raw and raw[0] == "grid" and len(raw) >= 2 and raw[-1] == "depth":
            error = {**error, "msg": "required"}
        located.append((_line_of(lines, raw) or 0, raw, error))
    # an unknown key usually explains the rest (a misspelt required key is also "missing"): show it first
    located.sort(key=lambda item: (item[2]["type"] != "extra_forbidden", item[0]))
    line, raw, error = located[0]
    text = _describe(error, raw, root or GridSpec)
    if len(located) > 1:
        text += f" (and {len(located) - 1} more error{'s' if len(located) > 2 else ''})"
    field = _format_loc(raw) or None
    return GridError.at(source, line or None, field, text)


# ----------------------------------------------------------------------------- checks
def check_axis_values(spec, b: int, block) -> None:
    """A block's axes (training or detection grid): no value twice, no axis also set in `train:`."""
    for axis, values in block.values().items():
        first: dict[Any, int] = {}
        for i, value in enumerate(values):
            key = (type(value).__name__, _freeze(value))
            if key in first:
                raise spec.error(("grid", b, axis, i), f"{_short(value)} repeats {axis}[{first[key]}]")
            first[key] = i
        if axis in spec.train.model_fields_set:
            raise spec.error(("grid", b, axis), f"also set in train.{axis}; give it in one place")


def _check(spec: GridSpec) -> GridSpec:
    """Cross-field rules pydantic cannot see: datasets and their paths, depths, duplicates."""
    data = spec.dataset
    for b, block in enumerate(spec.grid):
        check_axis_values(spec, b, block)
        if block.dataset is None and data.name is None:
            raise spec.error(("dataset", "name"), "required (or give a grid.dataset axis)")
        if block.dataset is not None and data.name is not None and data.name not in block.dataset:
            raise spec.error(("dataset", "name"), f"{data.name!r} is not one of the grid's dataset axis values")
    datasets = spec.datasets()
    for name in datasets:
        if data.path_for(name) is None and not (len(datasets) == 1 and data.path is not None):
            field = ("dataset", "path") if len(datasets) == 1 else ("dataset", "paths", name)
            raise spec.error(field, f"required: where `resnetctl prepare {name}` wrote the data")
    for name in data.paths:
        if name not in datasets:
            raise spec.error(("dataset", "paths", name), "no cell of this grid trains on this dataset")
    for b, block in enumerate(spec.grid):
        variants = sorted({VARIANT_OF[name] for name in (block.dataset or datasets)})
        shortcuts = block.shortcut or [None]
        for i, depth in enumerate(block.depth):
            for variant in variants:
                problem = layout_problem(depth, variant)
                if problem:
                    raise spec.error(("grid", b, "depth", i), problem.problem)
                for j, shortcut in enumerate(shortcuts):
                    problem = shortcut and layout_problem(depth, variant, shortcut)
                    if problem:
                        raise spec.error(("grid", b, "shortcut", j), problem.problem + (
                            "; split the grid into blocks (a list under `grid:`) to give it other depths only"))
    if spec.train.iterations is not None and spec.train.epochs is not None:
        raise spec.error(("train", "epochs"), "give either train.iterations or train.epochs, not both")
    updates: dict[str, Any] = {}
    if data.name is None or data.path is None:
        updates = {"name": data.name or datasets[0], "path": data.path or data.path_for(datasets[0])}
    if updates:
        spec.dataset = data.model_copy(update=updates)
    _check_claims(spec)
    return spec


def grid_archs(spec: GridSpec) -> dict[str, str]:
    """Every network a cell of the grid trains: arch name -> its variant (cifar | imagenet)."""
    archs: dict[str, str] = {}
    for block in spec.grid:
        for dataset in block.dataset or spec.datasets()[:1]:
            variant = VARIANT_OF[dataset]
            for depth in block.depth:
                for shortcut in block.shortcut or [default_shortcut(variant)]:
                    archs[arch_name(depth, shortcut)] = variant
    return archs


def _check_claims(spec: GridSpec) -> None:
    """Each claim parses and names two networks of this grid and a metric the report knows."""
    archs = grid_archs(spec)
    variants = set(archs.values())
    variant = variants.pop() if len(variants) == 1 else None
    for i, text in enumerate(spec.claims):
        try:
            parse_claim(text, archs=archs, variant=variant)
        except ValueError as exc:
            raise spec.error(("claims", i), str(exc)) from None


# ----------------------------------------------------------------------------- entry points
def parse_grid(data: Any, source: str = "<grid>", lines: dict[Loc, int] | None = None) -> GridSpec:
    """Validate already-loaded grid data; `lines` (from load_yaml) puts line numbers in errors."""
    lines = lines or {}
    if not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else type(data).__name__
        raise GridError.at(source, lines.get(()), None, f"a grid file is a mapping of sections, not {kind}")
    grid_is_list = isinstance(data.get("grid"), list)
    try:
        spec = GridSpec.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, source, lines, grid_is_list) from None
    except RecursionError:
        raise GridError(f"{source}: the YAML nests too deeply (recursive alias?)", source=source) from None
    spec._source = source
    spec._lines = lines
    spec._grid_is_list = grid_is_list
    return _check(spec)


def read_grid_file(path: str | os.PathLike[str]) -> tuple[Any, dict[Loc, int], str]:
    """Read and safe-load a grid file: its data, the line of every key/item path, and its name in messages."""
    source = os.fspath(path)
    text = _read_text(Path(source), source)
    data, lines = load_yaml(text, source)
    return data, lines, source


def load_grid(path: str | os.PathLike[str]) -> GridSpec:
    """Read, parse and validate a (training) grid file; raises GridError with file, line and field."""
    data, lines, source = read_grid_file(path)
    return parse_grid(data, source, lines)
