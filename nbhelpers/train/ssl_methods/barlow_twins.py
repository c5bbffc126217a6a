"""Barlow Twins: redundancy reduction (Zbontar et al., 2021, "Barlow Twins: Self-Supervised Learning via
Redundancy Reduction").

Two asymmetric views of each image go through one backbone and a projector; the cross-correlation of the
two projections, standardised over the batch, is pushed to the identity
(:class:`~nbhelpers.losses.BarlowTwinsLoss`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from nbhelpers.config import ConfigError, param
from nbhelpers.data.augment import ViewSpec
from nbhelpers.losses import BarlowTwinsLoss
from nbhelpers.models.ssl import BarlowTwinsProjector
from nbhelpers.train.ssl_methods.base import (
    MethodParams,
    SSLModel,
    check_batch_statistics,
    global_view,
)

if TYPE_CHECKING:
    from nbhelpers.train.recipes.ssl import SSLConfig


@dataclass
class BarlowTwinsParams(MethodParams):
    """Barlow Twins' hyperparameters (defaults: the paper's ImageNet recipe)."""

    projector_sizes: list[int] = param([8192, 8192, 8192], help="projector widths")
    lambda_offdiag: float = param(0.0051, min=0.0, help="weight of the off-diagonal terms")

    def check(self, where: str = "method_kwargs") -> None:
        if not self.projector_sizes or min(self.projector_sizes) < 1:
            raise ConfigError(f"{where}.projector_sizes: need positive widths, got {self.projector_sizes}")


class BarlowTwinsModel(SSLModel):
    """A backbone, the Barlow Twins projector, and the loss."""

    Params = BarlowTwinsParams

    def __init__(self, backbones: Sequence[nn.Module], params: BarlowTwinsParams, config: SSLConfig) -> None:
        super().__init__(backbones, params, config)
        (self.backbone,) = backbones
        self.projector = BarlowTwinsProjector(self.backbone.embed_dim, params.projector_sizes)
        self.loss = BarlowTwinsLoss(params.lambda_offdiag)

    @classmethod
    def check(cls, config: SSLConfig, params: BarlowTwinsParams) -> None:
        check_batch_statistics(config, "Barlow Twins")

    @classmethod
    def views(cls, config: SSLConfig, params: BarlowTwinsParams) -> list[ViewSpec]:
        """The paper's two asymmetric views: blur always on the first, rarely on the second, which alone
        may be solarized."""
        return [global_view(config, 1.0, 0.0), global_view(config, 0.1, config.solarize_p)]

    def forward(self, crops: list[torch.Tensor], epoch: int = 0) -> tuple[torch.Tensor, dict[str, float]]:
        z = self.projector(self.backbone(torch.cat(crops)))  # both views in one batch: (2 * B, dim)
        z1, z2 = z.chunk(2)
        return self.loss(z1, z2), {}

    def encoders(self) -> dict[str, nn.Module]:
        return {"backbone": self.backbone}
