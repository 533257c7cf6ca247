"""The paper's network family: CIFAR (Sec. 4.2) and ImageNet (Table 1) ResNets and plain nets.

Layer names follow torchvision's resnet.py (conv1, bn1, layer1..layerN, fc, and inside blocks
conv1/bn1/...); the only difference is that a block's shortcut is called `shortcut` instead of
`downsample`, because option C projects on every block, not only where the shape changes.

Shortcut options (paper Sec. 3.3 / 4.1):
  A  identity; where the shape changes, stride-2 subsampling + zero-padded channels (no parameters)
  B  identity; where the shape changes, a 1x1 conv projection + BN
  C  a 1x1 conv projection + BN on every shortcut
  plain (residual=False)  no shortcut at all

Option A is rejected for bottleneck networks (ImageNet 50/101/152): the paper builds those with
B only, and a zero-padded identity would feed 64 real channels into 256-wide blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.names import (
    IMAGENET_STAGE_BLOCKS,
    check_shortcut,
    check_variant,
    default_num_classes,
    default_shortcut,
    default_variant,
    parse_arch,
)


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False)


class ResidualAdd(nn.Module):
    """The element-wise addition of a residual block, as a module so hooks can see it."""

    def forward(self, residual: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        return residual + shortcut


class ZeroPadShortcut(nn.Module):
    """Option A where the shape changes: subsample by `stride`, append zero channels. No parameters."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(f"out_channels={out_channels}: option A can only widen ({in_channels} in)")
        self.extra_channels = out_channels - in_channels
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        # F.pad pads the last dims first: (W left, W right, H top, H bottom, C front, C back)
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))


class ProjectionShortcut(nn.Sequential):
    """Options B and C: 1x1 conv (with the block's stride) + BN; keys .0/.1 like torchvision's downsample."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__(conv1x1(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels))


def make_shortcut(option: str, in_channels: int, out_channels: int, stride: int) -> nn.Module | None:
    """The shortcut module for one block, or None for a plain block."""
    if option == "plain":
        return None
    shape_changes = stride != 1 or in_channels != out_channels
    if option == "C" or (option == "B" and shape_changes):
        return ProjectionShortcut(in_channels, out_channels, stride)
    if option == "A" and shape_changes:
        return ZeroPadShortcut(in_channels, out_channels, stride)
    return nn.Identity()


class _Block(nn.Module):
    """Shared tail of both blocks: add the shortcut (if any), then ReLU."""

    def _set_shortcut(self, shortcut: nn.Module | None) -> None:
        self.shortcut = shortcut
        self.add = ResidualAdd() if shortcut is not None else None

    @property
    def residual(self) -> bool:
        return self.add is not None

    def _finish(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.add is not None:
            out = self.add(out, self.shortcut(x))
        return self.relu(out)

    def conv_bn_pairs(self) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
        raise NotImplementedError

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.conv_bn_pairs()[-1][1]


class BasicBlock(_Block):
    """Two 3x3 convs (paper Fig. 2 left); CIFAR nets and ImageNet 18/34."""

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int, shortcut: nn.Module | None):
        super().__init__()
        self.conv1 = conv3x3(in_channels, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self._set_shortcut(shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self._finish(out, x)

    def conv_bn_pairs(self) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
        return [(self.conv1, self.bn1), (self.conv2, self.bn2)]


class Bottleneck(_Block):
    """1x1 reduce, 3x3, 1x1 expand (x4) (paper Fig. 5 right); ImageNet 50/101/152.

    stride_in_1x1=True is the paper's layout (stride in the first 1x1); False puts it in the
    3x3 ("ResNet v1.5", torchvision), which costs more multiply-adds and is slightly more accurate.
    """

    expansion = 4

    def __init__(
        self, in_channels: int, planes: int, stride: int, shortcut: nn.Module | None, stride_in_1x1: bool = True
    ):
        super().__init__()
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = conv1x1(in_channels, planes, stride_1x1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride_3x3)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self._set_shortcut(shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self._finish(out, x)

    def conv_bn_pairs(self) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
        return [(self.conv1, self.bn1), (self.conv2, self.bn2), (self.conv3, self.bn3)]


@dataclass(frozen=True)
class ArchSpec:
    """A validated architecture: what `build_model` resolved its arguments to."""

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
        return 16 if self.variant == "cifar" else 64


def _check_stage_blocks(stage_blocks) -> tuple[int, ...]:
    blocks = tuple(stage_blocks)
    if not blocks or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in blocks):
        raise ValueError(f"stage_blocks={stage_blocks!r}: must be a non-empty sequence of positive integers")
    return blocks


def _cifar_layout(depth: int, stage_blocks) -> tuple[str, tuple[int, ...]]:
    """Paper Sec. 4.2: 6n+2 layers, three stages of n basic blocks (or the given stage_blocks)."""
    if stage_blocks is not None:
        blocks = _check_stage_blocks(stage_blocks)
        if depth != 2 * sum(blocks) + 2:
            raise ValueError(
                f"depth={depth}: stage_blocks={blocks} of basic blocks give depth {2 * sum(blocks) + 2}"
            )
        return "basic", blocks
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"depth={depth}: CIFAR ResNets need depth 6n+2 (20, 32, 44, 56, 110, 1202, ...)")
    n = (depth - 2) // 6
    return "basic", (n, n, n)


def _imagenet_layout(depth: int, stage_blocks) -> tuple[str, tuple[int, ...]]:
    """Paper Table 1: basic blocks for 18/34, bottlenecks for 50/101/152.

    With explicit stage_blocks the block type follows from the depth: 2 layers per basic
    block or 3 per bottleneck, plus the stem conv and the fc.
    """
    if stage_blocks is None:
        if depth not in IMAGENET_STAGE_BLOCKS:
            raise ValueError(
                f"depth={depth}: ImageNet ResNets are defined for depth 18, 34, 50, 101, 152 (or pass stage_blocks)"
            )
        return ("basic" if depth < 50 else "bottleneck"), IMAGENET_STAGE_BLOCKS[depth]
    blocks = _check_stage_blocks(stage_blocks)
    if depth == 2 * sum(blocks) + 2:
        return "basic", blocks
    if depth == 3 * sum(blocks) + 2:
        return "bottleneck", blocks
    raise ValueError(
        f"depth={depth}: stage_blocks={blocks} give depth {2 * sum(blocks) + 2} (basic) "
        f"or {3 * sum(blocks) + 2} (bottleneck)"
    )


def resolve_arch(
    depth: int,
    *,
    residual: bool = True,
    shortcut: str | None = None,
    variant: str | None = None,
    num_classes: int | None = None,
    stage_blocks=None,
) -> ArchSpec:
    """Validate builder arguments and fill in the paper's defaults; raises ValueError naming the argument."""
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth={depth!r}: must be a positive integer")
    variant = check_variant(variant) if variant is not None else default_variant(depth)
    shortcut = check_shortcut(shortcut) if shortcut is not None else default_shortcut(variant)
    if not residual:
        shortcut = "plain"  # a plain net has no shortcuts, so no option applies
    if num_classes is None:
        num_classes = default_num_classes(variant)
    elif isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes={num_classes!r}: must be a positive integer")
    layout = _cifar_layout if variant == "cifar" else _imagenet_layout
    block, blocks = layout(depth, stage_blocks)
    if block == "bottleneck" and shortcut == "A":
        raise ValueError(
            f"shortcut='A': zero-padded identity shortcuts are not defined for bottleneck ResNets "
            f"(depth={depth}); the paper uses B (or C)"
        )
    base = 16 if variant == "cifar" else 64
    widths = tuple(base * 2**i for i in range(len(blocks)))
    return ArchSpec(variant, depth, shortcut, block, blocks, widths, num_classes)


class ResNet(nn.Module):
    """A ResNet or plain net built from an ArchSpec; `spec` stays on the model for reports."""

    def __init__(self, spec: ArchSpec, *, stride_in_1x1: bool = True, zero_init_residual: bool = False):
        super().__init__()
        if zero_init_residual and not spec.residual:
            raise ValueError("zero_init_residual=True: a plain block whose last BN is zero outputs only zeros")
        self.spec = spec
        if spec.variant == "cifar":
            self.conv1 = conv3x3(3, spec.stem_width)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(3, spec.stem_width, kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(spec.stem_width)
        self.relu = nn.ReLU(inplace=True)
        in_channels = spec.stem_width
        for index, (num_blocks, planes) in enumerate(zip(spec.stage_blocks, spec.stage_widths, strict=True)):
            stage, in_channels = self._make_stage(spec, in_channels, planes, num_blocks, index, stride_in_1x1)
            self.add_module(f"layer{index + 1}", stage)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, spec.num_classes)
        self._init_weights(zero_init_residual)

    @staticmethod
    def _make_stage(
        spec: ArchSpec, in_channels: int, planes: int, num_blocks: int, index: int, stride_in_1x1: bool
    ) -> tuple[nn.Sequential, int]:
        block_cls = BasicBlock if spec.block == "basic" else Bottleneck
        out_channels = planes * block_cls.expansion
        blocks = []
        for position in range(num_blocks):
            stride = 2 if index > 0 and position == 0 else 1
            shortcut = make_shortcut(spec.shortcut, in_channels, out_channels, stride)
            if block_cls is Bottleneck:
                blocks.append(Bottleneck(in_channels, planes, stride, shortcut, stride_in_1x1))
            else:
                blocks.append(BasicBlock(in_channels, planes, stride, shortcut))
            in_channels = out_channels
        return nn.Sequential(*blocks), out_channels

    def _init_weights(self, zero_init_residual: bool) -> None:
        """He et al. 2015 (PReLU paper) init for convs, BN to identity, fc left at PyTorch's default."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if zero_init_residual:
            for block in self.blocks():
                nn.init.zeros_(block.last_bn.weight)

    def stages(self) -> list[nn.Sequential]:
        return [getattr(self, f"layer{i + 1}") for i in range(len(self.spec.stage_blocks))]

    def blocks(self) -> list[_Block]:
        return [block for stage in self.stages() for block in stage]

    def conv_bn_pairs(self) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
        """Every main-path conv with the BN after it, stem first, in forward order (shortcuts excluded)."""
        return [(self.conv1, self.bn1)] + [pair for block in self.blocks() for pair in block.conv_bn_pairs()]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for stage in self.stages():
            x = stage(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def build_model(
    depth: int,
    *,
    residual: bool = True,
    shortcut: str | None = None,
    variant: str | None = None,
    num_classes: int | None = None,
    stride_in_1x1: bool = True,
    zero_init_residual: bool = False,
    stage_blocks=None,
) -> ResNet:
    """Build one network of the paper's family.

    shortcut: "A" | "B" | "C" (None: A on CIFAR, B on ImageNet); "plain" is the same as residual=False.
    variant: "cifar" | "imagenet" (None: ImageNet for depth 18/34/50/101/152, else CIFAR).
    num_classes: None gives 10 (CIFAR) or 1000 (ImageNet).
    stride_in_1x1: bottlenecks only; True is the paper's layout, False torchvision's v1.5.
    stage_blocks: blocks per stage, for depths outside the paper's tables.
    """
    spec = resolve_arch(
        depth,
        residual=residual,
        shortcut=shortcut,
        variant=variant,
        num_classes=num_classes,
        stage_blocks=stage_blocks,
    )
    return ResNet(spec, stride_in_1x1=stride_in_1x1, zero_init_residual=zero_init_residual)


def from_torchvision_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a torchvision resnet state_dict for our option-B, stride_in_1x1=False model."""
    return {key.replace(".downsample.", ".shortcut."): value for key, value in state_dict.items()}


def build_from_name(name: str, *, variant: str | None = None, num_classes: int | None = None, **kwargs) -> ResNet:
    """Build from a readable name: build_from_name("resnet56-A"), ("plain34"), ("resnet50", variant="cifar").

    kwargs go to build_model (stride_in_1x1, zero_init_residual, stage_blocks); the name fixes
    depth, residual and shortcut, so those may not be passed again.
    """
    fixed = sorted({"depth", "residual", "shortcut"} & kwargs.keys())
    if fixed:
        raise TypeError(f"build_from_name: {', '.join(fixed)} come from name={name!r}, do not pass them")
    depth, residual, shortcut = parse_arch(name, variant=variant)
    return build_model(
        depth, residual=residual, shortcut=shortcut, variant=variant, num_classes=num_classes, **kwargs
    )
