"""The `resnetctl` command line.

Sub-commands live in their own modules under `orchestrator.commands` and are imported only
when invoked (click's lazy-group pattern), so `resnetctl --help` and the validation of a bad
grid never pay for importing torch, Ray or MLflow.

There is one way to fail on bad input: the library raises a `UserError` (a grid, a data folder,
a store, a cluster address) and the group catches it here, once, printing `Error: <message>` as
one line on stderr (passwords redacted, control characters escaped) and exiting 2, click's status
for bad usage. click's own parameter checks (an unknown option, a bad choice) stay click's and exit
2 as well.
"""

from __future__ import annotations

import errno
import importlib
import os

import click

from resnetctl.errors import UserError
from resnetctl.redaction import shown

# the file system refusing a path the user gave (a name too long, no permission, a read-only or full disk):
# bad input too, printed like a UserError rather than as a traceback
PATH_ERRNOS = frozenset({errno.ENAMETOOLONG, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.ELOOP,
                         errno.ENOTDIR, errno.EISDIR})

# command name -> "module:attribute"
COMMANDS: dict[str, str] = {
    "models": "orchestrator.commands.models:models_command",
    "prepare": "orchestrator.commands.prepare:prepare_command",
    "plan": "orchestrator.commands.plan:plan_command",
    "fields": "orchestrator.commands.fields:fields_command",
    "submit": "orchestrator.commands.submit:submit_command",
    "run": "orchestrator.commands.submit:run_command",
    "status": "orchestrator.commands.jobs:status_command",
    "logs": "orchestrator.commands.jobs:logs_command",
    "cancel": "orchestrator.commands.jobs:cancel_command",
    "report": "orchestrator.commands.report:report_command",
    "ui": "orchestrator.commands.ui:ui_command",
    "cluster": "orchestrator.commands.cluster:cluster_group",
}


class LazyGroup(click.Group):
    """A click group that imports each sub-command on first use and turns a UserError into one line, exit 2."""

    def __init__(self, *args, lazy_commands: dict[str, str], **kwargs):
        super().__init__(*args, **kwargs)
        self._lazy = lazy_commands

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._lazy))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self._lazy:
            module_name, attr = self._lazy[name].split(":")
            return getattr(importlib.import_module(module_name), attr)
        return super().get_command(ctx, name)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UserError as exc:
            click.echo(f"Error: {shown(str(exc), keep_newlines=exc.multiline)}", err=True)
            ctx.exit(2)
        except OSError as exc:
            if exc.filename is None or exc.errno not in PATH_ERRNOS:
                raise
            click.echo(f"Error: {shown(f'{exc.filename}: {exc.strerror}')}", err=True)
            ctx.exit(2)


@click.group(cls=LazyGroup, lazy_commands=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="resnetctl")
def main() -> None:
    """Reproduce and extend Deep Residual Learning (He et al., 2015) as a grid of tracked runs."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("DO_NOT_TRACK", "1")
