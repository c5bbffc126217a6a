"""Figures take their class names from the data, never from a fixed list."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from nbhelpers.plots import class_histogram, confusion_matrices, confusion_matrix_plot


def _ticks(labels) -> list[str]:
    return [t.get_text() for t in labels]


def test_confusion_matrices_are_labelled_with_the_classes_given():
    fig = confusion_matrix_plot(np.eye(3), ["cat", "dog", "bird"], title="three")
    ax = fig.axes[0]
    assert _ticks(ax.get_xticklabels()) == _ticks(ax.get_yticklabels()) == ["cat", "dog", "bird"]
    fig = confusion_matrices({"a": np.eye(2), "b": np.eye(2)}, ["not hateful", "hateful"])
    assert _ticks(fig.axes[0].get_yticklabels()) == ["not hateful", "hateful"]
    assert _ticks(confusion_matrix_plot(np.eye(2)).axes[0].get_xticklabels()) == ["0", "1"]
    with pytest.raises(ValueError, match=r"labels: 3 names for a \(2, 2\) confusion matrix"):
        confusion_matrix_plot(np.eye(2), ["cat", "dog", "bird"])
    plt.close("all")


def test_the_class_histogram_keeps_the_tables_class_order():
    counts = pd.DataFrame(
        {
            "split": ["train"] * 3 + ["test"] * 3,
            "class": ["cat", "dog", "bird"] * 2,
            "count": [5, 0, 2, 1, 1, 1],
        }
    )
    fig = class_histogram(counts)
    assert _ticks(fig.axes[0].get_xticklabels()) == ["cat", "dog", "bird"]
    plt.close("all")
