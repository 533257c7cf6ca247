"""ImageNet's plateau rule (Sec. 3.4) is explicit: which split decides it, the patience, how many drops."""

from __future__ import annotations

import pytest

from orchestrator.presets import preset
from training.config import TrainConfig
from training.schedule import PresetSchedule


def _schedule(**fields) -> PresetSchedule:
    return PresetSchedule(TrainConfig(batch_size=256, lr=0.1, epochs=100, lr_on_plateau=True, plateau_patience=2,
                                      **fields))


def test_plateau_drops_stop_at_the_cap():
    capped, free = _schedule(plateau_max_drops=2), _schedule()
    for _ in range(20):  # the error never improves: a plateau every 2 epochs
        capped.observe_val_err(50.0)
        free.observe_val_err(50.0)
    assert capped.plateau_drops == 2 and capped.lr(0, 0) == pytest.approx(0.001)
    assert free.plateau_drops == 9


def test_imagenet_preset_states_its_plateau_rule():
    values = preset("imagenet").for_depth(34)
    assert values["lr_on_plateau"] and values["plateau_max_drops"] == 3
    assert TrainConfig(**values).plateau_split == "val"  # the paper's choice, said in the report


def test_holdout_plateau_needs_a_holdout_split(digits_root):
    from training.trainer import Trainer

    cfg = TrainConfig(batch_size=64, lr=0.1, epochs=1, lr_on_plateau=True, plateau_split="holdout", loader="torch",
                      num_workers=0)
    with pytest.raises(ValueError, match="reads the holdout error"):
        Trainer(cfg, arch="resnet8-A", variant="cifar", dataset_path=str(digits_root), seed=0)


def test_report_protocol_line_says_the_plateau_rule():
    from orchestrator import conventions as cv
    from orchestrator.report.records import RunRecord
    from orchestrator.report.tables import _training_words

    params = {cv.param_train("lr_on_plateau"): "True", cv.param_train("plateau_patience"): "5",
              cv.param_train("plateau_max_drops"): "3", cv.param_train("plateau_split"): "val",
              cv.param_train("lr_gamma"): "0.1"}
    run = RunRecord("r", "resnet34-B-imagenet-s0", "1", "FINISHED", 0, 1, params=params,
                    metrics={cv.M_PLATEAU_DROPS: 2.0})
    words = _training_words([run])
    assert "after 5 epochs without a lower val top-1 error" in words and "at most 3 drops" in words
    assert "val is also the test set" in words and "drops made: 2" in words


def test_imagenet_holdout_split_decides_the_plateau(imagenet_root, tmp_path):
    """`prepare imagenet --holdout-size N` sets N training images apart; plateau_split: holdout reads them."""
    import json

    from pipelines import prepare_dataset
    from training.trainer import Trainer

    raw = imagenet_root.parent / "raw"
    manifest = prepare_dataset("imagenet", tmp_path / "held", source=raw, holdout_size=2, num_workers=1,
                               mean_sample=4)
    assert manifest["splits"]["holdout"]["count"] == 2 and manifest["splits"]["train"]["count"] == 4
    assert json.loads((tmp_path / "held" / "manifest.json").read_text())["notes"]["holdout_size"] == 2
    cfg = TrainConfig(batch_size=2, lr=0.1, epochs=1, lr_on_plateau=True, plateau_split="holdout", loader="torch",
                      num_workers=0, max_train_batches=1, eval_protocol="center")
    trainer = Trainer(cfg, arch="resnet18-B", variant="imagenet", dataset_path=str(tmp_path / "held"), seed=0)
    metrics = trainer.run_epoch()
    assert 0.0 <= metrics["holdout_err"] <= 100.0 and "val_err" in metrics  # ImageNet: val is the test set
    assert trainer.schedule.best_val == metrics["holdout_err"]  # the plateau rule read the holdout split
