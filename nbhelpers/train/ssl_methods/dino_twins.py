"""DINO-Twins: DINO plus a Barlow Twins term on the student's backbone features of the two global crops.

DINO (Caron et al., 2021) with the redundancy reduction of Barlow Twins (Zbontar et al., 2021) on the
backbone features ``(B, D)`` of the two global crops (:class:`~nbhelpers.losses.DINOTwinsLoss`), weighted
by ``barlow_weight`` (default ``1 / D``, which puts the Barlow term on the scale of DINO's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from nbhelpers.config import param
from nbhelpers.losses import DINOTwinsLoss
from nbhelpers.train.ssl_methods.base import check_batch_statistics
from nbhelpers.train.ssl_methods.dino import DINOModel, DINOParams

if TYPE_CHECKING:
    from nbhelpers.train.recipes.ssl import SSLConfig


@dataclass
class DINOTwinsParams(DINOParams):
    """DINO's hyperparameters and the Barlow Twins term's."""

    lambda_offdiag: float = param(0.0051, min=0.0, help="Barlow Twins' weight of the off-diagonal terms")
    barlow_weight: float | None = param(None, min=0.0, help="weight of the Barlow term (None: 1/dim)")


class DINOTwinsModel(DINOModel):
    """:class:`~nbhelpers.train.ssl_methods.dino.DINOModel` with :class:`~nbhelpers.losses.DINOTwinsLoss`."""

    Params = DINOTwinsParams

    def make_loss(self, params: DINOTwinsParams, embed_dim: int) -> nn.Module:
        weight = params.barlow_weight if params.barlow_weight is not None else 1.0 / embed_dim
        return DINOTwinsLoss(
            **params.loss_kwargs(), barlow_weight=weight, lambda_offdiag=params.lambda_offdiag
        )

    @classmethod
    def check(cls, config: SSLConfig, params: DINOTwinsParams) -> None:
        super().check(config, params)
        check_batch_statistics(config, "DINO-Twins' Barlow term")

    def forward(self, crops: list[torch.Tensor], epoch: int = 0) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss of one batch of crops (2 global first, then the local ones), with its DINO and Barlow parts."""
        with torch.no_grad():
            teacher_out = self.teacher(crops[:2])  # (2 * B, K)
        features = self.student.backbone(torch.cat(crops[:2]))  # (2 * B, D)
        parts = [features]
        if len(crops) > 2:
            parts.append(self.student.backbone(torch.cat(crops[2:])))  # local crops: one smaller size
        student_out = self.student.head(torch.cat(parts))
        z1, z2 = features.chunk(2)  # (B, D) each
        loss, terms = self.loss(student_out, teacher_out, z1, z2, epoch)
        return loss, {k: float(v) for k, v in terms.items()}
