"""The grid file's settings described for people: what `resnetctl fields` prints and the README shows.

Each row is read off the one declaration of the field (`training.config.TrainConfig`,
`orchestrator.cells.Resources`: type, bounds, description, default) plus what each dataset's paper
preset sets it to, so the documentation cannot drift from what the grid accepts.
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin

from annotated_types import Ge, Gt, Le, Lt, MaxLen
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from orchestrator.cells import Resources
from orchestrator.detection_presets import DETECTION_PRESETS
from orchestrator.presets import PRESETS, WARMUP, WARMUP_FROM_DEPTH
from pipelines.catalog import VARIANT_OF
from training.config import TrainConfig
from training.detection_config import DetectionConfig

# "detection": the `train:` section of a detection grid (`task: detection`, Tables 7-8)
SECTIONS: dict[str, type[BaseModel]] = {"train": TrainConfig, "resources": Resources, "detection": DetectionConfig}


@dataclass(frozen=True)
class FieldRow:
    name: str
    values: str  # the type and bounds, e.g. "integer 1..65536", "ffcv | torch", "list of integers >= 1"
    default: str  # "-" when a preset must set it
    presets: str  # what the paper presets set, e.g. "cifar10, cifar100: 128; imagenet: 256"
    description: str


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _bounds(metadata: list[Any]) -> str:
    metadata = [m for item in metadata for m in (item.metadata if isinstance(item, FieldInfo) else [item])]
    low = next((f">= {_number(m.ge)}" for m in metadata if isinstance(m, Ge)), None) or next(
        (f"> {_number(m.gt)}" for m in metadata if isinstance(m, Gt)), None)
    high = next((f"<= {_number(m.le)}" for m in metadata if isinstance(m, Le)), None) or next(
        (f"< {_number(m.lt)}" for m in metadata if isinstance(m, Lt)), None)
    longest = next((f"at most {m.max_length}" for m in metadata if isinstance(m, MaxLen)), None)
    return ", ".join(part for part in (low, high, longest) if part)


def _kind(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is Literal:
        return " | ".join(str(v) for v in get_args(annotation))
    if origin in (Union, types.UnionType):
        kinds = [_kind(a) for a in get_args(annotation) if a is not type(None)]
        return " or ".join(kinds) + (" or null" if type(None) in get_args(annotation) else "")
    if origin is tuple:
        item = get_args(annotation)[0]
        inner = _bounds(getattr(item, "__metadata__", ()))
        base = _kind(get_args(item)[0] if hasattr(item, "__metadata__") else item)
        return f"list of {base}s" + (f" ({inner})" if inner else "")
    return {int: "integer", float: "number", bool: "true | false", str: "text"}.get(annotation, str(annotation))


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return "[" + ", ".join(map(str, value)) + "]"
    return "null" if value is None else _number(value) if isinstance(value, float) else str(value)


def _preset_values(name: str, presets: dict[str, dict[str, Any]] = PRESETS) -> str:
    """What each dataset's preset sets `name` to, datasets with the same value grouped."""
    groups: dict[str, list[str]] = {}
    for dataset, values in presets.items():
        if name in values:
            groups.setdefault(_show(values[name]), []).append(dataset)
    if len(groups) == 1 and len(next(iter(groups.values()))) == len(presets):
        parts = [f"all: {next(iter(groups))}"]
    else:
        parts = [f"{', '.join(datasets)}: {value}" for value, datasets in groups.items()]
    if name in WARMUP:
        cifar = ", ".join(d for d in PRESETS if VARIANT_OF[d] == "cifar")
        parts.append(f"{cifar} at depth >= {WARMUP_FROM_DEPTH}: {_show(WARMUP[name])}")
    return "; ".join(parts)


def field_rows(section: str) -> list[FieldRow]:
    """One row per field of a grid section ("train", "resources" or "detection"), in declaration order."""
    rows = []
    for name, info in SECTIONS[section].model_fields.items():
        bounds = _bounds(info.metadata)
        values = _kind(info.annotation) + (f", {bounds}" if bounds else "")
        default = "-" if info.is_required() else _show(info.default)
        presets = {"train": PRESETS, "detection": DETECTION_PRESETS}.get(section)
        rows.append(FieldRow(name, values, default, _preset_values(name, presets) if presets else "",
                             info.description or ""))
    return rows
