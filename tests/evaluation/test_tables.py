"""The training notebooks' tables and ROC curves, from a run's metrics.json and reports (no training)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nbhelpers.evaluation.tables import (
    clip_modes_table,
    split_comparison_table,
    split_roc_curves,
    split_table,
)
from nbhelpers.train.recipes.results import RunResult

SPLITS = {"val": {"kind": "seen", "auroc": 0.9, "num_samples": 4}, "unseen": {"kind": "unseen", "auroc": 0.7}}


def result(name: str, **metrics) -> RunResult:
    return RunResult(Path(name), {"split": "val", "splits": SPLITS, **metrics})


def test_split_tables_have_a_row_per_split_and_per_run_and_split():
    table = split_table(result("a").metrics)
    assert list(table.index) == ["val", "unseen"] and table.loc["unseen", "kind"] == "unseen"
    long = split_comparison_table({"concat": result("a"), "cross": result("b")})
    assert list(zip(long["run"], long["split"])) == [
        ("concat", "val"), ("concat", "unseen"), ("cross", "val"), ("cross", "unseen"),
    ]  # fmt: skip


def test_roc_curves_only_for_splits_with_one_curve():
    reports = {"val": {"roc": {"fpr": [0, 1], "tpr": [0, 1]}, "auroc": 0.5}, "test": {"auroc": 0.8}}
    curves = split_roc_curves(reports)
    assert list(curves) == ["val"] and isinstance(curves["val"][0], np.ndarray) and curves["val"][2] == 0.5


def test_clip_modes_table_puts_the_primary_split_first():
    splits = {"val": {"top1": 0.5}, "test": {"top1": 0.25}}
    runs = {
        mode: RunResult(Path(mode), {"split": "val", "splits": splits, "top1": 0.5, "top2": 0.75,
                                     "trainable_parameters": 1234})
        for mode in ("lora", "baseline")
    }  # fmt: skip
    table = clip_modes_table(runs)
    assert list(table.index) == ["CLIP lora", "CLIP baseline"]
    assert list(table.columns) == ["Top-1", "Top-2", "Top-1 (test)", "Trainable"]
    assert table.loc["CLIP lora", "Trainable"] == "1,234"
