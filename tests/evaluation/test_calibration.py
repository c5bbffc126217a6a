"""Operating points fitted on the validation split of real tiny runs: scaling, thresholds, the stored file."""

from __future__ import annotations

import json
import shutil

import matplotlib.pyplot as plt
import numpy as np
import pytest

from nbhelpers.config import ConfigError
from nbhelpers.data.taxonomy import CLASSES
from nbhelpers.evaluation.calibration import (
    FITTED,
    STORED,
    calibrate_runs,
    calibration_table,
    fit_operating_points,
    operating_points_from_predictions,
    parse_targets,
    pr_curves,
    reliability_curves,
    thresholds_table,
)
from nbhelpers.evaluation.operating_points import OPERATING_POINTS_FILE, OperatingPoints
from nbhelpers.evaluation.runs import (
    BINARY_CLASSES,
    SAVED,
    EvalRunsConfig,
    discover_runs,
    load_saved_predictions,
    recipe_predictor,
)
from nbhelpers.metrics.calibration import TEMPERATURE_BOUNDS, negative_log_likelihood, scale_probabilities
from nbhelpers.plots import pr_curves_plot, reliability_diagrams
from nbhelpers.train.checkpoint import verify_checkpoint
from nbhelpers.train.run_dir import latest_checkpoint

CLASSIFIERS = ["cass_mm", "clip_classifier_lora", "fusion_cross", "unimodal_image", "unimodal_late_fusion"]
CLASSIFIERS += ["unimodal_text"]


@pytest.fixture(scope="module")
def runs(tiny_runs, tmp_path_factory):
    """A copy of the tiny classifier runs (the shared ones stay as they are), and their calibration."""
    root = tmp_path_factory.mktemp("calibrated") / "runs"
    for name in CLASSIFIERS:
        shutil.copytree(tiny_runs / "runs" / name, root / name)
    return root


@pytest.fixture(scope="module")
def calibrated(runs):
    return calibrate_runs(discover_runs(runs), progress=None)


def test_temperature_scaling_lowers_val_nll_on_trained_runs(runs, calibrated):
    assert calibrated.skipped == []
    assert sorted(c.record.name for c in calibrated.runs) == CLASSIFIERS
    for c in calibrated.runs:
        points, figures = c.points, c.points.figures
        assert c.status == FITTED and c.split == "val" and len(c.labels) == 32
        assert points.temperature != 1.0
        # The fitted T is at the NLL minimum: strictly below the uncalibrated NLL, and below its neighbours
        # inside the searched range (a run that predicts val no better than chance wants T at its top).
        assert figures["nll"]["after"] < figures["nll"]["before"], c.record.name
        at = negative_log_likelihood(points.calibrate(c.scores), c.labels)
        low, high = TEMPERATURE_BOUNDS
        for near in (points.temperature * 0.97, points.temperature * 1.03):
            if low <= near <= high:
                assert negative_log_likelihood(scale_probabilities(c.scores, near), c.labels) > at
        assert 0.0 <= figures["ece"]["after"] <= 1.0 and 0.0 <= figures["ece"]["before"] <= 1.0
        assert figures["ece_bins"] == 15 and figures["num_samples"] == 32
        two = [np.stack([1 - p, p], 1) if p.ndim == 1 else p for p in (c.scores, c.calibrated)]
        np.testing.assert_array_equal(two[0].argmax(1), two[1].argmax(1))  # scaling keeps every argmax
        assert OperatingPoints.load(runs / c.record.name) == points
        if c.record.name == "fusion_cross":
            assert (points.classes, points.positive_class, c.scores.ndim) == (BINARY_CLASSES, "hateful", 1)
        else:
            assert (points.classes, points.positive_class) == (CLASSES, "Hate")
        checkpoint = latest_checkpoint(runs / c.record.name)
        want = None if c.record.name == "unimodal_late_fusion" else verify_checkpoint(checkpoint)
        assert points.checkpoint_sha256 == want


def _figure(flagged: np.ndarray, positives: np.ndarray, metric: str) -> float:
    tp = (flagged & positives).sum()
    return tp / flagged.sum() if metric == "precision" else tp / positives.sum()


def test_thresholds_reproduce_their_val_figures_exactly(runs, calibrated):
    """Each stored threshold, applied to fresh val predictions calibrated with the stored temperature,
    gives the stored precision and recall, and is the lowest (precision) or highest (recall) that does."""
    checked = 0
    for c in calibrated.runs:
        points = OperatingPoints.load(runs / c.record.name)
        assert [t.name for t in points.thresholds] == ["precision>=0.90", "recall>=0.90"]
        scores, labels = recipe_predictor(c.record.recipe)(runs / c.record.name, "val")
        positive = points.positive_probability(points.calibrate(scores))
        positives = labels == points.classes.index(points.positive_class)
        assert points.figures["positives"] == positives.sum() > 0
        for t in points.thresholds:
            flagged = positive >= t.threshold
            tp = int((flagged & positives).sum())
            assert (t.precision, t.recall) == (tp / flagged.sum(), tp / positives.sum())
            reaching = [
                s for s in np.unique(positive) if _figure(positive >= s, positives, t.metric) >= t.target
            ]
            assert t.reached == bool(reaching)
            if reaching:
                assert t.threshold == (min(reaching) if t.metric == "precision" else max(reaching))
            checked += 1
    assert checked == 2 * len(CLASSIFIERS)


def test_a_stored_record_is_used_again_and_a_stale_one_refitted(runs, calibrated, tmp_path):
    run = tmp_path / "unimodal_image"
    shutil.copytree(runs / "unimodal_image", run)
    first = next(c for c in calibrated.runs if c.record.name == "unimodal_image")
    again = fit_operating_points(run)
    assert again.status == STORED and again.points == first.points
    # Fitted for other weights: refitted, with this checkpoint's digest.
    stale = json.loads((run / OPERATING_POINTS_FILE).read_text())
    (run / OPERATING_POINTS_FILE).write_text(
        json.dumps({**stale, "checkpoint_sha256": "0" * 64, "temperature": 9.0})
    )
    refitted = fit_operating_points(run)
    assert refitted.status == FITTED and refitted.points == first.points
    assert OperatingPoints.load(run) == first.points
    # Other targets, an unreadable file, or refit=True: fitted again.
    other = fit_operating_points(run, targets="precision>=0.5,recall>=0.99")
    assert other.status == FITTED and [t.name for t in other.points.thresholds] == [
        "precision>=0.50",
        "recall>=0.99",
    ]
    (run / OPERATING_POINTS_FILE).write_text("{not json")
    assert fit_operating_points(run, targets="precision>=0.5,recall>=0.99", save=False).status == FITTED
    assert fit_operating_points(run, refit=True).status == FITTED
    # The late fusion has no checkpoint of its own: fitted every time.
    assert fit_operating_points(runs / "unimodal_late_fusion", save=False).status == FITTED


def test_a_run_without_the_split_is_skipped_with_its_reason(runs):
    lines = []
    found = calibrate_runs(discover_runs(runs)[:1], split="dev_seen", progress=lines.append)
    assert found.runs == [] and len(found.skipped) == 1
    record, reason = found.skipped[0]
    assert record.name == "cass_mm" and "no split 'dev_seen'" in reason
    assert lines == [f"cass_mm: skipped ({reason})"]
    with pytest.raises(ValueError, match="^targets: "):
        calibrate_runs(discover_runs(runs), targets="f1>=0.5")


def test_saved_val_predictions_give_the_same_fit(runs, calibrated):
    first = next(c for c in calibrated.runs if c.record.name == "unimodal_text")
    saved = fit_operating_points(runs / "unimodal_text", repredict=False, refit=True, save=False)
    assert saved.source == SAVED
    scores, _ = load_saved_predictions(runs / "unimodal_text", "val", "7class")
    np.testing.assert_allclose(first.scores, scores, atol=1e-6)
    assert saved.points.temperature == pytest.approx(first.points.temperature, rel=1e-3)


def test_tables_and_figures(calibrated):
    table = calibration_table(calibrated).set_index("Run")
    figures = ["T", "NLL before", "NLL after", "ECE before", "ECE after"]
    assert list(table.columns[:7]) == ["Model", "Positive class", *figures]
    assert (table["NLL after"] < table["NLL before"]).all()
    for c in calibrated.runs:
        assert table.loc[c.record.name, "T"] == c.points.temperature
    points = thresholds_table(calibrated)
    assert len(points) == 2 * len(CLASSIFIERS)
    row = points[(points["Run"] == "fusion_cross") & (points["Operating point"] == "recall>=0.90")].iloc[0]
    fusion = next(c for c in calibrated.runs if c.record.name == "fusion_cross").points.thresholds[1]
    assert (row["Threshold"], row["Precision"], row["Recall"], row["Reached"]) == (
        fusion.threshold, fusion.precision, fusion.recall, fusion.reached
    )  # fmt: skip
    curves = pr_curves(calibrated)
    assert len(curves) == len(CLASSIFIERS)
    fig = pr_curves_plot(curves)
    assert len([ax for ax in fig.axes if ax.get_visible()]) == len(CLASSIFIERS)
    assert len(fig.axes[0].lines) == 1 + 2  # the curve and the two operating points
    fig = reliability_diagrams(reliability_curves(calibrated))
    assert "ECE" in fig.axes[0].get_legend().get_texts()[0].get_text()
    plt.close("all")


def test_a_run_over_other_classes_gets_a_temperature_and_no_thresholds():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 40)
    logits = rng.normal(size=(40, 3)) * 4
    logits[np.arange(40), labels] += 2
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    points = operating_points_from_predictions(probs, labels, ("cat", "dog", "bird"))
    assert points.positive_class is None and points.thresholds == () and points.temperature > 1
    # Seven classes with no Hate sample in the split: no thresholds, and the record says why.
    seven = operating_points_from_predictions(np.full((4, 7), 1 / 7), np.array([0, 1, 2, 3]), CLASSES)
    assert seven.thresholds == () and seven.figures["note"] == "no Hate sample in val: no thresholds"


def test_targets_are_parsed_and_bad_ones_named():
    assert parse_targets("precision>=0.9, recall>=0.955") == [
        ("precision>=0.90", "precision", 0.9), ("recall>=0.955", "recall", 0.955)
    ]  # fmt: skip
    for bad in ("precision>0.9", "f1>=0.9", "recall>=1.5", "recall>=x", "precision>=0.9,precision>=0.90"):
        with pytest.raises(ValueError, match="^targets: "):
            parse_targets(bad)
    assert EvalRunsConfig.from_params("demo").operating_targets == "precision>=0.9,recall>=0.9"
    with pytest.raises(ConfigError, match="^operating_targets: 'recall>=2'"):
        EvalRunsConfig.from_params("demo", operating_targets="recall>=2")
