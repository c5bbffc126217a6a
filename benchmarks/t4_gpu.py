"""``python -m benchmarks.t4 --device cuda``: each preset at its real micro-batch in fp16 on a GPU, measured.

The run is the same as the estimate's (:func:`benchmarks.real_size.run_preset`: the recipe's own
``run()``, the offline model and data), at the preset's real micro-batch, two micro-batches a step where
the preset accumulates, :data:`STEPS` optimiser steps, fp16 autocast with the GradScaler (what a T4 runs;
an A100 or H100 would pick bf16 under ``auto``), under ``torch.cuda.set_per_process_memory_fraction`` so
that a preset over the cap fails as it would on the smaller card. Fields (``measured_*``):

- ``measured_peak_gib``: ``torch.cuda.max_memory_allocated`` over the whole run (fusion: its feature
  extraction too), without the CUDA context;
- ``measured_samples_per_s``: samples of the steps after the first two over their time (synchronised);
- ``measured_loss_finite`` and ``measured_grad_scale``: every logged loss finite, and the GradScaler's
  scale after the last step (it halves at each overflow from 65,536);
- ``device``: the GPU's name; ``measured_error``: the error of a preset that failed (out of memory).

BLIP-2's folder is the reduced-depth one (``measured_reduced_depth``): its full 3.9B model is estimated.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any
from unittest import mock

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from benchmarks.real_size import hf_id, preset_micro_batch, run_preset
from benchmarks.t4_measure import GiB

#: Optimiser steps per preset: the first two warm up (cuDNN autotuning, allocator), the rest are timed.
STEPS = 5


def measure_on_gpu(recipe: str, preset: str, root: Path, memory_cap_gib: float) -> dict[str, Any]:
    """The ``measured_*`` fields of ``preset`` (see the module docstring)."""
    device = torch.device("cuda")
    total = torch.cuda.get_device_properties(device).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, memory_cap_gib * GiB / total), device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    micro, accum = preset_micro_batch(recipe, preset)
    step_samples = micro * min(accum, 2)
    stamps: list[float] = []
    scales: list[float] = []

    def stamp(*_: Any) -> None:
        torch.cuda.synchronize(device)
        stamps.append(time.perf_counter())

    real_update = torch.amp.GradScaler.update

    def update(self, new_scale=None):
        real_update(self, new_scale)
        scales.append(float(self.get_scale()))

    hook = register_optimizer_step_post_hook(stamp)
    hub = hf_id(recipe, preset)
    row: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device),
        "measured_memory_cap_gib": memory_cap_gib,
    }
    if hub and "blip2" in hub:
        row["measured_reduced_depth"] = True
    try:
        with mock.patch.object(torch.amp.GradScaler, "update", update):
            result = run_preset(
                recipe, preset, root, micro, steps=STEPS, precision="fp16", samples=step_samples * STEPS
            )
    except torch.OutOfMemoryError as err:
        return {**row, "measured_error": f"out of memory: {str(err).splitlines()[0]}"}
    finally:
        hook.remove()
    histories = [result.history] if result.history else []
    histories += [
        r.history for r in (result.extra or {}).get("runs", {}).values() if getattr(r, "history", None)
    ]
    losses = [e["loss"] for h in histories for e in [*h["epochs"], *h.get("steps", [])] if "loss" in e]
    # The first fit's steps (a preset with several fits stamps each fit's steps in turn).
    timed = stamps[2:STEPS]
    speed = (len(timed) - 1) * step_samples / (timed[-1] - timed[0]) if len(timed) > 1 else None
    return {
        **row,
        "measured_micro_batch": micro,
        "measured_peak_gib": round(torch.cuda.max_memory_allocated(device) / GiB, 3),
        "measured_samples_per_s": round(speed, 1) if speed else None,
        "measured_loss_finite": bool(losses) and all(math.isfinite(x) for x in losses),
        "measured_grad_scale": scales[-1] if scales else None,
    }
