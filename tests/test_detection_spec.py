"""Detection grids (`task: detection`): the paper's presets, overrides and axes, the prepared-data check, and the
cells they expand to (ids stable, apart from classification cells, whose ids `task:` does not touch)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from orchestrator.cells import cell_from_dict
from orchestrator.detection_cells import DetectionCell
from orchestrator.grid_loading import load_cells
from orchestrator.spec import GridError

ROOT = Path(__file__).resolve().parents[1]


def _grid(tmp_path, data, *, train=None, grid=None, resources=None, dataset="voc2007", name="det"):
    spec = {"name": name, "task": "detection", "dataset": {"name": dataset, "path": str(data)},
            "grid": grid or {"depth": [18], "shortcut": ["B"]}, "train": train or {}}
    if resources:
        spec["resources"] = resources
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_the_example_is_the_papers_voc07_recipe_from_the_registered_resnet101():
    spec, cells = load_cells(ROOT / "examples" / "voc2007-detection.yaml", check_data=False)
    (cell,) = cells
    assert isinstance(cell, DetectionCell) and cell.name == "faster-rcnn-resnet101-B-voc2007-s0"
    assert cell.detector == "faster-rcnn-resnet101-B" and cell.arch == "resnet101-B"
    train = cell.train
    assert train.init == "models:/imagenet-resnet101-B/1" and train.frozen_bn
    assert train.train_splits == ("2007_trainval", "2012_trainval") and train.test_split == "2007_test"
    assert (train.batch_size, train.lr, train.iterations, train.lr_milestones) == (1, 0.001, 80_000, (60_000,))
    assert (train.min_size, train.max_size, train.weight_decay, train.arrangement) == (600, 1000, 0.0005, "c4")


def test_a_shorter_schedule_keeps_the_milestone_at_the_same_fraction(tmp_path, voc_root):
    _, (cell,) = load_cells(_grid(tmp_path, voc_root, train={"iterations": 800, "train_splits": ["2007_trainval"]}))
    assert cell.train.lr_milestones == (600,)
    assert not cell.train.frozen_bn  # from scratch: BN trains


def test_training_fields_are_axes_with_their_own_cells_and_names(tmp_path, voc_root):
    path = _grid(tmp_path, voc_root, grid={"depth": [18, 34], "seed": [0], "lr": [0.01, 0.02]},
                 train={"train_splits": ["2007_trainval"]})
    _, cells = load_cells(path)
    assert [c.name for c in cells] == ["faster-rcnn-resnet18-B-voc2007-s0-lr0.01", "faster-rcnn-resnet18-B-voc2007-s0-lr0.02",
                                       "faster-rcnn-resnet34-B-voc2007-s0-lr0.01", "faster-rcnn-resnet34-B-voc2007-s0-lr0.02"]
    assert len({c.cell_id for c in cells}) == 4
    again = [cell_from_dict(c.to_dict()) for c in cells]
    assert again == cells and [c.cell_id for c in again] == [c.cell_id for c in cells]


def test_cell_ids_do_not_depend_on_where_the_data_lies(tmp_path, voc_root):
    first = load_cells(_grid(tmp_path, voc_root, train={"train_splits": ["2007_trainval"]}))[1][0]
    moved = tmp_path / "elsewhere"
    moved.symlink_to(voc_root, target_is_directory=True)
    second = load_cells(_grid(tmp_path, moved, train={"train_splits": ["2007_trainval"]}, name="det"))[1][0]
    assert first.dataset_path != second.dataset_path and first.cell_id == second.cell_id


def test_task_classification_leaves_classification_cells_and_their_ids_as_they_were(tmp_path, grid_file, digits_root):
    plain = grid_file(tmp_path / "a.yaml", name="same", data=digits_root)
    marked = tmp_path / "b.yaml"
    marked.write_text(yaml.safe_dump({**yaml.safe_load(plain.read_text()), "task": "classification"}))
    assert [c.cell_id for c in load_cells(plain)[1]] == [c.cell_id for c in load_cells(marked)[1]]


def test_splits_the_prepared_data_lacks_are_refused_naming_the_folder(tmp_path, voc_root):
    with pytest.raises(GridError, match=r"det.yaml:\d+: dataset.path: .* has no split '2012_trainval'") as caught:
        load_cells(_grid(tmp_path, voc_root))  # the preset's 07+12: this folder has VOC2007 only
    assert "prepared: 2007_trainval, 2007_test" in str(caught.value)
    with pytest.raises(GridError, match=r"train.test_split: .* has no split '2007_val'"):
        load_cells(_grid(tmp_path, voc_root, train={"train_splits": ["2007_trainval"], "test_split": "2007_val"}))


def test_classification_data_is_not_detection_data(tmp_path, digits_root):
    with pytest.raises(GridError, match="classification data, not a detection dataset"):
        load_cells(_grid(tmp_path, digits_root))


def test_more_workers_than_images_per_step_is_refused_on_the_workers(tmp_path, voc_root):
    with pytest.raises(GridError, match="resources.workers_per_cell: 1 images cannot be shared by 2 workers"):
        load_cells(_grid(tmp_path, voc_root, train={"train_splits": ["2007_trainval"]},  # the preset's batch 1
                         resources={"workers_per_cell": 2}))
    with pytest.raises(GridError, match="train.batch_size: 2 images cannot be shared by 4 workers"):
        load_cells(_grid(tmp_path, voc_root, train={"train_splits": ["2007_trainval"], "batch_size": 2},
                         resources={"workers_per_cell": 4}))


def test_loading_a_detection_grid_imports_neither_torch_nor_ray_nor_mlflow(tmp_path, voc_root):
    path = _grid(tmp_path, voc_root, train={"train_splits": ["2007_trainval"]})
    code = ("import sys; from orchestrator.grid_loading import load_cells; load_cells(sys.argv[1]); "
            "print([m for m in ('torch', 'ray', 'mlflow', 'numpy') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_plan_counts_the_backbone_over_the_images_of_the_schedule(tmp_path, voc_root):
    path = _grid(tmp_path, voc_root, train={"train_splits": ["2007_trainval"], "iterations": 30, "batch_size": 2})
    proc = subprocess.run([sys.executable, "-c", "from orchestrator.cli import main; main()", "plan", str(path),
                           "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    plan = yaml.safe_load(proc.stdout)
    (row,) = plan["cells"]
    assert plan["summary"]["kind"] == "detection" and row["train_images"] == 6 and row["epochs"] == 10.0
    assert row["compute_mult_adds"] == row["mult_adds_per_image"] * 60
