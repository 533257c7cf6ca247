"""Measurements the report quotes: parameters, multiply-adds (Table 1) and layer responses (Fig. 7).

All of them leave the model as they found it (train/eval mode, weights), and unwrap a
DistributedDataParallel-style `.module` wrapper so the training loop can pass what it trains.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from functools import cache

import torch
from torch import nn
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode

from models.arch import INPUT_SIZES, count_layers, multiply_adds, parse_arch, resolve_arch
from models.resnet import ResidualAdd, build_model


def _unwrap(model: nn.Module) -> nn.Module:
    if isinstance(model, nn.DataParallel | nn.parallel.DistributedDataParallel):
        return model.module
    return model


@contextlib.contextmanager
def _evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and no autograd for the duration; the previous mode is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def count_parameters(model: nn.Module) -> int:
    """All parameters (trainable or not), the number the paper and torchvision quote."""
    return sum(p.numel() for p in _unwrap(model).parameters())


def count_multiply_adds(model: nn.Module, input_size: tuple[int, ...] = INPUT_SIZES["imagenet"]) -> int:
    """Multiply-adds of one forward pass on one image (FLOPs / 2 per FlopCounterMode).

    The pass runs on meta tensors, so it costs no arithmetic and works for a model on any
    device (or on the meta device itself). Only convs and the fc count, as in the paper.
    """
    model = _unwrap(model)
    on_meta = {
        name: tensor.to("meta")
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]
    }
    image = torch.zeros((1, *input_size), device="meta")
    counter = FlopCounterMode(display=False)
    with _evaluating(model), counter:
        functional_call(model, on_meta, (image,))
    return counter.get_total_flops() // 2


def layer_responses(model: nn.Module, images: torch.Tensor, *, chunk: int = 64) -> list[float]:
    """Paper Fig. 7: std of every 3x3 conv's BN output, before ReLU and addition, in forward order.

    The CIFAR stem is a 3x3 conv and counts (resnet20 -> 19 values: stem + 18 in blocks); the
    ImageNet 7x7 stem and the 1x1 convs of bottlenecks and projections do not. The images go through
    in chunks of `chunk`, each layer's sum and sum of squares accumulated in float64, so memory stays
    that of one chunk (512 ImageNet images in one pass need tens of GB); the result is the
    one-pass (Bessel-corrected) std up to rounding.
    """
    model = _unwrap(model)
    if not hasattr(model, "conv_bn_pairs"):
        raise TypeError(f"model={type(model).__name__}: needs conv_bn_pairs() (build it with models.build_model)")
    layers = [bn for conv, bn in model.conv_bn_pairs() if conv.kernel_size == (3, 3)]
    totals = torch.zeros(len(layers), 3, dtype=torch.float64)  # count, sum, sum of squares

    def record(index: int):
        def hook(_module: nn.Module, _inputs, output: torch.Tensor) -> None:
            # read it now: the ReLU that follows may overwrite this tensor in place
            values = output.detach().double()
            totals[index] += torch.stack([torch.tensor(float(values.numel()), dtype=torch.float64),
                                          values.sum().cpu(), values.square().sum().cpu()])
        return hook

    handles = [bn.register_forward_hook(record(i)) for i, bn in enumerate(layers)]
    try:
        with _evaluating(model):
            for start in range(0, images.shape[0], max(1, chunk)):
                model(images[start:start + chunk])
    finally:
        for handle in handles:
            handle.remove()
    count, total, squares = totals.unbind(1)
    variance = (squares - total * total / count) / (count - 1).clamp(min=1)
    return variance.clamp(min=0).sqrt().tolist()


def shortcut_additions(model: nn.Module, images: torch.Tensor) -> int:
    """How many residual additions one forward pass performs (0 for a plain net, 1 per block otherwise)."""
    model = _unwrap(model)
    calls = 0

    def count(_module: nn.Module, _inputs, _output) -> None:
        nonlocal calls
        calls += 1

    handles = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, ResidualAdd)]
    try:
        with _evaluating(model):
            model(images)
    finally:
        for handle in handles:
            handle.remove()
    return calls


@dataclass(frozen=True)
class ModelSummary:
    """One row of `resnetctl models`."""

    name: str
    variant: str
    layers: int  # weighted layers: convs on the main path + fc (the paper's "depth")
    residual: bool
    shortcut: str
    block: str
    params: int
    mult_adds: int
    input_size: tuple[int, ...]

    def to_dict(self) -> dict:
        return asdict(self)


@cache
def summarize(name: str, variant: str) -> ModelSummary:
    """Layers and multiply-adds from the torch-free layout; parameters from the model built on the meta device."""
    depth, residual, shortcut = parse_arch(name, variant=variant)
    spec = resolve_arch(depth, residual=residual, shortcut=shortcut, variant=variant)
    with torch.device("meta"):
        model = build_model(depth, residual=residual, shortcut=shortcut, variant=variant)
    return ModelSummary(
        name=name,
        variant=variant,
        layers=count_layers(spec),
        residual=residual,
        shortcut=shortcut,
        block=spec.block,
        params=count_parameters(model),
        mult_adds=multiply_adds(spec),
        input_size=INPUT_SIZES[variant],
    )
