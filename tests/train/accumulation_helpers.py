"""One optimiser step through ``fit``, with the gradients it applied, for the accumulation tests."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

from nbhelpers.train.engine import TrainSpec, fit

#: Largest gradient difference allowed, relative to the largest gradient magnitude of the tensor.
TOLERANCE = 1e-5


def split_batch(batch: dict[str, Any], parts: int) -> list[dict[str, Any]]:
    """``batch`` (a dict of ``(rows, ...)`` tensors) cut into ``parts`` equal micro-batches, in order."""
    rows = next(iter(batch.values())).shape[0]
    size = rows // parts
    return [{k: v[i * size : (i + 1) * size] for k, v in batch.items()} for i in range(parts)]


def one_step(
    model: nn.Module, step: Any, micro_batches: Sequence[Any], run_dir: Path, **spec: Any
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """One optimiser step of ``fit`` over ``micro_batches`` (``grad_accum_steps = len(micro_batches)``).

    Returns:
        The epoch's history entry and ``{name: gradient}`` as the optimiser received them.
    """
    names = {id(p): name for name, p in model.named_parameters()}
    grads: dict[str, torch.Tensor] = {}

    def capture(optimizer, args, kwargs):
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    grads[names[id(p)]] = p.grad.detach().clone()

    values = dict(
        run_dir=run_dir, epochs=1, steps_per_epoch=1, lr=1e-3, grad_accum_steps=len(micro_batches),
        max_grad_norm=1e9, mixed_precision="no", progress=False, log_every=1,
    )  # fmt: skip
    values.update(spec)
    handle = register_optimizer_step_pre_hook(capture)
    try:
        history = fit(model, step, lambda epoch: iter(micro_batches), TrainSpec(**values))
    finally:
        handle.remove()
    return history["epochs"][0], grads


def max_relative_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """The largest ``max|a - b| / max|a|`` over the tensors (the same names on both sides)."""
    assert a.keys() == b.keys() and a, (sorted(a), sorted(b))
    worst = 0.0
    for name, x in a.items():
        scale = max(float(x.abs().max()), 1e-12)
        worst = max(worst, float((x - b[name]).abs().max()) / scale)
    return worst


def no_dropout(model: nn.Module) -> nn.Module:
    """Every dropout of ``model`` set to 0 (``nn.Dropout`` and attention's own)."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        if isinstance(module, nn.MultiheadAttention):
            module.dropout = 0.0
    return model


def fresh(build: Callable[[], nn.Module]) -> nn.Module:
    """``build()`` under a fixed seed, so two calls give the same weights."""
    torch.manual_seed(0)
    return build()
