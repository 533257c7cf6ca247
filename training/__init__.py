"""How one worker trains a network: the config, the learning-rate schedule, checkpoints and the trainer.

Knows nothing of Ray or MLflow (`orchestrator/train_entry.py` wires this into Ray Train and MLflow),
so a benchmark or a test can run the very loop a cell runs. The config imports without torch; the
trainer and checkpoints load it on first use.
"""

from __future__ import annotations

from resnetctl.lazy import lazy_attributes
from training.config import AMP_MODES, TrainConfig

_LAZY: dict[str, str] = {
    "PresetSchedule": "training.schedule",
    "Trainer": "training.trainer",
    "save_checkpoint": "training.checkpoint",
    "load_checkpoint": "training.checkpoint",
    "CHECKPOINT_FILE": "training.checkpoint",
}

__all__ = ["AMP_MODES", "TrainConfig", *_LAZY]


__getattr__ = lazy_attributes(__name__, _LAZY)
