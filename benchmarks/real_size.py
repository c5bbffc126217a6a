"""Every t4 and reproduction preset at its real size, offline: its model built as the preset builds it.

A preset names pretrained weights (open_clip tags, Hugging Face ids, torchvision ImageNet weights) and
data (its shards, the Hub's CIFAR-10) that need a download. :func:`offline_overrides` gives, for each
preset of :data:`PRESETS`, the config values that run it here through its recipe's own ``run()`` with
nothing changed but what cannot be downloaded:

- open_clip and torchvision weights: random init (``pretrained=""``, ``image_weights=""``): the same
  architecture, so the same memory and FLOPs;
- Hugging Face ids (the code path is ``from_pretrained``): a local folder written by ``save_pretrained``
  of a random-init model of the real config (the published sizes, :func:`hf_config`) with a tokenizer of
  the real kind (CLIP's real BPE vocabulary from open_clip; bert-base-uncased's WordPiece vocabulary from
  the packaged MiniLM when installed). BLIP-2 with Flan-T5-XL (3.9B parameters, 15.6 GB in float32) is
  written at its real widths with fewer layers (``reduced=True``); :func:`full_parameters` counts the
  real one on the meta device;
- data: synthetic shards (:func:`write_shards`) and a CIFAR-10-like folder in the Hub's own layout and
  format (:func:`write_cifar10`), read by the recipes' own loaders.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from PIL import Image

from nbhelpers.config import preset_alias, preset_values
from nbhelpers.data.prepare import PrepareConfig, prepare
from nbhelpers.models.unimodal import TextClassifier, local_minilm_path

#: (recipe, preset) of every t4 preset and every preset that reproduces a reported result.
PRESETS: tuple[tuple[str, str], ...] = (
    ("clip", "t4"),
    ("cass_mm", "t4"),
    ("clip_classifier", "clip_lora_7class"),
    ("clip_classifier", "clip_baseline_7class"),
    ("fusion", "hateclipper_vitl14_cross"),
    ("fusion", "hateclipper_vitl14_concat"),
    ("fusion", "hateclipper_blip_itm_large_coco"),
    ("fusion", "hateclipper_blip2_flan_t5_xl"),
    ("ssl", "dino_twins_resnet50_cifar10"),
    ("ssl", "barlow_twins_resnet50_cifar10"),
    ("ssl", "dino_resnet50_cifar10"),
    ("ssl", "dino_twins_vit_tiny_p4_cifar10"),
    ("unimodal", "hm_bert_resnet152_late_fusion"),
)

#: Samples of each synthetic split the runs read (enough for two steps of a few samples).
SHARD_SAMPLES = 32


def is_t4(recipe: str, preset: str) -> bool:
    """Whether ``preset`` is what ``preset="t4"`` runs in ``recipe``."""
    return preset == "t4" or preset_alias("t4", recipe) == preset


def write_shards(folder: Path, samples: int = SHARD_SAMPLES) -> Path:
    """Synthetic shards (64 px; the recipes resize to their model's input) with every split, under ``folder``."""
    config = PrepareConfig.from_params(
        "demo", out_dir=str(folder), image_size=64, synthetic_train=samples, synthetic_val=samples,
        synthetic_test=samples, synthetic_unseen=samples, train_shard_size=samples,
        eval_shard_size=samples, workers=1,
    )  # fmt: skip
    prepare(config, progress=False)
    return folder


def write_cifar10(folder: Path, samples: int = SHARD_SAMPLES) -> Path:
    """A CIFAR-10-like dataset in the Hub repository's layout: ``plain_text/{train,test}-00000-of-00001.parquet``
    with an ``img`` Image and a ten-class ``label`` ClassLabel, 32-px pictures.

    ``datasets.load_dataset(str(folder), split=...)`` reads it as it reads ``cifar10`` from the Hub.
    """
    import datasets

    rng = np.random.default_rng(0)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    (folder / "plain_text").mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        labels = [i % 10 for i in range(samples)]
        images = [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in labels]
        data = datasets.Dataset.from_dict({"img": images, "label": labels}, features=features)
        data.to_parquet(str(folder / "plain_text" / f"{split}-00000-of-00001.parquet"))
    return folder


def clip_tokenizer(folder: Path) -> transformers.CLIPTokenizer:
    """OpenAI CLIP's tokenizer (49,408 tokens), built from the BPE merges open_clip ships, saved to ``folder``."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    with gzip.open(default_bpe(), "rt", encoding="utf-8") as f:
        merges = f.read().split("\n")[1 : 49152 - 256 - 2 + 1]  # as open_clip's SimpleTokenizer reads them
    chars = list(bytes_to_unicode().values())
    vocab = chars + [c + "</w>" for c in chars] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tokenizer = transformers.CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    assert len(tokenizer) == 49408, len(tokenizer)
    tokenizer.save_pretrained(folder)
    return tokenizer


def bert_tokenizer(folder: Path) -> transformers.PreTrainedTokenizerBase:
    """bert-base-uncased's WordPiece vocabulary (the packaged MiniLM's), or a small stand-in without the
    ``dev`` extra (the models keep their real vocabulary size either way), saved to ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    if local_minilm_path() is not None:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(local_minilm_path()))
    else:
        words = ["a", "the", "is", "red", "green", "blue", "circle", "square", "cat", "dog"]
        (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]))
        tokenizer = transformers.BertTokenizerFast(str(folder / "vocab.txt"))
    tokenizer.save_pretrained(folder)
    return tokenizer


def hf_config(hub_id: str, reduced: bool = False) -> transformers.PretrainedConfig:
    """The published sizes of a Hugging Face id a preset names (its ``config.json``'s architecture fields).

    Args:
        hub_id: ``openai/clip-vit-large-patch14``, ``Salesforce/blip-itm-large-coco``,
            ``Salesforce/blip2-flan-t5-xl`` or ``bert-base-uncased``.
        reduced: BLIP-2 only: the real widths with 2 vision, 2 Q-Former, 6 encoder and 1 decoder layers
            (the backbone reads the encoder after block 5).

    Raises:
        KeyError: another id.
    """
    if hub_id == "openai/clip-vit-large-patch14":
        return transformers.CLIPConfig(
            text_config=dict(
                vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
                bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
            ),
            vision_config=dict(
                hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                image_size=224, patch_size=14, hidden_act="quick_gelu",
            ),
            projection_dim=768,
        )  # fmt: skip
    if hub_id == "Salesforce/blip-itm-large-coco":
        return transformers.BlipConfig(
            text_config=dict(vocab_size=30524, hidden_size=768, encoder_hidden_size=1024, num_hidden_layers=12),
            vision_config=dict(
                hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                image_size=384, patch_size=16,
            ),
            image_text_hidden_size=256,
        )  # fmt: skip
    if hub_id == "Salesforce/blip2-flan-t5-xl":
        vision, qformer, encoder, decoder = (2, 2, 6, 1) if reduced else (39, 12, 24, 24)
        return transformers.Blip2Config(
            vision_config=dict(
                hidden_size=1408, intermediate_size=6144, num_hidden_layers=vision, num_attention_heads=16,
                image_size=224, patch_size=14, qkv_bias=True,
            ),
            qformer_config=dict(
                vocab_size=30522, hidden_size=768, num_hidden_layers=qformer, num_attention_heads=12,
                intermediate_size=3072, encoder_hidden_size=1408,
            ),
            text_config=dict(
                model_type="t5", vocab_size=32128, d_model=2048, d_ff=5120, d_kv=64, num_heads=32,
                num_layers=encoder, num_decoder_layers=decoder, feed_forward_proj="gated-gelu",
                tie_word_embeddings=False,
            ),
            num_query_tokens=32,
        )  # fmt: skip
    if hub_id == "bert-base-uncased":
        return transformers.BertConfig(num_labels=7)  # its defaults are bert-base's sizes
    raise KeyError(f"no real-size config for {hub_id!r}")


def _hf_model(hub_id: str, config: transformers.PretrainedConfig) -> transformers.PreTrainedModel:
    model_class = {
        "openai/clip-vit-large-patch14": transformers.CLIPModel,
        "Salesforce/blip-itm-large-coco": transformers.BlipForImageTextRetrieval,
        "Salesforce/blip2-flan-t5-xl": transformers.Blip2Model,
    }[hub_id]
    return model_class(config)


def save_hf(hub_id: str, folder: Path, reduced: bool = False) -> Path:
    """A random-init model of ``hub_id``'s real config and its tokenizer, written by ``save_pretrained``.

    What ``from_pretrained(hub_id)`` would give, but for the weights' values. Written once per folder.
    """
    if (folder / "config.json").is_file():
        return folder
    torch.manual_seed(0)
    if hub_id == "bert-base-uncased":
        tokenizer = bert_tokenizer(folder)
        TextClassifier.from_config(hf_config(hub_id), tokenizer).save_pretrained(folder)
        return folder
    if hub_id.startswith("openai/clip"):
        clip_tokenizer(folder)
    else:
        bert_tokenizer(folder)
    _hf_model(hub_id, hf_config(hub_id, reduced)).save_pretrained(folder)
    return folder


def full_parameters(hub_id: str) -> int:
    """Parameters of ``hub_id`` at its full real size, counted on the meta device (nothing allocated)."""
    with torch.device("meta"):
        if hub_id == "bert-base-uncased":
            model = transformers.AutoModelForSequenceClassification.from_config(hf_config(hub_id))
        else:
            model = _hf_model(hub_id, hf_config(hub_id))
    return sum(p.numel() for p in model.parameters())


def blip2_extraction_flop_scale(tokens: int = 32) -> float:
    """How many times more FLOPs BLIP-2 Flan-T5-XL's feature extraction costs at full depth than the
    reduced-depth model the smoke runs (see :func:`hf_config`).

    Each part is a stack of identical layers, so its FLOPs scale with its depth: the FLOPs of the reduced
    model's vision tower, Q-Former and T5 encoder (what the fusion features run) are counted on one sample
    with ``FlopCounterMode``, each multiplied by its full/reduced depth ratio, and the sum compared.
    """
    from torch.utils.flop_counter import FlopCounterMode

    reduced, full = hf_config("Salesforce/blip2-flan-t5-xl", True), hf_config("Salesforce/blip2-flan-t5-xl")
    model = transformers.Blip2Model(reduced).eval()
    size = reduced.vision_config.image_size
    pixels, ids = torch.randn(1, 3, size, size), torch.randint(0, reduced.text_config.vocab_size, (1, tokens))

    def count(fn) -> int:
        with FlopCounterMode(display=False) as counter:
            fn()
        return counter.get_total_flops()

    vision = count(lambda: model.vision_model(pixel_values=pixels))
    states = model.vision_model(pixel_values=pixels)[0].detach()
    qformer = count(
        lambda: model.qformer(
            query_embeds=model.query_tokens.expand(1, -1, -1),
            encoder_hidden_states=states,
            encoder_attention_mask=torch.ones(states.shape[:2], dtype=torch.long),
        )
    )
    encoder = count(lambda: model.language_model.get_encoder()(input_ids=ids))
    depth = {
        "vision": full.vision_config.num_hidden_layers / reduced.vision_config.num_hidden_layers,
        "qformer": full.qformer_config.num_hidden_layers / reduced.qformer_config.num_hidden_layers,
        "encoder": full.text_config.num_layers / reduced.text_config.num_layers,
    }
    scaled = vision * depth["vision"] + qformer * depth["qformer"] + encoder * depth["encoder"]
    return scaled / (vision + qformer + encoder)


def hf_id(recipe: str, preset: str) -> str | None:
    """The Hugging Face id ``preset`` loads with ``from_pretrained``, if any."""
    values = preset_values(preset, recipe)
    if recipe == "fusion" and values["backbone"].startswith("hf:"):
        return values["backbone"].removeprefix("hf:")
    if recipe == "unimodal":
        return values["text_model"]
    return None


def offline_overrides(recipe: str, preset: str, root: Path, samples: int = SHARD_SAMPLES) -> dict[str, Any]:
    """The config values that run ``preset`` here, and the files they name (written under ``root``, with
    ``samples`` samples a split).

    Only what needs a download is replaced (see the module docstring); run length, batch and
    evaluation are the caller's to set.
    """
    root.mkdir(parents=True, exist_ok=True)
    values = preset_values(preset, recipe)
    common: dict[str, Any] = {"runs_dir": str(root / "runs"), "progress": False, "resume": False}
    if recipe == "ssl":
        folder = root / f"cifar10-{samples}"
        if not folder.exists():
            write_cifar10(folder, samples)
        return {**common, "dataset": str(folder)}
    shards = root / f"shards-{samples}"
    if not (shards / "synthetic").exists():
        write_shards(shards, samples)
    common.update(data_dir=str(shards), sources="synthetic")
    if recipe in ("clip", "cass_mm", "clip_classifier"):
        return {**common, "pretrained": "", "eval_splits": "test"}
    hub_id = hf_id(recipe, preset)
    folder = save_hf(hub_id, root / hub_id.replace("/", "--"), reduced="blip2" in hub_id)
    if recipe == "fusion":
        return {**common, "backbone": f"hf:{folder}", "eval_splits": "val", "feature_cache": False}
    if recipe == "unimodal":
        assert values["image_weights"]  # ImageNet weights: random init here
        return {
            **common,
            "text_model": str(folder),
            "image_weights": "",
            "eval_splits": "test",
            "monitor_split": "",
        }
    raise KeyError(f"no offline overrides for recipe {recipe!r}")


def preset_micro_batch(recipe: str, preset: str) -> tuple[int, int]:
    """``(micro_batch, grad_accum_steps)`` of ``preset``: the samples of one forward and backward."""
    values = preset_values(preset, recipe)
    accum = values.get("grad_accum_steps", 1)
    return values["batch_size"] // accum, accum


def run_config(
    recipe: str,
    preset: str,
    root: Path,
    micro_batch: int,
    *,
    steps: int = 2,
    precision: str = "bf16",
    samples: int = SHARD_SAMPLES,
) -> Any:
    """The config of two (``steps``) optimiser steps of ``preset`` at ``micro_batch``, offline.

    Accumulation stays on where the preset has it (2 micro-batches a step, the same code path as its
    32), so a step is ``2 * micro_batch`` samples there. Fusion presets extract features ``micro_batch``
    at a time. ``precision`` is the AMP mode (``bf16`` autocasts on a CPU; a T4 runs the presets' ``auto``
    as fp16, whose tensors have the same size).
    """
    from nbhelpers.train.recipes import get_recipe

    _, preset_accum = preset_micro_batch(recipe, preset)
    accum = min(preset_accum, 2)
    values = offline_overrides(recipe, preset, root, max(samples, micro_batch * accum * steps))
    values.update(
        epochs=1, steps_per_epoch=steps, num_workers=0, mixed_precision=precision, run_name=f"b{micro_batch}",
        batch_size=micro_batch * accum, limit=max(micro_batch * accum * steps, 4),
    )  # fmt: skip
    if preset_accum > 1:
        values["grad_accum_steps"] = accum
    if recipe == "clip_classifier":
        values["warmup_steps"] = 1
    if recipe == "cass_mm":
        values["head_epochs"] = 1
    if recipe == "fusion":
        values["feature_batch_size"] = micro_batch
    if recipe == "unimodal":
        values["text_epochs"] = 1
    return get_recipe(recipe).config_class.from_params(preset, **values)


def run_preset(recipe: str, preset: str, root: Path, micro_batch: int, **kwargs: Any) -> Any:
    """Runs :func:`run_config`'s config through the recipe's own ``run()``; returns its result."""
    from nbhelpers.train.recipes import get_recipe

    return get_recipe(recipe).run(run_config(recipe, preset, root, micro_batch, **kwargs))
