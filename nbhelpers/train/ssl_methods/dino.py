"""DINO: self-distillation with no labels (Caron et al., 2021, "Emerging Properties in Self-Supervised Vision
Transformers").

A student sees 2 global and ``n_local_crops`` local crops and matches, through a
:class:`~nbhelpers.models.ssl.DINOHead`, the centred and sharpened output of a teacher on the global crops
(:class:`~nbhelpers.losses.DINOLoss`); the teacher is the student's exponential moving average, its momentum
on a cosine from ``momentum_teacher`` to 1 (:func:`~nbhelpers.losses.cosine_momentum`). The probes read the
teacher's backbone, as the paper evaluates.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from nbhelpers.config import ConfigError, param
from nbhelpers.data.augment import ViewSpec
from nbhelpers.losses import DINOLoss, cosine_momentum, ema_update_
from nbhelpers.models.ssl import DINOHead, MultiCropWrapper
from nbhelpers.train.ssl_methods.base import CNN_BACKBONES, MethodParams, SSLModel, global_view

if TYPE_CHECKING:
    from nbhelpers.train.recipes.ssl import SSLConfig


@dataclass
class DINOParams(MethodParams):
    """DINO's hyperparameters (defaults: the paper's ViT-S/16 recipe, 2 global + 4 local crops)."""

    # Multi-crop
    n_local_crops: int = param(4, min=0, help="local crops per image (the paper uses 8 or 10)")
    local_size: int | None = param(None, min=8, help="side of the local crops (None: 96/224 of image_size)")
    local_scale: list[float] = param([0.05, 0.4], help="area range of the local crops")
    # Head
    out_dim: int = param(65536, min=1, help="prototypes K")
    head_hidden_dim: int = param(2048, min=1)
    head_bottleneck_dim: int = param(256, min=1)
    head_layers: int = param(3, min=1)
    # Loss and teacher
    teacher_temp: float = param(0.04, min=1e-4)
    warmup_teacher_temp: float = param(0.04, min=1e-4)
    warmup_teacher_temp_epochs: int = param(0, min=0)
    student_temp: float = param(0.1, min=1e-4)
    center_momentum: float = param(0.9, min=0.0)
    momentum_teacher: float = param(0.996, min=0.0, help="teacher EMA momentum at step 0 (cosine to 1)")

    def check(self, where: str = "method_kwargs") -> None:
        self.check_at_most_one(where, "momentum_teacher", "center_momentum")
        low, high = (self.local_scale + [0, 0])[:2]
        if len(self.local_scale) != 2 or not 0 < low <= high <= 1:
            raise ConfigError(
                f"{where}.local_scale: need [low, high] with 0 < low <= high <= 1, got {self.local_scale}"
            )

    def local_crop_size(self, image_size: int) -> int:
        """DINO's 96 px at 224, rounded to a multiple of 8 (ViT patches), unless ``local_size`` is set."""
        return self.local_size or max(8, 8 * round(image_size * 96 / 224 / 8))

    def loss_kwargs(self) -> dict[str, float | int]:
        """The arguments of :class:`~nbhelpers.losses.DINOLoss`."""
        return dict(
            out_dim=self.out_dim,
            n_local_crops=self.n_local_crops,
            teacher_temp=self.teacher_temp,
            warmup_teacher_temp=self.warmup_teacher_temp,
            warmup_teacher_temp_epochs=self.warmup_teacher_temp_epochs,
            student_temp=self.student_temp,
            center_momentum=self.center_momentum,
        )


class DINOModel(SSLModel):
    """Student and EMA teacher (each a :class:`~nbhelpers.models.ssl.MultiCropWrapper` of a backbone and a
    :class:`~nbhelpers.models.ssl.DINOHead`) and the loss, whose centre is a buffer of this module."""

    Params = DINOParams

    def __init__(self, backbones: Sequence[nn.Module], params: DINOParams, config: SSLConfig) -> None:
        super().__init__(backbones, params, config)
        (backbone,) = backbones
        head = DINOHead(
            backbone.embed_dim,
            params.out_dim,
            params.head_hidden_dim,
            params.head_bottleneck_dim,
            params.head_layers,
            use_bn=config.backbone in CNN_BACKBONES,  # as the paper: BN in the head for ResNets only
        )
        self.student = MultiCropWrapper(backbone, head)
        self.teacher = copy.deepcopy(self.student)
        self.teacher.requires_grad_(False)
        self.momentum = params.momentum_teacher
        self.loss = self.make_loss(params, backbone.embed_dim)

    def make_loss(self, params: DINOParams, embed_dim: int) -> nn.Module:
        """The loss module (DINO-Twins adds its Barlow Twins term here)."""
        return DINOLoss(**params.loss_kwargs())

    @classmethod
    def check(cls, config: SSLConfig, params: DINOParams) -> None:
        if params.n_local_crops == 0 and config.batch_size < 2:
            raise ConfigError("batch_size: must be >= 2")

    @classmethod
    def views(cls, config: SSLConfig, params: DINOParams) -> list[ViewSpec]:
        """2 global crops (blur 1 and 0.1, solarize on the second) and ``n_local_crops`` local ones (blur
        0.5), as the paper's multi-crop."""
        local = ViewSpec(
            params.local_crop_size(config.image_size), tuple(params.local_scale), blur_p=0.5, solarize_p=0.0
        )
        return [
            global_view(config, blur_p=1.0, solarize_p=0.0),
            global_view(config, blur_p=0.1, solarize_p=config.solarize_p),
            *[local] * params.n_local_crops,
        ]

    @classmethod
    def view_names(cls, config: SSLConfig, params: DINOParams) -> list[str]:
        return ["global 1", "global 2", *(f"local {i + 1}" for i in range(params.n_local_crops))]

    def forward(self, crops: list[torch.Tensor], epoch: int = 0) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss of one batch of crops (2 global first, then the local ones)."""
        with torch.no_grad():
            teacher_out = self.teacher(crops[:2])  # (2 * B, K)
        return self.loss(self.student(crops), teacher_out, epoch), {}

    @torch.no_grad()
    def after_step(self, step: int, total_steps: int) -> dict[str, float]:
        """EMA update of the teacher with the cosine momentum schedule; returns the momentum used."""
        momentum = cosine_momentum(step, total_steps, base=self.momentum)
        ema_update_(self.teacher, self.student, momentum)
        return {"momentum": momentum}

    def encoders(self) -> dict[str, nn.Module]:
        """The backbone to probe: the teacher's, as the paper evaluates."""
        return {"teacher": self.teacher.backbone}
