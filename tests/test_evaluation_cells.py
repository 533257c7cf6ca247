"""Evaluation cells: trained networks re-tested once (paper Table 4), ensembles (Table 5), the final test.

The end-to-end tests evaluate the session's finished training grid (conftest's `trained_digits_grid`)
through the real CLI: an evaluation grid of two protocols over its two cells plus an ensemble of its two
registered models, resubmitted once unchanged and once with an evaluation cut short. The rest runs
without Ray: the per-epoch/final protocols of the trainer, cell ids, the averaging, and Table 4 from
evaluation runs written by the writers' own functions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path

import pytest
import yaml

from orchestrator import conventions as cv

ROOT = Path(__file__).resolve().parents[1]
EVAL_GRID = "trained-eval"
PROTOCOLS = ("full", "10crop")


# ----------------------------------------------------------------------------- without Ray
def test_final_test_runs_the_final_protocol_once_where_the_epochs_used_a_cheaper_one(digits_root):
    from training.config import TrainConfig
    from training.loaders import build_eval_loaders
    from training.trainer import Trainer

    common = {"batch_size": 64, "lr": 0.1, "epochs": 1, "max_train_batches": 2, "loader": "torch",
              "num_workers": 0, "eval_protocol": "10crop"}
    trainer = Trainer(TrainConfig(**common, epoch_eval_protocol="full"), arch="resnet8-A", variant="cifar",
                      dataset_path=str(digits_root), seed=0)
    epoch = trainer.run_epoch()
    final = trainer.final_test()
    assert set(final) == {"final_val_err", "final_val_top5_err", "final_test_err", "final_test_top5_err"}
    full = build_eval_loaders(trainer.cfg, str(digits_root), {"test"}, protocol="full", batch_size=64, rank=0,
                              world_size=1, seed=0, device=trainer.device, channels_last=False)["test"]
    ten = build_eval_loaders(trainer.cfg, str(digits_root), {"test"}, protocol="10crop", batch_size=64, rank=0,
                             world_size=1, seed=0, device=trainer.device, channels_last=False)["test"]
    assert (epoch["test_err"], epoch["test_top5_err"]) == pytest.approx(trainer.evaluate(full, "full"))  # one view
    assert (final["final_test_err"], final["final_test_top5_err"]) == pytest.approx(trainer.evaluate(ten, "10crop"))
    same = Trainer(TrainConfig(**common), arch="resnet8-A", variant="cifar", dataset_path=str(digits_root), seed=0)
    assert same.final_test() == {}  # the epochs already test with eval_protocol: nothing to repeat


def test_a_null_per_epoch_protocol_keeps_every_cell_id():
    """The field is left out of the hash while it is null: ids stay what they were before it existed."""
    from orchestrator.cells import ID_NEUTRAL_FIELDS
    from orchestrator.grid_loading import load_cells

    _, cells = load_cells(ROOT / "examples" / "quickstart.yaml", check_data=False)
    for cell in cells:
        payload = cell.to_dict()
        for key in ("resources", "dataset_path"):
            payload.pop(key)
        for name in ID_NEUTRAL_FIELDS:  # hashed the way ids were computed before these fields existed
            payload["train"].pop(name)
        old = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:12]
        assert cell.train.epoch_eval_protocol is None and cell.cell_id == old
        changed = dataclasses.replace(cell, train=cell.train.model_copy(update={"epoch_eval_protocol": "full"}))
        assert changed.cell_id != cell.cell_id


def test_the_imagenet_preset_validates_one_view_each_epoch_and_tests_10_crops_once():
    from orchestrator.grid_loading import load_cells

    _, cells = load_cells(ROOT / "examples" / "imagenet-table3.yaml", check_data=False)
    assert {(c.train.epoch_protocol, c.train.eval_protocol) for c in cells} == {("center", "10crop")}


def test_an_ensemble_averages_its_members_probabilities():
    import torch

    from training.evaluation import averaged, top_errors

    labels = torch.tensor([0, 1, 2, 0])
    first = torch.tensor([[.6, .3, .1], [.6, .3, .1], [.1, .2, .7], [.2, .5, .3]])  # right: 0, 2 (top-1)
    second = torch.tensor([[.5, .4, .1], [.1, .8, .1], [.4, .3, .3], [.1, .6, .3]])  # right: 0, 1
    result = averaged([(first, labels), (second, labels)])
    # average: [.55 .35 .1] -> 0 right; [.35 .55 .1] -> 1 right; [.25 .25 .5] -> 2 right; [.15 .55 .3] -> 1 wrong
    assert (result.top1, result.images) == (25.0, 4)
    assert result.members == (top_errors(first, labels), top_errors(second, labels)) == ((50.0, 0.0), (50.0, 0.0))
    with pytest.raises(ValueError, match="other images"):
        averaged([(first, labels), (second, labels.flip(0))])


def test_the_table4_example_evaluates_table3s_networks_instead_of_training_them():
    from orchestrator.eval_spec import is_evaluation_grid, parse_eval_grid
    from orchestrator.spec import read_grid_file

    data, lines, source = read_grid_file(ROOT / "examples" / "imagenet-table4.yaml")
    assert is_evaluation_grid(data)
    spec = parse_eval_grid(data, source, lines)
    assert spec.evaluate.protocol == ["multiscale"]
    (source_grid,) = spec.evaluate.models
    assert source_grid.grid == "imagenet-table3"
    assert source_grid.arch == ["resnet34-B", "resnet34-C", "resnet50-B", "resnet101-B", "resnet152-B"]
    assert spec.evaluate.ensembles and spec.resources.workers_per_cell == 1


# ----------------------------------------------------------------------------- end to end
def runs_by_name(uri: str, experiment: str) -> dict:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    return {} if found is None else {r.info.run_name: r for r in client.search_runs([found.experiment_id])}


def write_eval_grid(path: Path, data: Path, *, models, ensembles=(), protocols=PROTOCOLS, name=EVAL_GRID) -> Path:
    evaluate = {"protocol": list(protocols), "loader": "torch", "num_workers": 0, "models": list(models)}
    if ensembles:
        evaluate["ensembles"] = list(ensembles)
    grid = {"name": name, "dataset": {"name": "digits", "path": str(data)}, "evaluate": evaluate,
            "resources": {"cpus_per_worker": 1, "max_concurrent_cells": 1}}
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    return path


PAIR = {"name": "pair", "members": [{"model": "digits-resnet8-A", "version": 1}, {"model": "digits-plain8", "version": 1}]}


@pytest.fixture(scope="module")
def evaluated(trained_digits_grid, digits_root, resnetctl):
    """The trained grid's two cells and the ensemble of its two registered models, each in both protocols."""
    workdir = trained_digits_grid["workdir"]
    grid = write_eval_grid(workdir / "eval.yaml", digits_root, models=[{"grid": "trained"}], ensembles=[PAIR])
    proc = resnetctl(workdir, "submit", str(grid))
    assert proc.returncode == 0, proc.stderr[-4000:]
    return grid


@pytest.mark.slow
def test_an_evaluation_grid_makes_one_run_per_source_cell_linked_by_tag(trained_digits_grid, evaluated):
    uri = trained_digits_grid["uri"]
    trained = runs_by_name(uri, "trained")
    runs = runs_by_name(uri, EVAL_GRID)
    assert sorted(runs) == sorted(f"{base}-{p}" for p in PROTOCOLS for base in
                                  ("plain8-digits-s0", "resnet8-A-digits-s0", "ensemble-pair"))
    for protocol in PROTOCOLS:
        for source in ("plain8-digits-s0", "resnet8-A-digits-s0"):
            run, origin = runs[f"{source}-{protocol}"], trained[source]
            tags = run.data.tags
            assert run.info.status == "FINISHED" and tags[cv.TAG_STATUS] == cv.STATUS_FINISHED
            assert tags[cv.TAG_SOURCE_RUN_ID] == origin.info.run_id and tags[cv.TAG_SOURCE_GRID] == "trained"
            assert tags[cv.TAG_CELL_KIND] == cv.KIND_EVALUATION and tags[cv.TAG_EVAL_PROTOCOL] == protocol
            assert tags[cv.TAG_ARCH] == origin.data.tags[cv.TAG_ARCH] and tags[cv.TAG_EVAL_SPLIT] == "test"
            assert cv.TAG_ENSEMBLE not in tags and run.data.metrics[cv.M_EVAL_IMAGES] == 359
            if protocol == "full":  # the view the training run tested with every epoch: the same network, the same number
                assert run.data.metrics["test_err"] == pytest.approx(origin.data.metrics["test_err"], abs=1e-9)
                assert run.data.metrics["test_top5_err"] == pytest.approx(origin.data.metrics["test_top5_err"],
                                                                          abs=1e-9)


def _direct_ensemble_errors(uri: str, digits_root: Path, trained: dict) -> tuple[float, float]:
    """Load both registered models, score the test split with each, average the softmax, count by hand."""
    import mlflow
    import mlflow.pytorch
    import torch

    from orchestrator.evaluation import train_config_from_params
    from pipelines import build_loader
    from training.loaders import loader_options

    mlflow.set_tracking_uri(uri)
    try:
        nets = [mlflow.pytorch.load_model(f"models:/digits-{arch}/1").eval() for arch in ("resnet8-A", "plain8")]
    finally:
        mlflow.set_tracking_uri(None)
    cfg = train_config_from_params(trained["resnet8-A-digits-s0"].data.params)  # how training saw the images
    options = loader_options(cfg, batch_size=100, rank=0, world_size=1, seed=0, device="cpu", channels_last=False)
    loader = build_loader(str(digits_root), "test", train=False, eval_protocol="full",
                          **{**options, "loader": "torch", "num_workers": 0})
    top1 = top5 = count = 0
    with torch.no_grad():
        for images, labels in loader:
            mean = sum(torch.softmax(net(images), 1) for net in nets) / len(nets)
            ranked = mean.argsort(1, descending=True)
            top1 += int((ranked[:, 0] != labels).sum())
            top5 += int((ranked[:, :5] != labels[:, None]).all(1).sum())
            count += len(labels)
    return 100.0 * top1 / count, 100.0 * top5 / count


@pytest.mark.slow
def test_an_ensemble_is_one_run_with_its_members_averaged_softmax_error(trained_digits_grid, evaluated, digits_root):
    uri = trained_digits_grid["uri"]
    trained = runs_by_name(uri, "trained")
    run = runs_by_name(uri, EVAL_GRID)["ensemble-pair-full"]
    tags = run.data.tags
    assert tags[cv.TAG_ENSEMBLE] == "pair" and tags[cv.TAG_ARCH] == "ensemble"
    assert tags[cv.TAG_ENSEMBLE_MEMBERS] == "digits-resnet8-A-v1, digits-plain8-v1"
    assert tags[cv.TAG_SOURCE_RUN_ID].split(",") == [trained["resnet8-A-digits-s0"].info.run_id,
                                                    trained["plain8-digits-s0"].info.run_id]
    assert tags[cv.TAG_SOURCE_MODEL] == "models:/digits-resnet8-A/1,models:/digits-plain8/1"
    top1, top5 = _direct_ensemble_errors(uri, digits_root, trained)
    assert run.data.metrics["test_err"] == pytest.approx(top1, abs=1e-9)
    assert run.data.metrics["test_top5_err"] == pytest.approx(top5, abs=1e-9)
    # each member alone, as its own evaluation measured it
    from mlflow.tracking import MlflowClient

    members = sorted((m.step, m.value) for m in MlflowClient(uri).get_metric_history(run.info.run_id, cv.M_MEMBER_ERR))
    alone = runs_by_name(uri, EVAL_GRID)
    assert members == [(0, pytest.approx(alone["resnet8-A-digits-s0-full"].data.metrics["test_err"])),
                       (1, pytest.approx(alone["plain8-digits-s0-full"].data.metrics["test_err"]))]


@pytest.mark.slow
def test_a_resubmit_evaluates_nothing_again(trained_digits_grid, evaluated, resnetctl):
    uri = trained_digits_grid["uri"]
    before = {name: (r.info.run_id, r.info.end_time) for name, r in runs_by_name(uri, EVAL_GRID).items()}
    proc = resnetctl(trained_digits_grid["workdir"], "submit", str(evaluated))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "6 cells, 6 already finished, 0 to run" in proc.stderr
    assert {name: (r.info.run_id, r.info.end_time) for name, r in runs_by_name(uri, EVAL_GRID).items()} == before


@pytest.mark.slow
def test_a_resubmit_reruns_an_evaluation_cut_short_in_its_own_run(trained_digits_grid, evaluated, resnetctl):
    """An evaluation killed before it logged its result (its run RUNNING, then closed FAILED) runs again."""
    from mlflow.tracking import MlflowClient

    uri = trained_digits_grid["uri"]
    client = MlflowClient(uri)
    before = runs_by_name(uri, EVAL_GRID)
    cut = before["resnet8-A-digits-s0-10crop"]
    client.set_tag(cut.info.run_id, cv.TAG_STATUS, cv.STATUS_RUNNING)
    client.set_terminated(cut.info.run_id, status="FAILED")
    proc = resnetctl(trained_digits_grid["workdir"], "submit", str(evaluated))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "6 cells, 5 already finished, 1 to run" in proc.stderr
    after = runs_by_name(uri, EVAL_GRID)
    again = after["resnet8-A-digits-s0-10crop"]
    assert again.info.run_id == cut.info.run_id and again.data.tags[cv.TAG_STATUS] == cv.STATUS_FINISHED
    assert again.info.status == "FINISHED" and again.info.end_time > cut.info.end_time
    assert again.data.metrics["test_err"] == pytest.approx(cut.data.metrics["test_err"])  # the same network
    assert {n: r.info.end_time for n, r in after.items() if n != cut.info.run_name} == \
        {n: r.info.end_time for n, r in before.items() if n != cut.info.run_name}


@pytest.mark.slow
@pytest.mark.parametrize("source, field, text", [
    ({"grid": "never-trained"}, "evaluate.models[0].grid", "no grid 'never-trained' in sqlite:///"),
    ({"grid": "trained", "arch": ["resnet8-B"]}, "evaluate.models[0].arch[0]",
     "no finished cell of grid 'trained' has arch resnet8-B (archs: plain8, resnet8-A)"),
    ({"model": "digits-resnet8-A", "version": 7}, "evaluate.models[0].version",
     "registered model 'digits-resnet8-A' has no version 7"),
])
def test_a_source_the_store_does_not_hold_exits_2_before_ray_starts(trained_digits_grid, digits_root, resnetctl,
                                                                      tmp_path, source, field, text):
    grid = write_eval_grid(tmp_path / "bad.yaml", digits_root, models=[source], name="bad-eval")
    raw = yaml.safe_load(grid.read_text())
    raw["tracking"] = {"uri": trained_digits_grid["uri"]}
    grid.write_text(yaml.safe_dump(raw, sort_keys=False))
    experiments_before = sorted(runs_by_name(trained_digits_grid["uri"], "bad-eval"))
    proc = resnetctl(tmp_path, "submit", str(grid), timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"Error: {grid}:") and f": {field}: " in lines[0] and text in lines[0], lines[0]
    assert not (tmp_path / "results").exists()  # Ray's storage: never created
    assert sorted(runs_by_name(trained_digits_grid["uri"], "bad-eval")) == experiments_before == []


@pytest.mark.slow
def test_the_report_shows_an_evaluation_grid_and_its_ensemble(trained_digits_grid, evaluated):
    from click.testing import CliRunner

    from orchestrator.cli import main

    uri = trained_digits_grid["uri"]
    result = CliRunner().invoke(main, ["report", "--tracking-uri", uri, "--grid", EVAL_GRID, "--format", "json"])
    assert result.exit_code == 0, result.output
    tables = {t["key"]: t for t in json.loads(result.output)["tables"]}
    ensembles = tables["ensembles"]
    rows = [dict(zip(ensembles["columns"], row, strict=True)) for row in ensembles["rows"]]
    assert [(r["ensemble"], r["protocol"]) for r in rows] == [("pair", "10crop"), ("pair", "full")]
    full = runs_by_name(uri, EVAL_GRID)["ensemble-pair-full"]
    assert rows[1]["top-1 err"]["best"] == pytest.approx(full.data.metrics["test_err"])
    assert rows[1]["top-5 (paper)"] is None  # Table 5's 3.57 is ImageNet's


# ----------------------------------------------------------------------------- Table 4, from the writers
def _imagenet_eval_cell(arch: str, run_id: str, *, protocol="multiscale", ensemble: str = "", members=()):
    from orchestrator.cells import EvalCell, EvalMember

    member = EvalMember(f"models:/imagenet-{arch}/1", run_id, arch, f"{arch}-imagenet-s0", "imagenet-table3", 0)
    return EvalCell(grid="imagenet-table4", protocol=protocol, dataset="imagenet", dataset_path="/data/imagenet",
                    split="val", members=tuple(members) or (member,), ensemble=ensemble)


def test_table4_reads_evaluation_runs_and_an_imagenet_ensemble_stands_beside_table5(tmp_path):
    """Evaluation runs written by the writers' own functions (tracking.open_run, log_evaluation), read back."""
    from click.testing import CliRunner

    from orchestrator import tracking
    from orchestrator.cli import main
    from training.evaluation import EvalResult

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment = tracking.ensure_experiment(uri, "imagenet-table4")
    errors = {"resnet50-B": (21.5, 5.8), "resnet152-B": (20.1, 5.1)}
    cells = [_imagenet_eval_cell(arch, f"run-{arch}") for arch in errors]
    cells.append(_imagenet_eval_cell("", "", ensemble="both", members=[m for c in cells for m in c.members]))
    cells.append(_imagenet_eval_cell("resnet101-B", "run-resnet101-B"))  # planned, never finished
    for cell in cells:
        run_id = tracking.open_run(uri, experiment, cell, status="SCHEDULED")
        if cell.arch in errors or cell.ensemble:
            top1, top5 = errors.get(cell.arch, (19.0, 4.2))
            result = EvalResult(top1, top5, 50_000, ((21.5, 5.8), (20.1, 5.1)) if cell.ensemble else ((top1, top5),))
            tracking.log_evaluation(uri, run_id, cell, result, seconds=3600.0, on_gpu=True)
    result = CliRunner().invoke(main, ["report", "--tracking-uri", uri, "--grid", "imagenet-table4"])
    assert result.exit_code == 0, result.output
    table4 = result.output.split("## Table 4", 1)[1].split("\n## ", 1)[0]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")]
            for line in table4.splitlines() if line.startswith("| ResNet")}
    assert rows["ResNet-50"][1].startswith("21.50") and rows["ResNet-50"][2] == "20.74"
    assert rows["ResNet-152"][4].startswith("5.10") and rows["ResNet-152"][5] == "4.49"
    assert rows["ResNet-101"][1] == "–" and "missing: 1 planned cell(s)" in table4
    assert "the finished networks of grid imagenet-table3, each tested once after training on its val split" in table4
    assert "fully-convolutional multi-scale testing; paper:" in table4
    ensembles = result.output.split("## Ensembles", 1)[1].split("\n## ", 1)[0]
    (row,) = [line for line in ensembles.splitlines() if line.startswith("| both")]
    cells_ = [c.strip() for c in row.strip("|").split("|")]
    assert cells_[:3] == ["both", "multiscale", "val"] and cells_[5].startswith("4.20") and cells_[6] == "3.57"
    assert "ResNet-50" not in ensembles and not math.isnan(float(cells_[4].split()[0]))
