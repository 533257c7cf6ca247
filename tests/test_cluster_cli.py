"""`resnetctl cluster` and the job commands refuse what they cannot do: exit 2, one clear line, nothing started."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

RESNETCTL = str(Path(sys.executable).with_name("resnetctl"))


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RESNETCTL_LOCAL_CLUSTER"] = str(tmp_path / "no-cluster")
    return subprocess.run([RESNETCTL, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("verb", ["up", "down", "status"])
def test_cloud_clusters_are_left_to_ray_up(tmp_path, verb):
    result = _run(tmp_path, "cluster", verb)
    assert result.returncode == 2
    assert "only --local clusters are managed here" in result.stderr and "ray up cluster/configs/" in result.stderr
    assert not (tmp_path / "no-cluster").exists()


@pytest.mark.parametrize("verb", ["down", "status"])
def test_no_local_cluster_recorded(tmp_path, verb):
    result = _run(tmp_path, "cluster", verb, "--local")
    assert result.returncode == 2
    assert "no local cluster recorded in" in result.stderr


@pytest.mark.parametrize("args", [["status"], ["logs", "raysubmit_x"], ["cancel", "raysubmit_x"]])
def test_job_commands_need_a_cluster(tmp_path, args):
    result = _run(tmp_path, *args)
    assert result.returncode == 2
    assert "no cluster given: pass --address http://HEAD:8265 or set RAY_ADDRESS" in result.stderr


def test_ui_refuses_a_server_url_as_store(tmp_path):
    result = _run(tmp_path, "ui", "--store", "http://127.0.0.1:5000")
    assert result.returncode == 2
    assert "is already a tracking server" in result.stderr
