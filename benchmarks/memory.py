"""Peak memory of a stretch of PyTorch code, measured on the CPU by counting the bytes of the tensors it creates.

A CPU has no caching allocator with statistics (``torch.cuda.max_memory_allocated`` has no CPU twin), and
the tools that estimate GPU memory without a GPU do not run our training step (``FakeTensorMode`` tensors
on ``cuda`` cannot run backward without a driver; ``torch.distributed._tools.mem_tracker.MemTracker`` fails
on real tensors under gradient checkpointing). So :class:`LiveBytes` is a ``TorchDispatchMode`` that sees
every operator, forward, backward (checkpoint recomputation included) and optimiser alike, and counts the
storage each one allocates until that storage is freed (a ``weakref.finalize`` on it). Tensors that existed
before the mode was entered (the model's weights) are not counted: only what the measured code creates.

The count is of the tensors' bytes, as ``torch.cuda.memory_allocated`` counts them (rounded up to 512 B
blocks); a GPU kernel may allocate differently from its CPU twin (attention kernels most of all), which
the caller's allowance must cover.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry

#: The CUDA caching allocator rounds every block up to a multiple of 512 bytes.
BLOCK = 512


def _storages(tree) -> list[torch.UntypedStorage]:
    leaves, _ = tree_flatten(tree)
    return [t.untyped_storage() for t in leaves if isinstance(t, torch.Tensor) and t.device.type != "meta"]


class LiveBytes(TorchDispatchMode):
    """Bytes of the tensors created since entering, now and at their peak, with named windows, and FLOPs.

    ``phase`` names what is running (``"step"`` by default); :attr:`peaks` keeps the peak of each phase,
    so a caller can tell the peak of the forward and backward from the peak of the optimiser step.

    Example:
        >>> with LiveBytes() as live:
        ...     x = torch.ones(1024) * 2
        >>> live.peak
        4096
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self.phase = "step"
        self.peaks: dict[str, int] = {}
        self.flops = 0
        self._seen: set[int] = set()

    def set_phase(self, name: str) -> None:
        """Count what follows under ``name`` (its peak starts from what is live now)."""
        self.phase = name
        self.peaks[name] = max(self.peaks.get(name, 0), self.live)

    def _free(self, key: int, size: int) -> None:
        self._seen.discard(key)
        self.live -= size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        # FLOPs by torch.utils.flop_counter's formulas. Not FlopCounterMode itself: its module tracker
        # keeps tensors alive under gradient checkpointing, which would change what is measured here.
        count = flop_registry.get(func._overloadpacket)
        if count is not None:
            self.flops += count(*args, **(kwargs or {}), out_val=out)
        # An output that shares an input's storage (a view, an in-place or out= op) allocated nothing.
        inputs = {s._cdata for s in _storages((args, kwargs))}
        for storage in _storages(out):
            key = storage._cdata
            if key in inputs or key in self._seen:
                continue
            size = -(-storage.nbytes() // BLOCK) * BLOCK
            self._seen.add(key)
            self.live += size
            weakref.finalize(storage, self._free, key, size)
        self.peak = max(self.peak, self.live)
        self.peaks[self.phase] = max(self.peaks.get(self.phase, 0), self.live)
        return out


def optimiser_phases(live: LiveBytes) -> Callable[[], None]:
    """Name the optimiser's steps ``"optimiser"`` in ``live`` (every other moment ``"step"``).

    Uses ``torch.optim``'s global step hooks, so any optimiser the measured code creates is seen.

    Returns:
        A function that removes the hooks.
    """
    pre = register_optimizer_step_pre_hook(lambda *a: live.set_phase("optimiser"))
    post = register_optimizer_step_post_hook(lambda *a: live.set_phase("step"))

    def remove() -> None:
        pre.remove()
        post.remove()

    return remove
