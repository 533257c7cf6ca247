"""Names every layer of resnetctl may import: models, pipelines, cluster, orchestrator and the CLI alike.

`resnetctl.errors.UserError` is the one base of every error that bad input from the user
causes; the CLI catches it in one place and prints it as one line. This package imports
nothing heavy (no torch, Ray, MLflow, click), so the lightest module can depend on it.
"""
