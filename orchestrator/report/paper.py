"""The paper's published numbers (He, Zhang, Ren, Sun: arXiv:1512.03385), in its row order.

Errors are in percent. Table 2: ImageNet val top-1, 10-crop; Table 3: ImageNet val
top-1/top-5, 10-crop; Table 4: single models on ImageNet val, fully-convolutional multi-scale
testing (Sec. 3.4); Table 6: CIFAR-10 test error. Table 2's ResNets use option A shortcuts
(Sec. 4.1, "zero-padding for increasing dimensions"), Table 3/4's ResNet-50/101/152 option B,
Table 6's ResNets option A (Sec. 4.2). The plain nets of Fig. 6 have no numbers in Table 6,
so their paper column stays empty.
Verification: every number below agrees with the project brief and with my recollection of
arXiv v1 (Dec 2015); no copy of the paper was at hand to check the digits against. Least
certain: Table 4's two 34-layer rows (B 21.84/5.71, C 21.53/5.60). Table 6's parameter counts
are independently reproduced by our `models` package (tests/test_models.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator import conventions as cv
from orchestrator.claims import Claim


@dataclass(frozen=True)
class PaperStat:
    """A published error: the best run, and where the paper gives it, mean and std over runs."""

    best: float
    mean: float | None = None
    std: float | None = None
    runs: int | None = None


@dataclass(frozen=True)
class CifarRow:
    depth: int
    params: str  # as printed in Table 6
    resnet: PaperStat
    plain: PaperStat | None = None  # never tabulated by the paper


@dataclass(frozen=True)
class ImageNetRow:
    label: str
    arch: str  # our readable name, models.arch.arch_name
    top1: float
    top5: float | None = None


# Table 6: classification error on the CIFAR-10 test set (ResNets, option A; 110: best of 5 runs, mean+-std).
TABLE6: tuple[CifarRow, ...] = (
    CifarRow(20, "0.27M", PaperStat(8.75)),
    CifarRow(32, "0.46M", PaperStat(7.51)),
    CifarRow(44, "0.66M", PaperStat(7.17)),
    CifarRow(56, "0.85M", PaperStat(6.97)),
    CifarRow(110, "1.7M", PaperStat(6.43, mean=6.61, std=0.16, runs=5)),
    CifarRow(1202, "19.4M", PaperStat(7.93)),
)
TABLE6_SHORTCUT = "A"
TABLE6_PROTOCOL = "CIFAR-10 test set, 10k images, error after the last iteration; 110: best of 5 runs (mean+-std)"

# Table 2: top-1 error on ImageNet validation, 10-crop testing.
TABLE2: tuple[ImageNetRow, ...] = (
    ImageNetRow("plain-18", "plain18", 27.94),
    ImageNetRow("ResNet-18", "resnet18-A", 27.88),
    ImageNetRow("plain-34", "plain34", 28.54),
    ImageNetRow("ResNet-34", "resnet34-A", 25.03),
)
TABLE2_PROTOCOL = "ImageNet validation, 10-crop testing, top-1"

# Table 3: error rates on ImageNet validation, 10-crop testing.
TABLE3: tuple[ImageNetRow, ...] = (
    ImageNetRow("plain-34", "plain34", 28.54, 10.02),
    ImageNetRow("ResNet-34 A", "resnet34-A", 25.03, 7.76),
    ImageNetRow("ResNet-34 B", "resnet34-B", 24.52, 7.46),
    ImageNetRow("ResNet-34 C", "resnet34-C", 24.19, 7.40),
    ImageNetRow("ResNet-50", "resnet50-B", 22.85, 6.71),
    ImageNetRow("ResNet-101", "resnet101-B", 21.75, 6.05),
    ImageNetRow("ResNet-152", "resnet152-B", 21.43, 5.71),
)
TABLE3_PROTOCOL = "ImageNet validation, 10-crop testing"

# Table 4: single-model error rates on ImageNet validation, fully-convolutional multi-scale testing.
TABLE4: tuple[ImageNetRow, ...] = (
    ImageNetRow("ResNet-34 B", "resnet34-B", 21.84, 5.71),
    ImageNetRow("ResNet-34 C", "resnet34-C", 21.53, 5.60),
    ImageNetRow("ResNet-50", "resnet50-B", 20.74, 5.25),
    ImageNetRow("ResNet-101", "resnet101-B", 19.87, 4.60),
    ImageNetRow("ResNet-152", "resnet152-B", 19.38, 4.49),
)
TABLE4_PROTOCOL = "ImageNet validation, single model, fully-convolutional multi-scale testing (Sec. 3.4)"
TABLE4_EVAL_PROTOCOL = cv.EVAL_MULTISCALE  # the eval-protocol tag our runs must carry to be compared with Table 4

# Table 5: ensembles, top-5 error on the ImageNet *test* set (scored by the ILSVRC server; its labels are not
# public, so an ensemble of ours is measured on val). ResNet (ILSVRC'15): six models of different depth
# (Sec. 3.4: "only with two 152-layer ones at the time of submitting"), 3.57% top-5.
TABLE5_RESNET_TOP5 = 3.57
TABLE5_PROTOCOL = ("ImageNet test set, top-5, an ensemble of six models of different depth (ILSVRC 2015); "
                   "the test set's labels are not public")

# How our runs were evaluated, by their eval-protocol tag, for the protocol line of every table.
# which split decided the ImageNet plateau drops (Sec. 3.4: the paper used val, its test set too)
PLATEAU_SPLIT_WORDS: dict[str, str] = {
    "val": "the paper's choice; on ImageNet val is also the test set",
    "holdout": "images held out of the training set, apart from the test set",
}

EVAL_PROTOCOL_WORDS: dict[str, str] = {
    cv.EVAL_CENTER: "single centre crop",
    cv.EVAL_10CROP: "10-crop testing",
    cv.EVAL_FULL: "full image (no crop)",
    cv.EVAL_MULTISCALE: "fully-convolutional multi-scale testing",
}
# How our runs trained, by their train_split and normalization params, for the same line.
TRAIN_SPLIT_WORDS: dict[str, str] = {
    "train": "train split, val held out",
    "trainval": "train + val: nothing held out",
}
NORMALIZATION_WORDS: dict[str, str] = {
    "pixel_mean": "per-pixel mean subtracted",
    "channel": "per-channel mean/std",
}


# The paper's claims, each "first < second" on the dataset's test error (ImageNet: val_err) unless a metric is
# named. Checked on whatever cells a grid has; a claim whose networks the grid lacks is `not run`.
_T2, _T3 = "Table 2 / Fig. 4", "Table 3"
_T6, _F6, _F7 = "Table 6 / Fig. 6", "Fig. 6", "Fig. 7"
CLAIMS: tuple[Claim, ...] = (
    Claim("plain18", "plain34", source=f"{_T2}: plain-34 worse than plain-18 (degradation)", dataset="imagenet"),
    Claim("resnet34-A", "resnet18-A", source=f"{_T2}: ResNet-34 better than ResNet-18", dataset="imagenet"),
    *(Claim(f"resnet{d}-A", f"plain{d}", source=f"{_T2}: a ResNet beats the plain net of its depth",
            dataset="imagenet") for d in (18, 34)),
    Claim("resnet34-B", "resnet34-A", source=f"{_T3}: projection shortcuts help a little (A >= B in error)",
          dataset="imagenet"),
    Claim("resnet34-C", "resnet34-B", source=f"{_T3}: projection shortcuts help a little (B >= C in error)",
          dataset="imagenet"),
    *(Claim(f"resnet{deeper}-A", f"resnet{d}-A", source=f"{_T6}: ResNet error falls with depth up to 110",
            dataset="cifar10") for d, deeper in ((20, 32), (32, 44), (44, 56), (56, 110))),
    Claim("resnet110-A", "resnet1202-A", source=f"{_T6}: 1202 layers worse than 110", dataset="cifar10"),
    *(Claim(f"plain{d}", f"plain{deeper}", source=f"{_F6}: plain nets worse with depth", dataset="cifar10")
      for d, deeper in ((20, 32), (32, 44), (44, 56))),
    *(Claim(f"resnet{d}-A", f"plain{d}", source=f"{_F6}: a ResNet beats the plain net of its depth",
            dataset="cifar10") for d in (20, 32, 44, 56)),
    *(Claim(f"resnet{d}-A", f"plain{d}", cv.M_LAYER_RESPONSE, dataset="cifar10",
            source=f"{_F7}: ResNets' layer responses smaller than plain nets'") for d in (20, 56)),
    *(Claim(f"resnet{deeper}-A", f"resnet{d}-A", cv.M_LAYER_RESPONSE, dataset="cifar10",
            source=f"{_F7}: deeper ResNets' responses smaller still") for d, deeper in ((20, 56), (56, 110))),
)
# Beyond those, on every dataset: a ResNet beats the plain net of its depth wherever a grid trains both.
RESIDUAL_CLAIM_SOURCE = "Sec. 4: a ResNet beats the plain net of its depth"


# Tables 7-8 (Appendix A): Faster R-CNN with VGG-16 or ResNet-101, mAP in percent. VGG-16 is not one of our
# networks: its rows are the paper's only. Table 7's VOC 2012 column is the evaluation server's score on the
# VOC 2012 test set, whose annotations are not public.
@dataclass(frozen=True)
class DetectionRow:
    label: str
    arch: str | None  # our backbone name (models.arch.arch_name); None: not one of our networks
    first: float  # Table 7: VOC 07 test mAP@0.5 (07+12); Table 8: COCO val mAP@.5
    second: float  # Table 7: VOC 12 test mAP@0.5 (07++12); Table 8: COCO val mAP@[.5, .95]


TABLE7: tuple[DetectionRow, ...] = (DetectionRow("VGG-16", None, 73.2, 70.4),
                                    DetectionRow("ResNet-101", "resnet101-B", 76.4, 73.8))
TABLE7_PROTOCOL = ("Faster R-CNN, ImageNet-initialised backbone, BN fixed, conv1-conv4 shared, RoI pooling, conv5 per "
                   "region, shorter side 600; VOC 2007 test trained on 07+12, VOC 2012 test (evaluation server) on "
                   "07++12; mAP@0.5")
TABLE8: tuple[DetectionRow, ...] = (DetectionRow("VGG-16", None, 41.5, 21.2),
                                    DetectionRow("ResNet-101", "resnet101-B", 48.4, 27.2))
TABLE8_PROTOCOL = ("Faster R-CNN as in Table 7, trained on COCO train (80k images), tested on val (40k); mAP@.5 and "
                   "mAP@[.5, .95]")
