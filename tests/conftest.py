"""Suite-wide settings (no telemetry, no usage stats, quiet Ray, non-interactive plotting) and shared fixtures."""

import os
import time

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# the suite must never pick up a developer's cluster or tracking server by accident
os.environ.pop("RAY_ADDRESS", None)
os.environ.pop("MLFLOW_TRACKING_URI", None)


# The tiny digits cell the end-to-end tests train unless they say otherwise: the torch loader in the
# worker's own process, batches of 64, 19 batches an epoch (the whole digits train split: an epoch
# takes a few seconds, so a fault test's kill lands inside one), one Ray Train worker x one CPU, one
# cell at a time.
TINY_TRAIN = {"epochs": 3, "batch_size": 64, "max_train_batches": 19, "loader": "torch", "num_workers": 0,
              "eval_protocol": "full"}
TINY_RESOURCES = {"workers_per_cell": 1, "cpus_per_worker": 1, "max_concurrent_cells": 1}
DIGITS_SPLIT_SEED = 3  # not the default 0, so a test can tell that the seed given is the one recorded


@pytest.fixture(scope="session")
def digits_root(tmp_path_factory):
    """One prepared digits folder for the whole session (split seed 3), shared read-only.

    Its files are made read-only, so a test that writes to them fails at once instead of changing
    what the tests after it read; a test that needs to change the data copies the folder first.
    """
    from pipelines import prepare_dataset

    root = tmp_path_factory.mktemp("digits") / "prepared"
    prepare_dataset("digits", root, seed=DIGITS_SPLIT_SEED, num_workers=1)
    for path in root.iterdir():
        path.chmod(0o444)
    return root


@pytest.fixture(scope="session")
def digits_cell(digits_root):
    """`digits_cell(**train)`: a resnet8-A Cell on the prepared digits, for the tests of the training loop without
    Ray: the torch loader in this process, batches of 64, 3 an epoch, 2 epochs; `train` changes that."""
    from orchestrator.cells import Cell
    from training.config import TrainConfig

    def make(**train):
        cfg = {"batch_size": 64, "lr": 0.1, "epochs": 2, "loader": "torch", "num_workers": 0, "eval_protocol": "full",
               "max_train_batches": 3, **train}
        return Cell(grid="t", arch="resnet8-A", depth=8, shortcut="A", variant="cifar", dataset="digits",
                    dataset_path=str(digits_root), seed=0, train=TrainConfig(**cfg))

    return make


def _overlay(defaults: dict, changes: dict | None) -> dict:
    merged = {**defaults, **(changes or {})}
    return {key: value for key, value in merged.items() if value is not None}


@pytest.fixture(scope="session")
def grid_file():
    """Writes a digits grid file and returns its path: `write(path, *, name, data, ...)`.

    The grid is depth x shortcut x seed (an empty seed list leaves that axis out), plus `axes` in the
    same block and `blocks` as further blocks (the grid is then their union). `train` and `resources`
    change the tiny digits cell (TINY_TRAIN, TINY_RESOURCES) key by key; a key given None is left out
    (a field that is an axis instead, say). `tracking_uri` adds a `tracking:` section.
    """
    import yaml

    def write(path, *, name: str, data, depths=(8,), shortcuts=("A",), seeds=(0,), axes: dict | None = None,
              blocks=(), train: dict | None = None, resources: dict | None = None,
              tracking_uri: str | None = None):
        block = {"depth": list(depths), "shortcut": list(shortcuts), **({"seed": list(seeds)} if seeds else {}),
                 **(axes or {})}
        grid = {
            "name": name,
            "dataset": {"name": "digits", "path": str(data)},
            "grid": [block, *blocks] if blocks else block,
            "train": _overlay(TINY_TRAIN, train),
            "resources": _overlay(TINY_RESOURCES, resources),
        }
        if tracking_uri is not None:
            grid["tracking"] = {"uri": tracking_uri}
        path.write_text(yaml.safe_dump(grid, sort_keys=False))
        return path

    return write


def _wait_for(predicate, *, timeout: float, interval: float = 0.1, alive=None, what: str = "the condition",
              detail=None):
    """Call `predicate` every `interval` seconds until it returns something true, and return that.

    Raises AssertionError naming `what` when `timeout` seconds pass first, or as soon as `alive()`
    returns False (the process whose work would make the predicate true has ended); `detail()`, if
    given, is added to the message (a log tail, the state seen so far).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if alive is not None and not alive():
            problem = f"gave up waiting for {what}: the watched process ended first"
        elif time.monotonic() >= deadline:
            problem = f"gave up waiting for {what}: not within {timeout:g} s"
        else:
            time.sleep(interval)
            continue
        raise AssertionError(problem if detail is None else f"{problem}\n{detail()}")


@pytest.fixture(scope="session")
def wait_for():
    """`wait_for(predicate, *, timeout, interval=0.1, alive=None, what=..., detail=None)`: poll until
    `predicate()` is true and return its value; AssertionError naming `what` on timeout or when
    `alive()` turns False first."""
    return _wait_for


# A cell trains in one of two kinds of Ray process, and checkpoints into one of two folders: a
# single-worker cell in its Tune trial (`ray::ImplicitFunc`, checkpoints under results/tune-GRID/CELL),
# a multi-worker cell in Ray Train workers (`RayTrainWorker`, checkpoints under results/CELL).
CELL_PROCESS_TITLES = ("RayTrainWorker", "ImplicitFunc")


def _checkpointed(results, cell: str = "*") -> "os.PathLike | None":
    """The folder of a cell (any, or the one whose folder is named `cell`) under `results` with a checkpoint
    Ray has registered (a restart resumes from it): a Train run's snapshot, or a Tune trial's checkpoint
    whose result Tune has logged; else None."""
    from pathlib import Path

    results = Path(results)
    for snapshot in results.glob(f"{cell}/checkpoint_manager_snapshot.json"):
        return snapshot.parent
    for trial in results.glob(f"tune-*/{cell}/"):
        log = trial / "result.json"
        if list(trial.glob("checkpoint_*/state.pt")) and log.is_file() and log.stat().st_size > 0:
            return trial
    return None


@pytest.fixture(scope="session")
def ray_cells():
    """`ray_cells.checkpointed(results, cell="*")`: a cell folder with a registered checkpoint (or None);
    `ray_cells.is_cell_process(cmdline)`: whether a process's command line is a process a cell trains in."""
    from types import SimpleNamespace

    return SimpleNamespace(checkpointed=_checkpointed,
                           is_cell_process=lambda cmdline: any(t in cmdline for t in CELL_PROCESS_TITLES))


@pytest.fixture(scope="session")
def verdicts_digits_grid(tmp_path_factory, grid_file, digits_root):
    """Issue 14's end-to-end grid, trained once per session: digits, depth [8, 20] x shortcut [plain, A] x seeds
    [0, 1] (TINY_TRAIN for 2 epochs: enough to learn, so seeds differ) with the grid claim "resnet8-A < plain8",
    submitted with `--until-decided
    --max-seeds 2` (it measures its verdicts once and, at the cap, adds no seed). Returns {"workdir", "grid",
    "name", "uri", "proc"}. Read it, or add experiments of your own to its store; never change its runs."""
    import yaml

    workdir = tmp_path_factory.mktemp("verdicts-grid")
    grid = grid_file(workdir / "verdicts.yaml", name="verdicts", data=digits_root, depths=(8, 20),
                     shortcuts=("plain", "A"), seeds=(0, 1), train={"epochs": 2},
                     resources={"max_concurrent_cells": 2})
    grid.write_text(yaml.safe_dump({**yaml.safe_load(grid.read_text()), "claims": ["resnet8-A < plain8"]},
                                   sort_keys=False))
    proc = _resnetctl(workdir, "submit", str(grid), "--until-decided", "--max-seeds", "2", timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return {"workdir": workdir, "grid": grid, "name": "verdicts", "uri": f"sqlite:///{workdir / 'mlflow.db'}",
            "proc": proc}


@pytest.fixture(scope="session")
def report_helpers():
    """test_report.py's helpers for other report tests: `_log_cell(client, experiment_id, ...)` writes a cell's
    run as the writers do, `_report(uri, *args)` runs `resnetctl report`, `_md_rows(text, title)` reads a
    Markdown table. Test files cannot import each other (--import-mode=importlib), so it is loaded by path."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("report_helpers", Path(__file__).with_name("test_report.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def imagenet_root(tmp_path_factory):
    """A prepared ImageNet-style folder: 2 classes, 3 train and 2 val JPEGs each (val labels 0, 0, 1, 1)."""
    import numpy as np
    from PIL import Image

    from pipelines import prepare_dataset

    sizes = [(300, 260), (260, 340), (320, 300)]  # (height, width) before the 256 max-side resize
    base = tmp_path_factory.mktemp("imagenet")
    rng = np.random.default_rng(0)
    for split, per_class in (("train", 3), ("val", 2)):
        for c, cls in enumerate(("n01440764", "n01443537")):
            (base / "raw" / split / cls).mkdir(parents=True)
            for k in range(per_class):
                h, w = sizes[k]
                # smooth colour ramps (JPEG-friendly) with a class-dependent tint
                yy, xx = np.mgrid[0:h, 0:w]
                pixels = np.stack([(yy * 255 // h), (xx * 255 // w), np.full_like(yy, 60 + 120 * c)], -1)
                pixels = (pixels + rng.integers(0, 8, size=pixels.shape)).clip(0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(base / "raw" / split / cls / f"{cls}_{k}.JPEG", quality=92)
    root = base / "prepared"
    prepare_dataset("imagenet", root, source=base / "raw", num_workers=1)
    return root


CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(scope="session")
def cifar10_layout():
    """Writes a small CIFAR-10 in the real `cifar-10-batches-py` pickle layout and returns its arrays:
    `write(parent, *, per_batch=100, test=100, seed=0, images=None) -> (train_x, train_y, test_x, test_y)`, the
    images N x 32 x 32 x 3 uint8 (random pixels, or `images(rng, first, count)`) and the labels int64, in file
    order (data_batch_1..5, test_batch)."""
    import pickle

    import numpy as np

    def random_images(rng, _first: int, count: int):
        return rng.integers(0, 256, size=(count, 32, 32, 3), dtype=np.uint8)

    def write(parent, *, per_batch: int = 100, test: int = 100, seed: int = 0, images=random_images):
        rng = np.random.default_rng(seed)
        folder = parent / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        train_x = images(rng, 0, 5 * per_batch)
        train_y = rng.integers(0, 10, size=5 * per_batch)
        test_x = images(rng, 5 * per_batch, test)
        test_y = rng.integers(0, 10, size=test)

        def dump(name, x, y):
            entry = {"batch_label": name, "labels": [int(v) for v in y], "filenames": [f"{k}.png" for k in range(len(x))],
                     "data": x.transpose(0, 3, 1, 2).reshape(len(x), 3072).copy()}  # rows of R, G, B planes
            with open(folder / name, "wb") as fh:
                pickle.dump(entry, fh, protocol=2)

        for b in range(5):
            part = slice(b * per_batch, (b + 1) * per_batch)
            dump(f"data_batch_{b + 1}", train_x[part], train_y[part])
        dump("test_batch", test_x, test_y)
        with open(folder / "batches.meta", "wb") as fh:
            pickle.dump({"label_names": CIFAR10_CLASSES, "num_cases_per_batch": per_batch, "num_vis": 3072}, fh,
                        protocol=2)
        return train_x, train_y.astype(np.int64), test_x, test_y.astype(np.int64)

    return write


# A VOCdevkit in VOC's layout: small JPEGs of flat-coloured boxes ("dog" red, "cat" blue) on noise, one or two
# objects each, some marked difficult; ImageSets/Main/{trainval,test}.txt. Boxes in the XML are 1-based inclusive.
_VOC_OBJECT = ("  <object><name>{name}</name><difficult>{difficult}</difficult><bndbox><xmin>{x0}</xmin>"
               "<ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>\n")


def _write_voc_year(devkit, year: str = "2007", sets: dict | None = None, seed: int = 0, first: int = 1):
    """Write VOC<year> under `devkit` (sets: {name: image count}); returns {image id: [(name, x0, y0, x1, y1)]}."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder = devkit / f"VOC{year}"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    written, n = {}, first - 1
    for voc_set, count in (sets or {"trainval": 6, "test": 4}).items():
        ids = []
        for _ in range(count):
            n += 1
            image_id = f"{year}_{n:06d}"
            h, w = int(rng.integers(64, 96)), int(rng.integers(72, 112))
            pixels = rng.integers(90, 140, size=(h, w, 3)).astype(np.uint8)
            objects, boxes = [], []
            for k in range(1 + n % 2):
                name, colour = (("dog", (200, 40, 40)), ("cat", (40, 40, 200)))[(n + k) % 2]
                bw, bh = int(rng.integers(16, w // 2)), int(rng.integers(16, h // 2))
                x0, y0 = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
                pixels[y0:y0 + bh, x0:x0 + bw] = colour
                objects.append(_VOC_OBJECT.format(name=name, difficult=int(k == 1 and n % 3 == 0), x0=x0 + 1,
                                                  y0=y0 + 1, x1=x0 + bw, y1=y0 + bh))
                boxes.append((name, x0 + 1, y0 + 1, x0 + bw, y0 + bh))
            Image.fromarray(pixels).save(folder / "JPEGImages" / f"{image_id}.jpg", quality=95)
            (folder / "Annotations" / f"{image_id}.xml").write_text(
                f"<annotation><filename>{image_id}.jpg</filename><size><width>{w}</width><height>{h}</height>"
                f"<depth>3</depth></size>\n{''.join(objects)}</annotation>\n")
            ids.append(image_id)
            written[image_id] = boxes
        (folder / "ImageSets" / "Main" / f"{voc_set}.txt").write_text("\n".join(ids) + "\n")
    return written


@pytest.fixture(scope="session")
def voc_devkit(tmp_path_factory):
    """A raw VOCdevkit (VOC2007: 6 trainval and 4 test images), shared read-only: copy it to change it."""
    devkit = tmp_path_factory.mktemp("voc") / "VOCdevkit"
    _write_voc_year(devkit)
    return devkit


@pytest.fixture(scope="session")
def write_voc_year():
    """`write_voc_year(devkit, year="2007", sets={"trainval": 6, "test": 4}, seed=0, first=1)`: a VOC<year> folder
    of generated images under `devkit`, numbered from `first`; returns {image id: [(class, x0, y0, x1, y1)]}."""
    return _write_voc_year


@pytest.fixture(scope="session")
def voc_root(voc_devkit, tmp_path_factory):
    """`voc_devkit` prepared as voc2007 (splits 2007_trainval, 2007_test), files read-only."""
    from pipelines.detection_prepare import prepare_detection

    root = tmp_path_factory.mktemp("voc-prepared") / "prepared"
    prepare_detection("voc2007", root, source=voc_devkit)
    for path in root.iterdir():
        path.chmod(0o444)
    return root


def _resnetctl(cwd, *args: str, timeout: int = 600):
    """`resnetctl ARGS` in a process of its own in `cwd`, as a user runs it (never the developer's Ray or store)."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env.update(MLFLOW_DISABLE_TELEMETRY="true", RAY_USAGE_STATS_ENABLED="0", COLUMNS="200")
    return subprocess.run([sys.executable, "-c", "from orchestrator.cli import main; main()", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _render_dom(url: str) -> str:
    """The page's DOM after headless Chromium ran its JavaScript (the MLflow UI is a single-page app)."""
    import shutil
    import subprocess

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Chromium is not installed: `make test` installs Debian's chromium package"
    out = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=20000",
                          "--dump-dom", url], capture_output=True, text=True, timeout=120)
    return out.stdout


@pytest.fixture(scope="session")
def render_dom():
    """`render_dom(url)`: the DOM headless Chromium built from the page at `url` (http:// or file://), as HTML."""
    return _render_dom


@pytest.fixture(scope="session")
def resnetctl():
    """`resnetctl(cwd, *args, timeout=600)`: the CLI in its own process in `cwd`; the CompletedProcess."""
    return _resnetctl


@pytest.fixture(scope="session")
def trained_digits_grid(tmp_path_factory, grid_file, digits_root):
    """A finished training grid, trained once per session: `trained` (plain8 and resnet8-A, seed 0, the
    TINY_TRAIN recipe) in a working directory of its own, whose ./mlflow.db holds its two finished runs and
    the registered models digits-plain8 v1 and digits-resnet8-A v1. Returns {"workdir", "grid", "name",
    "uri"}. Read it, or add experiments of your own to its store; never change its training runs."""
    workdir = tmp_path_factory.mktemp("trained-grid")
    grid = grid_file(workdir / "trained.yaml", name="trained", data=digits_root, shortcuts=("plain", "A"),
                     resources={"max_concurrent_cells": 2})
    proc = _resnetctl(workdir, "submit", str(grid))
    assert proc.returncode == 0, proc.stderr[-4000:]
    return {"workdir": workdir, "grid": grid, "name": "trained", "uri": f"sqlite:///{workdir / 'mlflow.db'}"}
