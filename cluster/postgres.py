"""A throw-away PostgreSQL server on loopback: the real SQL backend for MLflow in tests and `cluster up --local`.

Uses the binaries of Debian's `postgresql` package (`initdb`, `pg_ctl`). PostgreSQL refuses to
run as root, so as root the server runs as the `postgres` user on a data folder owned by it.
Authentication is scram with a random password (loopback only, no Unix socket in a shared
place), so other users of the machine cannot log in.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from cluster.net import LOOPBACK, free_port
from resnetctl.errors import UserError

DB_USER = "resnetctl"
DB_NAME = "mlflow"
SERVICE_USER = "postgres"  # the account PostgreSQL runs under when we are root


class PostgresError(UserError, RuntimeError):
    """PostgreSQL could not be found, initialised or started; the message says which step."""


def find_pg_bin() -> Path | None:
    """The newest `/usr/lib/postgresql/<version>/bin` holding initdb and pg_ctl (or $PG_BIN), else None."""
    candidates = [os.environ["PG_BIN"]] if os.environ.get("PG_BIN") else []
    candidates += sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True
    )
    for candidate in candidates:
        path = Path(candidate)
        if (path / "initdb").is_file() and (path / "pg_ctl").is_file():
            return path
    return None


def _as_service_user() -> list[str]:
    """Command prefix that drops root to the postgres account (PostgreSQL will not run as root)."""
    return ["runuser", "-u", SERVICE_USER, "--"] if os.geteuid() == 0 else []


def _chown_to_service_user(path: Path) -> None:
    if os.geteuid() == 0:
        entry = pwd.getpwnam(SERVICE_USER)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _service_user_can_write(path: Path) -> bool:
    """Whether the postgres account can reach and write `path` (as root, test dirs are often 0700)."""
    if os.geteuid() != 0:
        return True
    return subprocess.run([*_as_service_user(), "test", "-w", str(path), "-a", "-x", str(path)]).returncode == 0


def _run(cmd: list[str], step: str) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise PostgresError(f"PostgreSQL {step} failed ({' '.join(cmd)}): {result.stderr.strip() or result.stdout}")


@dataclass
class PostgresServer:
    """One PostgreSQL instance: its data folder, port and password. JSON-serialisable for state files."""

    data_dir: str
    port: int
    password: str
    bin_dir: str
    host: str = LOOPBACK

    @property
    def uri(self) -> str:
        """SQLAlchemy URI of the MLflow database, naming its driver: psycopg2 (the psycopg2-binary wheel we install);
        a bare postgresql:// would mean psycopg 3 to SQLAlchemy 2.1, which is not installed."""
        return f"postgresql+psycopg2://{DB_USER}:{self.password}@{self.host}:{self.port}/{DB_NAME}"

    @property
    def log_file(self) -> str:
        return str(Path(self.data_dir) / "server.log")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def create(cls, base_dir: str | Path | None = None, *, port: int | None = None) -> PostgresServer:
        """initdb a fresh cluster in a new folder under `base_dir` (default: the system temp dir)."""
        bin_dir = find_pg_bin()
        if bin_dir is None:
            raise PostgresError("PostgreSQL binaries not found (install the Debian package `postgresql`)")
        if base_dir is not None and not _service_user_can_write(Path(base_dir)):
            base_dir = None  # the postgres account cannot enter it: fall back to the shared temp dir
        root = Path(tempfile.mkdtemp(prefix="resnetctl-pg-", dir=base_dir))
        _chown_to_service_user(root)
        data_dir = root / "data"
        password = secrets.token_urlsafe(18)
        pwfile = root / "pwfile"
        pwfile.write_text(password + "\n")
        _chown_to_service_user(pwfile)
        try:
            _run(
                [*_as_service_user(), str(bin_dir / "initdb"), "-D", str(data_dir), "-U", DB_USER,
                 f"--pwfile={pwfile}", "--auth-host=scram-sha-256", "--auth-local=scram-sha-256",
                 "-E", "UTF8", "--no-instructions"],
                "initdb",
            )
        finally:
            pwfile.unlink(missing_ok=True)
        return cls(data_dir=str(data_dir), port=port or free_port(), password=password, bin_dir=str(bin_dir))

    def start(self, timeout: float = 30.0) -> PostgresServer:
        """Start on 127.0.0.1:port (TCP only, no Unix socket) and create the MLflow database."""
        options = f"-c listen_addresses={self.host} -p {self.port} -c unix_socket_directories=''"
        _run(
            [*_as_service_user(), str(Path(self.bin_dir) / "pg_ctl"), "-D", self.data_dir, "-l", self.log_file,
             "-o", options, "-w", "-t", str(int(timeout)), "start"],
            "start",
        )
        self._create_database(timeout)
        return self

    def _create_database(self, timeout: float) -> None:
        import psycopg2

        deadline = time.monotonic() + timeout
        while True:
            try:
                conn = psycopg2.connect(host=self.host, port=self.port, user=DB_USER, password=self.password,
                                        dbname="postgres", connect_timeout=3)
                break
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,))
            if cur.fetchone() is None:
                cur.execute(f"CREATE DATABASE {DB_NAME}")
        conn.close()

    def is_running(self) -> bool:
        pg_ctl = Path(self.bin_dir) / "pg_ctl"
        result = subprocess.run([*_as_service_user(), str(pg_ctl), "-D", self.data_dir, "status"],
                                capture_output=True)
        return result.returncode == 0

    def stop(self) -> None:
        """Fast shutdown (running transactions are rolled back); a server already down is fine."""
        if Path(self.data_dir).is_dir() and self.is_running():
            _run([*_as_service_user(), str(Path(self.bin_dir) / "pg_ctl"), "-D", self.data_dir, "-m", "fast",
                  "-w", "stop"], "stop")

    def remove(self) -> None:
        """Stop and delete the data folder."""
        self.stop()
        shutil.rmtree(Path(self.data_dir).parent, ignore_errors=True)


def start_postgres(base_dir: str | Path | None = None) -> PostgresServer:
    """initdb + start a new server on a free loopback port; the caller stops it with `.stop()`/`.remove()`."""
    return PostgresServer.create(base_dir).start()
