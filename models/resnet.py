"""The paper's network family: CIFAR (Sec. 4.2) and ImageNet (Table 1) ResNets and plain nets.

Layer names follow torchvision's resnet.py (conv1, bn1, layer1..layerN, fc, and inside blocks
conv1/bn1/...); the only difference is that a block's shortcut is called `shortcut` instead of
`downsample`, because option C projects on every block, not only where the shape changes.

Shortcut options (paper Sec. 3.3 / 4.1):
  A  identity; where the shape changes, stride-2 subsampling + zero-padded channels (no parameters)
  B  identity; where the shape changes, a 1x1 conv projection + BN
  C  a 1x1 conv projection + BN on every shortcut
  plain (residual=False)  no shortcut at all

Which depths exist, which block and shortcut each position gets, and why option A is refused
for bottlenecks are `models/arch.py`'s to say (torch-free, shared with the grid spec and `plan`);
this module only turns its `ArchSpec` into modules.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.arch import ArchSpec, BlockLayout, parse_arch, resolve_arch, shortcut_kind


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
    """The shortcut module for one block under option plain/A/B/C (models.arch.shortcut_kind), None if plain."""
    kind = shortcut_kind(option, in_channels, out_channels, stride)
    if kind == "projection":
        return ProjectionShortcut(in_channels, out_channels, stride)
    if kind == "zero_pad":
        return ZeroPadShortcut(in_channels, out_channels, stride)
    return nn.Identity() if kind == "identity" else None


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
        layouts = spec.blocks()
        for index in range(len(spec.stage_blocks)):
            stage = [self._make_block(b, stride_in_1x1) for b in layouts if b.stage == index]
            self.add_module(f"layer{index + 1}", nn.Sequential(*stage))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(spec.features, spec.num_classes)
        self._init_weights(zero_init_residual)

    def _make_block(self, layout: BlockLayout, stride_in_1x1: bool) -> _Block:
        shortcut = make_shortcut(self.spec.shortcut, layout.in_channels, layout.out_channels, layout.stride)
        if self.spec.block == "bottleneck":
            return Bottleneck(layout.in_channels, layout.planes, layout.stride, shortcut, stride_in_1x1)
        return BasicBlock(layout.in_channels, layout.planes, layout.stride, shortcut)

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
