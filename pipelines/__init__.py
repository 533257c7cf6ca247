"""Datasets to FFCV files, the paper's augmentations and sharded loaders. Knows nothing of Ray or MLflow."""

import torch as _torch

_threads = _torch.get_num_threads()
try:  # importing ffcv sets torch's thread count to 1 (its compiler's default): import it once, here
    import ffcv as _ffcv  # noqa: F401
except ImportError:  # the torch loader path still works on prepared data written elsewhere
    pass
finally:
    _torch.set_num_threads(_threads)

from pipelines.loaders import build_loader, shard_positions  # noqa: E402
from pipelines.manifest import DatasetError, load_manifest  # noqa: E402
from pipelines.prepare import prepare_dataset  # noqa: E402

__all__ = ["DatasetError", "build_loader", "load_manifest", "prepare_dataset", "shard_positions"]
