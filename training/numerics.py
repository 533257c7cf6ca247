"""What decides a run's floating-point numbers beyond its config, and the switch that pins them on GPUs.

The data side is deterministic on every path (`pipelines.draws`): a rerun of a cell sees the same
images in the same order. On a CPU, PyTorch's kernels are then deterministic for a given thread count,
so a rerun reproduces the weights bit for bit. On a GPU, cuDNN picks convolution algorithms by
benchmarking and some backward kernels accumulate with atomics, so two runs drift apart by rounding;
`train.deterministic` (`set_deterministic`) asks PyTorch for deterministic algorithms only, cuDNN's
deterministic mode without benchmarking, and cuBLAS's fixed workspace (CUBLAS_WORKSPACE_CONFIG),
at a cost in speed. Off by default.

`numerics_facts` names what else must match for two runs of one cell to agree: the device, the
torch, CUDA and cuDNN versions and the threads per worker; each run logs them as params.
"""

from __future__ import annotations

import os

# torch is imported inside the functions: orchestrator.conventions reads FACTS, and validating a grid
# must not load torch
FACTS = ("device", "torch", "cuda", "cudnn", "threads_per_worker")
CUBLAS_WORKSPACE = ":4096:8"  # what PyTorch's reproducibility notes ask for (or ":16:8")


def set_deterministic(enabled: bool) -> None:
    """Deterministic kernels only (an error where an operation has none), cuDNN deterministic, no benchmarking."""
    import torch

    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)  # read when cuBLAS starts
    torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = False if enabled else torch.backends.cudnn.benchmark


def numerics_facts(device) -> dict[str, str]:
    """The facts of `FACTS` in this process, as strings ("none" where there is no CUDA or cuDNN)."""
    import torch

    device = torch.device(device)
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    return {"device": name, "torch": torch.__version__, "cuda": str(torch.version.cuda or "none"),
            "cudnn": str(cudnn or "none"), "threads_per_worker": str(torch.get_num_threads())}
