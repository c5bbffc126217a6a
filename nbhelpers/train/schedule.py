"""Learning-rate schedule: linear warmup, then a half cosine down to zero (or the peak rate held).

The schedule of SGDR without restarts (Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with Warm
Restarts", ICLR 2017) after a linear warmup (Goyal et al., "Accurate, Large Minibatch SGD: Training
ImageNet in 1 Hour", 2017), as used by CLIP, DINO and open_clip. Steps count optimiser steps, not
micro-batches.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine(step: int, warmup_steps: int, total_steps: int) -> float:
    """The learning-rate multiplier applied at optimiser step ``step`` (0-based).

    Warmup follows open_clip's convention: the first step already trains, at ``1 / warmup_steps`` of the
    base rate, and step ``warmup_steps - 1`` reaches the full rate (a first step at rate 0, as in
    ``transformers.get_cosine_schedule_with_warmup``, would be wasted). Then a half cosine runs from 1 at
    step ``warmup_steps`` to 0 at step ``total_steps``, one past the last step taken.

    >>> [round(warmup_cosine(s, 2, 6), 4) for s in range(7)]
    [0.5, 1.0, 1.0, 0.8536, 0.5, 0.1464, 0.0]

    Args:
        step: the optimiser step about to be taken, from 0.
        warmup_steps: steps of linear warmup (0 for none).
        total_steps: all optimiser steps of the run, warmup included.

    Returns:
        The multiplier in ``[0, 1]``.

    Raises:
        ValueError: if ``total_steps < 1``, ``warmup_steps < 0`` or ``warmup_steps > total_steps``.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"warmup_steps must be in [0, total_steps={total_steps}], got {warmup_steps}")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if step >= total_steps:
        return 0.0
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


#: The shapes of the schedule after its warmup: ``cosine`` (:func:`warmup_cosine`) or ``constant`` (the
#: peak rate to the end, as Hate-CLIPper's reference trains).
LR_SCHEDULES = ("cosine", "constant")


def warmup_constant(step: int, warmup_steps: int, total_steps: int) -> float:
    """The multiplier of a linear warmup (as :func:`warmup_cosine`'s), then 1 to the end of the run.

    >>> [warmup_constant(s, 2, 4) for s in range(4)]
    [0.5, 1.0, 1.0, 1.0]

    Raises:
        ValueError: as :func:`warmup_cosine`.
    """
    warmup_cosine(0, warmup_steps, total_steps)
    return (step + 1) / warmup_steps if step < warmup_steps else 1.0


def warmup_cosine_schedule(
    optimizer: Optimizer, warmup_steps: int, total_steps: int, shape: str = "cosine"
) -> LambdaLR:
    """A ``LambdaLR`` applying :func:`warmup_cosine` to every parameter group's base rate.

    Call ``scheduler.step()`` once after every optimiser step. The multiplier is a closure (a plain
    function), so ``LambdaLR.state_dict()`` stores no callable state and the checkpoint stays loadable
    with ``torch.load(weights_only=True)``.

    Args:
        optimizer: the optimiser whose groups' ``lr`` is the peak rate.
        warmup_steps: steps of linear warmup.
        total_steps: all optimiser steps of the run.
        shape: what follows the warmup, one of :data:`LR_SCHEDULES`.

    Returns:
        The scheduler; right after construction each group's ``lr`` is the rate for step 0.

    Raises:
        ValueError: as :func:`warmup_cosine`, checked here before any step is taken.
    """
    if shape not in LR_SCHEDULES:
        raise ValueError(f"shape must be one of {LR_SCHEDULES}, got {shape!r}")
    warmup_cosine(0, warmup_steps, total_steps)  # validate now rather than at the first step
    rule = warmup_cosine if shape == "cosine" else warmup_constant

    def multiplier(step: int) -> float:
        return rule(step, warmup_steps, total_steps)

    return LambdaLR(optimizer, multiplier)
