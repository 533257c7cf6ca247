"""The throw-away PostgreSQL server: loopback only, password required, removable without a trace."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from cluster.postgres import PostgresError, PostgresServer, find_pg_bin

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(find_pg_bin() is None, reason="Debian's postgresql package is not installed"),
]


@pytest.fixture(scope="module")
def pg(tmp_path_factory):
    server = PostgresServer.create(tmp_path_factory.mktemp("pg")).start()
    yield server
    server.remove()


def _listening_addresses(data_dir: str) -> set[str]:
    """Addresses the postmaster (pid on the first line of postmaster.pid) listens on."""
    pid = int(Path(data_dir, "postmaster.pid").read_text().splitlines()[0])
    return {c.laddr.ip for c in psutil.Process(pid).net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}


def test_server_listens_on_loopback_only_and_serves_the_mlflow_database(pg):
    import sqlalchemy

    assert pg.is_running()
    assert _listening_addresses(pg.data_dir) == {"127.0.0.1"}
    assert pg.uri.startswith("postgresql+psycopg2://")
    engine = sqlalchemy.create_engine(pg.uri)
    with engine.connect() as conn:
        assert conn.execute(sqlalchemy.text("SELECT current_database()")).scalar() == "mlflow"
    engine.dispose()


def test_wrong_password_is_refused(pg):
    import psycopg2

    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(host=pg.host, port=pg.port, user="resnetctl", password="not-" + pg.password,
                         dbname="mlflow", connect_timeout=3)


def test_remove_stops_the_server_and_deletes_its_folder(tmp_path):
    server = PostgresServer.create(tmp_path).start()
    root = Path(server.data_dir).parent
    assert root.is_dir()
    server.remove()
    assert not server.is_running()
    assert not root.exists()
    server.remove()  # a second remove is harmless


def test_missing_binaries_give_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PG_BIN", str(tmp_path))
    monkeypatch.setattr("cluster.postgres.glob.glob", lambda pattern: [])
    with pytest.raises(PostgresError, match="postgresql"):
        PostgresServer.create(tmp_path)
