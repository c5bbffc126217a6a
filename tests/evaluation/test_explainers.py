"""Every recipe's explainer on a real tiny run: built from the recipe's own load_trained, it predicts what
the run predicted and maps what the architecture allows."""

from __future__ import annotations

import numpy as np
import pytest

from nbhelpers.evaluation.attention import load_explainer
from nbhelpers.evaluation.explainers import EXPLAINERS, UnimodalImageExplainer, UnimodalTextExplainer
from nbhelpers.models.ssl import VIT_CONFIGS
from nbhelpers.train.recipes import RECIPES

TINY_CLIP_MAPS = (2, 4, 8, 8)  # memelab-tiny-vit: 2 layers, 4 heads, 64-px pictures in 8-px patches


def test_every_recipe_has_an_explainer():
    assert list(EXPLAINERS) == list(RECIPES)


@pytest.fixture(scope="module")
def explained(tiny_runs):
    """``{run: (explainer, explanation of test sample 0)}`` for every explainable tiny run."""
    found = {}
    for name in ("unimodal_image", "unimodal_text", "clip", "ssl_dino_vit_test", "cass_mm",
                 "clip_classifier_lora", "fusion_cross"):  # fmt: skip
        explainer = load_explainer(tiny_runs / "runs" / name)
        found[name] = explainer, explainer.explain(explainer.split("test", 8), 0)
    return found


@pytest.mark.parametrize(
    ("run", "recipe"),
    [("unimodal_image", "unimodal"), ("unimodal_text", "unimodal"), ("cass_mm", "cass_mm"),
     ("clip_classifier_lora", "clip_classifier")],
)  # fmt: skip
def test_a_classifiers_explanation_predicts_what_the_run_saved(tiny_runs, explained, run, recipe):
    explainer, explanation = explained[run]
    assert explainer.trained.recipe == recipe and explainer.run_dir == tiny_runs / "runs" / run
    with np.load(tiny_runs / "runs" / run / "predictions_test.npz") as saved:
        np.testing.assert_allclose(explanation.probs, saved["probs"][0], atol=1e-5, rtol=0)
        assert explanation.label == saved["labels"][0]
    assert explanation.image.shape == (explainer.image_size, explainer.image_size, 3)


def test_a_binary_runs_explanation_is_its_hateful_probability(tiny_runs, explained):
    explainer, explanation = explained["fusion_cross"]
    assert explanation.class_names == ("not hateful", "hateful")
    with np.load(tiny_runs / "runs" / "fusion_cross" / "predictions_test.npz") as saved:
        assert explanation.probs[1] == pytest.approx(float(saved["scores"][0]), abs=1e-5)
        assert explanation.label == saved["labels"][0]
    assert explanation.attention.shape == TINY_CLIP_MAPS and len(explanation.tokens) > 2


def test_each_architecture_gets_its_maps(explained):
    image = explained["unimodal_image"]
    assert isinstance(image[0], UnimodalImageExplainer)
    assert image[1].grad_cam.shape == (32, 32) and image[1].attention is None
    text = explained["unimodal_text"]
    assert isinstance(text[0], UnimodalTextExplainer) and text[0].image_size == 32
    assert text[1].tokens[0] == "[CLS]" and text[1].token_scores["gradient x input"].shape == (
        len(text[1].tokens),
    )
    clip = explained["clip"][1]
    assert clip.probs is None and clip.attention.shape == TINY_CLIP_MAPS
    assert set(clip.token_scores) == {"gradient x input", "end-token attention"}
    cass = explained["cass_mm"][1]
    assert cass.attention.shape == TINY_CLIP_MAPS and cass.grad_cam.shape == (64, 64)
    lora = explained["clip_classifier_lora"][1]
    assert lora.attention.shape == TINY_CLIP_MAPS and lora.grad_cam is None
    ssl = explained["ssl_dino_vit_test"]
    vit = VIT_CONFIGS["vit_test"]
    assert ssl[0].encoder_name == "teacher" and ssl[1].probs is None
    assert ssl[1].attention.shape == (vit.depth, vit.num_heads, 2, 2)  # 16-px pictures in 8-px patches


@pytest.mark.parametrize("run", ["clip_classifier_lora", "fusion_cross", "unimodal_image"])
def test_a_run_over_its_own_classes_is_explained_with_them(tiny_label_runs, run):
    explainer = load_explainer(tiny_label_runs / "runs" / run)
    explanation = explainer.explain(explainer.split("test", 4), 1)
    assert explainer.class_names == explanation.class_names == ("cat", "dog", "bird")
    with np.load(tiny_label_runs / "runs" / run / "predictions_test.npz") as saved:
        np.testing.assert_allclose(explanation.probs, saved["probs"][1], atol=1e-5, rtol=0)
        assert explanation.label == saved["labels"][1] == 1
