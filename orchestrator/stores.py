"""Can MLflow use this tracking store right now? Nothing, or one line naming the store, within seconds.

Left to MLflow, a store that cannot be used costs minutes or a traceback: its HTTP client retries an
unreachable server with back-off for minutes, its SQL store retries the engine, and a SQLite file that
is not a database or a missing PostgreSQL driver surface as exceptions from deep inside SQLAlchemy.
`check_store` asks the store itself, with short timeouts, before the driver opens it; every message
names the store with its password redacted. Nothing here imports MLflow.
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import os
import sqlite3
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from resnetctl.errors import UserError
from resnetctl.redaction import redact, redact_uri

CHECK_TIMEOUT_S = 8.0  # per request; a loaded server can take a few seconds to answer
SQL_FAMILIES = ("postgresql", "mysql", "mssql")
# SQLAlchemy's drivers per database: the module each imports, and the scheme that names it
DRIVERS = {
    "postgresql": {"psycopg2": "postgresql+psycopg2", "psycopg": "postgresql+psycopg", "pg8000": "postgresql+pg8000"},
    "mysql": {"MySQLdb": "mysql+mysqldb", "pymysql": "mysql+pymysql", "mysql.connector": "mysql+mysqlconnector"},
    "mssql": {"pyodbc": "mssql+pyodbc", "pymssql": "mssql+pymssql"},
}


class StoreError(UserError, RuntimeError):
    """The tracking store cannot be used; the message names it (password redacted) and says why."""


def _family(uri: str) -> str:
    return uri.split("://", 1)[0].split("+", 1)[0].lower() if "://" in uri else ""


def check_store(uri: str, *, timeout: float = CHECK_TIMEOUT_S) -> None:
    """StoreError unless MLflow can reach and read the store at `uri` (http(s), SQLite, PostgreSQL, MySQL,
    MSSQL; other schemes are left to MLflow)."""
    family = _family(uri)
    try:
        if family in ("http", "https"):
            _check_server(uri, timeout)
        elif family == "sqlite":
            _check_sqlite(uri, timeout)
        elif family in SQL_FAMILIES:
            _check_database(uri, family, timeout)
    except OSError as exc:  # a path the file system refuses (too long, unreadable folder)
        raise StoreError(f"tracking store {redact_uri(uri)} cannot be used ({exc.strerror or exc})") from None


def tracking_headers() -> dict[str, str]:
    """HTTP basic auth (or a bearer token) for the MLflow server, from MLflow's own environment variables."""
    if os.environ.get("MLFLOW_TRACKING_TOKEN"):
        return {"Authorization": f"Bearer {os.environ['MLFLOW_TRACKING_TOKEN']}"}
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
    return {}


def http_get(url: str, headers: dict[str, str], timeout: float = CHECK_TIMEOUT_S) -> tuple[int, bytes]:
    """(status, body) of a GET; HTTP errors are answers too, a dead address raises OSError/ValueError."""
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def _check_server(uri: str, timeout: float) -> None:
    shown, base = redact_uri(uri), uri.rstrip("/")
    try:
        status, _ = http_get(f"{base}/health", {}, timeout)
    except (OSError, ValueError) as exc:
        reason = redact(str(getattr(exc, "reason", exc)))
        raise StoreError(f"the tracking server {shown} does not answer ({reason}); check MLFLOW_TRACKING_URI") from None
    if status != 200:
        raise StoreError(f"the tracking server {shown} is not healthy (GET /health: HTTP {status})")
    status, _ = http_get(f"{base}/api/2.0/mlflow/experiments/search?max_results=1", tracking_headers(), timeout)
    if status in (401, 403):
        raise StoreError(f"the tracking server {shown} refused our credentials (HTTP {status}): "
                         "set MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD")
    if status != 200:
        raise StoreError(f"the tracking server {shown} answered HTTP {status} to an experiment search")


def _check_sqlite(uri: str, timeout: float) -> None:
    """An existing file must be a SQLite database; a new one needs its folder. Opened read-only: writes nothing."""
    path = uri.split(":///", 1)[1].split("?", 1)[0] if ":///" in uri else ""
    if path in ("", ":memory:"):
        return
    file = Path(path)
    if not file.exists():
        if not file.parent.is_dir():
            raise StoreError(f"tracking store {redact_uri(uri)}: the folder {file.parent} does not exist")
        return
    try:
        with contextlib.closing(sqlite3.connect(f"{file.resolve().as_uri()}?mode=ro", uri=True, timeout=timeout)) as db:
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as exc:
        raise StoreError(f"tracking store {redact_uri(uri)} cannot be used: {file}: {exc}") from None


def _connect_args(family: str, timeout: float) -> dict[str, Any]:
    seconds = max(1, int(timeout))
    return {"postgresql": {"connect_timeout": seconds}, "mysql": {"connect_timeout": seconds},
            "mssql": {"timeout": seconds}}.get(family, {})


def _driver_hint(family: str) -> str:
    """Which scheme names a driver that is installed here (a plain postgresql:// means SQLAlchemy's default)."""
    installed = [scheme for module, scheme in DRIVERS[family].items() if _importable(module)]
    if installed:
        return f"name an installed one: {' or '.join(f'{scheme}://' for scheme in installed)}"
    return f"install one of {', '.join(DRIVERS[family])} and name it, e.g. {next(iter(DRIVERS[family].values()))}://"


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _check_database(uri: str, family: str, timeout: float) -> None:
    import sqlalchemy

    shown = redact_uri(uri)
    try:
        engine = sqlalchemy.create_engine(uri, connect_args=_connect_args(family, timeout))
    except ImportError as exc:
        raise StoreError(f"tracking store {shown}: its database driver is not installed ({exc}); "
                         f"{_driver_hint(family)}") from None
    except (sqlalchemy.exc.ArgumentError, ValueError) as exc:
        reason = redact(str(exc)).splitlines()[0]
        raise StoreError(f"tracking store {shown} is not a database URI SQLAlchemy can open ({reason})") from None
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT 1"))
    except sqlalchemy.exc.SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        raise StoreError(f"the tracking database {shown} does not answer: {redact(reason[0] if reason else '')}") from None
    finally:
        engine.dispose()


__all__ = ["CHECK_TIMEOUT_S", "StoreError", "check_store", "http_get", "tracking_headers"]
