"""What one real-size preset allocates and computes in its training steps, measured through its recipe's ``run()``.

:func:`measure` runs a preset (:func:`benchmarks.real_size.run_preset`: its real model, two optimiser
steps of a few samples) with the engine's ``fit`` (and, for fusion, the feature extraction) wrapped, so
that what is measured is exactly what the preset runs: gradient checkpointing, LoRA, accumulation,
autocast, frozen towers. Per ``fit`` (a preset may run several: the unimodal text and image models,
CASS-MM's joint training then its head) it records:

- the bytes of the model's weights and buffers, and its trainable parameters;
- the peak bytes of the tensors created during the forward and backward passes (activations, gradients,
  the optimiser's state after the first step, autocast's weight copies) and during the optimiser step,
  apart (:class:`benchmarks.memory.LiveBytes`);
- the FLOPs (``torch.utils.flop_counter``'s formulas: forward, backward and checkpoint recomputation)
  and the samples, so FLOPs per sample.

Evaluation is not part of a step: the wrapped ``fit`` runs without its ``evaluate`` callback.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import torch
from torch import nn

from benchmarks.memory import LiveBytes, optimiser_phases
from benchmarks.real_size import run_preset
from nbhelpers.train.accumulation import BatchLoss

GiB = 2**30


def tensor_bytes(model: nn.Module) -> int:
    """Bytes of ``model``'s parameters and buffers (each storage once)."""
    seen, total = set(), 0
    for t in [*model.parameters(), *model.buffers()]:
        key = t.untyped_storage()._cdata
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
    return total


def _samples(history: dict) -> float:
    return sum(e.get("samples_per_s", 0.0) * e.get("seconds", 0.0) for e in history["epochs"])


@contextlib.contextmanager
def _counted() -> Iterator[LiveBytes]:
    with LiveBytes() as live:
        remove = optimiser_phases(live)
        try:
            yield live
        finally:
            remove()


def _batch_bytes(batch: Any) -> int:
    """Bytes of the tensors of a batch (nested dicts, lists and tuples)."""
    if isinstance(batch, torch.Tensor):
        return batch.nbytes
    if isinstance(batch, dict):
        return sum(_batch_bytes(v) for v in batch.values())
    if isinstance(batch, list | tuple):
        return sum(_batch_bytes(v) for v in batch)
    return 0


def _fit_wrapper(real_fit: Callable, fits: list[dict]) -> Callable:
    def fit(model, step_fn, batches, spec, **kwargs):
        kwargs["evaluate"] = None  # evaluation is not part of a training step
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        # The loader runs on the host (on a GPU only the step's batches are copied to the device): its
        # batches are made before counting, and the ones a step holds on the device are counted apart.
        stream = iter(batches(1))
        made = [next(stream) for _ in range(spec.steps_per_epoch * spec.grad_accum_steps)]
        whole = isinstance(step_fn, BatchLoss) and spec.grad_accum_steps > 1  # GradCache: the step's together
        with _counted() as live:
            history = real_fit(model, step_fn, lambda epoch: iter(made), spec, **kwargs)
        fits.append(
            {
                "weights": tensor_bytes(model),
                "trainable": trainable,
                "parameters": sum(p.numel() for p in model.parameters()),
                "step_peak": live.peaks.get("step", 0),
                "optimiser_peak": live.peaks.get("optimiser", 0),
                "flops": live.flops,
                "samples": _samples(history),
                # A micro-batch's bytes, and how many micro-batches a step holds on the device at once.
                "batch_bytes": _batch_bytes(made[0]),
                "batches_held": spec.grad_accum_steps if whole else 1,
            }
        )
        return history

    return fit


def _extract_wrapper(real_extract: Callable, extractions: list[dict]) -> Callable:
    def extract(backbone, data, batch_size=256, *args, **kwargs):
        with _counted() as live:
            features = real_extract(backbone, data, batch_size, *args, **kwargs)
        extractions.append(
            {
                "weights": tensor_bytes(backbone),
                "parameters": sum(p.numel() for p in backbone.parameters()),
                "peak": live.peak,
                "flops": live.flops,
                "samples": len(data),
            }
        )
        return features

    return extract


def measure(recipe: str, preset: str, root: Path, micro_batch: int) -> dict[str, Any]:
    """Two optimiser steps of ``preset`` at ``micro_batch`` (see the module docstring), measured.

    Returns:
        ``{"micro_batch", "fits": [per fit], "extractions": [per feature extraction]}`` (bytes, FLOPs).
    """
    module = importlib.import_module(f"nbhelpers.train.recipes.{recipe}")
    fits: list[dict] = []
    extractions: list[dict] = []
    patches = [mock.patch.object(module, "fit", _fit_wrapper(module.fit, fits))]
    if recipe == "fusion":
        features = importlib.import_module("nbhelpers.train.recipes.fusion_features")
        patches.append(
            mock.patch.object(
                features, "extract_features", _extract_wrapper(features.extract_features, extractions)
            )
        )
    with contextlib.ExitStack() as stack:
        for patch in patches:
            stack.enter_context(patch)
        torch.manual_seed(0)
        run_preset(recipe, preset, root, micro_batch)
    return {"micro_batch": micro_batch, "fits": fits, "extractions": extractions[:1]}
