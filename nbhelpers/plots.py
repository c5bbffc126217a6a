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


def metric_bars(
    frame: pd.DataFrame,
    x: str = "split",
    y: str = "auroc",
    hue: str = "run",
    title: str = "",
    ymin: float = 0.0,
) -> plt.Figure:
    """Grouped bars of one metric, e.g. AUROC per split (``x``) for each run (``hue``), with values printed.

    Args:
        frame: a long table with columns ``x``, ``y`` and ``hue`` (one row per bar).
        x: the column along the axis.
        y: the metric.
        hue: the column that groups the bars.
        title: the figure title.
        ymin: where the value axis starts (0.5, chance, suits AUROC).
    """
    fig, ax = plt.subplots(figsize=(1.6 * frame[x].nunique() + 3.0, 3.2), dpi=FIG_DPI)
    sns.barplot(data=frame, x=x, y=y, hue=hue, ax=ax)
    for container in ax.containers:
        ax.bar_label(container, fmt="%.3f", fontsize=7, padding=1)
    top = max(1.0, float(frame[y].max()))
    ax.set_ylim(ymin, top + 0.08 * (top - ymin))
    ax.set_xlabel("")
    ax.set_title(title)
    ax.legend(fontsize=8, title=hue, title_fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def view_grid(
    views: Sequence[Any],
    mean: Sequence[float],
    std: Sequence[float],
    titles: Sequence[str] = (),
    original: Any = None,
    width: float = 1.7,
) -> plt.Figure:
    """The augmented views of one image (e.g. DINO's global and local crops), each at its own resolution.

    Args:
        views: normalised ``(3, h, w)`` tensors (sizes may differ).
        mean: the normalisation mean, undone for display.
        std: the normalisation std.
        titles: one title per view.
        original: the source image as a uint8 ``(3, H, W)`` tensor, shown first if given.
        width: inches per panel.
    """
    panels = ([("original", original.permute(1, 2, 0).numpy())] if original is not None else []) + [
        (
            titles[i] if i < len(titles) else f"view {i}",
            (v.detach().cpu().permute(1, 2, 0).numpy() * np.asarray(std) + np.asarray(mean)).clip(0, 1),
        )
        for i, v in enumerate(views)
    ]
    fig, axes = plt.subplots(
        1, len(panels), figsize=(width * len(panels), width + 0.4), dpi=FIG_DPI, squeeze=False
    )
    for ax, (title, pixels) in zip(axes.flat, panels):
        ax.imshow(pixels, interpolation="nearest")
        ax.set_title(f"{title}\n{pixels.shape[1]}x{pixels.shape[0]}", fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    return fig


def run_curves(
    histories: dict[str, Sequence[dict[str, Any]]],
    keys: Sequence[str] = ("loss",),
    reference: dict[str, float] | None = None,
    title: str = "",
) -> plt.Figure:
    """Per-epoch curves of several runs on shared axes: one panel per key, one line per run.

    Args:
        histories: ``{run name: history["epochs"]}`` from each run's ``history.json``.
        keys: the logged values to draw (keys no run logged are left out).
        reference: ``{key: value}`` drawn as a dashed line on that key's panel (e.g. chance level).
        title: the figure's title.
    """
    frames = {name: pd.DataFrame(list(history)) for name, history in histories.items()}
    keys = [k for k in keys if any(k in frame for frame in frames.values())]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.8 * len(keys), 3), dpi=FIG_DPI, squeeze=False)
    for ax, key in zip(axes.flat, keys):
        for name, frame in frames.items():
            if key in frame:
                ax.plot(frame["epoch"], frame[key], marker="o", label=name)
        if reference and key in reference:
            ax.axhline(reference[key], color="k", ls="--", lw=0.9, label="chance")
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_title(key)
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def confusion_matrices(
    matrices: dict[str, np.ndarray], labels: Sequence[str] = CLASSES, title: str = "", width: float = 4.8
) -> plt.Figure:
    """Row-normalised confusion matrices side by side, one per model: ``{name: (C, C) matrix}``."""
    fig, axes = plt.subplots(
        1, len(matrices), figsize=(width * len(matrices), width), dpi=FIG_DPI, squeeze=False
    )
    for i, (ax, (name, matrix)) in enumerate(zip(axes.flat, matrices.items())):
        confusion_matrix_plot(np.asarray(matrix), labels, title=name, ax=ax)
        plt.setp(ax.get_xticklabels(), rotation=40, ha="right", rotation_mode="anchor")
        if i:  # the rows are the same classes in every panel: label them once
            ax.set_ylabel("")
            ax.set_yticklabels([])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def similarity_heatmap(similarity: np.ndarray, images, texts: Sequence[str], title: str = "") -> plt.Figure:
    """Image-text cosine similarities with the pictures along the top and the captions down the side.

    Args:
        similarity: (N, N) similarities, row = image, column = text.
        images: (N, 3, H, W) uint8 tensor or array of the pictures.
        texts: the N captions.
    """
    n = len(texts)
    fig = plt.figure(figsize=(1.1 * n + 3.5, 1.1 * n + 1.6), dpi=FIG_DPI)
    grid = fig.add_gridspec(
        2, 2, width_ratios=[3.5, 1.1 * n], height_ratios=[1.1, 1.1 * n], wspace=0.02, hspace=0.02
    )
    thumbs = grid[0, 1].subgridspec(1, n, wspace=0.05)
    for i in range(n):
        ax = fig.add_subplot(thumbs[0, i])
        ax.imshow(np.asarray(images[i]).transpose(1, 2, 0))
        ax.axis("off")
    ax = fig.add_subplot(grid[1, 1])
    sns.heatmap(
        similarity.T,
        annot=True,
        fmt=".2f",
        cmap="viridis",
        cbar=False,
        ax=ax,
        xticklabels=False,
        yticklabels=False,
    )
    labels = fig.add_subplot(grid[1, 0])
    labels.axis("off")
    for j, text in enumerate(texts):
        labels.text(
            1.0,
            1 - (j + 0.5) / n,
            textwrap.shorten(text, 40),
            ha="right",
            va="center",
            fontsize=8,
            transform=labels.transAxes,
        )
    if title:
        fig.suptitle(title)
    return fig
