"""The CLIP classifier recipe in both modes: what trains, what stays frozen, what it writes."""

import json

import numpy as np
import pytest
import torch

from nbhelpers.evaluation.tables import clip_modes_table, frozen_weights_report
from nbhelpers.models.clip import TINY_VIT, create_clip
from nbhelpers.train.checkpoint import load_checkpoint
from nbhelpers.train.recipes.clip_classifier import load_trained, run
from nbhelpers.train.run_dir import latest_checkpoint

from .conftest import common


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    torch.manual_seed(0)
    clip = create_clip(TINY_VIT)[0]
    path = tmp_path_factory.mktemp("weights") / "clip.pt"
    torch.save(clip.state_dict(), path)
    return path, clip.state_dict()


@pytest.fixture(scope="module")
def runs(tiny_shards, pretrained, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cc")
    return {
        mode: run(
            common(
                tiny_shards,
                tmp,
                mode=mode,
                pretrained=str(pretrained[0]),
                epochs=2,
                head_heads=4,
                eval_splits="test,unseen",
            )
        )
        for mode in ("lora", "baseline")
    }


def test_lora_trains_adapters_and_head_only_and_base_weights_stay_bit_identical(runs, pretrained):
    model = runs["lora"].extra["model"]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("head.") for n in trainable)
    base = {k.replace(".base_layer", ""): v for k, v in model.clip.state_dict().items() if "lora_" not in k}
    assert all(torch.equal(base[k], v) for k, v in pretrained[1].items())
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)  # adapters moved off their zero init
    assert frozen_weights_report(runs["lora"]).startswith(
        f"{len(pretrained[1])} of {len(pretrained[1])} pretrained tensors"
    )


def test_baseline_trains_every_weight(runs, pretrained):
    model = runs["baseline"].extra["model"]
    assert all(p.requires_grad for p in model.parameters())
    changed = sum(not torch.equal(model.clip.state_dict()[k], v) for k, v in pretrained[1].items())
    assert changed > len(pretrained[1]) // 2
    assert (
        runs["baseline"].metrics["trainable_parameters"] > 10 * runs["lora"].metrics["trainable_parameters"]
    )


def test_metrics_predictions_and_checkpoint_agree(runs):
    for mode, result in runs.items():
        saved = json.loads((result.run_dir / "metrics.json").read_text())
        assert (
            saved["recipe"] == "clip_classifier"
            and saved["method"] == f"clip_{mode}"
            and saved["task"] == "7class"
            and saved["split"] == "test"
        )
        assert 0 <= saved["top1"] <= saved["top2"] <= saved["top3"] <= 1
        predictions = np.load(result.run_dir / "predictions_test.npz")
        assert np.isclose((predictions["probs"].argmax(1) == predictions["labels"]).mean(), saved["top1"])
        state = load_checkpoint(latest_checkpoint(result.run_dir))
        assert state["epoch"] == 2
        reloaded = load_trained(result.run_dir).model
        for name, tensor in result.extra["model"].state_dict().items():
            assert torch.equal(reloaded.state_dict()[name], tensor), name
    table = clip_modes_table(runs)
    assert list(table.index) == ["CLIP lora", "CLIP baseline"] and list(table.columns[:2]) == [
        "Top-1",
        "Top-2",
    ]
