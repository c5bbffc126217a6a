"""What every recipe shares: an epoch is one pass over the training split, whatever the process count."""

import pytest
import torch

from nbhelpers.data.sampler import SeededBatchSampler
from nbhelpers.data.taxonomy import CLASSES
from nbhelpers.train.recipes import data
from nbhelpers.train.recipes.config import RecipeConfig
from nbhelpers.train.recipes.data import epoch_steps, tensor_batches, train_data


class FakeState:
    """Stands in for accelerate's ``PartialState`` under ``accelerate launch --num_processes N``."""

    def __init__(self, num_processes: int):
        self.num_processes = num_processes
        self.process_index = 0


@pytest.fixture
def processes(monkeypatch):
    def use(n: int) -> None:
        monkeypatch.setattr(data, "PartialState", lambda: FakeState(n))

    return use


def config(**overrides) -> RecipeConfig:
    spec = RecipeConfig(**{"batch_size": 16, "grad_accum_steps": 2, **overrides})
    spec.validate()
    return spec


@pytest.mark.parametrize(
    ("num_samples", "micro", "grad_accum", "one", "two"),
    [(160, 8, 2, 10, 5), (160, 16, 1, 10, 5), (100, 8, 2, 6, 3), (10, 8, 2, 1, 1)],
)
def test_epoch_steps_share_one_pass_between_processes(processes, num_samples, micro, grad_accum, one, two):
    spec = config(grad_accum_steps=grad_accum)
    processes(1)
    assert epoch_steps(spec, num_samples, micro) == one == max(1, num_samples // (micro * grad_accum))
    processes(2)
    assert epoch_steps(spec, num_samples, micro) == two


def test_steps_per_epoch_wins_over_the_process_count(processes):
    for n in (1, 2, 4):
        processes(n)
        assert epoch_steps(config(steps_per_epoch=7), 160, 8) == 7


class FakeSplit:
    def __len__(self) -> int:
        return 160


def test_train_data_halves_the_steps_with_two_processes_in_memory_and_streamed(processes, monkeypatch):
    monkeypatch.setattr(data, "load_split", lambda *args, **kwargs: FakeSplit())
    counts = {name: 0 for name in CLASSES}
    counts[CLASSES[0]] = 40
    found = [{"splits": {"train": {"num_samples": 160, "class_counts": counts}}}]
    for in_memory in (True, False):
        processes(1)
        assert train_data(config(in_memory=in_memory), found, 32).steps_per_epoch == 160 // 16
        assert train_data(config(in_memory=in_memory), found, 32).num_samples == 160
        processes(2)
        assert train_data(config(in_memory=in_memory), found, 32).steps_per_epoch == 160 // 32
        # the sample count stays the whole split's (metrics.json reports it)
        assert train_data(config(in_memory=in_memory), found, 32).num_samples == 160
    processes(2)
    assert train_data(config(in_memory=False), found, 32, labels=[0]).steps_per_epoch == 40 // 32


def test_feature_batches_split_one_permutation_between_processes():
    features = {"label": torch.arange(20), "image": torch.arange(20).float()[:, None]}

    def labels_seen(rank: int, processes: int) -> list[int]:
        stream = tensor_batches(features, batch_size=5, seed=3, rank=rank, world_size=processes)(1)
        return torch.cat([next(stream)["label"] for _ in range(4 // processes)]).tolist()

    one = labels_seen(0, 1)
    order = SeededBatchSampler(20, 5, seed=3).permutation(1).tolist()
    assert one == order  # one process: the whole permutation, in order
    first, second = labels_seen(0, 2), labels_seen(1, 2)
    assert first == order[0::2] and second == order[1::2]  # two: disjoint halves of the same permutation


def _streamed(tiny_shards, tmp_path, **overrides):
    from nbhelpers.data.shards import read_manifest

    spec = config(
        data_dir=str(tiny_shards), runs_dir=str(tmp_path), in_memory=False, batch_size=8, grad_accum_steps=1,
        **overrides,
    )  # fmt: skip
    return train_data(spec, [read_manifest(tiny_shards / "synthetic")], 16)


def test_streamed_training_data_uses_num_workers(tiny_shards, tmp_path):
    import webdataset as wds

    for workers in (0, 2):
        batches = _streamed(tiny_shards, tmp_path, num_workers=workers).batches(1)
        assert isinstance(batches, wds.WebLoader) and batches.pipeline[0].num_workers == workers
    first = next(iter(_streamed(tiny_shards, tmp_path, num_workers=2).batches(1)))
    assert first["image"].shape == (8, 3, 16, 16) and first["image"].dtype == torch.float32
    assert -3 < first["image"].mean() < 3  # normalised, not 0..255


@pytest.mark.slow
def test_streamed_training_with_workers_resumes_bit_identically(tiny_shards, tmp_path):
    import torch.nn.functional as F

    from nbhelpers.train.engine import TrainSpec, fit

    data = _streamed(tiny_shards, tmp_path, num_workers=2)

    def model() -> torch.nn.Module:
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 7))

    def step(net, batch):
        return F.cross_entropy(net(batch["image"]), batch["label"]), {}

    class Crash(Exception):
        pass

    def crash(net, step_index, total):
        if step_index == 3:  # in epoch 2: resumed from epoch 1's checkpoint
            raise Crash

    def spec(name):
        return TrainSpec(run_dir=tmp_path / name, epochs=2, steps_per_epoch=2, lr=1e-2, progress=False)

    whole = model()
    fit(whole, step, data.batches, spec("whole"))
    with pytest.raises(Crash):
        fit(model(), step, data.batches, spec("resumed"), on_step_end=crash)
    resumed = model()
    torch.nn.init.zeros_(resumed[1].weight)  # everything must come from the checkpoint
    fit(resumed, step, data.batches, spec("resumed"))
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_memory_batches_are_the_memory_splits_training_epochs():
    # The one seeded stream (seeded_batches) gives the batches data.memory.epoch_batches gives a training
    # epoch: the same order and the same augmentation, byte for byte, across permutations.
    from nbhelpers.data.memory import TensorSplit, epoch_batches
    from nbhelpers.train.recipes.data import memory_batches

    generator = torch.Generator().manual_seed(0)
    n = 11
    split = TensorSplit(
        images=torch.randint(0, 256, (n, 3, 8, 8), generator=generator, dtype=torch.uint8),
        labels=torch.arange(n) % 7, valid_pair=torch.ones(n, dtype=torch.bool), hateful=torch.zeros(n),
        texts=[str(i) for i in range(n)], keys=[str(i) for i in range(n)],
    )  # fmt: skip
    stream = memory_batches(config(seed=4), split, 3)(2)
    reference = epoch_batches(split, 3, seed=4, epoch=2, endless=True)
    for _ in range(7):  # three batches per permutation: into the third one
        got, want = next(stream), next(reference)
        assert got["key"] == want["key"] and torch.equal(got["image"], want["image"])
