"""Files from elsewhere are read as data, never run (issue 13, item 6): CIFAR's pickles through a restricted
unpickler, checkpoints with torch's weights_only loader. Each payload here would create a marker file if
anything called what it names."""

from __future__ import annotations

import os
import pickle
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from orchestrator.cli import main
from pipelines.safe_pickle import UnsafePickleError, load_cifar_pickle
from training.checkpoint import CHECKPOINT_FILE, CheckpointError, load_checkpoint, rng_state, set_rng_state

ROOT = Path(__file__).resolve().parents[1]


class Payload:
    """Unpickled by a trusting unpickler, this runs `touch marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _cifar(parent: Path, planted: Payload | None = None, per_batch: int = 4) -> Path:
    """The cifar-10-batches-py layout (as tests/test_prepare_errors.py writes it), one batch carrying `planted`."""
    folder = parent / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{b}" for b in range(1, 6)] + ["test_batch"]:
        entry = {"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8), "labels": [1] * per_batch,
                 "batch_label": name, "filenames": [f"{name}_{i}.png".encode() for i in range(per_batch)]}
        if planted is not None and name == "data_batch_2":
            entry["batch_label"] = planted
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [str(i) for i in range(10)]}, protocol=2))
    return folder


def test_prepare_refuses_a_planted_cifar_pickle_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    _cifar(tmp_path / "raw", Payload(marker))
    result = CliRunner().invoke(main, ["prepare", "cifar10", "--source", str(tmp_path / "raw"),
                                       "--root", str(tmp_path / "out"), "--val-size", "2"])
    assert result.exit_code == 2, result.output
    assert not marker.exists()
    line = result.stderr.strip()
    assert line.count("\n") == 0 and "data_batch_2: unreadable cifar10 pickle (refused to unpickle it" in line
    assert "posix.system" in line and not (tmp_path / "out" / "manifest.json").exists()


def test_the_official_layout_still_prepares(tmp_path):
    _cifar(tmp_path / "raw")
    result = CliRunner().invoke(main, ["prepare", "cifar10", "--source", str(tmp_path / "raw"),
                                       "--root", str(tmp_path / "out"), "--val-size", "2"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "manifest.json").is_file()


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_cifar_structures_load_in_every_pickle_protocol(tmp_path, protocol):
    entry = {"data": np.arange(12, dtype=np.uint8).reshape(2, 6), "labels": [0, 1], "filenames": [b"a", "b"],
             "batch_label": "training batch 1 of 5", "num_vis": 3072}
    (tmp_path / "batch").write_bytes(pickle.dumps(entry, protocol=protocol))
    loaded = load_cifar_pickle(tmp_path / "batch")
    assert loaded["data"].tolist() == entry["data"].tolist() and loaded["labels"] == [0, 1]
    assert loaded["filenames"] == [b"a", "b"] and loaded["num_vis"] == 3072


@pytest.mark.parametrize("hostile", [
    pytest.param(lambda marker: Payload(marker), id="os.system"),
    pytest.param(lambda marker: np.array([Payload(marker)], dtype=object), id="object-array"),
    pytest.param(lambda marker: np.asmatrix(np.zeros((2, 2))), id="ndarray-subclass"),
    pytest.param(lambda marker: {"data": bytearray(b"x"), "f": eval}, id="builtin-function"),
])
def test_anything_beyond_cifars_structure_is_refused(tmp_path, hostile):
    marker = tmp_path / "pwned"
    (tmp_path / "batch").write_bytes(pickle.dumps({"data": hostile(marker)}, protocol=2))
    with pytest.raises(UnsafePickleError):
        load_cifar_pickle(tmp_path / "batch")
    assert not marker.exists()


def test_a_planted_checkpoint_is_refused_not_run(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"epoch": 3, "rng": Payload(marker)}, tmp_path / CHECKPOINT_FILE)
    with pytest.raises(CheckpointError, match="not loaded"):
        load_checkpoint(tmp_path)
    assert not marker.exists()


def test_rng_state_survives_the_restricted_loader(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.normal()  # a cached Gaussian is part of numpy's state
    torch.save({"rng": rng_state()}, tmp_path / "state.pt")
    expected = (random.random(), np.random.normal(), torch.rand(1).item())
    set_rng_state(torch.load(tmp_path / "state.pt", weights_only=True)["rng"])
    assert (random.random(), np.random.normal(), torch.rand(1).item()) == expected


def test_no_product_code_turns_the_restricted_loader_off():
    packages = [p for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").is_file() and p.name != "tests"]
    sources = [path for package in packages for path in package.rglob("*.py")]
    sources += [path for path in (ROOT / "benchmarks").rglob("*.py")]
    assert len(sources) > 30
    offenders = [str(path.relative_to(ROOT)) for path in sources
                 if re.search(r"weights_only\s*=\s*False", path.read_text(errors="replace"))]
    assert offenders == []
