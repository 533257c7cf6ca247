"""Can a cell ever be scheduled? Its workers set against the nodes of the cluster it will run on.

Ray Train places a cell's workers as one bundle each ({CPU: cpus_per_worker, GPU: 1 with use_gpu}),
and a bundle must fit on one node. A cell none of whose placements fits waits forever in Tune, so
`plan`, `submit --address` and the grid runner warn about it beforehand. It is a warning, not an
error: an autoscaling cluster may still add the node that fits. The nodes come from the Ray
dashboard's state API (`/api/v0/nodes`), from `ray.nodes()` in a connected driver, or, for a grid
that runs here on an embedded Ray, from this machine. Nothing here imports Ray.
"""

from __future__ import annotations

import json
import math
import os
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from orchestrator.cells import Resources

Node = Mapping[str, float]  # a node's total resources: {"CPU": 8.0, "GPU": 1.0, ...}
NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")  # one folder per GPU the driver sees


def this_machine() -> list[dict[str, float]]:
    """What an embedded Ray on this machine would offer: its usable CPUs and NVIDIA GPUs."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        gpus = len(list(NVIDIA_GPUS.iterdir()))
    except OSError:
        gpus = 0
    return [{"CPU": float(cpus), "GPU": float(gpus)}]


def dashboard_nodes(dashboard_url: str, headers: Mapping[str, str], timeout: float = 8.0) -> list[dict[str, float]]:
    """The alive nodes' total resources from the dashboard's state API; OSError/ValueError when it cannot say."""
    request = urllib.request.Request(f"{dashboard_url}/api/v0/nodes?limit=10000", headers=dict(headers))
    with urllib.request.urlopen(request, timeout=timeout) as response:
        nodes = json.load(response)["data"]["result"]["result"]
    return [{k: float(v) for k, v in (node.get("resources_total") or {}).items() if isinstance(v, int | float)}
            for node in nodes if node.get("state") == "ALIVE"]


def ray_nodes(nodes: Iterable[Mapping]) -> list[dict[str, float]]:
    """`ray.nodes()` of a connected driver as the alive nodes' total resources."""
    return [dict(node.get("Resources") or {}) for node in nodes if node.get("Alive")]


def placements(resources: Resources, node: Node) -> int:
    """How many of a cell's workers fit on one node at once."""
    fits = math.floor(node.get("CPU", 0.0) / resources.cpus_per_worker + 1e-9)
    if resources.use_gpu:
        fits = min(fits, math.floor(node.get("GPU", 0.0) + 1e-9))
    return max(fits, 0)


def never_fits(resources: Resources, nodes: Sequence[Node]) -> str | None:
    """Why a cell with `resources` can never be scheduled on `nodes` (None when it can)."""
    if not nodes:
        return "the cluster has no alive node"
    per_worker = f"{resources.cpus_per_worker:g} CPU" + (" + 1 GPU" if resources.use_gpu else "")
    if max(placements(resources, node) for node in nodes) == 0:
        cpus = max(node.get("CPU", 0.0) for node in nodes)
        gpus = max(node.get("GPU", 0.0) for node in nodes)
        return f"each worker needs {per_worker}; the largest node has {cpus:g} CPU and {gpus:g} GPU"
    room = sum(placements(resources, node) for node in nodes)
    if room < resources.workers_per_cell:
        return (f"its {resources.workers_per_cell} workers need {per_worker} each; the "
                f"{len(nodes)} node(s) hold at most {room} such workers at once")
    return None


def fit_warnings(cells: Iterable, nodes: Sequence[Node], where: str) -> list[str]:
    """One warning per distinct resources setting that can never fit on `nodes` (`where`: "this machine", a URL)."""
    warnings, seen = [], set()
    for cell in cells:
        if cell.resources in seen:
            continue
        seen.add(cell.resources)
        problem = never_fits(cell.resources, nodes)
        if problem is not None:
            warnings.append(f"cell {cell.name} can never be scheduled on {where}: {problem} (it would wait "
                            "until a node that fits joins)")
    return warnings


def plan_warnings(cells: Sequence, address: str | None) -> list[str]:
    """`plan`'s warnings: cells that never fit the cluster at `address` (its dashboard), or this machine
    without one (where `submit` without --address runs them)."""
    if not address:
        return fit_warnings(cells, this_machine(), "this machine")
    from orchestrator.remote import dashboard_url, ray_auth_headers
    from resnetctl.redaction import redact

    url = dashboard_url(address)
    try:
        return fit_warnings(cells, dashboard_nodes(url, ray_auth_headers(url)), url)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return [f"cannot read the nodes of {url} ({redact(str(exc))[:200]}); whether the cells fit is unchecked"]


__all__ = ["dashboard_nodes", "fit_warnings", "never_fits", "plan_warnings", "ray_nodes", "this_machine"]
