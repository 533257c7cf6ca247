"""The paper's learning rate: step milestones, the ResNet-110 warm-up, and ImageNet's plateau drops."""

from __future__ import annotations

import math
from typing import Any

from training.config import TrainConfig


class PresetSchedule:
    """The preset's learning rate: step milestones (in iterations or epochs), warm-up, plateau.

    Milestones are in the unit the schedule is given in (`iterations` or `epochs`). The
    ResNet-110 warm-up trains at `warmup_lr` until the running training error drops below
    `warmup_until_train_err` or `warmup_iterations` pass (Sec. 4.2). On plateau (ImageNet, Sec. 3.4)
    the rate is multiplied by `lr_gamma` when the validation error has not improved for
    `plateau_patience` epochs.
    """

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.by_iterations = cfg.iterations is not None
        self.plateau_drops = 0
        self.best_val = math.inf
        self.bad_epochs = 0
        self.warmup_done = cfg.warmup_lr is None

    def lr(self, iteration: int, epoch: int) -> float:
        if not self.warmup_done:
            if iteration < self.cfg.warmup_iterations:
                return float(self.cfg.warmup_lr)
            self.warmup_done = True
        position = iteration if self.by_iterations else epoch
        passed = sum(1 for m in self.cfg.lr_milestones if position >= m)
        return self.cfg.lr * self.cfg.lr_gamma ** (passed + self.plateau_drops)

    def observe_train_err(self, running_err: float) -> None:
        limit = self.cfg.warmup_until_train_err
        if not self.warmup_done and limit is not None and running_err < limit:
            self.warmup_done = True

    def observe_val_err(self, val_err: float) -> None:
        if not self.cfg.lr_on_plateau:
            return
        if val_err < self.best_val - 1e-9:
            self.best_val, self.bad_epochs = val_err, 0
            return
        self.bad_epochs += 1
        if self.bad_epochs >= self.cfg.plateau_patience:
            self.plateau_drops += 1
            self.bad_epochs = 0

    _STATE = ("plateau_drops", "best_val", "bad_epochs", "warmup_done")

    def state_dict(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self._STATE}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in self._STATE:
            setattr(self, key, state[key])
