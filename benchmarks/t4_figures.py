"""What a Colab T4 can do, as figures to estimate a training step with (no GPU is used).

Peaks, from NVIDIA's T4 datasheet ("NVIDIA T4 Tensor Core GPU", datasheet, 2019,
https://www.nvidia.com/en-us/data-center/tesla-t4/): 65 TFLOPS mixed precision (fp16 on the Tensor Cores,
fp32 accumulation), 8.1 TFLOPS single precision (fp32 on the CUDA cores), 320 GB/s of GDDR6 bandwidth,
16 GB of memory (Colab shows about 15 GiB usable).

The share of the peak a training step reaches (model FLOPs utilisation) is an **assumption**, not a
measurement of this project: :data:`TRAINING_PEAK_SHARE` = 0.30, the figure Megatron-LM reports for a
transformer's training step on one V100 (Volta, the Tensor-Core generation before the T4's Turing): a
single-GPU baseline that "sustains 39 TeraFLOPs, which is 30% of peak FLOPs" (Shoeybi et al., 2019,
"Megatron-LM: Training Multi-Billion Parameter Language Models Using Model Parallelism",
arXiv:1909.08053, abstract; NVIDIA's later tuning of the same model reached 48%,
https://nv-adlr.github.io/MegatronLMV1). Reasons a T4 may reach less: it is a 70 W card whose clocks
drop under sustained load (the peak is at boost clock), and the models here are far smaller than
Megatron's, with more time in memory-bound layers (normalisation, attention softmax, the optimiser step),
which the 320 GB/s bound, not the FLOPs, limits. The same share is applied to the fp32 peak, for want of a
published fp32 training figure on this class of GPU. A GPU run (``measured_*`` figures) replaces the
estimate wherever one exists.

bf16: a T4 (compute capability 7.5) has no bf16 Tensor Cores; PyTorch emulates bf16 there, at best at
the fp32 rate, and this project's ``mixed_precision="auto"`` picks fp16 on a T4
(:func:`nbhelpers.train.precision.resolve_mixed_precision`). So ``"bf16"`` is estimated at the fp32 peak.
"""

from __future__ import annotations

import math

#: fp16 Tensor-Core peak of a T4 (FLOP/s), NVIDIA's datasheet.
FP16_PEAK_FLOPS = 65e12
#: fp32 peak of a T4 (FLOP/s), NVIDIA's datasheet.
FP32_PEAK_FLOPS = 8.1e12
#: Memory bandwidth of a T4 (bytes/s), NVIDIA's datasheet.
MEMORY_BANDWIDTH = 320e9
#: The share of the peak a training step reaches: an assumption (see the module docstring for its source).
TRAINING_PEAK_SHARE = 0.30
#: The peak each ``mixed_precision`` runs at on a T4 (bf16 is emulated: no faster than fp32).
PEAK_FLOPS = {"fp16": FP16_PEAK_FLOPS, "fp32": FP32_PEAK_FLOPS, "bf16": FP32_PEAK_FLOPS}
#: ``mixed_precision`` names the precisions go by in the recipes' configs (``"no"``: full precision).
PRECISION_ALIASES = {"no": "fp32"}


def peak_flops(precision: str) -> float:
    """The T4's peak FLOP/s for a training step in ``precision``.

    Args:
        precision: ``"fp16"``, ``"fp32"`` (or ``"no"``, the configs' name for it) or ``"bf16"`` (emulated
            on a T4: the fp32 peak).

    Raises:
        ValueError: for another precision, naming the allowed ones.
    """
    key = PRECISION_ALIASES.get(precision, precision)
    if key not in PEAK_FLOPS:
        allowed = ", ".join([*PEAK_FLOPS, *PRECISION_ALIASES])
        raise ValueError(f"precision: {precision!r} is not one of {allowed}")
    return PEAK_FLOPS[key]


def t4_samples_per_s(flops_per_sample: float, precision: str, *, share: float = TRAINING_PEAK_SHARE) -> float:
    """Training samples per second a T4 would process, compute-bound.

    ``share * peak / flops_per_sample``, where ``flops_per_sample`` is the FLOPs of one sample's whole
    training step (forward, backward, and any re-computed forward under gradient checkpointing).

    Args:
        flops_per_sample: FLOPs of one sample's training step (> 0, finite).
        precision: ``"fp16"``, ``"fp32"``/``"no"`` or ``"bf16"`` (see :func:`peak_flops`).
        share: the share of the peak reached (0 < share <= 1); default :data:`TRAINING_PEAK_SHARE`.

    Raises:
        ValueError: a precision not allowed, ``flops_per_sample`` not positive and finite, or ``share``
            outside (0, 1].
    """
    if not (math.isfinite(flops_per_sample) and flops_per_sample > 0):
        raise ValueError(f"flops_per_sample: must be positive and finite, got {flops_per_sample!r}")
    if not 0 < share <= 1:
        raise ValueError(f"share: must be in (0, 1], got {share!r}")
    return share * peak_flops(precision) / flops_per_sample


def epoch_minutes(samples_per_epoch: int, samples_per_s: float) -> float:
    """Minutes one epoch of ``samples_per_epoch`` samples takes at ``samples_per_s``.

    Args:
        samples_per_epoch: samples in one epoch (>= 0; optimiser steps x batch size).
        samples_per_s: the rate the epoch runs at (> 0), the slower of the GPU's and the loader's.

    Raises:
        ValueError: a negative ``samples_per_epoch`` or a rate that is not positive and finite.
    """
    if samples_per_epoch < 0:
        raise ValueError(f"samples_per_epoch: must be >= 0, got {samples_per_epoch!r}")
    if not (math.isfinite(samples_per_s) and samples_per_s > 0):
        raise ValueError(f"samples_per_s: must be positive and finite, got {samples_per_s!r}")
    return samples_per_epoch / samples_per_s / 60.0


def data_bound(loader_samples_per_s: float, gpu_samples_per_s: float) -> str:
    """Which side limits training: ``"data"`` when the loader delivers fewer samples per second than the
    GPU would process, else ``"gpu"`` (a tie counts as ``"gpu"``: the loader keeps up).

    Args:
        loader_samples_per_s: what the data pipeline delivers (> 0; ``math.inf`` for data already on the GPU).
        gpu_samples_per_s: what the GPU would process (> 0).

    Raises:
        ValueError: a rate that is not positive (or NaN).
    """
    for name, rate in (
        ("loader_samples_per_s", loader_samples_per_s),
        ("gpu_samples_per_s", gpu_samples_per_s),
    ):
        if not rate > 0:  # also catches NaN
            raise ValueError(f"{name}: must be positive, got {rate!r}")
    return "data" if loader_samples_per_s < gpu_samples_per_s else "gpu"
