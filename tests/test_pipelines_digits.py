"""`prepare digits` and both loader paths over it: manifest, exact round trip, same order and shapes.

`digits_root` (conftest) is the session's digits folder, prepared with split seed 3.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from orchestrator.cli import main
from pipelines import build_loader, load_manifest
from pipelines.loaders import BetonDataset
from pipelines.sources import load_digits_source


def test_manifest_describes_the_splits(digits_root):
    manifest = load_manifest(digits_root)
    assert manifest["dataset"] == "digits"
    assert manifest["num_classes"] == 10
    assert manifest["image_size"] == 32
    assert manifest["split_seed"] == 3
    counts = {name: info["count"] for name, info in manifest["splits"].items()}
    assert set(counts) == {"train", "val", "test"}
    assert sum(counts.values()) == 1797  # every digit exactly once
    assert counts["test"] == 359 and counts["val"] == 180
    assert manifest["source_checksum"].startswith("sha256:")
    assert len(manifest["mean"]) == 3 and all(0 < m < 255 for m in manifest["mean"])
    assert not [p for p in digits_root.iterdir() if ".tmp-" in p.name]


def test_split_is_seeded_and_disjoint():
    a, b, c = load_digits_source(3), load_digits_source(3), load_digits_source(4)
    idx = {name: set(split.samples.indices.tolist()) for name, split in a.splits.items()}
    assert not (idx["train"] & idx["val"]) and not (idx["train"] & idx["test"]) and not (idx["val"] & idx["test"])
    assert np.array_equal(a.splits["val"].samples.indices, b.splits["val"].samples.indices)
    assert not np.array_equal(a.splits["val"].samples.indices, c.splits["val"].samples.indices)


def test_beton_holds_every_source_image_exactly(digits_root):
    raw = load_digits_source(3)
    for split in ("train", "test"):
        stored = BetonDataset(digits_root / f"{split}.beton", view=None)
        source = raw.splits[split].samples
        assert len(stored) == len(source)
        for i in range(0, len(source), 7):
            image, label = stored.raw(i)
            want_image, want_label = source[i]
            assert label == want_label
            np.testing.assert_array_equal(image, want_image)


@pytest.mark.slow
def test_ffcv_and_torch_paths_agree(digits_root):
    manifest = load_manifest(digits_root)
    mean = torch.tensor(manifest["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(manifest["std"]).view(1, 3, 1, 1)
    stored = BetonDataset(digits_root / "val.beton", view=None)
    expected = torch.stack([torch.from_numpy(stored.raw(i)[0]) for i in range(len(stored))]).permute(0, 3, 1, 2)
    expected = (expected.float() - mean) / std

    batches = {}
    for kind in ("ffcv", "torch"):
        loader = build_loader(digits_root, "val", batch_size=64, train=False, loader=kind, num_workers=1)
        assert len(loader) == 3  # 180 images, no drop_last in evaluation
        out = [(x.clone(), y.clone()) for x, y in loader]
        assert len(out) == 3
        images = torch.cat([x for x, _ in out])
        labels = torch.cat([y for _, y in out])
        assert images.dtype == torch.float32 and labels.dtype == torch.int64
        assert images.shape == (180, 3, 32, 32)
        # a sequential evaluation loader returns every image and label exactly, in file order
        torch.testing.assert_close(images, expected, atol=1e-5, rtol=0)
        assert labels.tolist() == [stored.raw(i)[1] for i in range(len(stored))]
        batches[kind] = labels

    train_labels = {}
    for kind in ("ffcv", "torch"):
        loader = build_loader(digits_root, "train", batch_size=100, train=True, loader=kind, seed=5)
        assert len(loader) == 1258 // 100
        epochs = []
        for _ in range(2):
            labels = []
            for x, y in loader:
                assert x.shape == (100, 3, 32, 32) and x.dtype == torch.float32
                labels.append(y.clone())
            epochs.append(torch.cat(labels))
        assert not torch.equal(epochs[0], epochs[1]) or len(set(epochs[0].tolist())) == 1  # reshuffled
        train_labels[kind] = epochs
    for a, b in zip(train_labels["ffcv"], train_labels["torch"], strict=True):
        assert torch.equal(a, b)  # same seeded order on both paths


def test_prepare_command_writes_and_reports(tmp_path):
    root = tmp_path / "d"
    result = CliRunner().invoke(main, ["prepare", "digits", "--root", str(root), "--json"])
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.output)
    assert manifest["splits"]["train"]["count"] == 1258
    assert load_manifest(root)["splits"] == manifest["splits"]


def _epoch(loader) -> tuple[torch.Tensor, torch.Tensor]:
    batches = [(x.clone(), y.clone()) for x, y in loader]
    return torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])


@pytest.mark.parametrize("workers", [0, 2])
def test_torch_path_resumed_epoch_repeats_its_augmentation(digits_root, workers):
    """A loader set to epoch 2 (a resumed run) yields what an uninterrupted one yields in its third epoch."""
    common = dict(batch_size=200, train=True, loader="torch", seed=5, num_workers=workers)
    uninterrupted = build_loader(digits_root, "train", **common)
    epochs = [_epoch(uninterrupted) for _ in range(3)]
    resumed = build_loader(digits_root, "train", **common)
    resumed.set_epoch(2)
    images, labels = _epoch(resumed)
    assert torch.equal(labels, epochs[2][1]) and torch.equal(images, epochs[2][0])
    # and each epoch draws anew: same order reshuffled, other crops and flips
    assert not torch.equal(epochs[1][0], epochs[2][0])


def test_multiscale_testing_is_refused_on_32px_images(digits_root):
    with pytest.raises(ValueError, match="multiscale"):
        build_loader(digits_root, "test", batch_size=8, train=False, eval_protocol="multiscale")
