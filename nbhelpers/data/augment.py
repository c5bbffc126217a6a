"""Augmentations of whole uint8 image batches on their device, every random parameter drawn per sample.

The views of DINO (Caron et al., 2021, "Emerging Properties in Self-Supervised Vision Transformers") and
Barlow Twins (Zbontar et al., 2021): random resized crop and flip, colour jitter, grayscale, Gaussian blur,
solarize. A torchvision per-image pipeline costs about 8 ms an image for 6 crops on one CPU core, as much
as the SSL demo's whole model; here one call makes a view of a whole batch (a batched ``grid_sample``, a
grouped convolution), so augmentation stays a small part of a step on a CPU and a GPU alike. kornia's
``augmentation`` module does the same per-sample work; timed on one CPU thread for a ``(64, 3, 32, 32)``
uint8 batch and the demo's 6 crops (2 global, 4 local), ours took 26-46 ms and kornia 0.9's equivalent
pipeline 83-145 ms, so we keep ours and add no dependency.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ViewSpec:
    """One kind of view: output side, crop area range, blur and solarize probabilities."""

    size: int
    scale: tuple[float, float]
    blur_p: float
    solarize_p: float


class BatchViews:
    """DINO / Barlow Twins views of a uint8 batch, every random parameter drawn per sample.

    Per view: a random resized crop (area in ``scale``, aspect ratio in [3/4, 4/3], bilinear resampling)
    with a horizontal flip half the time; colour jitter with probability ``colour_jitter_p`` (brightness
    and contrast by up to ``0.4 s``, saturation ``0.2 s``, hue ``0.1 s`` of a turn, in that fixed order,
    the hue as a rotation in YIQ space); grayscale with probability ``grayscale_p``; a Gaussian blur with
    probability ``blur_p`` and sigma in [0.1, 2] px scaled by ``size / 224`` (the paper's strength
    relative to the image); solarize with probability ``solarize_p``; normalisation.

    Random parameters are drawn on the CPU from ``generator``, the pixels are processed on the images'
    device, so a run's views depend only on the generator's seed.

    Args:
        specs: the views to make, in order.
        colour_jitter: jitter strength ``s``; 0 disables jitter.
        colour_jitter_p: probability of jitter.
        grayscale_p: probability of grayscale.
        mean: normalisation mean per channel (the encoder's, e.g. ImageNet's).
        std: normalisation std per channel.
    """

    def __init__(
        self,
        specs: Sequence[ViewSpec],
        colour_jitter: float = 1.0,
        colour_jitter_p: float = 0.8,
        grayscale_p: float = 0.2,
        *,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        self.specs = list(specs)
        self.colour_jitter, self.colour_jitter_p, self.grayscale_p = (
            colour_jitter,
            colour_jitter_p,
            grayscale_p,
        )
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> list[torch.Tensor]:
        """``(B, 3, H, W)`` uint8 -> one normalised float ``(B, 3, size, size)`` tensor per spec."""
        x = images.float() / 255.0
        return [self.view(x, spec, generator) for spec in self.specs]

    def view(self, x: torch.Tensor, spec: ViewSpec, generator: torch.Generator) -> torch.Tensor:
        """One view of ``x`` (B, 3, H, W) in [0, 1]."""
        b = x.shape[0]

        def draw(low: float = 0.0, high: float = 1.0) -> torch.Tensor:
            return (torch.rand(b, generator=generator) * (high - low) + low).to(x.device)

        x = resized_crop(x, spec.size, spec.scale, draw)
        if self.colour_jitter > 0:
            x = _where(draw() < self.colour_jitter_p, colour_jitter(x, self.colour_jitter, draw), x)
        if self.grayscale_p > 0:
            x = _where(draw() < self.grayscale_p, _gray(x).expand_as(x), x)
        if spec.blur_p > 0:
            sigma = draw(0.1, 2.0) * spec.size / 224
            x = _where(draw() < spec.blur_p, gaussian_blur(x, sigma, max_sigma=2.0 * spec.size / 224), x)
        if spec.solarize_p > 0:
            x = _where(draw() < spec.solarize_p, torch.where(x >= 0.5, 1.0 - x, x), x)
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std


def _where(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(mask.view(-1, 1, 1, 1), a, b)


def _gray(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma, as torchvision's grayscale: ``(B, 3, H, W) -> (B, 1, H, W)``."""
    return (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)


def resized_crop(x: torch.Tensor, size: int, scale: tuple[float, float], draw: Callable) -> torch.Tensor:
    """Per-sample random resized crop + horizontal flip (p = 0.5) of ``x`` (B, 3, H, W) to ``size``."""
    b = x.shape[0]
    area = draw(*scale)
    ratio = torch.exp(draw(math.log(3 / 4), math.log(4 / 3)))
    w = (area * ratio).sqrt().clamp(max=1.0)  # fractions of the side
    h = (area / ratio).sqrt().clamp(max=1.0)
    cx = (draw() * (1 - w) + w / 2) * 2 - 1  # centres in affine_grid's [-1, 1] coordinates
    cy = (draw() * (1 - h) + h / 2) * 2 - 1
    flip = torch.where(draw() < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3, device=x.device)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = w * flip, cx, h, cy
    grid = F.affine_grid(theta, [b, 3, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


# RGB <-> YIQ; a hue shift is a rotation of the (I, Q) plane.
_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def colour_jitter(x: torch.Tensor, strength: float, draw: Callable) -> torch.Tensor:
    """Per-sample brightness, contrast, saturation and hue jitter of ``x`` (B, 3, H, W) in [0, 1]."""
    bright = draw(1 - 0.4 * strength, 1 + 0.4 * strength).view(-1, 1, 1, 1)
    contrast = draw(max(0.0, 1 - 0.4 * strength), 1 + 0.4 * strength).view(-1, 1, 1, 1)
    saturation = draw(max(0.0, 1 - 0.2 * strength), 1 + 0.2 * strength).view(-1, 1, 1, 1)
    angle = draw(-0.1 * strength, 0.1 * strength) * 2 * math.pi
    x = (x * bright.clamp(min=0)).clamp(0, 1)
    mean = _gray(x).mean(dim=(1, 2, 3), keepdim=True)
    x = ((x - mean) * contrast + mean).clamp(0, 1)
    gray = _gray(x)
    x = ((x - gray) * saturation + gray).clamp(0, 1)
    cos, sin = angle.cos(), angle.sin()
    rotation = torch.zeros(len(angle), 3, 3, device=x.device)
    rotation[:, 0, 0] = 1
    rotation[:, 1, 1], rotation[:, 1, 2], rotation[:, 2, 1], rotation[:, 2, 2] = cos, -sin, sin, cos
    yiq = _YIQ.to(x.device)
    matrix = torch.linalg.inv(yiq) @ rotation @ yiq  # (B, 3, 3)
    return torch.einsum("bij,bjhw->bihw", matrix, x).clamp(0, 1)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, max_sigma: float) -> torch.Tensor:
    """Per-sample Gaussian blur of ``x`` (B, C, H, W), one ``sigma`` (B,) each, reflect-padded."""
    b, c, h, w = x.shape
    radius = max(1, math.ceil(3 * max_sigma))
    d = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-(d[None] ** 2) / (2 * sigma[:, None] ** 2))
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (B*C, K)
    y = F.pad(x.reshape(1, b * c, h, w), (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, kernel[:, None, :, None], groups=b * c)  # vertical
    y = F.conv2d(y, kernel[:, None, None, :], groups=b * c)  # horizontal
    return y.reshape(b, c, h, w)
