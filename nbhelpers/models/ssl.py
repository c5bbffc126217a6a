"""Self-supervised image backbones, projection heads and the multi-crop wrapper.

* Backbones (``build_ssl_backbone``): torchvision ResNet-18/50 (and ResNet-152 through ``build_resnet``) with the classifier removed and an optional
  CIFAR stem for small images (He et al., 2016; the stem as in SimCLR's CIFAR recipe, Chen et al., 2020); a
  ViT (Dosovitskiy et al., 2021) written as DINO's so its last-layer attention can be read
  (``get_last_selfattention``, the maps of Caron et al., 2021, Fig. 1); open_clip visual towers.
  Every backbone maps ``(B, 3, H, W)`` to ``(B, embed_dim)`` and has ``.embed_dim``.
* Heads: ``DINOHead`` (Caron et al., 2021, "Emerging Properties in Self-Supervised Vision Transformers")
  and ``BarlowTwinsProjector`` (Zbontar et al., 2021, "Barlow Twins: Self-Supervised Learning via
  Redundancy Reduction").
* ``MultiCropWrapper``: runs the crops of one resolution in one batch (DINO's multi-crop).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import open_clip
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from nbhelpers.models.clip import register_model_configs

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Images at most this size get the small-image stem (ResNet) or 8-pixel patches (ViT) by default.
SMALL_IMAGE_MAX = 64
#: The torchvision ResNets :func:`build_resnet` builds, and their widths (ResNet-152: the unimodal image model).
RESNETS = {"resnet18": 512, "resnet50": 2048, "resnet152": 2048}


# --------------------------------------------------------------------------------------------- ResNet


def use_small_image_stem(resnet: torchvision.models.ResNet) -> torchvision.models.ResNet:
    """Replaces the 7x7/2 conv + max-pool stem by one 3x3/1 conv, in place.

    ImageNet's stem divides the resolution by 4 before the first block: a 32-px image would reach the last
    stage at 1x1. The CIFAR stem keeps it at 4x4 (32 px) or 8x8 (64 px). The new conv is freshly
    initialised, so pretrained ImageNet weights lose their first layer.
    """
    out_channels = resnet.conv1.out_channels
    resnet.conv1 = nn.Conv2d(3, out_channels, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(resnet.conv1.weight, mode="fan_out", nonlinearity="relu")
    resnet.maxpool = nn.Identity()
    return resnet


def build_resnet(name: str, small_image: bool, weights: str | None = None) -> torchvision.models.ResNet:
    """A torchvision ResNet whose ``fc`` is ``Identity``: ``(B, 3, H, W) -> (B, embed_dim)``.

    Args:
        name: a key of :data:`RESNETS`: ``"resnet18"`` (512-d), ``"resnet50"`` or ``"resnet152"`` (2048-d).
        small_image: use the CIFAR stem (``use_small_image_stem``).
        weights: a torchvision weights name such as ``"IMAGENET1K_V1"``, or None for random init.

    Raises:
        ValueError: if ``name`` is not a supported ResNet.
    """
    if name not in RESNETS:
        raise ValueError(f"resnet must be one of {sorted(RESNETS)}, got {name!r}")
    resnet = torchvision.models.get_model(name, weights=weights)
    if small_image:
        use_small_image_stem(resnet)
    resnet.embed_dim = resnet.fc.in_features
    resnet.fc = nn.Identity()
    return resnet


# ------------------------------------------------------------------------------------------------ ViT


@dataclass(frozen=True)
class ViTConfig:
    """A ViT's shape. ``patch_size=None`` picks 8 for small images and 16 otherwise."""

    embed_dim: int
    depth: int
    num_heads: int
    mlp_dim: int
    patch_size: int | None = None


#: ViT architectures; ``vit_tiny`` is DeiT-Tiny's shape (Touvron et al., 2021), ``*_demo`` fits a CPU.
#: ``vit_tiny_p4`` is ViT-T/4: DeiT-Tiny on 4-px patches, 64 tokens for a 32-px CIFAR image (the patch size
#: of ViTs trained from scratch on CIFAR, e.g. solo-learn's and Lee et al., 2021, "Vision Transformer for
#: Small-Size Datasets").
VIT_CONFIGS: dict[str, ViTConfig] = {
    "vit_tiny": ViTConfig(embed_dim=192, depth=12, num_heads=3, mlp_dim=768),
    "vit_tiny_p4": ViTConfig(embed_dim=192, depth=12, num_heads=3, mlp_dim=768, patch_size=4),
    "vit_tiny_demo": ViTConfig(embed_dim=192, depth=4, num_heads=3, mlp_dim=768),
    "vit_small": ViTConfig(embed_dim=384, depth=12, num_heads=6, mlp_dim=1536),
    "vit_test": ViTConfig(embed_dim=32, depth=2, num_heads=2, mlp_dim=64),
}


class Attention(nn.Module):
    """Multi-head self-attention that can return its attention weights.

    Args:
        dim: token width.
        num_heads: number of heads; must divide ``dim``.

    Raises:
        ValueError: if ``num_heads`` does not divide ``dim``.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"num_heads ({num_heads}) must divide dim ({dim})")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(
        self, x: torch.Tensor, return_attention: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attends ``x`` (B, N, D) to itself.

        Returns:
            The output ``(B, N, D)`` and, when ``return_attention``, the weights ``(B, heads, N, N)``
            (softmax over the last axis), else None.
        """
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, heads, N, head_dim)
        if return_attention:
            attn = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).softmax(dim=-1)
            out = attn @ v
        else:
            attn = None
            out = F.scaled_dot_product_attention(q, k, v)  # fused kernel when the weights are not needed
        return self.proj(out.transpose(1, 2).reshape(b, n, d)), attn


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(LN(x))``, then ``x + MLP(LN(x))``."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, dim))

    def forward(
        self, x: torch.Tensor, return_attention: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        y, attn = self.attn(self.norm1(x), return_attention)
        x = x + y
        return x + self.mlp(self.norm2(x)), attn


class VisionTransformer(nn.Module):
    """A ViT with a CLS token whose output is the normalised CLS embedding, as DINO's.

    Position embeddings are learnt for ``image_size`` and bicubically resized for other inputs, so DINO's
    smaller local crops go through the same network.

    Args:
        config: the architecture.
        image_size: the side the position embeddings are learnt for.
        patch_size: side of a patch; must divide ``image_size``.

    Raises:
        ValueError: if ``patch_size`` does not divide ``image_size``.
    """

    def __init__(self, config: ViTConfig, image_size: int, patch_size: int) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"patch_size ({patch_size}) must divide image_size ({image_size})")
        self.embed_dim = config.embed_dim
        self.patch_size = patch_size
        self.grid = image_size // patch_size
        self.num_heads = config.num_heads
        self.patch_embed = nn.Conv2d(3, config.embed_dim, kernel_size=patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid**2, config.embed_dim))
        self.blocks = nn.ModuleList(
            Block(config.embed_dim, config.num_heads, config.mlp_dim) for _ in range(config.depth)
        )
        self.norm = nn.LayerNorm(config.embed_dim, eps=1e-6)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.apply(_init_vit_weights)

    def _pos_embed(self, gh: int, gw: int) -> torch.Tensor:
        if (gh, gw) == (self.grid, self.grid):
            return self.pos_embed
        cls_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        d = patch_pos.shape[-1]
        # (1, g*g, D) -> (1, D, g, g) -> resize -> (1, gh*gw, D)
        patch_pos = patch_pos.reshape(1, self.grid, self.grid, d).permute(0, 3, 1, 2)
        patch_pos = F.interpolate(patch_pos, size=(gh, gw), mode="bicubic", align_corners=False)
        return torch.cat([cls_pos, patch_pos.permute(0, 2, 3, 1).reshape(1, gh * gw, d)], dim=1)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Embeds ``(B, 3, H, W)`` images as ``(B, 1 + (H/p) * (W/p), D)`` tokens, CLS first.

        Raises:
            ValueError: if the patch size does not divide ``H`` and ``W``.
        """
        h, w = x.shape[-2:]
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {self.patch_size}")
        patches = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, D, gh, gw) -> (B, gh*gw, D)
        tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), patches], dim=1)
        return tokens + self._pos_embed(h // self.patch_size, w // self.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> ``(B, embed_dim)``, the normalised CLS token."""
        x = self.tokens(x)
        for block in self.blocks:
            x, _ = block(x)
        return self.norm(x)[:, 0]

    def get_last_selfattention(self, x: torch.Tensor) -> torch.Tensor:
        """The last block's attention weights, as DINO's attention maps.

        Args:
            x: ``(B, 3, H, W)`` images.

        Returns:
            ``(B, heads, N, N)`` with ``N = 1 + (H/p) * (W/p)``; row 0 is the CLS token's attention, and
            ``[:, :, 0, 1:]`` reshaped to ``(H/p, W/p)`` is the map per head.
        """
        x = self.tokens(x)
        for block in self.blocks[:-1]:
            x, _ = block(x)
        _, attn = self.blocks[-1](x, return_attention=True)
        return attn


def _init_vit_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


# ------------------------------------------------------------------------------------------- open_clip


class OpenClipVisual(nn.Module):
    """An open_clip visual tower as an SSL backbone: ``(B, 3, H, W) -> (B, output_dim)``.

    open_clip towers have fixed-size position embeddings (ViT) or attention pooling (ResNet), so inputs of
    another size (DINO's local crops) are bilinearly resized to the tower's ``image_size`` first.

    Args:
        model_name: an open_clip architecture.
        image_size: the size the tower is built for (``force_image_size``; pretrained position embeddings
            are resized to it by open_clip when loading).
        pretrained: an open_clip pretrained tag or checkpoint path, or None for random init.
    """

    def __init__(self, model_name: str, image_size: int, pretrained: str | None = None) -> None:
        super().__init__()
        register_model_configs()  # memelab's tiny architectures
        model = open_clip.create_model(model_name, pretrained=pretrained, force_image_size=image_size)
        self.visual = model.visual
        self.image_size = image_size
        self.embed_dim = self.visual.output_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(
                x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False
            )
        return self.visual(x)


def build_ssl_backbone(
    name: str, image_size: int, small_image: bool | None = None, pretrained: str | None = None
) -> nn.Module:
    """Builds a backbone ``(B, 3, H, W) -> (B, embed_dim)`` with an ``embed_dim`` attribute.

    Args:
        name: ``"resnet18"``, ``"resnet50"``, a key of ``VIT_CONFIGS``, or ``"open_clip:<model>"``.
        image_size: the (global crop) size the model will see.
        small_image: ResNet: the CIFAR stem; ViT: 8-px patches (unless the config fixes the patch).
            None chooses it when ``image_size <= 64``. Ignored for open_clip towers.
        pretrained: torchvision weights name for a ResNet, open_clip tag or path for open_clip; ViTs are
            trained from scratch.

    Returns:
        The backbone.

    Raises:
        ValueError: if ``name`` is unknown, or ``pretrained`` is given for a ViT.
    """
    small = image_size <= SMALL_IMAGE_MAX if small_image is None else small_image
    if name.startswith("open_clip:"):
        return OpenClipVisual(name.removeprefix("open_clip:"), image_size, pretrained)
    if name in ("resnet18", "resnet50"):
        return build_resnet(name, small, weights=pretrained)
    if name in VIT_CONFIGS:
        if pretrained is not None:
            raise ValueError(f"ViTs here are trained from scratch; got pretrained={pretrained!r} for {name}")
        config = VIT_CONFIGS[name]
        patch = config.patch_size or (8 if small else 16)
        return VisionTransformer(config, image_size, patch)
    raise ValueError(
        f"ssl backbone must be 'resnet18', 'resnet50', one of {sorted(VIT_CONFIGS)} or 'open_clip:<model>', "
        f"got {name!r}"
    )


# ---------------------------------------------------------------------------------------------- heads


class DINOHead(nn.Module):
    """DINO's projection head: MLP -> L2-normalised bottleneck -> weight-normalised prototypes.

    Args:
        in_dim: backbone width.
        out_dim: number of prototypes K (65,536 in the paper).
        hidden_dim: MLP width.
        bottleneck_dim: width of the normalised bottleneck.
        nlayers: MLP depth (1 = one Linear to the bottleneck).
        norm_last_layer: fix the prototype norms at 1 (the paper's setting for ViT-S; helps stability).
        use_bn: BatchNorm after the hidden Linears (the paper uses it for ResNets only).

    Raises:
        ValueError: if ``nlayers < 1``.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        nlayers: int = 3,
        norm_last_layer: bool = True,
        use_bn: bool = False,
    ) -> None:
        super().__init__()
        if nlayers < 1:
            raise ValueError(f"nlayers must be >= 1, got {nlayers}")
        if nlayers == 1:
            self.mlp = nn.Linear(in_dim, bottleneck_dim)
        else:
            layers: list[nn.Module] = []
            dims = [in_dim] + [hidden_dim] * (nlayers - 1)
            for a, b in zip(dims[:-1], dims[1:], strict=True):
                layers += [nn.Linear(a, b), *([nn.BatchNorm1d(b)] if use_bn else []), nn.GELU()]
            layers.append(nn.Linear(hidden_dim, bottleneck_dim))
            self.mlp = nn.Sequential(*layers)
        self.mlp.apply(_init_vit_weights)
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        magnitude = self.last_layer.parametrizations.weight.original0  # g, (out_dim, 1)
        with torch.no_grad():
            magnitude.fill_(1.0)
        magnitude.requires_grad_(not norm_last_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_dim)`` -> ``(B, out_dim)`` prototype scores."""
        x = F.normalize(self.mlp(x), dim=-1, p=2)
        return self.last_layer(x)


class BarlowTwinsProjector(nn.Sequential):
    """Barlow Twins' projector: ``(Linear -> BN -> ReLU)`` blocks, then a last Linear.

    As the reference code, no Linear has a bias (each is followed by BatchNorm, or by the loss's own
    batch standardisation for the last one).

    Args:
        in_dim: backbone width.
        sizes: widths of the Linears; the last one is the embedding size (8192 in the paper).

    Raises:
        ValueError: if ``sizes`` is empty.
    """

    def __init__(self, in_dim: int, sizes: Sequence[int] = (8192, 8192, 8192)) -> None:
        if not sizes:
            raise ValueError("sizes must hold at least one width")
        dims = [in_dim, *sizes]
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-2], dims[1:-1], strict=True):
            layers += [nn.Linear(a, b, bias=False), nn.BatchNorm1d(b), nn.ReLU(inplace=True)]
        layers.append(nn.Linear(dims[-2], dims[-1], bias=False))
        super().__init__(*layers)
        self.out_dim = dims[-1]


class MultiCropWrapper(nn.Module):
    """Runs a list of crops through ``backbone`` then ``head``, one backbone call per resolution.

    As DINO's: consecutive crops of the same size are concatenated along the batch (one forward for the
    global crops, one for the local ones); the backbone outputs of all crops go through the head together.

    Args:
        backbone: ``(B, 3, H, W) -> (B, D)``.
        head: ``(N, D) -> (N, K)``.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, crops: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """Head outputs of all crops.

        Args:
            crops: one ``(B, 3, H, W)`` tensor or a list of them (sizes may differ between crops).

        Returns:
            ``(len(crops) * B, K)``, crop by crop: rows ``i*B:(i+1)*B`` belong to ``crops[i]``.
        """
        if isinstance(crops, torch.Tensor):
            crops = [crops]
        features, start = [], 0
        while start < len(crops):
            end = start + 1
            while end < len(crops) and crops[end].shape[-2:] == crops[start].shape[-2:]:
                end += 1
            features.append(self.backbone(torch.cat(list(crops[start:end]))))
            start = end
        return self.head(torch.cat(features))
