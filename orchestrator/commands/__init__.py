"""One module per `resnetctl` sub-command (see orchestrator.cli.COMMANDS)."""
