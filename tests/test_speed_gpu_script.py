"""`make bench-gpu` cannot rot: its CPU dry run (tiny sizes, one step per row) runs every row but the
compiled ResNet-50 and the two-GPU one, and prints one JSON line of rows. Its numbers are not checked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_check_script_runs_every_row_on_the_cpu():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--dry-run", "--json"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["dry_run"] is True
    names = [row["what"] for row in report["rows"]]
    assert names[:2] == ["ResNet-50, fp32", "ResNet-50, bf16 + channels_last"]
    assert any("packed" in name for name in names) and any("epoch" in name for name in names)
    assert all(row["value"] > 0 for row in report["rows"])
