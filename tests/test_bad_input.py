"""Bad input is refused: every file in tests/bad_grids/ exits 2 with one message naming the field or path.

Each catalogue file starts with `# expect: <text>`: the one error line must contain it (`{cwd}`
stands for the working directory, since data paths are reported absolute). The whole catalogue
runs through the real CLI in one fresh interpreter, which then reports whether torch, Ray or
MLflow were imported and the working directory shows whether anything was written.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CATALOGUE = ROOT / "tests" / "bad_grids"
CASES = sorted(p.name for p in CATALOGUE.glob("*.yaml"))
HEAVY = ("torch", "ray", "mlflow", "ffcv", "numba", "sqlalchemy")

RUNNER = textwrap.dedent("""
    import json, sys
    from click.testing import CliRunner
    from orchestrator.cli import main

    results = {}
    runner = CliRunner()
    for name, args in json.loads(sys.argv[1]):
        result = runner.invoke(main, args)
        crash = result.exception if not isinstance(result.exception, SystemExit) else None
        results[name] = {"exit_code": result.exit_code, "stderr": result.stderr, "crash": repr(crash) if crash else None}
    ray_started = "ray" in sys.modules and sys.modules["ray"].is_initialized()
    heavy = [m for m in HEAVY if m in sys.modules]
    print(json.dumps({"results": results, "heavy": heavy, "ray_started": ray_started}))
""").replace("HEAVY", repr(HEAVY))


def expected(case: str) -> str:
    first = (CATALOGUE / case).read_bytes().split(b"\n", 1)[0].decode("ascii")
    assert first.startswith("# expect: "), f"{case}: the first line must be '# expect: <text>'"
    return first.removeprefix("# expect: ")


def _manifest(root: Path, dataset: str = "digits", splits=("train", "val", "test"), files=True, **extra) -> None:
    root.mkdir(parents=True)
    entries = {}
    for split in splits:
        entries[split] = {"count": 10, "file": f"{split}.beton"}
        if files:
            (root / f"{split}.beton").write_bytes(b"")
    manifest = {"dataset": dataset, "num_classes": 10, "image_size": 32, "classes": list("0123456789"),
                "splits": entries, **extra}
    (root / "manifest.json").write_text(json.dumps(manifest))


def make_workdir(root: Path) -> Path:
    """A working directory with the catalogue, one good prepared-data folder and the bad ones."""
    shutil.copytree(CATALOGUE, root / "grids")
    data = root / "data"
    _manifest(data / "digits")
    (data / "no_manifest").mkdir(parents=True)
    (data / "manifest_not_json").mkdir()
    (data / "manifest_not_json" / "manifest.json").write_text('{"dataset": "digits", ')
    _manifest(data / "manifest_lacks_splits")
    lacking = json.loads((data / "manifest_lacks_splits" / "manifest.json").read_text())
    del lacking["splits"]
    (data / "manifest_lacks_splits" / "manifest.json").write_text(json.dumps(lacking))
    _manifest(data / "split_file_missing")
    (data / "split_file_missing" / "val.beton").unlink()
    _manifest(data / "wrong_dataset", dataset="cifar10")
    _manifest(data / "no_train_split", splits=("test",))
    (data / "a_file").write_text("not a folder")
    _hostile_manifests(data)
    return root


def _hostile_manifests(data: Path) -> None:
    """Manifests a careless or hostile hand wrote: fields of the wrong type, a split file outside the folder,
    JSON nested past Python's recursion limit."""
    for folder, change in (("manifest_file_is_a_number", {"file": 5}),
                           ("manifest_file_outside", {"file": "../digits/train.beton"}),
                           ("manifest_count_not_a_number", {"count": "many"})):
        _manifest(data / folder)
        manifest = json.loads((data / folder / "manifest.json").read_text())
        manifest["splits"]["train"].update(change)
        (data / folder / "manifest.json").write_text(json.dumps(manifest))
    (data / "manifest_nested_too_deep").mkdir()
    (data / "manifest_nested_too_deep" / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)


def run_cli(workdir: Path, invocations: list[tuple[str, list[str]]]) -> dict:
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("RAY_ADDRESS", None)
    out = subprocess.run(
        [sys.executable, "-c", RUNNER, json.dumps(invocations)],
        cwd=workdir, env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def plan_run(tmp_path_factory):
    workdir = make_workdir(tmp_path_factory.mktemp("bad-input"))
    before = sorted(p.relative_to(workdir) for p in workdir.rglob("*"))
    invocations = [(case, ["plan", f"grids/{case}"]) for case in CASES]
    invocations += [
        ("good:quickstart", ["plan", str(ROOT / "examples" / "quickstart.yaml")]),
        ("good:too_many_cells --yes", ["plan", "grids/too_many_cells.yaml", "--yes", "--json"]),
        ("good:no data check", ["plan", "grids/data_missing_folder.yaml", "--no-check-data"]),
        ("missing grid file", ["plan", "grids/no-such-grid.yaml"]),
    ]
    report = run_cli(workdir, invocations)
    after = sorted(p.relative_to(workdir) for p in workdir.rglob("*"))
    return workdir, report, before, after


def test_catalogue_is_large_enough():
    data_cases = [c for c in CASES if c.startswith("data_")]
    assert len(CASES) - len(data_cases) >= 25 and len(data_cases) >= 5


# `plan` estimates a grid whose data is not prepared yet (a user plans before downloading); submit refuses it
PLAN_ACCEPTS = ("data_missing_folder.yaml", "data_second_dataset_missing.yaml")


@pytest.mark.parametrize("case", CASES)
def test_bad_input_exits_2_with_one_message(plan_run, case):
    workdir, report, _, _ = plan_run
    result = report["results"][case]
    assert result["crash"] is None, result["crash"]
    if case in PLAN_ACCEPTS:
        assert result["exit_code"] == 0, result
        assert "is not prepared yet" in result["stderr"] and str(workdir.resolve() / "data") in result["stderr"]
        return
    assert result["exit_code"] == 2, result
    lines = [line for line in result["stderr"].splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("Error: ")
    want = expected(case).replace("{cwd}", str(workdir.resolve()))
    assert want in lines[0]


def test_the_same_command_accepts_good_input(plan_run):
    _, report, _, _ = plan_run
    results = report["results"]
    for case in ("good:quickstart", "good:too_many_cells --yes", "good:no data check"):
        assert results[case]["exit_code"] == 0, (case, results[case])
    missing = results["missing grid file"]
    assert missing["exit_code"] == 2 and "no-such-grid.yaml" in missing["stderr"]


def test_bad_input_starts_nothing_and_writes_nothing(plan_run):
    workdir, report, before, after = plan_run
    assert report["heavy"] == [] and not report["ray_started"]
    assert before == after  # no mlflow.db, no mlruns/, no checkpoints, no 'pwned' from the object tag
    assert not (workdir / "pwned").exists()


@pytest.fixture(scope="module")
def submit_run(tmp_path_factory):
    """The same catalogue through `submit` and `run`, which would start Ray and MLflow on good input."""
    workdir = make_workdir(tmp_path_factory.mktemp("bad-submit"))
    before = sorted(p.relative_to(workdir) for p in workdir.rglob("*"))
    invocations = [(f"{command}:{case}", [command, f"grids/{case}"]) for command in ("submit", "run") for case in CASES]
    report = run_cli(workdir, invocations)
    after = sorted(p.relative_to(workdir) for p in workdir.rglob("*"))
    return workdir, report, before, after


def test_submit_and_run_refuse_the_catalogue_before_ray_or_mlflow(submit_run):
    workdir, report, before, after = submit_run
    for name, result in report["results"].items():
        case = name.split(":", 1)[1]
        lines = [line for line in result["stderr"].splitlines() if line.strip()]
        assert result["crash"] is None and result["exit_code"] == 2, (name, result)
        assert len(lines) == 1 and expected(case).replace("{cwd}", str(workdir.resolve())) in lines[0], (name, lines)
    assert report["heavy"] == [] and not report["ray_started"]
    assert before == after  # no mlflow.db, no mlruns/, no Ray storage


def test_the_installed_entry_point_exits_2(tmp_path):
    """Outside CliRunner too: the console script's own exit status and stderr."""
    workdir = make_workdir(tmp_path)
    script = Path(sys.executable).with_name("resnetctl")
    out = subprocess.run([str(script), "plan", "grids/depth_not_6n_plus_2.yaml"], cwd=workdir,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip() == (
        "Error: grids/depth_not_6n_plus_2.yaml:8: grid.depth[2]: 57 is not a valid CIFAR depth "
        "(6n+2: 20, 32, 44, 56, 110, 1202, ...)"
    )
