"""What an evaluation cell's Ray Tune trial runs: load its networks, test them once, log one MLflow run.

The trial itself is the one worker: it reserves the cell's CPUs (and a GPU with `use_gpu`) through Tune
and evaluates in its own process, without a TorchTrainer. An evaluation is one forward pass over the
test split: no gradients to all-reduce, no optimiser state to checkpoint, nothing a second worker would
have to agree on. A TorchTrainer would add its controller and worker group (about half of the 25 s fixed
cost per cell in the README's benchmarks) and checkpoints an evaluation has no use for: a test cut short
simply runs again. More speed comes from more cells at once (`max_concurrent_cells`, one per network and
protocol), not from sharding one test, which would also have to gather every image's probabilities on
one rank before an ensemble could average them.

The networks come from the MLflow model registry (`models:/<name>/<version>`, or a run's logged model),
loaded with `mlflow.pytorch.load_model`; each is tested through the loader its own training config
would build (`training.loaders.build_eval_loaders`), so the images are prepared as in its training.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from orchestrator.cells import EvalCell, EvalMember
from training.config import TrainConfig


def _data_config(cell: EvalCell, member: EvalMember) -> TrainConfig:
    """The member's training config with the evaluation's loader settings (a stand-in where it has none:
    a registered model resnetctl did not train, read with the loaders' defaults)."""
    base = member.train or TrainConfig(batch_size=cell.batch_size, lr=0.1)  # only its data settings are read
    return base.model_copy(update={"loader": cell.loader, "num_workers": cell.num_workers})


def member_predictions(cell: EvalCell, uri: str, device) -> Iterator[tuple[Any, Any]]:
    """Each member's (probabilities, labels) over the cell's split, one network in memory at a time."""
    import mlflow
    import mlflow.pytorch

    from orchestrator.tracking import using_store
    from training.evaluation import predict
    from training.loaders import build_eval_loaders

    for member in cell.members:
        with using_store(uri):  # models:/ URIs resolve in the store's registry
            net = mlflow.pytorch.load_model(member.model_uri, map_location=device)
        loaders = build_eval_loaders(_data_config(cell, member), cell.dataset_path, {cell.split},
                                     protocol=cell.protocol, batch_size=cell.batch_size, rank=0, world_size=1,
                                     seed=0, device=device, channels_last=False)
        yield predict(net, loaders[cell.split], protocol=cell.protocol, device=device)
        del net, loaders


def run_evaluation(cell: EvalCell, uri: str):
    """Test the cell's networks (averaging an ensemble's probabilities): (EvalResult, seconds, on a GPU)."""
    import torch

    from training.evaluation import averaged

    device = torch.device("cuda" if cell.resources.use_gpu and torch.cuda.is_available() else "cpu")
    torch.set_num_threads(max(1, int(cell.resources.cpus_per_worker)))
    start = time.perf_counter()
    result = averaged(member_predictions(cell, uri, device))
    return result, time.perf_counter() - start, device.type == "cuda"


def evaluation_trainable(config: dict[str, Any], tracking_uri: str | None = None) -> None:
    """One Tune trial of an evaluation grid: config holds `cell` (EvalCell.to_dict()) and `run_ids`; the store's
    URI comes through Ray's object store (`tune_runner._trainable`), never the config Tune writes to disk."""
    from ray import tune

    from training import metrics

    cell = EvalCell.from_dict(config["cell"])
    uri = tracking_uri
    run_id = (config.get("run_ids") or {}).get(cell.cell_id)
    try:
        if run_id is not None:
            from orchestrator.tracking import mark_run_running

            mark_run_running(uri, run_id)
        result, seconds, on_gpu = run_evaluation(cell, uri)
        if run_id is not None:
            from orchestrator.tracking import log_evaluation

            log_evaluation(uri, run_id, cell, result, seconds=seconds, on_gpu=on_gpu)
    except BaseException:
        if run_id is not None:
            from orchestrator.tracking import mark_run_failed

            mark_run_failed(uri, run_id)
        raise
    top1, top5 = metrics.split_errors(cell.split)
    tune.report({top1: result.top1, top5: result.top5, "images": result.images})
