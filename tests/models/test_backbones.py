"""FeatureBackbone: every family built from a tiny random config, saved, and loaded back by name.

The reference for each family is the model's own image-text score (``logits_per_image`` / ``itm_score``)
computed by its official ``forward``: our pooled features, L2-normalised, must reproduce it.
"""

from __future__ import annotations

import json

import numpy as np
import open_clip
import pytest
import torch
import transformers
from PIL import Image

from nbhelpers.models.backbones import (
    BACKBONE_PRESETS,
    FeatureBackbone,
    HFBlip2Backbone,
    HFBlipBackbone,
    HFClipBackbone,
    OpenClipBackbone,
    build_backbone,
    make_image_transform,
)
from tests.helpers import register_open_clip_config, write_bert_vocab

TEXTS = ["a cat on a mat", "the dog is not a cat", "cat"]
WORDS = ["a", "cat", "on", "mat", "the", "dog", "is", "not"]
# The vision tower of every Hugging Face family below: 32 px images in 8 px patches, two layers of width 32.
TINY_VISION = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    image_size=32,
    patch_size=8,
)


def _images(n: int, size: int = 40) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (size, size + 8, 3), dtype=np.uint8)) for _ in range(n)]


def _bytes_to_unicode() -> list[str]:
    """GPT-2's byte -> printable character table, which CLIP's BPE vocabulary is written in."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars, extra = printable[:], 0
    for b in range(256):
        if b not in printable:
            chars.append(256 + extra)
            extra += 1
    return [chr(c) for c in chars]


def _write_clip_tokenizer(folder) -> transformers.PreTrainedTokenizerBase:
    """A real CLIPTokenizer whose BPE knows single bytes plus two merges (``cat``)."""
    chars = _bytes_to_unicode()
    vocab = {c: i for i, c in enumerate(chars)}
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    for token in ("ca", "cat</w>", "<|startoftext|>", "<|endoftext|>"):
        vocab[token] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\nc a\nca t</w>\n")
    tokenizer = transformers.CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    tokenizer.save_pretrained(folder)
    return tokenizer


def _write_bert_tokenizer(folder) -> transformers.PreTrainedTokenizerBase:
    tokenizer = write_bert_vocab(folder, WORDS)
    tokenizer.save_pretrained(folder)
    return tokenizer


def _check_frozen(backbone: FeatureBackbone) -> None:
    assert not any(p.requires_grad for p in backbone.parameters())
    backbone.train()
    assert not backbone.training and not backbone.model.training
    feats = backbone.encode_image(torch.randn(2, 3, backbone.image_size, backbone.image_size))
    assert not feats.requires_grad


def _pixel_batch(backbone: FeatureBackbone, n: int) -> torch.Tensor:
    return torch.stack([backbone.image_transform(img) for img in _images(n)])


def test_image_transform_normalises_with_the_given_statistics():
    transform = make_image_transform(8, mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0))
    grey = Image.new("L", (16, 12), color=255)  # a 1-channel image must still give 3 channels
    out = transform(grey)
    assert out.shape == (3, 8, 8) and out.dtype == torch.float32
    torch.testing.assert_close(out, torch.tensor([1.0, 3.0, 1.0]).view(3, 1, 1).expand(3, 8, 8))
    uint8 = torch.full((3, 10, 10), 0, dtype=torch.uint8)
    torch.testing.assert_close(transform(uint8)[:, 0, 0], torch.tensor([-1.0, -1.0, 0.0]))
    with pytest.raises(ValueError, match="interpolation"):
        make_image_transform(8, (0, 0, 0), (1, 1, 1), interpolation="lanczos")


def test_hf_clip_roundtrip_matches_the_models_own_scores(tmp_path):
    tokenizer = _write_clip_tokenizer(tmp_path)
    config = transformers.CLIPConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=16,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=TINY_VISION,
        projection_dim=24,
    )
    torch.manual_seed(0)
    reference = transformers.CLIPModel(config).eval()
    reference.save_pretrained(tmp_path)
    transformers.CLIPImageProcessor(
        size={"shortest_edge": 32},
        crop_size={"height": 32, "width": 32},
        image_mean=[0.5] * 3,
        image_std=[0.25] * 3,
    ).save_pretrained(tmp_path)

    backbone = build_backbone("hf:" + str(tmp_path))
    assert isinstance(backbone, HFClipBackbone)
    assert (backbone.image_dim, backbone.text_dim, backbone.image_size, backbone.context_length) == (
        24,
        24,
        32,
        16,
    )
    pixels = _pixel_batch(backbone, 2)
    assert pixels.shape == (2, 3, 32, 32)
    # The folder's own processor statistics are used, not the OpenAI defaults.
    assert backbone.image_transform.transforms[-1].mean == [0.5] * 3

    tokens = backbone.tokenize(TEXTS)
    assert tokens["input_ids"].shape == (3, 16) and tokens["attention_mask"].shape == (3, 16)
    img, txt = backbone.encode_image(pixels), backbone.encode_text(TEXTS)
    assert img.shape == (2, 24) and txt.shape == (3, 24)
    torch.testing.assert_close(backbone.encode_text(tokens), txt)

    with torch.no_grad():
        out = reference(pixel_values=pixels, **tokens)
    ours = reference.logit_scale.exp() * nn_normalize(img) @ nn_normalize(txt).T
    torch.testing.assert_close(ours, out.logits_per_image, rtol=1e-4, atol=1e-5)
    _check_frozen(backbone)


def nn_normalize(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def test_hf_blip_roundtrip_matches_itc_scores(tmp_path):
    tokenizer = _write_bert_tokenizer(tmp_path)
    config = transformers.BlipConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=32,
            encoder_hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=64,
        ),
        vision_config=TINY_VISION,
        image_text_hidden_size=20,
    )
    torch.manual_seed(0)
    reference = transformers.BlipForImageTextRetrieval(config).eval()
    reference.save_pretrained(tmp_path)

    backbone = build_backbone("hf:" + str(tmp_path))
    assert isinstance(backbone, HFBlipBackbone)
    assert (backbone.image_dim, backbone.text_dim, backbone.context_length) == (20, 20, 35)
    pixels = _pixel_batch(backbone, 3)
    tokens = backbone.tokenize(TEXTS)
    assert tokens["input_ids"][0, :3].tolist() == [2, 5, 6]  # [CLS] a cat
    img, txt = backbone.encode_image(pixels), backbone.encode_text(TEXTS)
    assert img.shape == (3, 20) and txt.shape == (3, 20)
    with torch.no_grad():
        score = reference(
            input_ids=tokens["input_ids"],
            attention_mask=tokens["attention_mask"],
            pixel_values=pixels,
            use_itm_head=False,
        ).itm_score
    torch.testing.assert_close(nn_normalize(img) @ nn_normalize(txt).T, score, rtol=1e-4, atol=1e-5)
    _check_frozen(backbone)


def test_hf_blip2_roundtrip_matches_itc_features(tmp_path):
    tokenizer = _write_bert_tokenizer(tmp_path)
    config = transformers.Blip2Config(
        vision_config=TINY_VISION,
        qformer_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            encoder_hidden_size=32,
            use_qformer_text_input=True,  # as in blip2-itm-vit-g: the Q-Former also encodes text
        ),
        text_config=dict(
            model_type="opt",
            vocab_size=50,
            hidden_size=16,
            num_hidden_layers=1,
            ffn_dim=32,
            num_attention_heads=2,
            word_embed_proj_dim=16,
        ),
        num_query_tokens=4,
        image_text_hidden_size=12,
    )
    torch.manual_seed(0)
    reference = transformers.Blip2ForImageTextRetrieval(config).eval()
    reference.save_pretrained(tmp_path)

    backbone = build_backbone("hf:" + str(tmp_path))
    assert isinstance(backbone, HFBlip2Backbone)
    assert (backbone.image_dim, backbone.text_dim) == (12, 12)
    pixels = _pixel_batch(backbone, 2)
    tokens = backbone.tokenize(TEXTS)
    img, txt = backbone.encode_image(pixels), backbone.encode_text(tokens)
    assert img.shape == (2, 12) and txt.shape == (3, 12)
    with torch.no_grad():
        out = reference(
            input_ids=tokens["input_ids"],
            attention_mask=tokens["attention_mask"],
            pixel_values=pixels,
            use_image_text_matching_head=False,
        )
    # out.image_embeds: (B, queries, D) normalised per query; ours is their mean.
    assert out.image_embeds.shape == (2, 4, 12)
    torch.testing.assert_close(img, out.image_embeds.mean(dim=1), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(nn_normalize(txt), out.text_embeds, rtol=1e-4, atol=1e-5)
    _check_frozen(backbone)


@pytest.fixture(scope="module")
def tiny_open_clip(tmp_path_factory):
    cfg = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
        "text_cfg": {"context_length": 12, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
    }
    return register_open_clip_config(tmp_path_factory.mktemp("open_clip_cfg"), "memelab-test-backbone", cfg)


def test_open_clip_loads_a_local_checkpoint_through_pretrained(tiny_open_clip, tmp_path):
    torch.manual_seed(1)
    reference = open_clip.create_model(tiny_open_clip).eval()
    ckpt = tmp_path / "tiny.pt"
    torch.save(reference.state_dict(), ckpt)

    backbone = build_backbone("open_clip:" + tiny_open_clip, pretrained=str(ckpt))
    assert isinstance(backbone, OpenClipBackbone)
    assert (backbone.image_dim, backbone.text_dim, backbone.image_size, backbone.context_length) == (
        16,
        16,
        32,
        12,
    )
    for (name, got), want in zip(
        backbone.model.state_dict().items(), reference.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(got, want, msg=name)
    pixels = _pixel_batch(backbone, 2)
    tokens = backbone.tokenize(TEXTS)
    assert tokens["input_ids"].shape == (3, 12)
    with torch.no_grad():
        torch.testing.assert_close(backbone.encode_image(pixels), reference.encode_image(pixels))
        torch.testing.assert_close(backbone.encode_text(TEXTS), reference.encode_text(tokens["input_ids"]))
    _check_frozen(backbone)


def test_trainable_backbone_gets_gradients_and_train_mode(tiny_open_clip):
    backbone = build_backbone("open_clip:" + tiny_open_clip, trainable=True)
    backbone.train()
    assert backbone.model.training
    feats = backbone.encode_image(torch.randn(2, 3, 32, 32))
    feats.sum().backward()
    assert backbone.model.visual.conv1.weight.grad is not None
    backbone.set_trainable(False)
    assert not backbone.training and not backbone.encode_text(["cat"]).requires_grad


def test_build_backbone_rejects_bad_names():
    with pytest.raises(ValueError, match="preset"):
        build_backbone("ViT-B-32")
    with pytest.raises(ValueError, match="prefix"):
        build_backbone("timm:resnet50")
    with pytest.raises(ValueError, match="open_clip"):
        build_backbone("hf:openai/clip-vit-base-patch32", pretrained="openai")
    assert all(p.name.split(":")[0] in {"open_clip", "hf"} for p in BACKBONE_PRESETS.values())
