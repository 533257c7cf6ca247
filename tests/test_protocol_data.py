"""The paper's data protocol (issue 12, items 1-3): what a cell trains on, how images are normalised, how
ImageNet is stored.

1. CIFAR trains on all 50k training images by default (train + val, Table 6); a grid may choose the 45k
   split; runs log `train_images`, plan counts that split, the report's protocol line says it.
2. Per-pixel mean subtraction (the paper) from the mean image of the split a cell trains on; the 4-pixel
   padding is exactly 0 in the network input; both loader paths give the same normalised images.
3. ImageNet stored by its shorter side (FFCV's max_resolution capped the longer one).

`cifar500` is a CIFAR-10 in the real pickle layout, 5 x 100 training images, prepared with val_size 50.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from orchestrator import conventions as cv
from orchestrator.cli import main
from orchestrator.grid_loading import load_cells
from orchestrator.spec import GridError
from pipelines import build_loader, load_manifest, prepare_dataset
from pipelines.augment import ViewSpec, ten_crop
from pipelines.loaders import BetonDataset, shard_positions
from pipelines.sources import seeded_holdout

PER_BATCH, TEST, VAL, SPLIT_SEED = 100, 100, 50, 7
TINY_CIFAR = {"epochs": 1, "batch_size": 100, "loader": "torch", "num_workers": 0}


@pytest.fixture(scope="module")
def cifar500(tmp_path_factory, cifar10_layout):
    base = tmp_path_factory.mktemp("cifar500")
    arrays = cifar10_layout(base / "raw", per_batch=PER_BATCH, test=TEST)
    root = base / "prepared"
    result = CliRunner().invoke(main, ["prepare", "cifar10", "--root", str(root), "--source", str(base / "raw"),
                                       "--val-size", str(VAL), "--seed", str(SPLIT_SEED), "--workers", "1"])
    assert result.exit_code == 0, result.output
    return root, arrays


def _cifar_grid(path: Path, data: Path, *, train: dict | None = None, axes: dict | None = None) -> Path:
    grid = {"name": "cifar-protocol", "dataset": {"name": "cifar10", "path": str(data)},
            "grid": {"depth": [8], "shortcut": ["A"], **(axes or {})}, "train": {**TINY_CIFAR, **(train or {})},
            "resources": {"workers_per_cell": 1, "cpus_per_worker": 1, "max_concurrent_cells": 1}}
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    return path


# ----------------------------------------------------------------------- 1. the whole training set


def test_cifar_prepare_adds_a_trainval_split_holding_every_training_image(cifar500):
    root, (train_x, train_y, _, _) = cifar500
    manifest = load_manifest(root)
    assert {k: v["count"] for k, v in manifest["splits"].items()} == {
        "train": 5 * PER_BATCH - VAL, "val": VAL, "trainval": 5 * PER_BATCH, "test": TEST}
    trainval = BetonDataset(root / manifest["splits"]["trainval"]["file"], ViewSpec(32, train=False))
    stored = [trainval.raw(i) for i in range(len(trainval))]
    np.testing.assert_array_equal(np.stack([image for image, _ in stored]), train_x)  # all 500, in file order
    np.testing.assert_array_equal([label for _, label in stored], train_y)


def test_val_size_zero_leaves_no_val_and_trainval_is_the_train_split(tmp_path, cifar10_layout):
    cifar10_layout(tmp_path / "raw", per_batch=20, test=10)
    result = CliRunner().invoke(main, ["prepare", "cifar10", "--root", str(tmp_path / "p"), "--source",
                                       str(tmp_path / "raw"), "--val-size", "0", "--workers", "1", "--json"])
    assert result.exit_code == 0, result.output
    splits = json.loads(result.stdout)["splits"]
    assert set(splits) == {"train", "trainval", "test"} and splits["trainval"] == splits["train"]
    assert splits["train"]["count"] == 100 and sorted(p.name for p in (tmp_path / "p").glob("*.beton")) == [
        "test.beton", "train.beton"]


def test_a_default_cifar10_cell_trains_on_all_500_images_and_tests_every_epoch_without_val(cifar500, tmp_path):
    from training.trainer import Trainer

    root, _ = cifar500
    _, cells = load_cells(_cifar_grid(tmp_path / "g.yaml", root, axes={"train_split": ["trainval", "train"]}))
    by_split = {cell.train.train_split: cell for cell in cells}
    _, default = load_cells(_cifar_grid(tmp_path / "d.yaml", root))
    assert default[0].train.train_split == "trainval" and default[0].train.normalization == "pixel_mean"

    for split, steps, evaluated in (("trainval", 5, {"test"}), ("train", 4, {"val", "test"})):
        cell = by_split[split]
        trainer = Trainer(cell.train, arch=cell.arch, variant=cell.variant, dataset_path=cell.dataset_path, seed=0)
        assert len(trainer.train_loader.dataset) == {"trainval": 500, "train": 450}[split]
        metrics = trainer.run_epoch()
        assert metrics[cv.M_ITERATION] == steps  # 500 // 100 batches: every image of train + val
        assert set(trainer.eval_loaders) == evaluated and cv.M_TEST_ERR in metrics
        assert (cv.M_VAL_ERR in metrics) == (split == "train")  # val is training data under trainval
    plateau = default[0].train.model_copy(update={"lr_on_plateau": True})
    with pytest.raises(ValueError, match="lr_on_plateau reads the val error"):
        Trainer(plateau, arch="resnet8-A", variant="cifar", dataset_path=str(root), seed=0)


def test_plan_counts_the_images_of_the_split_each_cell_trains_on(cifar500, tmp_path):
    from orchestrator.estimate import cell_rows

    root, _ = cifar500
    axes = {"train_split": ["trainval", "train"]}
    _, cells = load_cells(_cifar_grid(tmp_path / "g.yaml", root, axes=axes))
    assert [row["train_images"] for row in cell_rows(cells)] == [500, 450]
    _, unprepared = load_cells(_cifar_grid(tmp_path / "u.yaml", tmp_path / "none", axes=axes), check_data=False)
    assert [row["train_images"] for row in cell_rows(unprepared)] == [50_000, 45_000]


def test_the_grid_check_refuses_a_training_split_or_mean_image_the_data_lacks(cifar500, tmp_path, grid_file,
                                                                              digits_root):
    with pytest.raises(GridError, match="no 'trainval' split, which resnet8-A-digits-s0 trains on .* digits has none"):
        load_cells(grid_file(tmp_path / "d.yaml", name="d", data=digits_root, train={"train_split": "trainval"}))
    older = tmp_path / "older"  # what a prepare before trainval and per-split mean images wrote
    shutil.copytree(cifar500[0], older)
    manifest = json.loads((older / "manifest.json").read_text())
    del manifest["splits"]["trainval"], manifest["splits"]["train"]["mean_image_file"]
    manifest["manifest_version"] = 1
    (older / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(GridError, match="no 'trainval' split.*older resnetctl"):
        load_cells(_cifar_grid(tmp_path / "a.yaml", older))
    with pytest.raises(GridError, match="no per-pixel mean image of the 'train' split"):
        load_cells(_cifar_grid(tmp_path / "b.yaml", older, train={"train_split": "train"}))
    load_cells(_cifar_grid(tmp_path / "c.yaml", older, train={"train_split": "train", "normalization": "channel"}))


def test_each_run_logs_its_training_images_split_and_normalization(cifar500, tmp_path):
    from mlflow.tracking import MlflowClient

    from orchestrator import tracking

    _, cells = load_cells(_cifar_grid(tmp_path / "g.yaml", cifar500[0], axes={"train_split": ["trainval", "train"],
                                                                              "normalization": ["channel"]}))
    uri = tracking.resolve_tracking_uri(None, cwd=tmp_path)
    experiment_id = tracking.ensure_experiment(uri, "cifar-protocol")
    for cell, images in zip(cells, ("500", "450"), strict=True):
        params = MlflowClient(uri).get_run(tracking.open_cell_run(uri, experiment_id, cell)).data.params
        assert params[cv.PARAM_TRAIN_IMAGES] == images
        assert params[cv.PARAM_TRAIN_SPLIT] == cell.train.train_split and params[cv.PARAM_NORMALIZATION] == "channel"


def test_the_report_protocol_line_says_what_the_runs_trained_on(tmp_path):
    from orchestrator.report.records import RunRecord, Selection
    from orchestrator.report.tables import build_tables

    def run(seed: int, images: str, split: str) -> RunRecord:
        return RunRecord(
            run_id=f"r{seed}", name=f"resnet20-A-cifar10-s{seed}", experiment_id="1", status="FINISHED",
            start_time=1, end_time=2, metrics={cv.M_TEST_ERR: 9.0},
            tags={cv.TAG_GRID: "t6", cv.TAG_CELL_ID: f"c{seed}", cv.TAG_ARCH: "resnet20-A", cv.TAG_DATASET: "cifar10",
                  cv.TAG_EVAL_PROTOCOL: cv.EVAL_FULL, cv.TAG_STATUS: cv.STATUS_FINISHED},
            params={cv.PARAM_DEPTH: "20", cv.PARAM_SHORTCUT: "A", cv.PARAM_SEED: str(seed),
                    cv.PARAM_TRAIN_IMAGES: images, cv.PARAM_TRAIN_SPLIT: split, cv.PARAM_NORMALIZATION: "pixel_mean"})

    table6 = build_tables(Selection("t6", "t6", (run(0, "50000", "trainval"),)))[0]
    assert table6.key == "table6"
    assert "trained on 50,000 images (train + val: nothing held out), per-pixel mean subtracted" in table6.protocol
    mixed = build_tables(Selection("t6", "t6", (run(0, "50000", "trainval"), run(1, "45000", "train"))))[0]
    assert "trained on 45,000 images (train split, val held out) / 50,000 images" in mixed.protocol


# ----------------------------------------------------------------------- 2. per-pixel mean subtraction


def test_prepare_stores_the_mean_image_of_each_split_a_cell_may_train_on(cifar500):
    root, (train_x, _, _, _) = cifar500
    manifest = load_manifest(root)
    kept, _ = seeded_holdout(len(train_x), VAL, SPLIT_SEED)
    for split, images in (("train", train_x[kept]), ("trainval", train_x)):
        info = manifest["splits"][split]
        mean = np.load(root / info["mean_image_file"])
        assert mean.shape == (32, 32, 3) and mean.dtype == np.float32 and info["mean_image_count"] == len(images)
        np.testing.assert_allclose(mean, images.astype(np.float64).mean(0), rtol=0, atol=1e-4)
    assert "mean_image_file" not in manifest["splits"]["test"] and "mean_image_file" not in manifest["splits"]["val"]
    pixels = train_x[kept].reshape(-1, 3).astype(np.float64)  # the channel statistics: the train split's, as before
    np.testing.assert_allclose(manifest["mean"], pixels.mean(0), rtol=1e-9)
    np.testing.assert_allclose(manifest["std"], pixels.std(0), rtol=1e-9)


def _placement(view: np.ndarray, image: np.ndarray) -> tuple[int, int, bool] | None:
    """(dy, dx, flipped) such that `view` is the zero-padded, shifted (flipped) `image`, exactly; None if none is."""
    for flipped in (False, True):
        frame = np.zeros((40, 40, 3), np.float32)
        frame[4:36, 4:36] = image[:, ::-1] if flipped else image
        for dy in range(9):
            for dx in range(9):
                if np.array_equal(frame[dy:dy + 32, dx:dx + 32].transpose(2, 0, 1), view):
                    return dy - 4, dx - 4, flipped
    return None


@pytest.mark.slow
def test_pixel_mean_training_views_are_padded_with_exact_zeros_alike_on_both_paths(cifar500):
    """The paper's 4-pixel padding comes after the mean image is subtracted: the border is 0 in the network input.

    The mean is subtracted at each pixel's own place, before the flip (as Caffe's data layer does).
    """
    root, (train_x, _, _, _) = cifar500
    mean = np.load(root / load_manifest(root)["splits"]["trainval"]["mean_image_file"])
    normalised = train_x.astype(np.float32) - mean  # what the network sees of each image, before the crop
    order = shard_positions(len(train_x), 0, seed=1, rank=0, world_size=1, shuffle=True, equal_shards=True)
    placements, batches = {}, {}
    for kind in ("torch", "ffcv"):
        loader = build_loader(root, "trainval", batch_size=100, train=True, loader=kind, seed=1,
                              num_workers=int(kind == "ffcv"), normalization="pixel_mean", stats_split="trainval")
        batches[kind] = torch.cat([x.clone() for x, _ in loader])
        views = batches[kind].numpy()
        assert views.shape == (500, 3, 32, 32)
        placements[kind] = [_placement(view, normalised[i]) for view, i in zip(views, order, strict=True)]
        assert None not in placements[kind], f"{kind}: a view is not a zero-padded crop of its mean-subtracted image"
        shifted = [(dy, dx) for dy, dx, _ in placements[kind] if (dy, dx) != (0, 0)]
        assert len(shifted) > 400 and {dy for dy, _ in shifted} >= {-4, 4}  # borders of up to 4 zero rows
        assert 100 < sum(flipped for _, _, flipped in placements[kind]) < 400
        for view, (dy, dx, _) in zip(views, placements[kind], strict=True):  # the border, named outright
            rows = slice(0, -dy) if dy < 0 else slice(32 - dy, 32)
            cols = slice(0, -dx) if dx < 0 else slice(32 - dx, 32)
            assert not view[:, rows, :].any() and not view[:, :, cols].any()
    # flips and crops come from one seeded generator on both paths: the same view, the same normalised image
    assert placements["torch"] == placements["ffcv"] and torch.equal(batches["torch"], batches["ffcv"])


@pytest.mark.slow
def test_both_paths_give_the_same_pixel_mean_evaluation_images(cifar500):
    root, (_, _, test_x, _) = cifar500
    mean = np.load(root / load_manifest(root)["splits"]["trainval"]["mean_image_file"])
    expected = torch.from_numpy(test_x.astype(np.float32) - mean).permute(0, 3, 1, 2)
    for kind in ("torch", "ffcv"):
        options = {"loader": kind, "normalization": "pixel_mean", "stats_split": "trainval", "batch_size": 50}
        full = torch.cat([x.clone() for x, _ in build_loader(root, "test", train=False, eval_protocol="full", **options)])
        assert torch.equal(full, expected), kind  # the test split minus the training split's mean image, exactly
        crops = torch.cat([x.clone() for x, _ in build_loader(root, "test", train=False, eval_protocol="10crop",
                                                              **options)])
        corner = crops[:, 0]  # top-left 32 of the 40x40 frame: padded with zeros, like training
        assert not corner[..., :4, :].any() and not corner[..., :, :4].any()
        assert torch.equal(corner[..., 4:, 4:], expected[..., :28, :28])


def _centre_square_256(image: np.ndarray) -> np.ndarray:
    import cv2

    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return cv2.resize(image[top:top + side, left:left + side], (256, 256), interpolation=cv2.INTER_AREA)


def test_imagenet_mean_image_is_the_centre_square_mean_of_a_seeded_sample(imagenet_root, tmp_path):
    from PIL import Image

    manifest = load_manifest(imagenet_root)
    info = manifest["splits"]["train"]
    assert info["mean_image_count"] == 6 and "10000 training images" in manifest["mean_image_view"]
    squares = np.stack([_centre_square_256(np.asarray(Image.open(path).convert("RGB"))).astype(np.float64)
                        for path in sorted((imagenet_root.parent / "raw" / "train").glob("*/*.JPEG"))])
    mean = np.load(imagenet_root / info["mean_image_file"])
    assert mean.shape == (256, 256, 3)
    np.testing.assert_allclose(mean, squares.mean(0), rtol=0, atol=1e-3)
    sampled = prepare_dataset("imagenet", tmp_path / "p", source=imagenet_root.parent / "raw", num_workers=1,
                              mean_sample=2, seed=5)
    assert sampled["splits"]["train"]["mean_image_count"] == 2
    two = np.load(tmp_path / "p" / sampled["splits"]["train"]["mean_image_file"])
    pairs = [(a, b) for a in range(6) for b in range(a + 1, 6)]
    assert sum(np.allclose(two, (squares[a] + squares[b]) / 2, atol=1e-3) for a, b in pairs) == 1


def test_imagenet_pixel_mean_views_subtract_the_mean_image_shaped_like_each_view(imagenet_root):
    """Torch path: (per-pixel view + its mean) is the same image the channel normalisation shows, for every protocol."""
    import cv2

    manifest = load_manifest(imagenet_root)
    mean_256 = np.load(imagenet_root / manifest["splits"]["train"]["mean_image_file"])
    chan_mean = torch.tensor(manifest["mean"]).view(3, 1, 1)
    chan_std = torch.tensor(manifest["std"]).view(3, 1, 1)

    def as_tensor(image):
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()

    mean_of = {"center": as_tensor(mean_256[16:240, 16:240]), "full": as_tensor(mean_256),
               "10crop": ten_crop(as_tensor(mean_256)[None], 224)[0],
               "multiscale": as_tensor(cv2.resize(mean_256, (640, 640), interpolation=cv2.INTER_LINEAR))}
    for protocol, mean in mean_of.items():
        pixel, channel = (next(iter(build_loader(imagenet_root, "val", batch_size=4, train=False, loader="torch",
                                                 eval_protocol=protocol, normalization=norm)))[0]
                          for norm in ("pixel_mean", "channel"))
        torch.testing.assert_close(pixel + mean, channel * chan_std + chan_mean, rtol=0, atol=2e-3, msg=protocol)
    pixel, channel = (next(iter(build_loader(imagenet_root, "train", batch_size=3, train=True, loader="torch", seed=2,
                                             normalization=norm)))[0] for norm in ("pixel_mean", "channel"))
    torch.testing.assert_close(pixel + mean_of["center"], channel * chan_std + chan_mean, rtol=0, atol=2e-3)
    # the mean image is aligned with the views: the centre view's average over the training images is close to
    # its centre 224 square, far closer than to the whole 256 square squeezed to 224
    views = torch.cat([x * chan_std + chan_mean for x, _ in build_loader(
        imagenet_root, "train", batch_size=6, train=False, loader="torch", eval_protocol="center")]).mean(0)
    squeezed = as_tensor(cv2.resize(mean_256, (224, 224), interpolation=cv2.INTER_AREA))
    aligned, misaligned = ((views - m).abs().mean().item() for m in (mean_of["center"], squeezed))
    assert aligned < 1.0 and misaligned > 5 * aligned, (aligned, misaligned)


@pytest.mark.slow
def test_both_paths_give_the_same_imagenet_pixel_mean_views(imagenet_root):
    out = {kind: next(iter(build_loader(imagenet_root, "val", batch_size=4, train=False, loader=kind,
                                        eval_protocol="center", normalization="pixel_mean")))[0].clone()
           for kind in ("ffcv", "torch")}
    assert (out["ffcv"] - out["torch"]).abs().mean().item() < 1.0  # grey levels: JPEG decoder differences only


# ----------------------------------------------------------------------- 3. ImageNet by its shorter side

SOURCE_SIZES = {"train/n01/a.JPEG": (600, 800), "train/n01/b.JPEG": (800, 600), "train/n02/c.JPEG": (300, 400),
                "train/n02/d.JPEG": (500, 500), "val/n01/e.JPEG": (700, 1000), "val/n02/f.JPEG": (200, 300)}


def _stored_sizes(root: Path) -> dict[str, list[tuple[int, int]]]:
    manifest = load_manifest(root)
    sizes = {}
    for split in ("train", "val"):
        stored = BetonDataset(root / manifest["splits"][split]["file"], ViewSpec(224, train=False))
        sizes[split] = [stored.raw(i)[0].shape[:2] for i in range(len(stored))]
    return sizes


def test_imagenet_is_stored_by_its_shorter_side_and_never_enlarged(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for name, (h, w) in SOURCE_SIZES.items():
        (tmp_path / "raw" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(tmp_path / "raw" / name, quality=90)
    manifest = prepare_dataset("imagenet", tmp_path / "480", source=tmp_path / "raw", num_workers=1)
    assert manifest["writer"]["shorter_side"] == 480 and "max_resolution" not in manifest["writer"]
    # 480 on the shorter side (FFCV's max_resolution=256 had made the 600x800 image 192x256); smaller ones kept
    assert _stored_sizes(tmp_path / "480") == {"train": [(480, 640), (640, 480), (300, 400), (480, 480)],
                                               "val": [(480, 686), (200, 300)]}
    result = CliRunner().invoke(main, ["prepare", "imagenet", "--root", str(tmp_path / "256"), "--source",
                                       str(tmp_path / "raw"), "--shorter-side", "256", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert _stored_sizes(tmp_path / "256") == {"train": [(256, 341), (341, 256), (256, 341), (256, 256)],
                                               "val": [(256, 366), (200, 300)]}


# ----------------------------------------------------------------------- end to end: what the issue asks


@pytest.mark.slow
def test_submit_of_a_default_cifar10_cell_trains_on_all_500_images_and_logs_it(cifar500, tmp_path):
    """`resnetctl submit` (Ray Tune + Train + MLflow): the preset's split and normalisation, as the run records them."""
    from mlflow.tracking import MlflowClient

    grid = _cifar_grid(tmp_path / "grid.yaml", cifar500[0])
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env.update(MLFLOW_DISABLE_TELEMETRY="true", RAY_USAGE_STATS_ENABLED="0")
    proc = subprocess.run([sys.executable, "-c", "from orchestrator.cli import main; main()", "submit", str(grid)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("cifar-protocol").experiment_id])
    assert run.data.tags[cv.TAG_STATUS] == cv.STATUS_FINISHED
    assert run.data.params[cv.PARAM_TRAIN_IMAGES] == "500" and run.data.params[cv.PARAM_TRAIN_SPLIT] == "trainval"
    assert run.data.params[cv.PARAM_NORMALIZATION] == "pixel_mean"
    assert run.data.metrics[cv.M_ITERATION] == 5  # one epoch of 100-image batches: all 500 images
    assert cv.M_TEST_ERR in run.data.metrics and cv.M_VAL_ERR not in run.data.metrics
