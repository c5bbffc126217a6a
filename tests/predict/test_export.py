"""``nbhelpers.export``: a self-contained folder (safetensors, config, classes, operating points, a Hub model
card) that predicts exactly as the run it came from; the upload to the Hub, without a network."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from huggingface_hub import ModelCard
from safetensors import safe_open

from nbhelpers.evaluation.operating_points import OperatingPoints, Threshold
from nbhelpers.export.__main__ import main as export_main
from nbhelpers.predict import load
from nbhelpers.predict.export import export, exported_info, push_to_hub
from nbhelpers.predict.model_card import licence
from tests.predict.test_predict import SEVEN_RUNS, shard_samples


@pytest.mark.slow
@pytest.mark.parametrize("run", SEVEN_RUNS)
def test_an_exported_folder_predicts_as_its_run(tiny_runs, tmp_path, run):
    source = tiny_runs / "runs" / run
    out = export(source, tmp_path / "model")
    original = load(source, device="cpu")
    images, texts = shard_samples(original, k=3)
    # The folder stands alone: no run folder, no other run (fusion's CLIP), no shards are read.
    moved = tmp_path / "elsewhere" / "model"
    shutil.move(out, moved)
    exported = load(moved, device="cpu")
    np.testing.assert_array_equal(
        exported.predict(images, texts).scores, original.predict(images, texts).scores
    )
    assert exported.classes == original.classes and exported.name == run
    assert exported.shard_image_size == original.shard_image_size == 64
    info = exported_info(moved)
    assert info["recipe"] == original.metrics["recipe"] and info["classes"] == list(original.classes)
    weights = [moved / "model.safetensors"] if run != "unimodal_late_fusion" else [
        moved / "text" / "model.safetensors", moved / "image" / "model.safetensors"
    ]  # fmt: skip
    for path in weights:
        with safe_open(str(path), "pt") as f:  # safetensors: no pickle anywhere
            assert f.keys() and all(k.split(".")[0] in ("model", "head") for k in f.keys())
    assert not list(moved.rglob("*.pt"))


def test_the_model_card_and_operating_points_travel(tiny_runs, tmp_path):
    run = tmp_path / "fusion_cross"
    shutil.copytree(tiny_runs / "runs" / "fusion_cross", run)
    points = OperatingPoints(
        temperature=1.7, classes=("not hateful", "hateful"), positive_class="hateful",
        thresholds=(Threshold("precision>=0.90", "precision", 0.9, 0.6, 0.92, 0.5, True),),
    )  # fmt: skip
    points.save(run)
    out = export(run, tmp_path / "model")
    assert OperatingPoints.load(out) == points
    original, exported = load(run, device="cpu"), load(out, device="cpu")
    images, texts = shard_samples(original, k=3)
    a, b = original.predict(images, texts), exported.predict(images, texts)
    np.testing.assert_array_equal(a.probabilities, b.probabilities)
    assert a.thresholds_passed == b.thresholds_passed and b.temperature == 1.7
    card = ModelCard.load(out / "README.md")
    metrics = original.metrics
    assert card.data.license == "other" and "content-moderation" in card.data.tags
    results = {(r.dataset_split, r.metric_name): r.metric_value for r in card.data.eval_results}
    for split, figures in metrics["splits"].items():
        assert results[(split, "auroc")] == pytest.approx(figures["auroc"])
        assert results[(split, "accuracy")] == pytest.approx(figures["accuracy"])
    text = card.text
    assert metrics["checkpoint"]["sha256"] in text and exported_info(out)["weights_sha256"] in text
    assert "Intended use and limitations" in text and "Temperature 1.7" in text
    with pytest.raises(FileExistsError, match="out_dir"):
        export(run, out)
    assert export(run, out, overwrite=True, license="apache-2.0") == out
    assert ModelCard.load(out / "README.md").data.license == "apache-2.0"


def test_the_licence_follows_the_training_data():
    assert licence(["synthetic"]) == "other" and licence(["synthetic"], "mit") == "mit"
    assert licence(["synthetic", "hateful_memes"], "mit") == "other"
    assert licence(["own"], "mit") == "other"


def test_push_to_hub_uploads_the_folder(tiny_runs, tmp_path, monkeypatch):
    calls = []

    class FakeApi:
        def __init__(self, token=None):
            calls.append(("init", token))

        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", repo_id, kwargs))

        def upload_folder(self, **kwargs):
            calls.append(("upload_folder", kwargs))
            return type("Commit", (), {"commit_url": "https://huggingface.co/me/m/commit/1"})()

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    with pytest.raises(FileNotFoundError, match="memelab_model.json"):
        push_to_hub(tmp_path, "me/m")
    assert calls == []
    out = tmp_path / "model"
    assert export_main([str(tiny_runs / "runs" / "unimodal_image"), str(out), "--push_to_hub", "me/m"]) == 0
    assert calls == [
        ("init", None),
        ("create_repo", "me/m", {"repo_type": "model", "private": True, "exist_ok": True}),
        ("upload_folder", {"folder_path": str(out), "repo_id": "me/m", "repo_type": "model",
                           "commit_message": "Upload memelab model"}),
    ]  # fmt: skip


def test_export_errors_are_one_line_and_exit_2(tiny_runs, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        export_main([str(tiny_runs / "runs" / "clip"), str(tmp_path / "out")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("nbhelpers.export: error: ") and "no classifier" in err
    assert len(err.strip().splitlines()) == 1
