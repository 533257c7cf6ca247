"""FFCV's loading thread (its `EpochIterator`), made to stop when abandoned and to stay on the worker's GPU.

FFCV runs each epoch's decoding in a thread of its own, holding pinned buffers. Two things a GPU
worker meets on its first day:

- A loop that `break`s (the last, truncated epoch; `max_train_batches`; the Fig. 7 measurement's
  first few batches) abandons the iterator; the thread keeps waiting to hand over its next batch and
  is never collected (a running thread is always referenced). `closing_epoch` closes it when the
  loader's own generator is closed.
- A new thread starts on CUDA device 0, whatever the worker's device: FFCV's stream context then
  restores device 0 after each batch and so creates a CUDA context there, on every worker of a node
  whose workers see all of its GPUs (Ray Train shares CUDA_VISIBLE_DEVICES among a node's workers).
  `follow_creators_cuda_device` starts the thread on the device of the thread that created it (the
  trainer sets its own first).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch


def closing_epoch(epoch_iterator: Any) -> Iterator[Any]:
    """Yield the epoch's batches; close FFCV's iterator however the loop ends (exhausted, broken, raised)."""
    try:
        yield from epoch_iterator
    finally:
        close = getattr(epoch_iterator, "close", None)
        if close is not None:
            close()


def follow_creators_cuda_device() -> None:
    """Make every FFCV EpochIterator thread set the creating thread's CUDA device before it runs (once)."""
    from ffcv.loader.epoch_iterator import EpochIterator

    if getattr(EpochIterator, "_resnetctl_follows_device", False):
        return
    original_start, original_run = EpochIterator.start, EpochIterator.run

    def start(self) -> None:  # called by __init__, on the creating thread
        on_cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
        self._resnetctl_device = torch.cuda.current_device() if on_cuda else None
        original_start(self)

    def run(self) -> None:  # the loading thread itself
        if getattr(self, "_resnetctl_device", None) is not None:
            torch.cuda.set_device(self._resnetctl_device)
        original_run(self)

    EpochIterator.start, EpochIterator.run = start, run
    EpochIterator._resnetctl_follows_device = True
