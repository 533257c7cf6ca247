"""Same seed, same numbers (issue 19): every augmentation draw is a function of (seed, epoch, sample index).

A rerun of a cell gives the same weights, a run resumed after an epoch ends where the uninterrupted one
does, and both loader paths give an image the same crop and flip, whatever the batch size, thread count
or world size.
"""

from __future__ import annotations

import pytest
import torch

from pipelines import build_loader
from training.config import TrainConfig
from training.trainer import Trainer

SEED = 5


def _images(root, kind: str, *, epoch: int = 0, **options) -> torch.Tensor:
    """One training epoch of a loader, its batches concatenated (copied: FFCV reuses its buffers)."""
    defaults = dict(batch_size=16, train=True, loader=kind, seed=SEED, normalization="channel", num_workers=1)
    loader = build_loader(root, "train", **{**defaults, **options})
    loader.set_epoch(epoch)
    return torch.cat([images.clone() for images, _ in loader])


def test_a_digits_image_gets_the_same_flip_and_crop_on_both_paths_and_any_batching(digits_root):
    ffcv = _images(digits_root, "ffcv", epoch=1)
    torch_path = _images(digits_root, "torch", epoch=1)
    torch.testing.assert_close(ffcv, torch_path, rtol=0, atol=1e-4)  # FFCV's lookup table vs arithmetic
    # the draws follow the sample, not its place: other batch sizes, worker counts, ranks give it the same view
    torch.testing.assert_close(_images(digits_root, "torch", epoch=1, batch_size=5, num_workers=2)[:80],
                               torch_path[:80], rtol=0, atol=0)
    rank0 = _images(digits_root, "torch", epoch=1, world_size=2, rank=0)
    torch.testing.assert_close(rank0, torch_path[0::2][: len(rank0)], rtol=0, atol=0)
    assert not torch.equal(_images(digits_root, "torch", epoch=2)[:80], torch_path[:80])  # each epoch draws anew


@pytest.mark.parametrize("crop", ["scale", "rrc"])
def test_an_imagenet_image_gets_the_same_crop_and_flip_on_both_paths(imagenet_root, crop):
    common = dict(lighting=0.1, train_crop=crop)
    ffcv = _images(imagenet_root, "ffcv", epoch=1, batch_size=3, **common)
    torch_path = _images(imagenet_root, "torch", epoch=1, batch_size=3, **common)
    # the two JPEG decoders and resizers differ by rounding; another crop or a flip differs by far more
    per_image = (ffcv - torch_path).abs().mean(dim=(1, 2, 3))
    mirrored = (ffcv - torch_path.flip(-1)).abs().mean(dim=(1, 2, 3))
    assert per_image.max() < 0.05, per_image
    assert (mirrored > 4 * per_image).all(), (per_image, mirrored)
    rerun = _images(imagenet_root, "ffcv", epoch=1, num_workers=2, batch_size=2, **common)
    torch.testing.assert_close(rerun, ffcv, rtol=0, atol=0)  # FFCV: any thread count or batch size
    assert not torch.equal(_images(imagenet_root, "ffcv", epoch=2, batch_size=3, **common), ffcv)


def _trainer(root, kind: str) -> Trainer:
    cfg = TrainConfig(batch_size=32, lr=0.1, epochs=2, loader=kind, num_workers=1, eval_protocol="full",
                      max_train_batches=4)
    return Trainer(cfg, arch="resnet8-A", variant="cifar", dataset_path=str(root), seed=SEED, run_key="c")


def _weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in trainer.net.state_dict().items()}


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


@pytest.mark.parametrize("kind", ["ffcv", "torch"])
def test_a_rerun_and_a_resumed_run_end_with_the_weights_of_the_uninterrupted_run(digits_root, kind):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runs = []
        for _ in range(2):
            trainer = _trainer(digits_root, kind)
            while not trainer.done:
                trainer.run_epoch()
            runs.append(_weights(trainer))
        _assert_same_weights(runs[0], runs[1])

        first = _trainer(digits_root, kind)
        first.run_epoch()
        state = first.state_dict()
        torch.manual_seed(1234)  # whatever the new process's generators hold, the checkpoint restores them
        resumed = _trainer(digits_root, kind)
        resumed.load_state_dict(state)
        while not resumed.done:
            resumed.run_epoch()
        assert resumed.epoch == 2
        _assert_same_weights(_weights(resumed), runs[0])
    finally:
        torch.set_num_threads(threads)


def test_the_deterministic_switch_pins_torch_cudnn_and_cublas(digits_root, monkeypatch):
    from training.numerics import set_deterministic

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    cfg = TrainConfig(batch_size=32, lr=0.1, epochs=1, loader="torch", num_workers=0, deterministic=True)
    try:
        Trainer(cfg, arch="resnet8-A", variant="cifar", dataset_path=str(digits_root), seed=0)
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert torch.os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    finally:
        set_deterministic(False)
    assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.deterministic


def test_each_run_logs_the_facts_that_decide_its_numbers(tmp_path):
    import mlflow

    from orchestrator import conventions as cv
    from orchestrator.tracking import CellRunLogger
    from training.numerics import numerics_facts

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("numerics")).info.run_id
    facts = numerics_facts("cpu")
    assert facts["device"] == "cpu" and facts["torch"] == torch.__version__
    assert facts["threads_per_worker"] == str(torch.get_num_threads())
    CellRunLogger(uri, run_id).log_numerics(facts)
    CellRunLogger(uri, run_id).log_numerics({**facts, "threads_per_worker": "99"})  # a resume keeps the first
    params = client.get_run(run_id).data.params
    assert {k: params[k] for k in cv.NUMERICS_PARAMS} == {cv.param_numerics(k): v for k, v in facts.items()}


def test_the_report_notes_reruns_of_a_cell_that_should_agree_and_do_not():
    from orchestrator import conventions as cv
    from orchestrator.report.records import RunRecord
    from orchestrator.report.tables import disagreeing_reruns

    def run(run_id, test_err, device="cpu", deterministic="False", cell="c1"):
        params = {cv.param_numerics(k): "x" for k in ("torch", "cuda", "cudnn", "threads_per_worker")}
        params.update({cv.param_numerics("device"): device, cv.param_train("deterministic"): deterministic,
                       "resources.workers_per_cell": "1"})
        return RunRecord(run_id, "resnet8-A-digits-s0", "1", "FINISHED", 0, 1, params=params,
                         tags={cv.TAG_CELL_ID: cell, cv.TAG_STATUS: cv.STATUS_FINISHED},
                         metrics={cv.M_TEST_ERR: test_err})

    (note,) = disagreeing_reruns([run("a" * 8, 44.0), run("b" * 8, 76.3), run("c" * 8, 50.0, cell="c2")])
    assert "cell c1" in note and "44" in note and "76.3" in note
    assert disagreeing_reruns([run("a", 44.0), run("b", 44.0)]) == []  # they agree
    gpu = "NVIDIA H200"
    assert disagreeing_reruns([run("a", 44.0, gpu), run("b", 45.0, gpu)]) == []  # GPU, not deterministic: may differ
    assert len(disagreeing_reruns([run("a", 44.0, gpu, "True"), run("b", 45.0, gpu, "True")])) == 1
