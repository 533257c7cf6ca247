"""The ResNet-110 warm-up (Sec. 4.2): the error rule over a short window decides, the same on every rank.

The unit tests feed `PresetSchedule` the counts the trainer would; the DDP test runs the real
`Trainer` in two gloo processes whose data differ (rank 1's labels are random, so alone it would
never leave the warm-up) and checks that both switch rate on the same iteration and end with
identical weights. This file is also the DDP worker: `python tests/test_warmup.py RANK ...`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from orchestrator.expand import resolve_train
from training.config import WARMUP_WINDOW, TrainConfig
from training.schedule import WARMUP_CHECK_EVERY, PresetSchedule

WARM, BASE = 0.01, 0.1


def _schedule(**warmup) -> PresetSchedule:
    cfg = dict(batch_size=128, lr=BASE, iterations=64_000, warmup_lr=WARM, warmup_until_train_err=80.0)
    cfg.update(warmup)
    return PresetSchedule(TrainConfig(**cfg))


def _feed(schedule: PresetSchedule, errors: list[float], *, start: int = 0, steps: int = WARMUP_CHECK_EVERY,
          batch: int = 128) -> int:
    """One check per error (%): `steps` iterations of `batch` images summed over the ranks; the next iteration."""
    iteration = start
    for err in errors:
        iteration += steps
        seen = steps * batch
        schedule.observe_warmup(err / 100 * seen, seen, steps, iteration=iteration)
    return iteration


def test_a_full_window_below_the_threshold_ends_the_warmup_on_the_next_step():
    s = _schedule()
    at = _feed(s, [90.0] * 5 + [70.0] * 2)  # window (last 50 its): 90 90 90 70 70 -> 82%
    assert s.watching_error and s.lr(at, 0) == pytest.approx(WARM)
    at = _feed(s, [70.0], start=at)  # 90 90 70 70 70 -> 78%
    assert not s.watching_error and s.warmup_ended_at == at == 80
    assert s.lr(at - 1, 0) == s.lr(at, 0) == pytest.approx(BASE)


def test_a_window_not_yet_full_never_ends_it():
    s = _schedule()
    at = _feed(s, [0.0] * (WARMUP_WINDOW // WARMUP_CHECK_EVERY - 1))  # 40 iterations, all right
    assert s.watching_error and s.lr(at, 0) == pytest.approx(WARM)
    _feed(s, [0.0], start=at)
    assert not s.watching_error


def test_old_batches_leave_the_window_so_the_rule_does_not_lag():
    """The last 50 iterations read 74%; a running error since the start (90%) would keep warming up."""
    s = _schedule()
    at = _feed(s, [95.0] * 20)
    assert s.watching_error
    _feed(s, [60.0] * 3, start=at)  # window: 95 95 60 60 60
    assert s.warmup_ended_at == 230
    assert (95.0 * 200 + 60.0 * 30) / 230 > 80.0  # what the old running error read


def test_a_short_check_counts_for_the_steps_it_covers():
    """An epoch's last check covers fewer than WARMUP_CHECK_EVERY steps: the window counts iterations, not checks."""
    s = _schedule()
    at = _feed(s, [0.0] * 4)
    at = _feed(s, [0.0], start=at, steps=3)  # 43 iterations: not yet a window, however low the error
    assert s.watching_error
    at = _feed(s, [0.0], start=at, steps=7)
    assert not s.watching_error and s.warmup_ended_at == at == WARMUP_WINDOW


def test_the_iteration_cap_ends_a_warmup_the_rule_has_not():
    s = _schedule(warmup_iterations=400)
    _feed(s, [90.0] * 39)
    assert s.lr(399, 0) == pytest.approx(WARM)
    assert s.lr(400, 0) == pytest.approx(BASE) and s.warmup_ended_at == 400 and not s.watching_error
    _feed(s, [0.0] * 10, start=400)  # the rule no longer acts
    assert s.warmup_ended_at == 400


def test_the_cap_alone_is_a_fixed_length_warmup():
    s = _schedule(warmup_iterations=30, warmup_until_train_err=None)
    assert not s.watching_error
    assert s.lr(29, 0) == pytest.approx(WARM) and s.lr(30, 0) == pytest.approx(BASE)


def test_a_grid_giving_only_the_threshold_gets_a_real_warmup():
    values, problems = resolve_train("cifar10", 20, {"warmup_lr": WARM, "warmup_until_train_err": 80.0})
    s = PresetSchedule(TrainConfig(**values))
    assert problems == [] and s.cfg.warmup_iterations == 0
    at = _feed(s, [85.0] * 100)  # no cap: 1,000 iterations on, still warming up
    assert s.lr(at, 0) == pytest.approx(WARM) and s.lr(10**6, 0) == pytest.approx(WARM)
    _feed(s, [50.0] * 5, start=at)
    assert s.lr(at + 50, 0) == pytest.approx(BASE)


def test_warmup_settings_that_never_end_are_refused():
    _, problems = resolve_train("cifar10", 20, {"warmup_lr": WARM})
    assert [field for field, _ in problems] == ["warmup_lr"]
    _, problems = resolve_train("cifar10", 20, {"warmup_lr": WARM, "warmup_until_train_err": 0.0})
    assert [field for field, _ in problems] == ["warmup_until_train_err"]
    _, problems = resolve_train("cifar10", 110, {"warmup_until_train_err": 0.0})  # the preset's cap ends it
    assert problems == []
    with pytest.raises(ValueError, match="needs warmup_iterations or warmup_until_train_err"):
        PresetSchedule(TrainConfig(batch_size=1, lr=BASE, iterations=9, warmup_lr=WARM))


def test_the_paper_preset_lets_the_rule_decide_well_after_400_iterations():
    values, _ = resolve_train("cifar10", 110, {})
    s = PresetSchedule(TrainConfig(**values))
    at = _feed(s, [85.0] * 60)  # 600 iterations above 80%: the paper's "about 400" is no cut-off
    assert s.lr(at, 0) == pytest.approx(0.01)
    _feed(s, [75.0] * 3, start=at)  # window: 85 85 75 75 75 -> 79%
    assert s.warmup_ended_at == 630


def test_the_window_survives_a_checkpoint(tmp_path):
    s = _schedule()
    at = _feed(s, [90.0] * 3)
    torch.save(s.state_dict(), tmp_path / "state.pt")
    resumed = _schedule()
    resumed.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))  # plain values only
    for schedule in (s, resumed):
        _feed(schedule, [60.0] * 2, start=at)  # 90 90 90 60 60 -> 78%: a window only with the saved checks
    assert s.warmup_ended_at == resumed.warmup_ended_at == 50
    assert s.state_dict() == resumed.state_dict()


def test_batches_are_counted_on_the_device_and_handed_over_at_the_check():
    s = _schedule()
    due = [s.count_batch(torch.tensor(3), 8) for _ in range(WARMUP_CHECK_EVERY)]
    assert due == [False] * (WARMUP_CHECK_EVERY - 1) + [True]
    assert s.take_block() == ([3.0 * WARMUP_CHECK_EVERY, 8.0 * WARMUP_CHECK_EVERY], WARMUP_CHECK_EVERY)
    assert s.take_block() == ([0.0, 0.0], 0)


# ----------------------------------------------------------------------------- the trainer, resumed
def _digits_config(**changes) -> TrainConfig:
    cfg = dict(batch_size=64, lr=BASE, iterations=13 * 5, warmup_lr=0.05, warmup_until_train_err=70.0,
               loader="torch", num_workers=0, eval_protocol="full", max_train_batches=13)
    cfg.update(changes)
    return TrainConfig(**cfg)


def test_a_trainer_resumed_inside_the_warmup_switches_where_the_uninterrupted_one_does(digits_root, tmp_path):
    """Epochs of 13 steps: each epoch's last 3 reach the window through the end-of-epoch check, which a
    checkpoint taken inside the warm-up must hold."""
    from training.checkpoint import load_checkpoint, save_checkpoint
    from training.trainer import Trainer

    torch.set_num_threads(1)

    def trainer() -> Trainer:
        return Trainer(_digits_config(), arch="resnet8-A", variant="cifar", dataset_path=str(digits_root), seed=0)

    straight = trainer()
    while not straight.done:
        straight.run_epoch()
    assert straight.schedule.warmup_ended_at is not None, "digits should fall below 70% within 65 iterations"
    assert WARMUP_WINDOW <= straight.schedule.warmup_ended_at < straight.total_iterations

    first = trainer()
    for _ in range(3):  # 39 iterations: inside the warm-up, the window not yet full
        first.run_epoch()
    assert first.schedule.watching_error and first.schedule.state_dict()["warmup_window"]
    save_checkpoint(tmp_path, first.state_dict())
    resumed = trainer()
    resumed.load_state_dict(load_checkpoint(tmp_path))
    while not resumed.done:
        resumed.run_epoch()
    assert resumed.schedule.state_dict() == straight.schedule.state_dict()
    for name, value in straight.net.state_dict().items():
        assert torch.equal(resumed.net.state_dict()[name], value), name


# ----------------------------------------------------------------------------- two ranks, gloo
DDP_WARM, DDP_LR = 0.1, 0.2  # rank 0 learns slowly beside rank 1's noise: a warm-up rate that moves
DDP_THRESHOLD = 75.0  # rank 1 sits at ~90%: the sum crosses when rank 0 is near 60%, rank 0 alone at 75%


class _RandomLabels:
    """Rank 1's data: the same images with labels drawn afresh each batch, so its error stays near 90%."""

    def __init__(self, loader):
        self.loader = loader
        self.generator = torch.Generator().manual_seed(1)

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

    def __iter__(self):
        for images, labels in self.loader:
            yield images, torch.randint(0, 10, labels.shape, generator=self.generator)


def _ddp_worker(rank: int, init_file: str, data: str, out: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from training.trainer import Trainer

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    cfg = TrainConfig(batch_size=32, lr=DDP_LR, iterations=180, warmup_lr=DDP_WARM, warmup_iterations=0,
                      warmup_until_train_err=DDP_THRESHOLD, loader="torch", num_workers=0, eval_protocol="full")
    trainer = Trainer(cfg, arch="resnet8-A", variant="cifar", dataset_path=data, seed=0, rank=rank, world_size=2,
                      wrap_model=DistributedDataParallel)
    if rank == 1:
        trainer.train_loader = _RandomLabels(trainer.train_loader)
    rates: list[float] = []
    local: list[list[float]] = []  # this rank's own counts at each check: [iteration, wrong, seen, steps]
    schedule_lr, take_block = trainer.schedule.lr, trainer.schedule.take_block

    def lr(iteration: int, epoch: int) -> float:
        rates.append(schedule_lr(iteration, epoch))
        return rates[-1]

    def block() -> tuple[list[float], int]:
        counts, steps = take_block()
        local.append([trainer.iteration, *counts, steps])
        return counts, steps

    trainer.schedule.lr, trainer.schedule.take_block = lr, block
    while not trainer.done:
        trainer.run_epoch()
    # parameters: DDP keeps them equal only while every rank steps at the same rate (BN's running
    # statistics are not compared: each rank's last forward updates its own, after DDP's broadcast)
    torch.save(dict(trainer.net.named_parameters()), Path(out) / f"weights{rank}.pt")
    Path(out, f"rank{rank}.json").write_text(json.dumps(
        {"rates": rates, "local": local, "schedule": trainer.schedule.state_dict()}))
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_with_different_data_switch_on_the_same_iteration_and_keep_identical_weights(digits_root,
                                                                                                tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, __file__, str(rank), str(tmp_path / "init"), str(digits_root),
                               str(tmp_path)], env=env, cwd=Path(__file__).parent.parent)
             for rank in range(2)]
    for proc in procs:
        assert proc.wait(timeout=600) == 0
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    switch = ranks[0]["schedule"]["warmup_ended_at"]
    assert switch is not None and switch >= WARMUP_WINDOW  # no cap: the error rule ended it
    assert ranks[0]["rates"] == ranks[1]["rates"]  # the same rate at every step...
    assert ranks[0]["rates"][switch - 1:switch + 1] == [pytest.approx(DDP_WARM), pytest.approx(DDP_LR)]
    assert ranks[0]["schedule"] == ranks[1]["schedule"]

    def local_err(rank: int) -> float:  # this rank's own error over the window that ended the warm-up
        checks = [c for c in ranks[rank]["local"] if c[3] and c[0] <= switch]
        window, covered = [], 0
        for check in reversed(checks):
            window.append(check)
            covered += check[3]
            if covered >= WARMUP_WINDOW:
                break
        return 100.0 * sum(c[1] for c in window) / sum(c[2] for c in window)

    # ... although alone, rank 0 would have switched long before and rank 1 never
    assert local_err(0) < DDP_THRESHOLD < local_err(1)
    weights = [torch.load(tmp_path / f"weights{r}.pt", weights_only=True) for r in range(2)]
    for name, value in weights[0].items():
        assert torch.equal(value, weights[1][name]), name


if __name__ == "__main__":  # one rank of the DDP test
    _ddp_worker(int(sys.argv[1]), *sys.argv[2:5])
