"""The paper's augmentations, once as FFCV pipeline stages and once per sample for the torch path.

Both paths share the crop geometry and every random draw: the functions below are compiled by
numba once and called both from FFCV's compiled decoders and directly by the torch path, and each
draw is a function of (seed, epoch, sample index) alone (`pipelines.draws`), never of a thread's,
worker's or batch's generator. So a rerun replays a run, a resumed run replays the uninterrupted one
from its epoch on, and the two paths give the same image the same crop, flip and colour noise (their
JPEG decoders and resizers still differ by rounding):

- 32x32 data (CIFAR, digits), training: horizontal flip, 4-pixel pad and random 32 crop, all on the
  normalised batch (`random_flip_translate`, the same on both paths, drawn per sample index by
  `flip_translate_draws`). The mean image is subtracted before the flip, at each pixel's own place (as
  Caffe's data layer does), and the padding is added after it, so the border is exactly 0 in the network
  input (the usual reading of the paper's "4 pixels are padded on each side"); with channel
  normalisation the border is black, as torchvision's `RandomCrop(32, padding=4)` before `Normalize`.
- ImageNet training, "scale" (paper, Sec. 3.4): shorter side random in [256, 480], random 224
  crop, flip. Cropping a (224 * shorter / s)-pixel square and resizing it to 224 is the same
  geometry as resizing the shorter side to s and cropping 224, without the large intermediate. The
  flip is done by the decoder too (`SeededCropRGBImageDecoder`), from the same draws.
- ImageNet training, "rrc": torchvision/FFCV RandomResizedCrop (the modern option).
- Training, optional (`lighting` > 0): AlexNet's PCA colour ("lighting") noise, a per-image RGB shift
  along ImageNet's principal components, applied to the batch, drawn per sample index.
- Evaluation "center": ImageNet resize 256 + centre 224 crop; 32x32 data as is.
  "full": ImageNet centre 256x256 square (for the fully-convolutional form); 32x32 as is.
  "10crop": four corners + centre of a 256 square (32x32: of the 40x40 padded frame) and their
  mirror images, as (B, 10, C, H, W).
  "multiscale" (ImageNet, Table 4): the centre square of the whole shorter side at 640 pixels;
  `multiscale_views` then gives it at each side of MULTISCALE_SIDES and mirrored, for the
  fully-convolutional network to score. The paper scores the whole rectangle; one square per
  image lets a batch share one shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import torch

from pipelines import draws
from pipelines.catalog import EVAL_RESIZE, MULTISCALE_SIDES

SMALL_IMAGE = 64  # sides up to this are "CIFAR-like": stored raw, padded-crop augmentation
CIFAR_PAD = 4
SCALE_RANGE = (256.0, 480.0)
TRAIN_CROPS = ("scale", "rrc")
FLIP_PROB = 0.5


@dataclass(frozen=True)
class ViewSpec:
    """What one loader does to an image, independent of which path implements it."""

    image_size: int  # network input side
    train: bool
    eval_protocol: str = "center"
    train_crop: str = "scale"

    @property
    def small(self) -> bool:
        return self.image_size <= SMALL_IMAGE

    @property
    def decode_size(self) -> int:
        """Side of the square each sample is decoded to (before any batch-level ten-crop)."""
        if self.small:
            return self.image_size
        if not self.train and self.eval_protocol == "multiscale":
            return MULTISCALE_SIDES[-1]
        if not self.train and self.eval_protocol in ("full", "10crop"):
            return EVAL_RESIZE
        return self.image_size

    @property
    def eval_crop_ratio(self) -> float:
        """Side of the evaluation's centre square as a fraction of the shorter side."""
        return 1.0 if self.eval_protocol in ("full", "10crop", "multiscale") else self.image_size / EVAL_RESIZE

    @property
    def ten_crop(self) -> bool:
        return not self.train and self.eval_protocol == "10crop"


# ----------------------------------------------------------------------- crop geometry


@numba.njit(cache=True)
def scale_aug_crop(height, width, scale_min, scale_max, output, seed, epoch, index):
    """The paper's scale augmentation as a square crop (i, j, h, w) in source pixels, drawn for one sample.

    The shorter side after resizing is uniform in [scale_min, scale_max]; `output` is the network's side (224).
    """
    height, width = np.int64(height), np.int64(width)
    shorter = min(height, width)
    target = scale_min + draws.uniform(seed, epoch, index, draws.SCALE) * (scale_max - scale_min)
    side = max(1, min(np.int64(round(output * shorter / target)), shorter))
    i = np.int64(draws.uniform(seed, epoch, index, draws.OFFSET_Y) * (height - side + 1))
    j = np.int64(draws.uniform(seed, epoch, index, draws.OFFSET_X) * (width - side + 1))
    return i, j, side, side


@numba.njit(cache=True)
def random_resized_crop(height, width, seed, epoch, index):
    """torchvision's / FFCV's RandomResizedCrop (area 0.08-1, ratio 3/4-4/3, ten attempts), drawn for one sample."""
    height, width = np.int64(height), np.int64(width)
    area = height * width
    log_lo, log_hi = np.log(3.0 / 4.0), np.log(4.0 / 3.0)
    for attempt in range(10):
        target_area = area * (0.08 + draws.uniform(seed, epoch, index, draws.RRC_AREA + attempt) * 0.92)
        aspect = np.exp(log_lo + draws.uniform(seed, epoch, index, draws.RRC_RATIO + attempt) * (log_hi - log_lo))
        w = np.int64(round(np.sqrt(target_area * aspect)))
        h = np.int64(round(np.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            i = np.int64(draws.uniform(seed, epoch, index, draws.OFFSET_Y) * (height - h + 1))
            j = np.int64(draws.uniform(seed, epoch, index, draws.OFFSET_X) * (width - w + 1))
            return i, j, h, w
    in_ratio = width / height
    w, h = width, height
    if in_ratio < 3.0 / 4.0:
        h = np.int64(round(w / (3.0 / 4.0)))
    elif in_ratio > 4.0 / 3.0:
        w = np.int64(round(h * (4.0 / 3.0)))
    return (height - h) // 2, (width - w) // 2, h, w


@numba.njit(cache=True)
def flip_draw(seed, epoch, index):
    """Whether this sample is mirrored in this epoch (probability FLIP_PROB)."""
    return draws.uniform(seed, epoch, index, draws.FLIP) < FLIP_PROB


@numba.njit(cache=True)
def train_crop(height, width, crop, output, seed, epoch, index):
    """The training crop of one sample: "scale" (crop 0, the paper) or "rrc" (crop 1)."""
    if crop == 1:
        return random_resized_crop(height, width, seed, epoch, index)
    return scale_aug_crop(height, width, SCALE_RANGE[0], SCALE_RANGE[1], output, seed, epoch, index)


def center_crop(height, width, ratio):
    """Centre square of side ratio * shorter side: FFCV's `get_center_crop` geometry."""
    side = int(ratio * min(height, width))
    return (height - side) // 2, (width - side) // 2, side, side


def ffcv_image_decoder(view: ViewSpec, seed: int = 0):
    """The FFCV decoder (first pipeline stage) that produces a fixed-size uint8 HWC image.

    Training on ImageNet-size data: `SeededCropRGBImageDecoder`, whose `epoch` the loader sets before
    each epoch (FFCV then recompiles it: the epoch is a constant of the compiled code).
    """
    from ffcv.fields.decoders import CenterCropRGBImageDecoder, SimpleRGBImageDecoder

    if view.small:
        return SimpleRGBImageDecoder()
    size = view.decode_size
    if view.train:
        return _seeded_decoder_class()(size, crop=view.train_crop, seed=seed)
    return CenterCropRGBImageDecoder((size, size), ratio=view.eval_crop_ratio)


def _seeded_decoder_class():
    from ffcv.fields.rgb_image import IMAGE_MODES, ResizedCropRGBImageDecoder
    from ffcv.libffcv import imdecode, resize_crop
    from ffcv.pipeline.compiler import Compiler

    class SeededCropRGBImageDecoder(ResizedCropRGBImageDecoder):
        """Crop (paper scale augmentation or RandomResizedCrop) + resize + flip in one pass, every draw a
        function of (seed, epoch, sample index): FFCV hands the decoder the batch's sample indices."""

        def __init__(self, output_size: int, *, crop: str, seed: int):
            super().__init__((output_size, output_size))
            self.crop, self.seed, self.epoch = TRAIN_CROPS.index(crop), int(seed), 0

        def generate_code(self):
            jpg, mem_read, my_range = IMAGE_MODES["jpg"], self.memory_read, Compiler.get_iterator()
            imdecode_c, resize_crop_c = Compiler.compile(imdecode), Compiler.compile(resize_crop)
            crop, output, seed, epoch = self.crop, float(self.output_size[0]), self.seed, self.epoch

            def decode(batch_indices, my_storage, metadata, storage_state):
                destination, temp_storage = my_storage
                for dst_ix in my_range(len(batch_indices)):
                    source_ix = batch_indices[dst_ix]
                    field = metadata[source_ix]
                    image_data = mem_read(field["data_ptr"], storage_state)
                    height, width = np.uint32(field["height"]), np.uint32(field["width"])
                    if field["mode"] == jpg:
                        temp_buffer = temp_storage[dst_ix]
                        imdecode_c(image_data, temp_buffer, height, width, height, width, 0, 0, 1, 1, False, False)
                        temp_buffer = temp_buffer.reshape(-1)[: 3 * height * width].reshape(height, width, 3)
                    else:
                        temp_buffer = image_data.reshape(height, width, 3)
                    i, j, h, w = train_crop(height, width, crop, output, seed, epoch, source_ix)
                    resize_crop_c(temp_buffer, i, i + h, j, j + w, destination[dst_ix])
                    if flip_draw(seed, epoch, source_ix):
                        mirror_in_place(destination[dst_ix])
                return destination[: len(batch_indices)]

            decode.is_parallel = True
            return decode

        @property
        def get_crop_generator(self):  # abstract in FFCV; `generate_code` draws its own crops
            return None

    return SeededCropRGBImageDecoder


@numba.njit(cache=True)
def mirror_in_place(image):
    """Flip an (H, W, C) image left-right in place."""
    height, width, channels = image.shape
    for y in range(height):
        for x in range(width // 2):
            for c in range(channels):
                image[y, x, c], image[y, width - 1 - x, c] = image[y, width - 1 - x, c], image[y, x, c]


# ----------------------------------------------------------------------- torch path (per sample)


def torch_sample_view(image: np.ndarray, view: ViewSpec, seed: int, epoch: int, index: int) -> np.ndarray:
    """One decoded HxWx3 uint8 image -> the same fixed-size uint8 HWC view FFCV produces, with the same draws."""
    import cv2

    if view.small:  # 32x32: flip, pad and crop on the batch, `random_flip_translate`
        return np.array(image)  # a writable copy, never a view of the memory-mapped file
    height, width = image.shape[:2]
    if view.train:
        crop = TRAIN_CROPS.index(view.train_crop)
        i, j, h, w = train_crop(height, width, crop, float(view.image_size), seed, epoch, index)
    else:
        i, j, h, w = center_crop(height, width, view.eval_crop_ratio)
    size = view.decode_size
    image = cv2.resize(image[i : i + h, j : j + w], (size, size), interpolation=cv2.INTER_AREA)
    if view.train and flip_draw(seed, epoch, index):
        image = image[:, ::-1]
    return np.array(image)


# ----------------------------------------------------------------------- batch level (both paths)


def ten_crop(images: torch.Tensor, crop: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, 10, C, crop, crop): corners, centre, then the same five mirrored."""
    h, w = images.shape[-2:]
    top, left = (h - crop) // 2, (w - crop) // 2
    boxes = [(0, 0), (0, w - crop), (h - crop, 0), (h - crop, w - crop), (top, left)]
    five = [images[..., y : y + crop, x : x + crop] for y, x in boxes]
    return torch.stack(five + [c.flip(-1) for c in five], dim=1)


def multiscale_views(images: torch.Tensor, sides: tuple[int, ...] = MULTISCALE_SIDES):
    """(B, C, S, S) squares at the largest side -> each side in `sides`, then mirrored (Table 4 testing)."""
    import torch.nn.functional as F

    for side in sides:
        view = images if side == images.shape[-1] else F.interpolate(
            images, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
        yield view
        yield view.flip(-1)


# ImageNet's RGB principal components (pixel values in 0..1), as AlexNet's colour augmentation uses
# them (the paper's [21]); constants from fb.resnet.torch, which the paper's authors trained with.
PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
PCA_EIGVEC = ((-0.5675, 0.7192, 0.4009), (-0.5808, -0.0045, -0.8140), (-0.5836, -0.6948, 0.4203))


def lighting_offsets(std: float, seed: int, epoch: int, indices: np.ndarray) -> torch.Tensor:
    """AlexNet PCA lighting: per image, RGB shift eigvec @ (alpha * eigval), alpha ~ N(0, std) drawn for each
    sample index; (B, 3) in 0..255."""
    alpha = torch.from_numpy(draws.normals(seed, epoch, draws.batch_indices(indices), draws.LIGHTING, 3)).float()
    return (alpha * std * torch.tensor(PCA_EIGVAL)) @ torch.tensor(PCA_EIGVEC).T * 255.0


def pad_frame(images: torch.Tensor, pad: int, fill: torch.Tensor) -> torch.Tensor:
    """Pad (B, C, H, W) by `pad` pixels with a per-channel fill value."""
    b, c, h, w = images.shape
    out = fill.view(1, c, 1, 1).to(images).expand(b, c, h + 2 * pad, w + 2 * pad).clone()
    out[..., pad : pad + h, pad : pad + w] = images
    return out


def flip_translate_draws(pad: int, seed: int, epoch: int, indices) -> tuple[torch.Tensor, torch.Tensor]:
    """The 32x32 training draws of a batch: (B,) flips and (B, 2) window offsets in 0..2*pad, per sample index."""
    indices = draws.batch_indices(indices)
    flips = draws.uniforms(seed, epoch, indices, draws.FLIP) < FLIP_PROB
    rows = draws.uniforms(seed, epoch, indices, draws.OFFSET_Y) * (2 * pad + 1)
    cols = draws.uniforms(seed, epoch, indices, draws.OFFSET_X) * (2 * pad + 1)
    return torch.from_numpy(flips), torch.from_numpy(np.stack([rows, cols], 1).astype(np.int64))


def random_flip_translate(images: torch.Tensor, pad: int, fill: torch.Tensor, flips: torch.Tensor,
                          offsets: torch.Tensor) -> torch.Tensor:
    """The 32x32 training augmentation of a normalised (B, C, H, W) batch: image k mirrored where flips[k],
    padded by `pad` with `fill`, and an H x W window kept at offsets[k] (row, column) in 0..2*pad
    (`flip_translate_draws`)."""
    b, c, h, w = images.shape
    flips = flips.to(images.device)
    images = torch.where(flips.view(b, 1, 1, 1), images.flip(-1), images)
    frame = pad_frame(images, pad, fill).flatten(2)  # (B, C, (H + 2 pad) * (W + 2 pad))
    offsets = offsets.to(images.device)
    rows = offsets[:, :1] + torch.arange(h, device=images.device)  # (B, H)
    cols = offsets[:, 1:] + torch.arange(w, device=images.device)  # (B, W)
    index = (rows[:, :, None] * (w + 2 * pad) + cols[:, None, :]).flatten(1)  # (B, H * W)
    return frame.gather(2, index[:, None, :].expand(b, c, h * w)).view(b, c, h, w)
