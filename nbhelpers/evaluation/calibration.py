"""Fitting a run's operating points on its validation split, and the tables and curves notebook 09 shows.

:func:`fit_operating_points` scores a classifier run on ``val`` (re-predicted from its checkpoint, or its
saved ``predictions_val.npz``), fits temperature scaling and the thresholds of its targets
(:mod:`nbhelpers.metrics.calibration`) and stores the record as the run's ``operating_points.json``
(:class:`~nbhelpers.evaluation.operating_points.OperatingPoints`), with the SHA-256 of the checkpoint it
was fitted for. A stored record is used again while it matches the run's checkpoint, split, classes and
targets; one fitted for other weights is refitted. A late-fusion run has no checkpoint of its own, so its
record is refitted every time.

A target is written ``"precision>=0.9"`` or ``"recall>=0.9"``; it is also the threshold's name
(``precision>=0.90``). Thresholds are on the positive class's calibrated probability (``Hate`` of the
seven classes, ``hateful`` of a binary run, the second of any two classes); a run over more classes
without ``Hate`` gets its temperature only.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import precision_recall_curve

from nbhelpers.evaluation.operating_points import (
    OPERATING_POINTS_FILE,
    OperatingPoints,
    Threshold,
    default_positive_class,
)
from nbhelpers.evaluation.run_discovery import RunRecord, inspect_run
from nbhelpers.evaluation.run_scoring import Evaluation, _first_line, evaluate_run
from nbhelpers.evaluation.run_tables import display_names
from nbhelpers.metrics.calibration import (
    ECE_BINS,
    ReliabilityBins,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    reliability_bins,
    threshold_for_target,
)
from nbhelpers.train.checkpoint import verify_checkpoint

#: The targets fitted unless others are asked for.
DEFAULT_TARGETS = ("precision>=0.9", "recall>=0.9")
#: :attr:`RunCalibration.status`: fitted now, or the run's stored record used again.
FITTED, STORED = "fitted", "stored"


def parse_targets(targets: str | Sequence[str]) -> list[tuple[str, str, float]]:
    """``[(name, metric, target)]`` from ``"precision>=0.9,recall>=0.95"`` or a sequence of such items.

    Raises:
        ValueError: naming an item that is not ``precision>=x`` or ``recall>=x`` with ``0 < x <= 1``, or a
            target asked for twice.
    """
    items = (
        [t.strip() for t in targets.split(",")]
        if isinstance(targets, str)
        else [str(t).strip() for t in targets]
    )
    parsed = []
    for item in filter(None, items):
        metric, sep, value = item.partition(">=")
        try:
            target = float(value)
        except ValueError:
            target = float("nan")
        if not sep or metric.strip() not in ("precision", "recall") or not 0.0 < target <= 1.0:
            raise ValueError(f"targets: {item!r} is not 'precision>=x' or 'recall>=x' with 0 < x <= 1")
        # Two decimals when they say it all (precision>=0.90), else every digit the target has.
        shown = f"{target:.2f}" if round(target, 2) == target else f"{target:g}"
        parsed.append((f"{metric.strip()}>={shown}", metric.strip(), target))
    names = [name for name, _, _ in parsed]
    if len(set(names)) != len(names):
        raise ValueError(f"targets: each target once, got {names}")
    return parsed


def operating_points_from_predictions(
    scores: np.ndarray,
    labels: np.ndarray,
    classes: Sequence[str],
    targets: str | Sequence[str] = DEFAULT_TARGETS,
    fitted_on: str = "val",
    checkpoint_sha256: str | None = None,
) -> OperatingPoints:
    """A run's operating points from its uncalibrated predictions on one split.

    Args:
        scores: ``(N, C)`` class probabilities, or ``(N,)`` probabilities of ``classes[1]`` (binary).
        labels: ``(N,)`` integer labels.
        classes: the run's classes, in the order of the columns.
        targets: see :func:`parse_targets`.
        fitted_on: the split the predictions are of.
        checkpoint_sha256: the digest of the weights that made them.

    Returns:
        The record; its ``figures`` hold ``nll`` and ``ece`` (``before`` / ``after`` scaling), ``ece_bins``,
        ``num_samples`` and ``positives`` (the positive class's samples), and ``note`` when the split has no
        positive sample, so no threshold.

    Raises:
        ValueError: on bad targets, shapes or labels.
    """
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(int)
    wanted = parse_targets(targets)
    if scores.ndim == 1 and len(classes) != 2:
        raise ValueError(f"scores: (N,) probabilities need two classes, got {list(classes)}")
    if scores.ndim == 2 and scores.shape[1] != len(classes):
        raise ValueError(f"scores: need one column per class ({list(classes)}), got shape {scores.shape}")
    points = OperatingPoints(
        temperature=fit_temperature(scores, labels),
        classes=tuple(classes),
        positive_class=default_positive_class(tuple(classes)),
        fitted_on=fitted_on,
        checkpoint_sha256=checkpoint_sha256,
    )
    calibrated = points.calibrate(scores)
    nll = [negative_log_likelihood(p, labels) for p in (scores, calibrated)]
    ece = [expected_calibration_error(p, labels) for p in (scores, calibrated)]
    figures = {
        "nll": {"before": nll[0], "after": nll[1]},
        "ece": {"before": ece[0], "after": ece[1]},
        "ece_bins": ECE_BINS,
        "num_samples": len(labels),
    }
    thresholds = []
    if points.positive_class is not None:
        positives = labels == points.classes.index(points.positive_class)
        figures["positives"] = int(positives.sum())
        if not positives.any():
            figures["note"] = f"no {points.positive_class} sample in {fitted_on}: no thresholds"
        else:
            positive = points.positive_probability(calibrated)
            for name, metric, target in wanted:
                found = threshold_for_target(positive, positives, metric, target)
                thresholds.append(Threshold(name, metric, target, **dataclasses.asdict(found)))
    return dataclasses.replace(points, thresholds=tuple(thresholds), figures=figures)


@dataclass
class RunCalibration:
    """One run's operating points and the predictions they were checked on.

    Attributes:
        record: the run.
        points: its operating points.
        scores: ``(N, C)`` or ``(N,)`` uncalibrated probabilities on :attr:`split`.
        labels: ``(N,)`` labels.
        split: the split scored (the one the points were fitted on).
        source: where the predictions came from (re-predicted, or the saved predictions).
        status: :data:`FITTED` or :data:`STORED`.
    """

    record: RunRecord
    points: OperatingPoints
    scores: np.ndarray
    labels: np.ndarray
    split: str
    source: str
    status: str

    @property
    def calibrated(self) -> np.ndarray:
        """The temperature-scaled :attr:`scores`."""
        return self.points.calibrate(self.scores)

    @property
    def reliability(self) -> tuple[ReliabilityBins, ReliabilityBins]:
        """Top-label reliability bins before and after scaling."""
        return reliability_bins(self.scores, self.labels), reliability_bins(self.calibrated, self.labels)

    def pr_curve(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(precision, recall)`` of the calibrated positive probability (scikit-learn's curve), or None
        without a positive class or a positive sample."""
        if self.points.positive_class is None:
            return None
        positives = self.labels == self.points.classes.index(self.points.positive_class)
        if not positives.any():
            return None
        precision, recall, _ = precision_recall_curve(
            positives, self.points.positive_probability(self.calibrated)
        )
        return precision, recall


def _checkpoint_digest(record: RunRecord) -> str | None:
    """The verified SHA-256 of the run's own checkpoint (None for a run without weights of its own)."""
    if record.checkpoint is None or record.is_fusion_of_runs:
        return None
    return verify_checkpoint(record.checkpoint)


def _reusable(
    stored: OperatingPoints | None, record: RunRecord, split: str, digest: str | None, names: list[str]
) -> bool:
    """Whether a stored record was fitted for these weights, split, classes and targets."""
    if stored is None or digest is None or stored.checkpoint_sha256 != digest:
        return False
    same_targets = [t.name for t in stored.thresholds] == names or (
        stored.positive_class is None and not stored.thresholds
    )
    return stored.fitted_on == split and stored.classes == tuple(record.classes) and same_targets


def fit_operating_points(
    run: RunRecord | str | os.PathLike,
    split: str = "val",
    targets: str | Sequence[str] = DEFAULT_TARGETS,
    refit: bool = False,
    repredict: bool = True,
    save: bool = True,
) -> RunCalibration:
    """Scores a classifier run on ``split`` and fits (or reuses) its ``operating_points.json``.

    Args:
        run: a run folder, or its :class:`RunRecord`.
        split: the split to fit on (``val``: never the split the run is compared on).
        targets: see :func:`parse_targets`.
        refit: fit again even if the stored record still matches the run.
        repredict: rebuild the model and predict (else read ``predictions_<split>.npz``).
        save: write a fitted record to the run folder (atomically).

    Raises:
        ValueError: for a run with a problem or without a classifier, or bad targets.
        RunNotFoundError, FileNotFoundError, BadCheckpointError: as :func:`evaluate_run` raises them.
    """
    record = run if isinstance(run, RunRecord) else inspect_run(run)
    names = [name for name, _, _ in parse_targets(targets)]
    found = evaluate_run(record, split, k=1, repredict=repredict)
    digest = _checkpoint_digest(record)
    try:
        stored = None if refit else OperatingPoints.load(record.run_dir)
    except ValueError:  # an unreadable record is fitted again and overwritten
        stored = None
    if _reusable(stored, record, split, digest, names):
        return RunCalibration(record, stored, found.scores, found.labels, split, found.source, STORED)
    points = operating_points_from_predictions(
        found.scores, found.labels, record.classes, targets, fitted_on=split, checkpoint_sha256=digest
    )
    if save:
        points.save(record.run_dir)
    return RunCalibration(record, points, found.scores, found.labels, split, found.source, FITTED)


@dataclass
class Calibrations:
    """What :func:`calibrate_runs` found: the runs fitted, and those skipped with their reason."""

    runs: list[RunCalibration]
    skipped: list[tuple[RunRecord, str]]


def calibrate_runs(
    runs: Evaluation | Sequence[RunRecord],
    split: str = "val",
    targets: str | Sequence[str] = DEFAULT_TARGETS,
    refit: bool = False,
    repredict: bool = True,
    progress: Callable[[str], None] | None = print,
) -> Calibrations:
    """:func:`fit_operating_points` for each classifier run; a run that fails is skipped with its reason.

    Args:
        runs: an :func:`~nbhelpers.evaluation.run_scoring.evaluate_runs` result (its scored runs), or records.
        split, targets, refit, repredict: as :func:`fit_operating_points`.
        progress: called with one line per run (None: silent).

    Raises:
        ValueError: for bad targets (before any run is scored).
    """
    parse_targets(targets)
    say = progress or (lambda _: None)
    records = [found.record for found in runs.runs] if isinstance(runs, Evaluation) else list(runs)
    fitted, skipped = [], []
    for record in records:
        try:
            fitted.append(fit_operating_points(record, split, targets, refit, repredict))
        except Exception as err:  # noqa: BLE001 - one broken run must not stop the others' calibration
            reason = _first_line(err)
            skipped.append((record, reason))
            say(f"{record.name}: skipped ({reason})")
            continue
        found = fitted[-1]
        how = f"{found.status}, {found.source}, {len(found.labels)} samples"
        say(f"{record.name}: T = {found.points.temperature:.3f} ({how})")
    return Calibrations(fitted, skipped)


def _names(calibrations: Calibrations) -> dict[str, str]:
    return display_names([c.record for c in calibrations.runs])


def calibration_table(calibrations: Calibrations) -> pd.DataFrame:
    """One row per run: temperature, validation NLL and ECE before and after scaling, samples."""
    names = _names(calibrations)
    rows = []
    for c in calibrations.runs:
        fig = c.points.figures
        rows.append({
            "Model": names[c.record.name], "Positive class": c.points.positive_class or "-",
            "T": c.points.temperature, "NLL before": fig["nll"]["before"], "NLL after": fig["nll"]["after"],
            "ECE before": fig["ece"]["before"], "ECE after": fig["ece"]["after"], "Samples": len(c.labels),
            "Fit": c.status, "Run": c.record.name,
        })  # fmt: skip
    columns = ["Model", "Positive class", "T", "NLL before", "NLL after", "ECE before", "ECE after"]
    return pd.DataFrame(rows, columns=columns + ["Samples", "Fit", "Run"])


def thresholds_table(calibrations: Calibrations) -> pd.DataFrame:
    """One row per run and threshold: the target, the threshold on the calibrated positive probability,
    the validation precision and recall it gives, and whether the target was reached."""
    names = _names(calibrations)
    rows = [
        {"Model": names[c.record.name], "Positive class": c.points.positive_class, "Operating point": t.name,
         "Threshold": t.threshold, "Precision": t.precision, "Recall": t.recall, "Reached": t.reached,
         "Run": c.record.name}
        for c in calibrations.runs
        for t in c.points.thresholds
    ]  # fmt: skip
    columns = [
        "Model",
        "Positive class",
        "Operating point",
        "Threshold",
        "Precision",
        "Recall",
        "Reached",
        "Run",
    ]
    return pd.DataFrame(rows, columns=columns)


def reliability_curves(calibrations: Calibrations) -> dict[str, tuple[ReliabilityBins, ReliabilityBins]]:
    """``{model: (bins before, bins after)}`` (what :func:`nbhelpers.plots.reliability_diagrams` takes)."""
    names = _names(calibrations)
    return {names[c.record.name]: c.reliability for c in calibrations.runs}


def pr_curves(calibrations: Calibrations) -> dict[str, tuple[np.ndarray, np.ndarray, list[Threshold]]]:
    """``{model: (precision, recall, thresholds)}`` of the runs with a positive class (what
    :func:`nbhelpers.plots.pr_curves_plot` takes)."""
    names = _names(calibrations)
    out = {}
    for c in calibrations.runs:
        curve = c.pr_curve()
        if curve is not None:
            out[names[c.record.name]] = (*curve, list(c.points.thresholds))
    return out


__all__ = [
    "DEFAULT_TARGETS",
    "FITTED",
    "OPERATING_POINTS_FILE",
    "STORED",
    "Calibrations",
    "RunCalibration",
    "calibrate_runs",
    "calibration_table",
    "fit_operating_points",
    "operating_points_from_predictions",
    "parse_targets",
    "pr_curves",
    "reliability_curves",
    "thresholds_table",
]
