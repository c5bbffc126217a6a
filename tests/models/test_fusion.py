"""Hate-CLIPper fusion head: shapes, the interaction matrix against an einsum, and what each fusion can fit."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nbhelpers.models.backbones import build_backbone
from nbhelpers.models.fusion import FusionHead, HatefulMemesClassifier, binary_logit_loss
from tests.helpers import register_open_clip_config


@pytest.mark.parametrize(("fusion", "fused_dim"), [("concat", 2 * 6), ("align", 6), ("cross", 6 * 6)])
@pytest.mark.parametrize("pre_output_layers", [0, 1, 3])
def test_shapes(fusion, fused_dim, pre_output_layers):
    head = FusionHead(10, 7, fusion=fusion, map_dim=6, pre_output_layers=pre_output_layers, pre_output_dim=5)
    img, txt = torch.randn(4, 10), torch.randn(4, 7)
    assert head.fused_dim == fused_dim
    assert head.fuse(img, txt).shape == (4, fused_dim)
    assert head(img, txt).shape == (4,)
    linears = [m for m in head.pre_output if isinstance(m, torch.nn.Linear)]
    assert len(linears) == pre_output_layers
    assert head.output.in_features == (5 if pre_output_layers else fused_dim)


def test_fusions_equal_plain_references():
    torch.manual_seed(0)
    img, txt = torch.randn(5, 9), torch.randn(5, 3)
    fused = {}
    for fusion in ("concat", "align", "cross"):
        head = FusionHead(9, 3, fusion=fusion, map_dim=4).eval()
        torch.manual_seed(1)  # same projections for every fusion
        head.image_map[0].reset_parameters()
        head.text_map[0].reset_parameters()
        fused[fusion] = head.fuse(img, txt)
    a = head.image_map[0](img)
    b = head.text_map[0](txt)
    a = a / a.norm(dim=1, keepdim=True)
    b = b / b.norm(dim=1, keepdim=True)
    # Both projections are unit vectors, so the concatenation has norm sqrt(2) and the outer product norm 1.
    torch.testing.assert_close(fused["concat"].norm(dim=1), torch.full((5,), 2**0.5))
    torch.testing.assert_close(fused["cross"].norm(dim=1), torch.ones(5))
    torch.testing.assert_close(fused["concat"], torch.cat([a, b], 1))
    torch.testing.assert_close(fused["align"], a * b)
    torch.testing.assert_close(fused["cross"], torch.einsum("bi,bj->bij", a, b).reshape(5, 16))
    for i in range(4):
        for j in range(4):
            torch.testing.assert_close(fused["cross"][:, 4 * i + j], a[:, i] * b[:, j])
    # The diagonal of the interaction matrix is the align fusion.
    torch.testing.assert_close(fused["cross"].view(5, 4, 4).diagonal(dim1=1, dim2=2), fused["align"])


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="fusion"):
        FusionHead(4, 4, fusion="sum")
    with pytest.raises(ValueError, match="dropout"):
        FusionHead(4, 4, dropout=(0.1, 0.2))
    with pytest.raises(ValueError, match="positive"):
        FusionHead(4, 4, map_dim=0)
    with pytest.raises(ValueError, match="batches differ"):
        FusionHead(4, 4)(torch.randn(2, 4), torch.randn(3, 4))


def test_binary_logit_loss_skips_unlabelled_and_matches_the_formula():
    logits = torch.tensor([2.0, -1.0, 0.5, 3.0])
    labels = torch.tensor([1, 0, -1, 0])
    p = torch.sigmoid(logits[[0, 1, 3]])
    want = -(torch.log(p[0]) + torch.log(1 - p[1]) + torch.log(1 - p[2])) / 3
    torch.testing.assert_close(binary_logit_loss(logits, labels), want)
    weighted = -(2.0 * torch.log(p[0]) + torch.log(1 - p[1]) + torch.log(1 - p[2])) / 3
    torch.testing.assert_close(binary_logit_loss(logits, labels, pos_weight=2.0), weighted)
    empty = binary_logit_loss(logits.requires_grad_(), torch.full((4,), -1))
    assert empty.item() == 0.0 and empty.requires_grad
    with pytest.raises(ValueError, match="labels must be in"):
        binary_logit_loss(torch.zeros(2), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="same shape"):
        binary_logit_loss(torch.zeros(2), torch.zeros(3))


@pytest.fixture
def one_thread():
    # Tiny matmuls run ~20x slower when two threads fight other processes for two cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _fit_accuracy(fusion: str, pre_output_layers: int, steps: int = 300) -> float:
    """Trains a head on random features labelled by the sign of an image-text *interaction*."""
    gen = torch.Generator().manual_seed(0)
    img, txt = torch.randn(2048, 8, generator=gen), torch.randn(2048, 8, generator=gen)
    labels = (img[:, 0] * txt[:, 0] > 0).float()  # XOR of the two signs: neither modality alone says anything
    torch.manual_seed(0)
    head = FusionHead(8, 8, fusion=fusion, map_dim=8, pre_output_layers=pre_output_layers, dropout=(0, 0, 0))
    opt = torch.optim.Adam(head.parameters(), lr=2e-2)
    for _ in range(steps):
        opt.zero_grad()
        F.binary_cross_entropy_with_logits(head(img[:1536], txt[:1536]), labels[:1536]).backward()
        opt.step()
    with torch.no_grad():
        return ((head(img[1536:], txt[1536:]) > 0).float() == labels[1536:]).float().mean().item()


def test_cross_fusion_fits_an_interaction_that_linear_concat_cannot(one_thread):
    # With no hidden layer, cross is bilinear in the two projections and can express sign(img_0 * txt_0);
    # concat is linear in them and cannot do better than chance on an XOR.
    assert _fit_accuracy("cross", pre_output_layers=0) > 0.95
    assert _fit_accuracy("cross", pre_output_layers=1) > 0.95
    assert _fit_accuracy("concat", pre_output_layers=0) < 0.65


@pytest.fixture(scope="module")
def tiny_backbone(tmp_path_factory):
    cfg = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
        "text_cfg": {"context_length": 12, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }
    name = register_open_clip_config(tmp_path_factory.mktemp("open_clip_cfg"), "memelab-test-fusion", cfg)
    return build_backbone("open_clip:" + name, trainable=False)


def test_gradient_reaches_the_head_and_not_the_frozen_backbone(tiny_backbone):
    model = HatefulMemesClassifier(tiny_backbone, FusionHead(16, 16, fusion="cross", map_dim=4))
    model.train()
    assert model.head.training and not model.backbone.training
    tokens = tiny_backbone.tokenize(["a cat", "a dog", "hate"])
    logits = model(torch.randn(3, 3, 32, 32), tokens)
    assert logits.shape == (3,)
    binary_logit_loss(logits, torch.tensor([1, 0, 1])).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.head.parameters())
    assert all(p.grad is None for p in model.backbone.parameters())
    with pytest.raises(ValueError, match="backbone gives"):
        HatefulMemesClassifier(tiny_backbone, FusionHead(32, 16))


def test_a_head_over_a_label_set_has_one_logit_per_class():
    torch.manual_seed(0)
    head = FusionHead(10, 7, fusion="cross", map_dim=4, num_outputs=3).eval()
    img, txt = torch.randn(5, 10), torch.randn(5, 7)
    logits = head(img, txt)
    assert logits.shape == (5, 3) and head.output.out_features == 3
    torch.testing.assert_close(logits, head.output(head.pre_output(head.fuse(img, txt))))
    assert FusionHead(10, 7, num_outputs=2)(img, txt).shape == (5, 2)  # two classes: two logits, not one
    with pytest.raises(ValueError, match="num_outputs must be 1"):
        FusionHead(10, 7, num_outputs=0)
