"""Detection data: `resnetctl prepare voc2007|voc2012|coco` from the official layouts, bad input refused naming
the file (exit 2, nothing written), and the torch Dataset's targets, flips and shards."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from pipelines.detection_data import build_detection_loader, split_images
from pipelines.detection_prepare import detection_manifest, load_split, prepare_detection
from pipelines.manifest import DatasetError


def resnetctl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from orchestrator.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=120)


def test_voc_prepare_writes_coco_format_splits_with_voc_boxes_made_continuous(voc_devkit, voc_root):
    manifest = detection_manifest(voc_root)
    assert manifest["task"] == "detection" and manifest["dataset"] == "voc2007" and manifest["num_classes"] == 20
    assert set(manifest["splits"]) == {"2007_trainval", "2007_test"}
    assert manifest["images_root"] == str(voc_devkit.resolve())
    test = load_split(voc_root, manifest, "2007_test")
    assert manifest["splits"]["2007_test"] == {"count": 4, "boxes": len(test["annotations"]), "file": "2007_test.json"}
    image = test["images"][0]
    xml = (voc_devkit / "VOC2007" / "Annotations" / image["file_name"].split("/")[-1].replace(".jpg", ".xml"))
    first = xml.read_text().split("<bndbox>")[1]
    x0, y0, x1, y1 = (int(first.split(f"<{k}>")[1].split("<")[0]) for k in ("xmin", "ymin", "xmax", "ymax"))
    ann = next(a for a in test["annotations"] if a["image_id"] == image["id"])
    # 1-based inclusive [xmin, xmax] -> continuous [xmin - 1, xmax]: width xmax - xmin + 1, as the devkit counts
    assert ann["bbox"] == [x0 - 1, y0 - 1, x1 - x0 + 1, y1 - y0 + 1]
    assert ann["area"] == (x1 - x0 + 1) * (y1 - y0 + 1)
    assert {a["difficult"] for a in test["annotations"]} <= {0, 1}


def test_the_cli_prepares_voc2007_and_prints_its_splits(voc_devkit, tmp_path):
    proc = resnetctl("prepare", "voc2007", "--source", str(voc_devkit.parent), "--root", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    assert "2007_trainval 6 images" in proc.stdout and "2007_test 4 images" in proc.stdout


def test_every_year_of_the_devkit_is_prepared_and_an_unannotated_test_set_is_left_out(tmp_path, write_voc_year):
    devkit = tmp_path / "VOCdevkit"
    write_voc_year(devkit, "2007", {"trainval": 2, "test": 2})
    write_voc_year(devkit, "2012", {"trainval": 2, "test": 2}, first=100)
    for xml in (devkit / "VOC2012" / "Annotations").glob("2012_00010[23].xml"):  # VOC 2012's test: no annotations
        xml.unlink()
    manifest = prepare_detection("voc2012", tmp_path / "out", source=devkit)
    assert set(manifest["splits"]) == {"2007_trainval", "2007_test", "2012_trainval"}
    assert manifest["notes"] == {"skipped_unannotated": ["2012_test"]}
    ids = [i.image_id for i in split_images(tmp_path / "out", manifest, ["2007_trainval", "2007_test", "2012_trainval"])]
    assert len(ids) == len(set(ids)) == 6


def _broken_copy(voc_devkit, tmp_path, change):
    devkit = tmp_path / "VOCdevkit"
    shutil.copytree(voc_devkit, devkit)
    for path in devkit.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    change(devkit / "VOC2007")
    return devkit


def _edit_first_xml(old: str, new: str):
    def change(folder):
        xml = sorted((folder / "Annotations").glob("*.xml"))[0]
        xml.write_text(xml.read_text().replace(old, new, 1))
    return change


def _first(folder, sub: str, pattern: str):
    return sorted((folder / sub).glob(pattern))[0]


BAD_VOC = {
    "missing JPEGImages": (lambda f: shutil.rmtree(f / "JPEGImages"), "JPEGImages: missing folder"),
    "missing ImageSets": (lambda f: shutil.rmtree(f / "ImageSets"), "ImageSets/Main: missing folder"),
    "malformed XML": (_edit_first_xml("</annotation>", "<annotation"), "malformed XML"),
    "box outside": (_edit_first_xml("<xmax>", "<xmax>9"), "lies outside the"),
    "zero xmin": (_edit_first_xml("<xmin>", "<xmin>-"), "lies outside the"),
    "unknown class": (_edit_first_xml("<name>", "<name>unicorn"), "unknown class"),
    "no size": (_edit_first_xml("<width>", "<width>x"), "not a number"),
    "missing image": (lambda f: _first(f, "JPEGImages", "*.jpg").unlink(), "missing image"),
    "truncated image": (lambda f: _first(f, "JPEGImages", "*.jpg").write_bytes(b"\xff\xd8\xff"), "unreadable image"),
    "some annotations missing": (lambda f: _first(f, "Annotations", "*.xml").unlink(), "missing annotation"),
    "bad id in a split list": (lambda f: (f / "ImageSets/Main/test.txt").write_text("../../etc/passwd\n"),
                               "is not a VOC image id"),
}


@pytest.mark.parametrize("case", sorted(BAD_VOC))
def test_bad_voc_input_is_refused_naming_the_file_and_nothing_is_written(case, voc_devkit, tmp_path):
    change, expected = BAD_VOC[case]
    devkit = _broken_copy(voc_devkit, tmp_path, change)
    out = tmp_path / "out"
    with pytest.raises(DatasetError, match=expected) as caught:
        prepare_detection("voc2007", out, source=devkit)
    assert str(devkit) in str(caught.value)
    assert not out.exists() or not any(out.iterdir())


def test_bad_input_exits_2_with_one_error_line(voc_devkit, tmp_path):
    devkit = _broken_copy(voc_devkit, tmp_path, BAD_VOC["box outside"][0])
    proc = resnetctl("prepare", "voc2007", "--source", str(devkit), "--root", str(tmp_path / "out"))
    assert proc.returncode == 2 and proc.stderr.startswith("Error: ") and proc.stderr.count("\n") == 1
    assert ".xml: object 1" in proc.stderr
    assert resnetctl("prepare", "voc2012", "--source", str(devkit), "--root", str(tmp_path / "o")).returncode == 2


def _coco(tmp_path, images=2):
    from PIL import Image

    source = tmp_path / "coco"
    (source / "annotations").mkdir(parents=True)
    (source / "val2017").mkdir()
    data = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}]}
    for i in range(1, images + 1):
        Image.fromarray(np.full((40, 60, 3), 120, np.uint8)).save(source / "val2017" / f"{i:012d}.jpg")
        data["images"].append({"id": i, "file_name": f"{i:012d}.jpg", "width": 60, "height": 40})
        data["annotations"].append({"id": 10 + i, "image_id": i, "category_id": 18, "bbox": [5.5, 4, 20, 30.2],
                                    "area": 500.0, "iscrowd": 0})
    (source / "annotations" / "instances_val2017.json").write_text(json.dumps(data))
    return source, data


def test_coco_prepare_keeps_its_category_ids_and_maps_labels_contiguously(tmp_path):
    source, _ = _coco(tmp_path)
    manifest = prepare_detection("coco", tmp_path / "out", source=source)
    assert manifest["classes"] == ["person", "dog"] and manifest["splits"]["val2017"]["count"] == 2
    split = load_split(tmp_path / "out", manifest, "val2017")
    assert split["annotations"][0]["category_id"] == 18 and split["images"][0]["file_name"] == "val2017/000000000001.jpg"
    (item,) = split_images(tmp_path / "out", manifest, ["val2017"])[:1]
    assert item.labels.tolist() == [2] and item.boxes.tolist() == [[5.5, 4.0, 25.5, 34.20000076293945]]


@pytest.mark.parametrize("case, change, expected", [
    ("malformed JSON", lambda s, d: (s / "annotations/instances_val2017.json").write_text('{"images": ['),
     "instances_val2017.json:1: malformed JSON"),
    ("box outside", lambda s, d: _rewrite(s, d, lambda x: x["annotations"][0].update(bbox=[50, 4, 20, 30])),
     "lies outside the 60x40 image"),
    ("unknown category", lambda s, d: _rewrite(s, d, lambda x: x["annotations"][0].update(category_id=7)),
     "category_id 7 is not in categories"),
    ("missing image", lambda s, d: (s / "val2017/000000000002.jpg").unlink(), "000000000002.jpg: missing image"),
    ("missing image folder", lambda s, d: shutil.rmtree(s / "val2017"), "missing image folder"),
    ("not instances", lambda s, d: _rewrite(s, d, lambda x: x.pop("categories")), "COCO's instances format"),
])
def test_bad_coco_input_is_refused_naming_the_file(case, change, expected, tmp_path):
    source, data = _coco(tmp_path)
    change(source, data)
    with pytest.raises(DatasetError, match=expected):
        prepare_detection("coco", tmp_path / "out", source=source)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def _rewrite(source, data, edit):
    edit(data)
    (source / "annotations" / "instances_val2017.json").write_text(json.dumps(data))


def test_training_targets_drop_difficult_boxes_and_flip_reproducibly(voc_root):
    manifest = detection_manifest(voc_root)
    items = split_images(voc_root, manifest, ["2007_trainval"])
    assert any(item.ignored.any() for item in items)  # the generated set marks some boxes difficult
    first = build_detection_loader(voc_root, ["2007_trainval"], train=True, batch_size=2, seed=5, hflip=True)
    again = build_detection_loader(voc_root, ["2007_trainval"], train=True, batch_size=2, seed=5, hflip=True)
    batches, repeat = list(first), list(again)
    assert len(batches) == 3
    for (images, targets), (images2, targets2) in zip(batches, repeat, strict=True):
        for image, target, image2, target2 in zip(images, targets, images2, targets2, strict=True):
            item = next(i for i in items if i.image_id == int(target["image_id"]))
            assert target["boxes"].shape[0] == int((~item.ignored).sum())
            assert image.shape[1:] == image2.shape[1:] and target["boxes"].equal(target2["boxes"])
            width = image.shape[2]
            kept = item.boxes[~item.ignored]
            flipped = np.stack([width - kept[:, 2], kept[:, 1], width - kept[:, 0], kept[:, 3]], 1)
            assert np.allclose(target["boxes"].numpy(), kept) or np.allclose(target["boxes"].numpy(), flipped)


def test_two_ranks_train_on_disjoint_equal_shards_and_test_on_all_images(voc_root):
    shards = [build_detection_loader(voc_root, ["2007_trainval"], train=True, batch_size=1, seed=0, rank=r,
                                     world_size=2) for r in (0, 1)]
    seen = [[int(t["image_id"]) for _, targets in shard for t in targets] for shard in shards]
    assert len(seen[0]) == len(seen[1]) == 3 and not set(seen[0]) & set(seen[1])
    tests = [build_detection_loader(voc_root, ["2007_test"], train=False, batch_size=3, seed=0, rank=r, world_size=2)
             for r in (0, 1)]
    assert sorted(int(t["image_id"]) for loader in tests for _, ts in loader for t in ts) == sorted(
        i.image_id for i in split_images(voc_root, detection_manifest(voc_root), ["2007_test"]))


def test_classification_data_is_refused_as_detection_data(digits_root):
    with pytest.raises(DatasetError, match="classification data, not a detection dataset"):
        detection_manifest(digits_root)
