"""A recipe's training and evaluation batches: a split held in memory or streamed from the shards.

Every in-memory stream (a split of pictures, cached features) is drawn by
:func:`nbhelpers.data.sampler.seeded_batches`, so epoch ``e``'s batches are a function of ``(seed, e)``
only, as the engine's bit-exact resumption needs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from accelerate import PartialState

from nbhelpers.data.loader import make_loader, make_pipeline
from nbhelpers.data.memory import TensorSplit, augment, load_split, normalize
from nbhelpers.data.sampler import BatchDraw, derived_seed, seeded_batches
from nbhelpers.data.taxonomy import label_set_of
from nbhelpers.data.transforms import CLIP_MEAN, CLIP_STD, RandomResizedCropFlip, batch_normalize
from nbhelpers.train.recipes.config import RecipeConfig


def epoch_steps(config: RecipeConfig, num_samples: int, micro: int) -> int:
    """Optimiser steps per epoch and process: ``steps_per_epoch`` if set, else one pass over the samples.

    Under ``accelerate launch`` each of the P processes draws its own micro-batches (its share of each
    permutation in memory, its own resampled shard stream), so one pass over ``num_samples`` is
    ``num_samples // P`` samples per process; with one process it is ``num_samples``.

    Args:
        config: the recipe's config (``steps_per_epoch``, ``grad_accum_steps``).
        num_samples: the training samples of the whole split, across processes.
        micro: samples per micro-batch of one process.
    """
    if config.steps_per_epoch:
        return config.steps_per_epoch
    share = num_samples // PartialState().num_processes
    return max(1, share // (micro * config.grad_accum_steps))


@dataclass
class TrainData:
    """The training stream of a recipe: ``batches(epoch)`` and how many steps make an epoch."""

    batches: Callable[[int], Iterable[dict[str, Any]]]
    steps_per_epoch: int
    num_samples: int
    memory: TensorSplit | None = None


def train_data(
    config: RecipeConfig,
    found: list[dict[str, Any]],
    image_size: int,
    tokenizer: Callable | None = None,
    mean: tuple[float, ...] = CLIP_MEAN,
    std: tuple[float, ...] = CLIP_STD,
    labels: Sequence[int] | None = None,
) -> TrainData:
    """The training batches, from memory (``in_memory``) or streamed from the shards.

    Either way epoch ``e``'s batches depend only on ``(seed, e)``, as the engine's resumption needs.
    An epoch is one pass over the (selected) split, shared by every process (:func:`epoch_steps`), unless
    ``steps_per_epoch`` says otherwise.

    Streamed, the shards are read, decoded and augmented by ``num_workers`` DataLoader workers
    (:func:`~nbhelpers.data.loader.make_loader`; 0: in this process), each drawing its own shards, so
    the stream also depends on ``num_workers``, which is part of the run's identity. JPEGs are decoded
    at the smallest scale the random crops allow (:attr:`RandomResizedCropFlip.min_side`) and batches
    are normalised whole.

    Args:
        labels: train on the samples of these classes only (e.g. the label set's valid-pair classes).
    """
    micro = max(1, config.batch_size // config.grad_accum_steps)
    if config.in_memory:
        memory = load_split(found, config.train_split, image_size, tokenizer, limit=config.limit)
        if labels is not None:
            memory = memory.select(torch.isin(memory.labels, torch.tensor(list(labels))))
        n = len(memory)
        return TrainData(
            batches=memory_batches(config, memory, micro, mean, std),
            steps_per_epoch=epoch_steps(config, n, micro),
            num_samples=n,
            memory=memory,
        )
    split_counts = [m["splits"][config.train_split]["class_counts"] for m in found]
    names = label_set_of(found).names
    if labels is None:
        n = sum(m["splits"][config.train_split]["num_samples"] for m in found)
    else:
        n = sum(counts.get(names[c], 0) for counts in split_counts for c in labels)
    if config.limit:
        n = min(n, config.limit)
    steps = epoch_steps(config, n, micro)
    crop = RandomResizedCropFlip(image_size)
    normalise = batch_normalize(mean, std)
    rank = PartialState().process_index
    class_factors = None if labels is None else {c: (1.0 if c in labels else 0.0) for c in range(len(names))}

    def stream(epoch: int) -> Iterable[dict[str, Any]]:
        pipeline = make_pipeline(
            found, config.train_split, batch_size=micro, image_transform=crop, batch_transform=normalise,
            decode_min_side=crop.min_side, tokenizer=tokenizer, train=True, seed=config.seed, epoch=epoch,
            class_factors=class_factors,
        )  # fmt: skip
        return make_loader(
            pipeline, config.num_workers, seed=derived_seed(config.seed, epoch, "loader", rank)
        )

    return TrainData(batches=stream, steps_per_epoch=steps, num_samples=n)


def memory_batches(
    config: RecipeConfig, memory: TensorSplit, micro: int, mean=CLIP_MEAN, std=CLIP_STD
) -> Callable[[int], Iterator[dict[str, Any]]]:
    """``batches(epoch)`` over a split in memory: seeded permutations, this process's share of each,
    augmented (:func:`~nbhelpers.data.memory.augment`) with the epoch's augmentation stream and normalised.

    Raises:
        ValueError: ``memory`` holds fewer than one batch of ``micro`` for every process.
    """

    def make_batch(draw: BatchDraw) -> dict[str, Any]:
        batch = memory.subset(draw.indices)
        batch["image"] = normalize(augment(batch["image"], draw.generator), mean, std)
        return batch

    state = PartialState()
    return seeded_batches(
        len(memory),
        micro,
        make_batch,
        seed=config.seed,
        rank=state.process_index,
        world_size=state.num_processes,
    )


def tensor_batches(
    tensors: Mapping[str, torch.Tensor],
    batch_size: int,
    seed: int,
    *,
    rank: int | None = None,
    world_size: int | None = None,
) -> Callable[[int], Iterator[dict[str, torch.Tensor]]]:
    """``batches(epoch)``: endless shuffled batches of tensors held in memory (e.g. a frozen backbone's
    features), each ``{name: tensor[indices]}``, a function of ``(seed, epoch)``.

    Args:
        tensors: name -> ``(N, ...)`` tensor, all with the same ``N`` samples.
        batch_size: samples per batch of one process.
        seed: the run's seed.
        rank, world_size: this process and the number of processes (default: Accelerate's ``PartialState``).

    Raises:
        ValueError: the tensors hold different numbers of samples, or fewer than one batch for every process.
    """
    sizes = {len(t) for t in tensors.values()}
    if len(sizes) != 1:
        raise ValueError(f"tensors: need one number of samples, got {sorted(sizes)}")
    return seeded_batches(
        sizes.pop(),
        batch_size,
        lambda draw: {name: t[draw.indices] for name, t in tensors.items()},
        seed=seed,
        rank=rank,
        world_size=world_size,
    )


def eval_batches(
    data: TensorSplit,
    batch_size: int = 256,
    mean: tuple[float, ...] = CLIP_MEAN,
    std: tuple[float, ...] = CLIP_STD,
) -> Iterator[dict[str, Any]]:
    """A split in memory, in order, normalised, in batches."""
    for start in range(0, len(data), batch_size):
        batch = data.subset(torch.arange(start, min(start + batch_size, len(data))))
        batch["image"] = normalize(batch["image"], mean, std)
        yield batch
