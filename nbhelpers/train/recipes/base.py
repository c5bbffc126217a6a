"""What every recipe shares: its config fields, data, run directory, and the ``metrics.json`` it writes.

A recipe module defines a config class (a :class:`RecipeConfig` subclass whose ``SECTION`` names its
block in ``presets.json``) and ``run(config) -> RunResult``. ``run`` accepts a config object or a plain
dict of parameters (what ``python -m nbhelpers.train RECIPE key=value`` passes), so the notebooks and
``accelerate launch`` run exactly the same code.

Every ``run`` binds its run directory before it reads data or builds a model
(:meth:`RecipeConfig.bind`, :mod:`nbhelpers.train.identity`): the same config, data and input weights
load or resume the same run; another config never continues, overwrites or reuses it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from accelerate import PartialState
from torch import nn

from nbhelpers.config import NULL, BaseConfig, ConfigError, param
from nbhelpers.data.loader import make_loader, make_pipeline
from nbhelpers.data.memory import TensorSplit, epoch_batches, load_split, normalize
from nbhelpers.data.sampler import SeededBatchSampler, derived_seed
from nbhelpers.data.shards import read_manifest
from nbhelpers.data.sources import SOURCES, get_source
from nbhelpers.data.taxonomy import CLASSES, LabelSet, label_set_of
from nbhelpers.data.transforms import CLIP_MEAN, CLIP_STD, RandomResizedCropFlip, batch_normalize
from nbhelpers.metrics.classification import classification_report
from nbhelpers.train.checkpoint import load_model_weights, verify_checkpoint
from nbhelpers.train.engine import TrainSpec
from nbhelpers.train.identity import (
    RunIdentity,
    bind_run,
    check_run_name,
    manifest_digest,
    read_run_record,
)
from nbhelpers.train.recipes.registry import RECIPE_MODULES
from nbhelpers.train.run_dir import RunNotFoundError, latest_checkpoint, read_json, write_json_atomic

C = TypeVar("C", bound="RecipeConfig")

#: The modalities and tasks a run's ``metrics.json`` may name: ``7class`` (the seven merged classes),
#: ``multiclass`` (a label set of the user's own, named by ``metrics.json``'s ``classes``), ``binary``
#: (hateful or not) and ``ssl`` (a representation, no classifier).
MODALITIES = ("image", "text", "late_fusion", "multimodal")
TASKS = ("7class", "multiclass", "binary", "ssl")


@dataclass
class RecipeConfig(BaseConfig):
    """Fields every training recipe has; recipes add their own."""

    RECIPE: ClassVar[str] = ""
    #: Fields that only say where the initial weights come from, when the run's checkpoints hold those
    #: weights: :meth:`load` sets them to their defaults, so rebuilding a run downloads nothing.
    WEIGHT_SOURCES: ClassVar[tuple[str, ...]] = ()

    run_name: str = param("", help="runs/<run_name>/ (empty: <recipe>-<fingerprint of the config>)")
    runs_dir: str = param("runs", help="folder holding every run")
    data_dir: str = param("data/shards", help="folder of the shards of notebook 01")
    sources: str = param("synthetic", help="comma-separated sources under data_dir to train on")
    train_split: str = param("train")
    eval_splits: str = param("test", help="comma-separated splits evaluated at the end")
    epochs: int = param(5, min=1)
    batch_size: int = param(64, min=1)
    lr: float = param(1e-3, above=0.0)
    weight_decay: float = param(0.05, min=0.0)
    warmup_steps: int | None = param(
        None, min=0, help="linear warmup in optimiser steps; None: warmup_fraction"
    )
    warmup_fraction: float = param(0.05, min=0.0, help="warmup as a fraction of all optimiser steps (< 1)")
    grad_accum_steps: int = param(1, min=1)
    max_grad_norm: float | None = param(1.0, above=0.0, help="gradient clipping norm (> 0)")
    mixed_precision: str = param("auto", choices=("auto", "no", "fp16", "bf16"))
    gradient_checkpointing: bool = param(False)
    checkpoint_every: int = param(1, min=1)
    keep_last: int | None = param(2, min=1)
    steps_per_epoch: int | None = param(None, min=1, help="None: one pass over the training split")
    in_memory: bool = param(True, help="hold the split in memory (small data) instead of streaming it")
    limit: int | None = param(None, min=1, help="at most this many samples per split")
    num_workers: int = param(0, min=0)
    seed: int = param(0, min=0)
    resume: bool = param(True, help="continue from the run's last checkpoint")
    progress: bool = param(True)

    def check(self) -> None:
        check_run_name(self.run_name)
        if self.warmup_fraction >= 1:
            raise ConfigError(
                f"warmup_fraction: must be < 1 (a fraction of all steps), got {self.warmup_fraction}"
            )
        if not self.source_list:
            raise ConfigError("sources: name at least one source")
        for source in self.source_list:
            if source not in SOURCES:
                raise ConfigError(f"sources: unknown source {source!r}; allowed: {', '.join(SOURCES)}")
        if not self.eval_split_list:
            raise ConfigError("eval_splits: name at least one split")
        if self.reads_shards:
            self.check_splits(self.source_list, {s: get_source(s).SPLITS for s in self.source_list})

    @property
    def reads_shards(self) -> bool:
        """Whether the run reads notebook 01's shards (False for a recipe reading another dataset)."""
        return True

    def check_splits(self, sources: Sequence[str], splits: Mapping[str, Sequence[str] | None]) -> None:
        """Checks ``train_split`` and every eval split against each source's splits.

        A source whose splits are ``None`` (``hf``, ``own``: their splits are whatever notebook 01's
        parameters made) is not checked here; :func:`manifests` calls this again with the splits its shards
        have, before any training.

        Raises:
            ConfigError: naming the parameter, the split and the splits the source has.
        """
        wanted = [("train_split", self.train_split)] + [("eval_splits", s) for s in self.eval_split_list]
        for source in sources:
            if splits[source] is None:
                continue
            for name, split in wanted:
                if split not in splits[source]:
                    raise ConfigError(
                        f"{name}: {split!r} is not a split of {source!r}; it has: {', '.join(splits[source])}"
                    )

    def label_set(self) -> LabelSet:
        """The classes of the shards this run reads (:func:`manifests`): the seven unless they record others.

        Raises:
            FileNotFoundError: a source has no shards.
            ValueError: the sources are labelled with different label sets.
        """
        return label_set_of(manifests(self))

    @property
    def source_list(self) -> list[str]:
        return [s.strip() for s in self.sources.split(",") if s.strip()]

    @property
    def eval_split_list(self) -> list[str]:
        return [s.strip() for s in self.eval_splits.split(",") if s.strip()]

    def default_run_name(self) -> str:
        """The start of the folder name of a run with no explicit ``run_name`` (the fingerprint follows)."""
        return self.RECIPE

    @property
    def run_dir(self) -> Path:
        """``runs_dir/run_name``, or once bound with no ``run_name``, ``runs_dir/<default>-<fingerprint>``.

        Raises:
            RuntimeError: no ``run_name`` and the config is not bound yet (:meth:`bind`).
        """
        bound = self.__dict__.get("_bound_dir")
        if bound is not None:
            return bound
        if self.run_name:
            return Path(self.runs_dir) / self.run_name
        raise RuntimeError(
            "run_dir: with no run_name the folder is derived from the config's fingerprint; bind the run "
            "first (config.bind(...), which every recipe's run() does)"
        )

    def identity_exclude(self) -> tuple[str, ...]:
        """Fields of this recipe that cannot change its weights (besides the common bookkeeping ones)."""
        return ()

    def identity(
        self, found: Sequence[Mapping[str, Any]] = (), inputs: Mapping[str, Any] | None = None
    ) -> RunIdentity:
        """What this run's weights depend on: its config, the training split's data, its input files."""
        data = {m.get("source", "?"): manifest_digest(m, self.train_split) for m in found}
        # An explicit warmup_steps makes the fraction irrelevant to the weights.
        unused = ("warmup_fraction",) if self.warmup_steps is not None else ()
        return RunIdentity.of(
            self.RECIPE, self.to_dict(), data, inputs, exclude=self.identity_exclude() + unused
        )

    def weight_inputs(self) -> dict[str, Any]:
        """The local files this run starts from, by content (:func:`~nbhelpers.train.identity.local_inputs`).

        Recipes that start from weights (``pretrained``) override it; resolving never trains.
        """
        return {}

    def planned_run_dir(self, found: Sequence[Mapping[str, Any]] = ()) -> Path:
        """The folder this config's run has (or would have), without binding or writing anything."""
        if self.run_name:
            return Path(self.runs_dir) / self.run_name
        identity = self.identity(found, self.weight_inputs())
        return Path(self.runs_dir) / identity.folder_name(self.default_run_name())

    def bind(self, found: Sequence[Mapping[str, Any]] = ()) -> Path:
        """Binds the run folder to this config, its data and its input weights; returns the folder.

        Called by every recipe's ``run`` before data is read or a model is built.

        Raises:
            RunMismatchError: the folder holds another config's run (nothing is written then).
            RunNotFoundError: an input run (``pretrained="run:<name>"``) is missing.
        """
        identity = self.identity(found, self.weight_inputs())
        folder = Path(self.runs_dir) / (self.run_name or identity.folder_name(self.default_run_name()))
        bind_run(folder, identity)
        self.__dict__["_bound_dir"] = folder
        return folder

    @classmethod
    def coerce(cls: type[C], config: C | dict[str, Any]) -> C:
        """A validated config from a config object or a dict of parameters (with an optional ``preset``)."""
        if isinstance(config, cls):
            config.validate()
            return config
        params = dict(config)
        return cls.from_params(params.pop("preset", "demo"), **params)

    def checkpointed_weight_sources(self) -> tuple[str, ...]:
        """The fields :meth:`load` resets: :attr:`WEIGHT_SOURCES` (a recipe whose checkpoints hold only
        some weights, depending on its config, overrides this)."""
        return self.WEIGHT_SOURCES

    @classmethod
    def load(cls: type[C], run_dir: str | os.PathLike, how: str = "") -> C:
        """The config a run was trained with, from its ``config.json``, for rebuilding its architecture.

        The fields of :meth:`checkpointed_weight_sources` are set to their defaults: the run's
        checkpoints hold those weights, so nothing is downloaded (or trained) to rebuild it.

        Args:
            run_dir: the run directory.
            how: what makes the run (for the error); empty: the recipe's command.

        Raises:
            RunNotFoundError: if the run directory or its ``config.json`` is missing.
            ConfigError: if ``config.json`` holds a value this config does not accept.
        """
        run_dir = Path(run_dir)
        how = how or f"python -m nbhelpers.train {cls.RECIPE} ..."
        if not run_dir.is_dir():
            raise RunNotFoundError(run_dir, how)
        if not (run_dir / "config.json").is_file():
            raise RunNotFoundError(run_dir / "config.json", how, what="file")
        # A stored None is literal (keep_last=None kept every checkpoint), not "the preset's value".
        stored = read_json(run_dir / "config.json")
        config = cls.coerce({k: NULL if v is None else v for k, v in stored.items()})
        defaults = {f.name: f for f in dataclasses.fields(cls)}
        resets = {}
        for name in config.checkpointed_weight_sources():
            default = defaults[name]
            has_factory = default.default_factory is not dataclasses.MISSING
            resets[name] = default.default_factory() if has_factory else default.default
        loaded = cls.coerce(dataclasses.replace(config, **resets))
        loaded.__dict__["_bound_dir"] = run_dir  # its run_dir is the folder it was loaded from
        return loaded


def load_run_weights(model: nn.Module, run_dir: str | os.PathLike, how: str) -> nn.Module:
    """Fills ``model`` with the weights of the run's last checkpoint; returns it in eval mode.

    Raises:
        RunNotFoundError: if the run has no checkpoint (``how``: what makes it).
        RuntimeError: from ``load_state_dict`` when the checkpoint does not match ``model``.
    """
    if latest_checkpoint(run_dir) is None:
        raise RunNotFoundError(run_dir, how, what="checkpoint of run")
    load_model_weights(model, run_dir)
    return model.eval()


#: The layers :func:`sync_batchnorm` converts.
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def sync_batchnorm(model: nn.Module, num_processes: int, device: torch.device | str) -> nn.Module:
    """The model with its BatchNorm layers normalising over the global batch when several processes train.

    With ``num_processes > 1`` every ``BatchNorm*d`` becomes an ``nn.SyncBatchNorm`` holding the same
    parameters and running statistics (the state dict's keys and values are unchanged, so a checkpoint
    loads into either form), as DINO's and Barlow Twins' reference code do: otherwise each process
    would normalise by the statistics of its own share, and the model trained on N processes would
    not be the one trained on the global batch. ``SyncBatchNorm`` runs on GPUs only; on CPU processes
    (``accelerate launch --cpu``) the layers stay per process, with a warning.

    Args:
        model: the training module, converted in place where possible.
        num_processes: processes training together (``PartialState().num_processes``).
        device: this process's device (``PartialState().device``).

    Returns:
        The model to train (``model`` itself unless it is a bare BatchNorm layer).
    """
    if num_processes == 1 or not any(isinstance(m, BATCH_NORMS) for m in model.modules()):
        return model
    if torch.device(device).type == "cpu":
        warnings.warn(
            f"{num_processes} CPU processes: BatchNorm normalises over each process's share of the batch "
            "(SyncBatchNorm needs GPUs), so this run differs from one process on the global batch",
            stacklevel=2,
        )
        return model
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


def manifests(config: RecipeConfig) -> list[dict[str, Any]]:
    """The manifests of ``config.sources`` under ``data_dir``, their splits checked against the config.

    Only reads: shards are built by notebook 01 (or ``make shards``), never by a lookup.

    Raises:
        FileNotFoundError: a source has no shards, naming the folder and how to build them.
        ConfigError: the config names a split the shards do not have.
    """
    found = []
    for source in config.source_list:
        folder = Path(config.data_dir) / source
        try:
            found.append(read_manifest(folder))
        except FileNotFoundError:
            raise FileNotFoundError(
                f"no shards of {source!r} in {folder} (data_dir={config.data_dir!r}): build them with notebook "
                f"01_prepare_webdataset, or: python -m nbhelpers.data.prepare --source {source} "
                f"--out_dir {config.data_dir}"
                + (" --raw_dir <the raw dataset>" if source != "synthetic" else "")
            ) from None
    config.check_splits(config.source_list, {m["source"]: list(m["splits"]) for m in found})
    return found


def train_spec(config: RecipeConfig, steps_per_epoch: int, **overrides: Any) -> TrainSpec:
    """The engine's spec from a recipe config (warmup: ``warmup_steps``, else ``warmup_fraction`` of all
    optimiser steps, at least 1)."""
    total = steps_per_epoch * config.epochs
    # round() first, so that 0.29 * 100 gives 29 steps, not 28 (float error below the integer).
    by_fraction = max(1, math.floor(round(total * config.warmup_fraction, 6)))
    values = dict(
        run_dir=overrides["run_dir"] if "run_dir" in overrides else config.run_dir,
        epochs=config.epochs,
        steps_per_epoch=steps_per_epoch,
        lr=config.lr,
        weight_decay=config.weight_decay,
        warmup_steps=min(total, config.warmup_steps if config.warmup_steps is not None else by_fraction),
        grad_accum_steps=config.grad_accum_steps,
        max_grad_norm=config.max_grad_norm,
        mixed_precision=config.mixed_precision,
        checkpoint_every=config.checkpoint_every,
        keep_last=config.keep_last,
        seed=config.seed,
        resume=config.resume,
        gradient_checkpointing=config.gradient_checkpointing,
        progress=config.progress,
    )
    values.update(overrides)
    return TrainSpec(**values)


def epoch_steps(config: RecipeConfig, num_samples: int, micro: int) -> int:
    """Optimiser steps per epoch and process: ``steps_per_epoch`` if set, else one pass over the samples.

    Under ``accelerate launch`` each of the P processes draws its own micro-batches (its share of each
    permutation in memory, its own resampled shard stream), so one pass over ``num_samples`` is
    ``num_samples // P`` samples per process; with one process it is ``num_samples``.

    Args:
        config: the recipe's config (``steps_per_epoch``, ``grad_accum_steps``).
        num_samples: the training samples of the whole split, across processes.
        micro: samples per micro-batch of one process.
    """
    if config.steps_per_epoch:
        return config.steps_per_epoch
    share = num_samples // PartialState().num_processes
    return max(1, share // (micro * config.grad_accum_steps))


@dataclass
class TrainData:
    """The training stream of a recipe: ``batches(epoch)`` and how many steps make an epoch."""

    batches: Callable[[int], Iterable[dict[str, Any]]]
    steps_per_epoch: int
    num_samples: int
    memory: TensorSplit | None = None


def train_data(
    config: RecipeConfig,
    found: list[dict[str, Any]],
    image_size: int,
    tokenizer: Callable | None = None,
    mean: tuple[float, ...] = CLIP_MEAN,
    std: tuple[float, ...] = CLIP_STD,
    labels: Sequence[int] | None = None,
) -> TrainData:
    """The training batches, from memory (``in_memory``) or streamed from the shards.

    Either way epoch ``e``'s batches depend only on ``(seed, e)``, as the engine's resumption needs.
    An epoch is one pass over the (selected) split, shared by every process (:func:`epoch_steps`), unless
    ``steps_per_epoch`` says otherwise.

    Streamed, the shards are read, decoded and augmented by ``num_workers`` DataLoader workers
    (:func:`~nbhelpers.data.loader.make_loader`; 0: in this process), each drawing its own shards, so
    the stream also depends on ``num_workers``, which is part of the run's identity. JPEGs are decoded
    at the smallest scale the random crops allow (:attr:`RandomResizedCropFlip.min_side`) and batches
    are normalised whole.

    Args:
        labels: train on the samples of these classes only (e.g. the label set's valid-pair classes).
    """
    micro = max(1, config.batch_size // config.grad_accum_steps)
    if config.in_memory:
        memory = load_split(found, config.train_split, image_size, tokenizer, limit=config.limit)
        if labels is not None:
            memory = memory.select(torch.isin(memory.labels, torch.tensor(list(labels))))
        n = len(memory)
        return TrainData(
            batches=memory_batches(config, memory, micro, mean, std),
            steps_per_epoch=epoch_steps(config, n, micro),
            num_samples=n,
            memory=memory,
        )
    split_counts = [m["splits"][config.train_split]["class_counts"] for m in found]
    names = label_set_of(found).names
    if labels is None:
        n = sum(m["splits"][config.train_split]["num_samples"] for m in found)
    else:
        n = sum(counts.get(names[c], 0) for counts in split_counts for c in labels)
    if config.limit:
        n = min(n, config.limit)
    steps = epoch_steps(config, n, micro)
    crop = RandomResizedCropFlip(image_size)
    normalise = batch_normalize(mean, std)
    rank = PartialState().process_index
    class_factors = None if labels is None else {c: (1.0 if c in labels else 0.0) for c in range(len(names))}

    def stream(epoch: int) -> Iterable[dict[str, Any]]:
        pipeline = make_pipeline(
            found, config.train_split, batch_size=micro, image_transform=crop, batch_transform=normalise,
            decode_min_side=crop.min_side, tokenizer=tokenizer, train=True, seed=config.seed, epoch=epoch,
            class_factors=class_factors,
        )  # fmt: skip
        return make_loader(
            pipeline, config.num_workers, seed=derived_seed(config.seed, epoch, "loader", rank)
        )

    return TrainData(batches=stream, steps_per_epoch=steps, num_samples=n)


def memory_batches(
    config: RecipeConfig, memory: TensorSplit, micro: int, mean=CLIP_MEAN, std=CLIP_STD
) -> Callable[[int], Iterator[dict[str, Any]]]:
    """``batches(epoch)`` over a split in memory: seeded permutations, this process's share of each.

    Raises:
        ValueError: ``memory`` holds fewer than one batch of ``micro`` for every process.
    """
    state = PartialState()
    # Fail here, before any training, rather than on the first epoch's first batch.
    SeededBatchSampler(
        len(memory), micro, seed=config.seed, rank=state.process_index, world_size=state.num_processes
    )

    def batches(epoch: int) -> Iterator[dict[str, Any]]:
        # endless: as many permutations as the epoch needs (an epoch may be longer than one pass).
        return epoch_batches(
            memory, micro, seed=config.seed, epoch=epoch, train=True, mean=mean, std=std,
            rank=state.process_index, world_size=state.num_processes, endless=True,
        )  # fmt: skip

    return batches


def eval_batches(
    data: TensorSplit,
    batch_size: int = 256,
    mean: tuple[float, ...] = CLIP_MEAN,
    std: tuple[float, ...] = CLIP_STD,
) -> Iterator[dict[str, Any]]:
    """A split in memory, in order, normalised, in batches."""
    for start in range(0, len(data), batch_size):
        batch = data.subset(torch.arange(start, min(start + batch_size, len(data))))
        batch["image"] = normalize(batch["image"], mean, std)
        yield batch


@dataclass
class RunResult:
    """What a recipe returns: where its run is and what it measured."""

    run_dir: Path
    metrics: dict[str, Any]
    history: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def write_metrics(
    run_dir: Path,
    *,
    recipe: str,
    notebook: str,
    method: str,
    modality: str,
    task: str,
    split: str,
    metrics: dict[str, Any],
    num_samples: int,
    epochs: int,
    train_seconds: float,
    stages: Mapping[str, Path] | None = None,
    classes: Sequence[str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Writes ``run_dir/metrics.json`` in the suite's common form; returns it.

    Under several processes every process returns the record and only the main one writes it; all of
    them return once it is written.

    ``recipe`` names the recipe that made the run: how evaluation finds its ``load_trained``. The record
    also names the weights the figures were computed from: the run's fingerprint (from ``run.json``) and
    the path and SHA-256 of its last checkpoint, and of each stage's (``stages``: ``{name: stage folder}``,
    e.g. CASS-MM's classifier head). A classifier names the ``classes`` its predictions range over, in
    column order (evaluation reads them: runs of different classes are never compared in one table).

    Raises:
        ValueError: for an unknown recipe, or a modality or task outside :data:`MODALITIES` / :data:`TASKS`.
    """
    if recipe not in RECIPE_MODULES:
        raise ValueError(f"recipe must be one of {tuple(RECIPE_MODULES)}, got {recipe!r}")
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    record = {
        "recipe": recipe,
        "notebook": notebook,
        "method": method,
        "modality": modality,
        "task": task,
        **({} if classes is None else {"classes": list(classes)}),
        "split": split,
        **metrics,
        "num_samples": int(num_samples),
        "epochs": int(epochs),
        "train_seconds": round(float(train_seconds), 2),
        "fingerprint": (read_run_record(run_dir) or {}).get("fingerprint"),
        "checkpoint": checkpoint_record(run_dir),
        **{
            f"{name}_checkpoint": checkpoint_record(folder, run_dir)
            for name, folder in (stages or {}).items()
        },
        **extra,
    }
    state = PartialState()
    if state.is_main_process:
        write_json_atomic(Path(run_dir) / "metrics.json", record)
    state.wait_for_everyone()
    return record


#: The figures every classifier run reports, per split (top-k only for k up to its number of classes).
CLASS_METRICS = ("top1", "top2", "top3", "macro_f1")
#: The top-k accuracies a classifier run reports.
TOP_KS = (1, 2, 3)


def class_task(class_names: Sequence[str]) -> str:
    """The ``task`` of a classifier over ``class_names``: ``7class`` for the seven merged classes, else
    ``multiclass`` (a label set of the user's own, of any size >= 2)."""
    return "7class" if tuple(class_names) == CLASSES else "multiclass"


def topk_ks(num_classes: int, ks: Sequence[int] = TOP_KS) -> tuple[int, ...]:
    """``ks`` clipped to the number of classes (top-3 of two classes is not a figure)."""
    return tuple(k for k in ks if k <= num_classes)


def evaluate_classifier(
    run_dir: Path,
    predict_split: Callable[[str], tuple[np.ndarray, np.ndarray]],
    splits: Sequence[str],
    class_names: Sequence[str],
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, float]]]:
    """Scores a classifier run on each split and saves ``predictions_{split}.npz`` (``probs``, ``labels``).

    Under several processes each process scores every split and the main one saves the predictions.

    Args:
        run_dir: the run directory.
        predict_split: ``split -> (probs (N, C), labels (N,))``.
        splits: the splits to score.
        class_names: the ``C`` classes, in column order.

    Returns:
        ``(reports, summary)``: the full :func:`~nbhelpers.metrics.classification.classification_report` per
        split, and its :data:`CLASS_METRICS` plus ``num_samples`` per split (for ``metrics.json``).
    """
    reports = {}
    main = PartialState().is_main_process
    for split in splits:
        probs, labels = predict_split(split)
        reports[split] = classification_report(
            probs, labels, ks=topk_ks(len(class_names)), class_names=class_names
        )
        if main:
            np.savez_compressed(Path(run_dir) / f"predictions_{split}.npz", probs=probs, labels=labels)
    return reports, split_summary(reports)


def headline(report: Mapping[str, Any]) -> dict[str, float]:
    """The :data:`CLASS_METRICS` a classification report holds (``metrics.json``'s top-level figures)."""
    return {k: report[k] for k in CLASS_METRICS if k in report}


def split_summary(reports: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The :data:`CLASS_METRICS` and ``num_samples`` of each split's classification report."""
    return {s: {**headline(r), "num_samples": r["num_samples"]} for s, r in reports.items()}


def run_class_names(run_dir: str | os.PathLike, config: RecipeConfig) -> tuple[str, ...]:
    """The classes a classifier run's outputs range over, to rebuild its head: the ``classes`` of its
    ``metrics.json``; the seven for a ``7class`` run that predates them; else (a run not finished yet)
    the classes of the shards ``config`` reads.

    Raises:
        FileNotFoundError: the run has no classes recorded and its shards are missing.
    """
    path = Path(run_dir) / "metrics.json"
    metrics = read_json(path) if path.is_file() else {}
    if isinstance(metrics, dict) and metrics.get("classes"):
        return tuple(metrics["classes"])
    if isinstance(metrics, dict) and metrics.get("task") == "7class":
        return CLASSES
    return config.label_set().names


def checkpoint_record(folder: Path, relative_to: Path | None = None) -> dict[str, str] | None:
    """``{"file", "sha256"}`` of the last checkpoint in ``folder`` (path relative to ``relative_to`` or
    ``folder``), or None if it has none."""
    path = latest_checkpoint(folder)
    if path is None:
        return None
    # verified against the digest recorded when the checkpoint was written
    return {"file": path.relative_to(relative_to or folder).as_posix(), "sha256": verify_checkpoint(path)}


def read_metrics(run_dir: Path) -> dict[str, Any]:
    """A run's ``metrics.json``."""
    return read_json(Path(run_dir) / "metrics.json")


def history_seconds(*histories: dict[str, Any]) -> float:
    """Training seconds summed over the epochs of engine histories.

    Unlike a wall-clock timer around ``fit``, this stays the run's true training time when a notebook is
    re-executed and ``fit`` returns a finished run's saved history without training.
    """
    return float(sum(e.get("seconds", 0.0) for h in histories for e in h.get("epochs", [])))


class Timer:
    """Wall-clock seconds of a block: ``with Timer() as t: ...; t.seconds``."""

    def __enter__(self):
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
        return False
