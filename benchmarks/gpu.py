"""The GPU check (issue 15, item 7): one script, under 8 minutes on one GPU, printing one table.

Rows: ResNet-50 training images/s per GPU on synthetic data (float32, bf16 + channels_last, and the same
under torch.compile) against NVIDIA's published 2,470 img/s (A100, AMP, DeepLearningExamples); a CIFAR
ResNet-20 epoch on synthetic tensors (no loader: the bound), then through the `Trainer` over a prepared
CIFAR-10-sized `.beton` (random pixels) with the FFCV loader and with the device-resident one
(`loader: device`, issue 15 item 4); four ResNet-20 processes packed on one GPU against one alone
(images/s of each: what `gpus_per_worker: 0.25` buys); a 2-worker NCCL DDP step where there are two GPUs.
`--dry-run` runs every row on the CPU with tiny sizes and few steps, so CI checks that the script still
runs (tests/test_speed_gpu_script.py); its numbers mean nothing.

    python benchmarks/gpu.py [--dry-run] [--json]        # make bench-gpu
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

NVIDIA_RESNET50_A100_AMP = 2470  # img/s, one A100 80GB, DGX A100, mixed precision (NVIDIA's published figure)


def _sizes(dry_run: bool) -> dict:
    if dry_run:  # CPU: enough to run every code path once
        return {"r50_batch": 2, "r50_side": 64, "cifar_batch": 8, "steps": 1, "warmup": 0,
                "packed": 2, "beton_images": 250, "beton_val": 50}
    return {"r50_batch": 256, "r50_side": 224, "cifar_batch": 512, "steps": 30, "warmup": 10,
            "packed": 4, "beton_images": 50_000, "beton_val": 5_000}


def train_rate(arch: str, variant: str, *, batch: int, side: int, steps: int, warmup: int, device: str,
               amp: bool = False, channels_last: bool = False, compile_model: bool = False, ddp: bool = False) -> float:
    """Training images/s of one network on synthetic data (SGD, cross-entropy), after `warmup` steps."""
    import torch
    import torch.nn.functional as F

    import models

    net = models.build_from_name(arch, variant=variant, num_classes=1000 if variant == "imagenet" else 10).to(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(memory_format=fmt)
    step_net = torch.nn.parallel.DistributedDataParallel(net) if ddp else net  # gradients all-reduced per step
    step_net = torch.compile(step_net) if compile_model else step_net
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    images = torch.randn(batch, 3, side, side, device=device).contiguous(memory_format=fmt)
    labels = torch.randint(0, 10, (batch,), device=device)
    autocast = torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=amp)

    def step():
        with autocast:
            loss = F.cross_entropy(step_net(images), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return batch * steps / (time.perf_counter() - start)


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def loader_epoch_rates(loaders: tuple[str, ...], *, images: int, val: int, batch: int, device: str) -> dict[str, float]:
    """Training images/s of a ResNet-20 epoch through the `Trainer` with each loader, on a CIFAR-10 layout of
    random pixels prepared once (`images` training images, `val` of them held out): the second epoch's rate,
    after FFCV's first epoch and cuDNN's search."""
    import numpy as np

    from benchmarks.loaders import write_cifar_like
    from pipelines import prepare_dataset
    from training import metrics
    from training.config import TrainConfig
    from training.trainer import Trainer

    threads = os.cpu_count() or 1
    rates = {}
    with tempfile.TemporaryDirectory(prefix="resnetctl-gpu-") as tmp:
        write_cifar_like(Path(tmp) / "raw", images, np.random.default_rng(0))
        prepare_dataset("cifar10", Path(tmp) / "cifar", source=Path(tmp) / "raw", val_size=val, num_workers=threads)
        for loader in loaders:
            on_gpu = device == "cuda"
            cfg = TrainConfig(batch_size=batch, lr=0.1, epochs=2, loader=loader, num_workers=threads,
                              amp="bf16" if on_gpu else "off", channels_last=on_gpu)
            trainer = Trainer(cfg, arch="resnet20-A", variant="cifar", dataset_path=str(Path(tmp) / "cifar"), seed=0,
                              device=device)
            trainer.train_epoch()
            rates[loader] = trainer.train_epoch()[metrics.IMAGES_PER_S]
    return rates


def _packed_worker(args: tuple) -> float:
    kwargs, barrier = args
    barrier.wait()  # all start together, so they share the GPU for the whole measurement
    return train_rate("resnet20-A", "cifar", **kwargs)


def packed_rates(n: int, kwargs: dict) -> list[float]:
    """Images/s of each of `n` ResNet-20 trainings run at once in their own processes on one device."""
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(n)
        with ctx.Pool(n) as pool:
            return pool.map(_packed_worker, [(kwargs, barrier)] * n)


def _ddp_worker(rank: int, kwargs: dict, port: int, out) -> None:
    import torch
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("nccl", rank=rank, world_size=2)
    torch.cuda.set_device(rank)
    rate = train_rate("resnet50-B", "imagenet", device=f"cuda:{rank}", amp=True, channels_last=True, ddp=True,
                      **kwargs)
    out.put(rate)
    dist.destroy_process_group()


def ddp_rate(kwargs: dict) -> float:
    """Images/s of a 2-GPU NCCL DDP step, summed over the ranks (each its own batch: weak scaling)."""
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_ddp_worker, args=(rank, kwargs, 29_500 + os.getpid() % 1000, out))
             for rank in range(2)]
    for p in procs:
        p.start()
    rates = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    return sum(rates)


def rows(dry_run: bool) -> list[tuple[str, float | None, str]]:
    """(what, images/s, against what) for every row the machine can run."""
    import torch

    size = _sizes(dry_run)
    device = "cuda" if torch.cuda.is_available() and not dry_run else "cpu"
    r50 = {"batch": size["r50_batch"], "side": size["r50_side"], "steps": size["steps"], "warmup": size["warmup"],
           "device": device}
    out = [("ResNet-50, fp32", train_rate("resnet50-B", "imagenet", **r50), f"NVIDIA A100 AMP {NVIDIA_RESNET50_A100_AMP}")]
    out.append(("ResNet-50, bf16 + channels_last",
                train_rate("resnet50-B", "imagenet", amp=True, channels_last=True, **r50),
                f"NVIDIA A100 AMP {NVIDIA_RESNET50_A100_AMP}"))
    if not dry_run:  # compiling ResNet-50 takes minutes on a CPU
        out.append(("ResNet-50, bf16 + channels_last + compile",
                    train_rate("resnet50-B", "imagenet", amp=True, channels_last=True, compile_model=True, **r50),
                    f"NVIDIA A100 AMP {NVIDIA_RESNET50_A100_AMP}"))
    cifar = {"batch": size["cifar_batch"], "side": 32, "steps": size["steps"], "warmup": size["warmup"],
             "device": device, "amp": device == "cuda", "channels_last": device == "cuda"}
    alone = train_rate("resnet20-A", "cifar", **cifar)
    epoch = size["beton_images"] - size["beton_val"]
    out.append((f"ResNet-20 CIFAR epoch (s, {epoch:,} images)", epoch / alone, "synthetic tensors, no loader"))
    loaders = loader_epoch_rates(("ffcv", "device"), images=size["beton_images"], val=size["beton_val"],
                                 batch=size["cifar_batch"], device=device)
    for name, rate in loaders.items():
        out.append((f"ResNet-20 CIFAR epoch, {name} loader (s)", epoch / rate,
                    f"{rate:,.0f} img/s; {loaders['ffcv'] / rate:.2f}x FFCV's time"))
    out.append(("ResNet-20, 1 cell alone", alone, "-"))
    packed = packed_rates(size["packed"], cifar)
    out.append((f"ResNet-20, {size['packed']} cells packed (slowest)", min(packed),
                f"sum {sum(packed):,.0f} vs alone {alone:,.0f}"))
    if device == "cuda" and torch.cuda.device_count() >= 2:
        out.append(("ResNet-50, 2-GPU NCCL DDP (sum)", ddp_rate({k: r50[k] for k in ("batch", "side", "steps",
                                                                                     "warmup")}), "2 x single"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: checks the script runs")
    parser.add_argument("--json", action="store_true", help="one JSON line instead of the table")
    args = parser.parse_args()
    table = rows(args.dry_run)
    if args.json:
        print(json.dumps({"dry_run": args.dry_run, "rows": [{"what": w, "value": v, "against": a}
                                                             for w, v, a in table]}))
        return
    print(f"{'what':<48} {'img/s (or s)':>14}  against")
    for what, value, against in table:
        print(f"{what:<48} {value:>14,.1f}  {against}")


if __name__ == "__main__":
    main()
