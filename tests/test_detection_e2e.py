"""Detection end to end on CPU: a generated VOCdevkit prepared by the CLI, the example grid shrunk to a
ResNet-18 backbone initialised from a registered ImageNet model and a few iterations, run by `resnetctl
submit` (real Ray Tune + Train + MLflow SQLite), its mAP logged, `resnetctl report` printing Table 7.
The registry checks a detection cell's `train.init` meets before any trial starts are tested directly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from orchestrator import conventions as cv

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
TINY = {"train_splits": ["2007_trainval"], "iterations": 4, "batch_size": 2, "min_size": 64, "max_size": 96,
        "roi_size": 7, "rois_per_image": 8, "rpn_proposals_train": 32, "rpn_proposals_test": 16, "num_workers": 0,
        "eval_every": 1}


def resnetctl(cwd: Path, *args: str, timeout: int = 400) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env.update(MLFLOW_DISABLE_TELEMETRY="true", RAY_USAGE_STATS_ENABLED="0", COLUMNS="250")
    return subprocess.run([sys.executable, "-c", "from orchestrator.cli import main; main()", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def register_imagenet_net(uri: str, arch: str = "resnet18-B", **params: str) -> str:
    """Register an (untrained) ImageNet-layout net as a resnetctl ImageNet cell would: imagenet-<arch>, its run
    tagged with the arch and grid and carrying the training params the detection check reads."""
    import mlflow
    import mlflow.pytorch

    from models import build_from_name
    from orchestrator.tracking import using_store

    with using_store(uri):  # MLflow's process-wide URIs, restored after: later tests see their own stores
        mlflow.set_experiment("imagenet-table3")
        torch.manual_seed(0)
        with mlflow.start_run(tags={cv.TAG_ARCH: arch, cv.TAG_GRID: "imagenet-table3"}) as run:
            mlflow.log_params({"variant": "imagenet", "train.normalization": "pixel_mean", "train.stride_in_1x1": "True",
                               **params})
            mlflow.pytorch.log_model(build_from_name(arch, variant="imagenet"), name="model",
                                     serialization_format="pickle", registered_model_name=f"imagenet-{arch}",
                                     pip_requirements=["torch"])
    return run.info.run_id


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("detection")


@pytest.fixture(scope="module")
def source_run(workdir) -> str:
    return register_imagenet_net(f"sqlite:///{workdir / 'mlflow.db'}")


@pytest.fixture(scope="module")
def grid(workdir, voc_devkit, source_run) -> Path:
    """examples/voc2007-detection.yaml, pointed at the generated set, ResNet-18 from the registry, 4 iterations."""
    proc = resnetctl(workdir, "prepare", "voc2007", "--source", str(voc_devkit), "--root", str(workdir / "voc"))
    assert proc.returncode == 0, proc.stderr
    spec = yaml.safe_load((ROOT / "examples" / "voc2007-detection.yaml").read_text())
    spec["dataset"]["path"] = str(workdir / "voc")
    spec["grid"]["depth"] = [18]
    spec["train"] = {"init": "models:/imagenet-resnet18-B/1", **TINY}
    spec["resources"] = {"workers_per_cell": 1, "use_gpu": False, "cpus_per_worker": 1, "max_concurrent_cells": 1}
    path = workdir / "voc2007-detection.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def submitted(workdir, grid):
    proc = resnetctl(workdir, "submit", str(grid))
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def test_submit_trains_the_detector_logs_map_per_evaluation_and_registers_it(workdir, submitted, source_run):
    from mlflow.tracking import MlflowClient

    assert "done faster-rcnn-resnet18-B-voc2007-s0" in submitted.stderr
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("voc2007-detection")
    (run,) = client.search_runs([experiment.experiment_id])
    tags, params = run.data.tags, run.data.params
    assert run.info.status == "FINISHED" and tags[cv.TAG_STATUS] == cv.STATUS_FINISHED
    assert tags[cv.TAG_CELL_KIND] == cv.KIND_DETECTION and tags[cv.TAG_ARCH] == "resnet18-B"
    assert tags[cv.TAG_BACKBONE_INIT] == "models:/imagenet-resnet18-B/1" and tags[cv.TAG_SOURCE_RUN_ID] == source_run
    assert params[cv.PARAM_TRAIN_SPLITS] == "2007_trainval" and params[cv.PARAM_TRAIN_IMAGES] == "6"
    history = client.get_metric_history(run.info.run_id, cv.M_MAP_VOC07)
    assert [m.step for m in history] == [1, 2]  # eval_every 1: both epochs (3 + 1 iterations)
    assert all(0.0 <= m.value <= 100.0 for m in history)
    assert client.get_metric_history(run.info.run_id, cv.M_TEST_IMAGES)[-1].value == 4
    (version,) = client.search_model_versions(f"run_id = '{run.info.run_id}'")
    assert version.name == "voc2007-faster-rcnn-resnet18-B"
    assert list((workdir / "results").rglob("state.pt"))


def test_a_resubmit_trains_nothing_and_the_report_prints_table_7(workdir, grid, submitted):
    again = resnetctl(workdir, "submit", str(grid))
    assert again.returncode == 0 and "1 already finished, 0 to run" in again.stderr
    report = resnetctl(workdir, "report", "--grid", "voc2007-detection")
    assert report.returncode == 0, report.stderr
    out = report.stdout
    assert "Table 7: Faster R-CNN on PASCAL VOC, mAP@0.5 (%)" in out
    row = next(line for line in out.splitlines() if line.startswith("| resnet18-B |"))
    assert "imagenet-resnet18-B v1" in row and "(n=1)" in row
    assert "| ResNet-101 | ImageNet (paper) | – | 76.40 |" in out and "| VGG-16 |" in out
    assert "departure: voc2007: iterations 4 (paper: 80000)" in out


def test_a_backbone_the_registry_lacks_or_that_does_not_fit_is_refused_before_training(workdir, source_run):
    from orchestrator.detection_spec import expand_detection_cells, parse_detection_grid
    from orchestrator.detection_tracking import BackboneInitError, backbone_source, load_backbone_state

    uri = f"sqlite:///{workdir / 'mlflow.db'}"

    def cell(depth=18, **train):
        data = {"name": "t", "task": "detection", "dataset": {"name": "voc2007", "path": str(workdir / "voc")},
                "grid": {"depth": [depth]}, "train": {**TINY, **train}}
        return expand_detection_cells(parse_detection_grid(data))[0]

    found = backbone_source(uri, cell(init="models:/imagenet-resnet18-B/1"))
    assert found == {cv.TAG_SOURCE_MODEL: "models:/imagenet-resnet18-B/1", cv.TAG_SOURCE_RUN_ID: source_run,
                     cv.TAG_SOURCE_GRID: "imagenet-table3"}
    with pytest.raises(BackboneInitError, match="is not in the model registry .* imagenet-resnet18-B"):
        backbone_source(uri, cell(init="models:/imagenet-resnet18-B/7"))
    with pytest.raises(BackboneInitError, match="it is a resnet18-B, and the cell's backbone is resnet34-B"):
        backbone_source(uri, cell(34, init="models:/imagenet-resnet18-B/1"))
    with pytest.raises(BackboneInitError, match="set train.normalization: pixel_mean"):
        backbone_source(uri, cell(init="models:/imagenet-resnet18-B/1", normalization="channel"))
    assert backbone_source(uri, cell(init="scratch")) == {}
    state = load_backbone_state(uri, "models:/imagenet-resnet18-B/1")
    assert "layer4.1.conv2.weight" in state and "fc.weight" in state
