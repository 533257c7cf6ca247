"""`resnetctl submit` end to end on CPU: real Ray Tune + Ray Train + MLflow SQLite, tiny digits grids.

Each submit runs in its own process in a scratch working directory (as a user would run it),
so Ray starts and stops there and `./mlflow.db` and `./results` land in that directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from orchestrator import conventions as cv

pytestmark = pytest.mark.slow

# a second block of the first grid: one cell read through FFCV (its loaders compile with numba)
FFCV_BLOCK = {"depth": [8], "shortcut": ["A"], "seed": [1], "loader": ["ffcv"]}


@pytest.fixture(scope="module")
def write_grid(grid_file, digits_root):
    """This file's grids: depth 8 read by the torch loader (a `loader` axis, so FFCV_BLOCK can add an FFCV cell),
    2 epochs of a few batches, two cells at a time."""
    def write(folder: Path, name: str, *, shortcuts=("plain", "A"), workers=1, epochs=2, batches=3, blocks=()) -> Path:
        return grid_file(folder / f"{name}.yaml", name=name, data=digits_root, shortcuts=shortcuts,
                         axes={"loader": ["torch"]}, blocks=blocks,
                         train={"epochs": epochs, "max_train_batches": batches, "loader": None},
                         resources={"workers_per_cell": workers, "max_concurrent_cells": 2})

    return write


def resnetctl(cwd: Path, *args: str, timeout: int = 400) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env.update(MLFLOW_DISABLE_TELEMETRY="true", RAY_USAGE_STATS_ENABLED="0", COLUMNS="200")
    return subprocess.run([sys.executable, "-c", "from orchestrator.cli import main; main()", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def runs_of(workdir: Path, experiment: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    return client, ([] if exp is None else client.search_runs([exp.experiment_id]))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("submit")


@pytest.fixture(scope="module")
def first_submit(workdir, write_grid):
    grid = write_grid(workdir, "tiny", blocks=[FFCV_BLOCK])
    proc = resnetctl(workdir, "submit", str(grid))
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def test_submit_runs_every_cell_once_with_epochs_model_and_checkpoint(workdir, first_submit, ray_cells):
    import mlflow
    import torch

    assert "done resnet8-A-digits-s0-loadertorch" in first_submit.stderr
    assert "done plain8-digits-s0-loadertorch" in first_submit.stderr
    client, runs = runs_of(workdir, "tiny")
    assert sorted(r.info.run_name for r in runs) == ["plain8-digits-s0-loadertorch", "resnet8-A-digits-s0-loadertorch",
                                                     "resnet8-A-digits-s1-loaderffcv"]
    loaders = {r.info.run_name: r.data.params["train.loader"] for r in runs}
    assert loaders["resnet8-A-digits-s1-loaderffcv"] == "ffcv" and loaders["resnet8-A-digits-s0-loadertorch"] == "torch"
    for run in runs:
        assert run.info.status == "FINISHED" and run.data.tags[cv.TAG_STATUS] == "finished"
        assert run.data.tags[cv.TAG_GRID] == "tiny" and run.data.tags[cv.axis_tag("shortcut")] in ("plain", "A")
        for key in cv.EPOCH_METRICS:
            assert sorted(m.step for m in client.get_metric_history(run.info.run_id, key)) == [1, 2], key
        arch = run.data.tags[cv.TAG_ARCH]
        assert run.data.params[cv.PARAM_NUM_PARAMS] == "75290"  # 8 layers, option A and plain alike
        assert run.data.params[cv.PARAM_MULT_ADDS] == "12239488"  # one 32x32 image
        versions = client.search_model_versions(f"name = '{cv.registered_model_name('digits', arch)}'")
        assert sum(v.run_id == run.info.run_id for v in versions) == 1
        # single-worker cells train in their Tune trial: checkpoints under results/tune-tiny/<cell>
        folder = ray_cells.checkpointed(workdir / "results", f"{run.info.run_name}-{run.data.tags[cv.TAG_CELL_ID]}")
        assert folder and "tune-tiny" in str(folder) and list(folder.glob("checkpoint_*/state.pt")), folder
    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    try:
        model = mlflow.pytorch.load_model("models:/digits-resnet8-A/1")
    finally:
        mlflow.set_tracking_uri(None)
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).argmax(1).shape == (2,)


def test_resubmit_starts_no_training(workdir, first_submit):
    _, before = runs_of(workdir, "tiny")
    grid = workdir / "tiny.yaml"
    proc = resnetctl(workdir, "submit", str(grid))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "3 already finished, 0 to run" in proc.stderr
    _, after = runs_of(workdir, "tiny")
    key = lambda r: (r.info.run_id, r.info.end_time)  # noqa: E731
    assert sorted(map(key, after)) == sorted(map(key, before))


def test_adding_an_axis_value_runs_only_the_new_cells(workdir, first_submit, write_grid):
    client, before = runs_of(workdir, "tiny")
    grid = write_grid(workdir, "tiny", shortcuts=("plain", "A", "B"), blocks=[FFCV_BLOCK])
    proc = resnetctl(workdir, "submit", str(grid))
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "3 already finished, 1 to run" in proc.stderr
    _, after = runs_of(workdir, "tiny")
    old = {r.info.run_id: r.info.end_time for r in before}
    assert {r.info.run_id: r.info.end_time for r in after if r.info.run_id in old} == old
    new = sorted(r.info.run_name for r in after if r.info.run_id not in old)
    assert new == ["resnet8-B-digits-s0-loadertorch"]


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def test_ddp_cell_logs_once_and_survives_a_killed_worker(workdir, write_grid):
    """2 gloo workers train one cell; one is SIGKILLed after the first checkpoint, and Ray Train
    restarts the group from that checkpoint: every epoch is reported and logged exactly once."""
    epochs = 8
    grid = write_grid(workdir, "ddp", shortcuts=("A",), workers=2, epochs=epochs, batches=2)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    proc = subprocess.Popen([sys.executable, "-c", "from orchestrator.cli import main; main()", "submit", str(grid)],
                            cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    killed = None
    try:
        while proc.poll() is None and killed is None:
            # the snapshot is written once a checkpoint is registered: from then on a restart resumes
            if list((workdir / "results").glob("resnet8-A-digits-s0-*/checkpoint_manager_snapshot.json")):
                for pid in _descendants(proc.pid):
                    try:
                        if b"RayTrainWorker" in Path(f"/proc/{pid}/cmdline").read_bytes():
                            os.kill(pid, 9)
                            killed = pid
                            break
                    except OSError:
                        continue
            time.sleep(0.05)
        output, _ = proc.communicate(timeout=500)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output[-4000:]
    assert killed is not None, "the cell finished before a worker could be killed"

    client, runs = runs_of(workdir, "ddp")
    assert len(runs) == 1
    run = runs[0]
    for key in (cv.M_TRAIN_LOSS, cv.M_ITERATION):  # rank 0 alone logs, each epoch once, across the restart
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, key)) == list(range(1, epochs + 1))
    assert run.data.metrics[cv.M_ITERATION] == 2 * epochs  # 2 batches per epoch, both ranks in step
    assert run.data.params["resources.workers_per_cell"] == "2"
    versions = client.search_model_versions("name = 'digits-resnet8-A'")
    assert sum(v.run_id == run.info.run_id for v in versions) == 1
    # Tune saw epoch 1 once: the restarted workers resumed from the checkpoint, not from scratch
    results = [json.loads(line) for path in (workdir / "results").glob("tune-ddp/*/result.json")
               for line in path.read_text().splitlines() if line.strip()]
    reported = [r["epoch"] for r in results]
    assert reported.count(1) == 1 and max(reported) == epochs, reported


def test_an_invalid_grid_exits_2_before_anything_runs(tmp_path):
    grid = tmp_path / "bad.yaml"
    grid.write_text(textwrap.dedent("""\
        name: bad
        dataset: {name: digits, path: nowhere}
        grid: {depth: [8], shortcut: [Z]}
        """))
    proc = resnetctl(tmp_path, "submit", str(grid))
    assert proc.returncode == 2
    assert "shortcut" in proc.stderr
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "results").exists()


def test_submit_prints_resnetctl_lines_and_keeps_library_logs_in_a_file(workdir, first_submit):
    noise = ("Creating initial MLflow database tables", "Token authentication is enabled", " INFO ", " WARNING ")
    for line in first_submit.stderr.splitlines() + first_submit.stdout.splitlines():
        assert not any(word in line for word in noise), line
    logs = list((workdir / "results" / "logs").glob("submit-tiny-*.log"))
    assert logs and any("Creating initial MLflow database tables" in p.read_text() for p in logs)
    assert "library logs: " in first_submit.stderr


def test_every_run_carries_its_prepared_dataset(workdir, first_submit, digits_root):
    import json as json_

    client, runs = runs_of(workdir, "tiny")
    for run in runs:
        inputs = run.inputs.dataset_inputs
        assert len(inputs) == 1, run.info.run_name
        dataset = inputs[0].dataset
        assert dataset.name == "digits" and len(dataset.digest) == 16
        assert json_.loads(dataset.source)["uri"] == str(digits_root)
        assert json_.loads(dataset.profile)["splits"]["train"] > 0
        assert {t.key: t.value for t in inputs[0].tags}[cv.INPUT_CONTEXT_TAG] == cv.INPUT_CONTEXT_TRAINING
    assert len({r.inputs.dataset_inputs[0].dataset.digest for r in runs}) == 1  # one prepared folder, one digest


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def ui_server(workdir, first_submit, wait_for):
    """`resnetctl ui` on the tiny grid's store, as a user starts it; yields the grid link it prints."""
    import urllib.request

    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    printed = workdir / "ui.out"
    with printed.open("w") as out:  # a file, not a pipe nobody drains: the server shares this stdout
        proc = subprocess.Popen([sys.executable, "-c", "from orchestrator.cli import main; main()", "ui", "--port",
                                 str(port), "--grid", "tiny"], cwd=workdir, env=env, stdout=out,
                                stderr=subprocess.DEVNULL, text=True)

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    try:
        wait_for(lambda: printed.read_text().strip(), timeout=120, interval=0.5, alive=lambda: proc.poll() is None,
                 what="the link `resnetctl ui` prints")
        link = printed.read_text().splitlines()[0].strip()
        wait_for(healthy, timeout=180, interval=1, alive=lambda: proc.poll() is None, what="the MLflow UI")
        yield link, f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_ui_link_opens_the_grids_runs_in_the_model_training_view(workdir, ui_server, render_dom):
    link, base = ui_server
    client, _ = runs_of(workdir, "tiny")
    experiment_id = client.get_experiment_by_name("tiny").experiment_id
    assert link == f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    page = render_dom(link)
    for name in ("resnet8-A-digits-s0-loadertorch", "plain8-digits-s0-loadertorch"):
        assert name in page, f"{name} is not on the page the link opens"


def test_ui_lists_the_registered_models(ui_server, render_dom):
    _, base = ui_server
    page = render_dom(f"{base}/#/models")
    for name in ("digits-resnet8-A", "digits-plain8"):
        assert name in page
