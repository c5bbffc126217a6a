"""Figures the notebooks show: sample grids, class histograms, curves, confusion matrices, ROC curves."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from nbhelpers.data.taxonomy import CLASSES

FIG_DPI = 80  # committed notebooks stay small


def sample_grid(samples: Sequence[dict[str, Any]], columns: int = 4, width: float = 3.0) -> plt.Figure:
    """Pictures with their text and class, from :func:`nbhelpers.data.inspect.raw_samples`."""
    rows = max(1, int(np.ceil(len(samples) / columns)))
    fig, axes = plt.subplots(
        rows, columns, figsize=(columns * width, rows * (width + 0.9)), dpi=FIG_DPI, squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    for ax, sample in zip(axes.flat, samples):
        ax.imshow(sample["image"])
        meta = sample["json"]
        title = f"{meta['label_name']}" + (" (valid pair)" if meta.get("valid_pair") else "")
        ax.set_title(title, fontsize=9, fontweight="bold")
        ax.text(
            0.5,
            -0.03,
            "\n".join(textwrap.wrap(sample["text"], 34)[:3]),
            transform=ax.transAxes,
            ha="center",
            va="top",
            fontsize=8,
        )
    fig.tight_layout()
    return fig


def class_histogram(counts: pd.DataFrame, title: str = "samples per class") -> plt.Figure:
    """A bar per class and split from :func:`nbhelpers.data.inspect.class_counts_long`."""
    fig, ax = plt.subplots(figsize=(9, 3.5), dpi=FIG_DPI)
    sns.barplot(data=counts, x="class", y="count", hue="split", ax=ax, order=list(CLASSES))
    ax.set_title(title)
    ax.set_xlabel("")
    ax.tick_params(axis="x", rotation=25)
    fig.tight_layout()
    return fig


def training_curves(
    history: Sequence[dict[str, Any]], keys: Sequence[str] = ("loss",), title: str = ""
) -> plt.Figure:
    """Per-epoch curves of ``keys`` from a run's ``history.json``."""
    frame = pd.DataFrame(history)
    keys = [k for k in keys if k in frame]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3), dpi=FIG_DPI, squeeze=False)
    for ax, key in zip(axes.flat, keys):
        ax.plot(frame["epoch"], frame[key], marker="o")
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def confusion_matrix_plot(
    matrix: np.ndarray, labels: Sequence[str] = CLASSES, title: str = "", ax=None
) -> plt.Figure:
    """A row-normalised confusion matrix heatmap with class names on both axes."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 5), dpi=FIG_DPI)
    else:
        fig = ax.figure
    sns.heatmap(
        matrix,
        annot=True,
        fmt=".2f",
        cmap="Blues",
        vmin=0,
        vmax=1,
        xticklabels=labels,
        yticklabels=labels,
        ax=ax,
        cbar=False,
    )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    ax.tick_params(axis="x", rotation=35)
    ax.tick_params(axis="y", rotation=0)
    fig.tight_layout()
    return fig


def roc_plot(curves: dict[str, tuple[np.ndarray, np.ndarray, float]], title: str = "ROC") -> plt.Figure:
    """ROC curves: ``{name: (fpr, tpr, auroc)}``."""
    fig, ax = plt.subplots(figsize=(4.5, 4.2), dpi=FIG_DPI)
    for name, (fpr, tpr, auc) in curves.items():
        ax.plot(fpr, tpr, label=f"{name} (AUROC {auc:.3f})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def save_figure(fig: plt.Figure, path: str | Path, dpi: int = 110) -> Path:
    """Saves ``fig`` as PNG (creating the folder); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight", format="png")
    return path
