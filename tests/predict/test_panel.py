"""Notebook 09's prediction panel, headless: the callback scores a test sample as the run's re-scoring does,
explains it as 08 would, and scores an uploaded picture; the widget drives the same callback."""

from __future__ import annotations

import io
from datetime import datetime, timezone

import matplotlib
import numpy as np
import pytest
from PIL import Image

from nbhelpers.evaluation.run_discovery import inspect_run
from nbhelpers.evaluation.run_scoring import evaluate_run
from nbhelpers.plots import explanation_figure
from nbhelpers.predict.panel import PredictSession
from nbhelpers.widgets import predict_panel
from tests.predict.test_predict import SEVEN_RUNS

matplotlib.use("Agg")


def png_bytes() -> bytes:
    image = Image.new("RGB", (80, 50), (200, 40, 40))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def session(tiny_runs):
    return PredictSession(tiny_runs / "runs", split="test")


def test_the_panel_offers_every_classifier_run(session):
    assert session.runs() == sorted(SEVEN_RUNS)


def test_a_test_sample_scores_as_the_rescoring_and_is_explained(session, tiny_runs):
    run = "clip_classifier_lora"
    rescored = evaluate_run(inspect_run(tiny_runs / "runs" / run), "test")
    for index in (0, 5):
        score = session.score(run, sample=index)
        assert np.abs(score.predictions.probabilities[0] - rescored.scores[index]).max() <= 1e-6
        assert score.label == rescored.class_names[rescored.labels[index]]
        explanation = score.explanation
        assert explanation is not None and score.explain_error is None
        # The explainer's own forward pass sees the same input: the same probabilities.
        np.testing.assert_allclose(explanation.probs, score.predictions.probabilities[0], atol=1e-5)
        assert explanation.label == rescored.labels[index]
        assert explanation.grad_cam is not None or explanation.attention is not None


def test_an_uploaded_picture_with_a_caption(session):
    score = session.score("cass_mm", png_bytes(), "a red square")
    assert score.label is None and score.text == "a red square"
    assert score.explanation.label == -1  # no true class: the figure says "unknown"
    figure = explanation_figure(score.explanation)
    assert "true: unknown" in figure.axes[0].get_title()
    with pytest.raises(ValueError, match="text 0: text is empty"):
        session.score("cass_mm", png_bytes(), "  ")
    with pytest.raises(ValueError, match="image: upload a picture"):
        session.score("cass_mm", None, "a caption")
    with pytest.raises(IndexError, match="sample: 999"):
        session.score("cass_mm", sample=999)


def test_a_late_fusion_run_predicts_but_has_no_map(session):
    score = session.score("unimodal_late_fusion", sample=1)
    assert score.explanation is None and "late" in score.explain_error.lower()
    np.testing.assert_allclose(score.predictions.probabilities.sum(), 1.0, atol=1e-5)


def test_the_widget_runs_the_callback(tiny_runs):
    box = predict_panel(str(tiny_runs / "runs"))
    (run, source), (sample, upload) = box.children[0].children, box.children[1].children
    run.value, source.value, sample.value = "fusion_cross", "test sample", 2
    box.predict()
    assert (
        box.state["score"].record["run"] == "fusion_cross"
        and "hateful_probability" in box.state["score"].record
    )
    source.value = "upload"
    box.predict()
    assert box.state["error"] == "image: upload a picture or pick a test sample"
    data = png_bytes()
    upload.value = ({"name": "m.png", "type": "image/png", "size": len(data), "content": memoryview(data),
                     "last_modified": datetime.now(timezone.utc)},)  # fmt: skip
    box.children[2].value = "my caption"
    box.predict()
    assert box.state["score"].text == "my caption" and box.state["score"].label is None
