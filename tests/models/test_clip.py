"""Building open_clip models and loading local weights through create_clip."""

from __future__ import annotations

import open_clip
import pytest
import torch
from open_clip import factory
from PIL import Image
from safetensors.torch import save_file

from nbhelpers.lora import add_lora
from nbhelpers.models.clip import (
    MODEL_CONFIG_DIR,
    TINY_RN,
    TINY_VIT,
    create_clip,
    load_clip_state_dict,
    register_model_configs,
)


def _features(model, seed=0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(2, 3, 64, 64, generator=generator)
    tokens = torch.randint(1, 49406, (2, 32), generator=generator)
    model.eval()
    with torch.no_grad():
        return torch.cat([model.encode_image(images), model.encode_text(tokens)], dim=1)


def test_register_model_configs_is_idempotent():
    register_model_configs()
    register_model_configs()
    assert {TINY_VIT, TINY_RN} <= set(open_clip.list_models())
    assert factory._MODEL_CONFIG_PATHS.count(MODEL_CONFIG_DIR) <= 1


@pytest.mark.parametrize("name", [TINY_VIT, TINY_RN])
def test_create_clip_tiny_shapes(name):
    model, preprocess_train, preprocess_val, tokenizer = create_clip(name)
    image = Image.new("RGB", (100, 80), (200, 30, 30))
    assert preprocess_train(image).shape == preprocess_val(image).shape == (3, 64, 64)
    tokens = tokenizer(["a red square", "a caption"])
    assert tokens.shape == (2, 32) and tokens.dtype == torch.long
    batch = torch.stack([preprocess_val(image)] * 2)
    image_features, text_features, logit_scale = model(batch, tokens)
    assert image_features.shape == text_features.shape == (2, 64)
    # open_clip returns normalised features from forward and logit_scale = exp(log(1 / 0.07)).
    torch.testing.assert_close(image_features.norm(dim=-1), torch.ones(2))
    assert logit_scale.item() == pytest.approx(1 / 0.07, rel=1e-5)


def test_state_dict_round_trip(tmp_path):
    model = create_clip(TINY_VIT)[0]
    path = tmp_path / "weights.pt"
    torch.save(model.state_dict(), path)
    loaded = create_clip(TINY_VIT, pretrained=path)[0]
    assert not torch.equal(_features(create_clip(TINY_VIT)[0]), _features(model))  # fresh init differs
    assert torch.equal(_features(loaded), _features(model))


def test_open_clip_train_checkpoint_with_ddp_prefix(tmp_path):
    model = create_clip(TINY_RN)[0]
    optimizer = torch.optim.AdamW(model.parameters())
    checkpoint = {
        "epoch": 3,
        "name": "memelab-run",
        "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
    }
    path = tmp_path / "epoch_3.pt"
    torch.save(checkpoint, path)
    assert all(not k.startswith("module.") for k in load_clip_state_dict(path))
    loaded = create_clip(TINY_RN, pretrained=str(path))[0]
    assert torch.equal(_features(loaded), _features(model))


def test_safetensors_round_trip(tmp_path):
    model = create_clip(TINY_VIT)[0]
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    assert torch.equal(_features(create_clip(TINY_VIT, pretrained=path)[0]), _features(model))


def test_unknown_tag_names_the_model_and_allowed_tags():
    with pytest.raises(ValueError, match="ViT-B-32") as error:
        create_clip("ViT-B-32", pretrained="laion9000b")
    assert "laion2b_s34b_b79k" in str(error.value)
    with pytest.raises(ValueError, match="allowed tags: none"):
        create_clip(TINY_VIT, pretrained="openai")


def test_bad_model_precision_and_mismatched_file(tmp_path):
    with pytest.raises(ValueError, match="unknown model"):
        create_clip("ViT-Q-99")
    with pytest.raises(ValueError, match="precision"):
        create_clip(TINY_VIT, precision="fp8")
    path = tmp_path / "vit.pt"
    torch.save(create_clip(TINY_VIT)[0].state_dict(), path)
    with pytest.raises(ValueError, match="does not match the architecture 'memelab-tiny-rn'"):
        create_clip(TINY_RN, pretrained=path)
    (tmp_path / "junk.pt").write_bytes(b"")
    with pytest.raises(Exception):  # noqa: B017 - torch's own error for a truncated file
        load_clip_state_dict(tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError):
        load_clip_state_dict(tmp_path / "missing.pt")


def test_unmerged_lora_checkpoint_is_refused(tmp_path):
    model = add_lora(create_clip(TINY_VIT)[0])
    path = tmp_path / "lora.pt"
    torch.save(model.state_dict(), path)
    with pytest.raises(ValueError, match="merge_lora"):
        create_clip(TINY_VIT, pretrained=path)
