"""Every t4 preset and every reproduction preset builds its real-size model and takes two optimiser steps.

Through the recipe's own ``run()`` (:func:`benchmarks.real_size.run_preset`), with only what needs a
download replaced: random init for open_clip and torchvision weights, a ``save_pretrained`` folder of the
real config for Hugging Face ids (BLIP-2 Flan-T5-XL at its real widths with fewer layers), synthetic shards
and a CIFAR-10 folder in the Hub's format. Two micro-batches of two samples a step where the preset
accumulates, bf16 autocast (the CPU's AMP), at the presets' real input sizes.
"""

from __future__ import annotations

import math
import shutil

import pytest
import torch

from benchmarks.real_size import PRESETS, full_parameters, is_t4, run_preset
from nbhelpers.config import preset_alias, preset_names
from nbhelpers.train.run_dir import list_checkpoints

#: Sections with t4 or reproduction presets (every preset of theirs but ``demo`` is one).
SECTIONS = ("clip", "cass_mm", "clip_classifier", "fusion", "ssl", "unimodal")


def test_the_list_holds_every_t4_and_reproduction_preset():
    want = set()
    for section in SECTIONS:
        for name in set(preset_names(section)) - {"demo"}:
            want.add((section, preset_alias(name, section) if name == "t4" else name))
    assert want == {(r, preset_alias(p, r) if p == "t4" else p) for r, p in PRESETS}
    assert len(set(PRESETS)) == len(PRESETS) == 13
    assert [p for r, p in PRESETS if is_t4(r, p)] == [
        "t4", "t4", "clip_lora_7class", "hateclipper_vitl14_cross", "dino_twins_resnet50_cifar10",
        "hm_bert_resnet152_late_fusion",
    ]  # fmt: skip


def test_blip2_flan_t5_xl_is_counted_at_its_full_size_on_the_meta_device():
    # 3.94B: ViT-g (1.0B), Q-Former (107M + 32 queries), Flan-T5-XL (2.85B); nothing is allocated.
    assert 3_800_000_000 < full_parameters("Salesforce/blip2-flan-t5-xl") < 4_000_000_000


def _checks(recipe: str, preset: str, result) -> None:
    if recipe == "unimodal":
        runs = result.extra["runs"]
        assert runs["image"].metrics["model"] == "resnet152"
        assert runs["image"].metrics["trainable_parameters"] == 58_158_151  # ResNet-152, 7 outputs
        assert runs["text"].metrics["trainable_parameters"] == 109_487_623  # bert-base, 7 outputs
        for kind in ("text", "image"):
            assert [e for e, _ in list_checkpoints(runs[kind].run_dir)] == [1]
        return
    assert [e for e, _ in list_checkpoints(result.run_dir)] == [1]
    assert result.history["epochs"][-1]["global_step"] == 2
    assert math.isfinite(result.history["epochs"][-1]["loss"])
    trainable = result.metrics.get("trainable_parameters")
    if recipe == "clip_classifier":
        # ViT-B/32 CLIP: 151 M weights; the two-layer head 6.3 M; LoRA rank 4 on the 24 out_proj: 123 k.
        assert trainable == (6_433_287 if preset == "clip_lora_7class" else 157_587_720)
    if recipe == "fusion":
        backbone, head = result.extra["model"].backbone, result.extra["model"].head
        assert not any(p.requires_grad for p in backbone.parameters())
        image_dim, text_dim, size = {
            "hateclipper_vitl14_cross": (1024, 768, 224),
            "hateclipper_vitl14_concat": (1024, 768, 224),
            "hateclipper_blip_itm_large_coco": (1024, 768, 384),
            "hateclipper_blip2_flan_t5_xl": (768, 2048, 224),
        }[preset]
        assert (backbone.image_dim, backbone.text_dim, backbone.image_size) == (image_dim, text_dim, size)
        maps = (image_dim + 1) * 1024 + (text_dim + 1) * 1024
        fused = 1024 * 1024 if preset != "hateclipper_blip2_flan_t5_xl" else 2 * 1024
        if preset == "hateclipper_vitl14_concat":
            maps, fused = (image_dim + 1) * 32 + (text_dim + 1) * 32, 64
        assert trainable == sum(p.numel() for p in head.parameters()) == maps + fused + 1
        if preset.startswith("hateclipper_vitl14"):
            assert sum(p.numel() for p in backbone.parameters()) == 427_616_513  # CLIP ViT-L/14


@pytest.mark.slow
@pytest.mark.parametrize(("recipe", "preset"), PRESETS, ids=[f"{r}-{p}" for r, p in PRESETS])
def test_preset_takes_two_steps_at_real_size(recipe, preset, tmp_path):
    torch.manual_seed(0)
    try:
        result = run_preset(recipe, preset, tmp_path, micro_batch=2)
        _checks(recipe, preset, result)
    finally:  # real-size checkpoints and model folders: about 20 GB over all presets if kept
        shutil.rmtree(tmp_path, ignore_errors=True)
