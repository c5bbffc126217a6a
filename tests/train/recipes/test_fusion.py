"""Smoke and behaviour tests of the Hate-CLIPper fusion recipe on tiny synthetic shards."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nbhelpers.config import ConfigError
from nbhelpers.data.taxonomy import UNLABELLED
from nbhelpers.evaluation.tables import split_comparison_table, split_table
from nbhelpers.models.clip import TINY_VIT, create_clip
from nbhelpers.models.fusion import FusionHead
from nbhelpers.train.checkpoint import load_checkpoint
from nbhelpers.train.recipes.config import manifests
from nbhelpers.train.recipes.data import tensor_batches
from nbhelpers.train.recipes.fusion import (
    FusionConfig,
    build_model,
    init_prior_bias,
    load_trained,
    predict,
    run,
    run_fusions,
    training_positive_rate,
)
from nbhelpers.train.recipes.fusion_features import (
    FEATURE_CACHE_DIR,
    FeatureSplit,
    hateful_targets,
    split_features,
)
from nbhelpers.train.run_dir import latest_checkpoint
from tests.helpers import make_shards

CLIP_RUN = "tinyclip"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Tiny 64 px synthetic shards, and a "CLIP run" whose exported weights ``run:tinyclip`` names."""
    root = tmp_path_factory.mktemp("fusion")
    make_shards(root / "shards", train=96, val=32, test=32, unseen=32, train_shard=64, eval_shard=32)
    torch.manual_seed(0)
    clip, _, _, _ = create_clip(TINY_VIT)
    weights = root / "runs" / CLIP_RUN / "clip_weights.pt"
    weights.parent.mkdir(parents=True)
    torch.save(clip.state_dict(), weights)
    return root, clip.state_dict()


def params(root, **overrides):
    values = dict(
        runs_dir=str(root / "runs"), data_dir=str(root / "shards"), pretrained=f"run:{CLIP_RUN}",
        epochs=15, batch_size=16, lr=1e-2, dropout_map=0.0, dropout_fused=0.0, dropout_pre_output=0.0,
        progress=False,
    )  # fmt: skip
    values.update(overrides)
    return values


@pytest.fixture(scope="module")
def cross_run(workspace):
    root, _ = workspace
    return run(params(root, run_name="cross"))


def test_metrics_json_has_every_split_in_range(cross_run):
    metrics = json.loads((cross_run.run_dir / "metrics.json").read_text())
    assert (
        metrics["recipe"] == "fusion" and metrics["task"] == "binary" and metrics["modality"] == "multimodal"
    )
    assert metrics["method"] == "hateclipper_cross" and metrics["split"] == "test"
    assert set(metrics["splits"]) == {"val", "test", "unseen"}
    assert [metrics["splits"][s]["kind"] for s in ("val", "test", "unseen")] == ["seen", "seen", "unseen"]
    for values in metrics["splits"].values():
        assert 0.0 <= values["auroc"] <= 1.0 and 0.0 <= values["accuracy"] <= 1.0
        assert values["num_samples"] == 32
    assert metrics["auroc"] == metrics["splits"]["test"]["auroc"]
    assert metrics["num_samples"] == 96 and metrics["epochs"] == 15
    # cross head: two 64 -> 32 projections, 1024 -> 32 pre-output, 32 -> 1 output
    assert metrics["trainable_parameters"] == 2 * (64 * 32 + 32) + (1024 * 32 + 32) + (32 + 1)
    table = split_table(metrics)
    assert list(table.index) == ["val", "test", "unseen"]


def test_head_learns_beyond_the_base_rate(workspace, cross_run):
    root, _ = workspace
    epochs = cross_run.history["epochs"]
    assert len(epochs) == 15
    train = json.loads((root / "shards" / "synthetic" / "manifest.json").read_text())["splits"]["train"]
    p = train["class_counts"]["Hate"] / train["num_samples"]
    prior = -(p * np.log(p) + (1 - p) * np.log(1 - p))  # the BCE of a head that ignores its input
    assert epochs[-1]["loss"] < 0.85 * prior < epochs[0]["loss"]
    assert all(0.0 <= e["dev_auroc"] <= 1.0 for e in epochs)


def test_frozen_run_checkpoints_only_the_head_and_reloads(workspace, cross_run):
    root, clip_state = workspace
    model = cross_run.extra["model"]
    saved = load_checkpoint(latest_checkpoint(cross_run.run_dir))["model"]
    assert set(saved) == set(model.head.state_dict())
    # The backbone is exactly the exported CLIP, untouched by training.
    for key, value in model.backbone.model.state_dict().items():
        torch.testing.assert_close(value.cpu(), clip_state[key], rtol=0, atol=0)
    reloaded = load_trained(cross_run.run_dir).model
    features = split_features(
        FusionConfig.coerce(params(root, run_name="cross")),
        reloaded.backbone, manifests(FusionConfig.coerce(params(root))), "test",
        str(root / "runs" / CLIP_RUN / "clip_weights.pt"),
    )  # fmt: skip
    scores, labels = predict(reloaded.head, features)
    saved_predictions = np.load(cross_run.run_dir / "predictions_test.npz")
    np.testing.assert_allclose(scores, saved_predictions["scores"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(labels, saved_predictions["labels"])


def test_cached_features_equal_fresh_ones(workspace, cross_run):
    root, _ = workspace
    cached = sorted(p.name for p in (root / "runs" / FEATURE_CACHE_DIR).glob("*.pt"))
    assert [name.split("-")[0] for name in cached] == ["test", "train", "unseen", "val"]
    config = FusionConfig.coerce(params(root, feature_cache=False))
    model = cross_run.extra["model"]
    weights = str(root / "runs" / CLIP_RUN / "clip_weights.pt")
    fresh = split_features(config, model.backbone, manifests(config), "val", weights)
    from_cache = split_features(
        FusionConfig.coerce(params(root)), model.backbone, manifests(config), "val", weights
    )
    torch.testing.assert_close(from_cache.image, fresh.image)
    torch.testing.assert_close(from_cache.text, fresh.text)
    assert torch.equal(from_cache.target, fresh.target) and from_cache.keys == fresh.keys


def test_feature_batches_depend_only_on_seed_and_epoch():
    n = 10
    features = FeatureSplit(
        torch.randn(n, 4), torch.randn(n, 3), torch.arange(n) % 2, [str(i) for i in range(n)]
    )
    stream = tensor_batches(features.tensors(), batch_size=4, seed=3)

    def first(epoch, count):
        it = iter(stream(epoch))
        return [next(it)["image_features"] for _ in range(count)]

    one, again, other = first(1, 4), first(1, 4), first(2, 4)
    assert all(torch.equal(a, b) for a, b in zip(one, again))
    assert not all(torch.equal(a, b) for a, b in zip(one, other))
    # Two full batches per permutation (the last 2 samples dropped), each sample at most once in it.
    rows = {tuple(r.tolist()) for r in torch.cat(one[:2])}
    assert len(rows) == 8


def test_hateful_targets_keep_unlabelled():
    labels = torch.tensor([6, 0, UNLABELLED, 3])
    hateful = torch.tensor([1, 0, 0, 0])
    assert hateful_targets(labels, hateful).tolist() == [1, 0, UNLABELLED, 0]


def test_eval_splits_are_mapped_by_source():
    synthetic = FusionConfig.from_params("demo")
    assert synthetic.eval_split_list == ["val", "test", "unseen"] and synthetic.eval_plan.primary == "test"
    memes = FusionConfig.from_params("demo", sources="hateful_memes")
    assert memes.eval_plan.kinds == {"dev_seen": "seen", "dev_unseen": "unseen"}
    assert memes.eval_plan.primary == memes.eval_plan.dev == "dev_seen"
    explicit = FusionConfig.from_params("demo", sources="fakeddit", eval_splits="val,test")
    assert explicit.eval_split_list == ["val", "test"]
    with pytest.raises(ConfigError, match="eval_splits"):
        FusionConfig.from_params("demo", sources="fakeddit")
    with pytest.raises(ConfigError, match="eval_splits"):
        FusionConfig.from_params("demo", sources="synthetic,hateful_memes")


def test_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="pretrained"):
        FusionConfig.from_params("demo", backbone="hf:openai/clip-vit-base-patch32", pretrained="openai")
    with pytest.raises(ConfigError, match="dropout_fused"):
        FusionConfig.from_params("demo", dropout_fused=1.0)
    with pytest.raises(ConfigError, match="pos_weight"):
        FusionConfig.from_params("demo", pos_weight=0.0)
    with pytest.raises(ConfigError, match="fusion"):
        FusionConfig.from_params("demo", fusion="sum")
    assert FusionConfig.from_params("t4").sources == "hateful_memes"


def test_trainable_backbone_trains_end_to_end(workspace):
    root, clip_state = workspace
    result = run(params(root, run_name="end_to_end", trainable_backbone=True, epochs=1, lr=1e-3))
    saved = load_checkpoint(latest_checkpoint(result.run_dir))["model"]
    assert any(k.startswith("backbone.") for k in saved)
    moved = [
        k for k, v in result.extra["model"].backbone.model.state_dict().items()
        if not torch.equal(v.cpu(), clip_state[k])
    ]  # fmt: skip
    assert "visual.conv1.weight" in moved
    assert result.metrics["trainable_parameters"] > 3_000_000
    assert set(result.metrics["splits"]) == {"val", "test", "unseen"}


def test_run_fusions_reuses_cached_features(workspace, cross_run):
    root, _ = workspace
    cache = root / "runs" / FEATURE_CACHE_DIR
    before = sorted(cache.glob("*.pt"))
    config = FusionConfig.coerce(params(root, run_name="cross", epochs=2))
    results = run_fusions(config, ("concat", "cross"), done={"cross": cross_run})
    assert list(results) == ["concat", "cross"] and results["cross"] is cross_run
    concat = results["concat"].metrics
    assert results["concat"].run_dir.name == "cross_concat" and concat["method"] == "hateclipper_concat"
    assert concat["trainable_parameters"] == 2 * (64 * 32 + 32) + (64 * 32 + 32) + (32 + 1)
    assert sorted(cache.glob("*.pt")) == before  # nothing extracted again
    table = split_comparison_table(results)
    assert len(table) == 6 and set(table["run"]) == {"concat", "cross"}


def test_head_init_is_seeded_whatever_ran_before(workspace):
    root, _ = workspace
    config = FusionConfig.coerce(params(root))
    weights = str(root / "runs" / CLIP_RUN / "clip_weights.pt")
    torch.rand(3)
    first = build_model(config, weights).head.state_dict()
    torch.rand(1000)  # e.g. a CLIP trained first in the same process
    second = build_model(config, weights).head.state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)


@pytest.mark.parametrize(
    ("rate", "pos_weight", "expected"), [(0.2, None, 0.2), (0.2, 4.0, 0.5), (0.9, 1.0, 0.9)]
)
def test_prior_bias_makes_the_untrained_head_predict_the_base_rate(rate, pos_weight, expected):
    head = FusionHead(8, 8, fusion="cross", map_dim=4, pre_output_layers=1)
    torch.nn.init.zeros_(head.output.weight)  # isolate the bias
    init_prior_bias(head, rate, pos_weight)
    probability = torch.sigmoid(head(torch.randn(5, 8), torch.randn(5, 8)))
    torch.testing.assert_close(probability, torch.full((5,), expected))


def test_training_positive_rate_reads_the_manifest(workspace):
    root, _ = workspace
    found = manifests(FusionConfig.coerce(params(root)))
    train = found[0]["splits"]["train"]
    assert training_positive_rate(found, "train") == train["class_counts"]["Hate"] / 96
