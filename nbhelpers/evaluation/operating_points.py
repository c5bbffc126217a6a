"""A run's operating points: its temperature and the thresholds a moderation queue works at.

A classifier's argmax is rarely where a content-moderation team works: it works at a threshold on the
probability of the harmful class chosen for a precision or a recall it needs, and it needs probabilities it
can read as such. Both are fitted on the validation split and stored with the run as
``operating_points.json`` (:data:`OPERATING_POINTS_FILE`):

* temperature scaling (Guo et al., 2017, "On Calibration of Modern Neural Networks"): one scalar ``T`` that
  divides the logits, fitted by negative log-likelihood on validation; it changes no prediction's argmax;
* for the positive class (``Hate`` of the seven classes, ``hateful`` of a binary run), the lowest threshold
  on its calibrated probability that reaches each target precision, and the highest that reaches each target
  recall, with the validation precision and recall they give.

This module holds the record, its file and how it is applied to probabilities; the fitting math is
:mod:`nbhelpers.metrics.calibration` (whose :func:`scale_probabilities` this module re-exports), fitting a
run's record is :func:`nbhelpers.evaluation.calibration.fit_operating_points`.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nbhelpers.fileio import read_json, write_json_atomic
from nbhelpers.metrics.calibration import scale_probabilities

OPERATING_POINTS_FILE = "operating_points.json"
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Threshold:
    """One operating point on the positive class's calibrated probability.

    Attributes:
        name: how it is shown and reported, e.g. ``"precision>=0.90"``.
        metric: ``"precision"`` or ``"recall"``: what the target is on.
        target: the precision or recall asked for, in ``(0, 1]``.
        threshold: a sample passes when its calibrated positive probability is ``>= threshold``.
        precision: the validation precision at ``threshold``.
        recall: the validation recall at ``threshold``.
        reached: whether the validation split reaches ``target`` at all (if not, ``threshold`` is the point
            closest to it, and the figures say how far it falls short).
    """

    name: str
    metric: str
    target: float
    threshold: float
    precision: float
    recall: float
    reached: bool

    def __post_init__(self) -> None:
        if self.metric not in ("precision", "recall"):
            raise ValueError(f"operating point {self.name!r}: metric must be 'precision' or 'recall'")
        if not 0.0 < self.target <= 1.0:
            raise ValueError(f"operating point {self.name!r}: target must be in (0, 1], got {self.target}")


@dataclass(frozen=True)
class OperatingPoints:
    """A run's calibration and thresholds (see the module docstring).

    Attributes:
        temperature: the logits' divisor, ``> 0`` (1.0: uncalibrated).
        classes: the run's classes, in the order of its probabilities.
        positive_class: the class whose probability the thresholds are on (None: no thresholds).
        thresholds: the operating points, in the order they were asked for.
        fitted_on: the split they were fitted on (``"val"``).
        checkpoint_sha256: the digest of the weights they were fitted for (None if unknown).
        figures: validation figures before and after scaling, e.g. ``{"nll": {"before": .., "after": ..},
            "ece": {"before": .., "after": ..}}``.
    """

    temperature: float
    classes: tuple[str, ...]
    positive_class: str | None = None
    thresholds: tuple[Threshold, ...] = ()
    fitted_on: str = "val"
    checkpoint_sha256: str | None = None
    figures: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature must be a positive finite number, got {self.temperature}")
        if self.positive_class is not None and self.positive_class not in self.classes:
            raise ValueError(f"positive_class {self.positive_class!r} is not one of {list(self.classes)}")

    @property
    def binary(self) -> bool:
        """True for a run that gives one hateful probability per sample (two classes)."""
        return len(self.classes) == 2

    def calibrate(self, probabilities: np.ndarray) -> np.ndarray:
        """Temperature-scaled probabilities from the run's uncalibrated ones.

        Args:
            probabilities: ``(N, C)`` class probabilities, or ``(N,)`` positive-class probabilities of a
                binary run (what the run's scoring gives).

        Returns:
            The same shape, ``softmax(log p / T)`` (``sigmoid(logit(p) / T)`` for ``(N,)``), float64.
        """
        return scale_probabilities(probabilities, self.temperature)

    def positive_probability(self, calibrated: np.ndarray) -> np.ndarray:
        """``(N,)`` calibrated probability of :attr:`positive_class` from :meth:`calibrate`'s output.

        Raises:
            ValueError: if the run has no positive class.
        """
        if self.positive_class is None:
            raise ValueError("this run has no positive class, so no thresholds")
        calibrated = np.asarray(calibrated)
        if calibrated.ndim == 1:
            return calibrated
        return calibrated[:, self.classes.index(self.positive_class)]

    def passed(self, positive_probability: float) -> list[str]:
        """Names of the thresholds a calibrated positive probability passes (``>=``), in order."""
        return [t.name for t in self.thresholds if positive_probability >= t.threshold]

    def to_json(self) -> dict[str, Any]:
        """The ``operating_points.json`` object."""
        out = dataclasses.asdict(self)
        out["classes"] = list(self.classes)
        out["thresholds"] = [dataclasses.asdict(t) for t in self.thresholds]
        out["figures"] = dict(self.figures)
        return {"version": SCHEMA_VERSION, **out}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> OperatingPoints:
        """The record from :meth:`to_json`'s object.

        Raises:
            ValueError: on a newer schema version or a malformed object.
        """
        version = obj.get("version", SCHEMA_VERSION)
        if version > SCHEMA_VERSION:
            raise ValueError(f"operating points of schema {version}; this nbhelpers reads {SCHEMA_VERSION}")
        try:
            return cls(
                temperature=float(obj["temperature"]),
                classes=tuple(obj["classes"]),
                positive_class=obj.get("positive_class"),
                thresholds=tuple(Threshold(**t) for t in obj.get("thresholds", ())),
                fitted_on=obj.get("fitted_on", "val"),
                checkpoint_sha256=obj.get("checkpoint_sha256"),
                figures=dict(obj.get("figures", {})),
            )
        except (KeyError, TypeError) as err:
            raise ValueError(f"malformed operating points: {err}") from err

    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``folder/operating_points.json`` atomically; returns its path."""
        path = Path(folder) / OPERATING_POINTS_FILE
        write_json_atomic(path, self.to_json())
        return path

    @classmethod
    def load(cls, folder: str | os.PathLike) -> OperatingPoints | None:
        """The record stored in ``folder`` (a run or an exported model), or None if it has none."""
        path = Path(folder) / OPERATING_POINTS_FILE
        if not path.is_file():
            return None
        try:
            return cls.from_json(read_json(path))
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from err


def default_positive_class(classes: Sequence[str]) -> str | None:
    """The class a moderation threshold is on: ``Hate`` if present, the second of two classes, else None."""
    if "Hate" in classes:
        return "Hate"
    if len(classes) == 2:
        return classes[1]
    return None


__all__ = [
    "OPERATING_POINTS_FILE",
    "SCHEMA_VERSION",
    "OperatingPoints",
    "Threshold",
    "default_positive_class",
    "scale_probabilities",
]
