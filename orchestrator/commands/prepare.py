"""`resnetctl prepare DATASET --root DIR`: raw data -> FFCV `.beton` files + manifest.json.

Detection datasets (voc2007, voc2012, coco: Tables 7-8) are checked and written as COCO-format split files
instead (`pipelines.detection_prepare`); they take only --source, --root and --json.
"""

from __future__ import annotations

import json
import sys

import click

from pipelines.catalog import DATASETS
from pipelines.detection_catalog import DETECTION_DATASETS
from resnetctl.errors import UserError


@click.command("prepare")
@click.argument("dataset", type=click.Choice(DATASETS + DETECTION_DATASETS))
@click.option("--root", required=True, type=click.Path(file_okay=False), help="Folder to write the prepared data to.")
@click.option(
    "--source", type=click.Path(), default=None,
    help="Raw data: the parent of cifar-10-batches-py / cifar-100-python, or an ImageNet-style folder "
    "with train/<wnid>/*.JPEG and val/<wnid>/*.JPEG; voc2007/voc2012: the VOCdevkit folder (VOC2007/, VOC2012/); "
    "coco: the folder with annotations/instances_<split>.json and the image folders. Not needed for digits.",
)
@click.option("--download", is_flag=True, help="CIFAR only: fetch the archive with torchvision (needs a network).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the train/val split (CIFAR) and of the mean image's sample (ImageNet).")
@click.option("--val-size", type=click.IntRange(0), default=None,
              help="CIFAR: training images held out for validation (default 5000, the paper's 45k/5k); "
              "a trainval split holds all of them. 0: no val split.")
@click.option("--shorter-side", type=click.IntRange(1), default=None,
              help="ImageNet: shorter side of the stored images; larger ones are shrunk to it, none is enlarged "
              "(default 480, the largest training scale).")
@click.option("--mean-sample", type=click.IntRange(1), default=None,
              help="ImageNet: training images averaged into the per-pixel mean image (default 10000).")
@click.option("--holdout-size", type=click.IntRange(1), default=None,
              help="ImageNet: training images set apart as a holdout split, for a plateau rule that does not "
              "read the test set (train.plateau_split: holdout).")
@click.option("--jpeg-quality", type=click.IntRange(1, 100), default=None, help="ImageNet: JPEG quality (default 90).")
@click.option(
    "--write-mode", type=click.Choice(["jpg", "raw", "smart", "proportion"]), default=None,
    help="ImageNet: how images are stored (default jpg).",
)
@click.option("--workers", type=click.IntRange(1), default=None, help="Writer processes (default 2).")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def prepare_command(
    dataset: str, root: str, source: str | None, download: bool, seed: int, val_size: int | None,
    shorter_side: int | None, mean_sample: int | None, holdout_size: int | None, jpeg_quality: int | None,
    write_mode: str | None, workers: int | None, as_json: bool,
) -> None:
    """Write DATASET's splits as FFCV .beton files and a manifest.json into --root.

    Files appear only when every split has been written: a failed run leaves nothing half-written.
    """
    from pipelines import prepare_dataset

    if dataset in DETECTION_DATASETS:
        given = [flag for flag, value in (("--download", download or None), ("--val-size", val_size),
                                          ("--shorter-side", shorter_side), ("--mean-sample", mean_sample),
                                          ("--holdout-size", holdout_size),
                                          ("--jpeg-quality", jpeg_quality), ("--write-mode", write_mode),
                                          ("--workers", workers)) if value is not None]
        if given:
            raise UserError(f"{', '.join(given)}: not for {dataset} (detection data takes --source, --root, --json)")
        return _prepare_detection(dataset, root, source, as_json)
    options = {
        key: value
        for key, value in (
            ("shorter_side", shorter_side), ("mean_sample", mean_sample), ("jpeg_quality", jpeg_quality),
            ("write_mode", write_mode), ("num_workers", workers), ("val_size", val_size),
            ("holdout_size", holdout_size),
        )
        if value is not None
    }
    options["progress"] = sys.stderr.isatty()
    if source is None and dataset in ("cifar10", "cifar100") and download:
        source = root + "-raw"
    manifest = prepare_dataset(dataset, root, source=source, download=download, seed=seed, **options)
    if as_json:
        click.echo(json.dumps(manifest, indent=2))
        return
    splits = ", ".join(f"{name} {info['count']}" for name, info in manifest["splits"].items())
    click.echo(
        f"{manifest['dataset']}: {manifest['num_classes']} classes, {manifest['image_size']}px; {splits} -> {root}"
    )


def _prepare_detection(dataset: str, root: str, source: str | None, as_json: bool) -> None:
    from pipelines.detection_prepare import prepare_detection

    manifest = prepare_detection(dataset, root, source=source)
    if as_json:
        click.echo(json.dumps(manifest, indent=2))
        return
    splits = ", ".join(f"{name} {info['count']} images/{info['boxes']} boxes" for name, info in manifest["splits"].items())
    click.echo(f"{dataset}: {manifest['num_classes']} classes; {splits} -> {root} (images stay in "
               f"{manifest['images_root']})")
