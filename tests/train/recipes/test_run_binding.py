"""Runs bound to their config, end to end through the recipes: the cases a new user hits after the demo."""

import hashlib
import json
import math

import pytest

from nbhelpers.config import ConfigError
from nbhelpers.fileio import sha256_file
from nbhelpers.train.identity import RUN_RECORD, RunMismatchError
from nbhelpers.train.recipes import cass_mm, clip
from nbhelpers.train.recipes.config import manifests
from nbhelpers.train.run_dir import RunNotFoundError, latest_checkpoint

from .conftest import common


def tree(folder):
    """Every file under ``folder`` with the SHA-256 of its bytes."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def cass(root, tmp, **overrides):
    return common(root, tmp, head_heads=4, head_epochs=2, steps_per_epoch=2, **overrides)


def test_another_epoch_count_trains_a_new_run_whose_head_sees_its_own_features(tiny_shards, tmp_path):
    """After a run, the same recipe with ``epochs`` changed (papermill ``-p epochs 2``) trains a new run
    from scratch; the first run's files stay byte-identical and its head is never reused."""
    first = cass_mm.run(cass(tiny_shards, tmp_path, epochs=1))
    before = tree(first.run_dir)
    second = cass_mm.run(cass(tiny_shards, tmp_path, epochs=2))

    assert first.run_dir.parent == second.run_dir.parent == tmp_path / "runs"
    assert first.run_dir.name.startswith("cass_mm-") and second.run_dir.name.startswith("cass_mm-")
    assert second.run_dir != first.run_dir
    assert tree(first.run_dir) == before
    assert [e["epoch"] for e in second.history["epochs"]] == [1, 2]  # from scratch, not resumed
    assert len(second.extra["head_history"]["epochs"]) == 2

    # The head was trained on the second run's towers: its stage is bound to their checkpoint.
    towers = latest_checkpoint(second.run_dir)
    stage = json.loads((second.run_dir / "classifier" / RUN_RECORD).read_text())
    assert stage["inputs"]["towers"]["sha256"] == sha256_file(towers)
    first_head = latest_checkpoint(first.run_dir / "classifier")
    second_head = latest_checkpoint(second.run_dir / "classifier")
    assert sha256_file(first_head) != sha256_file(second_head)

    # metrics.json names the weights its figures come from.
    metrics = json.loads((second.run_dir / "metrics.json").read_text())
    assert metrics["checkpoint"] == {"file": "checkpoints/epoch_0002.pt", "sha256": sha256_file(towers)}
    assert metrics["head_checkpoint"]["sha256"] == sha256_file(second_head)
    assert metrics["head_checkpoint"]["file"] == f"classifier/checkpoints/{second_head.name}"
    assert metrics["fingerprint"] == json.loads((second.run_dir / RUN_RECORD).read_text())["fingerprint"]

    # The same config again loads the finished run: nothing is trained, the weights are untouched.
    again = cass_mm.run(cass(tiny_shards, tmp_path, epochs=2))
    assert again.run_dir == second.run_dir and again.history == second.history
    assert sha256_file(latest_checkpoint(second.run_dir / "classifier")) == sha256_file(second_head)


def test_an_explicit_run_name_with_another_config_is_refused_before_any_file_is_touched(
    tiny_shards, tmp_path
):
    params = common(tiny_shards, tmp_path, run_name="mine", epochs=1, steps_per_epoch=2, eval_splits="test")
    made = clip.run(params)
    before = tree(made.run_dir)
    with pytest.raises(RunMismatchError) as caught:
        clip.run({**params, "model": "memelab-tiny-vit-other", "epochs": 2})
    message = str(caught.value)
    assert "epochs: 1 -> 2" in message and "model: 'memelab-tiny-vit' -> 'memelab-tiny-vit-other'" in message
    assert "choose a new run_name" in message and "Nothing was written" in message
    assert tree(made.run_dir) == before
    # The old run still loads.
    assert clip.run(params).metrics["splits"] == made.metrics["splits"]


def test_run_clip_names_the_presets_run_and_loading_never_trains_it(tiny_shards, tmp_path):
    runs = tmp_path / "runs"
    with pytest.raises(RunNotFoundError) as caught:
        clip.resolve_pretrained("run:clip", runs_dir=runs, data_dir=tiny_shards, preset="demo")
    message = str(caught.value)
    assert "notebook 03_train_clip" in message and "python -m nbhelpers.train clip preset=demo" in message
    assert not runs.exists()  # nothing was trained, nothing written
    with pytest.raises(RunNotFoundError, match="run_name=mine"):
        clip.resolve_pretrained("run:mine", runs_dir=runs, data_dir=tiny_shards)
    # run:clip is the folder the preset's own config binds to.
    default = clip.ClipConfig.from_params("demo", runs_dir=str(runs), data_dir=str(tiny_shards))
    expected = default.planned_run_dir(manifests(default)) / clip.WEIGHTS_FILE
    assert expected.parent.name.startswith("clip-")
    assert clip.run_weights_path("run:clip", runs, data_dir=tiny_shards) == expected


def test_a_lookup_never_builds_shards(tmp_path):
    config = clip.ClipConfig.from_params("demo", data_dir=str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="no shards of 'synthetic'.*notebook 01_prepare_webdataset"):
        manifests(config)
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"sources": "hateful_memes"},
            "eval_splits: 'test' is not a split of 'hateful_memes'; it has: train, dev_seen",
        ),
        ({"eval_splits": "nope"}, "eval_splits: 'nope' is not a split of 'synthetic'"),
        ({"train_split": "training"}, "train_split: 'training' is not a split of 'synthetic'"),
        ({"lr": math.nan}, "lr: must be a finite number, got nan"),
        ({"lr": math.inf}, "lr: must be a finite number"),
        ({"lr": 0.0}, "lr: must be > 0.0"),
        ({"max_grad_norm": 0}, "max_grad_norm: must be > 0.0"),
        ({"weight_decay": -1e-4}, "weight_decay: must be >= 0.0"),
        ({"run_name": "../x"}, "run_name: '../x' is not a plain run name"),
        ({"run_name": "/tmp/elsewhere"}, "run_name: '/tmp/elsewhere' is not a plain run name"),
        ({"epoch": 3}, "epoch: unknown parameter for CassMMConfig; did you mean epochs"),
    ],
)
def test_bad_values_stop_at_the_config_naming_the_parameter(params, message, tmp_path):
    with pytest.raises(ConfigError) as caught:
        cass_mm.run({"runs_dir": str(tmp_path / "runs"), "data_dir": str(tmp_path / "no-data"), **params})
    assert message in str(caught.value)
    assert not (tmp_path / "runs").exists()


def test_splits_are_checked_against_the_shards_before_training(tiny_shards, tmp_path):
    # unseen is a split of the synthetic source, but these shards were written without it
    config = clip.ClipConfig.from_params("demo", data_dir=str(tiny_shards), eval_splits="test")
    found = manifests(config)
    found[0]["splits"].pop("unseen")
    with pytest.raises(
        ConfigError, match="eval_splits: 'unseen' is not a split of 'synthetic'; it has: train, val, test"
    ):
        config.eval_splits = "unseen"
        config.check_splits(["synthetic"], {"synthetic": list(found[0]["splits"])})


def test_an_image_size_the_vit_patch_does_not_divide_stops_before_data(tmp_path):
    with pytest.raises(ConfigError, match="image_size: 30 is not a multiple of the ViT's patch size 8"):
        clip.run({"image_size": 30, "runs_dir": str(tmp_path / "runs"), "data_dir": str(tmp_path)})
