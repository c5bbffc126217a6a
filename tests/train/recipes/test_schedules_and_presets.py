"""Warmup as a fraction of the run, per-mode learning rates, and the t4 presets that use them."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from nbhelpers.config import ConfigError, preset_alias, preset_values, strip_comment_lines
from nbhelpers.train.recipes.clip import ClipConfig
from nbhelpers.train.recipes.clip_classifier import ClipClassifierConfig
from nbhelpers.train.recipes.config import train_spec

SECTIONS = ("clip", "clip_classifier", "cass_mm", "unimodal", "ssl", "fusion")


@pytest.mark.parametrize(
    ("steps_per_epoch", "epochs", "fraction", "warmup"),
    [(10, 10, 0.05, 5), (10, 10, 0.29, 29), (7, 3, 0.06, 1), (50, 20, 0.1, 100), (3, 1, 0.0, 1)],
)
def test_warmup_is_a_fraction_of_all_optimiser_steps(tmp_path, steps_per_epoch, epochs, fraction, warmup):
    config = ClipConfig.from_params("demo", epochs=epochs, warmup_fraction=fraction, run_name="r")
    assert train_spec(config, steps_per_epoch).warmup_steps == warmup


def test_explicit_warmup_steps_win_and_the_fraction_then_leaves_the_fingerprint(tmp_path):
    config = ClipConfig.from_params("demo", epochs=2, warmup_steps=7, run_name="r")
    assert train_spec(config, 10).warmup_steps == 7
    assert train_spec(replace(config, warmup_steps=70), 10).warmup_steps == 20  # capped at all steps
    other_fraction = replace(config, warmup_fraction=0.5)
    assert config.identity().fingerprint == other_fraction.identity().fingerprint
    unset = replace(config, warmup_steps=None)
    assert unset.identity().fingerprint != replace(unset, warmup_fraction=0.5).identity().fingerprint


def test_a_warmup_fraction_of_one_or_more_is_refused():
    with pytest.raises(ConfigError, match="warmup_fraction: must be < 1"):
        ClipConfig.from_params("demo", warmup_fraction=1.0)


def test_baseline_mode_takes_full_lr_and_lora_mode_ignores_it():
    lora = ClipClassifierConfig.from_params("demo", mode="lora", lr=5e-4, full_lr=1e-5, run_name="r")
    baseline = replace(lora, mode="baseline")
    assert (lora.mode_lr, baseline.mode_lr) == (5e-4, 1e-5)
    # full_lr cannot change a LoRA run's weights, nor lr a baseline run's once full_lr is set.
    assert lora.identity().fingerprint == replace(lora, full_lr=3e-5).identity().fingerprint
    assert baseline.identity().fingerprint == replace(baseline, lr=1e-3).identity().fingerprint
    assert baseline.identity().fingerprint != replace(baseline, full_lr=3e-5).identity().fingerprint
    assert ClipClassifierConfig.from_params("demo", mode="baseline").mode_lr == 2e-3  # no full_lr: lr


def test_t4_presets_of_their_own_scale_warmup_with_the_run_and_fine_tune_pretrained_weights_gently():
    for section in SECTIONS:
        if preset_alias("t4", section) is None:  # not the reported recipe of a result (those are verbatim)
            assert "warmup_steps" not in preset_values("t4", section), section  # a share of any dataset
    assert preset_values("t4", "clip")["lr"] <= 3e-5  # every CLIP weight trains


def test_preset_files_are_json_with_comment_lines(tmp_path):
    text = '// a citation\n{\n  // another\n  "demo": {"lr": 1e-3}\n}\n'
    assert json.loads(strip_comment_lines(text)) == {"demo": {"lr": 1e-3}}
    with pytest.raises(json.JSONDecodeError) as err:
        json.loads(strip_comment_lines('// c\n{\n  "demo": {"lr": }\n}'))
    assert err.value.lineno == 3  # line numbers of errors still point into the file
