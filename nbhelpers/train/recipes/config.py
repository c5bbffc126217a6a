"""A recipe's config: the fields every recipe shares, its run folder, and the shards it reads.

A recipe module defines a config class (a :class:`RecipeConfig` subclass whose ``SECTION`` names its
block in ``presets.json``). Every ``run`` binds its run directory before it reads data or builds a model
(:meth:`RecipeConfig.bind`, :mod:`nbhelpers.train.identity`): the same config, data and input weights
load or resume the same run; another config never continues, overwrites or reuses it.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from nbhelpers.config import NULL, BaseConfig, ConfigError, param
from nbhelpers.data.shards import read_manifest
from nbhelpers.data.sources import SOURCES, get_source
from nbhelpers.data.taxonomy import LabelSet, label_set_of
from nbhelpers.folder_lock import ON_BUSY
from nbhelpers.train.accumulation import ACCUMULATE_LOSS_MODES
from nbhelpers.train.engine import TrainSpec
from nbhelpers.train.identity import RunIdentity, bind_run, check_run_name, manifest_digest
from nbhelpers.train.run_dir import RunNotFoundError, read_json
from nbhelpers.train.run_lock import hold_bound_run
from nbhelpers.train.tracking import REPORT_TO

C = TypeVar("C", bound="RecipeConfig")


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
    train_split: str = param("train", help="the split trained on")
    eval_splits: str = param("test", help="comma-separated splits evaluated at the end")
    epochs: int = param(5, min=1, help="passes over the training split")
    batch_size: int = param(64, min=1, help="samples per optimiser step")
    lr: float = param(1e-3, above=0.0, help="peak learning rate (after the warmup)")
    weight_decay: float = param(0.05, min=0.0, help="AdamW weight decay (not on biases and norms)")
    warmup_steps: int | None = param(
        None, min=0, help="linear warmup in optimiser steps; None: warmup_fraction"
    )
    warmup_fraction: float = param(0.05, min=0.0, help="warmup as a fraction of all optimiser steps (< 1)")
    grad_accum_steps: int = param(1, min=1, help="micro-batches per optimiser step (batch_size / this each)")
    max_grad_norm: float | None = param(1.0, above=0.0, help="gradient clipping norm (> 0)")
    mixed_precision: str = param("auto", choices=("auto", "no", "fp16", "bf16"))
    gradient_checkpointing: bool = param(False, help="recompute activations in backward: less memory, slower")
    checkpoint_every: int = param(1, min=1, help="epochs between checkpoints (and after the last)")
    keep_last: int | None = param(2, min=1, help="newest checkpoints kept; null: all")
    steps_per_epoch: int | None = param(None, min=1, help="None: one pass over the training split")
    in_memory: bool = param(True, help="hold the split in memory (small data) instead of streaming it")
    limit: int | None = param(None, min=1, help="at most this many samples per split")
    num_workers: int = param(0, min=0, help="DataLoader workers of a streamed split")
    seed: int = param(0, min=0, help="seed of the weights' init, the data order and the augmentations")
    resume: bool = param(True, help="continue from the run's last checkpoint")
    progress: bool = param(True, help="a progress bar (plain lines when headless)")
    on_busy: str = param(
        "wait",
        choices=ON_BUSY,
        help="another process trains this run: wait for it (then load its result) or fail at once",
    )
    report_to: str = param(
        "tensorboard",
        choices=REPORT_TO,
        help="where the history also goes while training: tensorboard (event files in runs/<run>/logs), wandb",
    )

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
        # One loss per micro-batch is what every run did before the field existed (and with no
        # accumulation both modes are one step): such runs keep their fingerprints.
        if getattr(self, "accumulate_loss", "micro") == "micro" or self.grad_accum_steps == 1:
            unused += ("accumulate_loss",)
        return RunIdentity.of(
            self.RECIPE, self.to_dict(), data, inputs, exclude=self.identity_exclude() + unused
        )

    def weight_inputs(self) -> dict[str, Any]:
        """The local files this run starts from, by content (:func:`~nbhelpers.train.identity.local_inputs`).

        Recipes that start from weights (``pretrained``) override it; resolving never trains.
        """
        return {}

    def planned_run_dir(self, found: Sequence[Mapping[str, Any]] | None = None) -> Path:
        """The folder this config's run has (or would have), without binding or writing anything.

        Only computes the name: nothing is read beyond the shard manifests and any input weights' hashes.

        Args:
            found: the manifests of the shards it reads (None: :func:`manifests` reads them, when the
                recipe reads shards).

        Raises:
            RunNotFoundError: an input run of this config (``pretrained="run:clip"``) is missing.
            FileNotFoundError: the shards are missing.
        """
        if found is None:  # read (and checked) even for a named run, as its run would read them
            found = manifests(self) if self.reads_shards else []
        if self.run_name:
            return Path(self.runs_dir) / self.run_name
        identity = self.identity(found, self.weight_inputs())
        return Path(self.runs_dir) / identity.folder_name(self.default_run_name())

    def bind(self, found: Sequence[Mapping[str, Any]] = ()) -> Path:
        """Binds the run folder to this config, its data and its input weights; returns the folder.

        Called by every recipe's ``run`` before data is read or a model is built. Inside a recipe's
        ``run`` the folder is locked from here until ``run`` returns (:mod:`nbhelpers.train.run_lock`).

        Raises:
            RunMismatchError: the folder holds another config's run (nothing is written then).
            FolderBusyError: another process holds the folder and ``on_busy="fail"``.
            RunNotFoundError: an input run (``pretrained="run:<name>"``) is missing.
        """
        identity = self.identity(found, self.weight_inputs())
        folder = Path(self.runs_dir) / (self.run_name or identity.folder_name(self.default_run_name()))
        hold_bound_run(folder, self.on_busy)  # before anything is written into it
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


def accumulate_loss_param(default: str, note: str = "") -> Any:
    """The ``accumulate_loss`` field of a recipe whose loss is a batch-level one (contrastive, batch
    statistics), with its default for that recipe; ``note`` says what does not hold for it."""
    help_text = (
        "grad_accum_steps > 1: batch = the whole batch's loss (GradCache), micro = one per micro-batch"
    )
    return param(default, choices=ACCUMULATE_LOSS_MODES, help=f"{help_text}{'; ' + note if note else ''}")


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
        report_to=config.report_to,
        on_busy=config.on_busy,
        # Fields of the recipes that offer them (fusion: a reference's constant rate and plain AdamW).
        lr_schedule=getattr(config, "lr_schedule", "cosine"),
        decay_all=getattr(config, "decay_all", False),
    )
    values.update(overrides)
    return TrainSpec(**values)
