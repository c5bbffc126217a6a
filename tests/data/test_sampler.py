"""The seeded batch order: a function of (seed, epoch), shared out between processes without overlap."""

import itertools

import pytest
import torch

from nbhelpers.data.memory import TensorSplit, epoch_batches
from nbhelpers.data.sampler import SeededBatchSampler, derived_seed


def batches(sampler: SeededBatchSampler, epoch: int) -> list[list[int]]:
    return [b.tolist() for b in sampler.epoch_indices(epoch)]


def test_derived_seed_is_stable_and_separates_its_parts():
    assert derived_seed(0, 1, 0) == derived_seed(0, 1, 0) == 5492360401230830419
    assert derived_seed(1, 23) != derived_seed(12, 3)  # "1/23" vs "12/3": no seed * K + epoch collision
    assert 0 <= derived_seed(-5, 2**70) < 2**63


def test_same_seed_and_epoch_give_identical_batches():
    a = SeededBatchSampler(50, 8, seed=3)
    b = SeededBatchSampler(50, 8, seed=3)
    assert batches(a, 2) == batches(b, 2) == batches(a, 2)
    endless = list(itertools.islice(a.epoch_indices(2, endless=True), 6))
    assert [x.tolist() for x in endless] == batches(b, 2)  # the first pass is the one-pass epoch


def test_another_epoch_or_seed_gives_another_order():
    sampler = SeededBatchSampler(50, 8, seed=3)
    assert batches(sampler, 1) != batches(sampler, 2)
    assert batches(sampler, 1) != batches(SeededBatchSampler(50, 8, seed=4), 1)
    assert not torch.equal(sampler.permutation(1, 0), sampler.permutation(1, 1))


def test_one_process_sees_every_sample_once_per_permutation_but_the_tail():
    sampler = SeededBatchSampler(23, 5, seed=0)
    assert len(sampler) == 4
    for index in range(3):
        perm = sampler.permutation(1, index).tolist()
        assert sorted(perm) == list(range(23))
        seen = [i for b in batches_of_pass(sampler, 1, index) for i in b]
        assert seen == perm[:20]  # in permutation order; the 3-sample tail dropped


def batches_of_pass(sampler: SeededBatchSampler, epoch: int, index: int) -> list[list[int]]:
    stream = sampler.epoch_indices(epoch, endless=True)
    per_pass = len(sampler)
    return [b.tolist() for b in itertools.islice(stream, index * per_pass, (index + 1) * per_pass)]


def test_two_processes_take_disjoint_equal_shares_covering_every_full_batch():
    n, size = 23, 4  # global batches of 8: two full ones per permutation, a 7-sample tail
    ranks = [SeededBatchSampler(n, size, seed=5, rank=r, world_size=2) for r in range(2)]
    assert [len(s) for s in ranks] == [2, 2]
    perm = ranks[0].permutation(3).tolist()
    assert perm == ranks[1].permutation(3).tolist()  # every process builds the same permutation
    first, second = batches(ranks[0], 3), batches(ranks[1], 3)
    assert [len(b) for b in first + second] == [4, 4, 4, 4]
    assert not set(sum(first, [])) & set(sum(second, []))
    # Step by step the two batches together are one contiguous slice of the permutation.
    for step, (a, b) in enumerate(zip(first, second)):
        assert sorted(a + b) == sorted(perm[8 * step : 8 * (step + 1)])
    assert sorted(sum(first + second, [])) == sorted(perm[:16])


def test_batch_sizes_with_and_without_drop_last():
    assert [len(b) for b in batches(SeededBatchSampler(10, 4, seed=0), 1)] == [4, 4]
    keep = SeededBatchSampler(10, 4, seed=0, drop_last=False)
    assert len(keep) == 3 and [len(b) for b in batches(keep, 1)] == [4, 4, 2]
    assert sorted(sum(batches(keep, 1), [])) == list(range(10))
    # Without drop_last the tail is shared out too: 5 samples each, one batch of 4 and one of 1.
    shares = [SeededBatchSampler(10, 4, seed=0, rank=r, world_size=2, drop_last=False) for r in range(2)]
    assert [[len(b) for b in batches(s, 1)] for s in shares] == [[4, 1], [4, 1]]
    assert sorted(sum(batches(shares[0], 1) + batches(shares[1], 1), [])) == list(range(10))


def test_without_shuffle_the_order_is_the_samples_order():
    ordered = SeededBatchSampler(7, 3, seed=9, drop_last=False, shuffle=False)
    assert batches(ordered, 1) == batches(ordered, 2) == [[0, 1, 2], [3, 4, 5], [6]]


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"num_samples": 10, "batch_size": 0}, "batch_size"),
        ({"num_samples": 7, "batch_size": 4, "world_size": 2}, "num_samples"),
        ({"num_samples": 3, "batch_size": 4}, "num_samples"),
        ({"num_samples": 1, "batch_size": 4, "world_size": 2, "drop_last": False}, "num_samples"),
        ({"num_samples": 10, "batch_size": 2, "rank": 2, "world_size": 2}, "rank"),
        ({"num_samples": 10, "batch_size": 2, "rank": -1}, "rank"),
        ({"num_samples": 10, "batch_size": 2, "world_size": 0}, "world_size"),
    ],
)
def test_invalid_arguments_raise_naming_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        SeededBatchSampler(seed=0, **kwargs)


def test_exactly_one_batch_per_process_is_enough():
    ranks = [SeededBatchSampler(8, 4, seed=0, rank=r, world_size=2) for r in range(2)]
    assert sorted(batches(ranks[0], 1)[0] + batches(ranks[1], 1)[0]) == list(range(8))


def tiny_split(n: int) -> TensorSplit:
    return TensorSplit(
        images=torch.randint(
            0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
        ),
        labels=torch.arange(n) % 7,
        valid_pair=torch.ones(n, dtype=torch.bool),
        hateful=torch.zeros(n, dtype=torch.long),
        texts=[f"text {i}" for i in range(n)],
        keys=[str(i) for i in range(n)],
    )


def test_epoch_batches_draw_the_samplers_order_and_reproducible_augmentation():
    data = tiny_split(11)
    one = list(epoch_batches(data, 4, seed=2, epoch=1))
    again = list(epoch_batches(data, 4, seed=2, epoch=1))
    order = SeededBatchSampler(11, 4, seed=2).permutation(1).tolist()
    assert [b["key"] for b in one] == [[str(i) for i in order[:4]], [str(i) for i in order[4:8]]]
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(one, again))
    assert not torch.equal(one[0]["image"], next(epoch_batches(data, 4, seed=2, epoch=2))["image"])
    shares = [list(epoch_batches(data, 2, seed=2, epoch=1, rank=r, world_size=2)) for r in range(2)]
    keys = [sum((b["key"] for b in share), []) for share in shares]
    assert len(keys[0]) == len(keys[1]) == 4 and not set(keys[0]) & set(keys[1])
    evaluation = list(epoch_batches(data, 4, seed=2, epoch=1, train=False))
    assert [b["key"] for b in evaluation][-1] == ["8", "9", "10"]  # in order, nothing dropped
