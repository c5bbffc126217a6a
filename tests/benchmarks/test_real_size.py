"""The offline stand-ins of the real presets' downloads: CLIP's real tokenizer, the Hub's CIFAR-10 layout,
the published model sizes, and the config a measured run gets."""

from __future__ import annotations

import open_clip
import pytest
import transformers

from benchmarks.real_size import clip_tokenizer, hf_config, preset_micro_batch, run_config, write_cifar10


def test_the_clip_tokenizer_is_openais_vocabulary(tmp_path):
    clip_tokenizer(tmp_path)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tmp_path))  # as from_pretrained reads it
    text = "When the meme is a cat in a hat, unbelievably!"
    got = tokenizer(text)["input_ids"]
    want = open_clip.tokenize([text])[0]
    assert len(got) > 10 and got == want[: len(got)].tolist()  # open_clip pads with 0, HF with <|endoftext|>
    assert len(tokenizer) == 49408


def test_the_cifar10_folder_loads_as_the_hubs_does(tmp_path):
    import datasets

    folder = write_cifar10(tmp_path / "cifar10", samples=12)
    train = datasets.load_dataset(str(folder), split="train")
    assert len(train) == 12 and train.features["label"].names[:2] == ["airplane", "automobile"]
    assert train[0]["img"].size == (32, 32)
    assert len(datasets.load_dataset(str(folder), split="test")) == 12


def test_the_configs_have_the_published_sizes():
    vit_l = hf_config("openai/clip-vit-large-patch14")
    assert (vit_l.vision_config.hidden_size, vit_l.vision_config.num_hidden_layers) == (1024, 24)
    blip = hf_config("Salesforce/blip-itm-large-coco")
    assert (blip.vision_config.image_size, blip.vision_config.patch_size) == (384, 16)
    full, reduced = hf_config("Salesforce/blip2-flan-t5-xl"), hf_config("Salesforce/blip2-flan-t5-xl", True)
    for config in (full, reduced):  # the real widths either way
        assert (config.vision_config.hidden_size, config.text_config.d_model, config.text_config.d_ff) == (
            1408, 2048, 5120,
        )  # fmt: skip
    assert (full.vision_config.num_hidden_layers, full.text_config.num_layers) == (39, 24)
    assert reduced.text_config.num_layers == 6  # the backbone reads the encoder after block 5
    with pytest.raises(KeyError, match="no real-size config"):
        hf_config("gpt2")


def test_a_measured_run_keeps_the_presets_path_at_a_small_micro_batch(tmp_path):
    assert preset_micro_batch("clip_classifier", "clip_lora_7class") == (256, 32)
    config = run_config("clip_classifier", "clip_lora_7class", tmp_path, 3)
    # Accumulation stays on (two micro-batches of 3), with the preset's LoRA, checkpointing and loss.
    assert (config.batch_size, config.grad_accum_steps, config.steps_per_epoch) == (6, 2, 2)
    assert (config.mode, config.gradient_checkpointing, config.accumulate_loss) == ("lora", True, "batch")
    assert (config.pretrained, config.mixed_precision, config.sources) == ("", "bf16", "synthetic")
    ssl = run_config("ssl", "dino_twins_resnet50_cifar10", tmp_path, 2)
    assert ssl.batch_size == 2 and ssl.dataset == str(tmp_path / "cifar10-32")
