"""The WebDataset pipeline over one or more shard manifests.

Training streams are resampled and infinite, as ``open_clip_train``'s: shards are drawn with
replacement, each source weighted by its sample count times its upsampling factor (as
``--train-data-upsampling-factors``), and samples of a class can be repeated (factor > 1) or thinned
(factor < 1). Evaluation streams read every shard of the split once, in order. Both split the shards by
node and by DataLoader worker, so ``accelerate launch`` on several GPUs sees disjoint data.

Shards are read by :func:`nbhelpers.data.tar_samples.iter_groups` and members decoded explicitly
(``jpg`` by :func:`nbhelpers.data.image.decode_rgb`, ``txt`` as UTF-8, ``json`` with the json module);
a shard member is never unpickled. Every sample that does not reach a batch is counted by reason in
:attr:`Pipeline.skipped` (the loader's skip report), with a warning naming the shard the first time:

- ``truncated_shard`` / ``missing_shard``: the samples a shard lacks against the count ``sizes.json``
  records for it (a shard cut short, or gone);
- ``duplicate_key``: a key seen twice in one shard;
- ``missing_member``, ``bad_metadata`` (a ``json`` that is not a JSON object with a ``label``),
  ``invalid_label`` (not an int in 0..6 or -1: ``9``, ``-5``, ``"7"``, ``3.7`` and ``true`` included);
- ``unlabelled``: label -1, dropped on purpose (it can be neither trained nor scored);
- ``undecodable_image``, ``image_too_large``, ``undecodable_text``, ``invalid_text``.

So, for a split read once in evaluation order with no ``limit``, the samples returned plus the skip
counts equal the manifest's ``num_samples``. (Counts are kept in the process that reads: with
DataLoader workers they stay in the workers.)

Determinism: a training stream is a function of ``(seed, epoch, node rank, worker id)``, its random
transforms included (:class:`BatchMaker`), so a resumed run sees the same batches as an uninterrupted
one. Through :func:`make_loader` with ``num_workers`` = W, worker ``w`` runs its own stream and the loader
takes one batch from each worker in turn: the batches are then a function of the seed, the epoch, the
rank and W, so W is part of a run's configuration (two runs differing only in W see different, equally
valid, streams).
"""

from __future__ import annotations

import json
import random
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import torch
import webdataset as wds
from torch.utils.data import IterableDataset

from nbhelpers.data.image import decode_rgb
from nbhelpers.data.sampler import derived_seed
from nbhelpers.data.shards import SIZES, read_manifest
from nbhelpers.data.tar_samples import MEMBERS, ShardReadError, iter_groups
from nbhelpers.data.taxonomy import HATE, SEVEN_CLASSES, UNLABELLED, LabelSet, label_set_of
from nbhelpers.data.validity import Rejected, valid_label, valid_text
from nbhelpers.fileio import read_json


@dataclass
class ShardSet:
    """The shards of one split across manifests, with a sampling weight per shard."""

    urls: list[str]
    weights: list[float]
    num_samples: int
    sources: list[str]
    class_counts: dict[str, int] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    labels: LabelSet = SEVEN_CLASSES


def shard_set(
    manifests: Sequence[str | Path | dict], split: str, source_factors: dict[str, float] | None = None
) -> ShardSet:
    """Collects the shards of ``split`` from each manifest (a path or an already read manifest).

    A shard's weight is its sample count times its source's factor (default 1), so with no factors
    every sample is equally likely, whatever source it comes from.

    Raises:
        KeyError: if a manifest has no such split (the message lists the splits it has).
        ValueError: if the manifests use different label sets.
    """
    urls, weights, sources, read = [], [], [], []
    expected: dict[str, int] = {}
    total = 0
    classes: Counter[str] = Counter()
    for m in manifests:
        manifest = m if isinstance(m, dict) else read_manifest(m)
        read.append(manifest)
        root = Path(manifest["_dir"])
        if split not in manifest["splits"]:
            raise KeyError(
                f"source {manifest['source']!r} has no split {split!r}; it has {list(manifest['splits'])}"
            )
        info = manifest["splits"][split]
        sizes = read_json(root / SIZES)
        factor = (source_factors or {}).get(manifest["source"], 1.0)
        for shard in info["shards"]:
            if sizes.get(shard, 0) == 0:
                continue
            urls.append(str(root / shard))
            weights.append(sizes[shard] * factor)
            expected[str(root / shard)] = sizes[shard]
        total += info["num_samples"]
        classes.update(info["class_counts"])
        sources.append(manifest["source"])
    if not urls:
        raise ValueError(f"split {split!r} has no samples in {[str(m) for m in sources]}")
    return ShardSet(
        urls=urls,
        weights=weights,
        num_samples=total,
        sources=sources,
        class_counts=dict(classes),
        sizes=expected,
        labels=label_set_of(read),
    )


def _stream_seed(seed: int, epoch: int) -> int:
    rank, _, worker, _ = wds.utils.pytorch_worker_info()
    return hash((seed, epoch, rank, worker)) & 0xFFFFFFFF


class WeightedResampledShards(IterableDataset):
    """An infinite stream of ``{"url": ...}`` drawn with replacement, by weight.

    Each node and worker draws from its own generator seeded by ``(seed, epoch, rank, worker)``.
    """

    def __init__(self, urls: list[str], weights: list[float], seed: int = 0, epoch: int = 0):
        super().__init__()
        if len(urls) != len(weights) or not urls:
            raise ValueError("need one weight per shard, and at least one shard")
        self.urls, self.weights, self.seed, self.epoch = urls, weights, seed, epoch

    def __iter__(self) -> Iterator[dict[str, str]]:
        rng = random.Random(_stream_seed(self.seed, self.epoch))
        while True:
            yield {"url": rng.choices(self.urls, weights=self.weights)[0]}


_SHARD_REASONS = frozenset({"truncated_shard", "missing_shard"})


class SampleDecoder:
    """Reads shards into samples and decodes their members explicitly; counts and skips what fails.

    Args:
        sizes: the number of samples each shard (by path) should hold, from ``sizes.json``.
        labels: the label set of the shards (from their manifests); labels outside it are skipped.
        min_side: decode JPEGs at a reduced scale whose shorter side is at least this (see
            :func:`~nbhelpers.data.image.decode_rgb`); None: at full size.
    """

    def __init__(
        self,
        sizes: dict[str, int] | None = None,
        labels: LabelSet = SEVEN_CLASSES,
        min_side: int | None = None,
    ):
        self.sizes = dict(sizes or {})
        self.labels = labels
        self.min_side = min_side
        self.skipped: Counter[str] = Counter()
        self._warned: set[tuple[str, str]] = set()

    def read(self, src: Iterable[dict]) -> Iterator[dict]:
        """``{"url": path}`` items -> raw samples (``__key__``, ``__url__`` and one entry per member)."""
        for item in src:
            url = item["url"]
            read, keys = 0, set()
            try:
                for group in iter_groups(url):
                    if not group.members:  # a folder or link: not a sample (verify reports it)
                        continue
                    read += 1
                    if group.key in keys:
                        self._skip("duplicate_key", url, f"key {group.key} appears twice")
                        continue
                    keys.add(group.key)
                    yield {"__key__": group.key, "__url__": url, **group.members}
            except ShardReadError as err:
                lost = max(self.sizes.get(url, read) - read, 0)
                reason = "missing_shard" if err.missing else "truncated_shard"
                self._skip(reason, url, f"{lost} of {self.sizes.get(url, '?')} samples lost: {err}", lost)
                continue
            if read < self.sizes.get(url, read):
                lost = self.sizes[url] - read
                self._skip("truncated_shard", url, f"{read} of {self.sizes[url]} samples ({lost} lost)", lost)

    def parse_json(self, src: Iterable[dict]) -> Iterator[dict]:
        """Parses each sample's ``json`` and checks its label; drops unlabelled samples (counted)."""
        for raw in src:
            where = f"{raw.get('__url__')} key {raw.get('__key__')}"
            missing = [m for m in MEMBERS if m not in raw]
            if missing:
                self._skip("missing_member", where, f"no {', '.join(missing)} member")
                continue
            try:
                meta = json.loads(raw["json"].decode("utf-8"))
            except (ValueError, RecursionError) as err:  # UnicodeDecodeError is a ValueError
                self._skip("bad_metadata", where, err)
                continue
            if not isinstance(meta, dict) or "label" not in meta:
                self._skip("bad_metadata", where, "json is not an object with a label")
                continue
            try:
                label = valid_label(meta["label"], num_classes=len(self.labels))
            except Rejected as err:
                self._skip(err.reason, where, err)
                continue
            if label == UNLABELLED:
                self.skipped["unlabelled"] += 1  # by design, not a fault: no warning
                continue
            raw["meta"], raw["label"] = meta, label
            yield raw

    def decode(self, src: Iterable[dict]) -> Iterator[dict]:
        """Decodes ``jpg`` and ``txt`` of parsed samples into the sample dicts batches are made of."""
        for raw in src:
            where = f"{raw.get('__url__')} key {raw['__key__']}"
            try:
                image = decode_rgb(raw["jpg"], f"{raw['__key__']}.jpg", self.min_side)
                text, _ = valid_text(raw["txt"].decode("utf-8"))
            except UnicodeDecodeError as err:
                self._skip("undecodable_text", where, err)
                continue
            except Rejected as err:
                self._skip(err.reason, where, err)
                continue
            meta = raw["meta"]
            yield {
                "key": raw["__key__"],
                "image": image,
                "text": text,
                "label": raw["label"],
                "valid_pair": bool(meta.get("valid_pair", self.labels.is_valid_pair(raw["label"]))),
                "hateful": int(meta.get("hateful", int(self.labels.is_default and raw["label"] == HATE))),
                "source": meta.get("source", ""),
                "meta": meta,
            }

    def _skip(self, reason: str, where: str, err: Exception | str, count: int = 1) -> None:
        # A warning the first time per reason, and per shard for a shard's losses: a truncated shard
        # drawn again and again by a resampled training stream must not flood the output.
        once = (reason, where if reason in _SHARD_REASONS else "")
        if once not in self._warned:
            self._warned.add(once)
            warnings.warn(f"skipping {count} sample(s) of {where}: {reason}: {err}", stacklevel=3)
        if count:
            self.skipped[reason] += count


def upsample_classes(src: Iterable[dict], factors: dict[int, float], seed: int = 0) -> Iterator[dict]:
    """Repeats each sample of class ``c`` ``factors[c]`` times on average (floor, plus one by chance).

    A factor below 1 keeps a sample with that probability. Classes not in ``factors`` pass once.
    """
    rng = random.Random(seed)
    for sample in src:
        factor = factors.get(sample["label"], 1.0)
        whole, frac = int(factor), factor - int(factor)
        for _ in range(whole + (rng.random() < frac)):
            yield sample


def collate(samples: list[dict]) -> dict[str, Any]:
    """Stacks a list of samples into a batch: tensors stacked, the rest kept as lists."""
    batch: dict[str, Any] = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        if isinstance(values[0], torch.Tensor):
            batch[key] = torch.stack(values)
        elif key in ("label", "hateful", "valid_pair"):
            batch[key] = torch.tensor(values)
        else:
            batch[key] = values
    return batch


class BatchMaker:
    """The last stage of a pipeline: lists of decoded samples -> batches (:func:`collate`).

    Each sample's image goes through ``image_transform``, the texts are tokenised together, the samples
    are stacked, and ``batch_transform`` is applied to the stacked images.

    The transforms' random draws come from torch's global RNG, as torchvision's do, but the state it
    holds while they run is the stream's own: seeded by ``(seed, epoch, node rank, worker id)`` when
    the stream starts and swapped in around each batch's transforms. So a stream's images are a
    function of those alone, whichever process runs it (this one or a DataLoader worker) and whatever
    the caller's global RNG holds, which the stream leaves untouched.
    """

    def __init__(
        self,
        image_transform: Callable | None,
        tokenizer: Callable | None,
        batch_transform: Callable | None,
        seed: int,
        epoch: int,
    ):
        self.image_transform, self.batch_transform = image_transform, batch_transform
        self.tokenizer, self.seed, self.epoch = tokenizer, seed, epoch

    def __call__(self, src: Iterable[list[dict]]) -> Iterator[dict[str, Any]]:
        rank, _, worker, _ = wds.utils.pytorch_worker_info()
        seed = derived_seed(self.seed, self.epoch, "transform", rank, worker)
        state = torch.Generator().manual_seed(seed).get_state()
        for samples in src:
            if self.image_transform is not None:
                outer = torch.get_rng_state()
                torch.set_rng_state(state)
                try:
                    for sample in samples:
                        sample["image"] = self.image_transform(sample["image"])
                finally:
                    state = torch.get_rng_state()
                    torch.set_rng_state(outer)
            batch = collate(samples)
            if self.tokenizer is not None:
                batch["tokens"] = self.tokenizer(batch["text"])
            if self.batch_transform is not None:
                batch["image"] = self.batch_transform(batch["image"])
            yield batch


class Pipeline(wds.DataPipeline):
    """A ``wds.DataPipeline`` that also exposes its decoder's skip counts (the skip report)."""

    decoder: SampleDecoder

    @property
    def skipped(self) -> dict[str, int]:
        return dict(self.decoder.skipped)


def make_pipeline(
    manifests: Sequence[str | Path | dict],
    split: str,
    *,
    batch_size: int,
    image_transform: Callable | None = None,
    batch_transform: Callable | None = None,
    decode_min_side: int | None = None,
    tokenizer: Callable | None = None,
    train: bool = False,
    seed: int = 0,
    epoch: int = 0,
    shuffle_buffer: int = 1000,
    source_factors: dict[str, float] | None = None,
    class_factors: dict[int, float] | None = None,
    limit: int | None = None,
    partial: bool | None = None,
) -> Pipeline:
    """Builds the pipeline of ``split`` over ``manifests``: batches of dicts.

    Each batch has ``image`` (B, 3, H, W) after ``image_transform`` (a PIL image list without one),
    ``text`` (list of str), ``tokens`` (B, L) if ``tokenizer`` is given (an open_clip tokenizer:
    list of str -> (N, L) tensor), ``label``, ``hateful`` and ``valid_pair`` (B,), ``key``, ``source``
    and ``meta`` (lists).

    Args:
        manifests: manifest files, folders, or manifests already read.
        split: the split to read.
        batch_size: samples per batch.
        image_transform: a callable from a PIL image to a tensor.
        batch_transform: a callable applied to each batch's stacked ``image`` tensor (e.g.
            :func:`~nbhelpers.data.transforms.batch_normalize` after a ``uint8`` ``image_transform``).
        decode_min_side: decode JPEGs at 1/2, 1/4 or 1/8 scale as long as their shorter side stays at
            least this (e.g. :attr:`~nbhelpers.data.transforms.RandomResizedCropFlip.min_side`); None:
            at full size.
        tokenizer: an open_clip-style tokenizer, applied per sample.
        train: resampled, shuffled, infinite (True) or every sample once, in order (False), in every
            process of a launch.
        seed: seed of the shard draw, shuffle and class upsampling.
        epoch: mixed into the seed, so each epoch sees a different, reproducible stream.
        shuffle_buffer: samples in the shuffle buffer (train only).
        source_factors: per-source upsampling factors (train only).
        class_factors: per-class upsampling factors, ``{label: factor}`` (train only).
        limit: stop after this many samples (per worker).
        partial: keep a last, smaller batch (default: not in training, yes in evaluation).
    """
    shards = shard_set(manifests, split, source_factors)
    labels = shards.labels
    decoder = SampleDecoder(shards.sizes, labels, decode_min_side)
    stages: list[Any]
    if train:
        stages = [WeightedResampledShards(shards.urls, shards.weights, seed, epoch)]
    else:
        # Every process reads the whole split (no split_by_node): a split in memory is sampled, and an
        # evaluation scored, whole in each process; only DataLoader workers share the shards out.
        stages = [wds.SimpleShardList(shards.urls), wds.split_by_worker]
    stages += [decoder.read, decoder.parse_json]
    if train:
        if class_factors:
            unknown = set(class_factors) - set(range(len(labels)))
            if unknown:
                raise ValueError(
                    f"class_factors: unknown labels {sorted(unknown)}; allowed 0..{len(labels) - 1}"
                )
            stages.append(lambda src: upsample_classes(src, class_factors, seed + epoch))
        stages.append(
            wds.shuffle(shuffle_buffer, initial=min(shuffle_buffer, 100), rng=random.Random(seed + epoch))
        )
    stages.append(decoder.decode)
    if limit is not None:
        stages.append(lambda src: islice(src, limit))
    stages.append(
        wds.batched(batch_size, collation_fn=list, partial=(not train) if partial is None else partial)
    )
    stages.append(BatchMaker(image_transform, tokenizer, batch_transform, seed, epoch))
    pipeline = Pipeline(*stages)
    pipeline.decoder = decoder
    pipeline.num_samples = shards.num_samples
    return pipeline


def as_is(batch: Any) -> Any:
    """The loader's ``collate_fn``: a pipeline's batch, already collated (:func:`collate`), unchanged."""
    return batch


def make_loader(pipeline: wds.DataPipeline, num_workers: int = 0, seed: int | None = None) -> wds.WebLoader:
    """Wraps a batched pipeline in a ``WebLoader`` (a DataLoader with ``batch_size=None``).

    With ``num_workers`` > 0 each worker runs its own copy of the pipeline (a training stream draws its
    own shards, by worker id) and the loader takes their batches in turn, worker 0 first. Each worker's
    torch, ``random`` and numpy RNGs (what a transform such as
    :class:`~nbhelpers.data.transforms.RandomResizedCropFlip` draws from) are seeded by the DataLoader
    with a base seed plus the worker id; the base seed is drawn from a generator seeded with ``seed``,
    so the batches are a function of the pipeline's arguments, ``num_workers`` and ``seed`` alone, and
    nothing is drawn from the calling process's global RNG. With ``seed=None`` the base seed comes from
    torch's global RNG, as in a plain DataLoader.
    """
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    return wds.WebLoader(
        pipeline, batch_size=None, num_workers=num_workers, persistent_workers=False, generator=generator
    )
