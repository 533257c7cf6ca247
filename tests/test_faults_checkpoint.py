"""Fault: a checkpoint write killed part-way never leaves a checkpoint that later loads as complete.

A real writer process runs the product's `save_checkpoint` in a loop and is SIGKILLed while its
temporary file is being written (at several fill levels, with and without an earlier checkpoint
in the folder). Afterwards `load_checkpoint` must give the last checkpoint written in full, bit
for bit, or refuse when there is none; the torn temporary file must never be what it returns.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest
import torch

from training.checkpoint import CHECKPOINT_FILE, load_checkpoint

pytestmark = pytest.mark.slow

TENSORS, TENSOR_LEN = 48, 1 << 18  # 48 MiB of float32 per checkpoint: long enough to be caught mid-write

# what each writer process runs: the product's save_checkpoint in a loop, noting when each write starts/ends
WRITER = f"""
import torch
from training.checkpoint import save_checkpoint
with open(events, "a", buffering=1) as log:
    for epoch in range(1, 1000):
        state = {{"epoch": epoch, "weights": [torch.full(({TENSOR_LEN},), float(epoch)) for _ in range({TENSORS})]}}
        log.write(f"begin {{epoch}}\\n")
        save_checkpoint(folder, state)
        log.write(f"done {{epoch}}\\n")
"""


@pytest.fixture(scope="module")
def writers():
    """Writer processes forked from a server that imported torch once (a fresh interpreter each time is slow)."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "training.checkpoint"])
    return ctx


def _events(path: Path) -> list[tuple[str, int]]:
    if not path.exists():
        return []
    return [(what, int(epoch)) for what, epoch in (line.split() for line in path.read_text().splitlines())]


def _kill_during_write(ctx, folder: Path, kill_at_write: int, fill: float, full_size: int, wait_for):
    """SIGKILL a writer once its `kill_at_write`-th temporary file holds `fill` of a full checkpoint."""
    tmp = folder / (CHECKPOINT_FILE + ".tmp")
    events = folder.parent / f"{folder.name}.events"
    proc = ctx.Process(target=exec, args=(WRITER, {"folder": str(folder), "events": str(events)}), daemon=True)
    proc.start()
    try:
        wait_for(lambda: ("begin", kill_at_write) in _events(events), timeout=60, interval=0.002, alive=proc.is_alive,
                 what=f"the writer to begin write {kill_at_write}", detail=lambda: f"writer stalled: {_events(events)}")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if tmp.stat().st_size >= max(1, fill * full_size):
                    break
            except FileNotFoundError:
                pass
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(30)
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join(30)
    assert proc.exitcode == -signal.SIGKILL
    return _events(events)


def _is_torn(path: Path) -> bool:
    try:
        torch.load(path, weights_only=False)
    except Exception:
        return True
    return False


def _assert_whole(state: dict) -> None:
    epoch = state["epoch"]
    assert len(state["weights"]) == TENSORS
    for tensor in state["weights"]:
        assert tensor.shape == (TENSOR_LEN,) and bool((tensor == float(epoch)).all())


def test_a_checkpoint_write_killed_mid_way_never_loads_as_complete(writers, tmp_path, wait_for):
    from training.checkpoint import save_checkpoint

    probe = tmp_path / "probe"
    probe.mkdir()
    save_checkpoint(probe, {"epoch": 0, "weights": [torch.zeros(TENSOR_LEN) for _ in range(TENSORS)]})
    full_size = (probe / CHECKPOINT_FILE).stat().st_size

    torn_kills = 0
    # (which write of this writer is killed, how full its temporary file is when the kill is sent)
    plans = [(1, 0.3), (2, 0.05), (2, 0.6), (3, 0.9)]
    for index, (kill_at_write, fill) in enumerate(plans):
        folder = tmp_path / f"round{index}"
        folder.mkdir()
        events = _kill_during_write(writers, folder, kill_at_write, fill, full_size, wait_for)
        begun = [epoch for what, epoch in events if what == "begin"]
        done = [epoch for what, epoch in events if what == "done"]
        tmp = folder / (CHECKPOINT_FILE + ".tmp")
        if tmp.exists() and _is_torn(tmp):
            torn_kills += 1
        try:
            state = load_checkpoint(folder)
        except FileNotFoundError as err:
            assert "incomplete" in str(err) and not done, f"round {index}: a finished write was lost"
            continue
        # whole, and the last write that finished (or the killed one, if the kill came after its rename)
        _assert_whole(state)
        assert state["epoch"] in {*done[-1:], begun[-1]}, (index, state["epoch"], done, begun)
        assert not done or state["epoch"] >= done[-1], f"round {index}: went back past a finished write"

    # the kills must really have landed inside writes, or this test proved nothing
    assert torn_kills >= len(plans) // 2, f"only {torn_kills} of {len(plans)} kills tore a file"
