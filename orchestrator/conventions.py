"""Names shared by the writers (train loop, tracking) and the readers (report, status).

The MLflow store is the contract between `submit` and `report`: every tag, param and
metric key that both sides use is defined here once, so they cannot drift apart.
"""

from __future__ import annotations

from training import metrics

# --- tags on every cell's MLflow run -------------------------------------------------
TAG_GRID = "resnetctl.grid"  # the grid's `name`
TAG_CELL_ID = "resnetctl.cell_id"  # stable hash of the resolved cell config
TAG_ARCH = "resnetctl.arch"  # readable model name, e.g. "resnet56-A", "plain20", "resnet50"
TAG_DATASET = "resnetctl.dataset"  # cifar10 | cifar100 | imagenet | digits
TAG_EVAL_PROTOCOL = "resnetctl.eval_protocol"  # "center" | "10crop" | "full" | "multiscale"
TAG_AXIS_PREFIX = "resnetctl.axis."  # one tag per grid axis: resnetctl.axis.depth = "56"
TAG_STATUS = "resnetctl.status"  # "finished" once the cell's final model is logged

# --- params (resolved config; logged once per run) -----------------------------------
PARAM_DEPTH = "depth"
PARAM_SHORTCUT = "shortcut"  # "plain" | "A" | "B" | "C"
PARAM_SEED = "seed"
PARAM_DATASET = "dataset"
PARAM_NUM_PARAMS = "num_params"  # parameter count of the built model
PARAM_MULT_ADDS = "mult_adds"  # multiply-adds for one image at the eval resolution

# --- metrics, logged per epoch with step = epoch (1-based): the trainer's own names ---------
M_TRAIN_LOSS = metrics.TRAIN_LOSS
M_TRAIN_ERR = metrics.TRAIN_ERR
M_VAL_ERR = metrics.VAL_ERR
M_VAL_TOP5_ERR = metrics.VAL_TOP5_ERR
M_TEST_ERR = metrics.TEST_ERR
M_TEST_TOP5_ERR = metrics.TEST_TOP5_ERR
M_LR = metrics.LR
M_IMAGES_PER_S = metrics.IMAGES_PER_S
M_ITERATION = metrics.ITERATION
EPOCH_METRICS = metrics.EPOCH_METRICS
# --- metrics logged once, at the end --------------------------------------------------
M_WORKER_HOURS = "worker_hours"
M_GPU_HOURS = "gpu_hours"
M_LAYER_RESPONSE = "layer_response_std"  # Fig. 7: one value per 3x3 conv, step = layer index (0-based)

# --- artifacts -------------------------------------------------------------------------
ARTIFACT_MODEL = "model"  # mlflow.pytorch.log_model name
ARTIFACT_LAYER_RESPONSES = "layer_responses.json"
ARTIFACT_CURVES = "curves.json"


def axis_tag(axis: str) -> str:
    """Tag key for one grid axis, e.g. axis_tag("depth") -> "resnetctl.axis.depth"."""
    return TAG_AXIS_PREFIX + axis


def registered_model_name(dataset: str, arch: str) -> str:
    """One registered model per architecture and dataset: "cifar10-resnet56-A"."""
    return f"{dataset}-{arch}"


def run_name(arch: str, dataset: str, seed: int) -> str:
    """The MLflow run / Tune trial name of a cell: "resnet56-A-cifar10-s0"."""
    return f"{arch}-{dataset}-s{seed}"


# --- values of TAG_EVAL_PROTOCOL and TAG_STATUS (added for the report) ------------------
EVAL_CENTER = "center"
EVAL_10CROP = "10crop"
EVAL_FULL = "full"
EVAL_MULTISCALE = "multiscale"  # fully-convolutional multi-scale testing (paper Table 4)
STATUS_FINISHED = "finished"
STATUS_RUNNING = "running"
STATUS_FAILED = "failed"
