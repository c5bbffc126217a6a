"""Self-supervised image pre-training (DINO, Barlow Twins, DINO-Twins, CASS), read out by frozen probes.

Methods (``method``):

* ``dino``: self-distillation with no labels (Caron et al., 2021, "Emerging Properties in Self-Supervised
  Vision Transformers"): a student sees 2 global and ``n_local_crops`` local crops and matches, through
  :class:`~nbhelpers.models.ssl.DINOHead`, the centred and sharpened output of an EMA teacher on the
  global crops (:class:`~nbhelpers.losses.DINOLoss`; the teacher follows the student by
  :func:`~nbhelpers.losses.ema_update_` with :func:`~nbhelpers.losses.cosine_momentum` after each step).
* ``barlow_twins``: redundancy reduction (Zbontar et al., 2021, "Barlow Twins: Self-Supervised Learning via
  Redundancy Reduction"): the cross-correlation of two views' projections is pushed to the identity.
* ``dino_twins``: DINO plus a Barlow Twins term on the student's backbone features of the two global crops
  (:class:`~nbhelpers.losses.DINOTwinsLoss`).
* ``cass``: cross-architectural self-supervision (Singh, Sizikova & Cirrone, 2022, "CASS: Cross
  Architectural Self-Supervision for Medical Image Analysis"): a CNN (``backbone``) and a ViT
  (``vit_backbone``) see the same augmented image and their projections are pulled together
  (:func:`~nbhelpers.losses.cass_loss`); both learn, with no teacher.

One ``nn.Module`` per method holds every network and the loss (DINO's centre is a buffer), so one
checkpoint captures the whole training state.

**Several processes** (``accelerate launch --num_processes N``): every statistic over the batch is over
the global batch. The losses gather or all-reduce theirs (:mod:`nbhelpers.losses.distributed`: Barlow
Twins' standardisation and cross-correlation, DINO's centre and mean, CASS's mean), and the networks'
BatchNorm layers (ResNets, the Barlow Twins projector, DINO's head on a ResNet) become ``SyncBatchNorm``
(:func:`~nbhelpers.train.recipes.base.sync_batchnorm`), as in the reference code of DINO and Barlow Twins.

**Views.** The augmentations are DINO's / Barlow Twins' (crop, flip, colour jitter, grayscale, blur,
solarize), applied here to whole uint8 batches on the training device with per-sample random
parameters: a torchvision per-image pipeline costs about 8 ms an image for 6 crops on one CPU core, as
much as the demo's whole model. Colour jitter and grayscale are
parameters (``colour_jitter``, ``grayscale_p``): on the synthetic benchmark the picture's only
class-relevant content is its figure's *colour*, and DINO's default jitter (hue +-0.1, saturation,
grayscale 20 %) teaches the encoder to ignore exactly that; on natural images (the ``t4`` preset,
CIFAR-10) the default jitter is what stops the views being matched by colour histograms alone.

**Data.** ``dataset="shards"`` reads the WebDataset shards of ``data_dir`` (``sources``); any other value
is a Hugging Face image dataset read with ``datasets.load_dataset(dataset, split=...)`` (``cifar10`` on
Colab), with ``image_column`` / ``label_column`` (detected from the features when empty).

**Evaluation.** A linear probe and DINO's weighted kNN (:mod:`nbhelpers.metrics.probes`) on the frozen
backbone features of the train split, scored on each eval split, next to the same probes on the same
architecture at its initial weights (the run's seed). On the synthetic benchmark the 7-class label is an
interaction of picture and caption, so an image-only probe of it is at chance by construction; the probes
therefore read out the picture's own colour (``attributes.image.colour`` in each sample's json), and the
7-class probe is reported next to it. Shards labelled with a label set of the user's own have the probe
``classes`` (over its classes) instead of ``7class``; with no colour recorded, ``auto`` probes it.

``python -m nbhelpers.train ssl method=barlow_twins epochs=3`` runs it from the command line.
"""

from __future__ import annotations

import copy
import itertools
import math
import os
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
import torch
import torch.nn.functional as F
from accelerate import PartialState
from torch import nn
from torchvision.transforms import v2

from nbhelpers.config import ConfigError, param
from nbhelpers.data.loader import make_loader, make_pipeline
from nbhelpers.data.sampler import SeededBatchSampler
from nbhelpers.data.sources.synthetic import COLOUR_NAMES, SEEN_SHAPES, UNSEEN_SHAPES
from nbhelpers.data.taxonomy import CLASSES, label_set_of
from nbhelpers.losses import (
    BarlowTwinsLoss,
    CASSLoss,
    DINOLoss,
    DINOTwinsLoss,
    cosine_momentum,
    ema_update_,
)
from nbhelpers.metrics.probes import extract_features, probe_scores
from nbhelpers.models.ssl import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    VIT_CONFIGS,
    BarlowTwinsProjector,
    DINOHead,
    MultiCropWrapper,
    build_ssl_backbone,
)
from nbhelpers.train.engine import fit
from nbhelpers.train.recipes.base import (
    RecipeConfig,
    RunResult,
    epoch_steps,
    history_seconds,
    load_run_weights,
    manifests,
    sync_batchnorm,
    train_spec,
    write_metrics,
)
from nbhelpers.train.recipes.registry import Recipe, TrainedRun

METHODS = ("dino", "barlow_twins", "dino_twins", "cass")
CNN_BACKBONES = ("resnet18", "resnet50")
BACKBONES = (*CNN_BACKBONES, *VIT_CONFIGS)
#: ``dataset`` value that reads the WebDataset shards of ``data_dir``; anything else is a HF dataset.
SHARDS = "shards"
#: The synthetic pictures' ground-truth attributes (json ``attributes.image``) and their values.
ATTRIBUTES: dict[str, tuple[str, ...]] = {"colour": COLOUR_NAMES, "shape": (*SEEN_SHAPES, *UNSEEN_SHAPES)}
#: The shards' class label as a probe: ``7class`` for the seven merged classes, ``classes`` for a label set
#: of the user's own.
CLASS_LABELS = ("7class", "classes")
#: Labels of the shards the probes can read out: a picture attribute, or the shards' class label.
SHARD_LABELS = (*ATTRIBUTES, *CLASS_LABELS)
NOTEBOOK = "04_train_ssl_vision"


@dataclass
class SSLConfig(RecipeConfig):
    """Parameters of ``04_train_ssl_vision``."""

    SECTION: ClassVar[str] = "ssl"
    RECIPE: ClassVar[str] = "ssl"

    method: str = param("dino", choices=METHODS, help="dino | barlow_twins | dino_twins | cass")
    backbone: str = param("vit_tiny_demo", choices=BACKBONES, help="the encoder (for cass: the CNN)")
    vit_backbone: str = param("vit_tiny_demo", choices=tuple(VIT_CONFIGS), help="cass only: the ViT")
    image_size: int = param(32, min=8, help="side of the stored images and of the global crops")
    local_size: int | None = param(
        None, min=8, help="side of DINO's local crops (None: 96/224 of image_size)"
    )
    n_local_crops: int = param(4, min=0, help="DINO's local crops per image (the paper uses 8 or 10)")
    small_image: bool | None = param(None, help="CIFAR stem / 8-px patches (None: when image_size <= 64)")
    dataset: str = param(SHARDS, help="'shards' (data_dir/sources) or a Hugging Face dataset, e.g. 'cifar10'")
    image_column: str = param("", help="HF dataset: the image column ('': the first Image feature)")
    label_column: str = param("", help="HF dataset: the label column ('': the first ClassLabel feature)")
    probe_label: str = param(
        "auto",
        help="auto (shards: colour, else their classes; HF: the label column) | colour | shape | 7class | "
        "classes (shards of your own label set)",
    )
    # Views
    global_scale_min: float = param(0.4, min=0.01, help="global crops cover [this, 1] of the image")
    local_scale: list[float] = param([0.05, 0.4], help="area range of the local crops")
    colour_jitter: float = param(0.0, min=0.0, help="jitter strength s (1 = DINO's); 0 turns it off")
    colour_jitter_p: float = param(0.8, min=0.0, help="probability of colour jitter per view")
    grayscale_p: float = param(0.0, min=0.0, help="probability of grayscale per view (DINO: 0.2)")
    solarize_p: float = param(0.2, min=0.0, help="solarize probability of the second global view")
    # DINO
    out_dim: int = param(65536, min=1, help="DINO prototypes K")
    head_hidden_dim: int = param(2048, min=1)
    head_bottleneck_dim: int = param(256, min=1)
    head_layers: int = param(3, min=1)
    teacher_temp: float = param(0.04, min=1e-4)
    warmup_teacher_temp: float = param(0.04, min=1e-4)
    warmup_teacher_temp_epochs: int = param(0, min=0)
    student_temp: float = param(0.1, min=1e-4)
    center_momentum: float = param(0.9, min=0.0)
    momentum_teacher: float = param(0.996, min=0.0, help="teacher EMA momentum at step 0 (cosine to 1)")
    # Barlow Twins / DINO-Twins / CASS
    projector_sizes: list[int] = param([8192, 8192, 8192], help="Barlow Twins projector widths")
    lambda_offdiag: float = param(0.0051, min=0.0)
    barlow_weight: float | None = param(None, min=0.0, help="dino_twins: Barlow term weight (None: 1/dim)")
    cass_dim: int = param(256, min=1, help="cass: width of the common projection space")
    # Probes
    knn_k: int = param(20, min=1)
    knn_temperature: float = param(0.07, min=1e-4)

    def default_run_name(self) -> str:
        return f"ssl_{self.method}_{self.backbone}"

    def check(self) -> None:
        super().check()
        for name in ("colour_jitter_p", "grayscale_p", "solarize_p", "momentum_teacher", "center_momentum"):
            if getattr(self, name) > 1:
                raise ConfigError(f"{name}: a probability/momentum must be <= 1, got {getattr(self, name)}")
        if self.global_scale_min > 1:
            raise ConfigError(f"global_scale_min: must be <= 1, got {self.global_scale_min}")
        low, high = (self.local_scale + [0, 0])[:2]
        if len(self.local_scale) != 2 or not 0 < low <= high <= 1:
            raise ConfigError(
                f"local_scale: need [low, high] with 0 < low <= high <= 1, got {self.local_scale}"
            )
        if not self.projector_sizes or min(self.projector_sizes) < 1:
            raise ConfigError(f"projector_sizes: need positive widths, got {self.projector_sizes}")
        if self.method == "cass" and self.backbone not in CNN_BACKBONES:
            raise ConfigError(f"backbone: cass trains a CNN with a ViT; allowed: {', '.join(CNN_BACKBONES)}")
        if self.method in ("dino", "dino_twins") and self.n_local_crops == 0 and self.batch_size < 2:
            raise ConfigError("batch_size: must be >= 2")
        if self.method != "dino" and self.batch_size // self.grad_accum_steps < 2:
            raise ConfigError(
                "batch_size: Barlow Twins and CASS standardise over the batch; need >= 2 per step"
            )
        patch = self._vit_patch(self.backbone if self.backbone in VIT_CONFIGS else self.vit_backbone)
        if patch and (self.image_size % patch or (self.uses_local_crops and self.local_crop_size % patch)):
            raise ConfigError(
                f"image_size/local_size: the ViT's {patch}-px patches must divide both, got "
                f"{self.image_size} and {self.local_crop_size}"
            )
        if self.dataset == SHARDS and self.probe_label not in ("auto", *SHARD_LABELS):
            raise ConfigError(f"probe_label: allowed for shards: auto, {', '.join(SHARD_LABELS)}")
        if self.dataset != SHARDS and self.probe_label not in ("auto", "label"):
            raise ConfigError("probe_label: a Hugging Face dataset is probed on its label column ('auto')")

    @property
    def reads_shards(self) -> bool:
        return self.dataset == SHARDS

    def identity_exclude(self) -> tuple[str, ...]:
        # The probes are scored after training: they change the metrics, not the weights.
        return ("probe_label", "knn_k", "knn_temperature")

    def _vit_patch(self, name: str) -> int | None:
        if name not in VIT_CONFIGS or (name != self.backbone and self.method != "cass"):
            return None
        small = self.image_size <= 64 if self.small_image is None else self.small_image
        return VIT_CONFIGS[name].patch_size or (8 if small else 16)

    @property
    def uses_local_crops(self) -> bool:
        return self.method in ("dino", "dino_twins") and self.n_local_crops > 0

    @property
    def local_crop_size(self) -> int:
        """DINO's 96 px at 224, rounded to a multiple of 8 (ViT patches), unless ``local_size`` is set."""
        return self.local_size or max(8, 8 * round(self.image_size * 96 / 224 / 8))

    @property
    def primary_label(self) -> str:
        if self.probe_label != "auto":
            return self.probe_label
        return "colour" if self.dataset == SHARDS else "label"


# ------------------------------------------------------------------------------------------------ data


@dataclass
class ImageSet:
    """A split in memory: uint8 ``images`` (N, 3, S, S) and named integer labels ``(N,)``."""

    images: torch.Tensor
    labels: dict[str, torch.Tensor]
    class_names: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)


def _to_uint8(size: int) -> v2.Compose:
    return v2.Compose([v2.ToImage(), v2.RGB(), v2.Resize(size, antialias=True), v2.CenterCrop(size)])


def load_shard_images(
    found: list[dict[str, Any]], split: str, size: int, limit: int | None = None
) -> ImageSet:
    """A split of the shards at ``size`` px, with their class label (``7class`` for the seven merged
    classes, ``classes`` for a label set of the user's own) and, for the synthetic benchmark, the
    picture's ground-truth colour and shape (from each sample's json ``attributes.image``).

    Raises:
        ValueError: if the split has no labelled sample.
    """
    classes = label_set_of(found).names
    class_label = "7class" if classes == CLASSES else "classes"
    pipeline = make_pipeline(found, split, batch_size=256, image_transform=_to_uint8(size), limit=limit)
    images, labels, colours, shapes = [], [], [], []
    for batch in make_loader(pipeline):
        images.append(batch["image"])
        labels.append(batch["label"])
        for meta in batch["meta"]:
            picture = meta.get("attributes", {}).get("image", {})
            colours.append(ATTRIBUTES["colour"].index(picture["colour"]) if "colour" in picture else -1)
            shapes.append(ATTRIBUTES["shape"].index(picture["shape"]) if "shape" in picture else -1)
    if not labels:
        raise ValueError(f"split {split!r} has no labelled samples")
    named = {class_label: torch.cat(labels)}
    names = {class_label: classes}
    for key, values in (("colour", colours), ("shape", shapes)):
        if min(values) >= 0:  # only sources that record the attribute (the synthetic benchmark)
            named[key] = torch.tensor(values)
            names[key] = ATTRIBUTES[key]
    return ImageSet(torch.cat(images), named, names)


def hf_columns(dataset, image_column: str = "", label_column: str = "") -> tuple[str, str]:
    """The image and label columns of a ``datasets.Dataset``: as given, or the first ``Image`` and
    ``ClassLabel`` features (CIFAR-10: ``img``, ``label``).

    Raises:
        ValueError: if a column is missing or cannot be detected.
    """
    import datasets

    features = dataset.features
    if not image_column:
        image_column = next((k for k, f in features.items() if isinstance(f, datasets.Image)), "")
    if not label_column:
        label_column = next((k for k, f in features.items() if isinstance(f, datasets.ClassLabel)), "")
    for what, column in (("image_column", image_column), ("label_column", label_column)):
        if column not in features:
            raise ValueError(f"{what}: {column!r} is not a column of the dataset; it has {list(features)}")
    return image_column, label_column


def hf_images(
    dataset, size: int, image_column: str = "", label_column: str = "", limit: int | None = None
) -> ImageSet:
    """A ``datasets.Dataset`` of PIL images and integer labels as an :class:`ImageSet` (label ``"label"``)."""
    image_column, label_column = hf_columns(dataset, image_column, label_column)
    if limit is not None:
        dataset = dataset.select(range(min(limit, len(dataset))))
    transform = _to_uint8(size)
    images, labels = [], []
    for row in dataset:
        images.append(transform(row[image_column]))
        labels.append(int(row[label_column]))
    feature = dataset.features[label_column]
    names = tuple(feature.names) if hasattr(feature, "names") else tuple(map(str, sorted(set(labels))))
    return ImageSet(torch.stack(images), {"label": torch.tensor(labels)}, {"label": names})


def load_images(config: SSLConfig, split: str) -> ImageSet:
    """A split of ``config.dataset`` in memory at ``image_size`` px (the shards, or a HF dataset)."""
    if config.dataset == SHARDS:
        return load_shard_images(manifests(config), split, config.image_size, config.limit)
    import datasets

    dataset = datasets.load_dataset(config.dataset, split=split)
    return hf_images(dataset, config.image_size, config.image_column, config.label_column, config.limit)


def _batch_seed(seed: int, epoch: int, index: int) -> int:
    # A stable hash (Python's hash() of a tuple is not salted, but crc32 reads better in a checkpoint).
    return zlib.crc32(f"{seed}/{epoch}/{index}".encode())


def train_batches(config: SSLConfig, data: ImageSet) -> tuple[Callable[[int], Iterator[dict[str, Any]]], int]:
    """The engine's ``batches(epoch)`` over ``data`` and the optimiser steps of one epoch.

    Batches carry uint8 ``image`` (augmented on the device by the step), the 1-based ``epoch`` and an
    ``aug_seed``; everything is a function of ``(seed, epoch)`` only. The order is
    :class:`~nbhelpers.data.sampler.SeededBatchSampler`'s, as many passes as the epoch needs; the last
    incomplete batch of each is dropped (Barlow Twins and BatchNorm standardise over the batch).

    Raises:
        ValueError: ``data`` holds fewer than one batch for every process.
    """
    micro = max(2, config.batch_size // config.grad_accum_steps)
    state = PartialState()
    sampler = SeededBatchSampler(
        len(data), micro, seed=config.seed, rank=state.process_index, world_size=state.num_processes
    )
    steps = epoch_steps(config, len(data), micro)

    def batches(epoch: int) -> Iterator[dict[str, Any]]:
        for index, batch in enumerate(sampler.epoch_indices(epoch, endless=True)):
            yield {
                "image": data.images[batch],
                "epoch": epoch,
                # The global batch number: every process's batches get their own augmentation.
                "aug_seed": _batch_seed(
                    config.seed, epoch, index * state.num_processes + state.process_index
                ),
            }

    return batches, steps


# ----------------------------------------------------------------------------------------------- views


@dataclass(frozen=True)
class ViewSpec:
    """One kind of view: output side, crop area range, blur and solarize probabilities."""

    size: int
    scale: tuple[float, float]
    blur_p: float
    solarize_p: float


class BatchViews:
    """DINO / Barlow Twins views of a uint8 batch, every random parameter drawn per sample.

    Per view: a random resized crop (area in ``scale``, aspect ratio in [3/4, 4/3], bilinear resampling)
    with a horizontal flip half the time; colour jitter with probability ``colour_jitter_p`` (brightness
    and contrast by up to ``0.4 s``, saturation ``0.2 s``, hue ``0.1 s`` of a turn, in that fixed order,
    the hue as a rotation in YIQ space); grayscale with probability ``grayscale_p``; a Gaussian blur with
    probability ``blur_p`` and sigma in [0.1, 2] px scaled by ``size / 224`` (the paper's strength
    relative to the image); solarize with probability ``solarize_p``; normalisation.

    Random parameters are drawn on the CPU from ``generator``, the pixels are processed on the images'
    device, so a run's views depend only on the generator's seed.

    Args:
        specs: the views to make, in order.
        colour_jitter: jitter strength ``s``; 0 disables jitter.
        colour_jitter_p: probability of jitter.
        grayscale_p: probability of grayscale.
        mean: normalisation mean.
        std: normalisation std.
    """

    def __init__(
        self,
        specs: Sequence[ViewSpec],
        colour_jitter: float = 1.0,
        colour_jitter_p: float = 0.8,
        grayscale_p: float = 0.2,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        self.specs = list(specs)
        self.colour_jitter, self.colour_jitter_p, self.grayscale_p = (
            colour_jitter,
            colour_jitter_p,
            grayscale_p,
        )
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> list[torch.Tensor]:
        """``(B, 3, H, W)`` uint8 -> one normalised float ``(B, 3, size, size)`` tensor per spec."""
        x = images.float() / 255.0
        return [self.view(x, spec, generator) for spec in self.specs]

    def view(self, x: torch.Tensor, spec: ViewSpec, generator: torch.Generator) -> torch.Tensor:
        """One view of ``x`` (B, 3, H, W) in [0, 1]."""
        b = x.shape[0]

        def draw(low: float = 0.0, high: float = 1.0) -> torch.Tensor:
            return (torch.rand(b, generator=generator) * (high - low) + low).to(x.device)

        x = resized_crop(x, spec.size, spec.scale, draw)
        if self.colour_jitter > 0:
            x = _where(draw() < self.colour_jitter_p, colour_jitter(x, self.colour_jitter, draw), x)
        if self.grayscale_p > 0:
            x = _where(draw() < self.grayscale_p, _gray(x).expand_as(x), x)
        if spec.blur_p > 0:
            sigma = draw(0.1, 2.0) * spec.size / 224
            x = _where(draw() < spec.blur_p, gaussian_blur(x, sigma, max_sigma=2.0 * spec.size / 224), x)
        if spec.solarize_p > 0:
            x = _where(draw() < spec.solarize_p, torch.where(x >= 0.5, 1.0 - x, x), x)
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std


def _where(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(mask.view(-1, 1, 1, 1), a, b)


def _gray(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma, as torchvision's grayscale: ``(B, 3, H, W) -> (B, 1, H, W)``."""
    return (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)


def resized_crop(x: torch.Tensor, size: int, scale: tuple[float, float], draw: Callable) -> torch.Tensor:
    """Per-sample random resized crop + horizontal flip (p = 0.5) of ``x`` (B, 3, H, W) to ``size``."""
    b = x.shape[0]
    area = draw(*scale)
    ratio = torch.exp(draw(math.log(3 / 4), math.log(4 / 3)))
    w = (area * ratio).sqrt().clamp(max=1.0)  # fractions of the side
    h = (area / ratio).sqrt().clamp(max=1.0)
    cx = (draw() * (1 - w) + w / 2) * 2 - 1  # centres in affine_grid's [-1, 1] coordinates
    cy = (draw() * (1 - h) + h / 2) * 2 - 1
    flip = torch.where(draw() < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3, device=x.device)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = w * flip, cx, h, cy
    grid = F.affine_grid(theta, [b, 3, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


# RGB <-> YIQ; a hue shift is a rotation of the (I, Q) plane.
_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def colour_jitter(x: torch.Tensor, strength: float, draw: Callable) -> torch.Tensor:
    """Per-sample brightness, contrast, saturation and hue jitter of ``x`` (B, 3, H, W) in [0, 1]."""
    bright = draw(1 - 0.4 * strength, 1 + 0.4 * strength).view(-1, 1, 1, 1)
    contrast = draw(max(0.0, 1 - 0.4 * strength), 1 + 0.4 * strength).view(-1, 1, 1, 1)
    saturation = draw(max(0.0, 1 - 0.2 * strength), 1 + 0.2 * strength).view(-1, 1, 1, 1)
    angle = draw(-0.1 * strength, 0.1 * strength) * 2 * math.pi
    x = (x * bright.clamp(min=0)).clamp(0, 1)
    mean = _gray(x).mean(dim=(1, 2, 3), keepdim=True)
    x = ((x - mean) * contrast + mean).clamp(0, 1)
    gray = _gray(x)
    x = ((x - gray) * saturation + gray).clamp(0, 1)
    cos, sin = angle.cos(), angle.sin()
    rotation = torch.zeros(len(angle), 3, 3, device=x.device)
    rotation[:, 0, 0] = 1
    rotation[:, 1, 1], rotation[:, 1, 2], rotation[:, 2, 1], rotation[:, 2, 2] = cos, -sin, sin, cos
    yiq = _YIQ.to(x.device)
    matrix = torch.linalg.inv(yiq) @ rotation @ yiq  # (B, 3, 3)
    return torch.einsum("bij,bjhw->bihw", matrix, x).clamp(0, 1)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, max_sigma: float) -> torch.Tensor:
    """Per-sample Gaussian blur of ``x`` (B, C, H, W), one ``sigma`` (B,) each, reflect-padded."""
    b, c, h, w = x.shape
    radius = max(1, math.ceil(3 * max_sigma))
    d = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-(d[None] ** 2) / (2 * sigma[:, None] ** 2))
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (B*C, K)
    y = F.pad(x.reshape(1, b * c, h, w), (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, kernel[:, None, :, None], groups=b * c)  # vertical
    y = F.conv2d(y, kernel[:, None, None, :], groups=b * c)  # horizontal
    return y.reshape(b, c, h, w)


def make_views(config: SSLConfig) -> BatchViews:
    """The views ``method`` trains on: DINO's 2 global + local crops (blur 1 / 0.1 / 0.5, solarize on the
    second global view), Barlow Twins' two asymmetric views, or one view for CASS's two encoders."""
    size, full = config.image_size, (config.global_scale_min, 1.0)
    if config.method in ("dino", "dino_twins"):
        local = ViewSpec(config.local_crop_size, tuple(config.local_scale), blur_p=0.5, solarize_p=0.0)
        specs = [
            ViewSpec(size, full, blur_p=1.0, solarize_p=0.0),
            ViewSpec(size, full, blur_p=0.1, solarize_p=config.solarize_p),
            *[local] * config.n_local_crops,
        ]
    elif config.method == "barlow_twins":
        specs = [ViewSpec(size, full, 1.0, 0.0), ViewSpec(size, full, 0.1, config.solarize_p)]
    else:
        specs = [ViewSpec(size, full, blur_p=0.5, solarize_p=0.0)]
    return BatchViews(specs, config.colour_jitter, config.colour_jitter_p, config.grayscale_p)


# ---------------------------------------------------------------------------------------------- models


class DINOModel(nn.Module):
    """Student and EMA teacher (each a :class:`MultiCropWrapper` of a backbone and a :class:`DINOHead`)
    and the DINO or DINO-Twins loss, whose centre is a buffer of this module."""

    def __init__(self, backbone: nn.Module, config: SSLConfig) -> None:
        super().__init__()
        head = DINOHead(
            backbone.embed_dim,
            config.out_dim,
            config.head_hidden_dim,
            config.head_bottleneck_dim,
            config.head_layers,
            use_bn=config.backbone in CNN_BACKBONES,  # as the paper: BN in the head for ResNets only
        )
        self.student = MultiCropWrapper(backbone, head)
        self.teacher = copy.deepcopy(self.student)
        self.teacher.requires_grad_(False)
        self.momentum = config.momentum_teacher
        common = dict(
            out_dim=config.out_dim,
            n_local_crops=config.n_local_crops,
            teacher_temp=config.teacher_temp,
            warmup_teacher_temp=config.warmup_teacher_temp,
            warmup_teacher_temp_epochs=config.warmup_teacher_temp_epochs,
            student_temp=config.student_temp,
            center_momentum=config.center_momentum,
        )
        self.twins = config.method == "dino_twins"
        if self.twins:
            weight = config.barlow_weight if config.barlow_weight is not None else 1.0 / backbone.embed_dim
            self.loss = DINOTwinsLoss(**common, barlow_weight=weight, lambda_offdiag=config.lambda_offdiag)
        else:
            self.loss = DINOLoss(**common)

    def forward(self, crops: list[torch.Tensor], epoch: int = 0) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss of one batch of crops (2 global first, then the local ones), with its parts for logging."""
        with torch.no_grad():
            teacher_out = self.teacher(crops[:2])  # (2 * B, K)
        if not self.twins:
            return self.loss(self.student(crops), teacher_out, epoch), {}
        # DINO-Twins also needs the backbone features of the two global crops.
        features = self.student.backbone(torch.cat(crops[:2]))  # (2 * B, D)
        parts = [features]
        if len(crops) > 2:
            parts.append(self.student.backbone(torch.cat(crops[2:])))  # local crops: one smaller size
        student_out = self.student.head(torch.cat(parts))
        z1, z2 = features.chunk(2)
        loss, terms = self.loss(student_out, teacher_out, z1, z2, epoch)
        return loss, {k: float(v) for k, v in terms.items()}

    @torch.no_grad()
    def after_step(self, step: int, total_steps: int) -> dict[str, float]:
        """EMA update of the teacher with the cosine momentum schedule; returns the momentum used."""
        momentum = cosine_momentum(step, total_steps, base=self.momentum)
        ema_update_(self.teacher, self.student, momentum)
        return {"momentum": momentum}

    def encoders(self) -> dict[str, nn.Module]:
        """The backbones to probe: the teacher's, as the paper evaluates."""
        return {"teacher": self.teacher.backbone}


class BarlowTwinsModel(nn.Module):
    """A backbone, the Barlow Twins projector, and the loss."""

    def __init__(self, backbone: nn.Module, config: SSLConfig) -> None:
        super().__init__()
        self.backbone = backbone
        self.projector = BarlowTwinsProjector(backbone.embed_dim, config.projector_sizes)
        self.loss = BarlowTwinsLoss(config.lambda_offdiag)

    def forward(self, views: list[torch.Tensor], epoch: int = 0) -> tuple[torch.Tensor, dict[str, float]]:
        z = self.projector(self.backbone(torch.cat(views)))  # both views in one batch: (2 * B, dim)
        z1, z2 = z.chunk(2)
        return self.loss(z1, z2), {}

    def after_step(self, step: int, total_steps: int) -> dict[str, float]:
        return {}

    def encoders(self) -> dict[str, nn.Module]:
        return {"backbone": self.backbone}


class CASSModel(nn.Module):
    """A CNN and a ViT, each with a linear projection to a common space, and the CASS loss."""

    def __init__(self, cnn: nn.Module, vit: nn.Module, config: SSLConfig) -> None:
        super().__init__()
        self.cnn, self.vit = cnn, vit
        self.cnn_head = nn.Linear(cnn.embed_dim, config.cass_dim)
        self.vit_head = nn.Linear(vit.embed_dim, config.cass_dim)
        self.loss = CASSLoss()

    def forward(self, views: list[torch.Tensor], epoch: int = 0) -> tuple[torch.Tensor, dict[str, float]]:
        (image,) = views  # the same augmented image for both architectures
        return self.loss(self.cnn_head(self.cnn(image)), self.vit_head(self.vit(image))), {}

    def after_step(self, step: int, total_steps: int) -> dict[str, float]:
        return {}

    def encoders(self) -> dict[str, nn.Module]:
        return {"cnn": self.cnn, "vit": self.vit}


def build_backbones(config: SSLConfig) -> list[nn.Module]:
    """The method's encoder(s) at their initial weights, a function of ``config.seed`` only (the global
    RNG is left as it was): ``[backbone]``, or ``[cnn, vit]`` for CASS. The random-encoder baseline is
    this very initialisation."""
    names = [config.backbone] + ([config.vit_backbone] if config.method == "cass" else [])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return [build_ssl_backbone(name, config.image_size, small_image=config.small_image) for name in names]


def build_model(config: SSLConfig) -> nn.Module:
    """The training module of ``config.method`` (initial weights a function of ``config.seed``)."""
    backbones = build_backbones(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed + 1)
        if config.method in ("dino", "dino_twins"):
            return DINOModel(backbones[0], config)
        if config.method == "barlow_twins":
            return BarlowTwinsModel(backbones[0], config)
        return CASSModel(backbones[0], backbones[1], config)


def step(model: nn.Module, batch: dict[str, Any], views: BatchViews) -> tuple[torch.Tensor, dict[str, float]]:
    """Augments the uint8 batch on its device (full precision), then the method's loss."""
    generator = torch.Generator().manual_seed(int(batch["aug_seed"]))
    with torch.autocast(batch["image"].device.type, enabled=False):
        crops = views(batch["image"], generator)
    return model(crops, epoch=int(batch["epoch"]) - 1)  # the engine counts epochs from 1, DINO from 0


# ---------------------------------------------------------------------------------------------- probes


def probe_encoders(
    encoders: dict[str, nn.Module],
    train: ImageSet,
    evals: dict[str, ImageSet],
    labels: Sequence[str],
    config: SSLConfig,
) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """Linear probe and kNN of each encoder's frozen features, per eval split and label.

    Returns:
        ``{split: {label: {encoder: {"linear_probe": top1, "knn": top1}}}}``.
    """
    results: dict[str, dict[str, dict[str, dict[str, float]]]] = {s: {lb: {} for lb in labels} for s in evals}
    for name, encoder in encoders.items():
        train_x = extract_features(encoder, train.images, IMAGENET_MEAN, IMAGENET_STD)
        for split, data in evals.items():
            eval_x = extract_features(encoder, data.images, IMAGENET_MEAN, IMAGENET_STD)
            for label in labels:
                results[split][label][name] = probe_scores(
                    train_x, train.labels[label].numpy(), eval_x, data.labels[label].numpy(),
                    k=config.knn_k, temperature=config.knn_temperature, seed=config.seed,
                )  # fmt: skip
    return results


def probe_table(probes: dict[str, dict[str, dict[str, float]]], method: str) -> pd.DataFrame:
    """One row per (label, encoder) of one split's probes: method | label | encoder | linear probe | kNN."""
    rows = [
        {"method": method, "label": label, "encoder": encoder,
         "linear probe": scores["linear_probe"], "kNN": scores["knn"]}
        for label, by_encoder in probes.items()
        for encoder, scores in by_encoder.items()
    ]  # fmt: skip
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------- run


def probe_label_of(config: SSLConfig, data: ImageSet) -> str:
    """The label the run's headline probe reads out: ``probe_label``, or for ``auto`` on shards that
    record no picture colour (shards of the user's own), their class label.

    Raises:
        ConfigError: if the data does not record that label.
    """
    label = config.primary_label
    if config.probe_label == "auto" and config.reads_shards and label not in data.labels:
        label = next((lb for lb in CLASS_LABELS if lb in data.labels), label)
    if label not in data.labels:
        raise ConfigError(f"probe_label: {label!r} is not recorded by this data; it has {list(data.labels)}")
    return label


def run(config: SSLConfig | dict[str, Any]) -> RunResult:
    """Pre-trains the encoder(s), probes them and their initialisation, and writes the run directory."""
    config = SSLConfig.coerce(config)
    config.bind(manifests(config) if config.reads_shards else [])
    train = load_images(config, config.train_split)
    primary_label = probe_label_of(config, train)
    labels = [primary_label] + [lb for lb in CLASS_LABELS if lb in train.labels and lb != primary_label]
    state = PartialState()
    model = sync_batchnorm(build_model(config), state.num_processes, state.device)
    views = make_views(config)
    batches, steps = train_batches(config, train)
    spec = train_spec(config, steps)
    history = fit(
        model,
        lambda m, b: step(m, b, views),
        batches,
        spec,
        on_step_end=lambda m, s, total: m.after_step(s, total),
        config=config.to_dict(),
    )
    evals = {split: load_images(config, split) for split in config.eval_split_list}
    trained = model.encoders()
    initial = dict(zip([f"random {k}" for k in trained], build_backbones(config), strict=True))
    device = next(model.parameters()).device
    probes = probe_encoders(
        {**trained, **{k: m.to(device) for k, m in initial.items()}}, train, evals, labels, config
    )
    primary, label = config.eval_split_list[0], primary_label
    main_encoder = next(iter(trained))
    scores, random_scores = (
        probes[primary][label][main_encoder],
        probes[primary][label][f"random {main_encoder}"],
    )
    metrics = write_metrics(
        config.run_dir,
        recipe="ssl",
        notebook=NOTEBOOK,
        method=config.method,
        modality="image",
        task="ssl",
        split=primary,
        metrics={
            "top1": scores["linear_probe"],
            "linear_probe": scores["linear_probe"],
            "knn": scores["knn"],
            "random_linear_probe": random_scores["linear_probe"],
            "random_knn": random_scores["knn"],
            "probe_label": label,
        },
        num_samples=len(train),
        epochs=config.epochs,
        train_seconds=history_seconds(history),
        backbone=config.backbone,
        encoder=main_encoder,
        dataset=config.dataset,
        probes=probes,
    )
    table = probe_table(probes[primary], config.method)
    return RunResult(
        config.run_dir, metrics, history, extra={"model": model, "probes": probes, "table": table}
    )


def load_trained(run_dir: str | os.PathLike) -> TrainedRun:
    """Rebuilds a trained model (student, teacher, loss state) from its run directory; never trains.

    Returns:
        A :class:`TrainedRun` whose ``model`` is the method's training module, with parts its encoders
        (``model.encoders()``: ``"teacher"`` for DINO, ``"backbone"`` for Barlow Twins, ``"cnn"`` and
        ``"vit"`` for CASS); pictures at ``image_size``, ImageNet normalisation.

    Raises:
        RunNotFoundError: if the run, its config.json or every checkpoint is missing.
    """
    config = SSLConfig.load(run_dir, RECIPE.how)
    model = load_run_weights(build_model(config), run_dir, RECIPE.how)
    return TrainedRun(
        recipe=RECIPE.name, run_dir=Path(run_dir), config=config, model=model, image_size=config.image_size,
        mean=IMAGENET_MEAN, std=IMAGENET_STD, parts=dict(model.encoders()),
    )  # fmt: skip


def display_name(metrics: dict[str, Any]) -> str:
    """``<method> (<backbone>)``, e.g. ``dino (vit_tiny_demo)``."""
    method = str(metrics.get("method", "ssl"))
    return f"{method} ({metrics['backbone']})" if metrics.get("backbone") else method


def example_views(
    config: SSLConfig, image: torch.Tensor, seed: int = 0
) -> tuple[list[torch.Tensor], list[str]]:
    """The training views of one uint8 image ``(3, S, S)``: ``(3, s, s)`` normalised tensors and their names."""
    generator = torch.Generator().manual_seed(seed)
    views = [v[0] for v in make_views(config)(image[None], generator)]
    if config.method in ("dino", "dino_twins"):
        names = ["global 1", "global 2", *(f"local {i + 1}" for i in range(config.n_local_crops))]
    else:
        names = ["view 1", "view 2"] if config.method == "barlow_twins" else ["CNN + ViT input"]
    return views, names


def sample_image(config: SSLConfig, index: int = 0) -> torch.Tensor:
    """Training image ``index`` of ``config.dataset`` as uint8 ``(3, S, S)``, without loading the split."""
    if config.dataset == SHARDS:
        from nbhelpers.data.inspect import iter_raw_samples

        sample = next(
            itertools.islice(iter_raw_samples(manifests(config)[0], config.train_split), index, None)
        )
        return _to_uint8(config.image_size)(sample["image"])
    import datasets

    dataset = datasets.load_dataset(config.dataset, split=config.train_split)
    column, _ = hf_columns(dataset, config.image_column, config.label_column)
    return _to_uint8(config.image_size)(dataset[index][column])


RECIPE = Recipe(
    name="ssl",
    config_class=SSLConfig,
    notebook=NOTEBOOK,
    run=run,
    load_trained=load_trained,
    predict_run=None,
    display_name=display_name,
)
