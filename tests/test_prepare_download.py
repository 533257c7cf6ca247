"""`prepare cifar10 --download` through torchvision's real downloader, from a loopback HTTP server.

No network here: the test packs a small archive in the official layout (`cifar-10-python.tar.gz`
holding `cifar-10-batches-py/`), serves it on 127.0.0.1 and points torchvision's CIFAR10 URL and
checksums at it. Everything else is the code path a networked machine runs.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import pickle
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from orchestrator.cli import main

PER_BATCH, TEST, VAL = 12, 10, 8


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _write_archive(folder: Path) -> dict:
    """The official archive layout; returns the checksums torchvision's CIFAR10 checks."""
    rng = np.random.default_rng(0)
    batches = folder / "src" / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    names = [f"data_batch_{b}" for b in range(1, 6)] + ["test_batch"]
    for name in names:
        n = TEST if name == "test_batch" else PER_BATCH
        entry = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": rng.integers(0, 10, n).tolist()}
        (batches / name).write_bytes(pickle.dumps(entry, protocol=2))
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (batches / "batches.meta").write_bytes(pickle.dumps({"label_names": classes}, protocol=2))
    archive = folder / "www" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(batches, arcname="cifar-10-batches-py")
    md5 = {name: _md5(batches / name) for name in names}
    return {
        "tgz_md5": _md5(archive),
        "train_list": [[name, md5[name]] for name in names[:5]],
        "test_list": [["test_batch", md5["test_batch"]]],
        "meta": {"filename": "batches.meta", "key": "label_names", "md5": _md5(batches / "batches.meta")},
    }


@pytest.fixture()
def cifar_mirror(tmp_path, monkeypatch):
    """A loopback HTTP server holding the archive; torchvision's CIFAR10 pointed at it."""
    from torchvision.datasets import CIFAR10

    sums = _write_archive(tmp_path)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "www"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/cifar-10-python.tar.gz"
    monkeypatch.setattr(CIFAR10, "url", url)
    for key, value in sums.items():
        monkeypatch.setattr(CIFAR10, key, value)
    yield tmp_path, url
    server.shutdown()
    server.server_close()


def _prepare(root: Path, *extra: str):
    args = ["prepare", "cifar10", "--root", str(root), "--download", "--val-size", str(VAL), "--json", *extra]
    return CliRunner().invoke(main, args)


def test_download_fetches_checks_extracts_and_prepares(cifar_mirror):
    folder, _ = cifar_mirror
    root = folder / "cifar10"
    result = _prepare(root)
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)  # progress went to stderr
    counts = {name: info["count"] for name, info in manifest["splits"].items()}
    assert counts == {"train": 5 * PER_BATCH - VAL, "val": VAL, "trainval": 5 * PER_BATCH, "test": TEST}
    assert (folder / "cifar10-raw" / "cifar-10-python.tar.gz").is_file()  # beside the root, as the help says
    assert (folder / "cifar10-raw" / "cifar-10-batches-py" / "data_batch_1").is_file()
    assert sorted(p.name for p in root.glob("*.beton")) == ["test.beton", "train.beton", "trainval.beton", "val.beton"]
    # a second run finds the verified archive and does not fetch it again
    again = _prepare(folder / "again", "--source", str(folder / "cifar10-raw"))
    assert again.exit_code == 0, again.output


def test_a_corrupt_download_is_refused_and_writes_nothing(cifar_mirror, monkeypatch):
    from torchvision.datasets import CIFAR10

    folder, _ = cifar_mirror
    monkeypatch.setattr(CIFAR10, "tgz_md5", "0" * 32)
    root = folder / "cifar10"
    result = _prepare(root)
    assert result.exit_code == 2
    assert "downloading cifar10 failed" in result.output
    assert not root.exists() or not list(root.glob("*.beton"))


def test_an_unreachable_mirror_is_one_clear_error(cifar_mirror, monkeypatch):
    from torchvision.datasets import CIFAR10

    folder, url = cifar_mirror
    monkeypatch.setattr(CIFAR10, "url", url.replace("cifar-10-python", "missing"))
    result = _prepare(folder / "cifar10")
    assert result.exit_code == 2
    assert "downloading cifar10 failed" in result.output and "404" in result.output
