"""MLflow bookkeeping of detection cells: their run (found again by cell id), and the backbone they start from.

A detection cell initialised from the registry (`train.init: models:/imagenet-resnet101-B/1`) is
checked here in the driver, before any trial starts: the version must exist, and where a resnetctl
cell trained it, be the same backbone (arch tag), an ImageNet-layout net, with the cell's
normalisation and bottleneck stride. The run records where its backbone came from (the registered
version, its training run and grid) as tags the report prints.
"""

from __future__ import annotations

import re
from typing import Any

from orchestrator import conventions as cv
from orchestrator.detection_cells import DetectionCell
from orchestrator.tracking import _client, find_cell_run, new_cell_run, reopen_cell_run
from resnetctl.errors import UserError
from training.detection_config import SCRATCH


class BackboneInitError(UserError):
    """A detection cell's `train.init` names no usable registered model; the message says which and why."""


def _parse_model_uri(uri: str) -> tuple[str, str]:
    match = re.fullmatch(r"models:/(?P<name>[^/]+)/(?P<version>\d+)", uri)
    if match is None:
        raise BackboneInitError(f"train.init: {uri!r} is not models:/<name>/<version>")
    return match["name"], match["version"]


def _source_mismatch(cell: DetectionCell, params: dict[str, str], tags: dict[str, str]) -> str | None:
    """Why a registered model's training run does not fit the cell's backbone, or None."""
    arch = tags.get(cv.TAG_ARCH)
    if arch and arch != cell.arch:
        return f"it is a {arch}, and the cell's backbone is {cell.arch}"
    if params.get("variant") not in (None, "imagenet"):
        return f"it is a {params['variant']}-layout network; detection backbones use the ImageNet layout (Table 1)"
    trained = params.get(cv.param_train("normalization"))
    if trained and trained != cell.train.normalization:
        return (f"it was trained with normalization {trained}, the cell normalises with {cell.train.normalization}: "
                f"set train.normalization: {trained}")
    stride = params.get(cv.param_train("stride_in_1x1"))
    if stride is not None and stride != str(cell.train.stride_in_1x1):
        return f"it was trained with stride_in_1x1 {stride}: set train.stride_in_1x1: {stride.lower()}"
    return None


def backbone_source(uri: str, cell: DetectionCell) -> dict[str, str]:
    """Where the cell's backbone comes from (model URI, its run and grid), checked; BackboneInitError otherwise."""
    if cell.train.init == SCRATCH:
        return {}
    from mlflow.exceptions import MlflowException

    name, version = _parse_model_uri(cell.train.init)
    client = _client(uri)
    try:
        found = client.get_model_version(name, version)
    except MlflowException:
        known = sorted(m.name for m in client.search_registered_models(max_results=200))
        raise BackboneInitError(f"train.init: {cell.train.init} is not in the model registry of {uri} (registered: "
                                f"{', '.join(known) or 'none'})") from None
    source = {cv.TAG_SOURCE_MODEL: cell.train.init, cv.TAG_SOURCE_RUN_ID: found.run_id or ""}
    if found.run_id:
        run = client.get_run(found.run_id)
        problem = _source_mismatch(cell, run.data.params, run.data.tags)
        if problem:
            raise BackboneInitError(f"train.init: {cell.train.init} cannot start {cell.name}: {problem}")
        source[cv.TAG_SOURCE_GRID] = run.data.tags.get(cv.TAG_GRID, "")
    return {k: v for k, v in source.items() if v}


def detection_tags(cell: DetectionCell, source: dict[str, str]) -> dict[str, str]:
    tags = {cv.TAG_GRID: cell.grid, cv.TAG_CELL_ID: cell.cell_id, cv.TAG_CELL_KIND: cv.KIND_DETECTION,
            cv.TAG_ARCH: cell.arch, cv.TAG_DATASET: cell.dataset, cv.TAG_STATUS: cv.STATUS_RUNNING,
            cv.TAG_BACKBONE_INIT: cell.train.init, cv.TAG_DETECTION_ARRANGEMENT: cell.train.arrangement, **source}
    for axis, value in cell.axes:
        tags[cv.axis_tag(axis)] = str(list(value) if isinstance(value, tuple) else value)
    return tags


def detection_params(cell: DetectionCell) -> dict[str, str]:
    """The resolved config, flattened, plus the splits and how many training images they hold."""
    from pipelines.manifest import load_manifest

    params: dict[str, Any] = {cv.PARAM_DEPTH: cell.depth, cv.PARAM_SHORTCUT: cell.shortcut, cv.PARAM_SEED: cell.seed,
                              cv.PARAM_DATASET: cell.dataset, "arch": cell.detector, "variant": cell.variant,
                              "dataset_path": cell.dataset_path, cv.PARAM_NORMALIZATION: cell.train.normalization,
                              cv.PARAM_TRAIN_SPLITS: "+".join(cell.train.train_splits),
                              cv.PARAM_TEST_SPLIT: cell.train.test_split}
    for key, value in cell.to_dict()["train"].items():
        params[cv.param_train(key)] = list(value) if isinstance(value, tuple) else value
    for key, value in cell.to_dict()["resources"].items():
        params[f"resources.{key}"] = value
    try:
        splits = load_manifest(cell.dataset_path)["splits"]
        params[cv.PARAM_TRAIN_IMAGES] = sum(int(splits[s]["count"]) for s in cell.train.train_splits)
    except (KeyError, TypeError, ValueError):  # the worker fails on the data with the reason
        pass
    return {k: str(v)[:6000] for k, v in params.items()}


def open_detection_run(uri: str, experiment_id: str, cell: DetectionCell, *, status: str = "RUNNING") -> str:
    """The run a detection cell trains into: its own unfinished one (resumed), or a new one."""
    source = backbone_source(uri, cell)  # before any run is opened: a bad init fails the grid here
    client = _client(uri)
    run = find_cell_run(uri, experiment_id, cell.cell_id)
    if run is not None:
        return reopen_cell_run(client, run, status)
    return new_cell_run(client, experiment_id, cell.name, detection_tags(cell, source), detection_params(cell),
                        status=status)


def load_backbone_state(uri: str, model_uri: str) -> dict[str, Any]:
    """The registered classification network's weights (a state dict on the CPU), read from the registry."""
    import mlflow
    import mlflow.pytorch

    from orchestrator.tracking import using_store

    with using_store(uri):
        model = mlflow.pytorch.load_model(model_uri, map_location="cpu")
    net = model.module if hasattr(model, "module") else model
    return net.state_dict()
