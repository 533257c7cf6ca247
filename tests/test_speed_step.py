"""The training step without a host-device sync per iteration (issue 15, item 2).

The epoch's loss and error sums stay on the device and reach the host once per epoch; these tests
check that this changes no number (the same weights and the same epoch metrics as a loop that reads
`loss.item()` every step) and that the host reads do not grow with the number of steps.
"""

from __future__ import annotations

import pytest
import torch

from orchestrator import conventions as cv
from orchestrator.train_entry import trainer_for_cell


def _per_step_reference(trainer) -> tuple[float, float]:
    """The loop as it was: a host read of the loss and of the error count after every step."""
    trainer.model.train()
    loss_sum = wrong = seen = 0.0
    for step, (images, labels) in enumerate(trainer.train_loader):
        if step >= trainer.steps_per_epoch:
            break
        images, labels = trainer._to_device(images, labels)
        _, loss, logits = trainer._step(images, labels)
        n = labels.numel()
        wrong += (logits.argmax(1) != labels).sum().item()
        loss_sum += loss.item() * n
        seen += n
    return loss_sum / seen, 100.0 * wrong / seen


def test_an_epoch_gives_the_same_weights_and_metrics_as_reading_the_loss_every_step(digits_cell):
    torch.set_num_threads(1)
    ours = trainer_for_cell(digits_cell(epochs=1))
    metrics = ours.train_epoch()
    reference = trainer_for_cell(digits_cell(epochs=1))
    loss, err = _per_step_reference(reference)
    assert metrics[cv.M_TRAIN_LOSS] == loss and metrics[cv.M_TRAIN_ERR] == err  # the same floats, not approx
    theirs = reference.net.state_dict()
    for name, value in ours.net.state_dict().items():
        assert torch.equal(value, theirs[name]), name


def _host_reads(trainer, monkeypatch) -> int:
    """How many times one training epoch copies a tensor's value to the host."""
    calls = {"n": 0}
    for method in ("item", "tolist"):
        original = getattr(torch.Tensor, method)

        def counted(self, *args, _original=original, **kwargs):
            calls["n"] += 1
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, method, counted)
    trainer.train_epoch()
    monkeypatch.undo()
    return calls["n"]


def test_host_reads_per_epoch_do_not_grow_with_the_steps(digits_cell, monkeypatch):
    torch.set_num_threads(1)
    short = _host_reads(trainer_for_cell(digits_cell(epochs=1, max_train_batches=2)), monkeypatch)
    long = _host_reads(trainer_for_cell(digits_cell(epochs=1, max_train_batches=6)), monkeypatch)
    assert short == long <= 2


@pytest.mark.parametrize("compile_model", [False, True])
def test_compile_wraps_only_the_training_model(digits_cell, monkeypatch, compile_model):
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda model: compiled.append(model) or model)
    trainer = trainer_for_cell(digits_cell(epochs=1, compile=compile_model))
    assert compiled == ([trainer.net] if compile_model else [])
