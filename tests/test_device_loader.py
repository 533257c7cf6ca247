"""`loader: device` (issue 15, item 4): the whole 32x32 split on the device, augmented there in batched torch ops.

Its batches are the torch loader's, batch for batch (same order, same seeded crops and flips, same
normalisation), so it shares their augmentation statistics and, through them, the FFCV path's
(tests/test_determinism.py holds FFCV and torch equal up to FFCV's lookup-table rounding). `digits_root`
(conftest) is the session's digits folder.
"""

from __future__ import annotations

import pytest
import torch

from orchestrator import conventions as cv
from orchestrator.eval_spec import parse_eval_grid
from orchestrator.expand import expand_cells
from orchestrator.spec import GridError, parse_grid
from pipelines import build_loader, shard_positions
from training.config import TrainConfig
from training.trainer import Trainer


def _batches(root, kind: str, split: str = "train", *, epoch: int | None = None, **options):
    defaults = dict(batch_size=64, train=split == "train", loader=kind, seed=5, num_workers=0)
    loader = build_loader(root, split, **{**defaults, **options})
    if epoch is not None:
        loader.set_epoch(epoch)
    return [(images.clone(), labels.clone()) for images, labels in loader]


def _assert_same_batches(got, want) -> None:
    assert len(got) == len(want)
    for (images, labels), (want_images, want_labels) in zip(got, want, strict=True):
        assert images.dtype == torch.float32 and labels.dtype == torch.int64
        assert torch.equal(labels, want_labels)
        torch.testing.assert_close(images, want_images, rtol=0, atol=0)


@pytest.mark.parametrize("normalization", ["pixel_mean", "channel"])
def test_device_batches_are_the_torch_loaders_batches(digits_root, normalization):
    """Same order, same crops and flips, same padding and normalisation, in the first epochs and on a second rank."""
    for epoch in (0, 1):
        _assert_same_batches(_batches(digits_root, "device", epoch=epoch, normalization=normalization),
                             _batches(digits_root, "torch", epoch=epoch, normalization=normalization))
    shard = dict(world_size=2, rank=1, batch_size=50, normalization=normalization)
    _assert_same_batches(_batches(digits_root, "device", **shard), _batches(digits_root, "torch", **shard))


@pytest.mark.parametrize("protocol", ["full", "10crop"])
def test_device_evaluation_views_are_the_torch_loaders(digits_root, protocol):
    """Evaluation: every test image once, in order, the last batch partial; 10-crop as (B, 10, C, H, W)."""
    device = _batches(digits_root, "device", "test", eval_protocol=protocol, normalization="pixel_mean")
    _assert_same_batches(device, _batches(digits_root, "torch", "test", eval_protocol=protocol,
                                          normalization="pixel_mean"))
    assert sum(len(labels) for _, labels in device) == 359
    assert device[0][0].shape[1:] == ((10, 3, 32, 32) if protocol == "10crop" else (3, 32, 32))


def test_device_loader_replays_an_epoch_on_resume(digits_root):
    """set_epoch(3) twice gives the same batches, those an uninterrupted loader gives in its fourth epoch."""
    common = dict(batch_size=100, train=True, loader="device", seed=5)
    uninterrupted = build_loader(digits_root, "train", **common)
    epochs = [[(x.clone(), y.clone()) for x, y in uninterrupted] for _ in range(4)]
    assert uninterrupted.epoch == 4 and len(uninterrupted) == 1258 // 100
    resumed = build_loader(digits_root, "train", **common)
    resumed.set_epoch(3)
    replay = list(resumed)
    resumed.set_epoch(3)
    _assert_same_batches(list(resumed), replay)
    _assert_same_batches(replay, epochs[3])
    assert not torch.equal(epochs[2][0][0], epochs[3][0][0])  # each epoch draws anew


def test_device_loader_augments_as_the_paper_says(digits_root):
    """Each training image is its source, maybe mirrored, padded by 4 with zeros (after the mean image is
    subtracted) and cropped back to 32 at an offset in 0..8: about half mirrored, every offset drawn."""
    common = dict(batch_size=2000, loader="device", seed=5, normalization="pixel_mean", drop_last=False)
    (plain, _), = list(build_loader(digits_root, "train", train=False, **common))
    loader = build_loader(digits_root, "train", train=True, **common)
    order = shard_positions(len(plain), 0, seed=5, rank=0, world_size=1, shuffle=True, equal_shards=False)
    source = plain[torch.from_numpy(order)]
    (augmented, _), = list(loader)
    padded = torch.nn.functional.pad(source, (4, 4, 4, 4))
    found = torch.zeros(len(source), 2, 9, 9, dtype=torch.bool)  # image, mirrored, row offset, column offset
    for mirrored, frames in enumerate((padded, padded.flip(-1))):
        for y in range(9):
            for x in range(9):
                window = frames[..., y : y + 32, x : x + 32]
                found[:, mirrored, y, x] = (window == augmented).flatten(1).all(1)
    assert found.flatten(1).any(1).all(), "an image is no flip and crop of its padded source"
    mirrored = found[:, 1].flatten(1).any(1) & ~found[:, 0].flatten(1).any(1)
    assert 0.45 < mirrored.float().mean() < 0.55
    assert found.any(0).any(0).all()  # every one of the 81 offsets


def test_device_loader_is_refused_for_imagenet_size_data(imagenet_root):
    """A grid says so with its file, line and field; a direct `build_loader` call with a ValueError."""
    grid = {"name": "t", "dataset": {"name": "imagenet", "path": "/data/imagenet"}, "grid": {"depth": [18]},
            "train": {"loader": "device"}}
    with pytest.raises(GridError, match="train.loader: loader 'device' holds a whole 32x32 split"):
        expand_cells(parse_grid(grid, "g.yaml"))
    evaluation = {"name": "e", "dataset": {"name": "imagenet", "path": "/data/imagenet"},
                  "evaluate": {"protocol": ["center"], "models": [{"grid": "g"}], "loader": "device"}}
    with pytest.raises(GridError, match="evaluate.loader: loader 'device' holds a whole 32x32 split"):
        parse_eval_grid(evaluation, "e.yaml")
    with pytest.raises(ValueError, match="for 32x32 data"):
        build_loader(imagenet_root, "train", batch_size=8, train=True, loader="device")


def _trained_weights(root, kind: str) -> dict[str, torch.Tensor]:
    cfg = TrainConfig(batch_size=32, lr=0.1, epochs=2, loader=kind, num_workers=0, eval_protocol="full",
                      max_train_batches=3)
    trainer = Trainer(cfg, arch="resnet8-A", variant="cifar", dataset_path=str(root), seed=5, run_key="c")
    while not trainer.done:
        metrics = trainer.run_epoch()
    assert 0 <= metrics[cv.M_TEST_ERR] <= 100
    return {k: v.clone() for k, v in trainer.net.state_dict().items()}


def test_a_cell_trained_through_the_device_loader_ends_with_the_torch_loaders_weights(digits_root):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        device, torch_path = _trained_weights(digits_root, "device"), _trained_weights(digits_root, "torch")
    finally:
        torch.set_num_threads(threads)
    for key, value in device.items():
        torch.testing.assert_close(value, torch_path[key], rtol=0, atol=0, msg=key)
