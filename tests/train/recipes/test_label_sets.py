"""Every classifier recipe on shards of a label set of the user's own: three classes, ``cat``, ``dog``,
``bird`` (:data:`tests.helpers.THREE_CLASSES`). Heads with three outputs, predictions with three columns,
``metrics.json`` naming the classes; the seven-class runs are the other recipe tests' business."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nbhelpers.config import ConfigError
from nbhelpers.data.taxonomy import SEVEN_CLASSES, LabelSet
from nbhelpers.evaluation.tables import unimodal_table
from nbhelpers.models.fusion import FusionHead
from nbhelpers.train.recipes import get_recipe
from nbhelpers.train.recipes.cass_mm import load_trained as load_cass_mm
from nbhelpers.train.recipes.clip import CLASS_PROMPTS, class_prompts
from nbhelpers.train.recipes.clip_classifier import load_trained as load_clip_classifier
from nbhelpers.train.recipes.config import manifests
from nbhelpers.train.recipes.data import train_data
from nbhelpers.train.recipes.fusion import (
    FusionConfig,
    init_class_prior_bias,
    training_class_rates,
)
from nbhelpers.train.recipes.fusion import load_trained as load_fusion
from nbhelpers.train.recipes.ssl import SSLConfig, load_shard_images, probe_label_of
from nbhelpers.train.recipes.unimodal import UnimodalConfig
from nbhelpers.train.recipes.unimodal import load_trained as load_unimodal
from tests.conftest import LABEL_RUNS
from tests.helpers import THREE_CLASSES, make_label_shards

THREE = ["cat", "dog", "bird"]


def metrics_of(root, run: str) -> dict:
    return json.loads((root / "runs" / run / "metrics.json").read_text())


@pytest.mark.parametrize("run", LABEL_RUNS)
def test_every_classifier_predicts_the_three_classes(tiny_label_runs, run):
    metrics = metrics_of(tiny_label_runs, run)
    assert (metrics["task"], metrics["classes"]) == ("multiclass", THREE)
    with np.load(tiny_label_runs / "runs" / run / "predictions_test.npz") as saved:
        probs, labels = saved["probs"], saved["labels"]
    assert probs.shape == (12, 3) and labels.tolist() == [0, 1, 2] * 4
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    for split in ("test", "val"):
        figures = metrics["splits"][split]
        assert figures["num_samples"] == 12 and figures["top3"] == 1.0  # top-3 of three classes
        assert 0.0 <= figures["top1"] <= figures["top2"] <= 1.0 and "top4" not in figures
    ranked = np.argsort(-probs, axis=1, kind="stable")
    assert metrics["splits"]["test"]["top1"] == pytest.approx(np.mean(ranked[:, 0] == labels), abs=1e-12)


def test_unimodal_heads_chance_and_late_fusion_follow_the_three_classes(tiny_label_runs):
    runs = tiny_label_runs / "runs"
    text, image = load_unimodal(runs / "unimodal_text"), load_unimodal(runs / "unimodal_image")
    assert text.class_names == image.class_names == tuple(THREE)
    assert text.model.model.config.id2label == {0: "cat", 1: "dog", 2: "bird"}
    assert text.model.num_labels == 3 and image.model.net.fc.out_features == 3
    assert metrics_of(tiny_label_runs, "unimodal_image")["chance_top1"] == 1 / 3
    table = unimodal_table({kind: runs / f"unimodal_{kind}" for kind in ("text", "image", "late_fusion")})
    assert table["Chance top-1"].tolist() == [1 / 3] * 3 and table["Chance top-2"].tolist() == [2 / 3] * 3
    with (
        np.load(runs / "unimodal_text" / "predictions_test.npz") as t,
        np.load(runs / "unimodal_image" / "predictions_test.npz") as i,
        np.load(runs / "unimodal_late_fusion" / "predictions_test.npz") as fused,
    ):
        np.testing.assert_allclose(fused["probs"], (t["probs"] + i["probs"]) / 2, atol=1e-7)


def test_cass_mm_and_clip_classifier_heads_have_three_outputs(tiny_label_runs):
    runs = tiny_label_runs / "runs"
    cass = load_cass_mm(runs / "cass_mm")
    assert cass.class_names == tuple(THREE) and cass.parts["head"].head.num_classes == 3
    lora = load_clip_classifier(runs / "clip_classifier_lora")
    assert lora.class_names == tuple(THREE) and lora.model.head.num_classes == 3
    assert metrics_of(tiny_label_runs, "cass_mm")["head_checkpoint"] is not None


def test_fusion_trains_its_head_over_the_three_classes(tiny_label_runs):
    metrics = metrics_of(tiny_label_runs, "fusion_cross")
    assert metrics["method"] == "hateclipper_cross" and metrics["split"] == "test"
    # cross head: two 64 -> 32 projections, 1024 -> 32 pre-output, 32 -> 3 outputs
    assert metrics["trainable_parameters"] == 2 * (64 * 32 + 32) + (1024 * 32 + 32) + (32 * 3 + 3)
    for split, kind in (("test", "seen"), ("val", "seen")):
        figures = metrics["splits"][split]
        assert figures["kind"] == kind and figures["accuracy"] == figures["top1"]
        assert 0.0 <= figures["auroc"] <= 1.0 and "positive_rate" not in figures
    assert (metrics["auroc"], metrics["top1"]) == (
        metrics["splits"]["test"]["auroc"],
        metrics["splits"]["test"]["top1"],
    )
    trained = load_fusion(tiny_label_runs / "runs" / "fusion_cross")
    assert trained.class_names == tuple(THREE) and trained.model.head.num_outputs == 3


def test_fusion_prior_bias_is_the_smoothed_log_class_rates_and_pos_weight_is_refused(tiny_label_runs):
    config = FusionConfig.coerce(
        dict(
            data_dir=str(tiny_label_runs / "shards"),
            runs_dir=str(tiny_label_runs / "runs"),
            eval_splits="test",
        )
    )
    rates = training_class_rates(manifests(config), "train", THREE)
    assert rates == [11 / 33] * 3  # (10 + 1) / (30 + 3) each
    head = FusionHead(8, 8, map_dim=4, num_outputs=3)
    init_class_prior_bias(head, [0.5, 0.25, 0.25])
    torch.testing.assert_close(head.output.bias, torch.log(torch.tensor([0.5, 0.25, 0.25])))
    with pytest.raises(ValueError, match="need 3 rates"):
        init_class_prior_bias(head, [1.0])
    with pytest.raises(ConfigError, match="^pos_weight: weighs the hateful term"):
        get_recipe("fusion").run(dict(config.to_dict(), pos_weight=2.0, run_name="weighted"))
    assert not (tiny_label_runs / "runs" / "weighted").exists()


def test_clip_trains_on_the_valid_pair_classes_and_prompts_every_class(tmp_path):
    make_label_shards(tmp_path / "shards", train=24, test=12)
    assert class_prompts(THREE_CLASSES) == [["a meme about cat"], ["a meme about dog"], ["a meme about bird"]]
    assert class_prompts(SEVEN_CLASSES) == list(CLASS_PROMPTS.values())
    params = dict(data_dir=str(tmp_path / "shards"), runs_dir=str(tmp_path / "runs"), progress=False)
    result = get_recipe("clip").run(
        dict(params, run_name="clip", batch_size=8, epochs=1, steps_per_epoch=1, eval_splits="test")
    )
    # cat and bird are the valid pairs: 16 of the 24 training samples, and 8 of the 12 test pairs.
    assert result.metrics["num_samples"] == 16
    assert result.metrics["splits"]["test"]["num_pairs"] == 8
    assert result.metrics["splits"]["test"]["zero_shot_target"] == "3 classes"
    # Streamed, the same selection counts the valid-pair classes by their names in the manifest.
    config = UnimodalConfig.coerce(dict(params, in_memory=False))
    assert train_data(config, manifests(config), 32, labels=[0, 2]).num_samples == 16
    no_pairs = LabelSet.from_names(THREE, valid_pair_names=())
    make_label_shards(tmp_path / "nopairs", no_pairs, train=6, test=3)
    with pytest.raises(ConfigError, match="^valid_only: the shards' classes"):
        get_recipe("clip").run(dict(params, data_dir=str(tmp_path / "nopairs"), eval_splits="test"))


def test_ssl_probes_the_shards_classes_by_their_names(tmp_path):
    found = [make_label_shards(tmp_path / "shards", train=6)]
    data = load_shard_images(found, "train", 16)
    assert list(data.labels) == ["classes"] and data.class_names == {"classes": tuple(THREE)}
    assert data.labels["classes"].tolist() == [0, 1, 2, 0, 1, 2]
    config = SSLConfig.coerce(dict(data_dir=str(tmp_path / "shards"), runs_dir=str(tmp_path / "runs")))
    assert config.probe_label == "auto" and probe_label_of(config, data) == "classes"
    with pytest.raises(ConfigError, match="^probe_label: '7class' is not recorded by this data"):
        probe_label_of(SSLConfig.coerce({**config.to_dict(), "probe_label": "7class"}), data)


def test_the_label_set_is_part_of_a_runs_identity(tmp_path):
    """The same records under other classes (or other valid pairs) are other data: another fingerprint."""
    renamed = LabelSet.from_names(("cat", "dog", "fish"), valid_pair_names=("cat", "fish"))
    pairs = LabelSet.from_names(THREE, valid_pair_names=("cat",))
    prints = []
    for name, labels in (
        ("three", THREE_CLASSES),
        ("renamed", renamed),
        ("pairs", pairs),
        ("again", THREE_CLASSES),
    ):
        make_label_shards(tmp_path / name, labels, train=6)
        config = UnimodalConfig.coerce(
            dict(data_dir=str(tmp_path / name), eval_splits="train", train_split="train")
        )
        prints.append(config.identity(manifests(config)).fingerprint)
        assert config.label_set() == labels
    assert len(set(prints[:3])) == 3 and prints[3] == prints[0]
