"""Proof that the networks learn: a ResNet on real data (scikit-learn's digits) reaches a real error bound.

The other tests check that training runs, resumes and is tracked; this one checks that it *works*.
Chance is 90% error on 10 classes; resnet20-A reaches about 2-4% test error after 8 epochs with the
paper's recipe (SGD 0.1, momentum 0.9, wd 1e-4, /10 twice), about 25 s on two CPU threads.
"""

from __future__ import annotations

import pytest
import torch

from training.config import TrainConfig
from training.trainer import Trainer

ERROR_BOUND = 8.0  # percent; measured 3.3% (seed 0) on the digits test split


@pytest.mark.slow
def test_resnet20_learns_digits_to_a_real_error_bound(digits_root):
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # both of CI's cores: the test runs alone
    try:
        _learns(digits_root)
    finally:
        torch.set_num_threads(threads)


def _learns(digits_root):
    cfg = TrainConfig(batch_size=64, lr=0.1, epochs=8, lr_milestones=(5, 7), loader="torch", num_workers=0)
    trainer = Trainer(cfg, arch="resnet20-A", variant="cifar", dataset_path=str(digits_root), seed=0)
    history = []
    while not trainer.done:
        history.append(trainer.run_epoch())
    first, last = history[0], history[-1]
    assert first["train_err"] > 50.0, "the first epoch starts near chance: the bound below means something"
    assert last["train_err"] < first["train_err"] / 5
    assert last["test_err"] < ERROR_BOUND, [round(m["test_err"], 2) for m in history]
    assert last["test_top5_err"] <= last["test_err"]
