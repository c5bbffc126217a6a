"""Notebook 08's driver: its config, which runs it lists, and loading a run's explainer (never training)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from nbhelpers.config import ConfigError
from nbhelpers.evaluation.attention import ANY_RECIPE, AttentionConfig, explainable_runs, load_explainer
from nbhelpers.train.run_dir import RunNotFoundError


def test_attention_config_validates():
    config = AttentionConfig.from_params("demo")
    assert (config.run_name, config.recipe, config.mass) == ("", "clip_classifier", 0.6)
    assert (config.cnn_recipe, config.ssl_recipe) == ("cass_mm", "ssl")
    with pytest.raises(ConfigError, match="mass"):
        AttentionConfig.from_params("demo", mass=1.5)
    with pytest.raises(ConfigError, match="sample"):
        AttentionConfig.from_params("demo", sample=40, num_samples=32)
    with pytest.raises(ConfigError, match="^recipe: 'clip_lora' is not allowed; allowed: unimodal, clip"):
        AttentionConfig.from_params("demo", recipe="clip_lora")
    with pytest.raises(ConfigError, match="train_missing: unknown parameter"):
        AttentionConfig.from_params("demo", train_missing=True)
    with pytest.raises(ConfigError, match="cnn_run_name: '../cass_mm' is not a plain run name"):
        AttentionConfig.from_params("demo", cnn_run_name="../cass_mm")


def test_an_empty_run_name_is_the_presets_run_and_is_never_trained(tmp_path):
    from tests.helpers import make_shards

    make_shards(tmp_path / "shards", train=14, val=7, test=7, unseen=7, train_shard=14, eval_shard=7)
    config = AttentionConfig.from_params(
        "demo", runs_dir=str(tmp_path / "runs"), data_dir=str(tmp_path / "shards")
    )
    # 05's run of the demo preset: named by its fingerprint, and missing here
    folder = config.run_dir("", "cass_mm")
    assert folder.parent == tmp_path / "runs" and folder.name.startswith("cass_mm-")
    assert config.run_dir("mine", "cass_mm") == tmp_path / "runs" / "mine"
    with pytest.raises(RunNotFoundError, match="05_train_cass_mm"):
        load_explainer(folder, recipe="cass_mm")
    # 06's demo run starts from 03's CLIP: without it, the error names notebook 03
    with pytest.raises(RunNotFoundError, match="03_train_clip"):
        config.run_dir("", "clip_classifier")
    assert not (tmp_path / "runs").exists()


def test_a_missing_run_names_the_notebook_that_makes_it_and_nothing_is_written(tmp_path):
    runs = tmp_path / "runs"
    with pytest.raises(RunNotFoundError) as missing:
        load_explainer(runs / "clip_classifier_lora", recipe="clip_classifier")
    assert missing.value.path == runs / "clip_classifier_lora"
    assert str(missing.value) == (
        f"run {runs / 'clip_classifier_lora'} does not exist; loading never trains it. Make it with notebook "
        "06_train_clip_lora_classifier, or: python -m nbhelpers.train clip_classifier ..."
    )
    with pytest.raises(RunNotFoundError, match="Make it with the notebook of 02-07") as anything:
        load_explainer(runs / "my_run")
    assert anything.value.how == ANY_RECIPE
    (runs / "unfinished").mkdir(parents=True)
    with pytest.raises(RunNotFoundError, match="notebook 05_train_cass_mm") as unfinished:
        load_explainer(runs / "unfinished", recipe="cass_mm")
    assert unfinished.value.path == runs / "unfinished" / "metrics.json"
    assert [p.name for p in tmp_path.rglob("*")] == ["runs", "unfinished"]


def test_a_run_without_its_checkpoint_is_not_trained(tiny_runs, tmp_path):
    run_dir = tmp_path / "cass_mm"
    shutil.copytree(tiny_runs / "runs" / "cass_mm", run_dir)
    shutil.rmtree(run_dir / "checkpoints")
    before = sorted(p for p in tmp_path.rglob("*"))
    with pytest.raises(
        RunNotFoundError, match=r"^checkpoint of run .*cass_mm does not exist.*05_train_cass_mm"
    ):
        load_explainer(run_dir)
    assert sorted(p for p in tmp_path.rglob("*")) == before


def test_explainable_runs_are_the_finished_runs_with_something_to_map(tiny_runs):
    # Not tinyclip (weights only, no metrics.json) nor the late fusion (no model of its own).
    assert explainable_runs(tiny_runs / "runs") == [
        "cass_mm", "clip", "clip_classifier_lora", "fusion_cross", "ssl_dino_vit_test", "unimodal_image",
        "unimodal_text",
    ]  # fmt: skip


def _metrics_only_run(runs_dir: Path, name: str, **metrics) -> Path:
    """A run folder holding only its ``metrics.json``: all :func:`explainable_runs` reads to list it."""
    run_dir = runs_dir / name
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.json").write_text(json.dumps({"split": "test", **metrics}))
    return run_dir


def test_explainable_runs_skip_a_run_whose_metrics_json_is_unreadable(tmp_path):
    _metrics_only_run(
        tmp_path, "clip_classifier_lora", recipe="clip_classifier", task="7class", modality="multimodal"
    )
    _metrics_only_run(tmp_path, "unimodal_text", recipe="unimodal", task="7class", modality="text")
    late = _metrics_only_run(  # no model of its own
        tmp_path, "unimodal_late_fusion", recipe="unimodal", task="7class", modality="late_fusion"
    )
    ssl_cnn = _metrics_only_run(tmp_path, "ssl_dino_resnet18", recipe="ssl", task="ssl")
    (ssl_cnn / "config.json").write_text(json.dumps({"method": "dino", "backbone": "resnet18"}))  # no ViT
    _metrics_only_run(tmp_path, "old", notebook="06_train_clip_lora_classifier", task="7class")  # no recipe
    corrupt = _metrics_only_run(tmp_path, "corrupt", recipe="clip_classifier", task="7class")
    (corrupt / "metrics.json").write_text('{"recipe": "clip_classi')
    assert explainable_runs(tmp_path) == ["clip_classifier_lora", "unimodal_text"]
    with pytest.raises(TypeError, match="metrics.json is unreadable"):
        load_explainer(corrupt)
    with pytest.raises(TypeError, match="metrics.json lacks recipe"):
        load_explainer(tmp_path / "old")
    with pytest.raises(TypeError, match="late-fusion run has no model of its own"):
        load_explainer(late)
    with pytest.raises(TypeError, match="the dino encoder is a resnet18, not a ViT"):
        load_explainer(ssl_cnn)
