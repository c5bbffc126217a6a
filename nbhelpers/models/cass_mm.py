"""The CASS-MM model: a CNN and a ViT image encoder and a text encoder in one embedding space.

The ViT and the text encoder are an open_clip CLIP's two towers; the CNN (a torchvision ResNet) ends in
a linear projection to the same width. See :mod:`nbhelpers.losses.cass_mm` for the loss and why.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nbhelpers.models.heads import clip_embed_dim
from nbhelpers.models.ssl import build_ssl_backbone


class CASSMM(nn.Module):
    """CNN + ViT + text towers.

    Args:
        clip_model: an open_clip ``CLIP``; its visual tower is the ViT, its text tower the text encoder.
        cnn: ``resnet18`` or ``resnet50``.
        cnn_image_size: the CNN's input size; inputs of another size are resized to it (a CPU demo runs
            the CNN at 32 px while the ViT sees 64).
        cnn_small_image: the CIFAR stem for the CNN (None: chosen from ``cnn_image_size``).
    """

    def __init__(
        self,
        clip_model: nn.Module,
        cnn: str = "resnet18",
        cnn_image_size: int = 64,
        cnn_small_image: bool | None = None,
    ):
        super().__init__()
        self.clip = clip_model
        self.embed_dim = clip_embed_dim(clip_model)
        self.cnn_image_size = cnn_image_size
        self.cnn = build_ssl_backbone(cnn, cnn_image_size, small_image=cnn_small_image)
        self.cnn_proj = nn.Linear(self.cnn.embed_dim, self.embed_dim)

    def encode_cnn(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, D) CNN embeddings (not normalised)."""
        if images.shape[-2:] != (self.cnn_image_size, self.cnn_image_size):
            images = F.interpolate(
                images,
                size=(self.cnn_image_size, self.cnn_image_size),
                mode="bilinear",
                antialias=True,
                align_corners=False,
            )
        return self.cnn_proj(self.cnn(images))

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """Embeddings of the three towers ``(B, D)`` (not normalised) and ``logit_scale`` (exponentiated)."""
        return {
            "cnn": self.encode_cnn(images),
            "vit": self.clip.encode_image(images),
            "text": self.clip.encode_text(tokens),
            "logit_scale": self.clip.logit_scale.exp(),
        }

    @torch.no_grad()
    def features(self, images: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Frozen features for a classifier: the image (the normalised mean of the normalised CNN and ViT
        embeddings) and the normalised text embedding, each ``(B, D)``."""
        out = self(images, tokens)
        image = F.normalize(F.normalize(out["cnn"], dim=-1) + F.normalize(out["vit"], dim=-1), dim=-1)
        return image, F.normalize(out["text"], dim=-1)
