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
