"""The bad-input catalogue: each one gives a DatasetError naming the path, and leaves no .beton behind."""

from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from orchestrator.cli import main
from pipelines import DatasetError, load_manifest, prepare_dataset


def _cifar(parent, per_batch: int = 4):
    folder = parent / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{b}" for b in range(1, 6)] + ["test_batch"]:
        entry = {"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8), "labels": [1] * per_batch}
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [str(i) for i in range(10)]}))
    return folder


def _imagenet(parent, classes=("n01", "n02"), per_class: int = 2):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in classes:
            (parent / split / cls).mkdir(parents=True)
            for k in range(per_class):
                pixels = rng.integers(0, 256, (40 + k, 50, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(parent / split / cls / f"{cls}_{k}.JPEG", quality=90)
    return parent


def _leftovers(root) -> list[str]:
    if not root.exists():
        return []
    return sorted(p.name for p in root.iterdir() if p.suffix == ".beton" or ".tmp-" in p.name)


def _fails(name, tmp_path, source, match, **options):
    root = tmp_path / "prepared"
    with pytest.raises(DatasetError, match=match) as info:
        prepare_dataset(name, root, source=source, **options)
    assert _leftovers(root) == []
    assert not (root / "manifest.json").exists()
    return str(info.value)


def test_unknown_dataset(tmp_path):
    _fails("mnist", tmp_path, None, "mnist: unknown dataset")


def test_missing_source_folder(tmp_path):
    message = _fails("cifar10", tmp_path, tmp_path / "nowhere", "source folder does not exist")
    assert str(tmp_path / "nowhere") in message


def test_cifar_folder_not_in_the_pickle_layout(tmp_path):
    (tmp_path / "raw").mkdir()
    _fails("cifar10", tmp_path, tmp_path / "raw", "cifar-10-batches-py")


def test_cifar_missing_batch_file(tmp_path):
    folder = _cifar(tmp_path / "raw")
    (folder / "data_batch_4").unlink()
    _fails("cifar10", tmp_path, tmp_path / "raw", "data_batch_4: missing file")


def test_truncated_cifar_pickle_is_named(tmp_path):
    folder = _cifar(tmp_path / "raw")
    whole = (folder / "data_batch_3").read_bytes()
    (folder / "data_batch_3").write_bytes(whole[: len(whole) // 2])
    _fails("cifar10", tmp_path, tmp_path / "raw", r"data_batch_3: unreadable cifar10 pickle", val_size=2)


def test_cifar_too_small_for_the_validation_holdout(tmp_path):
    _cifar(tmp_path / "raw")
    _fails("cifar10", tmp_path, tmp_path / "raw", "need more than the 5000 held out")


def test_imagenet_without_the_split_folders(tmp_path):
    (tmp_path / "raw" / "train" / "n01").mkdir(parents=True)
    _fails("imagenet", tmp_path, tmp_path / "raw", r"'val/<class>/\*.JPEG' is missing")


def test_imagenet_empty_class(tmp_path):
    raw = _imagenet(tmp_path / "raw")
    for f in (raw / "train" / "n02").iterdir():
        f.unlink()
    _fails("imagenet", tmp_path, raw, r"train/n02: empty class")


def test_imagenet_val_classes_differ_from_train(tmp_path):
    raw = _imagenet(tmp_path / "raw")
    (raw / "val" / "n03").mkdir()
    Image.new("RGB", (8, 8)).save(raw / "val" / "n03" / "x.JPEG")
    _fails("imagenet", tmp_path, raw, "class folders differ from train/ \\(n03\\)")


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_unreadable_jpeg_fails_the_prepare_and_names_the_file(tmp_path, damage):
    raw = _imagenet(tmp_path / "raw")
    bad = raw / "val" / "n01" / "n01_1.JPEG"
    if damage == "garbage":
        bad.write_bytes(b"this is not a jpeg")
    else:
        bad.write_bytes(bad.read_bytes()[:300])
    message = _fails("imagenet", tmp_path, raw, "unreadable image", num_workers=1)
    assert str(bad) in message
    assert "Nothing was written" in message


def test_failed_reprepare_keeps_the_previous_data(tmp_path, digits_root):
    root = tmp_path / "prepared"
    shutil.copytree(digits_root, root, copy_function=shutil.copyfile)  # a writable copy of prepared digits
    before = {p.name: p.read_bytes() for p in root.iterdir()}
    with pytest.raises(DatasetError, match="unknown writer option"):
        prepare_dataset("digits", root, jpeg_qualty=80)
    raw = _imagenet(tmp_path / "raw")
    (raw / "train" / "n01" / "n01_0.JPEG").write_bytes(b"broken")
    with pytest.raises(DatasetError):
        prepare_dataset("imagenet", root, source=raw, num_workers=1)
    assert {p.name: p.read_bytes() for p in root.iterdir()} == before
    assert load_manifest(root)["dataset"] == "digits"


def test_manifest_errors_name_the_path(tmp_path):
    with pytest.raises(DatasetError, match="prepared-data folder does not exist"):
        load_manifest(tmp_path / "none")
    with pytest.raises(DatasetError, match="no manifest"):
        load_manifest(tmp_path)


def test_cli_reports_bad_input_with_exit_status_2(tmp_path):
    result = CliRunner().invoke(
        main, ["prepare", "cifar10", "--root", str(tmp_path / "p"), "--source", str(tmp_path / "missing")]
    )
    assert result.exit_code == 2
    assert f"{tmp_path / 'missing'}: source folder does not exist" in result.output
    assert not (tmp_path / "p").exists()
    result = CliRunner().invoke(main, ["prepare", "svhn", "--root", str(tmp_path / "p")])
    assert result.exit_code == 2 and "svhn" in result.output
