"""Hate-CLIPper fusion heads trained on the image and text features of a CLIP-like backbone.

Hate-CLIPper (Kumar & Nandakumar, 2022, "Hate-CLIPper: Multimodal Hateful Meme Classification based on
Cross-modal Interaction of CLIP Features") keeps CLIP frozen and trains only a small head on its pooled
image and text features (:class:`nbhelpers.models.fusion.FusionHead`): ``concat`` joins the two projected
vectors, ``align`` multiplies them element-wise, ``cross`` takes their outer product, the *feature
interaction matrix*, so that a linear layer can read any image-text interaction. The task is Hateful
Memes' binary label (Kiela et al., 2020, "The Hateful Memes Challenge: Detecting Hate Speech in
Multimodal Memes"), trained with binary cross-entropy and reported as AUROC and accuracy.

A frozen backbone (the default) is run once per split: its features are precomputed, optionally cached
on disk under ``runs_dir/.features/`` (:mod:`nbhelpers.train.recipes.fusion_features`), and an epoch of
the head then costs milliseconds. With ``trainable_backbone=True`` the backbone and head train end to end on
images and texts.

Evaluation covers the source's seen and unseen development splits (``dev_seen``/``dev_unseen`` for
Hateful Memes, whose test labels are not public; ``val``/``test``/``unseen`` for the synthetic
benchmark) in one table; ``metrics.json`` carries the primary split's AUROC and accuracy.

**What the heads predict** follows from the shards' label set alone (:func:`target_classes`), never from
which samples happen to carry a ``hateful`` field:

* the seven merged classes (every built-in source): the binary hateful label (the sample's ``hateful``:
  Hateful Memes' own label, or the Hate class), one logit, BCE, ``task="binary"``, as above;
* a label set of the user's own (any C >= 2 classes): the classes themselves, C logits, cross-entropy,
  ``task="multiclass"``; reported as top-1 (``accuracy``) to top-3 accuracy (k <= C), macro F1 and the
  macro one-vs-rest AUROC (with two classes: the binary AUROC of the second class, and its ROC curve).
  ``prior_bias`` starts the output biases at the training split's log class frequencies (add-one
  smoothed); ``pos_weight`` is for the binary task only. To train the binary hateful task on data of
  your own, label it with the two classes ``("not hateful", "hateful")``.

``python -m nbhelpers.train fusion fusion=concat epochs=20`` runs it from the command line.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import PartialState
from accelerate.utils import set_seed
from torch import nn

from nbhelpers.config import ConfigError, param
from nbhelpers.data.memory import TensorSplit, load_split
from nbhelpers.data.taxonomy import CLASSES, HATE, UNLABELLED, LabelSet, label_set_of
from nbhelpers.fileio import read_json
from nbhelpers.metrics.classification import binary_report, classification_report, one_vs_rest_auroc
from nbhelpers.models.backbones import FEATURES, FeatureBackbone, OpenClipBackbone, build_backbone
from nbhelpers.models.fusion import (
    FUSIONS,
    HATEFUL_CLASSES,
    FusionHead,
    HatefulMemesClassifier,
    binary_logit_loss,
    init_class_prior_bias,
    init_prior_bias,
)
from nbhelpers.train.engine import fit
from nbhelpers.train.identity import local_inputs, recorded_input
from nbhelpers.train.recipes.base import load_run_weights
from nbhelpers.train.recipes.clip import RECIPE as CLIP_RECIPE
from nbhelpers.train.recipes.clip import StartsFromClip
from nbhelpers.train.recipes.config import RecipeConfig, manifests, train_spec
from nbhelpers.train.recipes.data import epoch_steps, tensor_batches, train_data
from nbhelpers.train.recipes.fusion_features import (
    FeatureSplit,
    extract_features,
    hateful_targets,
    image_normalisation,
    split_features,
)
from nbhelpers.train.recipes.registry import Recipe, TrainedRun
from nbhelpers.train.recipes.results import (
    CLASS_METRICS,
    RunMetrics,
    RunResult,
    Timer,
    class_task,
    history_seconds,
    topk_ks,
)
from nbhelpers.train.run_dir import RunNotFoundError
from nbhelpers.train.run_lock import locks_its_run
from nbhelpers.train.schedule import LR_SCHEDULES

NOTEBOOK = "07_hateful_memes_fusion"
_METRIC_KEYS = ("auroc", "accuracy", "positive_rate", "num_samples")
#: The per-split figures of a head over a label set of the user's own (top-k for k up to its C classes).
_CLASS_METRIC_KEYS = ("auroc", "accuracy", *CLASS_METRICS, "num_samples")


@dataclass(frozen=True)
class EvalPlan:
    """Which splits a source is evaluated on.

    Attributes:
        kinds: split -> ``"seen"`` or ``"unseen"`` (memes unlike the training ones), in table order.
        primary: the split whose AUROC and accuracy ``metrics.json`` reports at its top level.
        dev: the split monitored after every epoch (never the primary test split when there is one).
    """

    kinds: dict[str, str]
    primary: str
    dev: str


#: The labelled evaluation splits of each source (Hateful Memes' test labels are not public).
EVAL_PLANS: dict[str, EvalPlan] = {
    "synthetic": EvalPlan({"val": "seen", "test": "seen", "unseen": "unseen"}, primary="test", dev="val"),
    "hateful_memes": EvalPlan(
        {"dev_seen": "seen", "dev_unseen": "unseen"}, primary="dev_seen", dev="dev_seen"
    ),
    "mmhs150k": EvalPlan({"val": "seen", "test": "seen"}, primary="test", dev="val"),
}


@dataclass
class FusionConfig(StartsFromClip, RecipeConfig):
    """Parameters of ``07_hateful_memes_fusion``."""

    SECTION: ClassVar[str] = "fusion"
    RECIPE: ClassVar[str] = "fusion"

    backbone: str = param(
        "open_clip:memelab-tiny-vit",
        help="open_clip:<model>, hf:<CLIP/BLIP/BLIP-2 id or folder>, or a BACKBONE_PRESETS name",
    )
    pretrained: str = param(
        "", help="open_clip tag, local weights file, or run:<name> (a CLIP run of 03); empty: none"
    )
    features: str = param(
        "projected",
        choices=FEATURES,
        help="projected (contrastive embeddings) | pooled (Hate-CLIPper's: before them)",
    )
    fusion: str = param("cross", choices=FUSIONS, help="concat | align | cross (Hate-CLIPper's best)")
    map_dim: int = param(32, min=1, help="each modality's projection size (cross fuses map_dim**2 values)")
    pre_output_layers: int = param(1, min=0, help="Linear-ReLU-Dropout blocks before the output")
    pre_output_dim: int | None = param(None, min=1, help="width of those blocks; None: map_dim")
    dropout_map: float = param(0.1, min=0.0, help="dropout after each projection")
    dropout_fused: float = param(0.4, min=0.0, help="dropout on the fused vector")
    dropout_pre_output: float = param(0.2, min=0.0, help="dropout after each pre-output block")
    trainable_backbone: bool = param(
        False, help="train the backbone end to end (slow) instead of freezing it"
    )
    pos_weight: float | None = param(None, min=0.0, help="weight of the hateful term of the BCE; None: 1")
    prior_bias: bool = param(
        True,
        help="start the output bias at the training split's hateful log-odds (own classes: log class rates)",
    )
    lr_schedule: str = param(
        "cosine", choices=LR_SCHEDULES, help="after the warmup: cosine (to 0) | constant (Hate-CLIPper's)"
    )
    decay_all: bool = param(
        False, help="weight decay on every parameter, biases too (Hate-CLIPper's plain AdamW)"
    )
    eval_splits: str = param("", help="comma-separated; empty: the source's seen and unseen splits")
    feature_batch_size: int = param(256, min=1, help="batch size of feature extraction and evaluation")
    feature_cache: bool = param(True, help="cache a frozen backbone's features under runs_dir/.features/")

    def default_run_name(self) -> str:
        return f"fusion_{self.fusion}"

    def weight_inputs(self) -> dict[str, Any]:
        local_backbone = self.backbone.removeprefix("hf:") if self.backbone.startswith("hf:") else None
        return local_inputs(pretrained=self.pretrained_weights(), backbone=local_backbone)

    def checkpointed_weight_sources(self) -> tuple[str, ...]:
        # A frozen backbone is not in the checkpoints (only the head is): its weights must stay named.
        return ("pretrained",) if self.trainable_backbone else ()

    def identity_exclude(self) -> tuple[str, ...]:
        # Runs from before these fields existed read projected features and trained with a cosine schedule
        # and open_clip's decay groups: at those values the fields leave the fingerprint as it was.
        defaults = {"features": "projected", "lr_schedule": "cosine", "decay_all": False}
        return tuple(name for name, value in defaults.items() if getattr(self, name) == value)

    def check(self) -> None:
        super().check()  # also maps the sources to their eval splits (eval_plan), or raises
        for name in ("dropout_map", "dropout_fused", "dropout_pre_output"):
            if getattr(self, name) >= 1.0:
                raise ConfigError(f"{name}: must be < 1, got {getattr(self, name)!r}")
        if self.pos_weight is not None and self.pos_weight <= 0:
            raise ConfigError(f"pos_weight: must be > 0 (or None), got {self.pos_weight!r}")
        if self.backbone.startswith("hf:") and self.pretrained:
            raise ConfigError(
                f"pretrained: an hf: backbone carries its own weights; leave it empty (got {self.pretrained!r})"
            )

    @property
    def eval_plan(self) -> EvalPlan:
        """The splits to evaluate: ``eval_splits`` if set, else the sources' own (see :data:`EVAL_PLANS`).

        Raises:
            ConfigError: if ``eval_splits`` is empty and the sources have no plan, or different ones.
        """
        explicit = [s.strip() for s in self.eval_splits.split(",") if s.strip()]
        if explicit:
            kinds = {s: "unseen" if "unseen" in s else "seen" for s in explicit}
            return EvalPlan(kinds, primary=explicit[0], dev=explicit[0])
        plans = [EVAL_PLANS.get(source) for source in self.source_list]
        if None in plans or any(plan != plans[0] for plan in plans):
            known = ", ".join(EVAL_PLANS)
            raise ConfigError(
                f"eval_splits: no default for sources {self.sources!r} (defaults exist for one of: {known}, "
                "or several with the same splits); name the splits, e.g. eval_splits='val,test'"
            )
        return plans[0]

    @property
    def eval_split_list(self) -> list[str]:
        return list(self.eval_plan.kinds)


def target_classes(labels: LabelSet) -> tuple[str, ...] | None:
    """What the heads predict on shards labelled with ``labels`` (see the module docstring): None for the
    seven merged classes (the binary hateful label, one logit), else ``labels``' own classes."""
    return None if labels.names == CLASSES else labels.names


def run_target_classes(run_dir: str | os.PathLike, config: FusionConfig) -> tuple[str, ...] | None:
    """What a run's head predicts, as :func:`target_classes` says: from its ``metrics.json`` (``task`` and
    ``classes``), or for a run not finished yet from the shards ``config`` reads."""
    path = Path(run_dir) / "metrics.json"
    metrics = read_json(path) if path.is_file() else None
    if isinstance(metrics, dict) and metrics.get("task") in ("binary", "multiclass"):
        return None if metrics["task"] == "binary" else tuple(metrics["classes"])
    return target_classes(config.label_set())


def resolve_weights(config: FusionConfig) -> str | None:
    """``pretrained`` as ``build_backbone`` takes it: ``run:<name>`` becomes that CLIP run's weights file
    (a missing run raises, naming notebook 03; it is never trained here); tags and paths pass through;
    empty becomes None."""
    return config.pretrained_weights()


def build_head(config: FusionConfig, backbone: FeatureBackbone, num_outputs: int = 1) -> FusionHead:
    """A ``FusionHead`` sized for ``backbone``'s features, with one logit (binary) or one per class."""
    return FusionHead(
        backbone.image_dim,
        backbone.text_dim,
        fusion=config.fusion,
        map_dim=config.map_dim,
        pre_output_layers=config.pre_output_layers,
        dropout=(config.dropout_map, config.dropout_fused, config.dropout_pre_output),
        pre_output_dim=config.pre_output_dim,
        num_outputs=num_outputs,
    )


def build_model(
    config: FusionConfig, weights: str | None = None, num_outputs: int = 1
) -> HatefulMemesClassifier:
    """The backbone (frozen unless ``trainable_backbone``) with ``weights`` and a fresh fusion head.

    Args:
        config: the recipe's config.
        weights: what :func:`resolve_weights` gives (None: random init, or the hf: id's own weights).
        num_outputs: 1 (the binary hateful task) or the number of classes of the shards' own label set.
    """
    # The head's initial weights must not depend on what ran before in the process (e.g. training the
    # CLIP that ``run:clip`` names): seed here, not only in ``fit``.
    set_seed(config.seed)
    backbone = build_backbone(config.backbone, weights, config.trainable_backbone, config.features)
    return HatefulMemesClassifier(backbone, build_head(config, backbone, num_outputs))


def training_positive_rate(found: Sequence[Mapping], split: str) -> float:
    """The share of hateful samples in ``split`` across the manifests (from their class counts).

    Raises:
        ValueError: if the split is empty or holds no hateful or no other sample (no log-odds then).
    """
    info = [m["splits"][split] for m in found]
    total = sum(i["num_samples"] for i in info)
    hateful = sum(i["class_counts"].get(CLASSES[HATE], 0) for i in info)
    if not 0 < hateful < total:
        raise ValueError(f"split {split!r} has {hateful} hateful samples out of {total}: need both kinds")
    return hateful / total


def training_class_rates(found: Sequence[Mapping], split: str, classes: Sequence[str]) -> list[float]:
    """Each class's share of ``split`` across the manifests (from their class counts), add-one smoothed
    (``(n_c + 1) / (N + C)``) so that a class absent from training still has a finite log-prior."""
    counts = [sum(m["splits"][split]["class_counts"].get(name, 0) for m in found) for name in classes]
    total = sum(counts) + len(classes)
    return [(n + 1) / total for n in counts]


def step(
    model: nn.Module, batch: dict[str, Any], pos_weight: float | None = None, binary: bool = True
) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss of one batch, of precomputed features (a ``FusionHead``) or of images and texts (a
    classifier): BCE on the hateful target (``binary``), else cross-entropy on the class labels."""
    if "image_features" in batch:
        logits = model(batch["image_features"], batch["text_features"])
        target = batch["target"]
    else:
        logits = model(batch["image"], batch["text"])
        target = hateful_targets(batch["label"], batch["hateful"]) if binary else batch["label"]
    keep = target != UNLABELLED
    if binary:
        loss = binary_logit_loss(logits, target, pos_weight)
        predicted = (logits > 0).long()
    else:
        loss = F.cross_entropy(logits[keep], target[keep]) if keep.any() else logits.sum() * 0.0
        predicted = logits.argmax(-1)
    accuracy = (predicted[keep] == target[keep]).float().mean() if keep.any() else logits.new_zeros(())
    return loss, {"train_acc": accuracy.item()}


@torch.no_grad()
def predict(
    head: FusionHead, features: FeatureSplit, batch_size: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """The labelled samples' predictions and targets ``(N,)``: hateful probabilities ``(N,)`` of a binary
    head, class probabilities ``(N, C)`` of a head with one output per class."""
    was_training = head.training
    head.eval()
    device = next(head.parameters()).device
    features = features.labelled()
    normalise = torch.sigmoid if head.num_outputs == 1 else (lambda logits: logits.softmax(-1))
    scores = [
        normalise(
            head(
                features.image[i : i + batch_size].to(device), features.text[i : i + batch_size].to(device)
            ).float()
        ).cpu()
        for i in range(0, len(features), batch_size)
    ]
    head.train(was_training)
    return torch.cat(scores).numpy(), features.target.numpy()


def class_report(probs: np.ndarray, labels: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """The figures of a head over a label set of the user's own: the classification report (top-k for
    k <= min(3, C), per class, macro F1, confusion), ``accuracy`` (its top-1), ``auroc`` (macro one-vs-rest;
    the binary AUROC of the second class when C = 2) and, for C = 2, the ``roc`` of the second class."""
    report = classification_report(probs, labels, topk_ks(len(classes)), classes)
    report["accuracy"] = report["top1"]
    report["auroc"] = one_vs_rest_auroc(probs, labels)
    if len(classes) == 2:
        report["roc"] = binary_report(probs[:, 1], labels)["roc"]
    return report


def score_split(scores: np.ndarray, labels: np.ndarray, classes: Sequence[str] | None) -> dict[str, Any]:
    """:func:`~nbhelpers.metrics.classification.binary_report` of a binary head (``classes`` None), else
    :func:`class_report`; both hold ``auroc`` and ``accuracy``."""
    return binary_report(scores, labels) if classes is None else class_report(scores, labels, classes)


@locks_its_run
def run(config: FusionConfig | dict[str, Any]) -> RunResult:
    """Trains the fusion head (and the backbone if ``trainable_backbone``), evaluates, writes the run."""
    config = FusionConfig.coerce(config)
    found = manifests(config)
    plan = config.eval_plan
    classes = target_classes(label_set_of(found))
    binary = classes is None
    if not binary and config.pos_weight is not None:
        raise ConfigError(
            f"pos_weight: weighs the hateful term of the binary task; these shards' classes {list(classes)} "
            "are trained with cross-entropy: leave it None"
        )
    weights = config.pretrained_weights()
    config.bind(found)
    model = build_model(config, weights, 1 if binary else len(classes))
    if config.prior_bias and binary:
        init_prior_bias(model.head, training_positive_rate(found, config.train_split), config.pos_weight)
    elif config.prior_bias:
        init_class_prior_bias(model.head, training_class_rates(found, config.train_split, classes))
    backbone = model.backbone

    with Timer() as feature_timer:
        if config.trainable_backbone:
            mean, std = image_normalisation(backbone)
            data = train_data(config, found, backbone.image_size, None, mean, std)
            batches, steps, num_samples = data.batches, data.steps_per_epoch, data.num_samples
            dev_data = load_split(found, plan.dev, backbone.image_size, None, limit=config.limit)
            trained: nn.Module = model
        else:
            features = {
                s: split_features(config, backbone, found, s, weights, binary)
                for s in [config.train_split, *plan.kinds]
            }
            train = features[config.train_split].labelled()
            micro = max(1, config.batch_size // config.grad_accum_steps)
            batches = tensor_batches(train.tensors(), micro, config.seed)
            num_samples = len(train)
            steps = epoch_steps(config, num_samples, micro)
            trained = model.head  # only the head trains: its checkpoints hold no backbone weights

    def dev_features(m: nn.Module) -> FeatureSplit:
        if not config.trainable_backbone:
            return features[plan.dev]
        return extract_features(m.backbone, dev_data, config.feature_batch_size, binary=binary)

    def evaluate(m: nn.Module, epoch: int) -> dict[str, float]:
        head = m.head if isinstance(m, HatefulMemesClassifier) else m
        report = score_split(*predict(head, dev_features(m)), classes)
        return {"dev_auroc": report["auroc"], "dev_accuracy": report["accuracy"]}

    spec = train_spec(config, steps)
    history = fit(
        trained,
        lambda m, b: step(m, b, config.pos_weight, binary),
        batches,
        spec,
        evaluate=evaluate,
        config=config.to_dict(),
    )

    reports = {}
    for split in plan.kinds:
        if config.trainable_backbone:
            data_split = load_split(found, split, backbone.image_size, None, limit=config.limit)
            split_feats = extract_features(backbone, data_split, config.feature_batch_size, binary=binary)
        else:
            split_feats = features[split]
        scores, labels = predict(model.head, split_feats)
        reports[split] = score_split(scores, labels, classes)
        if PartialState().is_main_process:  # every process predicts the same; one writes
            # A binary run saves its hateful probabilities as "scores", a class run its (N, C) "probs".
            saved = {"scores": scores} if binary else {"probs": scores}
            np.savez_compressed(config.run_dir / f"predictions_{split}.npz", labels=labels, **saved)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    keys = _METRIC_KEYS if binary else _CLASS_METRIC_KEYS
    top_level = ("auroc", "accuracy") if binary else tuple(k for k in keys if k != "num_samples")
    primary_report = reports[plan.primary]
    metrics = RunMetrics(
        recipe="fusion",
        notebook=NOTEBOOK,
        method=f"hateclipper_{config.fusion}",
        modality="multimodal",
        task="binary" if binary else class_task(classes),
        classes=HATEFUL_CLASSES if binary else classes,
        split=plan.primary,
        metrics={k: primary_report[k] for k in top_level if k in primary_report},
        num_samples=num_samples,
        epochs=config.epochs,
        train_seconds=history_seconds(history),
        extra={
            "feature_seconds": round(feature_timer.seconds, 2),
            "backbone": config.backbone,
            "pretrained": config.pretrained,
            "fusion": config.fusion,
            "trainable_backbone": config.trainable_backbone,
            "trainable_parameters": trainable,
            "dev_split": plan.dev,
            "splits": {
                s: {"kind": plan.kinds[s], **{k: r[k] for k in keys if k in r}} for s, r in reports.items()
            },
        },
    ).write(config.run_dir)
    return RunResult(config.run_dir, metrics, history, extra={"reports": reports, "model": model})


def backbone_weights(run_dir: str | os.PathLike, config: FusionConfig) -> str | None:
    """The backbone weights a run was trained on, for loading it; never trains.

    A bound run reloads the exact file it recorded in ``run.json`` (checked by SHA-256); otherwise
    ``run:<name>`` becomes that CLIP run's exported weights (which must exist), tags and paths pass
    through, and empty becomes None.

    Raises:
        RunNotFoundError: the CLIP run that ``run:<name>`` names has no exported weights.
        ValueError: the recorded file changed since the run was trained.
    """
    try:
        recorded = recorded_input(run_dir, "pretrained")
    except FileNotFoundError as err:
        raise RunNotFoundError(err.filename, CLIP_RECIPE.how, what="backbone weights") from None
    if recorded is not None:
        return recorded
    try:
        return config.pretrained_weights()
    except RunNotFoundError as err:
        raise RunNotFoundError(err.path, CLIP_RECIPE.how, what="backbone weights") from None


def load_trained(run_dir: str | os.PathLike, weights: Mapping[str, torch.Tensor] | None = None) -> TrainedRun:
    """Rebuilds a trained classifier from its run directory (config.json + the last checkpoint); never
    trains.

    A frozen-backbone run checkpoints only the head; the backbone is rebuilt from ``backbone`` and
    ``pretrained`` (for ``run:<name>``, from that CLIP run's exported weights, :func:`backbone_weights`).
    With ``weights`` (:meth:`TrainedRun.weights`: backbone and head) the model is filled with them and no
    other run is read.

    Returns:
        A :class:`TrainedRun` whose ``model`` is the :class:`HatefulMemesClassifier` (it takes raw
        captions: ``tokenizer`` is None), with parts ``"backbone"`` and ``"head"``, and for an open_clip
        backbone ``"clip"`` (its CLIP) and ``"image_tower"`` (``clip.visual``); ``class_names`` are
        :data:`~nbhelpers.models.fusion.HATEFUL_CLASSES` for a binary head, else the run's classes.

    Raises:
        RunNotFoundError: if the run, its config.json, the last checkpoint or the backbone weights of
            ``run:<name>`` are missing.
    """
    config = FusionConfig.load(run_dir, RECIPE.how)
    classes = run_target_classes(run_dir, config)
    start = backbone_weights(run_dir, config) if weights is None else None
    model = build_model(config, start, 1 if classes is None else len(classes))
    backbone = model.backbone
    parts: dict[str, nn.Module] = {"backbone": backbone, "head": model.head}
    if isinstance(backbone, OpenClipBackbone):
        parts.update(clip=backbone.model, image_tower=backbone.model.visual)
    mean, std = image_normalisation(backbone)
    trained = TrainedRun(
        recipe=RECIPE.name, run_dir=Path(run_dir), config=config, model=model, tokenizer=None,
        image_size=backbone.image_size, mean=mean, std=std, parts=parts,
        class_names=HATEFUL_CLASSES if classes is None else classes,
    )  # fmt: skip
    if weights is None:
        load_run_weights(model if config.trainable_backbone else model.head, run_dir, RECIPE.how)
    else:
        trained.load_weights(weights)
    model.eval()
    return trained


def run_fusions(
    config: FusionConfig, fusions: Sequence[str] = FUSIONS, done: Mapping[str, RunResult] | None = None
) -> dict[str, RunResult]:
    """Runs the recipe once per fusion with everything else equal, for a comparison.

    With a frozen backbone the features are read from the cache the first run wrote, so each extra
    fusion costs only its head's training. Each run goes to ``<run_name>_<fusion>`` (default
    ``fusion_<fusion>``).

    Args:
        config: the shared config (its ``fusion`` is replaced).
        fusions: the fusions to run, in order.
        done: results already at hand, by fusion (not run again).

    Returns:
        fusion -> its result, in the order of ``fusions``.
    """
    results = {}
    for fusion in fusions:
        if done and fusion in done:
            results[fusion] = done[fusion]
            continue
        name = (
            f"{config.run_name}_{fusion}" if config.run_name and fusion != config.fusion else config.run_name
        )
        results[fusion] = run(FusionConfig.coerce({**config.to_dict(), "fusion": fusion, "run_name": name}))
    return results


def predict_split(trained: TrainedRun, data: TensorSplit) -> np.ndarray:
    """Hateful probabilities ``(N,)`` (a binary head) or class probabilities ``(N, C)`` of a loaded run on
    labelled samples in memory, from features the backbone extracts afresh (the cache is not read)."""
    model = trained.model
    binary = model.head.num_outputs == 1
    features = extract_features(model.backbone, data, trained.config.feature_batch_size, binary=binary)
    return predict(model.head, features)[0]


def predict_run(run_dir: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Re-scores a finished run on ``split`` (:func:`predict_split`) from the backbone's weights and the
    head's last checkpoint: its scores and its labelled samples' targets ``(N,)``.

    Raises:
        RunNotFoundError: if the run, its config.json, the head's checkpoint, or the backbone's weights
            file (``run:<name>``) is missing; evaluation never trains a missing CLIP.
    """
    trained = load_trained(run_dir)
    data = load_split(manifests(trained.config), split, trained.image_size, None, limit=trained.config.limit)
    targets = (
        hateful_targets(data.labels, data.hateful) if trained.model.head.num_outputs == 1 else data.labels
    )
    return predict_split(trained, data), targets[targets != UNLABELLED].numpy()


def display_name(metrics: dict[str, Any]) -> str:
    """``Hate-CLIPper <fusion>`` (``Hate-CLIPper cross``, ...)."""
    return f"Hate-CLIPper {str(metrics.get('method', '')).removeprefix('hateclipper_')}"


RECIPE = Recipe(
    name="fusion",
    config_class=FusionConfig,
    notebook=NOTEBOOK,
    run=run,
    load_trained=load_trained,
    predict_run=predict_run,
    display_name=display_name,
    predict_split=predict_split,
)
