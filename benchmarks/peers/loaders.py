"""The loaders compared, each measured in a process of its own, and the loader ceiling.

Every loader delivers the batches our streamed training path feeds the engine: images (B, 3, 64, 64) and
tokens (B, 32), from the same 256 px JPEGs. The ceiling delivers only the images, decoded and resized.
"""

from __future__ import annotations

import argparse
import csv
import functools
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

from benchmarks.peers.common import CAPTIONS, IMAGE_SIZE, MODEL, ROOT, PeakMemory, child_env, tokenizer


def ours(manifest: dict[str, Any], batch: int, workers: int) -> Iterable[dict[str, Any]]:
    """The batches the streamed training path feeds the engine (``train_data(...).batches(1)``)."""
    from nbhelpers.train.recipes.config import RecipeConfig
    from nbhelpers.train.recipes.data import train_data

    config = RecipeConfig(
        data_dir=str(Path(manifest["_dir"]).parent), sources="synthetic", batch_size=batch,
        in_memory=False, num_workers=workers, seed=0,
    )  # fmt: skip
    config.validate()
    return train_data(config, [manifest], IMAGE_SIZE, tokenizer()).batches(1)


def our_sample_transform() -> Callable:
    """Our training augmentation as one per-sample transform (PIL image -> normalised float tensor), for
    pipelines that take one: the same crop, flip and normalisation as ours, not split per batch."""
    from torchvision.transforms import v2

    from nbhelpers.data.transforms import RandomResizedCropFlip, batch_normalize

    return v2.Compose([RandomResizedCropFlip(IMAGE_SIZE), batch_normalize()])


def open_clip_data(manifest: dict[str, Any], batch: int, workers: int, transform: Callable | None = None):
    """open_clip_train's own training pipeline (``get_wds_dataset``, resampled) on the same shards, with
    the training transform ``open_clip.create_model_and_transforms`` gives (or ``transform``) and the
    tokeniser ``open_clip.get_tokenizer`` gives, as a user of open_clip runs it."""
    import open_clip
    from open_clip_train.data import get_wds_dataset

    from nbhelpers.train.open_clip_cli import brace_urls, disable_pickle_decoders

    disable_pickle_decoders()  # what our open_clip_train entry point does before it reads a shard
    tok = tokenizer()  # registers memelab-tiny-vit with open_clip
    if transform is None:
        _, transform, _ = open_clip.create_model_and_transforms(MODEL)
    args = argparse.Namespace(
        train_data=brace_urls(manifest, "train"), val_data=None, train_num_samples=10**7,
        train_data_upsampling_factors=None, dataset_resampled=True, seed=0, batch_size=batch,
        workers=workers, world_size=1,
    )  # fmt: skip
    return get_wds_dataset(args, transform, is_train=True, epoch=0, tokenizer=tok).dataloader


def folder_transform():
    """The usual torchvision v2 training transform: random resized crop, flip, to float, normalise."""
    from torchvision.transforms import v2

    from nbhelpers.data.transforms import CLIP_MEAN, CLIP_STD

    return v2.Compose(
        [
            v2.ToImage(),
            v2.RandomResizedCrop(IMAGE_SIZE, scale=(0.6, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(CLIP_MEAN, CLIP_STD),
        ]
    )


def our_decode(path: str, min_side: int):
    """Our decode of an image file: a JPEG decoded at the smallest scale whose shorter side is still
    ``min_side`` (PIL's draft mode, :func:`~nbhelpers.data.image.decode_rgb`), to RGB."""
    from nbhelpers.data.image import decode_rgb

    return decode_rgb(Path(path).read_bytes(), path, min_side)


def folder(root: Path, batch: int, workers: int, ours_inside: bool = False) -> Iterable[Any]:
    """``torchvision.datasets.ImageFolder`` over the exported JPEGs, the captions read once from the
    folder's index file and tokenised per batch (in the ``collate_fn``), a shuffled ``DataLoader``.
    With ``ours_inside``, our decode (:func:`our_decode`) and transform (:func:`our_sample_transform`)
    instead of PIL's full decode and the usual torchvision v2 one."""
    from torchvision import datasets
    from torchvision.datasets.folder import default_loader

    from nbhelpers.data.transforms import RandomResizedCropFlip

    tok = tokenizer()
    with open(root / CAPTIONS, encoding="utf-8", newline="") as f:  # keyed by the path ImageFolder lists
        captions = {os.path.join(root, row["path"]): row["caption"] for row in csv.DictReader(f)}

    class CaptionedFolder(datasets.ImageFolder):
        def __getitem__(self, index: int):
            image, label = super().__getitem__(index)
            return image, captions[self.samples[index][0]], label

    def collate(items: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        images, texts, labels = zip(*items)
        return torch.stack(images), tok(list(texts)), torch.tensor(labels)

    return torch.utils.data.DataLoader(
        CaptionedFolder(
            str(root), transform=our_sample_transform() if ours_inside else folder_transform(),
            loader=(
                functools.partial(our_decode, min_side=RandomResizedCropFlip(IMAGE_SIZE).min_side)
                if ours_inside
                else default_loader
            ),
        ), batch_size=batch, shuffle=True,
        drop_last=True, num_workers=workers, collate_fn=collate, generator=torch.Generator().manual_seed(0),
    )  # fmt: skip


class DecodeResize(torch.utils.data.IterableDataset):
    """The loader ceiling: the same JPEGs, read into memory beforehand, only decoded at the reduced scale
    our loader uses (PIL's draft mode) and resized to 64 px, to ``uint8`` tensors; no augmentation, no
    tokeniser, no tar parsing, no shuffle. Each worker cycles through its own share of the images."""

    def __init__(self, jpegs: list[bytes], min_side: int):
        super().__init__()
        self.jpegs, self.min_side = jpegs, min_side

    def __iter__(self) -> Iterator[torch.Tensor]:
        from PIL import Image
        from torchvision.transforms.v2.functional import pil_to_tensor

        info = torch.utils.data.get_worker_info()
        share = self.jpegs[info.id :: info.num_workers] if info else self.jpegs
        while True:
            for data in share:
                with Image.open(io.BytesIO(data)) as img:
                    img.draft("RGB", (self.min_side, self.min_side))
                    small = img.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
                yield pil_to_tensor(small)


def ceiling(manifest: dict[str, Any], batch: int, workers: int) -> Iterable[torch.Tensor]:
    """:class:`DecodeResize` over the training split's JPEGs, batched by a ``DataLoader``."""
    from nbhelpers.data.tar_samples import iter_groups
    from nbhelpers.data.transforms import RandomResizedCropFlip

    jpegs = [
        group.members["jpg"]
        for shard in manifest["splits"]["train"]["shards"]
        for group in iter_groups(Path(manifest["_dir"]) / shard)
    ]
    dataset = DecodeResize(jpegs, RandomResizedCropFlip(IMAGE_SIZE).min_side)
    return torch.utils.data.DataLoader(dataset, batch_size=batch, num_workers=workers)


#: Every loader by name: (what it is, how to make it from (manifest, folder, batch, workers)).
LOADERS: dict[str, tuple[str, Callable[..., Iterable[Any]]]] = {
    "ours": ("our streamed training path (train_data)", lambda m, f, b, w: ours(m, b, w)),
    "open_clip_train data": (
        "open_clip_train's get_wds_dataset, its own transform and tokeniser",
        lambda m, f, b, w: open_clip_data(m, b, w),
    ),
    "open_clip_train data, our transform": (
        "open_clip_train's get_wds_dataset with our crop, flip and normalisation per sample",
        lambda m, f, b, w: open_clip_data(m, b, w, our_sample_transform()),
    ),
    "torchvision ImageFolder": (
        "ImageFolder, torchvision v2 transform, captions from one index file",
        lambda m, f, b, w: folder(f, b, w),
    ),
    "torchvision ImageFolder, our decode + transform": (
        "ImageFolder with our reduced-scale decode, crop, flip and normalisation per sample",
        lambda m, f, b, w: folder(f, b, w, ours_inside=True),
    ),
    "ceiling: decode + resize": (
        "the same JPEGs only decoded at the reduced scale and resized (no augmentation, no tokeniser)",
        lambda m, f, b, w: ceiling(m, b, w),
    ),
}


def batch_len(batch: Any) -> int:
    if isinstance(batch, dict):
        return len(batch["label"])
    return len(batch) if isinstance(batch, torch.Tensor) else len(batch[0])


def loader_rate(
    make: Callable[[], Iterable[Any]], batch: int, workers: int, samples: int, profiler: Any = None
) -> tuple[float, float]:
    """Samples per second of the loader ``make()`` over ``samples`` samples, after two batches per worker
    (worker start-up, first reads), and the peak RSS (MB) of the process and its workers meanwhile; the
    loader is endless or long enough (the folder one is restarted). A ``profiler`` (``cProfile.Profile``)
    is enabled for the timed samples only."""
    with PeakMemory() as memory:
        batches = make()

        def endless() -> Iterator[Any]:
            while True:
                yield from batches

        it = endless()
        for _ in range(2 * max(1, workers)):
            next(it)
        if profiler is not None:
            profiler.enable()
        n, start = 0, time.perf_counter()
        while n < samples:
            n += batch_len(next(it))
        rate = n / (time.perf_counter() - start)
        if profiler is not None:
            profiler.disable()
        del it
    return rate, memory.peak_mb


def measure(argv: list[str]) -> int:
    """``loader NAME MANIFEST FOLDER BATCH WORKERS SAMPLES``: prints ``{"rate": ..., "rss_mb": ...}``."""
    from nbhelpers.data.shards import read_manifest

    name, manifest_path, root, batch, workers, samples = argv
    manifest = read_manifest(manifest_path)
    make = LOADERS[name][1]
    rate, rss = loader_rate(
        lambda: make(manifest, Path(root), int(batch), int(workers)), int(batch), int(workers), int(samples)
    )
    print(json.dumps({"rate": rate, "rss_mb": rss}))
    return 0


def measure_in_process(
    name: str, manifest: dict[str, Any], root: Path, batch: int, workers: int, samples: int
):
    """(samples/s, peak RSS in MB) of the loader ``name``, measured in a fresh Python process.

    Raises:
        RuntimeError: the process failed (its output's tail in the message).
    """
    command = [
        sys.executable, "-m", "benchmarks.peers", "loader", name, str(manifest["_dir"]), str(root),
        str(batch), str(workers), str(samples),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=child_env(), capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(
            f"loader {name!r} failed ({done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}"
        )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result["rate"], result["rss_mb"]
