"""Fault: the driver (`resnetctl submit`, with the Ray it started) is SIGKILLed mid-grid.

The grid has two cells run one after the other. The whole process group of the submit is
killed once the first cell has finished and the second has a registered checkpoint. The
resubmit must rerun no finished cell (same run, same start time, same metrics, one model
version), resume the interrupted one in its own run from its checkpoint, and leave no run
RUNNING.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from orchestrator import conventions as cv

pytestmark = pytest.mark.slow

EPOCHS = 6  # a wide window: the kill must land after the second cell's first checkpoint and before its last epoch



def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env.update(MLFLOW_DISABLE_TELEMETRY="true", RAY_USAGE_STATS_ENABLED="0", COLUMNS="200")
    return env


def _submit_command(grid: Path) -> list[str]:
    return [sys.executable, "-c", "from orchestrator.cli import main; main()", "submit", str(grid)]


def _client(workdir: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")


def _store_ready(workdir: Path) -> bool:
    """The submit has created the schema and the experiment (read-only: an MlflowClient opened on a
    half-created SQLite store would try to create the schema too, racing the submit)."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{workdir / 'mlflow.db'}?mode=ro", uri=True)) as db:
            return db.execute("SELECT 1 FROM experiments WHERE name = 'fault-driver'").fetchone() is not None
    except sqlite3.Error:
        return False


def _runs(workdir: Path) -> list:
    if not _store_ready(workdir):
        return []
    client = _client(workdir)
    experiment = client.get_experiment_by_name("fault-driver")
    return client.search_runs([experiment.experiment_id])


def _history(client, run_id: str) -> dict[str, list[tuple[int, int, float]]]:
    return {key: sorted((m.step, m.timestamp, m.value) for m in client.get_metric_history(run_id, key))
            for key in cv.EPOCH_METRICS}


def _interruptible_moment(workdir: Path, checkpointed):
    """(finished run, interrupted run) once one cell is finished and the other has a registered checkpoint."""
    runs = _runs(workdir)
    finished = [r for r in runs if r.data.tags.get(cv.TAG_STATUS) == cv.STATUS_FINISHED]
    others = [r for r in runs if r.data.tags.get(cv.TAG_STATUS) != cv.STATUS_FINISHED]
    if len(finished) != 1 or len(others) != 1:
        return None
    other = others[0]
    if not checkpointed(workdir / "results", f"{other.info.run_name}-{other.data.tags[cv.TAG_CELL_ID]}"):
        return None
    return finished[0], other


def _kill_session(proc: subprocess.Popen) -> None:
    """SIGKILL the submit's process group, then make sure nothing of its session is left."""
    sid = os.getsid(proc.pid)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(60)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        left = []
        for p in psutil.process_iter(["pid"]):
            try:
                if os.getsid(p.pid) == sid:
                    left.append(p)
            except (ProcessLookupError, PermissionError, psutil.Error):
                pass
        if not left:
            return
        time.sleep(0.5)
    for p in left:  # never leave Ray processes behind, even if the assertion below fails
        p.kill()
    raise AssertionError(f"processes of the killed submit outlived it: {[p.pid for p in left]}")


def test_resubmit_after_a_killed_driver_reruns_nothing_finished_and_resumes_the_rest(tmp_path_factory, digits_root,
                                                                                     grid_file, wait_for, ray_cells):
    workdir = tmp_path_factory.mktemp("fault-driver")
    grid = grid_file(workdir / "grid.yaml", name="fault-driver", data=digits_root, seeds=(0, 1),
                     train={"epochs": EPOCHS})

    with open(workdir / "first.log", "w") as log:
        proc = subprocess.Popen(_submit_command(grid), cwd=workdir, env=_env(), stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        moment = wait_for(lambda: _interruptible_moment(workdir, ray_cells.checkpointed), timeout=480, alive=lambda: proc.poll() is None,
                          what="the moment to kill the grid (one cell finished, the other checkpointed)",
                          detail=lambda: (workdir / "first.log").read_text()[-3000:])
        killed_at_ms = int(time.time() * 1000)
    finally:
        _kill_session(proc)
    done_before, cut = moment

    client = _client(workdir)
    before = {r.info.run_id: r for r in _runs(workdir)}
    assert before[cut.info.run_id].info.status == "RUNNING"  # nobody closed it: the driver died hard
    done_history = _history(client, done_before.info.run_id)
    cut_history = _history(client, cut.info.run_id)
    cut_epochs_before = [step for step, _, _ in cut_history[cv.M_ITERATION]]
    assert cut_epochs_before and cut_epochs_before[-1] < EPOCHS, cut_epochs_before

    second = subprocess.run(_submit_command(grid), cwd=workdir, env=_env(), capture_output=True, text=True,
                            timeout=480)
    assert second.returncode == 0, second.stderr[-4000:]
    assert "2 cells, 1 already finished, 1 to run" in second.stderr

    after = {r.info.run_id: r for r in _runs(workdir)}
    assert set(after) == set(before), "a cell got a second run"
    assert all(r.info.status == "FINISHED" and r.data.tags[cv.TAG_STATUS] == cv.STATUS_FINISHED
               for r in after.values()), {r.info.run_name: r.info.status for r in after.values()}

    # the finished cell was not touched: same run, same start, same metric values and timestamps
    done_after = after[done_before.info.run_id]
    assert (done_after.info.start_time, done_after.info.end_time) == (done_before.info.start_time,
                                                                      done_before.info.end_time)
    assert _history(client, done_after.info.run_id) == done_history
    for run in after.values():
        versions = client.search_model_versions(f"name = '{cv.registered_model_name('digits', 'resnet8-A')}'")
        assert sum(v.run_id == run.info.run_id for v in versions) == 1

    # the interrupted cell finished in its own run: each epoch once, the epochs it had kept as they were
    cut_after = after[cut.info.run_id]
    assert cut_after.info.start_time == cut.info.start_time
    history = _history(client, cut_after.info.run_id)
    for key, values in history.items():
        assert [step for step, _, _ in values] == list(range(1, EPOCHS + 1)), (key, values)
        assert values[: len(cut_epochs_before)] == cut_history[key][: len(cut_epochs_before)], key
    assert all(ts > killed_at_ms for step, ts, _ in history[cv.M_ITERATION] if step > cut_epochs_before[-1])

    # and it resumed from its checkpoint: the resubmit's trial reported no epoch it had checkpointed
    results = workdir / "results"
    reported = [json.loads(line)["epoch"] for path in results.glob(f"tune-fault-driver/*{cut.data.tags[cv.TAG_CELL_ID]}*/result.json")
                for line in path.read_text().splitlines() if line.strip()]
    assert reported and reported[0] > 1, reported
