"""Predicting new memes with a trained run: every classifier recipe scores a shard sample's own image bytes and
caption exactly as its re-scoring does; calibration; raw pictures letterboxed as the shards were."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pytest
from PIL import Image

from nbhelpers.data.image import ImageDecodeError, letterbox
from nbhelpers.data.loader import shard_set
from nbhelpers.data.tar_samples import iter_groups
from nbhelpers.evaluation.operating_points import OperatingPoints, Threshold
from nbhelpers.evaluation.run_discovery import BINARY_CLASSES, inspect_run
from nbhelpers.evaluation.run_scoring import evaluate_run
from nbhelpers.predict import load
from nbhelpers.train.recipes import get_recipe
from nbhelpers.train.recipes.config import manifests
from nbhelpers.train.run_dir import RunNotFoundError
from tests.conftest import LABEL_RUNS

#: The classifier runs of ``tiny_runs``: 02's three (text, image, late fusion), 05, 06 (lora), 07 (binary).
SEVEN_RUNS = ("unimodal_text", "unimodal_image", "unimodal_late_fusion", "cass_mm", "clip_classifier_lora")
SEVEN_RUNS += ("fusion_cross",)
#: Samples of each test split compared.
K = 4


@pytest.fixture(scope="module")
def baseline_run(tiny_runs, tmp_path_factory):
    """06's baseline mode (every weight trains) on ``tiny_runs``' shards, in a folder of its own."""
    runs = tmp_path_factory.mktemp("baseline_runs")
    weights = tiny_runs / "runs" / "tinyclip" / "clip_weights.pt"
    get_recipe("clip_classifier").run(
        dict(
            runs_dir=str(runs),
            data_dir=str(tiny_runs / "shards"),
            batch_size=16,
            progress=False,
            eval_splits="test",
            run_name="clip_classifier_baseline",
            mode="baseline",
            pretrained=str(weights),
            epochs=1,
        )  # fmt: skip
    )
    return runs / "clip_classifier_baseline"


def shard_samples(predictor, split: str = "test", k: int = K) -> tuple[list[bytes], list[str]]:
    """The first ``k`` samples of ``split`` as stored: JPEG bytes and caption (the re-scoring's order)."""
    urls = shard_set(manifests(predictor.trained.config), split).urls
    images, texts = [], []
    for url in urls:
        for group in iter_groups(url):
            images.append(group.members["jpg"])
            texts.append(group.members["txt"].decode("utf-8"))
            if len(images) == k:
                return images, texts
    return images, texts


def assert_as_rescored(run_dir, k: int = K) -> None:
    predictor = load(run_dir, device="cpu")
    images, texts = shard_samples(predictor, k=k)
    found = predictor.predict(images, texts, batch_size=3)  # two batches: batching must not matter
    rescored = evaluate_run(inspect_run(run_dir), "test")
    assert np.abs(found.scores - rescored.scores[:k]).max() <= 1e-6
    assert found.classes == rescored.class_names
    # No operating points: the calibrated probabilities are the model's own, temperature 1, no thresholds.
    assert np.array_equal(found.probabilities, found.uncalibrated_probabilities)
    assert found.temperature == 1.0 and found.thresholds_passed == []
    np.testing.assert_allclose(found.probabilities.sum(axis=1), 1.0, atol=1e-5)
    record = found.record(0)
    assert record["predicted"] == max(record["probabilities"], key=record["probabilities"].get)
    assert ("hateful_probability" in record) == (predictor.task == "binary")


@pytest.mark.slow
@pytest.mark.parametrize("run", SEVEN_RUNS)
def test_each_recipe_predicts_a_shard_sample_as_its_rescoring_does(tiny_runs, run):
    assert_as_rescored(tiny_runs / "runs" / run)


@pytest.mark.slow
@pytest.mark.parametrize("run", LABEL_RUNS)
def test_runs_over_a_label_set_of_ones_own_predict_as_rescored(tiny_label_runs, run):
    assert_as_rescored(tiny_label_runs / "runs" / run)


@pytest.mark.slow
def test_clip_baseline_mode_predicts_as_rescored(baseline_run):
    assert_as_rescored(baseline_run)


def test_a_binary_head_reports_the_hateful_probability(tiny_runs):
    predictor = load(tiny_runs / "runs" / "fusion_cross", device="cpu")
    images, texts = shard_samples(predictor, k=2)
    found = predictor.predict(images, texts)
    assert found.classes == BINARY_CLASSES and found.binary
    np.testing.assert_array_equal(found.hateful_probability, found.scores)
    np.testing.assert_array_equal(found.probabilities[:, 0], 1.0 - found.scores)


def test_operating_points_calibrate_and_name_the_thresholds_passed(tiny_runs, tmp_path):
    run = tmp_path / "fusion_cross"
    shutil.copytree(tiny_runs / "runs" / "fusion_cross", run)
    plain = load(run, device="cpu")
    images, texts = shard_samples(plain, k=K)
    before = plain.predict(images, texts)
    p = before.scores
    cut = float(np.sort(p)[K // 2])  # half the samples (at least) at or above it
    points = OperatingPoints(
        temperature=2.0, classes=BINARY_CLASSES, positive_class="hateful",
        thresholds=(
            Threshold("low", "recall", 0.9, 0.0, 0.5, 1.0, True),
            Threshold("mid", "precision", 0.9, cut, 0.9, 0.5, True),
        ),
    )  # fmt: skip
    points.save(run)
    after = load(run, device="cpu").predict(images, texts)
    np.testing.assert_array_equal(after.uncalibrated_probabilities, before.probabilities)
    calibrated = points.calibrate(p)
    np.testing.assert_allclose(after.hateful_probability, calibrated, rtol=0, atol=1e-12)
    assert after.temperature == 2.0
    assert after.thresholds_passed == [points.passed(float(q)) for q in calibrated]
    assert any("mid" not in names for names in after.thresholds_passed) or cut <= calibrated.min()
    assert after.record(0)["thresholds_passed"][0] == "low"
    # Scaling by T = 2 pulls every probability towards 1/2; the argmax never changes.
    assert np.all(np.abs(calibrated - 0.5) <= np.abs(p - 0.5) + 1e-12)
    assert after.predicted == before.predicted


def test_operating_points_of_other_classes_are_refused(tiny_runs, tmp_path):
    run = tmp_path / "fusion_cross"
    shutil.copytree(tiny_runs / "runs" / "fusion_cross", run)
    OperatingPoints(temperature=1.5, classes=("a", "b", "c")).save(run)
    with pytest.raises(ValueError, match="operating points are for classes"):
        load(run, device="cpu")


def test_a_raw_picture_is_letterboxed_as_the_shards_were(tiny_runs, tmp_path):
    predictor = load(tiny_runs / "runs" / "clip_classifier_lora", device="cpu")
    assert predictor.shard_image_size == 64
    wide = Image.new("RGB", (120, 40), (250, 20, 20))
    wide.paste((20, 20, 250), (40, 0, 80, 40))
    wide.save(tmp_path / "wide.png")
    text = "a red square"
    from_file = predictor.predict(tmp_path / "wide.png", text).scores
    from_letterbox = predictor.predict(letterbox(wide, 64), text).scores
    squashed = predictor.predict(wide.resize((64, 64)), text).scores
    with open(tmp_path / "wide.png", "rb") as f:
        from_bytes = predictor.predict(f.read(), text).scores
    np.testing.assert_array_equal(from_file, from_letterbox)
    np.testing.assert_array_equal(from_bytes, from_letterbox)
    assert np.abs(squashed - from_letterbox).max() > 1e-4  # the letterbox matters: it is not a resize


def test_bad_inputs_name_what_is_wrong(tiny_runs, tmp_path):
    predictor = load(tiny_runs / "runs" / "clip_classifier_lora", device="cpu")
    image = io.BytesIO()
    Image.new("RGB", (64, 64)).save(image, format="PNG")
    with pytest.raises(ValueError, match="text 0: text is empty"):
        predictor.predict(image.getvalue(), "   ")
    with pytest.raises(ValueError, match="image 0: .* reads pictures"):
        predictor.predict(None, "a caption")
    with pytest.raises(ValueError, match="2 images but 1 texts"):
        predictor.predict([image.getvalue()] * 2, ["a"])
    with pytest.raises(ImageDecodeError, match="missing image file"):
        predictor.predict(tmp_path / "nope.png", "a caption")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ImageDecodeError) as err:
        predictor.predict(tmp_path / "broken.png", "a caption")
    assert err.value.reason == "undecodable_image"
    with pytest.raises(RunNotFoundError):
        load(tmp_path / "no_run")
    with pytest.raises(ValueError, match="no classifier"):
        load(tiny_runs / "runs" / "clip")


def test_a_text_run_needs_no_picture_and_an_image_run_no_caption(tiny_runs):
    text_run = load(tiny_runs / "runs" / "unimodal_text", device="cpu")
    image_run = load(tiny_runs / "runs" / "unimodal_image", device="cpu")
    images, texts = shard_samples(image_run, k=2)
    np.testing.assert_array_equal(
        text_run.predict(None, texts[0]).scores, text_run.predict(images[0], texts[0]).scores
    )
    np.testing.assert_array_equal(
        image_run.predict(images[0], None).scores, image_run.predict(images[0], "x").scores
    )
