"""Activation (gradient) checkpointing: recompute activations in backward instead of keeping them."""

from __future__ import annotations

import warnings

from torch import nn


def enable_gradient_checkpointing(model: nn.Module) -> int:
    """Switch on activation checkpointing on every outermost submodule that supports it.

    open_clip and timm models have ``set_grad_checkpointing(True)``; transformers models have
    ``gradient_checkpointing_enable()``. A wrapper (student + teacher + loss) usually has neither, so
    its submodules are searched; below a module that was switched on, the search stops (it switches
    its own children).

    Returns:
        How many modules were switched on; 0 also warns, since nothing then saves memory.
    """
    switched = 0
    stack = [model]
    while stack:
        module = stack.pop()
        if callable(getattr(module, "set_grad_checkpointing", None)):
            module.set_grad_checkpointing(True)
            switched += 1
        elif callable(getattr(module, "gradient_checkpointing_enable", None)):
            module.gradient_checkpointing_enable()
            switched += 1
        else:
            stack.extend(reversed(list(module.children())))
    if switched == 0:
        warnings.warn(
            f"gradient_checkpointing=True but no submodule of {type(model).__name__} has "
            "set_grad_checkpointing or gradient_checkpointing_enable: memory use is unchanged",
            stacklevel=2,
        )
    return switched


__all__ = ["enable_gradient_checkpointing"]
