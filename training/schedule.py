"""The paper's learning rate: step milestones, the ResNet-110 warm-up, and ImageNet's plateau drops."""

from __future__ import annotations

import math
from typing import Any

import torch

from training.config import WARMUP_WINDOW, TrainConfig

# The warm-up's error rule (Sec. 4.2: "0.01 ... until the training error is below 80% (about 400
# iterations)") reads the error of the last WARMUP_WINDOW iterations (50), summed over every rank.
# Short, so it follows the network as it is now: a per-epoch running error still carries the ~90%
# of the first, untrained batches and crosses 80% hundreds of iterations after the network did.
# Not a single batch: 50 iterations at the paper's batch 128 are 6,400 images, whose error at 80%
# has a binomial spread of 0.5 points, so no lucky batch ends the warm-up early; and 50 is an
# eighth of the ~400 iterations the paper reports, so the switch lags the crossing by ~25.
# The ranks sum their window counts (one all-reduce, the only host sync of the rule) every
# WARMUP_CHECK_EVERY steps and at each epoch's end; all decide on the same sums, so all switch on
# the same iteration. Counts between checks stay on the device.
WARMUP_CHECK_EVERY = 10


class PresetSchedule:
    """The preset's learning rate: step milestones (in iterations or epochs), warm-up, plateau.

    Milestones are in the unit the schedule is given in (`iterations` or `epochs`). The
    ResNet-110 warm-up (Sec. 4.2) trains at `warmup_lr` until the training error of the last
    `WARMUP_WINDOW` iterations, over every rank, is below `warmup_until_train_err`;
    `warmup_iterations` (when > 0) is a safety cap that ends it regardless, and alone (no error
    threshold) gives a warm-up of fixed length. On plateau (ImageNet, Sec. 3.4) the rate is
    multiplied by `lr_gamma` when the validation error has not improved for `plateau_patience` epochs.

    The trainer feeds the rule: `count_batch` adds a batch's misclassified count on the device,
    and at each check `take_block` hands over this rank's counts since the last check, which the
    trainer sums over the ranks and passes to `observe_warmup`. The window holds only those summed
    counts, identical on every rank, so rank 0's `state_dict` resumes every rank exactly.
    """

    def __init__(self, cfg: TrainConfig):
        if cfg.warmup_lr is not None and not cfg.warmup_iterations and cfg.warmup_until_train_err is None:
            raise ValueError("a warm-up needs warmup_iterations or warmup_until_train_err")
        self.cfg = cfg
        self.by_iterations = cfg.iterations is not None
        self.plateau_drops = 0
        self.best_val = math.inf
        self.bad_epochs = 0
        self.warmup_done = cfg.warmup_lr is None
        self.warmup_ended_at: int | None = None  # the first iteration after the warm-up
        self.warmup_window: list[list[float]] = []  # [wrong, seen, steps] per check, summed over ranks
        self._block: torch.Tensor | None = None  # this rank's [wrong, seen] since the last check, on the device
        self._block_steps = 0

    # -- the rate -----------------------------------------------------------------------
    def lr(self, iteration: int, epoch: int) -> float:
        if not self.warmup_done:
            cap = self.cfg.warmup_iterations
            if not cap or iteration < cap:
                return float(self.cfg.warmup_lr)
            self._end_warmup(cap)
        position = iteration if self.by_iterations else epoch
        passed = sum(1 for m in self.cfg.lr_milestones if position >= m)
        return self.cfg.lr * self.cfg.lr_gamma ** (passed + self.plateau_drops)

    # -- the warm-up's error rule ---------------------------------------------------------
    @property
    def watching_error(self) -> bool:
        """Whether the error rule still decides: a warm-up with an error threshold is running."""
        return not self.warmup_done and self.cfg.warmup_until_train_err is not None

    def count_batch(self, wrong: torch.Tensor, seen: int) -> bool:
        """Add one batch's misclassified count (a device tensor) without a host sync; True when a check is due."""
        if self._block is None or self._block.device != wrong.device:
            self._block = torch.zeros(2, dtype=torch.float64, device=wrong.device)
        self._block[0] += wrong
        self._block[1] += seen
        self._block_steps += 1
        return self._block_steps >= WARMUP_CHECK_EVERY

    def take_block(self) -> tuple[list[float], int]:
        """This rank's [wrong, seen] since the last check (one host sync) and how many steps they cover."""
        steps, self._block_steps = self._block_steps, 0
        if self._block is None or not steps:
            return [0.0, 0.0], 0
        counts = self._block.tolist()
        self._block.zero_()
        return counts, steps

    def observe_warmup(self, wrong: float, seen: float, steps: int, iteration: int) -> None:
        """A check: `steps` iterations' counts summed over every rank, after `iteration` steps in all.

        The window keeps the newest checks that cover WARMUP_WINDOW iterations; once it is full and
        its error is below the threshold, the warm-up ends and step `iteration` runs at the base rate.
        """
        if not self.watching_error or steps <= 0:
            return
        self.warmup_window.append([float(wrong), float(seen), int(steps)])
        while len(self.warmup_window) > 1 and sum(c[2] for c in self.warmup_window[1:]) >= WARMUP_WINDOW:
            self.warmup_window.pop(0)
        wrong_sum, seen_sum, covered = (sum(c[i] for c in self.warmup_window) for i in range(3))
        if covered >= WARMUP_WINDOW and seen_sum > 0 and 100.0 * wrong_sum / seen_sum < self.cfg.warmup_until_train_err:
            self._end_warmup(iteration)

    def _end_warmup(self, iteration: int) -> None:
        self.warmup_done, self.warmup_ended_at = True, iteration
        self.warmup_window = []

    # -- plateau --------------------------------------------------------------------------
    def observe_val_err(self, val_err: float) -> None:
        if not self.cfg.lr_on_plateau:
            return
        if val_err < self.best_val - 1e-9:
            self.best_val, self.bad_epochs = val_err, 0
            return
        self.bad_epochs += 1
        limit = self.cfg.plateau_max_drops
        if self.bad_epochs >= self.cfg.plateau_patience and (limit is None or self.plateau_drops < limit):
            self.plateau_drops += 1
            self.bad_epochs = 0

    # -- state (plain Python values; the device block is empty at every checkpoint) --------
    _STATE = ("plateau_drops", "best_val", "bad_epochs", "warmup_done", "warmup_ended_at", "warmup_window")

    def state_dict(self) -> dict[str, Any]:
        state = {key: getattr(self, key) for key in self._STATE}
        state["warmup_window"] = [list(c) for c in self.warmup_window]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        defaults = {"warmup_ended_at": None, "warmup_window": []}  # checkpoints from before the window
        for key in self._STATE:
            setattr(self, key, state[key] if key in state else defaults[key])
        self.warmup_window = [list(c) for c in self.warmup_window]
        self._block_steps = 0
        if self._block is not None:
            self._block.zero_()
