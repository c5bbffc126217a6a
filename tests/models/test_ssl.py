"""SSL backbones, DINO and Barlow Twins heads and the multi-crop wrapper."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from nbhelpers.models.ssl import (
    VIT_CONFIGS,
    Attention,
    BarlowTwinsProjector,
    DINOHead,
    MultiCropWrapper,
    OpenClipVisual,
    VisionTransformer,
    build_ssl_backbone,
)
from tests.helpers import register_open_clip_config


@pytest.mark.parametrize(("name", "dim"), [("resnet18", 512), ("resnet50", 2048)])
@pytest.mark.parametrize("size", [32, 64])
def test_resnet_shapes_and_automatic_small_stem(name, dim, size):
    model = build_ssl_backbone(name, image_size=size).eval()
    assert model.embed_dim == dim
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, nn.Identity) and isinstance(model.fc, nn.Identity)
    with torch.no_grad():
        assert model(torch.randn(2, 3, size, size)).shape == (2, dim)


def test_large_images_keep_the_imagenet_stem_unless_asked():
    model = build_ssl_backbone("resnet18", image_size=96)
    assert model.conv1.kernel_size == (7, 7) and isinstance(model.maxpool, nn.MaxPool2d)
    forced = build_ssl_backbone("resnet18", image_size=96, small_image=True)
    assert forced.conv1.kernel_size == (3, 3)
    # The reason for the stem: the last stage of a 32-px image stays 4x4 instead of 1x1.
    small = build_ssl_backbone("resnet18", image_size=32).eval()
    feats = {}

    def keep_shape(module, inputs, output):
        feats["layer4"] = tuple(output.shape)

    small.layer4.register_forward_hook(keep_shape)
    with torch.no_grad():
        small(torch.randn(1, 3, 32, 32))
    assert feats["layer4"] == (1, 512, 4, 4)


def test_vit_tiny_p4_is_deit_tiny_on_4px_patches_for_cifar():
    model = build_ssl_backbone("vit_tiny_p4", image_size=32).eval()
    assert model.patch_size == 4 and model.grid == 8  # 64 patch tokens + CLS for a 32-px image
    assert (model.embed_dim, len(model.blocks), model.num_heads) == (192, 12, 3)
    tiny = build_ssl_backbone("vit_tiny", image_size=32)
    n_params = sum(p.numel() for p in model.parameters())
    # vit_tiny's weights, but a 4x4 patch embedding and 65 position embeddings instead of 8x8 and 17.
    assert n_params == sum(p.numel() for p in tiny.parameters()) - 3 * (64 - 16) * 192 + (65 - 17) * 192
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 192)
        assert model(torch.randn(2, 3, 16, 16)).shape == (2, 192)  # DINO's 16-px local crops


@pytest.mark.parametrize("size", [32, 64])
def test_vit_shapes_patch_choice_and_local_crops(size):
    model = build_ssl_backbone("vit_test", image_size=size).eval()
    assert model.embed_dim == 32 and model.patch_size == 8 and model.grid == size // 8
    with torch.no_grad():
        assert model(torch.randn(2, 3, size, size)).shape == (2, 32)
        # A local crop half the size goes through the same network via resized position embeddings.
        assert model(torch.randn(3, 3, size // 2, size // 2)).shape == (3, 32)
    assert build_ssl_backbone("vit_test", image_size=224).patch_size == 16
    with pytest.raises(ValueError, match="multiple of the patch"):
        model(torch.randn(1, 3, 30, 30))


def test_vit_registry_shapes():
    tiny = VIT_CONFIGS["vit_tiny"]
    assert (tiny.embed_dim, tiny.depth, tiny.num_heads, tiny.mlp_dim) == (192, 12, 3, 768)
    model = build_ssl_backbone("vit_tiny", image_size=32)
    # DeiT-Tiny's 5.5M parameters, plus 17 position embeddings instead of 197 (32 px, 8-px patches).
    n_params = sum(p.numel() for p in model.parameters())
    blocks = 12 * (4 * 192 + 192 * 576 + 576 + 192 * 192 + 192 + 192 * 768 + 768 + 768 * 192 + 192)
    assert n_params == blocks + 2 * 192 + (3 * 8 * 8 * 192 + 192) + 192 + 17 * 192
    assert len(build_ssl_backbone("vit_tiny_demo", image_size=32).blocks) < 12


def test_vit_resized_position_embedding_is_the_identity_at_the_training_size():
    model = build_ssl_backbone("vit_test", image_size=32)
    torch.testing.assert_close(model._pos_embed(4, 4), model.pos_embed)
    assert model._pos_embed(2, 3).shape == (1, 1 + 6, 32)


def test_attention_weights_path_equals_the_fused_path_and_rows_sum_to_one():
    torch.manual_seed(0)
    attn = Attention(12, num_heads=3)
    x = torch.randn(2, 5, 12)
    fused, none = attn(x)
    explicit, weights = attn(x, return_attention=True)
    assert none is None and weights.shape == (2, 3, 5, 5)
    torch.testing.assert_close(fused, explicit, rtol=1e-5, atol=1e-6)
    # Plain reference for one head.
    q, k, _ = attn.qkv(x).chunk(3, dim=-1)
    ref = torch.softmax(q[..., 4:8] @ k[..., 4:8].transpose(1, 2) / math.sqrt(4), dim=-1)
    torch.testing.assert_close(weights[:, 1], ref)


def test_get_last_selfattention():
    torch.manual_seed(0)
    model = build_ssl_backbone("vit_test", image_size=32).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        attn = model.get_last_selfattention(x)
        local = model.get_last_selfattention(torch.randn(1, 3, 16, 24))
    assert attn.shape == (2, 2, 17, 17) and local.shape == (1, 2, 1 + 2 * 3, 1 + 2 * 3)
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, 2, 17))
    assert (attn >= 0).all()
    cls_map = attn[:, :, 0, 1:].reshape(2, 2, 4, 4)  # per-head map over the 4x4 patch grid
    assert cls_map.shape == (2, 2, 4, 4)


def test_open_clip_visual_tower(tmp_path):
    cfg = {
        "embed_dim": 24,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
        "text_cfg": {"context_length": 8, "vocab_size": 49408, "width": 16, "heads": 1, "layers": 1},
    }
    name = register_open_clip_config(tmp_path, "memelab-test-ssl", cfg)
    model = build_ssl_backbone("open_clip:" + name, image_size=64).eval()
    assert isinstance(model, OpenClipVisual) and model.embed_dim == 24
    assert model.visual.positional_embedding.shape == (1 + 8 * 8, 32)  # rebuilt for 64 px
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 24)
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 24)  # resized up to the tower's size


def test_unknown_backbone_and_pretrained_vit_raise():
    with pytest.raises(ValueError, match="ssl backbone"):
        build_ssl_backbone("vgg16", 32)
    with pytest.raises(ValueError, match="from scratch"):
        build_ssl_backbone("vit_tiny", 32, pretrained="dino")
    with pytest.raises(ValueError, match="must divide"):
        VisionTransformer(VIT_CONFIGS["vit_test"], image_size=36, patch_size=8)


@pytest.mark.parametrize("nlayers", [1, 3])
def test_dino_head(nlayers):
    torch.manual_seed(0)
    head = DINOHead(16, out_dim=50, hidden_dim=32, bottleneck_dim=8, nlayers=nlayers)
    assert head(torch.randn(4, 16)).shape == (4, 50)
    linears = [m for m in head.mlp.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == nlayers and all(m.bias is not None for m in linears)
    assert head.last_layer.bias is None
    weight = head.last_layer.weight  # recomputed from g and v by the parametrization
    torch.testing.assert_close(weight.norm(dim=1), torch.ones(50))
    g = head.last_layer.parametrizations.weight.original0
    assert not g.requires_grad
    # A step on v must leave every prototype at unit norm.
    opt = torch.optim.SGD([p for p in head.parameters() if p.requires_grad], lr=1.0)
    head(torch.randn(4, 16)).pow(2).sum().backward()
    opt.step()
    torch.testing.assert_close(head.last_layer.weight.norm(dim=1), torch.ones(50))
    # The bottleneck is L2-normalised, so every score is a cosine: |score| <= 1.
    assert head(torch.randn(64, 16) * 100).abs().max() <= 1 + 1e-5
    assert DINOHead(
        16, 10, 32, 8, norm_last_layer=False
    ).last_layer.parametrizations.weight.original0.requires_grad


def test_barlow_twins_projector():
    proj = BarlowTwinsProjector(16, sizes=(32, 32, 8))
    kinds = [type(m).__name__ for m in proj]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert [m.out_features for m in proj if isinstance(m, nn.Linear)] == [32, 32, 8]
    assert all(m.bias is None for m in proj if isinstance(m, nn.Linear))
    assert proj(torch.randn(5, 16)).shape == (5, 8) and proj.out_dim == 8
    with pytest.raises(ValueError):
        BarlowTwinsProjector(16, sizes=())


class _CountingBackbone(nn.Module):
    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone, self.batches = backbone, []

    def forward(self, x):
        self.batches.append(tuple(x.shape))
        return self.backbone(x)


def test_multicrop_wrapper_batches_by_resolution_and_equals_one_by_one():
    torch.manual_seed(0)
    vit = build_ssl_backbone("vit_test", image_size=32)
    backbone = _CountingBackbone(vit)
    head = DINOHead(32, out_dim=10, hidden_dim=16, bottleneck_dim=8)
    model = MultiCropWrapper(backbone, head).eval()
    crops = [torch.randn(2, 3, 32, 32) for _ in range(2)] + [torch.randn(2, 3, 16, 16) for _ in range(3)]
    with torch.no_grad():
        out = model(crops)
        one_by_one = torch.cat([head(vit(c)) for c in crops])
    assert backbone.batches == [(4, 3, 32, 32), (6, 3, 16, 16)]
    assert out.shape == (10, 10)
    torch.testing.assert_close(out, one_by_one, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        assert model(crops[0]).shape == (2, 10)
