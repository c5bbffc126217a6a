"""The CLIP recipe: masked contrastive training on valid pairs, retrieval / zero-shot metrics, export."""

import json

import pytest
import torch

from nbhelpers.models.clip import TINY_VIT, create_clip
from nbhelpers.train.recipes.clip import ClipConfig, resolve_pretrained, run

from .conftest import common


@pytest.fixture(scope="module")
def trained(tiny_shards, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("clip")
    return run(common(tiny_shards, tmp, epochs=3, steps_per_epoch=8, lr=1e-3, eval_splits="test,unseen")), tmp


def test_trains_on_valid_pairs_only_and_the_loss_falls(trained, tiny_shards):
    result, _ = trained
    manifest = json.loads((tiny_shards / "synthetic" / "manifest.json").read_text())
    epochs = result.history["epochs"]
    assert len(epochs) == 3 and epochs[-1]["loss"] < epochs[0]["loss"]
    # every batch held only valid pairs (valid_only=True): the mean count equals the batch size
    assert all(e["valid_pairs"] == 16 for e in epochs)
    assert result.metrics["num_samples"] == manifest["splits"]["train"]["class_counts"]["True/Neutral"]


def test_metrics_json_has_retrieval_and_zero_shot_in_range(trained):
    result, _ = trained
    saved = json.loads((result.run_dir / "metrics.json").read_text())
    assert (
        saved["recipe"] == "clip"
        and saved["notebook"] == "03_train_clip"
        and saved["modality"] == "multimodal"
        and saved["task"] == "ssl"
    )
    for split in ("test", "unseen"):
        report = saved["splits"][split]
        assert report["zero_shot_target"] == "picture colour (7 colours)"
        for key in ("recall_i2t@1", "recall_i2t@5", "recall_t2i@10", "zero_shot_accuracy"):
            assert 0.0 <= report[key] <= 1.0
        assert report["recall_i2t@1"] <= report["recall_i2t@5"] <= report["recall_i2t@10"]
    assert saved["recall_at_1"] == saved["splits"]["test"]["recall_i2t@1"]


def test_exported_weights_load_through_create_clip_and_run_prefix(trained):
    result, tmp = trained
    assert result.run_dir.parent == tmp / "runs" and result.run_dir.name.startswith("clip-")
    path = resolve_pretrained(f"run:{result.run_dir.name}", runs_dir=tmp / "runs")
    assert path == str(result.run_dir / "clip_weights.pt")
    model, _, _, _ = create_clip(TINY_VIT, pretrained=path)
    for name, tensor in result.extra["model"].state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor.cpu()), name
    assert resolve_pretrained("laion2b_s34b_b79k") == "laion2b_s34b_b79k"
    assert resolve_pretrained("") is None


def test_rerun_of_a_finished_run_loads_it_instead_of_training(trained, tiny_shards):
    result, tmp = trained
    again = run(common(tiny_shards, tmp, epochs=3, steps_per_epoch=8, lr=1e-3, eval_splits="test,unseen"))
    assert again.history["epochs"] == result.history["epochs"]
    assert again.metrics["train_seconds"] == result.metrics["train_seconds"]
    assert again.metrics["splits"]["test"] == result.metrics["splits"]["test"]


def test_config_rejects_an_unknown_source():
    from nbhelpers.config import ConfigError

    with pytest.raises(ConfigError, match="sources: unknown source 'reddit'"):
        ClipConfig.from_params("demo", sources="synthetic,reddit")
