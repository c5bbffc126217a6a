"""Tables of a self-supervised run's probes, for the notebooks to show."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd


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
