"""Re-scoring one run or all: predictions rebuilt from the checkpoint (or saved), figures, agreement.

See :mod:`nbhelpers.evaluation.runs` for the whole evaluation of notebook 09.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nbhelpers.data.taxonomy import CLASSES
from nbhelpers.evaluation.run_discovery import BINARY_CLASSES, CLASSIFIER_TASKS, RunRecord, discover_runs
from nbhelpers.metrics.classification import binary_report, classification_report, one_vs_rest_auroc
from nbhelpers.train.recipes import get_recipe
from nbhelpers.train.run_dir import RunNotFoundError

REPREDICTED, SAVED = "re-predicted", "saved predictions"


@dataclass
class RunEvaluation:
    """One classifier run scored on one split.

    Attributes:
        record: the run.
        split: the split scored.
        scores: ``(N, C)`` class probabilities or ``(N,)`` hateful probabilities (binary).
        labels: ``(N,)`` integer labels (0/1 for binary).
        source: :data:`REPREDICTED` or :data:`SAVED`.
        report: :func:`~nbhelpers.metrics.classification.classification_report` over the run's classes.
        binary: :func:`~nbhelpers.metrics.classification.binary_report` of a binary run, else None.
        reference: the run's own ``metrics.json`` figures for ``split`` (None if it did not score it).
        class_names: the run's classes (:attr:`RunRecord.classes`), the confusion matrix's rows.
        auroc: the macro one-vs-rest AUROC of a run over a label set of the user's own, else None.
    """

    record: RunRecord
    split: str
    scores: np.ndarray
    labels: np.ndarray
    source: str
    report: dict[str, Any]
    binary: dict[str, Any] | None = None
    reference: dict[str, Any] | None = None
    class_names: tuple[str, ...] = field(default=CLASSES)
    auroc: float | None = None

    @property
    def figures(self) -> dict[str, float]:
        """The fresh figures under ``metrics.json``'s names: ``top1`` ... ``top<k>`` (k up to the number of
        classes), ``macro_f1``, for a binary run ``auroc`` and ``accuracy`` (its top-1: the accuracy at
        probability 0.5), for a run over a label set of the user's own ``auroc`` (one-vs-rest)."""
        if self.binary is None:
            out = {key: float(v) for key, v in self.report.items() if key.startswith("top")}
            if self.auroc is not None:
                out["auroc"] = self.auroc
        else:
            b = self.binary
            out = {"top1": b["accuracy"], "accuracy": b["accuracy"], "auroc": b["auroc"]}
        out["macro_f1"] = float(self.report["macro_f1"])
        return out

    @property
    def differences(self) -> dict[str, float]:
        """``|fresh - metrics.json|`` for every figure both have (empty without a reference)."""
        if not self.reference:
            return {}
        return {
            key: abs(value - float(self.reference[key]))
            for key, value in self.figures.items()
            if isinstance(self.reference.get(key), (int, float)) and not math.isnan(value)
        }

    @property
    def max_difference(self) -> float | None:
        """The largest :attr:`differences` (None: nothing to compare with)."""
        return max(self.differences.values()) if self.differences else None

    @property
    def confusion(self) -> np.ndarray:
        """The row-normalised ``(C, C)`` confusion matrix (rows: true class)."""
        return np.asarray(self.report["confusion"])

    @property
    def roc(self) -> tuple[np.ndarray, np.ndarray, float] | None:
        """``(fpr, tpr, auroc)`` of a binary run (what :func:`nbhelpers.plots.roc_plot` takes), else None."""
        if self.binary is None:
            return None
        return (
            np.asarray(self.binary["roc"]["fpr"]),
            np.asarray(self.binary["roc"]["tpr"]),
            self.binary["auroc"],
        )


def saved_figures(metrics: Mapping[str, Any], split: str) -> dict[str, Any] | None:
    """The figures a run's ``metrics.json`` holds for ``split``: its ``splits[split]`` entry, else the
    top-level figures when ``split`` is its primary split, else None."""
    splits = metrics.get("splits")
    if isinstance(splits, Mapping) and isinstance(splits.get(split), Mapping):
        return dict(splits[split])
    if metrics.get("split") == split:
        return dict(metrics)
    return None


def recipe_predictor(recipe: str) -> Callable[[Path, str], tuple[np.ndarray, np.ndarray]] | None:
    """The recipe's ``predict_run(run_dir, split) -> (scores, labels)``, or None if it has none.

    Raises:
        ValueError: for an unknown recipe.
    """
    return get_recipe(recipe).predict_run


def load_saved_predictions(run_dir: Path, split: str, task: str) -> tuple[np.ndarray, np.ndarray]:
    """A run's ``predictions_<split>.npz``: ``probs`` for a class run, ``scores`` for a binary one.

    Raises:
        FileNotFoundError: if the file is missing.
        KeyError: if it lacks the array the task needs.
    """
    path = run_dir / f"predictions_{split}.npz"
    if not path.is_file():
        raise FileNotFoundError(f"no {path.name}")
    key = "scores" if task == "binary" else "probs"
    with np.load(path) as saved:
        if key not in saved.files or "labels" not in saved.files:
            raise KeyError(f"{path.name} holds {saved.files}, not {key!r} and 'labels'")
        return saved[key], saved["labels"]


def score(
    record: RunRecord,
    split: str,
    scores: np.ndarray,
    labels: np.ndarray,
    source: str,
    k: int = 3,
) -> RunEvaluation:
    """Scores a run's predictions with :mod:`nbhelpers.metrics.classification` and pairs them with its
    ``metrics.json`` figures.

    A binary run's per-class figures and confusion matrix take the hateful probability at 0.5 (argmax
    of ``(1 - p, p)``), as its accuracy does.

    Args:
        record: the run (its task says how to read ``scores``, its classes name their columns).
        split: the split the predictions are of.
        scores: ``(N, C)`` probabilities, or ``(N,)`` hateful probabilities for a binary run.
        labels: ``(N,)`` labels.
        source: where the predictions come from (:data:`REPREDICTED` or :data:`SAVED`).
        k: top-1 to top-k accuracy (class runs; clipped to their number of classes).

    Raises:
        ValueError: if ``scores`` does not have one column per class of the run.
    """
    scores, labels = np.asarray(scores), np.asarray(labels).astype(int)
    reference = saved_figures(record.metrics or {}, split)
    if record.task == "binary":
        two = np.stack([1.0 - scores, scores], axis=1)
        # Per-class figures only: top-k of two classes is the accuracy (top-1) or trivially 1.
        report = classification_report(two, labels, ks=(), class_names=BINARY_CLASSES)
        return RunEvaluation(
            record, split, scores, labels, source, report, binary_report(scores, labels), reference,
            class_names=BINARY_CLASSES,
        )  # fmt: skip
    names = record.classes
    report = classification_report(
        scores, labels, ks=tuple(range(1, min(k, len(names)) + 1)), class_names=names
    )
    auroc = one_vs_rest_auroc(scores, labels) if record.task == "multiclass" else None
    return RunEvaluation(
        record, split, scores, labels, source, report, None, reference, class_names=names, auroc=auroc
    )


def evaluate_run(record: RunRecord, split: str = "test", k: int = 3, repredict: bool = True) -> RunEvaluation:
    """Re-scores one classifier run (see the module docstring).

    Args:
        record: from :func:`inspect_run`, with no ``problem`` and a classifier task.
        split: the split to score; empty: the run's own primary split.
        k: top-1 to top-k accuracy (clipped to the run's number of classes).
        repredict: rebuild the model and predict again (else read the saved predictions).

    Raises:
        ValueError: if the record has a problem or is not a classifier run.
        RunNotFoundError: for a missing run, checkpoint, config.json or backbone weights (never trained).
        FileNotFoundError: for a missing predictions file.
        RuntimeError, pickle.UnpicklingError: from ``torch.load`` / ``load_state_dict`` on a corrupt or
            mismatched checkpoint (anything else rebuilding the model raises passes through too).
    """
    if record.problem:
        raise ValueError(f"{record.name}: {record.problem}")
    if record.task not in CLASSIFIER_TASKS:
        raise ValueError(f"{record.name}: task {record.task!r} has no classifier to score")
    split = split or record.metrics["split"]
    predictor = recipe_predictor(record.recipe) if repredict else None
    if predictor is not None:
        scores, labels = predictor(record.run_dir, split)
        source = REPREDICTED
    else:
        scores, labels = load_saved_predictions(record.run_dir, split, record.task)
        source = SAVED
    return score(record, split, scores, labels, source, k)


@dataclass
class Evaluation:
    """What :func:`evaluate_runs` found: the scored runs, the self-supervised ones, the skipped ones."""

    runs: list[RunEvaluation]
    representations: list[RunRecord]
    skipped: list[tuple[RunRecord, str]]
    k: int
    split: str


def _first_line(err: BaseException, limit: int = 400) -> str:
    """The error's type and first line; a longer one loses its middle, never its end (what is wrong comes
    after the path, and paths can be long)."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    text = f"{type(err).__name__}: {text}" if text else type(err).__name__
    if isinstance(err, RunNotFoundError):  # whole: its end names the notebook that makes the run
        return text
    if len(text) <= limit:
        return text
    keep = (limit - 5) // 2
    return f"{text[:keep]} ... {text[-keep:]}"


def evaluate_runs(
    runs_dir: str | os.PathLike = "runs",
    split: str = "test",
    k: int = 3,
    repredict: bool = True,
    progress: Callable[[str], None] | None = print,
) -> Evaluation:
    """Finds and scores every run under ``runs_dir``; a run that fails is skipped with its reason.

    Args:
        runs_dir: the folder of runs.
        split: the split every classifier is scored on (empty: each run's primary split).
        k: top-1 to top-k accuracy.
        repredict: rebuild each model and predict again (else read the saved predictions).
        progress: called with one line per run (None: silent).
    """
    say = progress or (lambda _: None)
    runs, representations, skipped = [], [], []
    for record in discover_runs(runs_dir):
        if record.problem:
            skipped.append((record, record.problem))
        elif record.task == "ssl":
            representations.append(record)
        elif record.task not in CLASSIFIER_TASKS:
            skipped.append((record, f"task {record.task!r} is not one of {CLASSIFIER_TASKS + ('ssl',)}"))
        else:
            try:
                runs.append(evaluate_run(record, split, k, repredict))
            except Exception as err:  # noqa: BLE001 - one broken run must not stop the others' evaluation
                skipped.append((record, _first_line(err)))
                say(f"{record.name}: skipped ({_first_line(err)})")
                continue
            found = runs[-1]
            agree = (
                "no metrics.json figures"
                if found.max_difference is None
                else f"max |diff| {found.max_difference:.2g}"
            )
            say(f"{record.name}: {found.source}, {len(found.labels)} samples, {agree}")
    return Evaluation(runs, representations, skipped, k, split)
