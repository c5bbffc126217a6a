"""A split held in memory as tensors, for datasets that fit (the demo benchmark, probes, evaluation).

The split is read once through the same WebDataset pipeline as streaming training (explicit decoding,
skips counted), resized to the model's input size and kept as ``uint8``; batches are then drawn from
memory in a seeded order (:mod:`nbhelpers.data.sampler`), so an epoch on a CPU costs model time, not
JPEG decoding.
Streaming (:func:`nbhelpers.data.loader.make_pipeline` with ``train=True``) remains the path for data
that does not fit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torchvision.transforms import v2

from nbhelpers.data.loader import make_loader, make_pipeline
from nbhelpers.data.sampler import SeededBatchSampler, derived_seed
from nbhelpers.data.transforms import CLIP_MEAN, CLIP_STD


@dataclass
class TensorSplit:
    """One split as tensors: ``images`` (N, 3, S, S) uint8, labels, pair flags, texts and tokens."""

    images: torch.Tensor
    labels: torch.Tensor
    valid_pair: torch.Tensor
    hateful: torch.Tensor
    texts: list[str]
    keys: list[str]
    tokens: torch.Tensor | None = None
    skipped: dict[str, int] | None = None
    meta: list[dict[str, Any]] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor) -> dict[str, Any]:
        """The samples at ``index`` as a batch dict (images still uint8)."""
        idx = index.tolist()
        batch = {
            "image": self.images[index],
            "label": self.labels[index],
            "valid_pair": self.valid_pair[index],
            "hateful": self.hateful[index],
            "text": [self.texts[i] for i in idx],
            "key": [self.keys[i] for i in idx],
        }
        if self.tokens is not None:
            batch["tokens"] = self.tokens[index]
        return batch

    def select(self, mask: torch.Tensor) -> TensorSplit:
        """The samples where ``mask`` (N,) is true, as a new split."""
        index = mask.nonzero().flatten()
        idx = index.tolist()
        return TensorSplit(
            images=self.images[index],
            labels=self.labels[index],
            valid_pair=self.valid_pair[index],
            hateful=self.hateful[index],
            texts=[self.texts[i] for i in idx],
            keys=[self.keys[i] for i in idx],
            tokens=None if self.tokens is None else self.tokens[index],
            skipped=self.skipped,
            meta=None if self.meta is None else [self.meta[i] for i in idx],
        )


def uint8_transform(image_size: int) -> v2.Compose:
    """What a decoded shard image becomes in memory: a ``(3, S, S)`` uint8 tensor, its shorter side resized
    to ``image_size`` (antialiased) and centre-cropped (a letterboxed shard image is square: a resize)."""
    return v2.Compose([v2.ToImage(), v2.Resize(image_size, antialias=True), v2.CenterCrop(image_size)])


def load_split(
    manifests: Sequence[str | Path | dict],
    split: str,
    image_size: int,
    tokenizer: Callable | None = None,
    limit: int | None = None,
    num_workers: int = 0,
) -> TensorSplit:
    """Reads a whole split through the WebDataset pipeline into memory at ``image_size`` pixels.

    Samples that cannot be used are skipped and counted by reason in the result's ``skipped`` (the
    loader's skip report, see :mod:`nbhelpers.data.loader`): with no ``limit`` and ``num_workers=0``, the
    samples returned plus those counts equal the manifests' ``num_samples``.

    Raises:
        ValueError: if the split has no labelled sample left.
    """
    pipeline = make_pipeline(
        manifests,
        split,
        batch_size=256,
        image_transform=uint8_transform(image_size),
        tokenizer=tokenizer,
        limit=limit,
    )
    parts: dict[str, list] = {
        k: [] for k in ("image", "label", "valid_pair", "hateful", "text", "key", "tokens", "meta")
    }
    for batch in make_loader(pipeline, num_workers=num_workers):
        for key, values in parts.items():
            if key in batch:
                value = batch[key]
                values.append(value) if isinstance(value, torch.Tensor) else values.extend(value)
    if not parts["label"]:
        raise ValueError(f"split {split!r} has no labelled samples")
    return TensorSplit(
        images=torch.cat(parts["image"]),
        labels=torch.cat(parts["label"]),
        valid_pair=torch.cat(parts["valid_pair"]),
        hateful=torch.cat(parts["hateful"]),
        texts=parts["text"],
        keys=parts["key"],
        tokens=torch.cat(parts["tokens"]) if parts["tokens"] else None,
        skipped=pipeline.skipped,
        meta=parts["meta"],
    )


def normalize(images: torch.Tensor, mean=CLIP_MEAN, std=CLIP_STD) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> normalised float32."""
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    return (images.float() / 255.0 - m) / s


def augment(images: torch.Tensor, generator: torch.Generator, max_shift: float = 0.125) -> torch.Tensor:
    """Per-sample random translation (reflect padding) and horizontal flip of a uint8 batch.

    No colour change: colour carries the synthetic benchmark's signal.
    """
    b, _, h, w = images.shape
    pad = max(1, int(round(h * max_shift)))
    padded = torch.nn.functional.pad(images.float(), (pad, pad, pad, pad), mode="reflect")
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None]).view(b, 1, h, 1).expand(b, 3, h, w + 2 * pad)
    out = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w)[None]).view(b, 1, 1, w).expand(b, 3, h, w)
    out = out.gather(3, cols)
    flip = torch.rand(b, generator=generator) < 0.5
    out[flip] = out[flip].flip(-1)
    return out.to(images.dtype)


def epoch_batches(
    data: TensorSplit,
    batch_size: int,
    *,
    seed: int,
    epoch: int,
    train: bool = True,
    mean=CLIP_MEAN,
    std=CLIP_STD,
    drop_last: bool | None = None,
    rank: int = 0,
    world_size: int = 1,
    endless: bool = False,
) -> Iterator[dict[str, Any]]:
    """Batches of one epoch, a function of ``(seed, epoch)``: shuffled and augmented when ``train``.

    The order is :class:`~nbhelpers.data.sampler.SeededBatchSampler`'s: with ``world_size`` > 1 (several
    processes under ``accelerate launch``) process ``rank`` takes its disjoint share of each shared
    permutation.

    Args:
        drop_last: drop the incomplete tail of the permutation (default: when ``train``).
        endless: go on through further permutations of the epoch without end (see
            :meth:`~nbhelpers.data.sampler.SeededBatchSampler.epoch_indices`).

    Raises:
        ValueError: from the sampler, e.g. ``data`` smaller than one batch per process with ``drop_last``.
    """
    drop_last = train if drop_last is None else drop_last
    sampler = SeededBatchSampler(
        len(data), batch_size, seed=seed, rank=rank, world_size=world_size, drop_last=drop_last, shuffle=train
    )
    # Augmentation has its own stream, so that it does not depend on how the order was drawn.
    generator = torch.Generator().manual_seed(derived_seed(seed, epoch, "augment", rank))
    for index in sampler.epoch_indices(epoch, endless=endless):
        batch = data.subset(index)
        images = augment(batch["image"], generator) if train else batch["image"]
        batch["image"] = normalize(images, mean, std)
        yield batch
