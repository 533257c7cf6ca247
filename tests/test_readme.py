"""The README documents what the code declares: its settings tables are the CLI's own output."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from orchestrator.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"<!-- resnetctl fields: begin -->\n(.*?)\n<!-- resnetctl fields: end -->", re.S)


def test_readme_settings_tables_are_what_resnetctl_fields_prints():
    documented = BLOCK.search(README.read_text())
    assert documented is not None, "README.md lost its `resnetctl fields` block"
    printed = CliRunner().invoke(main, ["fields"])
    assert printed.exit_code == 0, printed.output
    assert documented.group(1).strip() == printed.output.strip(), (
        "README.md's settings tables drifted from `resnetctl fields`: paste its output between the markers")


def test_every_training_setting_is_documented_with_its_bounds():
    from training.config import TrainConfig

    text = BLOCK.search(README.read_text()).group(1)
    for name in TrainConfig.model_fields:
        assert f"| `{name}` |" in text, name
    assert "| `batch_size` | integer, >= 1, <= 65536 |" in text
