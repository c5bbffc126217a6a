"""The comparison tables of notebook 09: classifiers side by side, per class, agreement, representations.

See :mod:`nbhelpers.evaluation.runs` for the whole evaluation of notebook 09.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nbhelpers.data.taxonomy import CLASSES
from nbhelpers.evaluation.run_discovery import CLASSIFIER_TASKS, SEVEN_LABEL, RunRecord
from nbhelpers.evaluation.run_scoring import Evaluation, RunEvaluation
from nbhelpers.train.run_dir import read_json

#: Where the comparison table is written, under ``runs_dir``.
COMPARISON_CSV, COMPARISON_MD = "comparison.csv", "comparison.md"


#: config.json fields that say where a run lives or how it was run, not what it trained.
BOOKKEEPING_FIELDS = frozenset(
    {"run_name", "runs_dir", "data_dir", "progress", "report_to", "resume", "num_workers", "checkpoint_every",
     "keep_last", "preset"}
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
