"""Image transforms (torchvision transforms v2) from the 256 px shard JPEGs to model inputs.

No colour augmentation in the supervised and contrastive pipelines: colour is what the synthetic
benchmark's pictures encode, and hateful memes' meaning does not survive a hue shift either.
"""

from __future__ import annotations

import torch
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
