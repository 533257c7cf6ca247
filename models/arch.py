"""The paper's architecture rules in one place, without torch: names, layouts, validation, multiply-adds.

Everything that decides *which* network a depth and shortcut option mean lives here: the CIFAR
rule (Sec. 4.2: 6n+2 layers, three stages of n basic blocks, 16/32/64 filters), the ImageNet
table (Table 1: basic blocks for 18/34, bottlenecks from 50), which blocks get which shortcut
(Sec. 3.3: A zero-pads, B projects where the shape changes, C projects everywhere; no option A
with bottlenecks), the readable names (`resnet56-A`, `plain34`) and the multiply-add count of
Table 1. `models/resnet.py` builds modules from an `ArchSpec`; the grid spec validates depths
with `layout_problem`; `plan` and the report count compute with `multiply_adds`. Importing this
module costs nothing, so a bad grid is refused before torch loads. `FlopCounterMode` checks the
count against the built networks in the tests.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal, get_args

Variant = Literal["cifar", "imagenet"]
# "plain": the same stack with every shortcut removed (the paper's plain baselines)
Shortcut = Literal["plain", "A", "B", "C"]
BlockKind = Literal["basic", "bottleneck"]
# what sits beside a block's main path: nothing (plain), x itself, x subsampled and zero-padded
# (option A where the shape changes), or a 1x1 conv + BN (options B and C)
ShortcutKind = Literal["none", "identity", "zero_pad", "projection"]

VARIANTS: tuple[str, ...] = get_args(Variant)
SHORTCUTS: tuple[str, ...] = get_args(Shortcut)
RESIDUAL_SHORTCUTS: tuple[str, ...] = tuple(s for s in SHORTCUTS if s != "plain")
EXPANSION: dict[str, int] = {"basic": 1, "bottleneck": 4}
# Paper Table 1: the ImageNet depths and their blocks per stage.
IMAGENET_STAGE_BLOCKS: dict[int, tuple[int, ...]] = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}
CIFAR_DEPTH_EXAMPLES = "20, 32, 44, 56, 110, 1202, ..."
STEM_WIDTH: dict[str, int] = {"cifar": 16, "imagenet": 64}
NUM_CLASSES: dict[str, int] = {"cifar": 10, "imagenet": 1000}
# the paper's default option: A (parameter-free) on CIFAR, B (projections) on ImageNet
DEFAULT_SHORTCUT: dict[str, str] = {"cifar": "A", "imagenet": "B"}
# Resolution at which a variant's multiply-adds are quoted (paper: 224x224 ImageNet crops, 32x32 CIFAR).
INPUT_SIZES: dict[str, tuple[int, int, int]] = {"cifar": (3, 32, 32), "imagenet": (3, 224, 224)}

# The networks the paper trains, in the order of its tables (Fig. 6 / Table 6, Tables 2-3).
MODEL_FAMILY: dict[str, tuple[str, ...]] = {
    "cifar": (
        "plain20", "plain32", "plain44", "plain56", "plain110",
        "resnet20-A", "resnet32-A", "resnet44-A", "resnet56-A", "resnet110-A", "resnet1202-A",
    ),
    "imagenet": (
        "plain18", "plain34", "resnet18-A", "resnet34-A", "resnet34-B", "resnet34-C",
        "resnet50-B", "resnet101-B", "resnet152-B",
    ),
}

_NAME_PATTERN = re.compile(r"^(?P<kind>resnet|plain)(?P<depth>\d+)(?:-(?P<shortcut>[A-Za-z]+))?$", re.IGNORECASE)


class ArchError(ValueError):
    """An architecture that cannot be built; `argument` names what is wrong, `problem` says why.

    str() reads "depth=57: 57 is not a valid CIFAR depth (...)" for Python callers; the grid spec
    puts `problem` after the file, line and field instead.
    """

    def __init__(self, argument: str, value: object, problem: str):
        super().__init__(f"{argument}={value!r}: {problem}")
        self.argument = argument
        self.problem = problem


# ----------------------------------------------------------------------------- names
def default_variant(depth: int) -> str:
    """ImageNet for the paper's ImageNet depths (18/34/50/101/152), CIFAR for everything else.

    50 and 152 are also valid CIFAR depths (6n+2); pass the variant explicitly for those.
    """
    return "imagenet" if depth in IMAGENET_STAGE_BLOCKS else "cifar"


def check_variant(variant: str) -> str:
    if variant not in VARIANTS:
        raise ArchError("variant", variant, f"must be one of {', '.join(VARIANTS)}")
    return variant


def check_shortcut(shortcut: str) -> str:
    if shortcut not in SHORTCUTS:
        raise ArchError("shortcut", shortcut, f"must be one of {', '.join(SHORTCUTS)}")
    return shortcut


def _check_positive(argument: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ArchError(argument, value, "must be a positive integer")
    return value


def default_num_classes(variant: str) -> int:
    return NUM_CLASSES[check_variant(variant)]


def default_shortcut(variant: str) -> str:
    return DEFAULT_SHORTCUT[check_variant(variant)]


def arch_name(depth: int, shortcut: str) -> str:
    """Readable name used by grid cells and MLflow: arch_name(56, "A") -> "resnet56-A", (20, "plain") -> "plain20"."""
    check_shortcut(shortcut)
    _check_positive("depth", depth)
    return f"plain{depth}" if shortcut == "plain" else f"resnet{depth}-{shortcut}"


def parse_arch(name: str, *, variant: str | None = None) -> tuple[int, bool, str]:
    """Split a readable name into (depth, residual, shortcut).

    A ResNet name without an option ("resnet56", "resnet50") gets the variant's default
    shortcut; the variant is inferred from the depth when not given. Plain names take no option.
    """
    match = _NAME_PATTERN.match(name.strip()) if isinstance(name, str) else None
    if match is None:
        raise ArchError("name", name, "expected 'resnet<depth>[-A|-B|-C]' or 'plain<depth>', e.g. 'resnet56-A', 'plain34'")
    depth = int(match["depth"])
    option = match["shortcut"]
    if match["kind"].lower() == "plain":
        if option is not None:
            raise ArchError("name", name, f"plain networks have no shortcut option, use 'plain{depth}'")
        return depth, False, "plain"
    if option is None:
        return depth, True, default_shortcut(variant or default_variant(depth))
    option = option.upper()
    if option not in RESIDUAL_SHORTCUTS:
        raise ArchError("name", name, f"shortcut option {option!r} is not one of A, B, C")
    return depth, True, option


# ----------------------------------------------------------------------------- layouts
@dataclass(frozen=True)
class BlockLayout:
    """One residual (or plain) block: its channels, stride and what its shortcut is."""

    stage: int  # 0-based
    in_channels: int
    planes: int  # width of the 3x3 conv(s); a bottleneck's output is 4x wider
    out_channels: int
    stride: int
    shortcut: ShortcutKind


def shortcut_kind(option: str, in_channels: int, out_channels: int, stride: int) -> ShortcutKind:
    """Paper Sec. 3.3: which shortcut a block gets under option plain/A/B/C."""
    if option == "plain":
        return "none"
    shape_changes = stride != 1 or in_channels != out_channels
    if option == "C" or (option == "B" and shape_changes):
        return "projection"
    if option == "A" and shape_changes:
        return "zero_pad"
    return "identity"


@dataclass(frozen=True)
class ArchSpec:
    """A validated architecture: what `resolve_arch` turned a depth, option and variant into."""

    variant: str
    depth: int
    shortcut: str  # "plain" | "A" | "B" | "C"
    block: str  # "basic" | "bottleneck"
    stage_blocks: tuple[int, ...]
    stage_widths: tuple[int, ...]  # the `planes` of each stage (bottleneck outputs are 4x wider)
    num_classes: int

    @property
    def residual(self) -> bool:
        return self.shortcut != "plain"

    @property
    def stem_width(self) -> int:
        return STEM_WIDTH[self.variant]

    @property
    def expansion(self) -> int:
        return EXPANSION[self.block]

    @property
    def name(self) -> str:
        return arch_name(self.depth, self.shortcut)

    @property
    def features(self) -> int:
        """Channels into the classifier."""
        return self.stage_widths[-1] * self.expansion

    def blocks(self) -> list[BlockLayout]:
        """Every block in forward order; the first block of each stage after the first has stride 2."""
        layout, in_channels = [], self.stem_width
        for stage, (count, planes) in enumerate(zip(self.stage_blocks, self.stage_widths, strict=True)):
            out_channels = planes * self.expansion
            for position in range(count):
                stride = 2 if stage > 0 and position == 0 else 1
                kind = shortcut_kind(self.shortcut, in_channels, out_channels, stride)
                layout.append(BlockLayout(stage, in_channels, planes, out_channels, stride, kind))
                in_channels = out_channels
        return layout


def _check_stage_blocks(stage_blocks) -> tuple[int, ...]:
    blocks = tuple(stage_blocks)
    if not blocks or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in blocks):
        raise ArchError("stage_blocks", stage_blocks, "must be a non-empty sequence of positive integers")
    return blocks


def _cifar_layout(depth: int, stage_blocks) -> tuple[str, tuple[int, ...]]:
    """Paper Sec. 4.2: 6n+2 layers, three stages of n basic blocks (or the given stage_blocks)."""
    if stage_blocks is not None:
        blocks = _check_stage_blocks(stage_blocks)
        if depth != 2 * sum(blocks) + 2:
            raise ArchError("depth", depth, f"stage_blocks={blocks} of basic blocks give depth {2 * sum(blocks) + 2}")
        return "basic", blocks
    if depth < 8 or (depth - 2) % 6:
        raise ArchError("depth", depth, f"{depth} is not a valid CIFAR depth (6n+2: {CIFAR_DEPTH_EXAMPLES})")
    n = (depth - 2) // 6
    return "basic", (n, n, n)


def _imagenet_layout(depth: int, stage_blocks) -> tuple[str, tuple[int, ...]]:
    """Paper Table 1: basic blocks for 18/34, bottlenecks for 50/101/152.

    With explicit stage_blocks the block type follows from the depth: 2 layers per basic
    block or 3 per bottleneck, plus the stem conv and the fc.
    """
    if stage_blocks is None:
        if depth not in IMAGENET_STAGE_BLOCKS:
            allowed = ", ".join(map(str, IMAGENET_STAGE_BLOCKS))
            raise ArchError("depth", depth, f"{depth} is not an ImageNet depth ({allowed})")
        return ("basic" if depth < 50 else "bottleneck"), IMAGENET_STAGE_BLOCKS[depth]
    blocks = _check_stage_blocks(stage_blocks)
    if depth == 2 * sum(blocks) + 2:
        return "basic", blocks
    if depth == 3 * sum(blocks) + 2:
        return "bottleneck", blocks
    raise ArchError("depth", depth, f"stage_blocks={blocks} give depth {2 * sum(blocks) + 2} (basic) "
                                    f"or {3 * sum(blocks) + 2} (bottleneck)")


def resolve_arch(
    depth: int,
    *,
    residual: bool = True,
    shortcut: str | None = None,
    variant: str | None = None,
    num_classes: int | None = None,
    stage_blocks=None,
) -> ArchSpec:
    """Validate builder arguments and fill in the paper's defaults; ArchError names the argument."""
    _check_positive("depth", depth)
    variant = check_variant(variant) if variant is not None else default_variant(depth)
    shortcut = check_shortcut(shortcut) if shortcut is not None else default_shortcut(variant)
    if not residual:
        shortcut = "plain"  # a plain net has no shortcuts, so no option applies
    num_classes = default_num_classes(variant) if num_classes is None else _check_positive("num_classes", num_classes)
    layout = _cifar_layout if variant == "cifar" else _imagenet_layout
    block, blocks = layout(depth, stage_blocks)
    if block == "bottleneck" and shortcut == "A":
        raise ArchError("shortcut", shortcut, f"option A is not defined for bottleneck ResNets (depth {depth}); "
                                              "the paper uses B (or C)")
    widths = tuple(STEM_WIDTH[variant] * 2**i for i in range(len(blocks)))
    return ArchSpec(variant, depth, shortcut, block, blocks, widths, num_classes)


def layout_problem(depth: int, variant: str, shortcut: str | None = None) -> ArchError | None:
    """Why (depth, shortcut) is not a network of `variant`, or None: resolve_arch's verdict, as a value."""
    try:
        resolve_arch(depth, shortcut=shortcut, variant=variant)
    except ArchError as exc:
        return exc
    return None


# ----------------------------------------------------------------------------- multiply-adds
def _conv(size: int, c_in: int, c_out: int, k: int) -> int:
    return size * size * c_in * c_out * k * k


def _halve(size: int) -> int:
    """Output side of a stride-2 conv or pool with 'same' padding (3x3 p1, 1x1 p0, 7x7 p3, max-pool 3 p1)."""
    return math.ceil(size / 2)


def multiply_adds(spec: ArchSpec, *, image_size: int | None = None, stride_in_1x1: bool = True) -> int:
    """Forward multiply-adds of one image, as the paper counts them (Table 1): convs and the fc only.

    CIFAR: a 3x3 stem at full resolution; ImageNet: a 7x7 stride-2 stem and a stride-2 max-pool.
    `stride_in_1x1` (bottlenecks): True is the paper's layout, False torchvision's v1.5, which puts the
    stride in the 3x3 and so runs the first 1x1 at the higher resolution.
    """
    size = image_size or INPUT_SIZES[spec.variant][1]
    if spec.variant == "cifar":
        total = _conv(size, 3, spec.stem_width, 3)
    else:
        size = _halve(size)
        total = _conv(size, 3, spec.stem_width, 7)
        size = _halve(size)
    for block in spec.blocks():
        s_out = size if block.stride == 1 else _halve(size)
        width = block.planes
        if spec.block == "basic":
            total += _conv(s_out, block.in_channels, width, 3) + _conv(s_out, width, width, 3)
        else:
            s_first = s_out if stride_in_1x1 else size
            total += (_conv(s_first, block.in_channels, width, 1) + _conv(s_out, width, width, 3)
                      + _conv(s_out, width, block.out_channels, 1))
        if block.shortcut == "projection":
            total += _conv(s_out, block.in_channels, block.out_channels, 1)
        size = s_out
    return total + spec.features * spec.num_classes


def count_layers(spec: ArchSpec) -> int:
    """Weighted layers on the main path (the paper's depth): the stem, every block's convs, the fc."""
    return 1 + sum(spec.stage_blocks) * (2 if spec.block == "basic" else 3) + 1
