"""Image transforms (torchvision transforms v2) from the 256 px shard JPEGs to model inputs.

No colour augmentation in the supervised and contrastive pipelines: colour is what the synthetic
benchmark's pictures encode, and hateful memes' meaning does not survive a hue shift either.

The streamed training path splits the training transform in two, for speed:
:class:`RandomResizedCropFlip` turns each decoded image into a small ``uint8`` tensor in one PIL
resample, and :func:`batch_normalize` converts and normalises a whole stacked batch at once. Its
:attr:`~RandomResizedCropFlip.min_side` tells the decoder how far a JPEG can be shrunk while decoding
(:func:`nbhelpers.data.image.decode_rgb`) with every crop still a downscale.
"""

from __future__ import annotations

import math

import torch
from PIL import Image
from torchvision import transforms as v1
from torchvision.transforms import v2

# open_clip's OPENAI_DATASET_MEAN / STD: what every CLIP tower here was trained with.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def train_transform(
    size: int, mean: tuple[float, ...] = CLIP_MEAN, std: tuple[float, ...] = CLIP_STD, min_scale: float = 0.6
) -> v2.Compose:
    """Random resized crop (keeping at least ``min_scale`` of the area) and flip, then normalise."""
    return v2.Compose(
        [
            v2.ToImage(),
            v2.RandomResizedCrop(size, scale=(min_scale, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean, std),
        ]
    )


def eval_transform(
    size: int, mean: tuple[float, ...] = CLIP_MEAN, std: tuple[float, ...] = CLIP_STD
) -> v2.Compose:
    """Resize the (square) shard image to ``size``, then normalise."""
    return v2.Compose(
        [
            v2.ToImage(),
            v2.Resize(size, antialias=True),
            v2.CenterCrop(size),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean, std),
        ]
    )


class RandomResizedCropFlip:
    """Random resized crop and horizontal flip of a PIL image, to a ``uint8`` tensor (3, size, size).

    The same augmentation as ``v2.RandomResizedCrop(size, scale=(min_scale, 1), ratio=ratio)`` followed
    by ``v2.RandomHorizontalFlip()`` and ``v2.PILToTensor()`` (crop parameters drawn by torchvision, from
    torch's global RNG), but the crop and the resize are one PIL resample of the cropped box (bilinear,
    antialiased) and no float image is made per sample: :func:`batch_normalize` does that per batch.

    Args:
        size: side of the output.
        min_scale: the smallest crop, as a fraction of the image's area.
        ratio: the range of the crop's aspect ratio (width / height).
    """

    def __init__(self, size: int, min_scale: float = 0.6, ratio: tuple[float, float] = (3 / 4, 4 / 3)):
        if not 0.0 < min_scale <= 1.0:
            raise ValueError(f"min_scale must be in (0, 1], got {min_scale}")
        self.size, self.scale, self.ratio = size, (min_scale, 1.0), ratio

    @property
    def min_side(self) -> int:
        """The shorter side an input needs for the smallest crop to be at least ``size`` on each side.

        A crop of area ``a`` and aspect ``r`` is ``sqrt(a r)`` wide and ``sqrt(a / r)`` high, so its
        shorter side is at least ``sqrt(min_scale * min(r_lo, 1 / r_hi))`` of the image's.
        """
        narrowest = min(self.ratio[0], 1.0 / self.ratio[1], 1.0)
        return math.ceil(self.size / math.sqrt(self.scale[0] * narrowest) - 1e-9)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        top, left, height, width = v1.RandomResizedCrop.get_params(img, self.scale, self.ratio)
        box = (left, top, left + width, top + height)
        out = img.resize((self.size, self.size), Image.Resampling.BILINEAR, box=box)
        if torch.rand(1) < 0.5:
            out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return v2.functional.pil_to_tensor(out)

    def __repr__(self) -> str:
        return f"RandomResizedCropFlip(size={self.size}, scale={self.scale}, ratio={self.ratio})"


def batch_normalize(mean: tuple[float, ...] = CLIP_MEAN, std: tuple[float, ...] = CLIP_STD) -> v2.Compose:
    """``uint8`` images (B, 3, H, W) -> float32 in [0, 1], normalised by ``mean`` and ``std``."""
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])
