"""The CASS-MM recipe: three towers pre-trained together, then a classifier on frozen features."""

import json

import numpy as np
import pytest
import torch

from nbhelpers.train.recipes.cass_mm import load_trained, run

from .conftest import common


@pytest.fixture(scope="module")
def result(tiny_shards, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cass_mm")
    return run(common(tiny_shards, tmp, epochs=2, head_epochs=3, head_heads=4, eval_splits="test,unseen"))


def test_pretraining_logs_each_loss_term_and_the_total_is_their_sum(result):
    for epoch in result.history["epochs"]:
        assert {"cass", "clip_cnn", "clip_vit"} <= epoch.keys()
        assert np.isclose(
            epoch["loss"], epoch["cass"] + (epoch["clip_cnn"] + epoch["clip_vit"]) / 2, rtol=1e-4
        )
    assert len(result.extra["head_history"]["epochs"]) == 3


def test_classifier_stage_leaves_the_towers_frozen_and_writes_metrics(result):
    saved = json.loads((result.run_dir / "metrics.json").read_text())
    assert (
        saved["recipe"] == "cass_mm"
        and saved["notebook"] == "05_train_cass_mm"
        and saved["method"] == "cass_mm"
        and saved["modality"] == "multimodal"
    )
    assert set(saved["splits"]) == {"test", "unseen"} and 0 <= saved["top1"] <= saved["top2"] <= 1
    predictions = np.load(result.run_dir / "predictions_test.npz")
    assert predictions["probs"].shape == (42, 7)
    trained = load_trained(result.run_dir)
    model, head = trained.model, trained.parts["head"]
    for name, tensor in result.extra["model"].state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name
    for name, tensor in result.extra["head"].state_dict().items():
        assert torch.equal(head.state_dict()[name], tensor), name
