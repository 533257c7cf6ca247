"""CIFAR: a fixture in the exact pickle layout round-trips; augmentations, sharding across 2 gloo ranks."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from pipelines import build_loader, load_manifest, prepare_dataset
from pipelines.sources import seeded_holdout

PER_BATCH, TEST, VAL = 40, 50, 40
BLOCK = slice(11, 21)  # a constant 10x10 centre block names the image: it survives any <=4 px shift and flip


def _images(rng: np.random.Generator, start: int, n: int) -> np.ndarray:
    images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    for k in range(n):
        images[k, BLOCK, BLOCK] = _identity_color(start + k)
    return images


def _identity_color(i: int) -> tuple[int, int, int]:
    return (i % 251, 17 + i // 251, 99)


def _identity(pixel: np.ndarray) -> int:
    return int(pixel[0]) + 251 * (int(pixel[1]) - 17)


@pytest.fixture(scope="module")
def cifar(tmp_path_factory, cifar10_layout):
    base = tmp_path_factory.mktemp("cifar")
    arrays = cifar10_layout(base / "raw", per_batch=PER_BATCH, test=TEST, images=_images)
    root = base / "prepared"
    prepare_dataset("cifar10", root, source=base / "raw", seed=7, val_size=VAL)
    return root, arrays


def _to_uint8(images: torch.Tensor, manifest: dict) -> np.ndarray:
    """Undo the loader's normalisation: (B, C, H, W) float -> (B, H, W, C) uint8."""
    mean = torch.tensor(manifest["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(manifest["std"]).view(1, 3, 1, 1)
    pixels = (images * std + mean).round().clamp(0, 255).to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).numpy()


def _collect(loader) -> tuple[np.ndarray, np.ndarray, dict]:
    images, labels = [], []
    for x, y in loader:
        assert x.is_contiguous()  # NCHW, as the model takes it: no layout copy left to the trainer
        images.append(x.clone())
        labels.append(y.clone())
    return torch.cat(images), torch.cat(labels).numpy()


def test_manifest_records_the_paper_split(cifar):
    root, _ = cifar
    manifest = load_manifest(root)
    assert manifest["dataset"] == "cifar10" and manifest["num_classes"] == 10
    assert manifest["classes"][0] == "airplane"
    assert {k: v["count"] for k, v in manifest["splits"].items()} == {
        "train": 5 * PER_BATCH - VAL, "val": VAL, "trainval": 5 * PER_BATCH, "test": TEST,
    }
    assert manifest["split_seed"] == 7 and manifest["notes"]["val_size"] == VAL
    assert manifest["source_checksum"].startswith("sha256:")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["ffcv", "torch"])
def test_sequential_loader_returns_every_image_and_label_exactly(cifar, kind):
    root, (train_x, train_y, test_x, test_y) = cifar
    manifest = load_manifest(root)
    kept, held = seeded_holdout(len(train_x), VAL, 7)
    expected = {"train": (train_x[kept], train_y[kept]), "val": (train_x[held], train_y[held]), "test": (test_x, test_y)}
    for split, (want_x, want_y) in expected.items():
        loader = build_loader(root, split, batch_size=32, train=False, loader=kind)
        images, labels = _collect(loader)
        assert images.dtype == torch.float32 and images.shape == (len(want_x), 3, 32, 32)
        np.testing.assert_array_equal(labels, want_y)
        np.testing.assert_array_equal(_to_uint8(images, manifest), want_x)


def _candidates(original: np.ndarray):
    """Every view the CIFAR training augmentation may produce: (dy, dx, flipped) -> image."""
    frame = np.zeros((40, 40, 3), np.uint8)
    frame[4:36, 4:36] = original
    for y in range(9):
        for x in range(9):
            crop = frame[y : y + 32, x : x + 32]
            yield (y - 4, x - 4, False), crop
            yield (y - 4, x - 4, True), crop[:, ::-1]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["ffcv", "torch"])
def test_training_views_are_padded_crops_and_flips_of_the_image(cifar, kind):
    root, (train_x, train_y, _, _) = cifar
    manifest = load_manifest(root)
    loader = build_loader(root, "train", batch_size=40, train=True, loader=kind, seed=1)
    images, labels = _collect(loader)
    assert images.shape == (len(loader) * 40, 3, 32, 32)
    views = _to_uint8(images, manifest)
    seen = []
    for view, label in zip(views, labels, strict=True):
        index = _identity(view[16, 16])
        assert train_y[index] == label
        matches = [key for key, candidate in _candidates(train_x[index]) if np.array_equal(candidate, view)]
        assert matches, "a training view is not a <=4 px padded crop (optionally flipped) of its image"
        seen.extend(matches[:1])
    flips = [flipped for _, _, flipped in seen]
    assert 0 < sum(flips) < len(flips)  # both flipped and unflipped views occur
    assert max(abs(dy) for dy, _, _ in seen) >= 3 and max(abs(dx) for _, dx, _ in seen) >= 3


@pytest.mark.slow
def test_ten_crop_evaluation_is_deterministic(cifar):
    root, (train_x, _, _, _) = cifar
    for kind in ("ffcv", "torch"):
        loader = build_loader(root, "test", batch_size=16, train=False, loader=kind, eval_protocol="10crop")
        first, labels_a = _collect(loader)
        second, labels_b = _collect(loader)
        assert first.shape == (TEST, 10, 3, 32, 32)
        torch.testing.assert_close(first, second, rtol=0, atol=0)
        np.testing.assert_array_equal(labels_a, labels_b)
        # crops 5..9 are the mirror images of crops 0..4, and crop 4 is the unshifted image
        torch.testing.assert_close(first[:, 5:], first[:, :5].flip(-1), rtol=0, atol=0)
        full = build_loader(root, "test", batch_size=16, train=False, loader="torch")
        torch.testing.assert_close(first[:, 4], _collect(full)[0], rtol=0, atol=1e-6)


# ----------------------------------------------------------------------- two ranks over gloo

RANK_SCRIPT = """
import json, sys
import torch, torch.distributed as dist
from pipelines import build_loader, load_manifest

rank, world, port, root, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
manifest = load_manifest(root)
mean = torch.tensor(manifest["mean"]).view(1, 3, 1, 1)
std = torch.tensor(manifest["std"]).view(1, 3, 1, 1)

def ids(loader):  # the centre pixel names each image (see the test module)
    found = []
    for x, _ in loader:
        centre = (x[:, :, 16, 16] * std.view(1, 3) + mean.view(1, 3)).round().long()
        found += (centre[:, 0] + 251 * (centre[:, 1] - 17)).tolist()
    return found

seen = {}
# rank 0 reads through FFCV, rank 1 through the torch DataLoader: the shards must still fit together
kind = "ffcv" if rank == 0 else "torch"
train = build_loader(root, "train", batch_size=16, train=True, rank=rank, world_size=world, seed=3, loader=kind)
for epoch in range(2):
    seen[f"train{epoch}"] = ids(train)
    seen[f"train{epoch}_batches"] = len(train)
val = build_loader(root, "val", batch_size=16, train=False, rank=rank, world_size=world, loader="torch")
seen["val"] = ids(val)
gathered = [None] * world
dist.all_gather_object(gathered, seen)
if rank == 0:
    json.dump(gathered, open(out, "w"))
dist.destroy_process_group()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_gloo_ranks_get_disjoint_shards_that_cover_the_split(cifar, tmp_path):
    root, (train_x, _, _, _) = cifar
    kept, held = seeded_holdout(len(train_x), VAL, 7)
    out, port = tmp_path / "gathered.json", str(_free_port())
    procs = [
        subprocess.Popen([sys.executable, "-c", RANK_SCRIPT, str(r), "2", port, str(root), str(out)])
        for r in range(2)
    ]
    try:
        codes = [p.wait(timeout=240) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert codes == [0, 0]
    a, b = json.loads(out.read_text())
    n_train = len(kept)
    for epoch in ("train0", "train1"):
        steps = (n_train // 2) // 16
        assert a[f"{epoch}_batches"] == b[f"{epoch}_batches"] == steps  # same number of steps on each rank
        assert len(a[epoch]) == len(b[epoch]) == steps * 16
        assert not set(a[epoch]) & set(b[epoch])  # disjoint
        assert set(a[epoch]) | set(b[epoch]) <= set(kept.tolist())
        assert len(a[epoch]) == len(set(a[epoch]))
    assert a["train0"] != a["train1"]  # reshuffled each epoch
    assert not set(a["val"]) & set(b["val"])
    assert sorted(a["val"] + b["val"]) == sorted(held.tolist())  # evaluation shards cover the split
