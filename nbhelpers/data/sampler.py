"""Seeded, process-sharded batch order over ``num_samples`` in-memory samples.

Every in-memory batcher (a split of images, cached features) draws its order here, so all of them keep
the engine's data contract (:mod:`nbhelpers.train.engine`): epoch ``e``'s batches are a function of
``(seed, e)`` only, never of how much an earlier epoch consumed, which is what bit-exact resumption needs.

Under ``accelerate launch`` every process builds the same permutation and takes a disjoint share of it:
process ``rank`` takes every ``world_size``-th sample of the permutation's full global batches
(``batch_size * world_size`` samples each), so every process gets the same number of equal batches (no
process waits on a collective the others never reach), and at every step the processes together see one
contiguous slice of the permutation. Only the incomplete tail of a permutation is dropped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import torch

T = TypeVar("T")


def derived_seed(*parts: int | str) -> int:
    """A stable 63-bit seed for ``torch.Generator.manual_seed`` from e.g. ``(seed, epoch, pass)``.

    Unlike ``seed * K + epoch`` no two distinct tuples collide by construction, and unlike ``hash()`` the
    value is the same in every process and Python version.
    """
    digest = hashlib.blake2b("/".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


class SeededBatchSampler:
    """Batches of sample indices, a function of ``(seed, epoch)``, this process's share of each.

    Args:
        num_samples: samples to draw from (indices ``0 .. num_samples - 1``).
        batch_size: samples per batch of one process.
        seed: the run's seed.
        rank: this process's index in ``[0, world_size)`` (``PartialState().process_index``).
        world_size: processes sharing each permutation (``PartialState().num_processes``).
        drop_last: drop the permutation's tail that does not fill one batch for every process. Without
            it, the tail is shared out like the rest and each process's last batch may be smaller (or
            missing), so processes may see different numbers of batches: for evaluation, not training.
        shuffle: ``False`` keeps the samples in order (``0, 1, 2, ...``) in every pass.

    Raises:
        ValueError: ``batch_size`` or ``world_size`` below 1, ``rank`` outside ``[0, world_size)``, or
            ``num_samples`` too small to give every process a batch (``batch_size * world_size`` samples
            with ``drop_last``, ``world_size`` without).
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        *,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
        shuffle: bool = True,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if world_size < 1:
            raise ValueError(f"world_size must be at least 1, got {world_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        if drop_last and num_samples < batch_size * world_size:
            raise ValueError(
                f"num_samples={num_samples} is fewer than one batch of {batch_size} for each of "
                f"{world_size} process(es) ({batch_size * world_size} samples)"
            )
        if num_samples < world_size:
            raise ValueError(f"num_samples={num_samples} is fewer than one sample for each of {world_size}")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.shuffle = shuffle

    def permutation(self, epoch: int, index: int = 0) -> torch.Tensor:
        """The ``index``-th permutation of ``epoch``, shared by every process: ``(num_samples,)`` int64."""
        if not self.shuffle:
            return torch.arange(self.num_samples)
        generator = torch.Generator().manual_seed(derived_seed(self.seed, epoch, index))
        return torch.randperm(self.num_samples, generator=generator)

    def share(self, epoch: int, index: int = 0) -> torch.Tensor:
        """This process's samples of permutation ``index`` of ``epoch``, in batch order: ``(M,)`` int64."""
        order = self.permutation(epoch, index)
        if self.drop_last:
            order = order[: len(order) - len(order) % (self.batch_size * self.world_size)]
        return order[self.rank :: self.world_size]

    def __len__(self) -> int:
        """Batches this process takes from one permutation."""
        if self.drop_last:
            return self.num_samples // (self.batch_size * self.world_size)
        share = len(range(self.rank, self.num_samples, self.world_size))
        return -(-share // self.batch_size)

    def epoch_indices(self, epoch: int, *, endless: bool = False) -> Iterator[torch.Tensor]:
        """This process's batches of epoch ``epoch``.

        Args:
            epoch: the engine's epoch number; another epoch draws other permutations.
            endless: go on through the epoch's consecutive permutations ``0, 1, 2, ...`` without end (an
                epoch longer than one pass); otherwise stop after permutation 0.

        Yields:
            Sample indices ``(batch_size,)`` int64 (the last of a permutation smaller without ``drop_last``).
        """
        index = 0
        while True:
            share = self.share(epoch, index)
            yield from share.split(self.batch_size)
            if not endless:
                return
            index += 1


@dataclass(frozen=True)
class BatchDraw:
    """One training batch as drawn by :func:`seeded_batches`, for its ``make_batch`` to fill.

    Attributes:
        indices: this process's samples of the batch, ``(batch_size,)`` int64.
        epoch: the engine's epoch number (1-based).
        step: the batch's global number in its epoch, counted over every process
            (``index * world_size + rank``): two processes never share one.
        generator: this process's augmentation stream for the epoch (seeded by ``(seed, epoch, "augment",
            rank)``), shared by the epoch's batches in order.
    """

    indices: torch.Tensor
    epoch: int
    step: int
    generator: torch.Generator


def seeded_batches(
    num_samples: int,
    batch_size: int,
    make_batch: Callable[[BatchDraw], T],
    *,
    seed: int,
    rank: int | None = None,
    world_size: int | None = None,
) -> Callable[[int], Iterator[T]]:
    """The engine's ``batches(epoch)`` over ``num_samples`` samples held in memory.

    The one in-memory training stream of every recipe (a split of pictures, cached features): an endless
    run of :class:`SeededBatchSampler` batches (as many permutations as an epoch needs; each one's
    incomplete tail dropped), each turned into a batch by ``make_batch``. Epoch ``e``'s batches are a
    function of ``(seed, e)`` only, as bit-exact resumption needs.

    Args:
        num_samples: samples to draw from.
        batch_size: samples per batch of one process (the micro-batch under accumulation).
        make_batch: ``BatchDraw -> batch``: takes the samples (and augments them with ``draw.generator``).
        seed: the run's seed.
        rank, world_size: this process and the number of processes (default: Accelerate's
            ``PartialState``; one process outside ``accelerate launch``).

    Raises:
        ValueError: ``num_samples`` is fewer than one batch for every process: raised here, before any
            training, not on the first epoch's first batch.
    """
    if rank is None or world_size is None:
        from accelerate import PartialState

        state = PartialState()
        rank, world_size = state.process_index, state.num_processes
    sampler = SeededBatchSampler(num_samples, batch_size, seed=seed, rank=rank, world_size=world_size)

    def batches(epoch: int) -> Iterator[T]:
        generator = torch.Generator().manual_seed(derived_seed(seed, epoch, "augment", rank))
        for index, indices in enumerate(sampler.epoch_indices(epoch, endless=True)):
            yield make_batch(BatchDraw(indices, epoch, index * world_size + rank, generator))

    return batches
