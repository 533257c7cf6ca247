"""ImageNet-style JPEG folder: prepare, the paper's scale augmentation, centre and 10-crop evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelines import build_loader, load_manifest
from pipelines.augment import SCALE_RANGE, scale_aug_crop


def test_manifest_of_an_imagenet_folder(imagenet_root):
    manifest = load_manifest(imagenet_root)
    assert manifest["dataset"] == "imagenet" and manifest["image_size"] == 224
    assert manifest["classes"] == ["n01440764", "n01443537"]
    assert {k: v["count"] for k, v in manifest["splits"].items()} == {"train": 6, "val": 4}
    assert manifest["test_split"] == "val"  # val doubles as test, and says so
    assert manifest["writer"]["shorter_side"] == 480 and manifest["writer"]["jpeg_quality"] == 90


def test_scale_augmentation_crop_geometry():
    for height, width in [(256, 341), (400, 300), (256, 256)]:
        shorter = min(height, width)
        sides = []
        for index in range(300):
            i, j, h, w = scale_aug_crop(height, width, SCALE_RANGE[0], SCALE_RANGE[1], 224.0, 0, 0, index)
            assert h == w and 0 <= i <= height - h and 0 <= j <= width - w
            sides.append(h)
        # a side-s crop resized to 224 is the 224 crop of the image with shorter side 224 * shorter / s
        implied = 224 * shorter / np.array(sides)
        assert implied.min() >= SCALE_RANGE[0] - 2 and implied.max() <= SCALE_RANGE[1] + 2
        assert implied.min() < 280 and implied.max() > 440  # the whole [256, 480] range is used


@pytest.mark.slow
def test_both_paths_yield_the_same_shapes_and_label_order(imagenet_root):
    out = {}
    for kind in ("ffcv", "torch"):
        train = build_loader(imagenet_root, "train", batch_size=3, train=True, loader=kind, seed=2)
        x, y = next(iter(train))
        assert x.shape == (3, 3, 224, 224) and x.dtype == torch.float32 and y.dtype == torch.int64
        assert len(train) == 2
        crops = build_loader(imagenet_root, "val", batch_size=4, train=False, loader=kind, eval_protocol="10crop")
        first = [(a.clone(), b.clone()) for a, b in crops]
        second = [(a.clone(), b.clone()) for a, b in crops]
        (xa, ya), (xb, yb) = first[0], second[0]
        assert xa.shape == (4, 10, 3, 224, 224)
        torch.testing.assert_close(xa, xb, rtol=0, atol=0)  # evaluation crops are deterministic
        torch.testing.assert_close(xa[:, 5:], xa[:, :5].flip(-1), rtol=0, atol=0)
        assert ya.tolist() == yb.tolist() == [0, 0, 1, 1]
        out[kind] = (y, xa)
    # same seeded training order; evaluation pixels agree up to JPEG decoder differences
    assert out["ffcv"][0].tolist() == out["torch"][0].tolist()
    difference = (out["ffcv"][1] - out["torch"][1]).abs().mean().item()
    assert difference < 0.05, difference


def test_torch_path_resumed_epoch_repeats_the_scale_augmentation(imagenet_root):
    """The crop geometry draws from numpy's global generator (shared with FFCV's numba code): seeded per epoch."""
    def epoch(loader):
        return torch.cat([x.clone() for x, _ in loader])

    uninterrupted = build_loader(imagenet_root, "train", batch_size=3, train=True, loader="torch", seed=2)
    first, second = epoch(uninterrupted), epoch(uninterrupted)
    resumed = build_loader(imagenet_root, "train", batch_size=3, train=True, loader="torch", seed=2)
    resumed.set_epoch(1)
    np.random.seed(123)  # whatever else drew from numpy meanwhile
    assert torch.equal(epoch(resumed), second)
    assert not torch.equal(first, second)


@pytest.mark.slow
def test_center_protocol_on_the_torch_path(imagenet_root):
    loader = build_loader(imagenet_root, "val", batch_size=4, train=False, loader="torch", channels_last=True)
    x, y = next(iter(loader))
    assert x.shape == (4, 3, 224, 224) and x.is_contiguous(memory_format=torch.channels_last)
    assert y.tolist() == [0, 0, 1, 1]


@pytest.mark.slow
def test_multiscale_protocol_scores_the_same_square_at_every_paper_scale(imagenet_root):
    """Table 4 testing: centre square of the whole shorter side, at 224..640 and mirrored."""
    from pipelines.augment import MULTISCALE_SIDES, multiscale_views

    out = {}
    for kind in ("ffcv", "torch"):
        loader = build_loader(imagenet_root, "val", batch_size=4, train=False, loader=kind, eval_protocol="multiscale")
        x, y = next(iter(loader))
        assert x.shape == (4, 3, 640, 640) and y.tolist() == [0, 0, 1, 1]
        out[kind] = x.clone()
    assert (out["ffcv"] - out["torch"]).abs().mean().item() < 0.05  # JPEG decoder differences only

    views = list(multiscale_views(out["ffcv"]))
    assert [v.shape[-1] for v in views] == [s for s in MULTISCALE_SIDES for _ in range(2)]
    for plain, mirrored in zip(views[::2], views[1::2], strict=True):
        torch.testing.assert_close(mirrored, plain.flip(-1), rtol=0, atol=0)
    # the 256 view is the picture the "full" protocol decodes directly at 256
    full = next(iter(build_loader(imagenet_root, "val", batch_size=4, train=False, loader="ffcv",
                                  eval_protocol="full")))[0]
    assert (views[MULTISCALE_SIDES.index(256) * 2] - full).abs().mean().item() < 0.05


def test_pca_lighting_shifts_each_image_by_one_rgb_offset_and_repeats_on_resume(imagenet_root):
    """AlexNet's colour augmentation (the paper's [21]): a per-image RGB shift along ImageNet's principal axes."""
    from pipelines.augment import PCA_EIGVAL, PCA_EIGVEC

    manifest = load_manifest(imagenet_root)
    std = torch.tensor(manifest["std"]).view(1, 3, 1, 1)

    def first_batch(lighting, epoch=0):
        loader = build_loader(imagenet_root, "train", batch_size=3, train=True, loader="torch", seed=2,
                              lighting=lighting)
        loader.set_epoch(epoch)
        return next(iter(loader))[0].clone()

    plain, lit = first_batch(0.0), first_batch(0.1)
    shift = (lit - plain) * std  # back in 0..255 pixel units
    per_image = shift.mean(dim=(2, 3), keepdim=True)
    torch.testing.assert_close(shift, per_image.expand_as(shift), atol=1e-3, rtol=0)  # uniform over pixels
    rgb = per_image.flatten(1)
    assert rgb.abs().max() > 0.5  # a visible shift, of AlexNet's size (a few pixel levels)...
    assert rgb.abs().max() < 60
    # ... eigvec @ (alpha * eigval) * 255 with alpha ~ N(0, 0.1): the coordinates along the principal
    # components, over their eigenvalues, are draws of that size (without the eigenvalue scaling the third
    # would read ~20, with sqrt(eigval) ~1.5, with the eigenvectors as rows ~5)
    alpha = rgb @ torch.tensor(PCA_EIGVEC) / (255.0 * torch.tensor(PCA_EIGVAL))
    assert alpha.abs().max() < 0.4 and 0.03 < alpha.pow(2).mean().sqrt() < 0.3, alpha
    assert torch.equal(first_batch(0.1), lit)  # seeded: the same on a rerun / resume
    assert not torch.equal(first_batch(0.1, epoch=1) - first_batch(0.0, epoch=1), lit - plain)  # new each epoch
    evaluation = build_loader(imagenet_root, "val", batch_size=4, train=False, loader="torch", lighting=0.1)
    plain_eval = build_loader(imagenet_root, "val", batch_size=4, train=False, loader="torch")
    assert torch.equal(next(iter(evaluation))[0], next(iter(plain_eval))[0])  # training only


def test_pca_lighting_offsets_vary_along_each_principal_axis_by_its_eigenvalue():
    """Over many draws, eigvec @ (alpha * eigval) * 255 has covariance (255 std)^2 V diag(eigval^2) V^T:
    along eigenvector k the offsets spread by 255 * std * eigval_k, the axes uncorrelated."""
    from pipelines.augment import PCA_EIGVAL, PCA_EIGVEC, lighting_offsets

    offsets = lighting_offsets(0.1, 0, 0, np.arange(200_000)).double()
    coords = offsets @ torch.tensor(PCA_EIGVEC, dtype=torch.float64)
    torch.testing.assert_close(coords.std(0), 255 * 0.1 * torch.tensor(PCA_EIGVAL, dtype=torch.float64),
                               rtol=0.02, atol=0)
    torch.testing.assert_close(torch.corrcoef(coords.T), torch.eye(3, dtype=torch.float64), rtol=0, atol=0.02)


def test_ffcv_path_applies_lighting_in_training(imagenet_root):
    """A huge seeded shift shows in every image's channel means."""
    def channel_means(lighting):
        loader = build_loader(imagenet_root, "train", batch_size=3, train=True, loader="ffcv", seed=2,
                              lighting=lighting)
        return torch.cat([x.mean(dim=(2, 3)) for x, _ in loader])

    plain, lit = channel_means(0.0), channel_means(10.0)
    assert lit.abs().max() > plain.abs().max() + 2  # normalised units: far beyond what a crop moves
