"""The WebDataset pipeline over one or more shard manifests.

Training streams are resampled and infinite, as ``open_clip_train``'s: shards are drawn with
replacement, each source weighted by its sample count times its upsampling factor (as
``--train-data-upsampling-factors``), and samples of a class can be repeated (factor > 1) or thinned
(factor < 1). Evaluation streams read every shard of the split once, in order. Both split the shards by
node and by DataLoader worker, so ``accelerate launch`` on several GPUs sees disjoint data.

Members are decoded with explicit handlers only (``jpg`` through PIL, ``txt`` as UTF-8, ``json`` with
the json module); a shard member is never unpickled. A sample that fails to decode is skipped and
counted in :attr:`Pipeline.skipped`, with a warning the first time.

Determinism: a training stream is a function of ``(seed, epoch, node rank, worker id)``, so a resumed
run sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

import io
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
from PIL import Image
from torch.utils.data import IterableDataset

from nbhelpers.data.shards import SIZES, read_manifest
from nbhelpers.data.taxonomy import NUM_CLASSES, UNLABELLED
from nbhelpers.fileio import read_json


@dataclass
class ShardSet:
    """The shards of one split across manifests, with a sampling weight per shard."""

    urls: list[str]
    weights: list[float]
    num_samples: int
    sources: list[str]
    class_counts: dict[str, int] = field(default_factory=dict)


def shard_set(
    manifests: Sequence[str | Path | dict], split: str, source_factors: dict[str, float] | None = None
) -> ShardSet:
    """Collects the shards of ``split`` from each manifest (a path or an already read manifest).

    A shard's weight is its sample count times its source's factor (default 1), so with no factors
    every sample is equally likely, whatever source it comes from.

    Raises:
        KeyError: if a manifest has no such split (the message lists the splits it has).
    """
    urls, weights, sources = [], [], []
    total = 0
    classes: Counter[str] = Counter()
    for m in manifests:
        manifest = m if isinstance(m, dict) else read_manifest(m)
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
        total += info["num_samples"]
        classes.update(info["class_counts"])
        sources.append(manifest["source"])
    if not urls:
        raise ValueError(f"split {split!r} has no samples in {[str(m) for m in sources]}")
    return ShardSet(
        urls=urls, weights=weights, num_samples=total, sources=sources, class_counts=dict(classes)
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


class SampleDecoder:
    """Decodes raw tar members explicitly; counts and skips samples that fail."""

    def __init__(self):
        self.skipped: Counter[str] = Counter()

    def parse_json(self, src: Iterable[dict]) -> Iterator[dict]:
        for raw in src:
            try:
                if not {"jpg", "txt", "json"} <= raw.keys():
                    missing = sorted({"jpg", "txt", "json"} - raw.keys())
                    raise ValueError(f"missing member(s) {missing}")
                raw["meta"] = json.loads(raw["json"].decode("utf-8"))
                raw["label"] = int(raw["meta"]["label"])
            except (ValueError, KeyError, UnicodeDecodeError) as err:
                self._skip("bad_metadata", raw.get("__key__"), err)
                continue
            yield raw

    def decode(self, src: Iterable[dict]) -> Iterator[dict]:
        for raw in src:
            try:
                with Image.open(io.BytesIO(raw["jpg"])) as img:
                    image = img.convert("RGB")
                text = raw["txt"].decode("utf-8")
            except (OSError, SyntaxError, ValueError, UnicodeDecodeError) as err:
                self._skip("undecodable_sample", raw.get("__key__"), err)
                continue
            meta = raw["meta"]
            yield {
                "key": raw["__key__"],
                "image": image,
                "text": text,
                "label": raw["label"],
                "valid_pair": bool(meta.get("valid_pair", raw["label"] == 0)),
                "hateful": int(meta.get("hateful", int(raw["label"] == 6))),
                "source": meta.get("source", ""),
                "meta": meta,
            }

    def _skip(self, reason: str, key: str | None, err: Exception) -> None:
        if not self.skipped[reason]:
            warnings.warn(f"skipping sample {key}: {reason}: {err}", stacklevel=3)
        self.skipped[reason] += 1


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


def drop_unlabelled(src: Iterable[dict]) -> Iterator[dict]:
    """Skips samples with label -1 (e.g. Hateful Memes' test files), which can't be trained or scored."""
    for sample in src:
        if sample["label"] != UNLABELLED:
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


class Pipeline(wds.DataPipeline):
    """A ``wds.DataPipeline`` that also exposes its decoder's skip counts."""

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
        tokenizer: an open_clip-style tokenizer, applied per sample.
        train: resampled, shuffled, infinite (True) or every sample once, in order (False).
        seed: seed of the shard draw, shuffle and class upsampling.
        epoch: mixed into the seed, so each epoch sees a different, reproducible stream.
        shuffle_buffer: samples in the shuffle buffer (train only).
        source_factors: per-source upsampling factors (train only).
        class_factors: per-class upsampling factors, ``{label: factor}`` (train only).
        limit: stop after this many samples (per worker).
        partial: keep a last, smaller batch (default: not in training, yes in evaluation).
    """
    shards = shard_set(manifests, split, source_factors)
    decoder = SampleDecoder()
    stages: list[Any]
    if train:
        stages = [WeightedResampledShards(shards.urls, shards.weights, seed, epoch)]
    else:
        stages = [wds.SimpleShardList(shards.urls), wds.split_by_node, wds.split_by_worker]
    stages += [wds.tarfile_to_samples(handler=wds.warn_and_continue), decoder.parse_json, drop_unlabelled]
    if train:
        if class_factors:
            unknown = set(class_factors) - set(range(NUM_CLASSES))
            if unknown:
                raise ValueError(
                    f"class_factors: unknown labels {sorted(unknown)}; allowed 0..{NUM_CLASSES - 1}"
                )
            stages.append(lambda src: upsample_classes(src, class_factors, seed + epoch))
        stages.append(
            wds.shuffle(shuffle_buffer, initial=min(shuffle_buffer, 100), rng=random.Random(seed + epoch))
        )
    stages.append(decoder.decode)
    if limit is not None:
        stages.append(lambda src: islice(src, limit))

    def prepare(sample: dict) -> dict:
        if image_transform is not None:
            sample["image"] = image_transform(sample["image"])
        if tokenizer is not None:
            sample["tokens"] = tokenizer([sample["text"]])[0]
        return sample

    stages.append(wds.map(prepare))
    stages.append(
        wds.batched(batch_size, collation_fn=collate, partial=(not train) if partial is None else partial)
    )
    pipeline = Pipeline(*stages)
    pipeline.decoder = decoder
    pipeline.num_samples = shards.num_samples
    return pipeline


def make_loader(pipeline: wds.DataPipeline, num_workers: int = 0) -> wds.WebLoader:
    """Wraps a batched pipeline in a ``WebLoader`` (a DataLoader with ``batch_size=None``)."""
    return wds.WebLoader(pipeline, batch_size=None, num_workers=num_workers, persistent_workers=False)
