"""The training loop without Ray: the preset schedule, atomic checkpoints, resume."""

from __future__ import annotations

import math

import pytest
import torch

from orchestrator import conventions as cv
from orchestrator.cells import Cell
from orchestrator.train_entry import trainer_for_cell
from training.checkpoint import CHECKPOINT_FILE, load_checkpoint, save_checkpoint
from training.config import TrainConfig
from training.schedule import PresetSchedule


def test_milestones_in_iterations_divide_the_rate():
    s = PresetSchedule(TrainConfig(batch_size=128, lr=0.1, iterations=64000, lr_milestones=(32000, 48000)))
    assert s.lr(0, 0) == pytest.approx(0.1)
    assert s.lr(31999, 99) == pytest.approx(0.1)
    assert s.lr(32000, 0) == pytest.approx(0.01)
    assert s.lr(48000, 0) == pytest.approx(0.001)


def test_milestones_in_epochs_follow_the_epoch():
    s = PresetSchedule(TrainConfig(batch_size=256, lr=0.1, epochs=90, lr_milestones=(30, 60)))
    assert s.lr(10**6, 29) == pytest.approx(0.1)
    assert s.lr(0, 30) == pytest.approx(0.01)
    assert s.lr(0, 60) == pytest.approx(0.001)


# the warm-up's error rule and cap: tests/test_warmup.py


def test_plateau_divides_after_patience_and_survives_a_state_round_trip():
    s = PresetSchedule(TrainConfig(batch_size=256, lr=0.1, epochs=100, lr_on_plateau=True, plateau_patience=2))
    for err in (50.0, 40.0, 41.0):
        s.observe_val_err(err)
    assert s.lr(0, 0) == pytest.approx(0.1)
    s.observe_val_err(40.5)
    assert s.lr(0, 0) == pytest.approx(0.01)
    restored = PresetSchedule(s.cfg)
    restored.load_state_dict(s.state_dict())
    assert restored.lr(0, 0) == pytest.approx(0.01)


def test_checkpoint_is_atomic(tmp_path):
    save_checkpoint(tmp_path, {"epoch": 3})
    assert load_checkpoint(tmp_path)["epoch"] == 3
    assert not list(tmp_path.glob("*.tmp"))
    torn = tmp_path / "torn"
    torn.mkdir()
    (torn / (CHECKPOINT_FILE + ".tmp")).write_bytes(b"half")
    with pytest.raises(FileNotFoundError, match="incomplete"):
        load_checkpoint(torn)


def test_epoch_metrics_and_iteration_budget(digits_cell):
    torch.set_num_threads(1)
    trainer = trainer_for_cell(digits_cell(epochs=None, iterations=5))
    assert trainer.steps_per_epoch == 3 and trainer.num_epochs == 2
    first = trainer.run_epoch()
    assert set(cv.EPOCH_METRICS) <= set(first)
    assert first[cv.M_ITERATION] == 3
    assert 0 <= first[cv.M_TEST_TOP5_ERR] <= first[cv.M_TEST_ERR] <= 100
    assert math.isfinite(first[cv.M_TRAIN_LOSS]) and first[cv.M_IMAGES_PER_S] > 0
    second = trainer.run_epoch()
    assert second[cv.M_ITERATION] == 5 and trainer.done
    responses = trainer.layer_responses(max_images=64)
    assert len(responses) == 7 and all(r > 0 for r in responses)  # resnet8: 3 + 2*2 3x3 convs


def test_resume_restores_weights_optimiser_schedule_and_position(digits_cell, tmp_path):
    torch.set_num_threads(1)
    first = trainer_for_cell(digits_cell(lr_milestones=(1,)))
    first.run_epoch()
    saved = first.state_dict()
    save_checkpoint(tmp_path, saved)

    resumed = trainer_for_cell(digits_cell(lr_milestones=(1,)))
    resumed.load_state_dict(load_checkpoint(tmp_path))
    assert (resumed.epoch, resumed.iteration) == (1, 3)
    assert resumed.train_loader.epoch == 1  # the shuffle continues with epoch 1's order
    for name, value in saved["model"].items():
        assert torch.equal(resumed.net.state_dict()[name], value), name
    momentum = [s["momentum_buffer"] for s in resumed.optimizer.state_dict()["state"].values()]
    expected = [s["momentum_buffer"] for s in saved["optimizer"]["state"].values()]
    assert momentum and all(torch.equal(a, b) for a, b in zip(momentum, expected, strict=True))
    assert resumed.curves == first.curves

    metrics = resumed.run_epoch()  # the second epoch only, at the rate after the epoch-1 milestone
    assert resumed.done and metrics[cv.M_ITERATION] == 6
    assert metrics[cv.M_LR] == pytest.approx(0.01)
    assert len(resumed.curves[cv.M_TEST_ERR]) == 2
    assert not torch.equal(resumed.net.conv1.weight, saved["model"]["conv1.weight"])


def test_checkpoint_of_another_cell_is_refused(digits_cell):
    trainer = trainer_for_cell(digits_cell())
    state = trainer.state_dict()
    other = trainer_for_cell(digits_cell(lr=0.05))
    with pytest.raises(ValueError, match="belongs to cell"):
        other.load_state_dict(state)


@pytest.mark.slow
def test_multiscale_evaluation_scores_every_paper_scale_mirrored(imagenet_root):
    from pipelines.augment import MULTISCALE_SIDES

    cfg = dict(batch_size=2, lr=0.1, epochs=1, loader="torch", num_workers=0, eval_protocol="multiscale",
               max_train_batches=1)
    cell = Cell(grid="t", arch="resnet18-B", depth=18, shortcut="B", variant="imagenet", dataset="imagenet",
                dataset_path=str(imagenet_root), seed=0, train=TrainConfig(**cfg))
    trainer = trainer_for_cell(cell)
    sides: list[int] = []
    trainer.net.register_forward_pre_hook(lambda _, args: sides.append(args[0].shape[-1]))
    err, top5 = trainer.evaluate(trainer.eval_loaders["val"])
    assert sorted(set(sides)) == list(MULTISCALE_SIDES) and len(sides) == 2 * 2 * len(MULTISCALE_SIDES)
    assert err in (0.0, 25.0, 50.0, 75.0, 100.0)  # 4 images (2 classes: top-5 cannot miss; tested below)


def test_top5_error_counts_the_labels_outside_the_five_best_scores():
    """10 classes, every image scored 0 > 1 > ... > 9: labels 1 and 4 are in the top 5, 5 and 9 are not."""
    from contextlib import nullcontext

    from training.tester import evaluate

    class Ranked(torch.nn.Module):
        def forward(self, images):
            return torch.arange(10.0).flip(0).repeat(images.shape[0], 1)

    batches = [(torch.zeros(2, 3, 4, 4), torch.tensor([1, 5])), (torch.zeros(2, 3, 4, 4), torch.tensor([4, 9]))]
    top1, top5 = evaluate(Ranked(), batches, eval_protocol="full", num_classes=10, device=torch.device("cpu"),
                          to_device=lambda images, labels: (images, labels), autocast=nullcontext)
    assert (top1, top5) == (100.0, 50.0)  # top-4 would read 75, top-6 25, top-1 100
