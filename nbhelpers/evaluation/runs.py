"""Every finished run under ``runs/``, rebuilt from its checkpoint and scored again with one code path.

A run directory (``runs/<name>/``, see :mod:`nbhelpers.train.run_dir`) holds ``config.json``, its
checkpoints and the ``metrics.json`` its recipe wrote; ``metrics.json`` names the recipe that made it
(:data:`nbhelpers.train.recipes.RECIPES`). :func:`evaluate_runs` finds every run, and for each classifier

1. rebuilds its model from ``config.json`` + the last checkpoint and predicts the split again, through
   its recipe's ``predict_run(run_dir, split)`` (a late-fusion run fuses its text and image runs' fresh
   probabilities; with ``repredict=False``, or for a recipe without ``predict_run``, it reads the run's
   saved ``predictions_<split>.npz`` instead, and says so); loading never trains: a run it needs that is
   missing (a fused run, the CLIP run a fusion head was trained on) is a
   :class:`~nbhelpers.train.run_dir.RunNotFoundError` naming the notebook that makes it;
2. scores the predictions with :mod:`nbhelpers.metrics.classification` (scikit-learn): top-1 to top-k
   accuracy (k clipped to the run's number of classes), per-class precision / recall / F1, the
   row-normalised confusion matrix, and for a binary run (Hateful Memes' hateful / not hateful) AUROC and
   its ROC curve, for a run over a label set of the user's own the macro one-vs-rest AUROC;
3. compares the fresh figures with the run's own ``metrics.json``: they agree exactly when the
   checkpoint is the model the recipe evaluated.

Each run's classes are the ``classes`` its ``metrics.json`` records (the seven merged classes for a
``7class`` run that predates them, *not hateful* / *hateful* for a binary one). Runs over different
classes are grouped, never compared as one: the comparison table has a ``Classes`` column and is sorted
by task, then classes, so each label set's runs are adjacent; :func:`by_classes` splits an evaluation
into one per label set, which the notebook uses for each top-k chart and confusion-matrix grid, and
:func:`topk_long` refuses a table that mixes label sets.

Self-supervised runs (``task == "ssl"``: CLIP pre-training, DINO, Barlow Twins, ...) have no
classifier: they are listed with their probe and retrieval figures from ``metrics.json``
(:func:`representation_table`). A run whose ``metrics.json`` is missing or unreadable, or whose
checkpoint is missing or cannot be loaded, is listed with the reason (:func:`skipped_table`) and skipped.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from nbhelpers.config import BaseConfig, param
from nbhelpers.data.taxonomy import CLASSES
from nbhelpers.metrics.classification import binary_report, classification_report, one_vs_rest_auroc
from nbhelpers.models.fusion import HATEFUL_CLASSES
from nbhelpers.train.recipes import RECIPES, get_recipe
from nbhelpers.train.run_dir import RunNotFoundError, latest_checkpoint, read_json

#: Tasks with a classifier to re-score, in the order the comparison table lists them.
CLASSIFIER_TASKS = ("7class", "multiclass", "binary")
#: The two classes of a binary (Hateful Memes) run, negative first.
BINARY_CLASSES = HATEFUL_CLASSES
#: How the comparison table's ``Classes`` column names the seven merged classes.
SEVEN_LABEL = "seven merged classes"
#: Where the comparison table is written, under ``runs_dir``.
COMPARISON_CSV, COMPARISON_MD = "comparison.csv", "comparison.md"
REPREDICTED, SAVED = "re-predicted", "saved predictions"


@dataclass
class EvalRunsConfig(BaseConfig):
    """Parameters of ``09_eval_topk``."""

    SECTION: ClassVar[str] = "eval_topk"

    runs_dir: str = param("runs", help="folder holding every run (one sub-folder per run)")
    split: str = param("test", help="the split every run is scored on; empty: each run's own primary split")
    k: int = param(3, min=1, help="top-1 to top-k accuracy (k clipped to each run's number of classes)")
    repredict: bool = param(
        True, help="rebuild each model from its checkpoint and predict again (False: saved predictions)"
    )


@dataclass
class RunRecord:
    """A folder under ``runs/`` and what it holds.

    Attributes:
        name: the folder's name.
        run_dir: the folder.
        metrics: its ``metrics.json`` (None if missing or unreadable).
        checkpoint: its last checkpoint file, if any.
        recipe: the name of the recipe that made it (``metrics["recipe"]``).
        problem: why it cannot be evaluated (None: it can).
    """

    name: str
    run_dir: Path
    metrics: dict[str, Any] | None = None
    checkpoint: Path | None = None
    recipe: str | None = None
    problem: str | None = None

    @property
    def task(self) -> str | None:
        return (self.metrics or {}).get("task")

    @property
    def classes(self) -> tuple[str, ...]:
        """The classes its predictions range over: ``metrics.json``'s ``classes``, else (a run written
        before label sets) the seven merged classes, or *not hateful* / *hateful* for a binary run."""
        recorded = (self.metrics or {}).get("classes")
        if recorded:
            return tuple(recorded)
        return BINARY_CLASSES if self.task == "binary" else CLASSES

    @property
    def is_fusion_of_runs(self) -> bool:
        """A late-fusion run: no weights of its own, it fuses other runs' probabilities."""
        return bool((self.metrics or {}).get("fused_from"))

    @property
    def model_name(self) -> str:
        return model_name(self.metrics or {}, self.name)


def model_name(metrics: Mapping[str, Any], fallback: str = "?") -> str:
    """A readable model name from a run's ``metrics.json`` (``CLIP lora``, ``Hate-CLIPper cross``, ...):
    its recipe's ``display_name``; ``fallback`` when it names no known recipe."""
    recipe = metrics.get("recipe")
    if recipe not in RECIPES:
        return fallback
    return RECIPES[recipe].display_name(metrics)


def inspect_run(run_dir: str | os.PathLike) -> RunRecord:
    """Reads a run folder's ``metrics.json`` and finds its recipe and checkpoint; never raises.

    ``problem`` is set when the run cannot be evaluated: no or an unreadable ``metrics.json``, one that
    names no registered recipe, or (for a classifier with weights of its own) no ``config.json`` or no
    checkpoint. A checkpoint that exists but cannot be loaded is found only when the model is rebuilt
    (:func:`evaluate_run`).
    """
    run_dir = Path(run_dir)
    record = RunRecord(run_dir.name, run_dir)
    path = run_dir / "metrics.json"
    if not path.is_file():
        record.problem = "no metrics.json (the run did not finish, or is not a run)"
        return record
    try:
        metrics = read_json(path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        record.problem = f"metrics.json is unreadable ({type(err).__name__}: {err})"
        return record
    missing = [k for k in ("recipe", "task", "split") if not isinstance(metrics, dict) or k not in metrics]
    if missing:
        record.problem = f"metrics.json lacks {', '.join(missing)}"
        return record
    record.metrics = metrics
    if metrics["recipe"] not in RECIPES:
        record.problem = f"metrics.json names recipe {metrics['recipe']!r}; known: {', '.join(RECIPES)}"
        return record
    record.recipe = metrics["recipe"]
    record.checkpoint = latest_checkpoint(run_dir)
    if record.task in CLASSIFIER_TASKS and not record.is_fusion_of_runs:
        if not (run_dir / "config.json").is_file():
            record.problem = "no config.json: the model cannot be rebuilt"
        elif record.checkpoint is None:
            record.problem = "no checkpoint in checkpoints/"
    return record


def discover_runs(runs_dir: str | os.PathLike) -> list[RunRecord]:
    """Every run folder directly under ``runs_dir``, by name (hidden folders such as ``.features`` are
    caches, not runs). An absent ``runs_dir`` has no runs."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    return [inspect_run(p) for p in sorted(runs_dir.iterdir()) if p.is_dir() and not p.name.startswith(".")]


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


#: config.json fields that say where a run lives or how it was run, not what it trained.
BOOKKEEPING_FIELDS = frozenset(
    {"run_name", "runs_dir", "data_dir", "progress", "resume", "num_workers", "checkpoint_every", "keep_last",
     "preset"}
)  # fmt: skip


def _config_or_none(run_dir: Path) -> dict[str, Any] | None:
    try:
        config = read_json(run_dir / "config.json")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return config if isinstance(config, dict) else None


def _differing_fields(configs: Sequence[Mapping[str, Any]]) -> list[str]:
    """The non-bookkeeping keys whose values are not the same in all ``configs``, in first-seen order."""
    keys = list(dict.fromkeys(k for config in configs for k in config if k not in BOOKKEEPING_FIELDS))
    missing = object()
    return [k for k in keys if len({json.dumps(c.get(k, missing), default=str) for c in configs}) > 1]


def _value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def display_names(records: Sequence[RunRecord]) -> dict[str, str]:
    """Each run's label in the tables and figures: its model name (:attr:`RunRecord.model_name`), told
    apart from the other runs of the same model name by the config fields that differ between them.

    The fields are read from each run's ``config.json``, ignoring :data:`BOOKKEEPING_FIELDS`:
    ``CASS-MM + head (epochs=2)`` and ``CASS-MM + head (epochs=3)``. Runs that still share a label (a
    run without ``config.json``, or the same config twice) are followed by ``[<run folder>]``.

    Args:
        records: the runs, e.g. ``[found.record for found in evaluation.runs]``.

    Returns:
        ``{run name: label}``, in the order of ``records``.
    """
    labels = {record.name: record.model_name for record in records}
    groups: dict[str, list[RunRecord]] = {}
    for record in records:
        groups.setdefault(labels[record.name], []).append(record)
    for model, group in groups.items():
        if len(group) < 2:
            continue
        configs = [_config_or_none(record.run_dir) for record in group]
        if all(config is not None for config in configs):
            fields = _differing_fields(configs)
            for record, config in zip(group, configs):
                if fields:
                    described = ", ".join(f"{k}={_value(config.get(k))}" for k in fields)
                    labels[record.name] = f"{model} ({described})"
        taken = [labels[record.name] for record in group]
        for record in group:
            if taken.count(labels[record.name]) > 1:
                labels[record.name] = f"{labels[record.name]} [{record.name}]"
    return labels


def _names(evaluation: Evaluation) -> dict[str, str]:
    return display_names([found.record for found in evaluation.runs])


def classes_label(names: Sequence[str]) -> str:
    """How the comparison table's ``Classes`` column names a label set: :data:`SEVEN_LABEL` for the seven
    merged classes, else the class names joined by ``", "``."""
    return SEVEN_LABEL if tuple(names) == CLASSES else ", ".join(names)


def comparison_table(evaluation: Evaluation) -> pd.DataFrame:
    """One row per scored run: Model | Modality | Task | Top-1 ... Top-k | Macro F1 | AUROC | Samples |
    Predictions | Max diff vs metrics.json | Classes | Run.

    Sorted by task (7-class runs, runs over a label set of the user's own, binary runs), then by
    ``Classes`` (:func:`classes_label`), so that runs over the same classes are adjacent and no two label
    sets interleave; within that by Top-1 then Top-2 ... (best first), binary runs by AUROC. A binary
    run's Top-1 is its accuracy at probability 0.5 and its Top-2 ... are empty (trivially 1); Top-j is
    empty for a run of fewer than j classes; AUROC is empty for 7-class runs (one-vs-rest for the user's
    own classes). Runs sharing a model name are told apart by their configs (:func:`display_names`).
    """
    k = evaluation.k
    tops = [f"Top-{j}" for j in range(1, k + 1)]
    names = _names(evaluation)
    rows = []
    for found in evaluation.runs:
        figures, metrics = found.figures, found.record.metrics
        row = {"Model": names[found.record.name], "Modality": metrics["modality"], "Task": metrics["task"]}
        row.update({f"Top-{j}": figures.get(f"top{j}", np.nan) for j in range(1, k + 1)})
        row["Macro F1"] = figures["macro_f1"]
        row["AUROC"] = figures.get("auroc", np.nan)
        row["Samples"] = len(found.labels)
        row["Predictions"] = found.source
        row["Max diff vs metrics.json"] = found.max_difference
        row["Classes"] = classes_label(found.class_names)
        row["Run"] = found.record.name
        rows.append(row)
    columns = ["Model", "Modality", "Task", *tops, "Macro F1", "AUROC", "Samples", "Predictions"]
    columns += ["Max diff vs metrics.json", "Classes", "Run"]
    if not rows:
        return pd.DataFrame(columns=columns)
    table = pd.DataFrame(rows, columns=columns)
    table["_task"] = table["Task"].map({t: i for i, t in enumerate(CLASSIFIER_TASKS)})
    table["_key"] = table["AUROC"].where(table["Task"] == "binary", table["Top-1"])
    table = table.sort_values(
        ["_task", "Classes", "_key", *tops], ascending=[True, True] + [False] * (k + 1), kind="stable"
    )
    return table.drop(columns=["_task", "_key"]).reset_index(drop=True)


def by_classes(evaluation: Evaluation) -> dict[tuple[str, ...], Evaluation]:
    """The scored runs grouped by their classes: ``{class names: Evaluation of those runs only}``, the
    groups and their runs in :func:`comparison_table`'s order. One top-k chart or confusion-matrix grid
    per group: runs over different classes are not comparable figure by figure."""
    order = {run: i for i, run in enumerate(comparison_table(evaluation)["Run"])}
    groups: dict[tuple[str, ...], list[RunEvaluation]] = {}
    for found in sorted(evaluation.runs, key=lambda f: order[f.record.name]):
        groups.setdefault(tuple(found.class_names), []).append(found)
    return {names: Evaluation(runs, [], [], evaluation.k, evaluation.split) for names, runs in groups.items()}


def per_class_table(evaluation: Evaluation) -> pd.DataFrame:
    """Precision, recall, F1 and support per (model, class) of every scored run (models named as in
    :func:`comparison_table`)."""
    names = _names(evaluation)
    rows = [
        {"Model": names[found.record.name], "Class": name, "Precision": v["precision"], "Recall": v["recall"],
         "F1": v["f1"], "Support": v["support"]}
        for found in evaluation.runs
        for name, v in found.report["per_class"].items()
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=["Model", "Class", "Precision", "Recall", "F1", "Support"]).set_index(
        ["Model", "Class"]
    )


def roc_curves(evaluation: Evaluation) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """``{model (as in :func:`display_names`): (fpr, tpr, auroc)}`` of every binary run, what
    :func:`nbhelpers.plots.roc_plot` takes."""
    names = _names(evaluation)
    return {names[found.record.name]: found.roc for found in evaluation.runs if found.roc is not None}


def agreement_table(evaluation: Evaluation) -> pd.DataFrame:
    """One row per (run, figure): the fresh value, the value in the run's ``metrics.json``, the difference."""
    rows = [
        {"Run": found.record.name, "Figure": key, "Fresh": found.figures[key],
         "metrics.json": float(found.reference[key]), "Difference": diff}
        for found in evaluation.runs
        for key, diff in found.differences.items()
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=["Run", "Figure", "Fresh", "metrics.json", "Difference"])


#: The self-supervised figures :func:`representation_table` shows: metrics.json key -> column.
REPRESENTATION_FIGURES = {
    "linear_probe": "Linear probe",
    "knn": "kNN",
    "random_linear_probe": "Linear probe (random init)",
    "random_knn": "kNN (random init)",
    "recall_at_1": "Recall@1 image->text",
    "zero_shot_accuracy": "Zero-shot accuracy",
}


def representation_table(evaluation: Evaluation) -> pd.DataFrame:
    """One row per self-supervised run with its probe / retrieval figures, read from its ``metrics.json``.

    These runs learn representations, not a classifier, so they are not in the top-k table.
    """
    rows = []
    for record in evaluation.representations:
        m = record.metrics
        row = {"Model": record.model_name, "Modality": m.get("modality"), "Split": m.get("split")}
        row["Probe label"] = m.get("probe_label", "")
        row.update({col: m.get(key, np.nan) for key, col in REPRESENTATION_FIGURES.items()})
        row["Run"] = record.name
        rows.append(row)
    columns = ["Model", "Modality", "Split", "Probe label", *REPRESENTATION_FIGURES.values(), "Run"]
    table = pd.DataFrame(rows, columns=columns)
    return table.dropna(axis=1, how="all")


def skipped_table(evaluation: Evaluation) -> pd.DataFrame:
    """One row per run that could not be evaluated: Run | Reason."""
    return pd.DataFrame(
        [{"Run": r.name, "Reason": why} for r, why in evaluation.skipped], columns=["Run", "Reason"]
    )


def markdown_table(table: pd.DataFrame, digits: int = 3) -> str:
    """A GitHub Markdown table of ``table`` (floats to ``digits`` places, empty cells for NaN/None)."""

    def cell(value: Any) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return ""
        if isinstance(value, (float, np.floating)):
            return f"{value:.{digits}f}" if abs(value) >= 10 ** (-digits) or value == 0 else f"{value:.1e}"
        return str(value).replace("|", "\\|")

    header = "| " + " | ".join(map(str, table.columns)) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


def save_comparison(table: pd.DataFrame, runs_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Writes ``runs_dir/comparison.csv`` and ``runs_dir/comparison.md``; returns their paths."""
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    csv, md = runs_dir / COMPARISON_CSV, runs_dir / COMPARISON_MD
    table.to_csv(csv, index=False)
    md.write_text(markdown_table(table))
    return csv, md


def topk_long(table: pd.DataFrame, k: int, tasks: Sequence[str] = ("7class", "multiclass")) -> pd.DataFrame:
    """The Top-1 ... Top-k columns of the ``tasks`` rows of :func:`comparison_table` as a long table
    (Model, metric, value) for :func:`nbhelpers.plots.metric_bars`; a Top-j a run does not have (fewer than
    j classes) is left out.

    Raises:
        ValueError: if those rows are over different classes: chart each of :func:`by_classes` apart.
    """
    rows = table[table["Task"].isin(tasks)]
    if "Classes" in rows and rows["Classes"].nunique() > 1:
        raise ValueError(
            f"the table holds runs over different classes ({'; '.join(rows['Classes'].unique())}): chart each "
            "label set apart (comparison_table of each by_classes(evaluation) group)"
        )
    tops = [f"Top-{j}" for j in range(1, k + 1) if f"Top-{j}" in rows]
    long = rows.melt(id_vars="Model", value_vars=tops, var_name="metric", value_name="value")
    return long.dropna(subset=["value"]).reset_index(drop=True)
