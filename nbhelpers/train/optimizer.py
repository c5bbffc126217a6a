"""AdamW parameter groups: decoupled weight decay on matrices, none on biases, norms and logit scales."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn


def _no_decay(name: str, param: torch.Tensor) -> bool:
    # open_clip's rule: decay only matrices and convolution kernels; biases, norm gains, 1-d embeddings
    # and the temperature (logit scale/bias) are not regularised toward 0.
    return param.ndim < 2 or name.endswith("bias") or "logit_scale" in name or "logit_bias" in name


def param_groups(
    model: nn.Module, params: Iterable[Any] | None, weight_decay: float, decay_all: bool = False
) -> list[dict[str, Any]]:
    """AdamW parameter groups: ``[{"params": decayed, "weight_decay": wd}, {"params": rest, 0.0}]``.

    Args:
        model: the model, used to name parameters.
        params: None for every parameter with ``requires_grad``; or an iterable of parameters, or of
            ``(name, parameter)`` pairs; or a list of group dicts, returned unchanged.
        weight_decay: the decay of the decayed group.
        decay_all: decay every parameter, biases and norms included (``torch.optim.AdamW``'s own default,
            what a reference trained with a plain ``AdamW(model.parameters())`` did).

    Returns:
        The non-empty groups, decayed first. A parameter listed twice is kept once.

    Raises:
        ValueError: if there is no parameter to optimise.
    """
    if params is not None:
        params = list(params)
        if params and all(isinstance(g, Mapping) for g in params):
            return [dict(g) for g in params]
    names = {id(p): n for n, p in model.named_parameters()}
    if params is None:
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    else:
        named = [item if isinstance(item, tuple) else (names.get(id(item), ""), item) for item in params]
    seen: set[int] = set()
    decay, no_decay = [], []
    for name, p in named:
        if id(p) in seen:
            continue
        seen.add(id(p))
        (no_decay if not decay_all and _no_decay(name, p) else decay).append(p)
    if not seen:
        raise ValueError(f"no parameters to optimise in {type(model).__name__} (none has requires_grad)")
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]
