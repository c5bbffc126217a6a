"""What the training notebooks show of the runs they just trained: tables, ROC curves, a weights report, a
self-supervised run's probes.

These read a recipe's :class:`~nbhelpers.train.recipes.results.RunResult` (its ``metrics.json`` record,
its per-split reports) and never train; the recipes (:mod:`nbhelpers.train.recipes`) only train and write.
Comparing finished runs of several recipes is :mod:`nbhelpers.evaluation.runs`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from nbhelpers.data.taxonomy import CLASSES
from nbhelpers.fileio import sha256_file
from nbhelpers.models.clip import load_clip_state_dict
from nbhelpers.train.identity import read_run_record
from nbhelpers.train.recipes.results import RunResult, read_metrics


def split_table(metrics: Mapping[str, Any], name: str | None = None) -> pd.DataFrame:
    """One row per evaluated split of a run's ``metrics.json`` (its ``splits``): for a fusion run kind
    (seen/unseen), AUROC, accuracy, n (and a class run's top-k and macro F1).

    Args:
        metrics: the run's ``metrics.json`` record.
        name: put in a first column ``run`` (to stack several runs' tables).
    """
    rows = [{"split": split, **values} for split, values in metrics["splits"].items()]
    frame = pd.DataFrame(rows).set_index("split")
    if name is not None:
        frame.insert(0, "run", name)
    return frame


def split_comparison_table(results: Mapping[str, RunResult]) -> pd.DataFrame:
    """A long table of several runs, one row per (run, split): the :func:`split_table` columns (for
    :func:`nbhelpers.plots.metric_bars`)."""
    frames = [split_table(result.metrics, name).reset_index() for name, result in results.items()]
    return pd.concat(frames, ignore_index=True)


def split_roc_curves(
    reports: Mapping[str, Mapping[str, Any]],
) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """``{split: (fpr, tpr, auroc)}`` from one run's per-split reports (a fusion run's
    ``extra["reports"]``), as :func:`nbhelpers.plots.roc_plot` takes (empty for a head over three or more
    classes: one-vs-rest has no single curve)."""
    return {
        split: (np.asarray(r["roc"]["fpr"]), np.asarray(r["roc"]["tpr"]), r["auroc"])
        for split, r in reports.items()
        if "roc" in r
    }


def clip_modes_table(results: Mapping[str, RunResult]) -> pd.DataFrame:
    """Model | Top-1 | Top-2 per CLIP classifier mode (``{mode: result}``) on the primary split, plus the
    other splits' top-1 and the trainable parameters."""
    rows = []
    for mode, result in results.items():
        metrics = result.metrics
        row = {"Model": f"CLIP {mode}", "Top-1": metrics["top1"], "Top-2": metrics["top2"]}
        row.update(
            {
                f"Top-1 ({split})": s["top1"]
                for split, s in metrics["splits"].items()
                if split != metrics["split"]
            }
        )
        row["Trainable"] = f"{metrics['trainable_parameters']:,}"
        rows.append(row)
    return pd.DataFrame(rows).set_index("Model").round(3)


def frozen_weights_report(result: RunResult) -> str:
    """Compares every base weight of a trained ``lora`` CLIP classifier run's CLIP with its pretrained
    weights file (the one its ``run.json`` records).

    Only reads: a ``run:<name>`` whose weights are missing is reported, never trained.
    """
    pretrained = result.extra["config"]["pretrained"]
    started_from = (read_run_record(result.run_dir) or {}).get("inputs", {}).get("pretrained")
    if started_from is None:
        return f"pretrained={pretrained!r} is not a local file: nothing to compare"
    path = started_from["path"]
    if not os.path.isfile(path) or sha256_file(path) != started_from["sha256"]:
        return f"pretrained={pretrained!r}: {path} is missing or changed since the run started: nothing to compare"
    reference = load_clip_state_dict(path)
    clip = result.extra["model"].clip
    trained = {k.replace(".base_layer", ""): v for k, v in clip.state_dict().items() if "lora_" not in k}
    same = sum(torch.equal(trained[k].cpu(), v) for k, v in reference.items() if k in trained)
    adapters = sum(p.numel() for n, p in clip.named_parameters() if "lora_" in n)
    return (
        f"{same} of {len(reference)} pretrained tensors are bit-identical after training; "
        f"{adapters:,} LoRA adapter parameters trained"
    )


def probe_table(metrics: Mapping[str, Any], split: str | None = None) -> pd.DataFrame:
    """One row per (label, encoder) of one split's probes of an ssl run's ``metrics.json``.

    Args:
        metrics: the run's metrics (``RunResult.metrics``, or its ``metrics.json``): ``method`` and
            ``probes`` (``{split: {label: {encoder: {"linear_probe", "knn"}}}}``).
        split: the split to show; default the run's primary one (``metrics["split"]``).

    Returns:
        Columns ``method | label | encoder | linear probe | kNN``.
    """
    probes = metrics["probes"][split or metrics["split"]]
    rows = [
        {"method": metrics["method"], "label": label, "encoder": encoder,
         "linear probe": scores["linear_probe"], "kNN": scores["knn"]}
        for label, by_encoder in probes.items()
        for encoder, scores in by_encoder.items()
    ]  # fmt: skip
    return pd.DataFrame(rows)


def unimodal_table(result: RunResult | Mapping[str, Path | str]) -> pd.DataFrame:
    """One row per run of a unimodal result (text, image, late fusion): Model | Modality | Top-1 | Top-2 | Chance top-1 | Chance top-2 | Top-1 - chance,
    chance being ``k / C`` for the run's ``C`` classes.

    Args:
        result: what :func:`nbhelpers.train.recipes.unimodal.run` returned, or ``{kind: run_dir}``.
    """
    runs = result.extra["runs"] if isinstance(result, RunResult) else result
    rows = []
    for found in runs.values():
        m = found.metrics if isinstance(found, RunResult) else read_metrics(Path(found))
        n = len(m.get("classes", CLASSES))  # a run written before label sets: the seven
        rows.append(
            {
                "Model": m["model"],
                "Modality": m["modality"],
                "Top-1": m["top1"],
                "Top-2": m["top2"],
                "Chance top-1": 1 / n,
                "Chance top-2": 2 / n,
                "Top-1 - chance": m["top1"] - 1 / n,
            }
        )
    return pd.DataFrame(rows).set_index("Model")
