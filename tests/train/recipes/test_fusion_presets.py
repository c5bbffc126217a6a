"""The fusion presets that reproduce Hate-CLIPper's reported rows, and the headline one trained at real size."""

from __future__ import annotations

import pytest

from nbhelpers.config import ConfigError, preset_names, preset_values
from nbhelpers.train.recipes.config import manifests, train_spec
from nbhelpers.train.recipes.fusion import FusionConfig
from nbhelpers.train.recipes.fusion_features import _cache_file

#: preset -> (backbone, fusion, map_dim, epochs, batch_size, lr) of the row it reproduces.
ROWS = {
    "hateclipper_vitl14_cross": ("hf:openai/clip-vit-large-patch14", "cross", 1024, 20, 64, 1e-4),
    "hateclipper_vitl14_concat": ("hf:openai/clip-vit-large-patch14", "concat", 32, 20, 64, 1e-4),
    "hateclipper_blip_itm_large_coco": ("hf:Salesforce/blip-itm-large-coco", "cross", 1024, 20, 16, 5e-4),
    "hateclipper_blip2_flan_t5_xl": ("hf:Salesforce/blip2-flan-t5-xl", "concat", 1024, 10, 8, 5e-4),
}


@pytest.mark.parametrize("preset", list(ROWS))
def test_each_row_preset_has_the_reported_settings(preset):
    config = FusionConfig.from_params(preset)
    got = (config.backbone, config.fusion, config.map_dim, config.epochs, config.batch_size, config.lr)
    assert got == ROWS[preset]
    assert config.features == "pooled" and config.pre_output_layers == 0 and not config.trainable_backbone
    assert (config.dropout_map, config.dropout_fused, config.dropout_pre_output) == (0.1, 0.4, 0.2)
    assert (config.weight_decay, config.max_grad_norm, config.warmup_fraction) == (1e-4, 0.1, 0.0)
    # The reference's plain AdamW at a constant rate: every parameter decayed, no schedule.
    assert (config.lr_schedule, config.decay_all) == ("constant", True)
    assert (
        train_spec(config, 10, run_dir="x").lr_schedule,
        train_spec(config, 10, run_dir="x").decay_all,
    ) == ("constant", True)
    assert config.sources == "hateful_memes" and config.eval_plan.primary == "dev_seen"


def test_t4_is_the_headline_row_and_demo_keeps_its_head():
    assert preset_values("t4", "fusion") == preset_values("hateclipper_vitl14_cross", "fusion")
    demo = FusionConfig.from_params("demo")
    assert (demo.features, demo.map_dim, demo.pre_output_layers, demo.prior_bias) == (
        "projected",
        32,
        1,
        True,
    )
    assert set(ROWS) <= set(preset_names("fusion"))
    # A section's own presets are not presets of the others.
    assert "hateclipper_vitl14_cross" not in preset_names("clip")
    with pytest.raises(ConfigError, match="'hateclipper_vitl14_cross' is not a preset of 'clip'"):
        preset_values("hateclipper_vitl14_cross", "clip")


def test_pooled_features_are_cached_apart_from_projected_ones(tiny_shards, tmp_path):
    config = FusionConfig.from_params("demo", data_dir=str(tiny_shards), runs_dir=str(tmp_path))
    found = manifests(config)
    pooled = FusionConfig.from_params(
        "demo", data_dir=str(tiny_shards), runs_dir=str(tmp_path), features="pooled"
    )
    assert _cache_file(config, None, found, "train") != _cache_file(pooled, None, found, "train")


def test_projected_runs_keep_the_fingerprint_they_had_before_features_existed():
    demo = FusionConfig.from_params("demo")
    assert "features" not in demo.identity().config  # demo runs and their folders are found again
    assert FusionConfig.from_params("demo", features="pooled").identity().config["features"] == "pooled"
    # Likewise the schedule fields: absent at their defaults, part of the identity otherwise.
    assert not {"lr_schedule", "decay_all"} & set(demo.identity().config)
    constant = FusionConfig.from_params("demo", lr_schedule="constant", decay_all=True).identity().config
    assert (constant["lr_schedule"], constant["decay_all"]) == ("constant", True)
