"""Datasets to FFCV files, the paper's augmentations and sharded loaders. Knows nothing of Ray or MLflow."""
