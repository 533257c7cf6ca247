"""The training config: every field a grid's `train:` section (or axis) may set, declared once.

Each field carries its type, bounds and a description here and nowhere else: the grid spec derives
its `train:` overrides and its axes from this model, `resnetctl fields` prints the table the README
shows, and the trainer reads the resolved values. Defaults are the ones no dataset preset sets;
the paper's recipes (`orchestrator/presets.py`) fill in the rest per dataset.
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from pipelines.catalog import EvalProtocol, LoaderName, Normalization, TrainSplit

# val: the paper's choice (ImageNet's val is also its test set); holdout: held out of the training images
PlateauSplit = Literal["val", "holdout"]

# off: float32; bf16 / fp16: torch.autocast on GPUs (fp16 with a gradient scaler); CPUs train in float32
AmpMode = Literal["off", "bf16", "fp16"]
AMP_MODES: tuple[str, ...] = get_args(AmpMode)

MAX_COUNT = 100_000_000  # iterations, milestones and other counters: only refuses absurd numbers
Milestone = Annotated[int, Field(ge=1, le=MAX_COUNT)]
WARMUP_WINDOW = 50  # iterations whose training error the warm-up's rule reads (training/schedule.py: why 50)


class TrainConfig(BaseModel):
    """Everything the training loop needs, resolved from the dataset preset plus the grid's overrides.

    A schedule is given either in iterations (the paper's CIFAR runs) or in epochs; exactly one of
    `iterations` / `epochs` is set (`orchestrator.expand.resolve_train` checks the combination).
    """

    # strict: YAML already typed the values, so "128" stays a string and is refused as a batch size
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)

    batch_size: int = Field(ge=1, le=65_536, description=(
        "images per optimiser step, summed over the cell's workers (each worker takes batch_size / workers)"))
    lr: float = Field(gt=0, le=100, description="base learning rate of SGD")
    momentum: float = Field(0.9, ge=0, le=1, description="SGD momentum")
    weight_decay: float = Field(1e-4, ge=0, le=1, description="L2 weight decay, on every parameter as in the paper")
    nesterov: bool = Field(False, description="Nesterov momentum (the paper: plain momentum)")
    iterations: int | None = Field(None, ge=1, le=MAX_COUNT, description=(
        "schedule length in optimiser steps; giving it (or epochs) replaces the preset's length and keeps its "
        "milestones at the same fractions"))
    epochs: int | None = Field(None, ge=1, le=100_000, description="schedule length in epochs, instead of iterations")
    lr_milestones: tuple[Milestone, ...] = Field((), max_length=100, description=(
        "multiply the rate by lr_gamma at these points, in the schedule's unit (iterations or epochs)"))
    lr_gamma: float = Field(0.1, gt=0, le=1, description="factor applied at each milestone or plateau")
    lr_on_plateau: bool = Field(False, description=(
        "also multiply by lr_gamma when the validation error has not improved for plateau_patience epochs"))
    plateau_patience: int = Field(5, ge=1, le=10_000, description="epochs without improvement that count as a plateau")
    plateau_max_drops: int | None = Field(None, ge=0, le=100, description=(
        "at most this many plateau drops (null: no limit; the paper does not say how many it made)"))
    plateau_split: PlateauSplit = Field("val", description=(
        "the split whose top-1 error decides a plateau: val (the paper; on ImageNet val is also the test set) "
        "or holdout (images held out from the training set by `prepare --holdout-size`)"))
    warmup_lr: float | None = Field(None, gt=0, le=100, description=(
        "train at this rate first (paper: 0.01 for ResNet-110 and deeper); null turns the warm-up off"))
    warmup_iterations: int = Field(0, ge=0, le=MAX_COUNT, description=(
        "safety cap: the warm-up ends after this many optimiser steps if the error rule has not ended it "
        "(0: no cap); without warmup_until_train_err, a warm-up of this fixed length"))
    warmup_until_train_err: float | None = Field(None, ge=0, le=100, description=(
        f"end the warm-up once the training error (%) of the last {WARMUP_WINDOW} iterations, over all workers, "
        "is below this (paper: 80); every worker switches on the same iteration"))
    amp: AmpMode = Field("off", description=(
        "mixed precision on GPUs: off, bf16 or fp16; GPU cells default to bf16 (the paper: fp32, `amp: off`)"))
    channels_last: bool = Field(False, description="channels-last memory format on GPUs (GPU cells default to true)")
    compile: bool = Field(False, description=(
        "torch.compile the training step (worth it on GPUs for long cells; the first steps pay the compilation)"))
    deterministic: bool = Field(False, description=(
        "deterministic kernels only: torch.use_deterministic_algorithms, cuDNN deterministic without benchmarking, "
        "CUBLAS_WORKSPACE_CONFIG; GPU reruns then agree bit for bit, at a cost in speed (CPU runs already do)"))
    loader: LoaderName = Field("ffcv", description=(
        "ffcv (compiled, fast), torch (a DataLoader over the same files) or device (32x32 data only: the whole "
        "split held on the training device, augmented there in batched torch ops; the torch loader's batches)"))
    num_workers: int = Field(1, ge=0, le=256, description=(
        "data-loading threads (FFCV) or processes (torch) per worker; with use_gpu and not given, one per cpus_per_worker"))
    eval_protocol: EvalProtocol = Field("full", description=(
        "the final test's view: full, center, 10crop (Tables 2-3) or multiscale (Table 4, ImageNet only); "
        "also every epoch's unless epoch_eval_protocol is set"))
    epoch_eval_protocol: EvalProtocol | None = Field(None, description=(
        "the cheaper view each epoch's validation uses (e.g. center); eval_protocol then runs once, after "
        "the last epoch. null: eval_protocol every epoch"))
    lighting: float = Field(0.0, ge=0, le=10, description="std of AlexNet's PCA colour noise in training (0: off)")
    train_split: TrainSplit = Field("train", description=(
        "the split trained on: train (CIFAR's 45k, the paper's schedule search) or trainval (CIFAR's whole 50k "
        "training set, Table 6; val is then part of the training data and not evaluated)"))
    normalization: Normalization = Field("pixel_mean", description=(
        "pixel_mean: subtract the training split's per-pixel mean image, divide by nothing (the paper); "
        "channel: per-channel mean and std"))
    zero_init_residual: bool = Field(False, description=(
        "start each block's last BN at zero (not in the paper; refused for plain nets)"))
    stride_in_1x1: bool = Field(True, description=(
        "bottlenecks: stride in the first 1x1 conv (the paper) or, false, in the 3x3 (torchvision's v1.5)"))
    max_train_batches: int | None = Field(None, ge=1, le=MAX_COUNT, description=(
        "cap on training batches per epoch, for smoke tests and benchmarks"))

    @property
    def epoch_protocol(self) -> str:
        """The view of the per-epoch validation: `epoch_eval_protocol`, else `eval_protocol`."""
        return self.epoch_eval_protocol or self.eval_protocol

    @property
    def schedule_unit(self) -> str:
        """"iterations" or "epochs": the unit of the schedule's length and milestones."""
        return "iterations" if self.iterations is not None else "epochs"
