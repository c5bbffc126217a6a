"""A frozen backbone's features for the fusion recipe: extracted once per split, cached on disk.

Hate-CLIPper (:mod:`nbhelpers.train.recipes.fusion`) trains only a head on a frozen backbone's pooled
image and text features, so a split's features are computed once (:func:`extract_features`) and, with
``feature_cache``, kept under ``runs_dir/.features/``, keyed by everything they depend on (backbone,
weights file by content, shards, split, ``limit``, target kind): an epoch of the head then costs
milliseconds, and the runs of :func:`~nbhelpers.train.recipes.fusion.run_fusions` share them.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from accelerate import PartialState
from torchvision.transforms import v2

from nbhelpers.data.memory import TensorSplit, load_split
from nbhelpers.data.taxonomy import UNLABELLED
from nbhelpers.fileio import sha256_file
from nbhelpers.models.backbones import FeatureBackbone
from nbhelpers.train.engine import resolve_mixed_precision
from nbhelpers.train.run_dir import atomic_open

FEATURE_CACHE_DIR = ".features"


class FeatureConfig(Protocol):
    """The fields of :class:`~nbhelpers.train.recipes.fusion.FusionConfig` that features depend on."""

    backbone: str
    features: str
    runs_dir: str
    limit: int | None
    feature_cache: bool
    feature_batch_size: int
    mixed_precision: str


@dataclass
class FeatureSplit:
    """A split as backbone features: ``image`` (N, Di), ``text`` (N, Dt), ``target`` (N,): the hateful
    target in {-1, 0, 1} for a binary head, else the class label in ``-1..C-1`` (-1: unlabelled)."""

    image: torch.Tensor
    text: torch.Tensor
    target: torch.Tensor
    keys: list[str]

    def __len__(self) -> int:
        return len(self.target)

    def labelled(self) -> FeatureSplit:
        """The samples with a label (``target != UNLABELLED``)."""
        keep = self.target != UNLABELLED
        idx = keep.nonzero().flatten().tolist()
        return FeatureSplit(self.image[keep], self.text[keep], self.target[keep], [self.keys[i] for i in idx])

    def tensors(self) -> dict[str, torch.Tensor]:
        """The features and targets under the names of a training batch (``image_features``,
        ``text_features``, ``target``), for :func:`~nbhelpers.train.recipes.data.tensor_batches`."""
        return {"image_features": self.image, "text_features": self.text, "target": self.target}


def hateful_targets(labels: torch.Tensor, hateful: torch.Tensor) -> torch.Tensor:
    """The binary target ``(N,)``: ``hateful`` (0/1), or ``UNLABELLED`` where the class label is."""
    return torch.where(labels == UNLABELLED, torch.full_like(hateful, UNLABELLED), hateful.long())


def image_normalisation(backbone: FeatureBackbone) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The ``(mean, std)`` the backbone's ``image_transform`` normalises with.

    Raises:
        ValueError: if the transform has no ``Normalize`` step.
    """
    for transform in backbone.image_transform.transforms:
        if isinstance(transform, v2.Normalize):
            return tuple(transform.mean), tuple(transform.std)
    raise ValueError(f"{type(backbone).__name__}.image_transform has no Normalize step")


def _autocast(config: FeatureConfig, device: torch.device):
    precision = resolve_mixed_precision(config.mixed_precision)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None and device.type == "cuda")


@torch.no_grad()
def extract_features(
    backbone: FeatureBackbone, data: TensorSplit, batch_size: int = 256, autocast=None, binary: bool = True
) -> FeatureSplit:
    """Pooled image and text features of every sample of a split held in memory.

    Args:
        backbone: the feature extractor (put in eval mode here).
        data: a split loaded at ``backbone.image_size`` (uint8 images and raw texts).
        batch_size: samples per forward pass.
        autocast: an optional autocast context (half precision on a GPU).
        binary: targets are the hateful label (True) or the class labels (a label set of the user's own).

    Returns:
        Float32 features on the CPU, with the targets of the split.
    """
    was_training = backbone.training
    backbone.eval()
    images, texts = [], []
    for start in range(0, len(data), batch_size):
        stop = min(start + batch_size, len(data))
        # The backbone's own eval transform (resize, crop, its mean/std) on a uint8 (B, 3, S, S) batch.
        pixels = backbone.image_transform(data.images[start:stop]).as_subclass(torch.Tensor)
        with autocast if autocast is not None else torch.autocast("cpu", enabled=False):
            images.append(backbone.encode_image(pixels).float().cpu())
            texts.append(backbone.encode_text(data.texts[start:stop]).float().cpu())
    backbone.train(was_training)
    return FeatureSplit(
        image=torch.cat(images),
        text=torch.cat(texts),
        target=hateful_targets(data.labels, data.hateful) if binary else data.labels.clone(),
        keys=list(data.keys),
    )


def _cache_file(
    config: FeatureConfig, weights: str | None, found: Sequence[Mapping], split: str, binary: bool = True
) -> Path:
    """Where a frozen backbone's features of ``split`` are cached: a hash of everything they depend on."""

    def stamp(path: str | os.PathLike) -> list:
        stat = Path(path).stat()
        return [str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns]

    key = {
        "backbone": config.backbone,
        # By content: a CLIP run trained again into the same folder must not reuse the old features.
        "weights": sha256_file(weights) if weights and os.path.isfile(weights) else weights,
        "manifests": [stamp(Path(m["_dir"]) / "manifest.json") for m in found],
        "split": split,
        "limit": config.limit,
    }
    if not binary:  # class targets (binary caches keep the key they always had)
        key["target"] = "classes"
    if config.features != "projected":  # likewise: projected caches keep their key
        key["features"] = config.features
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return Path(config.runs_dir) / FEATURE_CACHE_DIR / f"{split}-{digest}.pt"


def split_features(
    config: FeatureConfig,
    backbone: FeatureBackbone,
    found: Sequence[Mapping],
    split: str,
    weights: str | None,
    binary: bool = True,
) -> FeatureSplit:
    """The features of ``split``: read from the cache when allowed and present, else extracted (and cached).

    Args:
        config: the recipe's config (cache switch, ``limit``, batch size, precision).
        backbone: the frozen backbone built with ``weights``.
        found: the sources' manifests.
        split: the split to read.
        weights: the resolved ``pretrained`` (part of the cache key).
        binary: hateful targets (True) or class labels (see :func:`extract_features`).
    """
    path = _cache_file(config, weights, found, split, binary)
    if config.feature_cache and path.is_file():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        return FeatureSplit(saved["image"], saved["text"], saved["target"], saved["keys"])
    device = PartialState().device
    backbone.to(device)
    data = load_split(found, split, backbone.image_size, None, limit=config.limit)
    features = extract_features(backbone, data, config.feature_batch_size, _autocast(config, device), binary)
    if config.feature_cache and PartialState().is_main_process:
        with atomic_open(path, "wb") as f:
            torch.save(vars(features), f)
    return features
