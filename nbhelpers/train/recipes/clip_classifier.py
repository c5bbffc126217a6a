"""CLIP + a transformer classification head, fine-tuned fully (``baseline``) or with LoRA (``lora``).

The loss is a masked contrastive loss (CLIP's symmetric InfoNCE over the pairs whose text truly
describes the image: ``valid_pair``, class 0 of the seven merged classes, or the valid-pair classes of the
shards' own label set) plus cross-entropy over the shards' classes, with equal weights by default.
In ``lora`` mode only the LoRA adapters on every attention ``out_proj`` of both towers (see
:mod:`nbhelpers.lora`) and the head train; in ``baseline`` mode every weight does.

**Accumulation** (``grad_accum_steps > 1``): with ``accumulate_loss="batch"`` (the default) both terms
are the whole batch's (:mod:`nbhelpers.train.accumulation`): the contrastive term over every valid pair
of the batch, the cross-entropy its mean over the batch, and the gradient the one-batch gradient. The
head's dropout draws the same masks in both passes; they are not the masks one batch would draw, so the
step equals the one-batch step exactly with dropout off (``micro``: each micro-batch is its own loss).

``python -m nbhelpers.train clip_classifier mode=lora epochs=5`` runs it from the command line.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from accelerate.utils import set_seed
from torch import nn

from nbhelpers.config import ConfigError, param
from nbhelpers.data.memory import TensorSplit, load_split
from nbhelpers.data.taxonomy import NUM_CLASSES, label_set_of
from nbhelpers.data.transforms import CLIP_MEAN, CLIP_STD
from nbhelpers.lora import add_lora
from nbhelpers.losses import masked_clip_loss
from nbhelpers.models.clip import clip_image_size, create_clip
from nbhelpers.models.heads import CLIPClassifier
from nbhelpers.train.accumulation import BatchLoss, step_for
from nbhelpers.train.engine import fit
from nbhelpers.train.recipes.base import load_run_weights
from nbhelpers.train.recipes.clip import StartsFromClip, check_patch_divides
from nbhelpers.train.recipes.config import RecipeConfig, accumulate_loss_param, manifests, train_spec
from nbhelpers.train.recipes.data import eval_batches, train_data
from nbhelpers.train.recipes.registry import Recipe, TrainedRun
from nbhelpers.train.recipes.results import (
    RunMetrics,
    RunResult,
    class_task,
    evaluate_classifier,
    headline,
    history_seconds,
    run_class_names,
)
from nbhelpers.train.run_lock import locks_its_run

MODES = ("lora", "baseline")


@dataclass
class ClipClassifierConfig(StartsFromClip, RecipeConfig):
    """Parameters of ``06_train_clip_lora_classifier``."""

    SECTION: ClassVar[str] = "clip_classifier"
    RECIPE: ClassVar[str] = "clip_classifier"
    # The checkpoint holds every weight, LoRA's frozen base too.
    WEIGHT_SOURCES: ClassVar[tuple[str, ...]] = ("pretrained",)

    mode: str = param("lora", choices=MODES, help="lora: adapters + head train; baseline: everything trains")
    model: str = param("memelab-tiny-vit", help="open_clip architecture (ViT-B-32 on a T4)")
    pretrained: str = param(
        "", help="open_clip tag (laion2b_s34b_b79k) or a local checkpoint; empty: random init"
    )
    full_lr: float | None = param(
        None, above=0.0, help="learning rate of baseline mode, where every weight trains (None: lr)"
    )
    lora_rank: int = param(4, min=1, help="rank of the LoRA adapters")
    head_layers: int = param(2, min=1)
    head_heads: int = param(8, min=1)
    contrastive_weight: float = param(1.0, min=0.0)
    ce_weight: float = param(1.0, min=0.0)
    image_size: int | None = param(None, min=16, help="None: the model's own input size")
    accumulate_loss: str = accumulate_loss_param("batch")

    def default_run_name(self) -> str:
        return f"clip_classifier_{self.mode}"

    @property
    def mode_lr(self) -> float:
        """The peak learning rate of this mode: pretrained weights take a far smaller step when they all
        train (``full_lr``) than when only new adapters and the head do (``lr``)."""
        return self.full_lr if self.mode == "baseline" and self.full_lr is not None else self.lr

    def identity_exclude(self) -> tuple[str, ...]:
        if self.mode == "lora":
            return ("full_lr",)
        return ("lr",) if self.full_lr is not None else ()

    def check(self) -> None:
        super().check()
        check_patch_divides(self.model, self.image_size)
        if self.contrastive_weight == 0 and self.ce_weight == 0:
            raise ConfigError("ce_weight: contrastive_weight and ce_weight cannot both be 0")


def build_model(
    config: ClipClassifierConfig, weights: str | None = None, num_classes: int = NUM_CLASSES
) -> tuple[CLIPClassifier, Any, int]:
    """The classifier (with LoRA in ``lora`` mode), its tokenizer and its input image size.

    Args:
        config: the recipe's config.
        weights: the CLIP weights to start from, as :func:`~nbhelpers.train.recipes.clip.resolve_pretrained`
            gives them (None: random init, e.g. to load a trained run's checkpoint into).
        num_classes: the head's outputs (the shards' classes).
    """
    clip, _, _, tokenizer = create_clip(config.model, pretrained=weights)
    if config.mode == "lora":
        add_lora(clip, rank=config.lora_rank)  # freezes every base weight of both towers
    model = CLIPClassifier(clip, num_classes, num_layers=config.head_layers, num_heads=config.head_heads)
    size = config.image_size or clip_image_size(clip)
    return model, tokenizer, size


def encode(model: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The towers' features, the temperature, the head's logits, labels and mask of a (micro-)batch."""
    out = model(batch["image"], batch["tokens"])
    return {
        "image": out["image_features"],
        "text": out["text_features"],
        "logit_scale": out["logit_scale"].reshape(()),
        "logits": out["logits"],
        "label": batch["label"],
        "valid_pair": batch["valid_pair"],
    }


def classifier_loss(
    features: dict[str, torch.Tensor], config: ClipClassifierConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """Masked contrastive loss + cross-entropy over the batch's features (of :func:`encode`)."""
    ce = F.cross_entropy(features["logits"], features["label"])
    contrastive = masked_clip_loss(
        features["image"], features["text"], features["logit_scale"], features["valid_pair"]
    )
    loss = config.ce_weight * ce + config.contrastive_weight * contrastive
    accuracy = (features["logits"].argmax(1) == features["label"]).float().mean()
    return loss, {
        "ce": ce.item(),
        "contrastive": contrastive.item(),
        "train_acc": accuracy.item(),
        "valid_pairs": float(features["valid_pair"].sum().item()),
    }


def batch_loss(config: ClipClassifierConfig) -> BatchLoss:
    """The loss of ``config``'s weights; under accumulation (``accumulate_loss="batch"``) the whole
    batch's: the contrastive term over every valid pair of the batch, the cross-entropy (per sample) its
    mean over the batch, so the total is the one-batch total."""
    return BatchLoss(encode, functools.partial(classifier_loss, config=config))


def step(
    model: nn.Module, batch: dict[str, Any], config: ClipClassifierConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """Masked contrastive loss + cross-entropy on one batch."""
    return batch_loss(config).step(model, batch)


@torch.no_grad()
def predict(model: nn.Module, data, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities ``(N, C)`` and labels ``(N,)`` of a split held in memory."""
    model.eval()
    device = next(model.parameters()).device
    probs, labels = [], []
    for batch in eval_batches(data, batch_size, CLIP_MEAN, CLIP_STD):
        logits = model(batch["image"].to(device), batch["tokens"].to(device))["logits"]
        probs.append(logits.float().softmax(-1).cpu())
        labels.append(batch["label"])
    return torch.cat(probs).numpy(), torch.cat(labels).numpy()


@locks_its_run
def run(config: ClipClassifierConfig | dict[str, Any]) -> RunResult:
    """Trains the classifier, evaluates it on ``eval_splits`` and writes the run directory."""
    config = ClipClassifierConfig.coerce(config)
    found = manifests(config)
    class_names = label_set_of(found).names
    weights = config.pretrained_weights()
    config.bind(found)
    set_seed(config.seed)  # the initial weights are a function of the seed, whatever ran before
    model, tokenizer, size = build_model(config, weights, len(class_names))
    data = train_data(config, found, size, tokenizer)
    spec = train_spec(config, data.steps_per_epoch, lr=config.mode_lr)
    step_fn = step_for(batch_loss(config), config.accumulate_loss)
    history = fit(model, step_fn, data.batches, spec, config=config.to_dict())
    splits, summary = evaluate_classifier(
        config.run_dir,
        lambda split: predict(model, load_split(found, split, size, tokenizer, limit=config.limit)),
        config.eval_split_list,
        class_names,
    )
    primary = config.eval_split_list[0]
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    metrics = RunMetrics(
        recipe="clip_classifier",
        notebook="06_train_clip_lora_classifier",
        method=f"clip_{config.mode}",
        modality="multimodal",
        task=class_task(class_names),
        classes=class_names,
        split=primary,
        metrics=headline(splits[primary]),
        num_samples=data.num_samples,
        epochs=config.epochs,
        train_seconds=history_seconds(history),
        extra={
            "model": config.model,
            "trainable_parameters": trainable,
            "splits": summary,
        },
    ).write(config.run_dir)
    return RunResult(
        config.run_dir,
        metrics,
        history,
        extra={"reports": splits, "model": model, "config": config.to_dict()},
    )


def load_trained(run_dir: str | os.PathLike, weights: Mapping[str, torch.Tensor] | None = None) -> TrainedRun:
    """Rebuilds a trained classifier from its run directory (config.json + last checkpoint); never trains.

    Args:
        run_dir: the run directory (or an exported folder holding its config.json and metrics.json).
        weights: :meth:`TrainedRun.weights` to fill the model with instead of the last checkpoint.

    Returns:
        A :class:`TrainedRun` whose ``model`` is the :class:`CLIPClassifier` (with LoRA in ``lora``
        mode) over the run's classes (``class_names``), with parts ``"clip"`` (its CLIP), ``"image_tower"``
        (``clip.visual``) and ``"head"``.

    Raises:
        RunNotFoundError: if the run, its config.json or every checkpoint is missing.
    """
    config = ClipClassifierConfig.load(run_dir, RECIPE.how)
    names = run_class_names(run_dir, config)
    model, tokenizer, size = build_model(config, num_classes=len(names))
    trained = TrainedRun(
        recipe=RECIPE.name, run_dir=Path(run_dir), config=config, model=model, tokenizer=tokenizer,
        image_size=size, mean=CLIP_MEAN, std=CLIP_STD,
        parts={"clip": model.clip, "image_tower": model.clip.visual, "head": model.head}, class_names=names,
    )  # fmt: skip
    if weights is None:
        load_run_weights(model, run_dir, RECIPE.how)
    else:
        trained.load_weights(weights)
    return trained


def predict_split(trained: TrainedRun, data: TensorSplit) -> np.ndarray:
    """``(N, C)`` class probabilities of a loaded run on samples in memory (at ``trained.image_size``)."""
    return predict(trained.model, data)[0]


def predict_run(run_dir: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Re-scores a finished run on ``split`` from config.json + its last checkpoint: ``(N, C)`` probabilities
    and ``(N,)`` labels, the split loaded as the run loaded it (image size, tokenizer, ``limit``).

    Raises:
        RunNotFoundError: if the run, its config.json or every checkpoint is missing.
    """
    trained = load_trained(run_dir)
    config = trained.config
    data = load_split(manifests(config), split, trained.image_size, trained.tokenizer, limit=config.limit)
    return predict_split(trained, data), data.labels.numpy()


def display_name(metrics: dict[str, Any]) -> str:
    """``CLIP <mode>`` (``CLIP lora``, ``CLIP baseline``), the seed's names of the two models."""
    return f"CLIP {str(metrics.get('method', '')).removeprefix('clip_')}"


RECIPE = Recipe(
    name="clip_classifier",
    config_class=ClipClassifierConfig,
    notebook="06_train_clip_lora_classifier",
    run=run,
    load_trained=load_trained,
    predict_run=predict_run,
    display_name=display_name,
    predict_split=predict_split,
)
