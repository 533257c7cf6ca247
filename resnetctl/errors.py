"""The one way resnetctl fails on bad input."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user (a grid, a data folder, a store, a cluster address).

    The message is ready to print as one line; the CLI prints `Error: <message>` and exits 2.
    Library errors derive from it (GridError, DatasetError, ReportError, RemoteError, the
    cluster errors), usually beside the built-in base they had before (ValueError, RuntimeError).
    The CLI shows it through `resnetctl.redaction.shown`: passwords redacted, control characters
    escaped, newlines too unless the class sets `multiline` (a log tail of a process we started).
    """

    multiline: bool = False


__all__ = ["UserError"]
