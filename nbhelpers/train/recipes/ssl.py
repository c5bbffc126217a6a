"""Self-supervised image pre-training (DINO, Barlow Twins, DINO-Twins, CASS), read out by frozen probes.

Methods (``method``), one module each in :mod:`nbhelpers.train.ssl_methods` (registry:
:data:`~nbhelpers.train.ssl_methods.METHODS`): ``dino`` (Caron et al., 2021), ``barlow_twins`` (Zbontar et
al., 2021), ``dino_twins`` (DINO plus a Barlow Twins term) and ``cass`` (Singh, Sizikova & Cirrone, 2022).
Each method's hyperparameters are its own (``method_kwargs``, see :class:`SSLConfig`); one ``nn.Module``
per method holds every network and the loss (DINO's centre is a buffer), so one checkpoint captures the
whole training state.

**Several processes** (``accelerate launch --num_processes N``): every statistic over the batch is over
the global batch. The losses gather or all-reduce theirs (:mod:`nbhelpers.losses.distributed`: Barlow
Twins' standardisation and cross-correlation, DINO's centre and mean, CASS's mean), and the networks'
BatchNorm layers (ResNets, the Barlow Twins projector, DINO's head on a ResNet) become ``SyncBatchNorm``
(:func:`~nbhelpers.train.recipes.base.sync_batchnorm`), as in the reference code of DINO and Barlow Twins.

**Views.** Each method names its crops; :class:`~nbhelpers.data.augment.BatchViews` makes them (crop,
flip, colour jitter, grayscale, blur, solarize) from whole uint8 batches on the training device with
per-sample random parameters. Colour jitter and grayscale are parameters (``colour_jitter``,
``grayscale_p``): on the synthetic benchmark the picture's only class-relevant content is its figure's
*colour*, and DINO's default jitter (hue +-0.1, saturation, grayscale 20 %) teaches the encoder to ignore
exactly that; on natural images (the ``t4`` preset, CIFAR-10) the default jitter is what stops the views
being matched by colour histograms alone.

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

**Accumulation** (``grad_accum_steps > 1``) is one loss per micro-batch: Barlow Twins' and DINO-Twins'
batch statistics are over the micro-batch. Keeping the whole batch (as the contrastive recipes'
``accumulate_loss="batch"``, :mod:`nbhelpers.train.accumulation`) would not give the one-batch step here:
the Barlow Twins projector and the ResNets normalise with BatchNorm over the micro-batch, and DINO's centre
moves inside the loss, once per loss computed, so a loss computed once per micro-batch over the whole
batch would move it ``k`` times. Use a larger ``batch_size`` (or several processes, whose statistics are
global) rather than accumulation for these methods.

``python -m nbhelpers.train ssl method=barlow_twins epochs=3`` runs it from the command line.
"""

from __future__ import annotations

import itertools
import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from accelerate import PartialState
from torch import nn

from nbhelpers.config import ConfigError, param
from nbhelpers.data.augment import BatchViews
from nbhelpers.data.image_sets import (
    ATTRIBUTES,
    CLASS_LABELS,
    ImageSet,
    hf_columns,
    hf_images,
    load_shard_images,
    to_uint8,
)
from nbhelpers.data.sampler import BatchDraw, seeded_batches
from nbhelpers.metrics.probes import probe_encoders
from nbhelpers.models.ssl import IMAGENET_MEAN, IMAGENET_STD, VIT_CONFIGS, build_ssl_backbone
from nbhelpers.train.engine import fit
from nbhelpers.train.recipes.base import load_run_weights, sync_batchnorm
from nbhelpers.train.recipes.config import RecipeConfig, manifests, train_spec
from nbhelpers.train.recipes.data import epoch_steps
from nbhelpers.train.recipes.registry import Recipe, TrainedRun
from nbhelpers.train.recipes.results import RunMetrics, RunResult, history_seconds
from nbhelpers.train.run_lock import locks_its_run
from nbhelpers.train.ssl_methods import METHODS
from nbhelpers.train.ssl_methods.base import BACKBONES, MethodParams, SSLModel

#: ``dataset`` value that reads the WebDataset shards of ``data_dir``; anything else is a HF dataset.
SHARDS = "shards"
#: Labels of the shards the probes can read out: a picture attribute, or the shards' class label.
SHARD_LABELS = (*ATTRIBUTES, *CLASS_LABELS)
NOTEBOOK = "04_train_ssl_vision"


@dataclass
class SSLConfig(RecipeConfig):
    """Parameters of ``04_train_ssl_vision``: the fields every method shares, and ``method_kwargs``.

    A method's own hyperparameters (DINO's head and temperatures, Barlow Twins' projector, ...) are the
    fields of its parameters class (``METHODS[method].Params``, e.g.
    :class:`~nbhelpers.train.ssl_methods.dino.DINOParams`), set by ``method_kwargs``, solo-learn style:
    ``method_kwargs={"out_dim": 1024}`` in a notebook, ``'method_kwargs={"out_dim": 1024}'`` on the command
    line. They are checked strictly against the chosen method: an unknown name stops with the closest
    allowed names, a bad value names ``method_kwargs.<name>``.

    A preset gives every method its sizes at once (``preset_method_kwargs``, keyed by method name, as
    ``nbhelpers/presets/ssl.json``), so switching ``method`` keeps the preset's scale; the method's
    parameters are resolved as its defaults, then the preset's entry for it, then ``method_kwargs``.
    :meth:`to_dict` (``config.json``, the run's identity) holds the resolved parameters of the chosen
    method in ``method_kwargs`` and no other method's: another method's preset entry never changes a run.
    """

    SECTION: ClassVar[str] = "ssl"
    RECIPE: ClassVar[str] = "ssl"

    method: str = param("dino", choices=tuple(METHODS), help=" | ".join(METHODS))
    method_kwargs: dict[str, Any] = param(
        {}, help="the method's own parameters, e.g. {'out_dim': 1024} (over the preset's for it)"
    )
    preset_method_kwargs: dict[str, Any] = param(
        {}, help="{method: kwargs}: each method's parameters in the preset; method_kwargs wins"
    )
    backbone: str = param("vit_tiny_demo", choices=BACKBONES, help="the encoder (for cass: the CNN)")
    vit_backbone: str = param("vit_tiny_demo", choices=tuple(VIT_CONFIGS), help="cass only: the ViT")
    image_size: int = param(32, min=8, help="side of the stored images and of the global crops")
    small_image: bool | None = param(None, help="CIFAR stem / 8-px patches (None: when image_size <= 64)")
    dataset: str = param(SHARDS, help="'shards' (data_dir/sources) or a Hugging Face dataset, e.g. 'cifar10'")
    image_column: str = param("", help="HF dataset: the image column ('': the first Image feature)")
    label_column: str = param("", help="HF dataset: the label column ('': the first ClassLabel feature)")
    probe_label: str = param(
        "auto",
        help="auto (shards: colour, else their classes; HF: the label column) | colour | shape | 7class | "
        "classes (shards of your own label set)",
    )
    # Views (every method's)
    global_scale_min: float = param(0.4, min=0.01, help="global crops cover [this, 1] of the image")
    colour_jitter: float = param(0.0, min=0.0, help="jitter strength s (1 = DINO's); 0 turns it off")
    colour_jitter_p: float = param(0.8, min=0.0, help="probability of colour jitter per view")
    grayscale_p: float = param(0.0, min=0.0, help="probability of grayscale per view (DINO: 0.2)")
    solarize_p: float = param(0.2, min=0.0, help="solarize probability of the second global view")
    # Probes
    knn_k: int = param(20, min=1)
    knn_temperature: float = param(0.07, min=1e-4)

    def default_run_name(self) -> str:
        return f"ssl_{self.method}_{self.backbone}"

    @property
    def method_class(self) -> type[SSLModel]:
        """The chosen method's training module (:data:`~nbhelpers.train.ssl_methods.METHODS`)."""
        return METHODS[self.method]

    @property
    def params(self) -> MethodParams:
        """The chosen method's parameters: its defaults, the preset's entry for it, then ``method_kwargs``.

        Raises:
            ConfigError: an unknown name in ``method_kwargs`` (with the closest allowed ones) or a bad value.
        """
        kwargs = {**self.preset_method_kwargs.get(self.method, {}), **self.method_kwargs}
        return self.method_class.Params.from_kwargs(kwargs)

    def check(self) -> None:
        super().check()
        for name in ("colour_jitter_p", "grayscale_p", "solarize_p"):
            if getattr(self, name) > 1:
                raise ConfigError(f"{name}: a probability must be <= 1, got {getattr(self, name)}")
        if self.global_scale_min > 1:
            raise ConfigError(f"global_scale_min: must be <= 1, got {self.global_scale_min}")
        for method, kwargs in self.preset_method_kwargs.items():  # a typo for another method, too
            if method not in METHODS:
                raise ConfigError(
                    f"preset_method_kwargs: {method!r} is not a method; allowed: {', '.join(METHODS)}"
                )
            METHODS[method].Params.from_kwargs(kwargs, where=f"preset_method_kwargs.{method}")
        params = self.params
        self.method_class.check(self, params)
        small = self.image_size <= 64 if self.small_image is None else self.small_image
        sizes = sorted({view.size for view in self.method_class.views(self, params)})
        for name in self.method_class.backbone_names(self):
            patch = VIT_CONFIGS[name].patch_size or (8 if small else 16) if name in VIT_CONFIGS else None
            if patch and any(size % patch for size in sizes):
                raise ConfigError(
                    f"image_size/local_size: the ViT's {patch}-px patches must divide every crop's side, "
                    f"got {sizes}"
                )
        if self.dataset == SHARDS and self.probe_label not in ("auto", *SHARD_LABELS):
            raise ConfigError(f"probe_label: allowed for shards: auto, {', '.join(SHARD_LABELS)}")
        if self.dataset != SHARDS and self.probe_label not in ("auto", "label"):
            raise ConfigError("probe_label: a Hugging Face dataset is probed on its label column ('auto')")

    def to_dict(self) -> dict[str, Any]:
        """The config with ``method_kwargs`` resolved (every parameter of the chosen method) and no
        ``preset_method_kwargs``: what ``config.json`` and the run's identity hold."""
        values = super().to_dict()
        del values["preset_method_kwargs"]
        values["method_kwargs"] = self.params.to_dict()
        return values

    @property
    def reads_shards(self) -> bool:
        return self.dataset == SHARDS

    def identity_exclude(self) -> tuple[str, ...]:
        # The probes are scored after training: they change the metrics, not the weights.
        return ("probe_label", "knn_k", "knn_temperature")

    @property
    def primary_label(self) -> str:
        if self.probe_label != "auto":
            return self.probe_label
        return "colour" if self.dataset == SHARDS else "label"


# ------------------------------------------------------------------------------------------------ data


def load_images(config: SSLConfig, split: str) -> ImageSet:
    """A split of ``config.dataset`` in memory at ``image_size`` px (the shards, or a HF dataset)."""
    if config.dataset == SHARDS:
        return load_shard_images(manifests(config), split, config.image_size, config.limit)
    import datasets

    dataset = datasets.load_dataset(config.dataset, split=split)
    return hf_images(dataset, config.image_size, config.image_column, config.label_column, config.limit)


def train_batches(config: SSLConfig, data: ImageSet) -> tuple[Callable[[int], Iterator[dict[str, Any]]], int]:
    """The engine's ``batches(epoch)`` over ``data`` and the optimiser steps of one epoch.

    Batches (:func:`~nbhelpers.data.sampler.seeded_batches`) carry uint8 ``image`` (augmented on the device
    by :func:`step`), the 1-based ``epoch`` and an ``aug_seed``; everything is a function of ``(seed,
    epoch)`` only. Each pass's last incomplete batch is dropped (Barlow Twins and BatchNorm standardise over
    the batch).

    Raises:
        ValueError: ``data`` holds fewer than one batch for every process.
    """
    micro = max(2, config.batch_size // config.grad_accum_steps)

    def make_batch(draw: BatchDraw) -> dict[str, Any]:
        # One seed per global batch (draw.step counts over every process), a stable hash of (seed, epoch,
        # step): the views of a batch do not depend on the batches before it, and stay those of earlier
        # versions of this recipe (draw.generator, one stream per epoch, would change them).
        aug_seed = zlib.crc32(f"{config.seed}/{draw.epoch}/{draw.step}".encode())
        return {"image": data.images[draw.indices], "epoch": draw.epoch, "aug_seed": aug_seed}

    return seeded_batches(len(data), micro, make_batch, seed=config.seed), epoch_steps(
        config, len(data), micro
    )


def make_views(config: SSLConfig) -> BatchViews:
    """The views ``config.method`` trains on, normalised for the encoders (ImageNet statistics)."""
    specs = config.method_class.views(config, config.params)
    return BatchViews(
        specs,
        config.colour_jitter,
        config.colour_jitter_p,
        config.grayscale_p,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    )


# ---------------------------------------------------------------------------------------------- models


def build_backbones(config: SSLConfig) -> list[nn.Module]:
    """The method's encoder(s) at their initial weights, a function of ``config.seed`` only (the global
    RNG is left as it was): ``[backbone]``, or ``[cnn, vit]`` for CASS. The random-encoder baseline is
    this very initialisation."""
    names = config.method_class.backbone_names(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return [build_ssl_backbone(name, config.image_size, small_image=config.small_image) for name in names]


def build_model(config: SSLConfig) -> SSLModel:
    """The training module of ``config.method`` (initial weights a function of ``config.seed``)."""
    backbones = build_backbones(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed + 1)
        return config.method_class(backbones, config.params, config)


def step(model: nn.Module, batch: dict[str, Any], views: BatchViews) -> tuple[torch.Tensor, dict[str, float]]:
    """Augments the uint8 batch on its device (full precision), then the method's loss."""
    generator = torch.Generator().manual_seed(int(batch["aug_seed"]))
    with torch.autocast(batch["image"].device.type, enabled=False):
        crops = views(batch["image"], generator)
    return model(crops, epoch=int(batch["epoch"]) - 1)  # the engine counts epochs from 1, DINO from 0


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


@locks_its_run
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
        {**trained, **{k: m.to(device) for k, m in initial.items()}}, train, evals, labels,
        mean=IMAGENET_MEAN, std=IMAGENET_STD, k=config.knn_k, temperature=config.knn_temperature,
        seed=config.seed,
    )  # fmt: skip
    primary, label = config.eval_split_list[0], primary_label
    main_encoder = next(iter(trained))
    scores, random_scores = (
        probes[primary][label][main_encoder],
        probes[primary][label][f"random {main_encoder}"],
    )
    metrics = RunMetrics(
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
        extra={
            "backbone": config.backbone,
            "encoder": main_encoder,
            "dataset": config.dataset,
            "probes": probes,
        },
    ).write(config.run_dir)
    return RunResult(config.run_dir, metrics, history, extra={"model": model, "probes": probes})


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
    return views, config.method_class.view_names(config, config.params)


def sample_image(config: SSLConfig, index: int = 0) -> torch.Tensor:
    """Training image ``index`` of ``config.dataset`` as uint8 ``(3, S, S)``, without loading the split."""
    if config.dataset == SHARDS:
        from nbhelpers.data.inspect import iter_raw_samples

        sample = next(
            itertools.islice(iter_raw_samples(manifests(config)[0], config.train_split), index, None)
        )
        return to_uint8(config.image_size)(sample["image"])
    import datasets

    dataset = datasets.load_dataset(config.dataset, split=config.train_split)
    column, _ = hf_columns(dataset, config.image_column, config.label_column)
    return to_uint8(config.image_size)(dataset[index][column])


RECIPE = Recipe(
    name="ssl",
    config_class=SSLConfig,
    notebook=NOTEBOOK,
    run=run,
    load_trained=load_trained,
    predict_run=None,
    display_name=display_name,
)
