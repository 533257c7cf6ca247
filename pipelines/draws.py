"""Counter-based random draws: each a pure function of (seed, epoch, sample index, stream).

A stateful generator hands out numbers in the order it is asked, so what an image gets depends on
which thread decoded it, how many workers the loader has, where in its batch it fell and how many
ranks share the epoch: FFCV's compiled decoders drew from numba's unseeded per-thread state, and
neither a rerun nor a resumed run replayed them. Here every draw hashes its coordinates with
splitmix64 (Steele et al. 2014; the finaliser of Java's SplittableRandom), so the same image in the
same epoch of the same seed gets the same crop, flip and colour noise on any path, schedule or world
size. The functions are compiled by numba once (`cache=True`) and called both from FFCV's compiled
decoders and from the torch path, so the two paths compute bit-identical geometry.

Streams (the fourth coordinate) keep the draws of one image apart: flip, crop offsets, scale, the
RandomResizedCrop attempts, the three lighting components.
"""

from __future__ import annotations

import numba
import numpy as np

FLIP, OFFSET_Y, OFFSET_X, SCALE = 0, 1, 2, 3
RRC_AREA, RRC_RATIO = 10, 30  # + attempt (0..9)
LIGHTING = 50  # + 2 * component (+1): Box-Muller pairs

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)
_UNIT = 1.0 / 9007199254740992.0  # 2**-53


@numba.njit(cache=True)
def _mix(x):
    x = x + _GAMMA
    x = (x ^ (x >> _S30)) * _M1
    x = (x ^ (x >> _S27)) * _M2
    return x ^ (x >> _S31)


@numba.njit(cache=True)
def uniform(seed, epoch, index, stream):
    """A float64 in [0, 1) that depends on (seed, epoch, index, stream) only."""
    h = _mix(np.uint64(seed))
    h = _mix(h ^ np.uint64(epoch))
    h = _mix(h ^ np.uint64(index))
    h = _mix(h ^ np.uint64(stream))
    return np.float64(h >> _S11) * _UNIT


@numba.njit(cache=True)
def uniforms(seed, epoch, indices, stream):
    """`uniform` for each sample index of a batch (a float64 array)."""
    out = np.empty(len(indices), np.float64)
    for k in range(len(indices)):
        out[k] = uniform(seed, epoch, indices[k], stream)
    return out


@numba.njit(cache=True)
def normals(seed, epoch, indices, stream, count):
    """(len(indices), count) standard normal draws (Box-Muller on streams stream + 2c, stream + 2c + 1)."""
    out = np.empty((len(indices), count), np.float64)
    for k in range(len(indices)):
        for c in range(count):
            u1 = uniform(seed, epoch, indices[k], stream + 2 * c)
            u2 = uniform(seed, epoch, indices[k], stream + 2 * c + 1)
            out[k, c] = np.sqrt(-2.0 * np.log(1.0 - u1)) * np.cos(2.0 * np.pi * u2)
    return out


def batch_indices(indices) -> np.ndarray:
    """Sample indices (a tensor, list or array) as the int64 array the draws take."""
    return np.ascontiguousarray(np.asarray(indices, dtype=np.int64).reshape(-1))
