"""Figures the notebooks show: sample grids, class histograms, curves, confusion matrices, ROC curves,
reliability diagrams and precision-recall curves."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

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
    """A bar per class and split from :func:`nbhelpers.data.inspect.class_counts_long`, the classes in the
    order the table first names them (the shards' label order)."""
    fig, ax = plt.subplots(figsize=(9, 3.5), dpi=FIG_DPI)
    order = list(dict.fromkeys(counts["class"]))  # label order, as class_counts_long lists them
    sns.barplot(data=counts, x="class", y="count", hue="split", ax=ax, order=order)
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
    matrix: np.ndarray, labels: Sequence[str] | None = None, title: str = "", ax=None
) -> plt.Figure:
    """A row-normalised ``(C, C)`` confusion matrix heatmap with the C class names on both axes (a
    classification report's ``classes``; None: the class indices).

    Raises:
        ValueError: if ``labels`` does not name every row.
    """
    matrix = np.asarray(matrix)
    if labels is not None and len(labels) != len(matrix):
        raise ValueError(f"labels: {len(labels)} names for a {matrix.shape} confusion matrix")
    labels = list(labels) if labels is not None else list(range(len(matrix)))
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


def _grid(count: int, columns: int, width: float) -> tuple[plt.Figure, np.ndarray]:
    """A figure of ``count`` square panels, ``columns`` to a row; the unused panels are hidden."""
    columns = max(1, min(columns, count))
    rows = max(1, int(np.ceil(count / columns)))
    fig, axes = plt.subplots(
        rows, columns, figsize=(width * columns, width * rows), dpi=FIG_DPI, squeeze=False
    )
    for ax in axes.flat[count:]:
        ax.set_visible(False)
    return fig, axes


def reliability_diagrams(
    curves: dict[str, tuple[Any, Any]], columns: int = 3, width: float = 3.6
) -> plt.Figure:
    """Top-label reliability diagrams before and after temperature scaling, one panel per model:
    ``{name: (bins before, bins after)}``, each a :class:`nbhelpers.metrics.calibration.ReliabilityBins`.

    Each panel plots every non-empty bin's accuracy against its mean confidence (a calibrated model lies on
    the diagonal), the ECE of each in the legend.
    """
    fig, axes = _grid(max(1, len(curves)), columns, width)
    for ax, (name, pair) in zip(axes.flat, curves.items()):
        for bins, label, style in zip(pair, ("before", "after scaling"), ("o--", "s-")):
            full = bins.count > 0
            ax.plot(
                bins.confidence[full], bins.accuracy[full], style, ms=4, label=f"{label} (ECE {bins.ece:.3f})"
            )
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy")
        ax.set_title(name, fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


def pr_curves_plot(
    curves: dict[str, tuple[np.ndarray, np.ndarray, Sequence[Any]]], columns: int = 3, width: float = 3.6
) -> plt.Figure:
    """Precision-recall curves of the positive class with the chosen operating points marked, one panel per
    model: ``{name: (precision, recall, thresholds)}``, each threshold a
    :class:`nbhelpers.evaluation.operating_points.Threshold` (its name, precision, recall)."""
    fig, axes = _grid(max(1, len(curves)), columns, width)
    for ax, (name, (precision, recall, thresholds)) in zip(axes.flat, curves.items()):
        ax.plot(recall, precision, lw=1.2, color="0.4", drawstyle="steps-post")
        for t, marker in zip(thresholds, "oDs^v"):
            shown = f"{t.name}: t={t.threshold:.2f}" + ("" if t.reached else " (not reached)")
            ax.plot([t.recall], [t.precision], marker, ms=7, label=shown)
        ax.set(xlim=(0, 1.02), ylim=(0, 1.02), xlabel="recall", ylabel="precision")
        ax.set_title(name, fontsize=9)
        if thresholds:
            ax.legend(fontsize=7, loc="best")
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
    matrices: dict[str, np.ndarray], labels: Sequence[str] | None = None, title: str = "", width: float = 4.8
) -> plt.Figure:
    """Row-normalised confusion matrices side by side, one per model: ``{name: (C, C) matrix}``, all over
    the same C classes ``labels`` (None: the class indices)."""
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


# ------------------------------------------------------------------- attention maps, Grad-CAM, tokens


def _overlay(
    ax, image: np.ndarray, heat: np.ndarray | None, title: str, cmap: str = "inferno", fontsize: float = 8
) -> None:
    ax.imshow(image, interpolation="nearest")
    if heat is not None:
        height, width = image.shape[:2]
        ax.imshow(heat, cmap=cmap, alpha=0.6, extent=(0, width, height, 0), interpolation="nearest")
    ax.set_title(title, fontsize=fontsize)
    ax.axis("off")


def _masked(image: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """The picture with the patches outside ``keep`` (patch grid) dimmed to a fifth."""
    import torch

    from nbhelpers.evaluation.saliency import upsample_maps  # plots stay importable without torch use

    keep = upsample_maps(torch.from_numpy(np.ascontiguousarray(keep)), image.shape[:2]).numpy()[..., None]
    return (image * np.where(keep > 0, 1.0, 0.2)).astype(np.uint8)


def _prediction_title(explanation: Any) -> str:
    names = explanation.class_names
    # A picture of one's own has no true class (label -1).
    title = f"true: {names[explanation.label]}" if explanation.label >= 0 else "true: unknown"
    if explanation.probs is not None:
        p = explanation.predicted
        title += f"\npred: {names[p]} ({explanation.probs[p]:.2f})"
    return title


def _mass_mask(heat: np.ndarray, mass: float) -> np.ndarray:
    import torch

    from nbhelpers.evaluation.saliency import mass_threshold_mask  # plots stay importable without torch use

    return mass_threshold_mask(torch.from_numpy(np.ascontiguousarray(heat)), mass).numpy()


def token_scores_plot(tokens: Sequence[str], scores: np.ndarray, title: str = "", ax=None) -> plt.Figure:
    """One bar per token of a caption: positive scores red, negative blue."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(max(3.0, 0.55 * len(tokens)), 2.2), dpi=FIG_DPI)
    else:
        fig = ax.figure
    scores = np.asarray(scores, dtype=float)
    ax.bar(range(len(scores)), scores, color=np.where(scores >= 0, "#c0392b", "#2e86c1"))
    ax.set_xticks(range(len(tokens)))
    labels = [t.replace("<start_of_text>", "<sot>").replace("<end_of_text>", "<eot>") for t in tokens]
    ax.set_xticklabels(labels, rotation=40, ha="right", fontsize=8)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_title(title, fontsize=9)
    ax.tick_params(axis="y", labelsize=7)
    return fig


def explanation_figure(
    explanation: Any, layer: int = -1, head: int | None = None, mass: float = 0.6
) -> plt.Figure:
    """One sample under one model: the picture, its maps side by side, and the caption's token scores.

    Args:
        explanation: a :class:`nbhelpers.evaluation.explainers.Explanation`.
        layer: the attention layer (negative counts from the last).
        head: one head, or None for every head and their mean.
        mass: the share of attention mass the thresholded mask keeps (DINO's ``--threshold``).
    """
    image = explanation.image
    panels: list[tuple[str, Any]] = [("picture", None)]
    if explanation.attention is not None:
        maps = explanation.attention[layer]  # (heads, gh, gw)
        layer_index = layer % explanation.num_layers
        chosen = range(len(maps)) if head is None else [head]
        panels += [(f"layer {layer_index} head {h}", maps[h]) for h in chosen]
        focus = maps.mean(0) if head is None else maps[head]
        which = "mean of heads" if head is None else f"head {head}"
        panels.append((f"{mass:.0%} of the mass\n({which})", ("mask", focus)))
    if explanation.grad_cam is not None:
        panels.append(("Grad-CAM\n(predicted class)", ("cam", explanation.grad_cam)))
    scores = explanation.token_scores
    rows = 1 + bool(scores)
    fig = plt.figure(figsize=(max(1.9 * len(panels), 5.0), 2.6 + 2.4 * (rows - 1)), dpi=FIG_DPI)
    grid = fig.add_gridspec(rows, max(len(panels), len(scores) or 1), height_ratios=[1.25] + [1] * (rows - 1))
    for i, (title, content) in enumerate(panels):
        ax = fig.add_subplot(grid[0, i])
        if content is None:
            _overlay(ax, image, None, _prediction_title(explanation))
            ax.text(0.5, -0.04, textwrap.shorten(explanation.text, 60), transform=ax.transAxes,
                    ha="center", va="top", fontsize=7)  # fmt: skip
        elif isinstance(content, tuple) and content[0] == "mask":
            _overlay(ax, _masked(image, _mass_mask(content[1], mass)), None, title)
        elif isinstance(content, tuple):
            _overlay(ax, image, content[1], title, cmap="jet")
        else:
            _overlay(ax, image, content, title)
    if scores:
        per = max(len(panels), len(scores)) // len(scores)
        for j, (method, values) in enumerate(scores.items()):
            ax = fig.add_subplot(grid[1, j * per : (j + 1) * per])
            token_scores_plot(explanation.tokens, values, title=f"caption: {method}", ax=ax)
    fig.suptitle(explanation.model, fontsize=9)
    fig.tight_layout()
    return fig


def layer_head_grid(explanation: Any, width: float = 1.9) -> plt.Figure:
    """Every layer (rows) and head (columns) of one sample's CLS attention, over the picture."""
    maps = explanation.attention
    layers, heads = maps.shape[:2]
    fig, axes = plt.subplots(
        layers, heads, figsize=(width * heads, width * layers + 0.4), dpi=FIG_DPI, squeeze=False
    )
    for (l_, h), ax in np.ndenumerate(axes):
        _overlay(ax, explanation.image, maps[l_, h], f"layer {l_} head {h}")
    fig.suptitle(f"{explanation.model}\n{explanation.text}", fontsize=8)
    fig.tight_layout()
    return fig


def attention_gallery(
    explanations: Sequence[Any], layer: int = -1, mass: float = 0.6, width: float = 1.9
) -> plt.Figure:
    """Several samples, one column each: the picture, the mean-of-heads map, its mass mask, Grad-CAM."""
    rows = ["picture"]
    if explanations[0].attention is not None:
        rows += ["attention (mean of heads)", f"{mass:.0%} of the mass"]
    if explanations[0].grad_cam is not None:
        rows.append("Grad-CAM")
    fig, axes = plt.subplots(
        len(rows), len(explanations), figsize=(width * len(explanations), width * len(rows) + 0.9),
        dpi=FIG_DPI, squeeze=False,
    )  # fmt: skip
    for j, ex in enumerate(explanations):
        for i, row in enumerate(rows):
            ax = axes[i, j]
            if row == "picture":
                _overlay(ax, ex.image, None, _prediction_title(ex), fontsize=6.5)
            elif row.startswith("attention"):
                _overlay(ax, ex.image, ex.attention[layer].mean(0), "")
            elif row == "Grad-CAM":
                _overlay(ax, ex.image, ex.grad_cam, "", cmap="jet")
            else:
                _overlay(ax, _masked(ex.image, _mass_mask(ex.attention[layer].mean(0), mass)), None, "")
            if j == 0:
                ax.text(
                    -0.08, 0.5, row, transform=ax.transAxes, rotation=90, ha="right", va="center", fontsize=8
                )
    fig.suptitle(explanations[0].model, fontsize=9)
    fig.tight_layout()
    return fig
