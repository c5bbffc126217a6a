"""CASS-MM pre-training, then the classifier (over the shards' classes) on its frozen features.

Stage 1 trains a CNN, a ViT and a text encoder together with the CASS-MM loss
(:mod:`nbhelpers.losses.cass_mm`): CNN-ViT agreement on every image, plus each image tower contrasted
with the captions of the valid pairs. Stage 2 freezes the three towers and trains the transformer
classification head (:class:`nbhelpers.models.heads.TransformerClassifierHead`) on the image feature
(the CNN and ViT embeddings combined) and the text feature: a linear-probe-style evaluation of what the
pre-training learned, with the one non-linearity the task needs (the class is an interaction of the two
modalities). The head has one output per class of the shards' label set (the seven merged classes, or the
user's own); the contrastive terms take the positives the shards mark (``valid_pair``).

**Accumulation** (``grad_accum_steps > 1``, stage 1): with ``accumulate_loss="batch"`` (the default) the
loss is the whole batch's (:mod:`nbhelpers.train.accumulation`): the text terms contrast every valid pair
of the batch, the CASS term is its mean over the batch. The ResNet's BatchNorm normalises each
micro-batch by its own statistics in both passes (as under ``micro``), so the step is exact for that
model, not the one-batch step; the ViT and text towers have no BatchNorm. ``micro``: one loss per
micro-batch. Stage 2 (cross-entropy, per sample) is the same either way.

Run directory: ``runs/<run_name>/`` holds stage 1 (checkpoints, history) and ``metrics.json``;
``runs/<run_name>/classifier/`` holds stage 2's checkpoints and history.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import PartialState
from accelerate.utils import set_seed
from torch import nn

from nbhelpers.config import param
from nbhelpers.data.memory import TensorSplit, load_split
from nbhelpers.data.taxonomy import NUM_CLASSES, label_set_of
from nbhelpers.data.transforms import CLIP_MEAN, CLIP_STD
from nbhelpers.losses import cass_mm_loss
from nbhelpers.models.cass_mm import CASSMM
from nbhelpers.models.clip import clip_image_size, create_clip
from nbhelpers.models.heads import TransformerClassifierHead
from nbhelpers.train.accumulation import BatchLoss, step_for
from nbhelpers.train.engine import fit
from nbhelpers.train.identity import bind_stage, file_input, local_inputs
from nbhelpers.train.recipes.base import load_run_weights, sync_batchnorm
from nbhelpers.train.recipes.config import RecipeConfig, accumulate_loss_param, manifests, train_spec
from nbhelpers.train.recipes.data import eval_batches, tensor_batches, train_data
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
from nbhelpers.train.run_dir import latest_checkpoint
from nbhelpers.train.run_lock import locks_its_run

CLASSIFIER_DIR = "classifier"


@dataclass
class CassMMConfig(RecipeConfig):
    """Parameters of ``05_train_cass_mm``."""

    SECTION: ClassVar[str] = "cass_mm"
    RECIPE: ClassVar[str] = "cass_mm"
    WEIGHT_SOURCES: ClassVar[tuple[str, ...]] = ("pretrained",)

    model: str = param("memelab-tiny-vit", help="open_clip model giving the ViT and text towers")
    pretrained: str = param(
        "", help="open_clip tag or local weights for the ViT/text towers; empty: from scratch"
    )
    cnn: str = param("resnet18", choices=("resnet18", "resnet50"))
    cnn_image_size: int = param(32, min=16, help="the CNN's input size (images are resized to it)")
    cnn_small_image_stem: bool = param(
        False, help="ResNet CIFAR stem (stride-1 3x3 conv, no max-pool): slower"
    )
    head_epochs: int = param(20, min=1, help="epochs of the classifier on frozen features")
    head_lr: float = param(2e-3, min=0.0)
    head_layers: int = param(2, min=1)
    head_heads: int = param(8, min=1)
    accumulate_loss: str = accumulate_loss_param(
        "batch", "the ResNet's BatchNorm still normalises per micro-batch"
    )

    def weight_inputs(self) -> dict[str, Any]:
        return local_inputs(pretrained=self.pretrained or None)


def build_model(config: CassMMConfig, weights: str | None = None) -> tuple[CASSMM, Any, int]:
    """The three towers (the ViT and text towers from ``weights``: an open_clip tag or file; None:
    random init), the tokenizer and the ViT's input size."""
    clip, _, _, tokenizer = create_clip(config.model, pretrained=weights)
    size = clip_image_size(clip)
    cnn = CASSMM(
        clip,
        cnn=config.cnn,
        cnn_image_size=config.cnn_image_size,
        cnn_small_image=config.cnn_small_image_stem,
    )
    return cnn, tokenizer, size


def encode(model: nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The three towers' embeddings ``(B, D)``, the temperature and the mask of a (micro-)batch."""
    out = model(batch["image"], batch["tokens"])
    return {
        "cnn": out["cnn"],
        "vit": out["vit"],
        "text": out["text"],
        "logit_scale": out["logit_scale"].reshape(()),
        "valid_pair": batch["valid_pair"],
    }


def pretrain_loss(features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    """The CASS-MM loss of the batch's features (of :func:`encode`)."""
    loss, parts = cass_mm_loss(
        features["cnn"], features["vit"], features["text"], features["logit_scale"], features["valid_pair"]
    )
    logs = {name: float(value) for name, value in parts.items()}
    logs["valid_pairs"] = float(features["valid_pair"].sum().item())
    return loss, logs


#: Under accumulation (``accumulate_loss="batch"``) the loss of the whole batch.
BATCH_LOSS = BatchLoss(encode, pretrain_loss)


def pretrain_step(model: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
    """The CASS-MM loss of one batch."""
    return BATCH_LOSS.step(model, batch)


@torch.no_grad()
def extract_features(model: CASSMM, data: TensorSplit, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Frozen image and text features ``(N, D)`` and labels of a split in memory."""
    model.eval()
    device = next(model.parameters()).device
    images, texts = [], []
    for batch in eval_batches(data, batch_size, CLIP_MEAN, CLIP_STD):
        image, text = model.features(batch["image"].to(device), batch["tokens"].to(device))
        images.append(image.cpu())
        texts.append(text.cpu())
    return {"image": torch.cat(images), "text": torch.cat(texts), "label": data.labels.clone()}


class FeatureClassifier(nn.Module):
    """The transformer head on precomputed (image, text) features, one output per class."""

    def __init__(
        self, embed_dim: int, num_layers: int = 2, num_heads: int = 8, num_classes: int = NUM_CLASSES
    ):
        super().__init__()
        self.head = TransformerClassifierHead(
            embed_dim, num_classes, num_layers=num_layers, num_heads=num_heads
        )

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return self.head(image, text)


def head_step(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    logits = model(batch["image"], batch["text"])
    loss = F.cross_entropy(logits, batch["label"])
    return loss, {"train_acc": float((logits.argmax(1) == batch["label"]).float().mean())}


@torch.no_grad()
def predict_features(head: nn.Module, features: dict[str, torch.Tensor]) -> np.ndarray:
    """Class probabilities ``(N, C)`` from precomputed features."""
    head.eval()
    return head(features["image"], features["text"]).softmax(-1).numpy()


@locks_its_run
def run(config: CassMMConfig | dict[str, Any]) -> RunResult:
    """Pre-trains CASS-MM, trains the classifier on its frozen features, evaluates both stages' output."""
    config = CassMMConfig.coerce(config)
    found = manifests(config)
    class_names = label_set_of(found).names
    weights = config.pretrained or None
    config.bind(found)
    set_seed(config.seed)  # the initial weights are a function of the seed, whatever ran before
    model, tokenizer, size = build_model(config, weights)
    model = sync_batchnorm(model, PartialState().num_processes, PartialState().device)  # the ResNet's
    data = train_data(config, found, size, tokenizer)
    history = fit(
        model,
        step_for(BATCH_LOSS, config.accumulate_loss),
        data.batches,
        train_spec(config, data.steps_per_epoch),
        config=config.to_dict(),
    )
    train_features = extract_features(
        model, data.memory or load_split(found, config.train_split, size, tokenizer, limit=config.limit)
    )
    # The head is trained on the towers' features: bound to the towers' checkpoint, it is trained again
    # (never reused) if they changed.
    towers = latest_checkpoint(config.run_dir)
    bind_stage(config.run_dir / CLASSIFIER_DIR, config.identity(found, {"towers": file_input(towers)}))
    head = FeatureClassifier(model.embed_dim, config.head_layers, config.head_heads, len(class_names))
    share = len(train_features["label"]) // PartialState().num_processes  # each process's samples
    if share < 1:
        raise ValueError(f"{len(train_features['label'])} training samples: fewer than one per process")
    head_batch = min(config.batch_size, share)
    head_spec = train_spec(
        config, share // head_batch, run_dir=config.run_dir / CLASSIFIER_DIR,
        epochs=config.head_epochs, lr=config.head_lr, warmup_steps=0, grad_accum_steps=1,
    )  # fmt: skip
    head_history = fit(
        head,
        head_step,
        tensor_batches(train_features, head_batch, config.seed),
        head_spec,
        config=config.to_dict(),
    )

    def predict_split(split: str) -> tuple[np.ndarray, np.ndarray]:
        features = extract_features(model, load_split(found, split, size, tokenizer, limit=config.limit))
        return predict_features(head, features), features["label"].numpy()

    reports, summary = evaluate_classifier(config.run_dir, predict_split, config.eval_split_list, class_names)
    primary = config.eval_split_list[0]
    metrics = RunMetrics(
        recipe="cass_mm",
        notebook="05_train_cass_mm",
        method="cass_mm",
        modality="multimodal",
        task=class_task(class_names),
        classes=class_names,
        split=primary,
        metrics=headline(reports[primary]),
        num_samples=data.num_samples,
        epochs=config.epochs,
        train_seconds=history_seconds(history, head_history),
        stages={"head": config.run_dir / CLASSIFIER_DIR},
        extra={"head_epochs": config.head_epochs, "splits": summary},
    ).write(config.run_dir)
    return RunResult(
        config.run_dir,
        metrics,
        history,
        extra={"head_history": head_history, "reports": reports, "model": model, "head": head},
    )


def load_trained(run_dir: str | os.PathLike, weights: Mapping[str, torch.Tensor] | None = None) -> TrainedRun:
    """The trained towers and classifier head of a run, from their last checkpoints; never trains.

    Args:
        run_dir: the run directory (or an exported folder holding its config.json and metrics.json).
        weights: :meth:`TrainedRun.weights` (towers under ``model.``, head under ``head.``) to fill the
            model with instead of the checkpoints.

    Returns:
        A :class:`TrainedRun` whose ``model`` is the three towers (:class:`CASSMM`), with parts
        ``"towers"`` (the same), ``"head"`` (the :class:`FeatureClassifier`, over the run's classes:
        ``class_names``), ``"clip"`` (the ViT and text towers), ``"image_tower"`` (the ViT) and ``"cnn"``
        (the ResNet).

    Raises:
        RunNotFoundError: if the run, its config.json or a checkpoint (towers or head) is missing.
    """
    config = CassMMConfig.load(run_dir, RECIPE.how)
    model, tokenizer, size = build_model(config)
    names = run_class_names(run_dir, config)
    head = FeatureClassifier(model.embed_dim, config.head_layers, config.head_heads, len(names))
    parts = {
        "towers": model,
        "head": head,
        "clip": model.clip,
        "image_tower": model.clip.visual,
        "cnn": model.cnn,
    }
    trained = TrainedRun(
        recipe=RECIPE.name, run_dir=Path(run_dir), config=config, model=model, tokenizer=tokenizer,
        image_size=size, mean=CLIP_MEAN, std=CLIP_STD, parts=parts, class_names=names,
    )  # fmt: skip
    if weights is None:
        load_run_weights(model, run_dir, RECIPE.how)
        load_run_weights(head, Path(run_dir) / CLASSIFIER_DIR, RECIPE.how)
    else:
        trained.load_weights(weights)
    return trained


def predict_split(trained: TrainedRun, data: TensorSplit) -> np.ndarray:
    """``(N, C)`` class probabilities of a loaded run on samples in memory: the towers' features, then the
    head (kept on the CPU, where the features are)."""
    return predict_features(trained.parts["head"], extract_features(trained.model, data))


def predict_run(run_dir: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Re-scores a finished run on ``split``: the towers and the head from their last checkpoints,
    ``(N, C)`` probabilities and ``(N,)`` labels.

    Raises:
        RunNotFoundError: if the run, its config.json or a checkpoint (towers or head) is missing.
    """
    trained = load_trained(run_dir)
    config = trained.config
    data = load_split(manifests(config), split, trained.image_size, trained.tokenizer, limit=config.limit)
    return predict_split(trained, data), data.labels.numpy()


def display_name(metrics: dict[str, Any]) -> str:
    """``CASS-MM + head``."""
    return "CASS-MM + head"


RECIPE = Recipe(
    name="cass_mm",
    config_class=CassMMConfig,
    notebook="05_train_cass_mm",
    run=run,
    load_trained=load_trained,
    predict_run=predict_run,
    display_name=display_name,
    predict_split=predict_split,
)
