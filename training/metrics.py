"""The names of the numbers a trainer reports each epoch (the MLflow metric keys, via orchestrator.conventions)."""

TRAIN_LOSS = "train_loss"
TRAIN_ERR = "train_err"  # top-1 training error in percent, over the epoch
VAL_ERR = "val_err"  # top-1 error in percent
VAL_TOP5_ERR = "val_top5_err"
TEST_ERR = "test_err"
TEST_TOP5_ERR = "test_top5_err"
LR = "lr"
IMAGES_PER_S = "images_per_s"
ITERATION = "iteration"  # global optimiser steps done at the end of the epoch

EPOCH_METRICS = (TRAIN_LOSS, TRAIN_ERR, VAL_ERR, VAL_TOP5_ERR, TEST_ERR, TEST_TOP5_ERR, LR, IMAGES_PER_S, ITERATION)


def split_errors(split: str) -> tuple[str, str]:
    """The top-1 and top-5 error keys of an evaluation split ("val" or "test")."""
    return f"{split}_err", f"{split}_top5_err"


# The final test (`eval_protocol`, once after the last epoch) of a run whose epochs validated with a
# cheaper view: "final_val_err", ... logged once; the report prefers these to the last epoch's values.
FINAL_PREFIX = "final_"


def final_errors(split: str) -> tuple[str, str]:
    """The top-1 and top-5 error keys of a split's final test."""
    top1, top5 = split_errors(split)
    return FINAL_PREFIX + top1, FINAL_PREFIX + top5
