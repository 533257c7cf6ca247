"""The grid file -> GridSpec -> cells: presets, overrides, axes, ids, and the paper's example grids."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from orchestrator.expand import count_cells, expand_cells
from orchestrator.spec import GridError, TrainOverrides, load_grid
from training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def write_grid(tmp_path: Path, body: str, name: str = "grid.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


BASE = """\
name: t
dataset: {name: cifar10, path: data/c10}
grid:
  depth: [20, 110]
  shortcut: [plain, A]
"""


def test_every_training_field_can_be_overridden_and_says_what_it_does():
    for name, info in TrainConfig.model_fields.items():
        assert info.description, f"TrainConfig.{name} has no description"
        assert TrainOverrides.model_fields[name].description == info.description


@pytest.mark.parametrize(("field", "value", "message"), [
    ("lr_milestones", "[0, 5]", "grid.yaml:7: train.lr_milestones[0]: must be greater than or equal to 1"),
    ("num_workers", "-1", "grid.yaml:7: train.num_workers: must be greater than or equal to 0"),
    ("loader", "dali", "grid.yaml:7: train.loader: must be 'ffcv', 'torch' or 'device'"),
])
def test_training_bounds_and_vocabularies_come_from_the_config(tmp_path, field, value, message):
    with pytest.raises(GridError, match=re.escape(message)):
        load_grid(write_grid(tmp_path, BASE + f"train:\n  {field}: {value}\n"))


@pytest.mark.parametrize(
    ("example", "count", "some_names"),
    [
        ("quickstart.yaml", 4, {"plain8-digits-s0", "resnet20-A-digits-s0"}),
        ("cifar10-table6.yaml", 15, {"plain56-cifar10-s0", "plain110-cifar10-s0", "resnet110-A-cifar10-s4",
                                 "resnet1202-A-cifar10-s0"}),
        ("imagenet-table3.yaml", 11, {"plain18-imagenet-s0", "resnet34-C-imagenet-s0", "resnet152-B-imagenet-s0"}),
    ],
)
def test_examples_expand(example, count, some_names):
    spec = load_grid(EXAMPLES / example)
    cells = expand_cells(spec)
    names = [cell.name for cell in cells]
    assert len(cells) == count == count_cells(spec)
    assert len(set(names)) == count and len({c.cell_id for c in cells}) == count
    assert some_names <= set(names)


def test_quickstart_is_small_and_local():
    spec = load_grid(EXAMPLES / "quickstart.yaml")
    assert spec.dataset.name == "digits" and spec.dataset.path == Path.cwd() / "data" / "digits"
    assert spec.resources.workers_per_cell == 1 and spec.resources.max_concurrent_cells == 2
    assert not spec.resources.use_gpu
    for cell in expand_cells(spec):
        assert cell.variant == "cifar" and cell.depth <= 20
        assert cell.train.epochs is not None and cell.train.epochs <= 5 and cell.train.iterations is None


def test_cifar_preset_and_warmup(tmp_path):
    cells = {c.name: c for c in expand_cells(load_grid(write_grid(tmp_path, BASE)))}
    r20, r110 = cells["resnet20-A-cifar10-s0"].train, cells["resnet110-A-cifar10-s0"].train
    for train in (r20, r110):
        assert (train.batch_size, train.lr, train.momentum, train.weight_decay) == (128, 0.1, 0.9, 1e-4)
        assert train.iterations == 64_000 and train.epochs is None and train.lr_milestones == (32_000, 48_000)
    assert r20.warmup_lr is None and r20.warmup_iterations == 0
    assert (r110.warmup_lr, r110.warmup_iterations, r110.warmup_until_train_err) == (0.01, 2000, 80.0)
    assert cells["plain110-cifar10-s0"].train.warmup_lr == 0.01


def test_imagenet_preset_and_milestones_turn_plateau_off(tmp_path):
    body = "name: t\ndataset: {name: imagenet, path: d}\ngrid: {depth: [34]}\n"
    (cell,) = expand_cells(load_grid(write_grid(tmp_path, body)))
    assert cell.arch == "resnet34-B" and cell.variant == "imagenet"
    t = cell.train
    assert (t.batch_size, t.lr, t.iterations, t.lr_on_plateau, t.eval_protocol) == (256, 0.1, 600_000, True, "10crop")
    assert t.lighting == 0.1  # the paper's "standard color augmentation in [21]"
    body += "train: {epochs: 90, lr_milestones: [30, 60]}\n"
    (cell,) = expand_cells(load_grid(write_grid(tmp_path, body)))
    assert cell.train.epochs == 90 and cell.train.iterations is None
    assert cell.train.lr_milestones == (30, 60) and not cell.train.lr_on_plateau


def test_schedule_override_keeps_milestone_fractions(tmp_path):
    spec = load_grid(write_grid(tmp_path, BASE + "train: {epochs: 20}\n"))
    for cell in expand_cells(spec):
        assert cell.train.epochs == 20 and cell.train.iterations is None
        assert cell.train.lr_milestones == (10, 15)  # 32k/64k and 48k/64k of 20 epochs
    spec = load_grid(write_grid(tmp_path, BASE + "train: {iterations: 1000}\n"))
    assert {c.train.lr_milestones for c in expand_cells(spec)} == {(500, 750)}


def test_training_field_axis_and_labels(tmp_path):
    spec = load_grid(write_grid(tmp_path, BASE + "  lr: [0.1, 0.05]\n  seed: [0, 1]\n"))
    cells = expand_cells(spec)
    assert len(cells) == 16
    names = {c.name for c in cells}
    assert len(names) == 16
    assert "resnet20-A-cifar10-s1-lr0.05" in names
    cell = next(c for c in cells if c.name == "resnet20-A-cifar10-s1-lr0.05")
    assert cell.train.lr == 0.05 and dict(cell.axes) == {"depth": 20, "shortcut": "A", "seed": 1, "lr": 0.05}


def test_cell_ids_are_stable(tmp_path):
    first = {c.name: c.cell_id for c in expand_cells(load_grid(write_grid(tmp_path, BASE)))}
    again = {c.name: c.cell_id for c in expand_cells(load_grid(write_grid(tmp_path, BASE)))}
    assert first == again
    # resources change where a cell runs, not what it trains
    more = BASE + "resources: {workers_per_cell: 2, max_concurrent_cells: 3}\n"
    assert {c.name: c.cell_id for c in expand_cells(load_grid(write_grid(tmp_path, more)))} == first
    # one more value on an axis adds cells and keeps the old ones' ids
    wider = BASE.replace("[20, 110]", "[20, 110, 32]")
    grown = {c.name: c.cell_id for c in expand_cells(load_grid(write_grid(tmp_path, wider)))}
    assert len(grown) == 6 and all(grown[name] == cell_id for name, cell_id in first.items())
    # a training override is part of what is trained
    changed = {c.name: c.cell_id for c in expand_cells(load_grid(write_grid(tmp_path, BASE + "train: {lr: 0.2}\n")))}
    assert set(changed) == set(first) and not set(changed.values()) & set(first.values())


def test_cells_round_trip_through_dicts():
    from orchestrator.cells import Cell

    for cell in expand_cells(load_grid(EXAMPLES / "cifar10-table6.yaml")):
        back = Cell.from_dict(json.loads(json.dumps(cell.to_dict())))
        assert back == cell and back.cell_id == cell.cell_id


def test_dataset_axis_needs_a_path_per_dataset(tmp_path):
    body = """\
    name: t
    dataset:
      paths: {cifar10: d/c10, cifar100: d/c100}
    grid:
      depth: [20]
      dataset: [cifar10, cifar100]
    """
    spec = load_grid(write_grid(tmp_path, body))
    cells = expand_cells(spec)
    assert [(c.dataset, Path(c.dataset_path).name) for c in cells] == [("cifar10", "c10"), ("cifar100", "c100")]
    assert spec.dataset.name == "cifar10"
    with pytest.raises(GridError, match=r"grid.yaml:3: dataset.paths.cifar100: required"):
        load_grid(write_grid(tmp_path, body.replace(", cifar100: d/c100", "")))


def test_relative_paths_resolve_against_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "grids").mkdir()
    grid = write_grid(tmp_path / "grids", BASE)
    monkeypatch.chdir(tmp_path)
    assert load_grid(grid).dataset.path == tmp_path / "data" / "c10"  # not grids/data/c10


def test_grid_refuses_what_the_model_builder_refuses_with_its_reason(tmp_path):
    from models.arch import ArchError, resolve_arch

    body = BASE.replace("depth: [20, 110]", "depth: [21]")
    with pytest.raises(ArchError) as built:
        resolve_arch(21, variant="cifar")
    with pytest.raises(GridError) as loaded:
        load_grid(write_grid(tmp_path, body))
    assert str(loaded.value).endswith(f"grid.depth[0]: {built.value.problem}")


def test_grid_loading_imports_nothing_heavy(tmp_path):
    grid = write_grid(tmp_path, BASE)
    code = textwrap.dedent(f"""
        import sys
        from click.testing import CliRunner
        from orchestrator.cli import main
        from orchestrator.grid_loading import load_cells
        spec, cells = load_cells({str(grid)!r}, check_data=False)
        result = CliRunner().invoke(main, ["plan", {str(grid)!r}, "--no-check-data", "--json"])
        assert result.exit_code == 0, result.output
        heavy = sorted(m for m in ("torch", "ray", "mlflow", "ffcv", "numba", "sqlalchemy") if m in sys.modules)
        print(len(cells), heavy)
    """)
    # a fresh working directory: no ./mlflow.db whose finished runs `plan` would read to calibrate its estimate
    workdir = tmp_path / "fresh"
    workdir.mkdir()
    out = subprocess.run([sys.executable, "-c", code], cwd=workdir, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "4 []"


def test_cell_id_ignores_where_the_data_lies_and_the_resources():
    from dataclasses import replace

    from orchestrator.cells import Cell, Resources, TrainConfig

    cell = Cell(grid="g", arch="resnet20-A", depth=20, shortcut="A", variant="cifar", dataset="digits",
                dataset_path="/a/digits", seed=0, train=TrainConfig(batch_size=64, lr=0.1, epochs=2))
    assert replace(cell, dataset_path="/elsewhere/digits").cell_id == cell.cell_id
    assert replace(cell, resources=Resources(workers_per_cell=4)).cell_id == cell.cell_id
    assert replace(cell, seed=1).cell_id != cell.cell_id
    assert replace(cell, train=cell.train.model_copy(update={"lr": 0.05})).cell_id != cell.cell_id
