"""`resnetctl submit grid.yaml` and its in-cluster twin `resnetctl run grid.yaml`.

Both validate the grid first (a bad grid exits 2 before Ray or MLflow is touched). Without
an address, `submit` runs the grid right here on an embedded Ray, tracking into
`./mlflow.db` unless the grid or MLFLOW_TRACKING_URI says otherwise. With `--address`
(or RAY_ADDRESS) it hands the grid to a cluster through the Ray Jobs API, where
`resnetctl run` is the entrypoint. A resubmit skips finished cells, resumes unfinished
ones from their checkpoints and runs new ones; `--restart` starts every cell afresh.
The grid runner itself is `orchestrator.grid_runner.run_grid`; these commands parse and call it.
"""

from __future__ import annotations

import click

from orchestrator.adaptive import run_grid_until_decided
from orchestrator.claims import DEFAULT_MAX_SEEDS
from orchestrator.estimate import check_budget
from orchestrator.grid_loading import load_cells
from orchestrator.grid_runner import run_grid
from resnetctl.errors import UserError

_common = [
    click.argument("grid_path", metavar="GRID", type=click.Path(dir_okay=False)),
    click.option("--restart", is_flag=True, help="Rerun every cell from scratch (deletes their runs and checkpoints)."),
    click.option("--yes", is_flag=True, help="Accept a grid with more cells than the safety limit, or an estimate "
                 "above its budget."),
    click.option("--storage", "storage_path", default=None, envvar="RESNETCTL_STORAGE",
                 help="Where Ray keeps checkpoints (default ./results); a rerun resumes from here."),
    click.option("--verbose", is_flag=True, help="Stream the Ray workers' logs to this terminal."),
    click.option("--until-decided", is_flag=True,
                 help="After the grid's seeds finish, add seeds round after round, only to the cells behind "
                      "undecided claims or too-wide intervals, until every verdict is decided or --max-seeds."),
    click.option("--max-seeds", type=click.IntRange(1, 1000), default=None,
                 help=f"With --until-decided: the most seeds a cell gets (default {DEFAULT_MAX_SEEDS})."),
]


def _with_common(fn):
    for decorator in reversed(_common):
        fn = decorator(fn)
    return fn


@click.command("submit")
@_with_common
@click.option("--address", envvar="RAY_ADDRESS", default=None,
              help="Ray cluster (Jobs API address, e.g. http://head:8265); env RAY_ADDRESS. "
                   "Without it the grid runs here on an embedded Ray.")
@click.option("--detach", is_flag=True, help="With --address: return once the job is submitted.")
def submit_command(grid_path: str, restart: bool, yes: bool, storage_path: str | None, verbose: bool,
                   until_decided: bool, max_seeds: int | None, address: str | None, detach: bool) -> None:
    """Run GRID's cells (skipping finished ones), here or on the cluster at --address."""
    spec, cells = load_cells(grid_path, yes=yes)
    check_budget(spec, cells, yes=yes)  # an estimate above the grid's budget needs --yes
    max_seeds = _max_seeds(until_decided, max_seeds)
    if address and until_decided:
        raise UserError("--until-decided runs its rounds from this machine: leave out --address (or run "
                        "`resnetctl run GRID --until-decided` on the cluster's head)")
    if address:
        from orchestrator.remote import submit_to_cluster

        raise SystemExit(submit_to_cluster(grid_path, spec, cells, address=address, detach=detach, restart=restart,
                                           storage_path=storage_path))
    if detach:
        raise UserError("--detach needs --address (a cluster to leave the job on)")
    if until_decided:
        raise SystemExit(run_grid_until_decided(spec, cells, max_seeds=max_seeds, restart=restart,
                                                storage_path=storage_path, verbose=verbose))
    raise SystemExit(run_grid(spec, cells, restart=restart, storage_path=storage_path, verbose=verbose))


def _max_seeds(until_decided: bool, max_seeds: int | None) -> int:
    if max_seeds is not None and not until_decided:
        raise UserError("--max-seeds needs --until-decided")
    return DEFAULT_MAX_SEEDS if max_seeds is None else max_seeds


@click.command("run")
@_with_common
def run_command(grid_path: str, restart: bool, yes: bool, storage_path: str | None, verbose: bool,
                until_decided: bool, max_seeds: int | None) -> None:
    """Run GRID's cells on the Ray cluster this process is in (the Jobs entrypoint), else locally."""
    spec, cells = load_cells(grid_path, yes=yes)
    max_seeds = _max_seeds(until_decided, max_seeds)
    options = {"storage_path": storage_path, "address": "auto", "fallback_local": True, "verbose": verbose}
    if until_decided:
        raise SystemExit(run_grid_until_decided(spec, cells, max_seeds=max_seeds, restart=restart, **options))
    raise SystemExit(run_grid(spec, cells, restart=restart, **options))
