"""The presets of the reported results: each is an alias or a preset of its section with the reported
settings. Each one's real-size run is in ``test_real_size_presets.py``."""

from __future__ import annotations

import pytest

from nbhelpers.config import preset_alias, preset_names, preset_values
from nbhelpers.train.recipes import get_recipe
from nbhelpers.train.recipes.clip_classifier import ClipClassifierConfig
from nbhelpers.train.recipes.ssl import SSLConfig
from nbhelpers.train.recipes.unimodal import UnimodalConfig

#: The reproduction presets of each section, and the headline one ``t4`` is an alias of.
REPRODUCTIONS = {
    "clip_classifier": (("clip_lora_7class", "clip_baseline_7class"), "clip_lora_7class"),
    "ssl": (
        (
            "dino_twins_resnet50_cifar10",
            "barlow_twins_resnet50_cifar10",
            "dino_resnet50_cifar10",
            "dino_twins_vit_tiny_p4_cifar10",
        ),
        "dino_twins_resnet50_cifar10",
    ),
    "unimodal": (("hm_bert_resnet152_late_fusion",), "hm_bert_resnet152_late_fusion"),
}


@pytest.mark.parametrize("section", sorted(REPRODUCTIONS))
def test_t4_is_an_alias_of_the_headline_preset_and_every_preset_validates(section):
    presets, headline = REPRODUCTIONS[section]
    assert preset_alias("t4", section) == headline
    assert preset_values("t4", section) == preset_values(headline, section)
    assert set(presets) <= set(preset_names(section))
    config_class = get_recipe(section).config_class
    for preset in presets:
        assert config_class.from_params(preset).preset == preset


def test_the_reported_settings_are_in_the_presets():
    lora = ClipClassifierConfig.from_params("clip_lora_7class")
    assert (lora.mode, lora.model, lora.pretrained) == ("lora", "ViT-B-32", "laion2b_s34b_b79k")
    assert (lora.batch_size, lora.batch_size // lora.grad_accum_steps) == (8192, 256)  # 8,192 a step
    assert (lora.lr, lora.weight_decay, lora.warmup_steps, lora.epochs) == (1e-3, 0.1, 10000, 600)
    assert (lora.contrastive_weight, lora.ce_weight, lora.head_layers) == (1.0, 1.0, 2)
    assert lora.gradient_checkpointing and lora.sources == "mmhs150k,fakeddit,coco"
    baseline = ClipClassifierConfig.from_params("clip_baseline_7class")
    assert baseline.mode == "baseline" and baseline.mode_lr == 1e-3
    ssl = {p: SSLConfig.from_params(p) for p in REPRODUCTIONS["ssl"][0]}
    assert {(c.method, c.backbone, c.batch_size) for c in ssl.values()} == {
        ("dino_twins", "resnet50", 256),
        ("barlow_twins", "resnet50", 256),
        ("dino", "resnet50", 256),
        ("dino_twins", "vit_tiny_p4", 128),
    }
    assert all(c.dataset == "cifar10" for c in ssl.values())
    uni = UnimodalConfig.from_params("hm_bert_resnet152_late_fusion")
    assert (uni.text_model, uni.text_epochs, uni.text_lr) == ("bert-base-uncased", 6, 2e-5)
    assert (uni.image_model, uni.image_weights, uni.epochs, uni.lr, uni.batch_size) == (
        "resnet152", "IMAGENET1K_V1", 20, 1e-4, 32,
    )  # fmt: skip
    assert uni.sources == "hateful_memes" and uni.eval_split_list[0] == "dev_seen"
