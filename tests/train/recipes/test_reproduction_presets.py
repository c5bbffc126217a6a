"""The presets of the reported results: each builds its real-size model (random init: no weights can be
downloaded here) and takes two optimiser steps through its recipe's ``run()`` on a few samples.

Only what cannot run here is overridden: the pretrained weights (``pretrained=""``, ``image_weights=""``,
a bert-base-sized BERT saved locally instead of ``bert-base-uncased``), the data (tiny synthetic shards, or
a tiny CIFAR-like dataset in place of the Hub's ``cifar10``), the run's length and batch, and the unimodal
pictures' side (64 px: ResNet-152 at 224 px alone would take a minute here).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers
from PIL import Image

from nbhelpers.config import preset_alias, preset_names, preset_values
from nbhelpers.models.unimodal import TextClassifier, local_minilm_path
from nbhelpers.train.recipes import get_recipe
from nbhelpers.train.recipes.clip_classifier import ClipClassifierConfig
from nbhelpers.train.recipes.ssl import SSLConfig
from nbhelpers.train.recipes.unimodal import UnimodalConfig
from nbhelpers.train.run_dir import list_checkpoints
from tests.helpers import make_shards

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
#: Two optimiser steps of one epoch, nothing kept between tests, no progress bars.
TWO_STEPS = dict(epochs=1, steps_per_epoch=2, progress=False, resume=False, num_workers=0)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("presets")
    make_shards(root / "shards", train=16, val=8, test=8, unseen=8, train_shard=16, eval_shard=8)
    return root


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


@pytest.mark.slow
@pytest.mark.parametrize("preset", REPRODUCTIONS["clip_classifier"][0])
def test_clip_preset_takes_two_steps_at_real_size(shards, tmp_path, preset):
    # The preset's accumulation (micro-batches of 256, 32 to a step) at 2 x 2: the same code path.
    result = get_recipe("clip_classifier").run(
        ClipClassifierConfig.from_params(
            preset,
            pretrained="",
            data_dir=str(shards / "shards"),
            sources="synthetic",
            eval_splits="test",
            runs_dir=str(tmp_path),
            run_name="r",
            batch_size=4,
            grad_accum_steps=2,
            warmup_steps=1,
            limit=8,
            mixed_precision="no",
            **TWO_STEPS,
        )  # fmt: skip
    )
    trainable = result.metrics["trainable_parameters"]
    # ViT-B/32 CLIP: 151 M weights; the two-layer head 6.3 M; LoRA rank 4 on the 24 out_proj: 123 k.
    assert trainable == (6_433_287 if preset == "clip_lora_7class" else 157_587_720)
    assert [e for e, _ in list_checkpoints(result.run_dir)] == [1]


def tiny_cifar(folder, n: int = 24):
    """A CIFAR-10-like dataset (32-px pictures, a ``ClassLabel``), train and test, saved with ``save_to_disk``."""
    import datasets

    rng = np.random.default_rng(0)
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    for split in ("train", "test"):
        labels = [i % 2 for i in range(n)]
        images = [
            Image.fromarray((rng.random((32, 32, 3)) * 128 + 127 * label).astype(np.uint8))
            for label in labels
        ]
        data = datasets.Dataset.from_dict({"img": images, "label": labels}, features=features)
        data.save_to_disk(str(folder / split))
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("preset", REPRODUCTIONS["ssl"][0])
def test_ssl_preset_takes_two_steps_at_real_size(tmp_path, monkeypatch, preset):
    import datasets

    folder = tiny_cifar(tmp_path / "cifar")
    calls = []

    def load_dataset(name, split):  # the Hub's cifar10, replaced by the tiny one saved above
        calls.append((name, split))
        return datasets.load_from_disk(str(folder / split))

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    result = get_recipe("ssl").run(
        SSLConfig.from_params(
            preset, runs_dir=str(tmp_path / "runs"), run_name="r", batch_size=8, **TWO_STEPS
        )
    )
    assert calls == [("cifar10", "train"), ("cifar10", "test")]
    assert [e for e, _ in list_checkpoints(result.run_dir)] == [1]
    assert set(result.metrics["probes"]["test"]) == {"label"}


def save_bert_base(folder):
    """A randomly initialised BERT of bert-base-uncased's size (``BertConfig()``: 12 layers, 768 wide) with
    bert-base-uncased's WordPiece vocabulary (the packaged MiniLM's), saved with ``save_pretrained``: what
    ``from_pretrained("bert-base-uncased")`` loads on Colab, without the download."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(local_minilm_path()))
    config = transformers.BertConfig(num_labels=7)
    assert (config.hidden_size, config.num_hidden_layers, config.vocab_size) == (
        768,
        12,
        tokenizer.vocab_size,
    )
    torch.manual_seed(0)
    TextClassifier.from_config(config, tokenizer).save_pretrained(folder)
    return folder


@pytest.mark.slow
@pytest.mark.skipif(local_minilm_path() is None, reason="needs the packaged MiniLM's tokenizer (dev extra)")
def test_unimodal_preset_takes_two_steps_per_model_at_real_size(shards, tmp_path):
    bert = save_bert_base(tmp_path / "bert-base")
    result = get_recipe("unimodal").run(
        UnimodalConfig.from_params(
            "hm_bert_resnet152_late_fusion",
            text_model=str(bert),
            image_weights="",
            data_dir=str(shards / "shards"),
            sources="synthetic",
            eval_splits="test",
            monitor_split="",
            runs_dir=str(tmp_path / "runs"),
            run_name="r",
            batch_size=4,
            text_epochs=1,
            limit=8,
            mixed_precision="no",
            **TWO_STEPS,
        )  # fmt: skip
    )
    runs = result.extra["runs"]
    assert set(runs) == {"text", "image", "late_fusion"}
    assert runs["image"].metrics["model"] == "resnet152"
    assert runs["image"].metrics["trainable_parameters"] > 58_000_000  # ResNet-152
    assert runs["text"].metrics["trainable_parameters"] > 109_000_000  # bert-base
    for kind in ("text", "image"):
        assert [e for e, _ in list_checkpoints(runs[kind].run_dir)] == [1]
