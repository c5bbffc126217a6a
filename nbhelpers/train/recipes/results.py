"""What a run reports: its ``metrics.json`` record (:class:`RunMetrics`), classifier scores, timing.

Recipes train; evaluation (:mod:`nbhelpers.evaluation`) reads what they wrote here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from accelerate import PartialState

from nbhelpers.data.taxonomy import CLASSES
from nbhelpers.metrics.classification import classification_report
from nbhelpers.train.checkpoint import verify_checkpoint
from nbhelpers.train.identity import read_run_record
from nbhelpers.train.recipes.names import RECIPE_MODULES
from nbhelpers.train.run_dir import latest_checkpoint, read_json, write_json_atomic

if TYPE_CHECKING:
    from nbhelpers.train.recipes.config import RecipeConfig

#: The modalities and tasks a run's ``metrics.json`` may name: ``7class`` (the seven merged classes),
#: ``multiclass`` (a label set of the user's own, named by ``metrics.json``'s ``classes``), ``binary``
#: (hateful or not) and ``ssl`` (a representation, no classifier).
MODALITIES = ("image", "text", "late_fusion", "multimodal")
TASKS = ("7class", "multiclass", "binary", "ssl")


@dataclass
class RunResult:
    """What a recipe returns: where its run is and what it measured."""

    run_dir: Path
    metrics: dict[str, Any]
    history: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


#: The keys of ``metrics.json`` that :class:`RunMetrics` writes itself (``metrics`` and ``extra`` may not
#: repeat them; ``metrics`` may give ``num_samples`` a place of its own, as the per-split figures have it).
RECORD_KEYS = (
    "recipe", "notebook", "method", "modality", "task", "classes", "split", "num_samples", "epochs",
    "train_seconds", "fingerprint", "checkpoint",
)  # fmt: skip


@dataclass(frozen=True)
class RunMetrics:
    """A run's ``metrics.json`` in the suite's common form, checked when made; :meth:`write` writes it.

    Attributes:
        recipe: the recipe that made the run (how evaluation finds its ``load_trained``).
        notebook: the notebook that runs the recipe (``"05_train_cass_mm"``).
        method: the method's name (``"clip_lora"``, ``"hateclipper_cross"``, ...).
        modality: one of :data:`MODALITIES`.
        task: one of :data:`TASKS`.
        split: the split of the top-level figures.
        metrics: the top-level figures (e.g. :func:`headline` of that split's report).
        num_samples: training samples of the whole split, across processes.
        epochs: training epochs.
        train_seconds: training time (rounded to 0.01 s in the file).
        stages: ``{name: stage folder}`` of runs trained in stages (e.g. CASS-MM's classifier head): each
            stage's last checkpoint is recorded as ``<name>_checkpoint``.
        classes: the classes a classifier's predictions range over, in column order (evaluation never
            compares runs of different classes in one table); None: no classifier.
        extra: the recipe's own fields, written last in their order (``model``, ``splits``, ...).

    Raises:
        ValueError: for an unknown recipe, a modality or task outside :data:`MODALITIES` / :data:`TASKS`,
            ``classes`` that are empty, or ``metrics`` / ``extra`` / ``stages`` keys that would overwrite
            the record's own fields.
    """

    recipe: str
    notebook: str
    method: str
    modality: str
    task: str
    split: str
    metrics: Mapping[str, Any]
    num_samples: int
    epochs: int
    train_seconds: float
    stages: Mapping[str, Path] = field(default_factory=dict)
    classes: Sequence[str] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.recipe not in RECIPE_MODULES:
            raise ValueError(f"recipe must be one of {tuple(RECIPE_MODULES)}, got {self.recipe!r}")
        if self.modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {self.modality!r}")
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.classes is not None and not len(self.classes):
            raise ValueError("classes: name the classifier's classes (None: no classifier)")
        own = set(RECORD_KEYS) - {"num_samples"}
        stage_keys = {f"{name}_checkpoint" for name in self.stages}
        for what, keys in (("metrics", self.metrics), ("extra", self.extra)):
            clash = sorted(own.union(stage_keys, {"num_samples"} if what == "extra" else ()) & set(keys))
            if clash:
                raise ValueError(f"{what}: {clash} would overwrite the record's own fields")

    def record(self, run_dir: str | os.PathLike) -> dict[str, Any]:
        """The ``metrics.json`` content, in its key order: the run's fingerprint (from ``run.json``) and
        the path and SHA-256 of its last checkpoint (and of each stage's) name the weights the figures
        were computed from."""
        run_dir = Path(run_dir)
        return {
            "recipe": self.recipe,
            "notebook": self.notebook,
            "method": self.method,
            "modality": self.modality,
            "task": self.task,
            **({} if self.classes is None else {"classes": list(self.classes)}),
            "split": self.split,
            **self.metrics,
            "num_samples": int(self.num_samples),
            "epochs": int(self.epochs),
            "train_seconds": round(float(self.train_seconds), 2),
            "fingerprint": (read_run_record(run_dir) or {}).get("fingerprint"),
            "checkpoint": checkpoint_record(run_dir),
            **{
                f"{name}_checkpoint": checkpoint_record(folder, run_dir)
                for name, folder in self.stages.items()
            },
            **self.extra,
        }

    def write(self, run_dir: str | os.PathLike) -> dict[str, Any]:
        """Writes ``run_dir/metrics.json``; returns its content.

        Under several processes every process returns the record and only the main one writes it; all of
        them return once it is written.
        """
        record = self.record(run_dir)
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
