"""The paper's augmentations, once as FFCV pipeline stages and once per sample for the torch path.

Both paths share the crop geometry (the functions below are plain numpy, compiled by numba
inside FFCV and called directly by the torch path), so they differ only in JPEG decoder and
random draws:

- 32x32 data (CIFAR, digits), training: horizontal flip, 4-pixel pad and random 32 crop, all on the
  normalised batch (`random_flip_translate`, the same on both paths, one generator seeded by (seed,
  rank, epoch)). The mean image is subtracted before the flip, at each pixel's own place (as Caffe's
  data layer does), and the padding is added after it, so the border is exactly 0 in the network
  input (the usual reading of the paper's "4 pixels are padded on each side"); with channel
  normalisation the border is black, as torchvision's `RandomCrop(32, padding=4)` before `Normalize`.
- ImageNet training, "scale" (paper, Sec. 3.4): shorter side random in [256, 480], random 224
  crop, flip. Cropping a (224 * shorter / s)-pixel square and resizing it to 224 is the same
  geometry as resizing the shorter side to s and cropping 224, without the large intermediate.
- ImageNet training, "rrc": torchvision/FFCV RandomResizedCrop (the modern option).
- Training, optional (`lighting` > 0): AlexNet's PCA colour ("lighting") noise, a per-image RGB shift
  along ImageNet's principal components, applied to the batch and seeded by (seed, rank, epoch).
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

import numpy as np
import torch

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


def scale_aug_crop(height, width, scale, ratio):
    """Random square crop for the paper's scale augmentation: (i, j, h, w) in source pixels.

    scale = (min, max) shorter side after resizing; ratio[0] = output side (224).
    """
    shorter = min(height, width)
    target = np.random.uniform(scale[0], scale[1])
    side = int(round(ratio[0] * shorter / target))
    side = max(1, min(side, shorter))
    i = int(np.random.uniform(0, height - side + 1))
    j = int(np.random.uniform(0, width - side + 1))
    return i, j, side, side


def center_crop(height, width, ratio):
    """Centre square of side ratio * shorter side: FFCV's `get_center_crop` geometry."""
    side = int(ratio * min(height, width))
    return (height - side) // 2, (width - side) // 2, side, side


def ffcv_image_decoder(view: ViewSpec):
    """The FFCV decoder (first pipeline stage) that produces a fixed-size uint8 HWC image."""
    from ffcv.fields.decoders import (
        CenterCropRGBImageDecoder,
        RandomResizedCropRGBImageDecoder,
        SimpleRGBImageDecoder,
    )
    from ffcv.fields.rgb_image import ResizedCropRGBImageDecoder

    class ScaleAugRGBImageDecoder(ResizedCropRGBImageDecoder):
        """Paper scale augmentation as an FFCV decoder (crop + resize in one pass)."""

        def __init__(self, output_size: int, scale_range=SCALE_RANGE):
            super().__init__((output_size, output_size))
            self.scale = tuple(float(s) for s in scale_range)
            self.ratio = (float(output_size), float(output_size))

        @property
        def get_crop_generator(self):
            return scale_aug_crop

    if view.small:
        return SimpleRGBImageDecoder()
    size = view.decode_size
    if view.train:
        if view.train_crop == "rrc":
            return RandomResizedCropRGBImageDecoder((size, size))
        return ScaleAugRGBImageDecoder(size)
    return CenterCropRGBImageDecoder((size, size), ratio=view.eval_crop_ratio)


def ffcv_image_augmentations(view: ViewSpec, *, flip: bool = True) -> list:
    """FFCV stages after the decoder, on uint8 HWC batches.

    flip=False leaves the random flip out, for a later stage that fuses it (`FlipNormalizeToCHW`).
    """
    from ffcv.transforms import RandomHorizontalFlip

    ops: list = []  # 32x32 training: flip, pad and crop come after normalising (`random_flip_translate`)
    if view.train and flip and not view.small:
        ops.append(RandomHorizontalFlip(FLIP_PROB))
    return ops


# ----------------------------------------------------------------------- torch path (per sample)


def _random_resized_crop(height: int, width: int) -> tuple[int, int, int, int]:
    from ffcv.fields.rgb_image import get_random_crop

    return get_random_crop(height, width, np.array((0.08, 1.0)), np.array((3 / 4, 4 / 3)))


def torch_sample_view(image: np.ndarray, view: ViewSpec, rng: np.random.Generator) -> np.ndarray:
    """One decoded HxWx3 uint8 image -> the same fixed-size uint8 HWC view FFCV produces."""
    import cv2

    if not view.small:
        height, width = image.shape[:2]
        if view.train and view.train_crop == "rrc":
            i, j, h, w = _random_resized_crop(height, width)
        elif view.train:
            i, j, h, w = scale_aug_crop(height, width, SCALE_RANGE, (float(view.image_size),) * 2)
        else:
            i, j, h, w = center_crop(height, width, view.eval_crop_ratio)
        size = view.decode_size
        image = cv2.resize(image[i : i + h, j : j + w], (size, size), interpolation=cv2.INTER_AREA)
    if view.train and not view.small and rng.random() < FLIP_PROB:  # 32x32: on the batch, `random_flip_translate`
        image = image[:, ::-1]
    return np.array(image)  # a writable copy, never a view of the memory-mapped file


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


def lighting_offsets(batch: int, std: float, generator: torch.Generator) -> torch.Tensor:
    """AlexNet PCA lighting: per image, RGB shift eigvec @ (alpha * eigval), alpha ~ N(0, std); (B, 3) in 0..255."""
    alpha = torch.randn((batch, 3), generator=generator) * std
    return (alpha * torch.tensor(PCA_EIGVAL)) @ torch.tensor(PCA_EIGVEC).T * 255.0


def pad_frame(images: torch.Tensor, pad: int, fill: torch.Tensor) -> torch.Tensor:
    """Pad (B, C, H, W) by `pad` pixels with a per-channel fill value."""
    b, c, h, w = images.shape
    out = fill.view(1, c, 1, 1).to(images).expand(b, c, h + 2 * pad, w + 2 * pad).clone()
    out[..., pad : pad + h, pad : pad + w] = images
    return out


def random_flip_translate(images: torch.Tensor, pad: int, fill: torch.Tensor,
                          generator: torch.Generator) -> torch.Tensor:
    """The 32x32 training augmentation of a normalised (B, C, H, W) batch: each image mirrored with FLIP_PROB,
    padded by `pad` with `fill`, and an H x W window kept at a random offset in 0..2*pad on each axis (the draws
    from `generator`, on the CPU: the same on both paths)."""
    b, c, h, w = images.shape
    flips = (torch.rand(b, generator=generator) < FLIP_PROB).to(images.device)
    images = torch.where(flips.view(b, 1, 1, 1), images.flip(-1), images)
    frame = pad_frame(images, pad, fill).flatten(2)  # (B, C, (H + 2 pad) * (W + 2 pad))
    offsets = torch.randint(0, 2 * pad + 1, (b, 2), generator=generator).to(images.device)
    rows = offsets[:, :1] + torch.arange(h, device=images.device)  # (B, H)
    cols = offsets[:, 1:] + torch.arange(w, device=images.device)  # (B, W)
    index = (rows[:, :, None] * (w + 2 * pad) + cols[:, None, :]).flatten(1)  # (B, H * W)
    return frame.gather(2, index[:, None, :].expand(b, c, h * w)).view(b, c, h, w)
