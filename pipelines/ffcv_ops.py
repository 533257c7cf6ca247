"""A fused FFCV operation for CPU training: normalisation + HWC -> CHW in one pass.

FFCV's own stages (`NormalizeImage`, `ToTorchImage`) leave a
channels-last float batch that PyTorch must then copy into NCHW: two passes over every image,
and the last (a strided float copy on the main thread) cost more than JPEG decoding on 2 cores.
This stage reads each decoded uint8 HWC image once and writes the normalised float32 CHW image
straight into FFCV's output buffer, so the loader hands the model a contiguous NCHW batch.
Imported only when an FFCV loader is built (importing ffcv changes torch's thread count). Random
flips are the decoder's (`pipelines.augment.SeededCropRGBImageDecoder`), drawn per sample index.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
from ffcv.pipeline.allocation_query import AllocationQuery
from ffcv.pipeline.compiler import Compiler
from ffcv.pipeline.operation import Operation
from ffcv.pipeline.state import State


class NormalizeToCHW(Operation):
    """uint8 (H, W, C) images -> float32 (C, H, W), (x - mean) / std."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
        # a 256-entry lookup per channel, as FFCV's NormalizeImage: one load instead of two flops
        self.table = ((np.arange(256)[:, None] - mean[None, :]) / std[None, :]).astype(np.float32)

    def generate_code(self) -> Callable:
        my_range = Compiler.get_iterator()
        table = self.table

        def normalize_to_chw(images, dst):
            n, height, width, channels = images.shape
            for i in my_range(n):
                for y in range(height):
                    for x in range(width):
                        for c in range(channels):
                            dst[i, c, y, x] = table[images[i, y, x, c], c]
            return dst

        normalize_to_chw.is_parallel = True
        return normalize_to_chw

    def declare_state_and_memory(self, previous_state: State) -> tuple[State, AllocationQuery]:
        height, width, channels = previous_state.shape
        shape, dtype = (channels, height, width), np.dtype(np.float32)
        return replace(previous_state, jit_mode=True, shape=shape, dtype=dtype), AllocationQuery(shape, dtype)
