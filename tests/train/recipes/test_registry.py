"""The recipe registry: every recipe behind one interface, loading real tiny runs and never training."""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from nbhelpers.data.transforms import CLIP_MEAN, CLIP_STD
from nbhelpers.models.cass_mm import CASSMM
from nbhelpers.models.fusion import HatefulMemesClassifier
from nbhelpers.models.heads import CLIPClassifier
from nbhelpers.models.ssl import IMAGENET_MEAN, IMAGENET_STD
from nbhelpers.models.unimodal import ImageClassifier, TextClassifier
from nbhelpers.train.checkpoint import load_checkpoint
from nbhelpers.train.recipes import RECIPE_MODULES, RECIPES, TrainedRun, get_recipe
from nbhelpers.train.recipes.cass_mm import CLASSIFIER_DIR
from nbhelpers.train.recipes.clip_classifier import ClipClassifierConfig
from nbhelpers.train.recipes.fusion import FusionConfig
from nbhelpers.train.run_dir import RunNotFoundError, latest_checkpoint
from nbhelpers.train.ssl_methods.dino import DINOModel

REPO = Path(__file__).resolve().parents[3]
NAMES = ["unimodal", "clip", "ssl", "cass_mm", "clip_classifier", "fusion"]


def test_every_recipe_is_registered_in_the_notebooks_order():
    assert list(RECIPES) == list(RECIPE_MODULES) == NAMES and len(RECIPES) == 6
    for number, (name, recipe) in enumerate(RECIPES.items(), start=2):
        module = importlib.import_module(f"nbhelpers.train.recipes.{name}")
        assert recipe is module.RECIPE and recipe.name == name == recipe.config_class.RECIPE
        assert recipe.notebook.startswith(f"0{number}_")
        assert (recipe.run, recipe.load_trained, recipe.display_name) == (
            module.run, module.load_trained, module.display_name
        )  # fmt: skip
        assert recipe.how == f"notebook {recipe.notebook}, or: python -m nbhelpers.train {name} ..."
        assert dataclasses.is_dataclass(recipe) and type(recipe).__dataclass_params__.frozen
    assert [name for name, recipe in RECIPES.items() if recipe.predict_run is None] == ["clip", "ssl"]
    # Every classifier scores samples in memory (what nbhelpers.predict calls) with its own module's function.
    assert [name for name, recipe in RECIPES.items() if recipe.predict_split is None] == ["clip", "ssl"]
    for name in ("unimodal", "cass_mm", "clip_classifier", "fusion"):
        module = importlib.import_module(f"nbhelpers.train.recipes.{name}")
        assert RECIPES[name].predict_split is module.predict_split
    assert get_recipe("cass_mm").notebook == "05_train_cass_mm"


def test_get_recipe_names_the_known_recipes():
    listed = "unimodal, clip, ssl, cass_mm, clip_classifier, fusion"
    for bad in ("nope", "base", "registry", None):
        with pytest.raises(ValueError, match=f"^unknown recipe {bad!r}; available recipes: {listed}$"):
            get_recipe(bad)
    with pytest.raises(KeyError):
        RECIPES["base"]


def test_importing_the_package_imports_no_recipe():
    code = "import sys, nbhelpers.train.recipes as r; print(sorted(m for m in sys.modules if m.startswith(r.__name__)))"
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    # the registry and the names it is built from (data only): no recipe, no shared recipe code
    assert proc.stdout.split() == [
        "['nbhelpers.train.recipes',",
        "'nbhelpers.train.recipes.names',",
        "'nbhelpers.train.recipes.registry']",
    ]


#: run -> (recipe, model class, parts, image size, normalisation)
LOADED = {
    "unimodal_image": ("unimodal", ImageClassifier, {"cnn"}, 32, IMAGENET_MEAN),
    "unimodal_text": ("unimodal", TextClassifier, {"encoder"}, None, None),
    "clip": ("clip", None, {"clip", "image_tower"}, 64, CLIP_MEAN),
    "ssl_dino_vit_test": ("ssl", DINOModel, {"teacher"}, 16, IMAGENET_MEAN),
    "cass_mm": ("cass_mm", CASSMM, {"towers", "head", "clip", "image_tower", "cnn"}, 64, CLIP_MEAN),
    "clip_classifier_lora": ("clip_classifier", CLIPClassifier, {"clip", "image_tower", "head"}, 64, CLIP_MEAN),
    "fusion_cross": ("fusion", HatefulMemesClassifier, {"backbone", "head", "clip", "image_tower"}, 64, CLIP_MEAN),
}  # fmt: skip


def _assert_same_weights(module: torch.nn.Module, saved: dict[str, torch.Tensor]) -> None:
    state = module.state_dict()
    assert set(state) == set(saved)
    for key, value in saved.items():
        assert torch.equal(state[key], value), key


@pytest.mark.parametrize("run", list(LOADED))
def test_load_trained_returns_the_runs_weights_as_a_trained_run(tiny_runs, run):
    name, model_class, parts, size, mean = LOADED[run]
    run_dir = tiny_runs / "runs" / run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["recipe"] == name
    recipe = get_recipe(metrics["recipe"])
    trained = recipe.load_trained(run_dir)
    assert isinstance(trained, TrainedRun) and (trained.recipe, trained.run_dir) == (name, run_dir)
    assert isinstance(trained.config, recipe.config_class)
    assert model_class is None or type(trained.model) is model_class
    assert set(trained.parts) == parts and not trained.model.training
    assert (trained.image_size, trained.mean) == (size, mean)
    assert trained.std == {IMAGENET_MEAN: IMAGENET_STD, CLIP_MEAN: CLIP_STD, None: None}[mean]
    if name == "clip":
        _assert_same_weights(trained.model, torch.load(run_dir / "clip_weights.pt", weights_only=True))
    elif name == "fusion":  # a frozen backbone: the checkpoint holds the head only
        _assert_same_weights(trained.parts["head"], load_checkpoint(latest_checkpoint(run_dir))["model"])
    else:
        _assert_same_weights(trained.model, load_checkpoint(latest_checkpoint(run_dir))["model"])
    if name == "cass_mm":
        head = load_checkpoint(latest_checkpoint(run_dir / CLASSIFIER_DIR))["model"]
        _assert_same_weights(trained.parts["head"], head)
    if name in ("clip", "clip_classifier", "cass_mm"):
        assert trained.tokenizer is not None and trained.parts["image_tower"] is trained.parts["clip"].visual


def test_the_late_fusion_run_has_no_weights_to_load(tiny_runs):
    with pytest.raises(ValueError, match="late-fusion run: it has no weights"):
        get_recipe("unimodal").load_trained(tiny_runs / "runs" / "unimodal_late_fusion")


def test_the_config_of_a_run_rebuilds_without_its_pretrained_weights(tiny_runs):
    saved = json.loads((tiny_runs / "runs" / "clip_classifier_lora" / "config.json").read_text())
    assert saved["pretrained"] == "run:tinyclip"
    config = ClipClassifierConfig.load(tiny_runs / "runs" / "clip_classifier_lora")
    assert config.pretrained == "" and {**config.to_dict(), "pretrained": "run:tinyclip"} == saved
    # A frozen fusion backbone is not in the checkpoints: its weights stay named.
    fusion = FusionConfig.load(tiny_runs / "runs" / "fusion_cross")
    assert fusion.pretrained == "run:tinyclip" and fusion.checkpointed_weight_sources() == ()
    assert dataclasses.replace(fusion, trainable_backbone=True).checkpointed_weight_sources() == (
        "pretrained",
    )


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("name", NAMES)
def test_a_missing_run_raises_run_not_found_and_nothing_is_trained(tmp_path, name):
    recipe = get_recipe(name)
    missing = tmp_path / "runs" / "absent"
    loaders = [recipe.load_trained] + (
        [] if recipe.predict_run is None else [lambda d: recipe.predict_run(d, "test")]
    )
    for load in loaders:
        with pytest.raises(RunNotFoundError) as info:
            load(missing)
        assert info.value.path == missing and info.value.how == recipe.how
        assert str(info.value).endswith(
            f"Make it with notebook {recipe.notebook}, or: python -m nbhelpers.train {name} ..."
        )
    (missing).mkdir(parents=True)  # a folder without config.json: not a run yet
    with pytest.raises(RunNotFoundError, match=f"^file {missing / 'config.json'} does not exist"):
        recipe.load_trained(missing)
    assert _files(tmp_path) == ["runs", "runs/absent"]


@pytest.mark.parametrize("run", ["cass_mm", "clip_classifier_lora", "unimodal_image", "ssl_dino_vit_test"])
def test_a_run_without_checkpoints_raises_run_not_found(tiny_runs, tmp_path, run):
    shutil.copytree(tiny_runs / "runs" / run, tmp_path / run)
    shutil.rmtree(tmp_path / run / "checkpoints")
    before = _files(tmp_path)
    recipe = get_recipe(json.loads((tmp_path / run / "metrics.json").read_text())["recipe"])
    with pytest.raises(RunNotFoundError, match=f"^checkpoint of run {tmp_path / run} does not exist") as info:
        recipe.load_trained(tmp_path / run)
    assert info.value.how == recipe.how and _files(tmp_path) == before


def test_a_fusion_run_whose_clip_run_is_missing_does_not_train_it(tiny_runs, tmp_path):
    run_dir = tmp_path / "runs" / "fusion_cross"
    shutil.copytree(tiny_runs / "runs" / "fusion_cross", run_dir)
    # The run reloads the exact CLIP weights file its run.json records: here one that is gone.
    record = json.loads((run_dir / "run.json").read_text())
    record["inputs"]["pretrained"]["path"] = str(tmp_path / "runs" / "tinyclip" / "clip_weights.pt")
    (run_dir / "run.json").write_text(json.dumps(record))
    before = _files(tmp_path)
    for load in (get_recipe("fusion").load_trained, lambda d: get_recipe("fusion").predict_run(d, "test")):
        with pytest.raises(
            RunNotFoundError, match="notebook 03_train_clip, or: python -m nbhelpers.train clip"
        ) as info:
            load(run_dir)
        assert info.value.path == tmp_path / "runs" / "tinyclip" / "clip_weights.pt"
    assert _files(tmp_path) == before


def test_a_trained_runs_weights_round_trip_with_a_separate_head():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 3))
    trained = TrainedRun("toy", Path("."), None, model, parts={"layer": model[0], "head": nn.Linear(3, 2)})
    weights = trained.weights()
    # The model under model., a part outside it under its name; a part inside the model is not repeated.
    assert sorted(weights) == ["head.bias", "head.weight", "model.0.bias", "model.0.weight"]
    fresh = TrainedRun(
        "toy", Path("."), None, nn.Sequential(nn.Linear(2, 3)), parts={"head": nn.Linear(3, 2)}
    )
    fresh.load_weights(weights)
    assert all(torch.equal(v, fresh.weights()[k]) for k, v in weights.items())
    assert not fresh.model.training and not fresh.parts["head"].training
    with pytest.raises(RuntimeError, match="no part of the model"):
        fresh.load_weights({**weights, "extra.x": torch.zeros(1)})
    with pytest.raises(RuntimeError, match="Missing key"):
        fresh.load_weights({k: v for k, v in weights.items() if k != "head.bias"})
