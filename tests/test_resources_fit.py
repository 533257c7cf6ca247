"""Resources Ray can schedule: amounts in Ray's unit are accepted, a cell no node can ever hold is warned about
by `plan` and `submit --address` (issue 13, item 3). The refusals themselves are in tests/bad_grids/."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from orchestrator import capacity, remote
from orchestrator.cells import Resources
from orchestrator.cli import main

NODES = [{"state": "ALIVE", "resources_total": {"CPU": 8.0, "GPU": 1.0, "memory": 1e10}},
         {"state": "ALIVE", "resources_total": {"CPU": 4.0}},
         {"state": "DEAD", "resources_total": {"CPU": 64.0, "GPU": 8.0}}]


class FakeDashboard(BaseHTTPRequestHandler):
    """The Ray dashboard's state API: the nodes above."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        body = {"data": {"result": {"result": NODES}}} if self.path.startswith("/api/v0/nodes") else {}
        data = json.dumps(body).encode()
        self.send_response(200 if body else 404)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture()
def dashboard():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeDashboard)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _grid(tmp_path, resources: str):
    path = tmp_path / "grid.yaml"
    path.write_text(f"name: t\ndataset: {{name: digits, path: data}}\ngrid: {{depth: [8]}}\nresources: {resources}\n")
    return path


@pytest.mark.parametrize(("cpus", "accepted"), [(0.0001, True), (0.25, True), (0.3, True), (7.0001, True),
                                                (1024, True), (0.00015, False), (1e-300, False), (1 / 3, False)])
def test_only_amounts_in_rays_unit_are_accepted(cpus, accepted):
    """Ray schedules whole 0.0001s: 1/3 CPU would silently become 0.3333, 1e-300 would be nothing."""
    if accepted:
        assert Resources(cpus_per_worker=cpus).cpus_per_worker == cpus
    else:
        with pytest.raises(ValidationError):
            Resources(cpus_per_worker=cpus)


def test_a_cell_fits_when_its_workers_fit_the_alive_nodes():
    nodes = [node["resources_total"] for node in NODES if node["state"] == "ALIVE"]
    assert capacity.never_fits(Resources(workers_per_cell=3, cpus_per_worker=4), nodes) is None  # 2 + 1
    assert "hold at most 3 such workers" in capacity.never_fits(Resources(workers_per_cell=4, cpus_per_worker=4), nodes)
    assert "largest node has 8 CPU" in capacity.never_fits(Resources(cpus_per_worker=16), nodes)
    assert capacity.never_fits(Resources(use_gpu=True, cpus_per_worker=8), nodes) is None
    assert "hold at most 1" in capacity.never_fits(Resources(workers_per_cell=2, use_gpu=True), nodes)
    assert capacity.never_fits(Resources(), []) == "the cluster has no alive node"
    assert capacity.ray_nodes([{"Alive": True, "Resources": {"CPU": 2.0}}, {"Alive": False}]) == [{"CPU": 2.0}]


def test_plan_warns_when_a_cell_never_fits_this_machine(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(capacity, "this_machine", lambda: [{"CPU": 2.0, "GPU": 0.0}])
    result = CliRunner().invoke(main, ["plan", str(_grid(tmp_path, "{cpus_per_worker: 4}")), "--no-check-data"])
    assert result.exit_code == 0, result.output
    assert "Warning: cell resnet8-A-digits-s0 can never be scheduled on this machine: each worker needs 4 CPU" \
        in result.stderr
    fits = CliRunner().invoke(main, ["plan", str(_grid(tmp_path, "{cpus_per_worker: 2}")), "--no-check-data"])
    assert fits.exit_code == 0 and "Warning" not in fits.stderr


def test_plan_and_submit_check_the_cluster_at_the_address(tmp_path, dashboard):
    grid = _grid(tmp_path, "{workers_per_cell: 2, use_gpu: true}")
    result = CliRunner().invoke(main, ["plan", str(grid), "--no-check-data", "--address", dashboard])
    assert result.exit_code == 0, result.output
    assert f"can never be scheduled on {dashboard}: its 2 workers need 1 CPU + 1 GPU each" in result.stderr

    from orchestrator.grid_loading import load_cells

    _, cells = load_cells(grid, check_data=False)
    warnings = remote.cluster_warnings(dashboard, {}, cells)
    assert len(warnings) == 1 and "its 2 workers need 1 CPU + 1 GPU each" in warnings[0]


def test_a_dashboard_that_cannot_say_is_a_warning_not_an_error(tmp_path):
    from cluster.net import free_port

    address = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(main, ["plan", str(_grid(tmp_path, "{}")), "--no-check-data", "--address", address])
    assert result.exit_code == 0 and f"cannot read the nodes of {address}" in result.stderr
