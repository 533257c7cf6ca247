"""A detection cell: Faster R-CNN with one of our ResNets as backbone, trained and tested on one dataset (Tables 7-8).

Like a classification `Cell`, a plain frozen dataclass that pickles into a Tune trial and hashes to a
stable id, so reruns find their MLflow run and checkpoints; it says `kind: detection` in its dict, and
its id hashes that kind too, so it can never collide with a classification cell's (whose ids are
unchanged). Names: run `faster-rcnn-resnet101-B-voc2007-s0`, registered model
`voc2007-faster-rcnn-resnet101-B`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from models.arch import Shortcut
from orchestrator import conventions as cv
from orchestrator.cells import Resources, cell_data, trained_cell_id
from training.detection_config import DetectionConfig

DETECTOR = "faster-rcnn"


def detector_arch(backbone: str) -> str:
    """The detector's readable name: detector_arch("resnet101-B") -> "faster-rcnn-resnet101-B"."""
    return f"{DETECTOR}-{backbone}"


@dataclass(frozen=True)
class DetectionCell:
    """One detection trial; `arch` is the backbone ("resnet101-B"), `name` the MLflow run and Tune trial name."""

    grid: str
    arch: str
    depth: int
    shortcut: Shortcut
    dataset: str
    dataset_path: str
    seed: int
    train: DetectionConfig
    resources: Resources = field(default_factory=Resources)
    axes: tuple[tuple[str, Any], ...] = ()
    label: str = ""

    kind = cv.KIND_DETECTION
    variant = "imagenet"  # the backbone's layout (Table 1)

    @property
    def detector(self) -> str:
        return detector_arch(self.arch)

    @property
    def name(self) -> str:
        base = cv.run_name(self.detector, self.dataset, self.seed)
        return f"{base}-{self.label}" if self.label else base

    @property
    def cell_id(self) -> str:
        """Stable 12-hex id of what is trained (resources and the data's location excluded, as for `Cell`)."""
        return trained_cell_id(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        return {"kind": cv.KIND_DETECTION, **cell_data(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DetectionCell:
        data = {k: v for k, v in data.items() if k != "kind"}
        train = DetectionConfig.model_validate(data.pop("train"), strict=False)  # JSON-ish: lists for tuples
        resources = Resources.model_validate(data.pop("resources", {}), strict=False)
        axes = tuple(tuple(a) for a in data.pop("axes", ()))
        return cls(train=train, resources=resources, axes=axes, **data)


def detection_rows(cells: list[DetectionCell]) -> list[dict[str, Any]]:
    """`plan`'s row per detection cell: the backbone's multiply-adds per image and the images trained on.

    Per image: the backbone as Table 1 counts it, at the square of the typical resized image's area (shorter
    side min_size, longer 4/3 of it, VOC's usual 4:3); the RPN and the per-region heads are not counted.
    Images: iterations x batch_size; epochs over the training splits where the manifest gives their size.
    """
    from models.arch import multiply_adds, resolve_arch
    from orchestrator.estimate import _resources
    from pipelines.manifest import load_manifest

    rows = []
    for cell in cells:
        cfg = cell.train
        side = round(math.sqrt(cfg.min_size * min(cfg.max_size, round(cfg.min_size * 4 / 3))))
        arch = resolve_arch(cell.depth, shortcut=cell.shortcut, variant="imagenet")
        macs = multiply_adds(arch, image_size=side, stride_in_1x1=cfg.stride_in_1x1)
        images = cfg.iterations * cfg.batch_size
        try:
            splits = load_manifest(cell.dataset_path)["splits"]
            train_images = sum(int(splits[s]["count"]) for s in cfg.train_splits)
        except (KeyError, TypeError, ValueError):  # not prepared yet (DatasetError is a ValueError)
            train_images = 0
        rows.append({"name": cell.name, "cell_id": cell.cell_id, "arch": cell.detector, "dataset": cell.dataset,
                     "seed": cell.seed, "axes": dict(cell.axes), "resources": _resources(cell),
                     "mult_adds_per_image": macs, "train_images": train_images,
                     "epochs": round(images / train_images, 3) if train_images else 0.0,
                     "compute_mult_adds": macs * images})
    return rows
