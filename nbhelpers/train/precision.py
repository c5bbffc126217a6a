"""Mixed precision per ``fit``: autocast and fp16 loss scaling, with only public Accelerate and PyTorch APIs.

**Why the engine does its own AMP in one process.** Accelerate keeps the precision in
``AcceleratorState``, a process-wide singleton that refuses a second ``mixed_precision``
(``ValueError: AcceleratorState has already been initialized``) and has no public way to reset it. A
notebook kernel trains several models, under different precisions. So in a single process (a notebook,
``python -m nbhelpers.train``, or a one-process ``accelerate launch``) the engine creates its
:class:`~accelerate.Accelerator` with ``mixed_precision="no"``, the same for every ``fit``, and the
precision is a property of the fit, not of the process: ``torch.autocast`` around the forward and a
``torch.amp.GradScaler`` for fp16, exactly what Accelerate itself would run (same dtypes, fp16 scaling
only off the CPU, the scaler's state in the checkpoint). The reasons Accelerate owns AMP elsewhere
(DeepSpeed, FSDP, Megatron, TPU) do not exist in one process.

**Under a launcher** (``accelerate launch`` with several processes) nothing changes: the launcher's
state is the source of truth, the Accelerator is created with the run's ``mixed_precision`` and does
AMP itself, and a second ``fit`` under another precision in the same launched process fails with
Accelerate's error, as before.

:class:`Precision` gives the loop one interface (``autocast``, ``backward``, ``clip``, ``step``,
``scaler``) for both.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from contextlib import AbstractContextManager

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import DistributedType, parse_flag_from_env

MIXED_PRECISION_MODES = ("no", "fp16", "bf16", "auto")
#: Device types on which the engine's own ``fp16`` is full precision (no autocast, no loss scaling):
#: Accelerate's rule, fp16 only off the CPU. Emptied, a CPU runs the GPU's fp16 path (autocast to fp16 and
#: a ``GradScaler``), which is how that path is tested without a GPU.
FP16_FULL_PRECISION_DEVICES = frozenset({"cpu"})


def resolve_mixed_precision(mode: str) -> str:
    """Turn ``auto`` into ``bf16``, ``fp16`` or ``no`` for this machine; other modes pass through.

    ``bf16`` needs native support (compute capability 8.0+: A100, L4, H100); a T4 only emulates it,
    slowly, so it gets ``fp16`` with loss scaling. CPU and other devices get ``no``.

    Raises:
        ValueError: for a mode not in ``MIXED_PRECISION_MODES``.
    """
    if mode not in MIXED_PRECISION_MODES:
        raise ValueError(f"mixed_precision must be one of {MIXED_PRECISION_MODES}, got {mode!r}")
    if mode != "auto":
        return mode
    if not torch.cuda.is_available():
        return "no"
    return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"


def process_state() -> PartialState:
    """Accelerate's process state, created (the first time) as ``Accelerator()`` would create it.

    The state is a process-wide singleton fixed by whoever creates it first. A plain ``PartialState()``
    ignores ``ACCELERATE_USE_CPU``, so on a machine without GPUs, under ``torchrun`` with
    ``ACCELERATE_USE_CPU=1`` (several CPU processes, gloo), it would pin every process to a single-process
    state; created here, the processes find each other. Call it before anything else asks for the state.
    """
    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))


def launched_with_several_processes() -> bool:
    """Whether a launcher started this process as one of several (Accelerate then owns precision)."""
    return process_state().distributed_type != DistributedType.NO


class Precision:
    """The autocast and loss scaling of one ``fit`` (see the module docstring for who does them).

    Args:
        accelerator: the fit's accelerator.
        mode: ``no``, ``fp16`` or ``bf16`` (already resolved).
        own: True for the engine's own AMP under an Accelerator of precision ``no``; False to leave it to
            the accelerator (created with ``mode``).
    """

    def __init__(self, accelerator: Accelerator, mode: str, own: bool):
        self.accelerator = accelerator
        self.mode = mode
        self.own = own
        device = accelerator.device.type
        # Accelerate's rules: bf16 autocasts on any device; fp16 autocasts and scales losses only off the
        # CPU (on a CPU it is full precision).
        self._dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mode) if own else None
        if self._dtype is torch.float16 and device in FP16_FULL_PRECISION_DEVICES:
            self._dtype = None
        self._own_scaler = torch.amp.GradScaler(device) if self._dtype is torch.float16 else None

    @property
    def scaler(self) -> torch.amp.GradScaler | None:
        """The fp16 loss scaler (its state goes into checkpoints), or None."""
        return self._own_scaler if self.own else self.accelerator.scaler

    def autocast(self) -> AbstractContextManager:
        """The context to run the forward and loss in."""
        if not self.own:
            return self.accelerator.autocast()
        if self._dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.accelerator.device.type, dtype=self._dtype)

    def backward(self, loss: torch.Tensor) -> None:
        """``accelerator.backward`` (divides by the accumulation steps), of the scaled loss under fp16."""
        scaler = self._own_scaler
        # The scale is a power of two, so scaling before Accelerate's division is exact.
        self.accelerator.backward(scaler.scale(loss) if scaler is not None else loss)

    def clip(
        self, params: Iterable[torch.Tensor], optimizer: torch.optim.Optimizer, max_norm: float
    ) -> float:
        """Clip the unscaled gradients' global 2-norm to ``max_norm``; returns the norm before clipping.

        Call only at an optimiser step (gradients synchronised), before :meth:`step`.
        """
        if self._own_scaler is not None:
            self._own_scaler.unscale_(_inner(optimizer))
        return float(self.accelerator.clip_grad_norm_(params, max_norm))

    def step(self, optimizer: torch.optim.Optimizer) -> bool:
        """The optimiser step (skipped by the scaler when fp16 gradients overflowed).

        Call only at an optimiser step (gradients synchronised).

        Returns:
            False when the fp16 loss scaler skipped the step (inf or NaN gradients; it then halves its
            scale), else True.
        """
        if self._own_scaler is None:
            optimizer.step()
            # Under a launcher Accelerate's optimiser wrapper knows whether its scaler skipped the step.
            return not getattr(optimizer, "step_was_skipped", False)
        scale = self._own_scaler.get_scale()
        self._own_scaler.step(_inner(optimizer))
        self._own_scaler.update()
        # The scale only falls when the step found inf or NaN gradients and was skipped.
        return self._own_scaler.get_scale() >= scale


def _inner(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    # The torch optimiser under accelerate's AcceleratedOptimizer wrapper.
    return getattr(optimizer, "optimizer", optimizer)


def make_accelerator(mode: str, grad_accum_steps: int) -> tuple[Accelerator, Precision]:
    """The accelerator of one ``fit`` and its precision (see the module docstring).

    Args:
        mode: ``no``, ``fp16`` or ``bf16`` (already resolved).
        grad_accum_steps: micro-batches per optimiser step.

    Raises:
        ValueError: (Accelerate's) several launched processes already hold another precision.
    """
    if launched_with_several_processes():
        accelerator = Accelerator(mixed_precision=mode, gradient_accumulation_steps=grad_accum_steps)
        return accelerator, Precision(accelerator, mode, own=False)
    accelerator = Accelerator(mixed_precision="no", gradient_accumulation_steps=grad_accum_steps)
    return accelerator, Precision(accelerator, mode, own=True)
