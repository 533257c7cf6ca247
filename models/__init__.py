"""The paper's networks: builders, readable names and measurements.

The architecture rules (`models.arch`: names, layouts, multiply-adds) import without torch, so the
grid spec can validate architectures cheaply; the builders and measurements load torch on first use.
"""

from __future__ import annotations

from models.arch import (
    INPUT_SIZES,
    MODEL_FAMILY,
    SHORTCUTS,
    VARIANTS,
    ArchError,
    ArchSpec,
    arch_name,
    default_num_classes,
    default_shortcut,
    default_variant,
    multiply_adds,
    parse_arch,
    resolve_arch,
)
from resnetctl.lazy import lazy_attributes

_LAZY: dict[str, str] = {
    "BasicBlock": "models.resnet",
    "Bottleneck": "models.resnet",
    "ResNet": "models.resnet",
    "ResidualAdd": "models.resnet",
    "ZeroPadShortcut": "models.resnet",
    "ProjectionShortcut": "models.resnet",
    "build_model": "models.resnet",
    "build_from_name": "models.resnet",
    "from_torchvision_state_dict": "models.resnet",
    "count_parameters": "models.measure",
    "count_multiply_adds": "models.measure",
    "layer_responses": "models.measure",
    "shortcut_additions": "models.measure",
    "ModelSummary": "models.measure",
    "summarize": "models.measure",
}

__all__ = [
    "ArchError",
    "ArchSpec",
    "INPUT_SIZES",
    "MODEL_FAMILY",
    "SHORTCUTS",
    "VARIANTS",
    "arch_name",
    "default_num_classes",
    "default_shortcut",
    "default_variant",
    "multiply_adds",
    "parse_arch",
    "resolve_arch",
    *_LAZY,
]


__getattr__ = lazy_attributes(__name__, _LAZY)
