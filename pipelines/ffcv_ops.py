"""A fused FFCV operation for CPU training: random flip + normalisation + HWC -> CHW in one pass.

FFCV's own stages (`RandomHorizontalFlip`, `NormalizeImage`, `ToTorchImage`) leave a
channels-last float batch that PyTorch must then copy into NCHW: three passes over every image,
and the last (a strided float copy on the main thread) cost more than JPEG decoding on 2 cores.
This stage reads each decoded uint8 HWC image once and writes the normalised float32 CHW image
straight into FFCV's output buffer, so the loader hands the model a contiguous NCHW batch.
Imported only when an FFCV loader is built (importing ffcv changes torch's thread count).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
from ffcv.pipeline.allocation_query import AllocationQuery
from ffcv.pipeline.compiler import Compiler
from ffcv.pipeline.operation import Operation
from ffcv.pipeline.state import State
from numpy.random import rand


class FlipNormalizeToCHW(Operation):
    """uint8 (H, W, C) images -> float32 (C, H, W), (x - mean) / std, each flipped with `flip_prob`.

    Random draws come from numba's generator inside FFCV's compiled code, as those of FFCV's own
    `RandomHorizontalFlip` do (FFCV 1.0 does not reseed it per epoch: flips are not replayed on resume).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], flip_prob: float = 0.0):
        super().__init__()
        mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
        # a 256-entry lookup per channel, as FFCV's NormalizeImage: one load instead of two flops
        self.table = ((np.arange(256)[:, None] - mean[None, :]) / std[None, :]).astype(np.float32)
        self.flip_prob = float(flip_prob)

    def generate_code(self) -> Callable:
        my_range = Compiler.get_iterator()
        table, flip_prob = self.table, self.flip_prob

        def flip_normalize_to_chw(images, dst):
            n, height, width, channels = images.shape
            flips = rand(n) < flip_prob
            for i in my_range(n):
                for y in range(height):
                    for x in range(width):
                        source_x = width - 1 - x if flips[i] else x
                        for c in range(channels):
                            dst[i, c, y, x] = table[images[i, y, source_x, c], c]
            return dst

        flip_normalize_to_chw.is_parallel = True
        return flip_normalize_to_chw

    def declare_state_and_memory(self, previous_state: State) -> tuple[State, AllocationQuery]:
        height, width, channels = previous_state.shape
        shape, dtype = (channels, height, width), np.dtype(np.float32)
        return replace(previous_state, jit_mode=True, shape=shape, dtype=dtype), AllocationQuery(shape, dtype)
