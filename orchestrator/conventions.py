"""Names shared by the writers (train loop, tracking) and the readers (report, status).

The MLflow store is the contract between `submit` and `report`: every tag, param and
metric key that both sides use is defined here once, so they cannot drift apart.
"""

from __future__ import annotations

from pipelines import detection_catalog
from training import metrics, numerics

# --- tags on every cell's MLflow run -------------------------------------------------
TAG_GRID = "resnetctl.grid"  # the grid's `name`
TAG_CELL_ID = "resnetctl.cell_id"  # stable hash of the resolved cell config
TAG_ARCH = "resnetctl.arch"  # readable model name, e.g. "resnet56-A", "plain20", "resnet50"
TAG_DATASET = "resnetctl.dataset"  # cifar10 | cifar100 | imagenet | digits
TAG_EVAL_PROTOCOL = "resnetctl.eval_protocol"  # "center" | "10crop" | "full" | "multiscale"
TAG_AXIS_PREFIX = "resnetctl.axis."  # one tag per grid axis: resnetctl.axis.depth = "56"
TAG_STATUS = "resnetctl.status"  # "finished" once the cell's final model is logged
TAG_PREEMPTIONS = "resnetctl.preemptions"  # restarts of the cell's trial after its node was preempted (free)
TAG_FAILURES = "resnetctl.failures"  # restarts of its trial charged to the failure budget

# --- tags of evaluation cells (a trained model, or an ensemble of several, re-tested once) ------
TAG_CELL_KIND = "resnetctl.cell_kind"  # KIND_EVALUATION; training runs carry no kind tag
TAG_SOURCE_RUN_ID = "resnetctl.source_run_id"  # the training run evaluated (an ensemble: its members', comma-joined)
TAG_SOURCE_GRID = "resnetctl.source_grid"  # the grid that trained it (an ensemble: comma-joined, distinct)
TAG_SOURCE_MODEL = "resnetctl.source_model"  # the model loaded: models:/<name>/<version> (ensemble: comma-joined)
TAG_ENSEMBLE = "resnetctl.ensemble"  # the ensemble's name in its grid; absent for a single model
TAG_ENSEMBLE_MEMBERS = "resnetctl.ensemble_members"  # its members, readable: "resnet50-B s0, resnet101-B s0"
TAG_EVAL_SPLIT = "resnetctl.eval_split"  # the split tested: "test", or "val" where it doubles as the test set

# --- experiment tags: one per grid tracked into the experiment ---------------------------
EXP_TAG_VERDICTS = "resnetctl.verdicts."  # + grid name: JSON {"claims": [...], "tolerance": x, "alpha": y}

# --- params (resolved config; logged once per run) -----------------------------------
PARAM_DEPTH = "depth"
PARAM_SHORTCUT = "shortcut"  # "plain" | "A" | "B" | "C"
PARAM_SEED = "seed"
PARAM_DATASET = "dataset"
PARAM_NUM_PARAMS = "num_params"  # parameter count of the built model
PARAM_MULT_ADDS = "mult_adds"  # multiply-adds for one image at the eval resolution
PARAM_TRAIN_IMAGES = "train_images"  # images of the split the cell trains on, from the prepared manifest
PARAM_TRAIN_SPLIT = "train_split"  # "train" (CIFAR's 45k) | "trainval" (all 50k: val is then not held out)
PARAM_NORMALIZATION = "normalization"  # "pixel_mean" (the paper) | "channel"
# what decides a run's numbers beyond its config, logged by rank 0 (`training.numerics`): numerics.device,
# numerics.torch, numerics.cuda, numerics.cudnn, numerics.threads_per_worker; with train.deterministic and
# resources.workers_per_cell, runs of one cell that match on all of them should end with the same numbers
NUMERICS_PREFIX = "numerics."
NUMERICS_PARAMS = tuple(NUMERICS_PREFIX + fact for fact in numerics.FACTS)

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
M_PLATEAU_DROPS = "plateau_drops"  # how many times the plateau rule divided the rate (ImageNet, Sec. 3.4)
M_GPU_HOURS = "gpu_hours"
M_LAYER_RESPONSE = "layer_response_std"  # Fig. 7: one value per 3x3 conv, step = layer index (0-based)
M_LAYER_RESPONSE_MEAN = "layer_response_mean"  # their mean over the layers: what Fig. 7's claims compare
FINAL_PREFIX = metrics.FINAL_PREFIX  # "final_val_err", ...: the final test where the epochs used a cheaper view
M_EVAL_IMAGES = "eval_images"  # evaluation cells: how many images the protocol scored
M_MEMBER_ERR = "member_err"  # an ensemble's members, each alone: step = member index (TAG_ENSEMBLE_MEMBERS order)
M_MEMBER_TOP5_ERR = "member_top5_err"

# --- system metrics and dataset inputs ---------------------------------------------------
SYSTEM_METRICS_INTERVAL_S = 10.0  # MLflow's system-metrics sampler on rank 0 (metrics named system/...)
INPUT_CONTEXT_TAG = "mlflow.data.context"  # MLflow's own tag on a dataset input
INPUT_CONTEXT_TRAINING = "training"

# --- artifacts -------------------------------------------------------------------------
ARTIFACT_MODEL = "model"  # mlflow.pytorch.log_model name
ARTIFACT_LAYER_RESPONSES = "layer_responses.json"
ARTIFACT_CURVES = "curves.json"


def param_train(field: str) -> str:
    """Param key of one resolved TrainConfig field, e.g. param_train("lr") -> "train.lr"."""
    return f"train.{field}"


def param_numerics(fact: str) -> str:
    """Param key of one of `training.numerics.FACTS`, e.g. param_numerics("torch") -> "numerics.torch"."""
    return NUMERICS_PREFIX + fact


def axis_tag(axis: str) -> str:
    """Tag key for one grid axis, e.g. axis_tag("depth") -> "resnetctl.axis.depth"."""
    return TAG_AXIS_PREFIX + axis


def verdicts_tag(grid: str) -> str:
    """Experiment tag key holding one grid's claims and verdict settings: "resnetctl.verdicts.quickstart"."""
    return EXP_TAG_VERDICTS + grid


def registered_model_name(dataset: str, arch: str) -> str:
    """One registered model per architecture and dataset: "cifar10-resnet56-A"."""
    return f"{dataset}-{arch}"


def run_name(arch: str, dataset: str, seed: int) -> str:
    """The MLflow run / Tune trial name of a cell: "resnet56-A-cifar10-s0"."""
    return f"{arch}-{dataset}-s{seed}"


# --- values of TAG_EVAL_PROTOCOL, TAG_CELL_KIND and TAG_STATUS (added for the report) -------
EVAL_CENTER = "center"
EVAL_10CROP = "10crop"
EVAL_FULL = "full"
EVAL_MULTISCALE = "multiscale"  # fully-convolutional multi-scale testing (paper Table 4)
KIND_EVALUATION = "evaluation"
STATUS_FINISHED = "finished"
STATUS_RUNNING = "running"
STATUS_FAILED = "failed"

# --- detection cells: Faster R-CNN on one of our ResNets (paper Appendix A, Tables 7-8) -------
KIND_DETECTION = "detection"  # TAG_CELL_KIND of a detection run; its TAG_ARCH is the backbone ("resnet101-B")
TAG_BACKBONE_INIT = "resnetctl.backbone_init"  # "scratch" or the registered model: models:/<name>/<version>
TAG_DETECTION_ARRANGEMENT = "resnetctl.detection_arrangement"  # "c4" (the paper) | "fpn" (a departure)
PARAM_TRAIN_SPLITS = "train_splits"  # the prepared splits a detection cell trains on, "+"-joined: "2007_trainval+2012_trainval"
PARAM_TEST_SPLIT = "test_split"  # the split its mAP is measured on: "2007_test", "val2014"
M_MAP_VOC07 = detection_catalog.MAP_VOC07  # percent; see pipelines.detection_catalog
M_MAP_VOC = detection_catalog.MAP_VOC
M_COCO_MAP = detection_catalog.MAP_COCO
M_COCO_MAP50 = detection_catalog.MAP_COCO50
M_TEST_IMAGES = detection_catalog.TEST_IMAGES
