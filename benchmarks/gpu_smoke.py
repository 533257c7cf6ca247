"""The GPU smoke check (issue 18): every path that only runs with `use_gpu`, once, in a couple of minutes.

No GPU had run this code before issue 18; a session lent one runs this script and reads one line per check:

- `ffcv_gpu_pipeline`: FFCV decodes, ships uint8 to the GPU and normalises there (ToDevice, ToTorchImage),
  channels_last batches; its loading thread runs on the worker's device and stops when a loop breaks.
- `amp_bf16`, `amp_fp16`: a cell (channels_last, cudnn.benchmark) trains, checkpoints, restores
  (weights_only) and trains on: weights, GradScaler scale and iteration restored exactly.
- `cuda_rng`: the worker's own CUDA generator saved and restored (issue 18, item 3).
- `ten_crop`, `multiscale`: Tables 2-4's views on the device, and Fig. 7's measurement of them (centre
  crop; the 224 view of the 640 squares, in chunks).
- `finalize_run`: the wrap-up of a cell trained on the GPU (size, layer responses, model logged and
  registered in an MLflow store, `finished`).
- `ddp_nccl`: two workers step together over NCCL (skipped unless two GPUs are visible).

`--dry-run` runs every check on the CPU (amp off; the torch loader except in the FFCV check; the DDP
worker's code as a group of one over gloo), so CI runs the script and it cannot rot
(tests/test_gpu_paths.py); its numbers mean nothing.

    python benchmarks/gpu_smoke.py [--dry-run]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

CHECKS: list = []


def check(fn):
    CHECKS.append(fn)
    return fn


def _config(**changes):
    from training.config import TrainConfig

    base = {"batch_size": 32, "lr": 0.1, "epochs": 2, "max_train_batches": 2, "loader": "ffcv", "num_workers": 2,
            "eval_protocol": "full", "channels_last": True}
    return TrainConfig(**{**base, **changes})


def _trainer(ctx, cfg, data: str = "digits", **kw):
    from training.trainer import Trainer

    arch, variant = ("resnet8-A", "cifar") if data == "digits" else ("resnet18-B", "imagenet")
    return Trainer(cfg, arch=arch, variant=variant, dataset_path=str(ctx[data]), seed=0, run_key="smoke",
                   device=ctx["device"], **kw)


def _loader_threads() -> set:
    return {t for t in threading.enumerate() if type(t).__name__ == "EpochIterator" and t.is_alive()}


@check
def ffcv_gpu_pipeline(ctx) -> str:
    from training.tester import first_images

    before = _loader_threads()
    trainer = _trainer(ctx, _config(epochs=1))
    images, labels = next(iter(trainer.train_loader))
    assert images.device.type == ctx["device"].type and labels.device.type == ctx["device"].type
    assert images.dtype == torch.float32 and torch.isfinite(images).all()
    if ctx["gpu"]:
        assert images.is_contiguous(memory_format=torch.channels_last)
    first_images(trainer.train_loader, 8, trainer.device)
    deadline = time.monotonic() + 10
    while _loader_threads() - before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _loader_threads() - before, "an abandoned FFCV iterator kept its thread"
    return f"batch {tuple(images.shape)} on {images.device}"


def _save_restore(ctx, amp: str) -> str:
    from training import metrics as m
    from training.checkpoint import load_checkpoint, save_checkpoint

    cfg = _config(amp=amp, loader=ctx["loader"])
    trainer = _trainer(ctx, cfg)
    first = trainer.run_epoch()
    folder = Path(tempfile.mkdtemp(dir=ctx["tmp"]))
    save_checkpoint(folder, trainer.state_dict())
    resumed = _trainer(ctx, cfg)
    resumed.load_state_dict(load_checkpoint(folder))
    for key, value in trainer.net.state_dict().items():
        assert torch.equal(value, resumed.net.state_dict()[key]), key
    assert resumed.iteration == trainer.iteration
    assert resumed.scaler.get_scale() == trainer.scaler.get_scale() or not trainer.scaler.is_enabled()
    if ctx["gpu"]:
        assert resumed.channels_last and next(resumed.net.parameters()).is_cuda
        assert torch.backends.cudnn.benchmark
    second = resumed.run_epoch()
    assert all(map(torch.isfinite, map(torch.tensor, (first[m.TRAIN_LOSS], second[m.TRAIN_LOSS]))))
    return f"loss {first[m.TRAIN_LOSS]:.3f} -> {second[m.TRAIN_LOSS]:.3f}, scale {resumed.scaler.get_scale()}"


@check
def amp_bf16(ctx) -> str:
    return _save_restore(ctx, "bf16")


@check
def amp_fp16(ctx) -> str:
    return _save_restore(ctx, "fp16")


@check
def cuda_rng(ctx) -> str:
    from training.checkpoint import rng_state, set_rng_state

    device = ctx["device"]
    state = rng_state(device)
    assert ("cuda" in state) == ctx["gpu"]
    drawn = torch.rand(4, device=device)
    set_rng_state(state, device)
    assert torch.equal(drawn, torch.rand(4, device=device))
    return f"generator of {device} restored"


def _views(ctx, protocol: str) -> str:
    from training.loaders import build_eval_loaders

    cfg = _config(batch_size=2, epochs=1, eval_protocol=protocol, loader=ctx["loader"])
    trainer = _trainer(ctx, cfg, data="imagenet")
    (loader,) = build_eval_loaders(cfg, str(ctx["imagenet"]), {"val"}, protocol=protocol, batch_size=2, rank=0,
                                   world_size=1, seed=0, device=trainer.device,
                                   channels_last=trainer.channels_last).values()
    top1, _ = trainer.evaluate(loader, protocol)
    responses = trainer.layer_responses(max_images=4)
    assert 0 <= top1 <= 100 and responses and all(r == r for r in responses)
    return f"top-1 {top1:.0f}%, {len(responses)} layer responses"


@check
def ten_crop(ctx) -> str:
    return _views(ctx, "10crop")


@check
def multiscale(ctx) -> str:
    return _views(ctx, "multiscale")


@check
def finalize_run(ctx) -> str:
    from mlflow import MlflowClient

    from orchestrator import conventions as cv
    from orchestrator.grid_loading import load_cells
    from orchestrator.tracking import CellRunLogger
    from orchestrator.train_entry import finalize_run as finalize
    from orchestrator.train_entry import trainer_for_cell

    uri = f"sqlite:///{ctx['tmp']}/mlflow.db"
    grid = Path(ctx["tmp"]) / "grid.yaml"
    grid.write_text(f"name: smoke\ndataset: {{name: digits, path: {ctx['digits']}}}\ngrid: {{depth: [8]}}\n"
                    f"train: {{epochs: 1, max_train_batches: 2, amp: bf16, channels_last: true, "
                    f"loader: {ctx['loader']}, num_workers: 2}}\nresources: {{use_gpu: {str(ctx['gpu']).lower()}}}\n")
    (cell,) = load_cells(grid)[1]
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("smoke"))
    device = torch.device("cuda" if ctx["gpu"] else "cpu")  # a Tune trial's device: "cuda", no index
    trainer = trainer_for_cell(cell, rank=0, world_size=1, device=device, wrap_model=None)
    trainer.run_epoch()
    finalize(cell, trainer, CellRunLogger(uri, run.info.run_id))
    tags = client.get_run(run.info.run_id).data.tags
    assert tags.get(cv.TAG_STATUS) == "finished", tags
    assert client.search_model_versions(f"run_id = '{run.info.run_id}'")
    return f"run {run.info.run_id[:8]} finished, model registered"


def _ddp_worker(rank: int, world: int, port: int, ctx: dict, results) -> None:
    import torch.distributed as dist

    backend = "nccl" if ctx["gpu"] else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    device = torch.device(f"cuda:{rank}") if ctx["gpu"] else torch.device("cpu")
    ids = [rank] if ctx["gpu"] else None
    trainer = _trainer({**ctx, "device": device}, _config(epochs=1, loader=ctx["loader"]),
                       rank=rank, world_size=world,
                       wrap_model=lambda net: torch.nn.parallel.DistributedDataParallel(net, device_ids=ids))
    trainer.run_epoch()
    flat = torch.cat([p.detach().flatten().double() for p in trainer.net.parameters()])
    gathered = [torch.zeros_like(flat) for _ in range(world)]
    dist.all_gather(gathered, flat)
    results[rank] = float((gathered[0] - gathered[-1]).abs().max())
    dist.destroy_process_group()


@check
def ddp_nccl(ctx) -> str:
    import torch.multiprocessing as mp

    from cluster.net import free_port

    if ctx["gpu"] and torch.cuda.device_count() < 2:
        return "skipped: one GPU visible"
    if not ctx["gpu"]:  # the dry-run: the worker's code in this process, a group of one over gloo
        results: dict = {}
        _ddp_worker(0, 1, free_port(), ctx, results)
        return "1 worker over gloo (dry-run)"
    results = mp.Manager().dict()
    mp.spawn(_ddp_worker, args=(2, free_port(), ctx, results), nprocs=2, join=True)
    assert results[0] == results[1] == 0.0, dict(results)
    return "2 workers over nccl, parameters equal"


def _datasets(tmp: Path) -> dict[str, Path]:
    """A prepared digits folder and a tiny ImageNet-style one (2 classes, JPEG colour ramps)."""
    import numpy as np
    from PIL import Image

    from pipelines import prepare_dataset

    prepare_dataset("digits", tmp / "digits", num_workers=1)
    rng = np.random.default_rng(0)
    for split, count in (("train", 3), ("val", 2)):
        for c, cls in enumerate(("n01440764", "n01443537")):
            (tmp / "raw" / split / cls).mkdir(parents=True)
            for k in range(count):
                yy, xx = np.mgrid[0:300, 0:260 + 40 * k]
                pixels = np.stack([yy * 255 // 300, xx * 255 // xx.max(), np.full_like(yy, 60 + 120 * c)], -1)
                pixels = (pixels + rng.integers(0, 8, pixels.shape)).clip(0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(tmp / "raw" / split / cls / f"{cls}_{k}.JPEG", quality=92)
    prepare_dataset("imagenet", tmp / "imagenet", source=tmp / "raw", num_workers=1)
    return {"digits": tmp / "digits", "imagenet": tmp / "imagenet"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="every check on the CPU (CI), numbers meaningless")
    args = parser.parse_args(argv)
    gpu = not args.dry_run
    if gpu and not torch.cuda.is_available():
        print("no CUDA device: run on a GPU machine, or --dry-run on the CPU", file=sys.stderr)
        return 2
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        ctx = {"gpu": gpu, "device": torch.device("cuda:0" if gpu else "cpu"), "tmp": tmp,
               "loader": "ffcv" if gpu else "torch", **_datasets(Path(tmp))}
        for fn in CHECKS:
            started = time.perf_counter()
            try:
                line = f"ok    {fn.__name__:18s} {fn(ctx)}"
            except Exception as exc:  # one line per check, and the others still run
                failed += 1
                line = f"FAIL  {fn.__name__:18s} {type(exc).__name__}: {str(exc)[:300]}"
            print(f"{line}  ({time.perf_counter() - started:.1f} s)", flush=True)
    print("all checks passed" if not failed else f"{failed} check(s) failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
