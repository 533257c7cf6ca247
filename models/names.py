"""Readable architecture names ("resnet56-A", "plain34", "resnet50-B") and their defaults.

The grid, the CLI and MLflow all name a network by `arch_name(depth, shortcut)`; this module
turns such names back into builder arguments. It imports nothing heavy, so the grid can be
validated without loading torch.
"""

from __future__ import annotations

import re
from typing import Literal

Variant = Literal["cifar", "imagenet"]
VARIANTS: tuple[str, ...] = ("cifar", "imagenet")
# "plain" means: the same stack with every shortcut removed (paper's plain baselines).
SHORTCUTS: tuple[str, ...] = ("plain", "A", "B", "C")
RESIDUAL_SHORTCUTS: tuple[str, ...] = ("A", "B", "C")
# Paper Table 1: the ImageNet depths and their blocks per stage.
IMAGENET_STAGE_BLOCKS: dict[int, tuple[int, ...]] = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}
# Resolution at which a variant's multiply-adds are quoted (paper: 224x224 ImageNet crops, 32x32 CIFAR).
INPUT_SIZES: dict[str, tuple[int, int, int]] = {"cifar": (3, 32, 32), "imagenet": (3, 224, 224)}

# The networks the paper trains, in the order of its tables (Fig. 6 / Table 6, Tables 2-3).
MODEL_FAMILY: dict[str, tuple[str, ...]] = {
    "cifar": (
        "plain20",
        "plain32",
        "plain44",
        "plain56",
        "plain110",
        "resnet20-A",
        "resnet32-A",
        "resnet44-A",
        "resnet56-A",
        "resnet110-A",
        "resnet1202-A",
    ),
    "imagenet": (
        "plain18",
        "plain34",
        "resnet18-A",
        "resnet34-A",
        "resnet34-B",
        "resnet34-C",
        "resnet50-B",
        "resnet101-B",
        "resnet152-B",
    ),
}

_NAME_PATTERN = re.compile(r"^(?P<kind>resnet|plain)(?P<depth>\d+)(?:-(?P<shortcut>[A-Za-z]+))?$", re.IGNORECASE)


def default_variant(depth: int) -> str:
    """ImageNet for the paper's ImageNet depths (18/34/50/101/152), CIFAR for everything else.

    50 and 152 are also valid CIFAR depths (6n+2); pass the variant explicitly for those.
    """
    return "imagenet" if depth in IMAGENET_STAGE_BLOCKS else "cifar"


def check_variant(variant: str) -> str:
    if variant not in VARIANTS:
        raise ValueError(f"variant={variant!r}: must be one of {', '.join(VARIANTS)}")
    return variant


def check_shortcut(shortcut: str) -> str:
    if shortcut not in SHORTCUTS:
        raise ValueError(f"shortcut={shortcut!r}: must be one of {', '.join(SHORTCUTS)}")
    return shortcut


def default_num_classes(variant: str) -> int:
    return {"cifar": 10, "imagenet": 1000}[check_variant(variant)]


def default_shortcut(variant: str) -> str:
    """The paper's default option: A (parameter-free) on CIFAR, B (projections) on ImageNet."""
    return {"cifar": "A", "imagenet": "B"}[check_variant(variant)]


def arch_name(depth: int, shortcut: str) -> str:
    """Readable name used by grid cells and MLflow: arch_name(56, "A") -> "resnet56-A", (20, "plain") -> "plain20"."""
    check_shortcut(shortcut)
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth={depth!r}: must be a positive integer")
    return f"plain{depth}" if shortcut == "plain" else f"resnet{depth}-{shortcut}"


def parse_arch(name: str, *, variant: str | None = None) -> tuple[int, bool, str]:
    """Split a readable name into (depth, residual, shortcut).

    A ResNet name without an option ("resnet56", "resnet50") gets the variant's default
    shortcut; the variant is inferred from the depth when not given. Plain names take no option.
    """
    match = _NAME_PATTERN.match(name.strip()) if isinstance(name, str) else None
    if match is None:
        raise ValueError(
            f"name={name!r}: expected 'resnet<depth>[-A|-B|-C]' or 'plain<depth>', e.g. 'resnet56-A', 'plain34'"
        )
    depth = int(match["depth"])
    option = match["shortcut"]
    if match["kind"].lower() == "plain":
        if option is not None:
            raise ValueError(f"name={name!r}: plain networks have no shortcut option, use 'plain{depth}'")
        return depth, False, "plain"
    if option is None:
        return depth, True, default_shortcut(variant or default_variant(depth))
    option = option.upper()
    if option not in RESIDUAL_SHORTCUTS:
        raise ValueError(f"name={name!r}: shortcut option {option!r} is not one of A, B, C")
    return depth, True, option
