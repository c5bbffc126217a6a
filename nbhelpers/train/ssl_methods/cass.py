"""CASS: cross-architectural self-supervision (Singh, Sizikova & Cirrone, 2022, "CASS: Cross Architectural
Self-Supervision for Medical Image Analysis").

A CNN (``backbone``) and a ViT (``vit_backbone``) see the same augmented image; a linear projection of each
to a common space of ``proj_dim`` is pulled towards the other's (:class:`~nbhelpers.losses.CASSLoss`). Both
learn, with no teacher; the probes read both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from nbhelpers.config import ConfigError, param
from nbhelpers.data.augment import ViewSpec
from nbhelpers.losses import CASSLoss
from nbhelpers.train.ssl_methods.base import (
    CNN_BACKBONES,
    MethodParams,
    SSLModel,
    check_batch_statistics,
    global_view,
)

if TYPE_CHECKING:
    from nbhelpers.train.recipes.ssl import SSLConfig


@dataclass
class CASSParams(MethodParams):
    """CASS's hyperparameters."""

    proj_dim: int = param(256, min=1, help="width of the common projection space")


class CASSModel(SSLModel):
    """A CNN and a ViT, each with a linear projection to a common space, and the CASS loss."""

    Params = CASSParams

    def __init__(self, backbones: Sequence[nn.Module], params: CASSParams, config: SSLConfig) -> None:
        super().__init__(backbones, params, config)
        self.cnn, self.vit = backbones
        self.cnn_head = nn.Linear(self.cnn.embed_dim, params.proj_dim)
        self.vit_head = nn.Linear(self.vit.embed_dim, params.proj_dim)
        self.loss = CASSLoss()

    @classmethod
    def backbone_names(cls, config: SSLConfig) -> list[str]:
        """The CNN (``backbone``) and the ViT (``vit_backbone``)."""
        return [config.backbone, config.vit_backbone]

    @classmethod
    def check(cls, config: SSLConfig, params: CASSParams) -> None:
        if config.backbone not in CNN_BACKBONES:
            raise ConfigError(f"backbone: cass trains a CNN with a ViT; allowed: {', '.join(CNN_BACKBONES)}")
        check_batch_statistics(config, "CASS")

    @classmethod
    def views(cls, config: SSLConfig, params: CASSParams) -> list[ViewSpec]:
        """One view, the same for both architectures."""
        return [global_view(config, blur_p=0.5, solarize_p=0.0)]

    @classmethod
    def view_names(cls, config: SSLConfig, params: CASSParams) -> list[str]:
        return ["CNN + ViT input"]

    def forward(self, crops: list[torch.Tensor], epoch: int = 0) -> tuple[torch.Tensor, dict[str, float]]:
        (image,) = crops  # the same augmented image for both architectures
        return self.loss(self.cnn_head(self.cnn(image)), self.vit_head(self.vit(image))), {}

    def encoders(self) -> dict[str, nn.Module]:
        return {"cnn": self.cnn, "vit": self.vit}
