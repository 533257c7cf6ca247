"""Issue 18, day one on a GPU cluster: the GPU-only and multi-node paths, checked on the CPU where they can be.

The rest (FFCV's GPU pipeline, bf16/fp16, channels_last, NCCL) is benchmarks/gpu_smoke.py on a GPU;
its CPU dry-run is the last test here, so that script cannot rot.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from orchestrator import remote
from orchestrator.grid_loading import load_cells
from training import checkpoint as ckpt
from training.config import TrainConfig
from training.loaders import epoch_batches
from training.tester import TEN_CROP_CENTRE, first_images
from training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
TINY = {"batch_size": 64, "lr": 0.1, "epochs": 1, "max_train_batches": 1, "loader": "torch", "num_workers": 0,
        "eval_protocol": "full"}


# --- item 2: a remote submit needs storage every node shares -------------------------------------------
class _CountingHead(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.requests += 1
        self.send_response(404)
        self.end_headers()

    do_POST = do_PUT = do_GET


def test_a_remote_submit_without_shared_storage_is_refused_before_anything_is_asked(tmp_path, grid_file,
                                                                                    monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _CountingHead)
    server.requests = 0
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.delenv(remote.STORAGE_ENV, raising=False)
    monkeypatch.setattr(remote, "_is_this_machines_cluster", lambda url: False)  # a tunnel to a remote head
    path = grid_file(tmp_path / "grid.yaml", name="g", data=tmp_path / "digits", tracking_uri="http://127.0.0.1:1")
    spec, cells = load_cells(path, check_data=False)
    try:
        for storage in (None, str(tmp_path / "results"), "/mnt/shared/../home/me", "file:///tmp/results"):
            with pytest.raises(remote.RemoteError, match="/mnt/shared") as err:
                remote.submit_to_cluster(path, spec, cells, address=f"http://127.0.0.1:{server.server_port}",
                                         detach=True, restart=False, storage_path=storage)
            assert "--storage /mnt/shared/ray_results" in str(err.value)
        assert server.requests == 0  # neither the dashboard nor the tracking server was asked anything
    finally:
        server.shutdown()
        server.server_close()


def test_shared_storage_is_a_uri_or_a_folder_under_a_shared_mount(tmp_path, monkeypatch):
    monkeypatch.delenv(remote.SHARED_MOUNTS_ENV, raising=False)
    remote_ok = {"s3://bucket/runs": "s3://bucket/runs", "gs://b/r": "gs://b/r",
                 "/mnt/shared/ray_results": "/mnt/shared/ray_results", "/mnt/shared/a/../b": "/mnt/shared/b",
                 "file:///mnt/shared/r": "/mnt/shared/r"}
    for given, kept in remote_ok.items():
        assert remote.checkpoint_storage(given, cluster_is_local=False) == kept
    with pytest.raises(remote.RemoteError, match="/mnt/shared"):
        remote.checkpoint_storage("/mnt/sharedness/x", cluster_is_local=False)
    monkeypatch.setenv(remote.SHARED_MOUNTS_ENV, "/efs")
    assert remote.checkpoint_storage("/efs/runs", cluster_is_local=False) == "/efs/runs"
    monkeypatch.chdir(tmp_path)  # a cluster on this machine: today's default, ./results here
    assert remote.checkpoint_storage(None, cluster_is_local=True) == str((tmp_path / "results").resolve())
    assert remote.checkpoint_storage("~/r", cluster_is_local=True) == str(Path("~/r").expanduser().resolve())
    assert remote._is_this_machines_cluster("http://10.0.0.5:8265") is False


# --- item 3: each worker saves and restores its own CUDA generator only --------------------------------
class _FakeCuda:
    """torch.cuda's RNG calls on a machine with `count` GPUs; records what was set where."""

    def __init__(self, monkeypatch, count: int):
        self.count, self.set = count, []
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(torch.cuda, "get_rng_state", self.get)
        monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: self.set.append((state, device)))
        monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: pytest.fail("every GPU's state was read"))
        monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: pytest.fail("every GPU's state set"))

    def get(self, device):
        index = torch.device(device).index
        assert index < self.count, f"{device} does not exist here"
        return torch.full((4,), index, dtype=torch.uint8)


def test_cuda_rng_state_is_the_workers_own_device_and_survives_a_rank_that_sees_fewer(monkeypatch, tmp_path):
    cuda = _FakeCuda(monkeypatch, count=4)
    state = ckpt.rng_state("cuda:3")  # rank 0 on the fourth GPU of its node
    assert torch.equal(state["cuda"], torch.full((4,), 3, dtype=torch.uint8))  # one state, not a list
    ckpt.save_checkpoint(tmp_path, {"rng": state})
    loaded = ckpt.load_checkpoint(tmp_path)["rng"]  # weights_only, as every resume loads
    assert cuda.set == []
    one = _FakeCuda(monkeypatch, count=1)  # a replaced spot node: this rank sees one GPU
    ckpt.set_rng_state(loaded, "cuda:0")
    assert [(s.tolist(), str(d)) for s, d in one.set] == [([3, 3, 3, 3], "cuda:0")]
    # an older checkpoint: rank 0's list of four; a rank whose own index is past the end leaves its generator
    old = {**loaded, "cuda": [torch.full((4,), i, dtype=torch.uint8) for i in range(2)]}
    one.set.clear()
    ckpt.set_rng_state(old, "cuda:3")
    ckpt.set_rng_state(old, "cuda:1")
    assert [(s.tolist(), str(d)) for s, d in one.set] == [([1, 1, 1, 1], "cuda:1")]
    assert "cuda" not in ckpt.rng_state("cpu") and "cuda" not in ckpt.rng_state()
    one.set.clear()
    ckpt.set_rng_state(loaded, "cpu")  # a CPU worker resuming a GPU checkpoint
    assert one.set == []


# --- item 4: Fig. 7 measured on the centre crop, and on the 224 view of multi-scale data ------------------
def test_first_images_take_the_centre_crop_and_the_224_view():
    ten = [(torch.arange(10.0).view(1, 10, 1, 1, 1).expand(3, 10, 3, 8, 8).clone(), torch.zeros(3)) for _ in range(2)]
    images = first_images(ten, 5, torch.device("cpu"))
    assert images.shape == (5, 3, 8, 8) and (images == TEN_CROP_CENTRE).all()
    squares = [(torch.rand(2, 3, 640, 640), torch.zeros(2))]
    assert first_images(squares, 2, torch.device("cpu"), side=224).shape == (2, 3, 224, 224)


@pytest.mark.parametrize("protocol", ["10crop", "full"])
def test_trainer_measures_the_centre_crop_of_10_crop_data(digits_root, monkeypatch, protocol):
    import models

    trainer = Trainer(TrainConfig(**{**TINY, "eval_protocol": protocol}), arch="resnet8-A", variant="cifar",
                      dataset_path=str(digits_root), seed=0)
    seen = []
    monkeypatch.setattr(models, "layer_responses", lambda net, images, **kw: seen.append(images) or [0.0])
    trainer.layer_responses(max_images=8)
    loader_images = next(iter(trainer.eval_loaders["test"]))[0]
    expected = loader_images[:, TEN_CROP_CENTRE] if protocol == "10crop" else loader_images
    assert seen[0].dim() == 4
    torch.testing.assert_close(seen[0], expected[:8])


def test_trainer_measures_multiscale_data_on_the_224_view(imagenet_root, monkeypatch):
    import models

    cfg = TrainConfig(**{**TINY, "batch_size": 2, "eval_protocol": "multiscale"})
    trainer = Trainer(cfg, arch="resnet18-B", variant="imagenet", dataset_path=str(imagenet_root), seed=0)
    seen = []
    monkeypatch.setattr(models, "layer_responses", lambda net, images, **kw: seen.append(images) or [0.0])
    trainer.layer_responses(max_images=3)
    assert seen[0].shape == (3, 3, 224, 224)


# --- item 5: FFCV's threads from the cell's CPUs on GPUs, without new cell ids ---------------------------
def test_gpu_cells_decode_with_a_thread_per_cpu_and_keep_their_ids(tmp_path, grid_file):
    def cells(resources, train=None):
        path = grid_file(tmp_path / "g.yaml", name="g", data=tmp_path / "d", resources=resources,
                         train={"num_workers": None, **(train or {})})
        return load_cells(path, check_data=False)[1]

    (cpu,) = cells({})
    fp32 = {"amp": "off"}  # the GPU preset's bf16 changes what is computed: the paper's fp32 here
    (gpu,) = cells({"use_gpu": True, "cpus_per_worker": 6}, fp32)
    (named,) = cells({"use_gpu": True, "cpus_per_worker": 6}, {"num_workers": 2, **fp32})
    assert (cpu.train.num_workers, gpu.train.num_workers, named.train.num_workers) == (1, 6, 2)
    assert cpu.cell_id == gpu.cell_id == named.cell_id  # loading threads change speed, not what is trained
    assert gpu.train.channels_last and not cpu.train.channels_last  # a memory layout: the same id


def test_gpu_cells_train_in_bf16_channels_last_unless_the_grid_says_otherwise(tmp_path, grid_file):
    def cell(resources, train=None):
        path = grid_file(tmp_path / "g.yaml", name="g", data=tmp_path / "d", resources=resources, train=train or {})
        return load_cells(path, check_data=False)[1][0]

    gpu, cpu = cell({"use_gpu": True}), cell({})
    assert (gpu.train.amp, gpu.train.channels_last) == ("bf16", True)
    assert (cpu.train.amp, cpu.train.channels_last) == ("off", False)  # ignored on a CPU anyway
    paper = cell({"use_gpu": True}, {"amp": "off", "channels_last": False})
    assert (paper.train.amp, paper.train.channels_last) == ("off", False)
    assert gpu.cell_id != cpu.cell_id == paper.cell_id  # bf16 is another computation; channels-last is not


def test_a_tune_trials_plain_cuda_device_gets_its_index(monkeypatch):
    from training.trainer import worker_device

    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert worker_device("cuda") == torch.device("cuda:0")  # torch.cuda.set_device refuses a plain "cuda"
    assert worker_device("cuda:1") == torch.device("cuda:1") and worker_device("cpu") == torch.device("cpu")


# --- item 6: an abandoned epoch closes its loader ---------------------------------------------------------
def test_a_loop_that_breaks_closes_the_loaders_iterator():
    closed = []

    def batches():
        try:
            yield from range(10)
        finally:
            closed.append(True)

    with epoch_batches(type("L", (), {"__iter__": lambda self: batches()})()) as it:
        for k in it:
            if k == 2:
                break
    assert closed == [True]
    with epoch_batches([1, 2]) as it:  # an iterator without close() is fine
        assert list(it) == [1, 2]


@pytest.mark.slow
def test_ffcv_threads_stop_when_an_epoch_or_a_measurement_breaks_early(digits_root, wait_for):
    def loader_threads():
        return [t for t in threading.enumerate() if type(t).__name__ == "EpochIterator" and t.is_alive()]

    before = set(loader_threads())
    trainer = Trainer(TrainConfig(**{**TINY, "batch_size": 16, "loader": "ffcv", "num_workers": 1}),
                      arch="resnet8-A", variant="cifar", dataset_path=str(digits_root), seed=0)
    trainer.train_epoch()  # one batch of many, then break
    trainer.layer_responses(max_images=16)  # one batch of the test split, then break
    wait_for(lambda: not (set(loader_threads()) - before), timeout=10, what="FFCV's loading threads to stop")


# --- item 8: a CPU checkpoint resumes into an fp16 run -------------------------------------------------
def test_an_fp16_run_resumes_a_checkpoint_whose_scaler_was_disabled(digits_root):
    cpu = Trainer(TrainConfig(**TINY), arch="resnet8-A", variant="cifar", dataset_path=str(digits_root), seed=0,
                  run_key="c")
    state = cpu.state_dict()
    assert state["scaler"] == {}
    fp16 = Trainer(TrainConfig(**TINY), arch="resnet8-A", variant="cifar", dataset_path=str(digits_root), seed=0,
                   run_key="c")
    fp16.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, enabled=True)  # what a GPU worker holds
    fp16.load_state_dict(state)
    assert fp16.scaler.get_scale() == 1024.0
    fp16.load_state_dict({**state, "scaler": {**fp16.scaler.state_dict(), "scale": 8.0}})
    assert fp16.scaler.get_scale() == 8.0


# --- item 10: 10-crop batches reach a channels_last model in its layout ----------------------------------
def test_ten_crop_batches_are_converted_to_channels_last_once(digits_root):
    trainer = Trainer(TrainConfig(**TINY), arch="resnet8-A", variant="cifar", dataset_path=str(digits_root), seed=0)
    trainer.channels_last = True  # what a GPU worker with channels_last: true has
    images, _ = trainer._to_device(torch.rand(2, 10, 3, 8, 8), torch.zeros(2, dtype=torch.long))
    assert images.shape == (2, 10, 3, 8, 8)
    assert images.flatten(0, 1).is_contiguous(memory_format=torch.channels_last)


# --- the GPU smoke check's CPU dry-run ------------------------------------------------------------------
@pytest.mark.slow
def test_gpu_smoke_script_dry_run_runs_every_check_on_the_cpu():
    # about a minute on 2 idle cores (FFCV's compile, two small datasets, an MLflow store); minutes under load
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_smoke.py"), "--dry-run"],
                            capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "all checks passed" in result.stdout


def test_the_report_says_which_runs_trained_in_bf16_and_not_the_cpu_runs_that_ignored_it():
    from orchestrator import conventions as cv
    from orchestrator.report import tables
    from orchestrator.report.records import RunRecord

    def run(amp, device):
        return RunRecord("r", "n", "0", "FINISHED", None, None,
                         params={cv.param_train("amp"): amp, cv.param_numerics("device"): device})

    assert "bf16 mixed precision (the paper: fp32)" in tables._training_words([run("bf16", "NVIDIA H200")])
    assert "precision" not in tables._training_words([run("bf16", "cpu"), run("off", "NVIDIA H200")])
