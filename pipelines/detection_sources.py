"""PASCAL VOC and COCO in their official layouts -> checked splits in COCO's JSON format.

Readers for the two layouts Tables 7-8 use, each refusing bad input with one `DatasetError` that
names the file: a missing folder, an unreadable split list, malformed XML or JSON, an unknown class,
a box outside its image, an annotation that names a missing image. Nothing is skipped silently.

VOC (`VOCdevkit/VOC20xx/{Annotations/*.xml, JPEGImages/*.jpg, ImageSets/Main/<set>.txt}`): every
year found is read, each `ImageSets/Main/{train,val,trainval,test}.txt` becoming split `<year>_<set>`,
so one prepared folder serves 07+12 and 07++12. VOC's boxes are 1-based inclusive pixel indices
(`1 <= xmin <= xmax <= width`); they are stored as continuous coordinates `[xmin - 1, ymin - 1, xmax,
ymax]`, in which plain IoU equals the devkit's "+1" IoU and area, so mAP comes out as the devkit's.
A set with no annotation files at all (VOC2012's test set, scored by the evaluation server) is left
out with a note; one with some missing is refused. VOC images are opened (header only) to check
that they exist, decode and have the annotated size.

COCO (`annotations/instances_<split>.json` + `<split>/` image folders): each instances file becomes
split `<split>`; its images must exist (checked by name, not decoded: COCO has 160k of them) and its
boxes `[x, y, w, h]` must lie in the image, within one pixel for the float coordinates COCO stores.
"""

from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.detection_catalog import VOC_CLASSES, VOC_SETS, VOC_YEAR
from pipelines.manifest import DatasetError

COCO_BOX_TOLERANCE = 1.0  # pixels a COCO box may reach past the image border (float coordinates)
_ID = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass
class DetectionSource:
    """Checked splits, each a COCO-format dict (`images`, `annotations`, `categories`)."""

    name: str
    classes: list[str]  # label i + 1 is classes[i]
    categories: list[dict[str, Any]]  # COCO's {"id", "name"} in label order
    images_root: Path  # `file_name` of every image is relative to this folder
    splits: dict[str, dict[str, Any]]
    notes: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- VOC
def _voc_devkit(source: Path, year: str) -> Path:
    for devkit in (source, source / "VOCdevkit"):
        if (devkit / f"VOC{year}").is_dir():
            return devkit
    raise DatasetError(f"{source}: no VOC{year} folder (expected {source / 'VOCdevkit' / f'VOC{year}'}, "
                       "the layout VOC's tar files unpack to)")


def _read_ids(path: Path) -> list[str]:
    """The image ids of an ImageSets/Main list, one per line, in order, repeats dropped."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: unreadable split list ({exc})") from None
    ids: dict[str, None] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            image_id = line.split()[0]
            if not _ID.match(image_id):
                raise DatasetError(f"{path}:{number}: {image_id!r} is not a VOC image id")
            ids[image_id] = None
    if not ids:
        raise DatasetError(f"{path}: empty split list")
    return list(ids)


def _xml_number(node: ET.Element | None, key: str, path: Path, what: str) -> float:
    text = node.findtext(key) if node is not None else None
    try:
        value = float((text or "").strip())
    except ValueError:
        raise DatasetError(f"{path}: {what}: {key} is {text!r}, not a number") from None
    if not math.isfinite(value):
        raise DatasetError(f"{path}: {what}: {key} is {text!r}, not a finite number")
    return value


def parse_voc_xml(path: Path) -> tuple[int, int, list[tuple[int, int, list[float]]]]:
    """(width, height, [(label, difficult, [x0, y0, x1, y1])]) of one annotation file, or DatasetError."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise DatasetError(f"{path}: malformed XML ({exc})") from None
    except OSError as exc:
        raise DatasetError(f"{path}: unreadable annotation ({exc.strerror})") from None
    size = root.find("size")
    width, height = (int(_xml_number(size, key, path, "size")) for key in ("width", "height"))
    if width < 1 or height < 1:
        raise DatasetError(f"{path}: size {width}x{height} is not an image size")
    objects = []
    for i, obj in enumerate(root.findall("object"), 1):
        name = (obj.findtext("name") or "").strip()
        if name not in VOC_CLASSES:
            raise DatasetError(f"{path}: object {i}: unknown class {name!r} (VOC's 20: {', '.join(VOC_CLASSES)})")
        what = f"object {i} ({name})"
        difficult = int(_xml_number(obj, "difficult", path, what)) if obj.find("difficult") is not None else 0
        x1, y1, x2, y2 = (_xml_number(obj.find("bndbox"), k, path, what) for k in ("xmin", "ymin", "xmax", "ymax"))
        if not (1 <= x1 <= x2 <= width and 1 <= y1 <= y2 <= height):
            raise DatasetError(f"{path}: {what}: box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) lies outside the "
                               f"{width}x{height} image (VOC boxes: 1 <= xmin <= xmax <= width, same for y)")
        objects.append((VOC_CLASSES.index(name) + 1, 1 if difficult else 0, [x1 - 1, y1 - 1, x2, y2]))
    return width, height, objects


def _check_image(path: Path, width: int, height: int, annotation: Path) -> None:
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise DatasetError(f"{path}: missing image (annotated by {annotation})")
    try:
        with Image.open(path) as image:
            size = image.size
    except (OSError, UnidentifiedImageError) as exc:
        raise DatasetError(f"{path}: unreadable image ({exc})") from None
    if size != (width, height):
        raise DatasetError(f"{annotation}: size {width}x{height} does not match its image {path} "
                           f"({size[0]}x{size[1]})")


class _VocYear:
    """One VOC20xx folder: its layout checked, each image's annotation parsed once (trainval = train + val)."""

    def __init__(self, devkit: Path, year: str):
        self.folder, self.year, self.devkit = devkit / f"VOC{year}", year, devkit
        for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
            if not (self.folder / sub).is_dir():
                raise DatasetError(f"{self.folder / sub}: missing folder (VOC's layout: Annotations/, "
                                   "JPEGImages/, ImageSets/Main/)")
        self.parsed: dict[str, tuple[int, int, list]] = {}

    def annotation(self, image_id: str) -> tuple[int, int, list]:
        if image_id not in self.parsed:
            xml = self.folder / "Annotations" / f"{image_id}.xml"
            width, height, objects = parse_voc_xml(xml)
            _check_image(self.folder / "JPEGImages" / f"{image_id}.jpg", width, height, xml)
            self.parsed[image_id] = (width, height, objects)
        return self.parsed[image_id]

    def annotated(self, ids: list[str], listed_in: Path) -> bool:
        """Whether a set has annotations: all of them (True), none (False), else DatasetError."""
        present = [(self.folder / "Annotations" / f"{i}.xml").is_file() for i in ids]
        if all(present) or not any(present):
            return all(present)
        missing = self.folder / "Annotations" / f"{ids[present.index(False)]}.xml"
        raise DatasetError(f"{missing}: missing annotation of an image listed in {listed_in} "
                           f"({present.count(False)} of {len(ids)} missing)")


def _voc_split(year: _VocYear, ids: list[str], image_ids: dict[tuple[str, str], int]) -> dict[str, Any]:
    images, annotations = [], []
    for voc_id in ids:
        width, height, objects = year.annotation(voc_id)
        image_id = image_ids.setdefault((year.year, voc_id), len(image_ids) + 1)
        images.append({"id": image_id, "file_name": f"VOC{year.year}/JPEGImages/{voc_id}.jpg", "width": width,
                       "height": height})
        for label, difficult, (x0, y0, x1, y1) in objects:
            annotations.append({"image_id": image_id, "category_id": label, "bbox": [x0, y0, x1 - x0, y1 - y0],
                                "area": (x1 - x0) * (y1 - y0), "iscrowd": 0, "difficult": difficult})
    return {"images": images, "annotations": annotations}


def load_voc(name: str, source: Path) -> DetectionSource:
    """Every year and set of a VOCdevkit that holds `name`'s year, as splits `<year>_<set>`."""
    devkit = _voc_devkit(source, VOC_YEAR[name])
    years = sorted(p.name[3:] for p in devkit.iterdir() if p.is_dir() and re.fullmatch(r"VOC\d{4}", p.name))
    splits: dict[str, dict[str, Any]] = {}
    skipped: list[str] = []
    image_ids: dict[tuple[str, str], int] = {}  # (year, VOC id) -> image id, shared by every split
    for year_name in years:
        year = _VocYear(devkit, year_name)
        for voc_set in VOC_SETS:
            listed = year.folder / "ImageSets" / "Main" / f"{voc_set}.txt"
            if not listed.is_file():
                continue
            ids = _read_ids(listed)
            if not year.annotated(ids, listed):
                skipped.append(f"{year_name}_{voc_set}")
                continue
            splits[f"{year_name}_{voc_set}"] = _voc_split(year, ids, image_ids)
    if not any(split.startswith(VOC_YEAR[name]) for split in splits):
        raise DatasetError(f"{devkit / f'VOC{VOC_YEAR[name]}' / 'ImageSets' / 'Main'}: no annotated split list "
                           f"({', '.join(f'{s}.txt' for s in VOC_SETS)})")
    categories = [{"id": i + 1, "name": c} for i, c in enumerate(VOC_CLASSES)]
    notes = {"skipped_unannotated": skipped} if skipped else {}
    return DetectionSource(name, list(VOC_CLASSES), categories, devkit.resolve(), splits, notes)


# ----------------------------------------------------------------------------- COCO
def _load_json(path: Path) -> Any:
    try:
        with path.open("rb") as handle:
            return json.load(handle)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}:{exc.lineno}: malformed JSON ({exc.msg})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: unreadable annotations ({exc})") from None


def _coco_images(data: dict, path: Path, folder: Path) -> dict[int, dict[str, Any]]:
    images: dict[int, dict[str, Any]] = {}
    for i, image in enumerate(data["images"]):
        try:
            image_id, file_name = image["id"], image["file_name"]
            width, height = int(image["width"]), int(image["height"])
        except (KeyError, TypeError, ValueError):
            raise DatasetError(f"{path}: images[{i}] needs id, file_name, width and height") from None
        if not isinstance(image_id, int) or not isinstance(file_name, str) or width < 1 or height < 1:
            raise DatasetError(f"{path}: images[{i}] has a bad id, file_name or size")
        if not (folder / file_name).is_file():
            raise DatasetError(f"{folder / file_name}: missing image (images[{i}] of {path})")
        images[image_id] = {"id": image_id, "file_name": f"{folder.name}/{file_name}", "width": width,
                            "height": height}
    return images


def _coco_box(ann: Any, i: int, path: Path, images: dict, category_ids: set[int]) -> dict[str, Any]:
    try:
        image, category, box = images[ann["image_id"]], ann["category_id"], [float(v) for v in ann["bbox"]]
    except (KeyError, TypeError, ValueError):
        raise DatasetError(f"{path}: annotations[{i}] needs an image_id of a listed image, category_id and "
                           "bbox [x, y, w, h]") from None
    if category not in category_ids:
        raise DatasetError(f"{path}: annotations[{i}]: category_id {category!r} is not in categories")
    x, y, w, h = box if len(box) == 4 else (math.nan,) * 4
    tol = COCO_BOX_TOLERANCE
    inside = x >= -tol and y >= -tol and x + w <= image["width"] + tol and y + h <= image["height"] + tol
    if not (all(map(math.isfinite, box)) and len(box) == 4 and w >= 0 and h >= 0 and inside):
        raise DatasetError(f"{path}: annotations[{i}]: bbox {box} lies outside the {image['width']}x"
                           f"{image['height']} image {image['file_name']}")
    area = ann.get("area", w * h)
    return {"id": ann.get("id", i + 1), "image_id": image["id"], "category_id": category, "bbox": box,
            "area": float(area) if isinstance(area, int | float) else w * h, "iscrowd": 1 if ann.get("iscrowd") else 0}


def _coco_split(path: Path, folder: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    data = _load_json(path)
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations",
                                                                                     "categories")):
        raise DatasetError(f"{path}: expected COCO's instances format: an object with images, annotations and "
                           "categories lists")
    try:
        categories = sorted(({"id": int(c["id"]), "name": str(c["name"])} for c in data["categories"]),
                            key=lambda c: c["id"])
    except (KeyError, TypeError, ValueError):
        raise DatasetError(f"{path}: every category needs an id and a name") from None
    images = _coco_images(data, path, folder)
    ids = {c["id"] for c in categories}
    annotations = [_coco_box(ann, i, path, images, ids) for i, ann in enumerate(data["annotations"])]
    return {"images": list(images.values()), "annotations": annotations}, categories


def load_coco(source: Path) -> DetectionSource:
    """Every `annotations/instances_<split>.json` of a COCO folder with its `<split>/` images."""
    folder = source / "annotations"
    if not folder.is_dir():
        raise DatasetError(f"{folder}: missing folder (COCO's layout: annotations/instances_<split>.json and "
                           "one image folder per split, e.g. train2014/)")
    files = sorted(folder.glob("instances_*.json"))
    if not files:
        raise DatasetError(f"{folder}: no instances_<split>.json (COCO's detection annotations)")
    splits: dict[str, dict[str, Any]] = {}
    categories: list[dict[str, Any]] | None = None
    for path in files:
        split = path.stem[len("instances_"):]
        if not (source / split).is_dir():
            raise DatasetError(f"{source / split}: missing image folder of {path.name}")
        splits[split], found = _coco_split(path, source / split)
        if categories is not None and found != categories:
            raise DatasetError(f"{path}: its categories differ from those of {files[0].name}")
        categories = found
    classes = [c["name"] for c in categories or []]
    return DetectionSource("coco", classes, categories or [], source.resolve(), splits)


def load_detection_source(name: str, source: Path) -> DetectionSource:
    """The checked splits of detection dataset `name` read from `source`; DatasetError naming the file otherwise."""
    if not source.is_dir():
        raise DatasetError(f"{source}: no such folder (the {'COCO' if name == 'coco' else 'VOCdevkit'} folder)")
    found = load_coco(source) if name == "coco" else load_voc(name, source)
    for split, data in found.splits.items():
        data["categories"] = found.categories
        for i, ann in enumerate(data["annotations"], 1):
            ann.setdefault("id", i)
        if not data["images"]:
            raise DatasetError(f"{source}: split {split!r} has no images")
    return found
