"""Library logs (Ray, MLflow, alembic, Python warnings) go to a log file; the terminal shows resnetctl's lines.

Without this a plain `submit` prints Ray's token-auth WARNING and MLflow's "Creating initial MLflow
database tables" INFO lines between resnetctl's own. `--verbose` lets them through to the terminal
again; the log file always gets them. Errors from the libraries still reach the terminal.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

LIBRARY_LOGGERS = ("ray", "mlflow", "alembic", "py.warnings")
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def route_library_logs(folder: str | Path, name: str, *, verbose: bool) -> Path:
    """Send the libraries' log records to `folder/<name>-<time>.log`; keep only their errors on the terminal."""
    import mlflow  # noqa: F401  (their handlers are installed on import: adjust them after)
    import ray  # noqa: F401

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    to_file = logging.FileHandler(path, encoding="utf-8")
    to_file.setFormatter(logging.Formatter(FORMAT))
    logging.captureWarnings(True)
    for logger_name in LIBRARY_LOGGERS:
        logger = logging.getLogger(logger_name)
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                handler.setLevel(logging.NOTSET if verbose else logging.ERROR)
        if logger_name in ("alembic", "py.warnings"):  # no handlers of their own: they would reach the root's
            logger.propagate = verbose
            if logger.level == logging.NOTSET:
                logger.setLevel(logging.INFO)
        logger.addHandler(to_file)
    return path
