"""How many training samples per second a preset's data pipeline delivers on this machine's CPUs.

    python -m benchmarks.t4_loader clip t4                     # JSON: samples/s and what was measured
    python -m benchmarks.t4_loader fusion hateclipper_vitl14_cross --seconds 20

A Colab T4 comes with 2 CPU cores: whether training there is bound by the GPU or by the data is decided by
the slower of the GPU's rate (:mod:`benchmarks.t4_figures`) and this one. What is measured is the path the
trainer itself takes, with the preset's image size, batch size and ``num_workers``, pinned to ``cores``
cores (2 by default, as on Colab), over synthetic shards (256 px JPEGs, as ``python -m nbhelpers.data.prepare
--source synthetic`` writes them; built once under ``data/t4_loader`` unless ``data_dir`` names others):

- ``stream`` (``in_memory=false``): :func:`nbhelpers.train.recipes.data.train_data`'s batches, read,
  decoded, augmented (random resized crop and flip), tokenised and normalised by the DataLoader workers,
  as a training epoch draws them. CLIP's ``valid_only`` stream drops the samples of the classes that are not
  valid pairs after reading them: on the synthetic shards one class in seven is, so it reads about 7 samples
  for each it yields, and only those it yields are counted (real sources have other shares).
- ``memory`` (``in_memory=true``): the split is decoded into memory once (its rate is ``load_samples_per_s``)
  and every batch is then drawn, augmented and normalised from memory: the figure is the batches' rate.
- ``ssl``: the SSL recipe holds the split in memory and augments its views on the GPU inside the training
  step, so the CPU only gathers batches of uint8 pictures: the figure is that rate (the augmentation's cost
  is the GPU's).
- ``features`` (fusion with a frozen backbone): the head trains on features extracted once, in memory; what
  the CPU does is decode every split into memory for that extraction (:func:`nbhelpers.data.memory.load_split`),
  so the figure is that decoding rate, which bounds the extraction.

The first batches (worker start-up, the first shards' opening) are left out of the rate. The machine's
load changes the figure: measure on a quiet machine.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: the repository root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.machine import cpu_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: Where the synthetic shards are built the first time (``data/`` is not in git).
DATA_DIR = ROOT / "data" / "t4_loader"
SOURCE = "synthetic"
#: The shards' JPEG side (``nbhelpers.data.prepare``'s default); the pipeline resizes to the model's input.
SHARD_IMAGE_SIZE = 256
#: Training samples of the synthetic shards and per shard: enough shards for every worker to draw its own.
TRAIN_SAMPLES, TRAIN_SHARD_SIZE, EVAL_SAMPLES = 2000, 250, 100
#: Samples per :func:`load_split` call when a split's decoding rate is measured.
LOAD_CHUNK = 64


def synthetic_shards(data_dir: Path = DATA_DIR) -> Path:
    """``data_dir``, with synthetic shards under ``data_dir/synthetic`` (written the first time).

    The same shards ``python -m nbhelpers.data.prepare --source synthetic`` writes, at its 256 px, with
    :data:`TRAIN_SAMPLES` training samples in shards of :data:`TRAIN_SHARD_SIZE`.
    """
    from nbhelpers.data.prepare import PrepareConfig, prepare

    if not (data_dir / SOURCE / "manifest.json").is_file():
        config = PrepareConfig.from_params(
            "demo", source=SOURCE, out_dir=str(data_dir), image_size=SHARD_IMAGE_SIZE,
            synthetic_train=TRAIN_SAMPLES, train_shard_size=TRAIN_SHARD_SIZE, synthetic_val=EVAL_SAMPLES,
            synthetic_test=EVAL_SAMPLES, synthetic_unseen=EVAL_SAMPLES, eval_shard_size=EVAL_SAMPLES,
        )  # fmt: skip
        prepare(config, progress=False)
    return data_dir


def preset_config(recipe: str, preset: str, data_dir: Path, workers: int | None = None) -> Any:
    """``recipe``'s config of ``preset``, reading the synthetic shards under ``data_dir`` instead of the
    preset's sources (and its splits: ``train``, ``test``), with ``workers`` DataLoader workers if given.

    Raises:
        ValueError: for an unknown recipe.
        ConfigError: for an unknown preset of the recipe.
    """
    from nbhelpers.train.recipes.registry import get_recipe

    cls = get_recipe(recipe).config_class
    fields = {f.name for f in dataclasses.fields(cls)}
    overrides = {
        "data_dir": str(data_dir), "sources": SOURCE, "train_split": "train", "eval_splits": "test",
        "monitor_split": "val", "dataset": "shards", "pretrained": "", "num_workers": workers,
    }  # fmt: skip
    return cls.from_params(preset, **{k: v for k, v in overrides.items() if k in fields})


# ------------------------------------------------------------------------- what each recipe's model reads


def open_clip_image_size(model: str) -> int:
    """The input side of the open_clip architecture ``model`` (from its config; nothing is built)."""
    import open_clip

    from nbhelpers.models.clip import register_model_configs

    register_model_configs()
    config = open_clip.get_model_config(model)
    if config is None:
        raise ValueError(f"model: unknown open_clip architecture {model!r}")
    size = config["vision_cfg"].get("image_size", 224)
    return int(size[0] if isinstance(size, (list, tuple)) else size)


def open_clip_tokenizer(model: str) -> Callable:
    import open_clip

    from nbhelpers.models.clip import register_model_configs

    register_model_configs()
    return open_clip.get_tokenizer(model)


def backbone_image_size(name: str) -> int:
    """The input side of a fusion backbone (``open_clip:<model>``, ``hf:<id>`` or a preset's short name).

    Raises:
        ValueError: an ``hf:`` model whose config cannot be read (offline and not cached): pass
            ``image_size``.
    """
    from nbhelpers.models.backbones import BACKBONE_PRESETS

    name = BACKBONE_PRESETS[name].name if name in BACKBONE_PRESETS else name
    if name.startswith("open_clip:"):
        return open_clip_image_size(name.removeprefix("open_clip:"))
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(name.removeprefix("hf:"))
    except OSError as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"image_size: cannot read the config of {name} ({first}); pass image_size") from err
    return int(getattr(config, "vision_config", config).image_size)


def model_inputs(recipe: str, config: Any, image_size: int | None = None) -> dict[str, Any]:
    """What ``recipe``'s training pipeline is given: ``image_size`` (None: the model's), ``tokenizer``,
    ``mean``/``std``, ``labels`` (the classes trained on, None: all), as each recipe's ``run`` passes them
    to ``train_data``."""
    from nbhelpers.data.taxonomy import label_set_of
    from nbhelpers.data.transforms import CLIP_MEAN, CLIP_STD
    from nbhelpers.models.ssl import IMAGENET_MEAN, IMAGENET_STD
    from nbhelpers.train.recipes.config import manifests

    clip = recipe in ("clip", "clip_classifier", "cass_mm")
    if recipe not in ("unimodal", "ssl", "fusion") and not clip:
        raise ValueError(f"recipe: no loader measurement for {recipe!r}")
    if image_size is None and clip:
        image_size = getattr(config, "image_size", None) or open_clip_image_size(config.model)
    elif image_size is None and recipe == "fusion":
        image_size = backbone_image_size(config.backbone)
    elif image_size is None:
        image_size = config.image_size
    labels = None
    if getattr(config, "valid_only", False):  # CLIP trains on the valid pairs alone
        labels = sorted(label_set_of(manifests(config)).valid_pair)
    # The unimodal text baseline tokenises in its step (its pipeline carries raw text); fusion's own
    # normalisation statistics would not change the rate, so CLIP's stand in for them.
    imagenet = recipe in ("unimodal", "ssl")
    return {
        "image_size": image_size, "tokenizer": open_clip_tokenizer(config.model) if clip else None,
        "labels": labels, "mean": IMAGENET_MEAN if imagenet else CLIP_MEAN, "std": IMAGENET_STD if imagenet else CLIP_STD,
    }  # fmt: skip


# ------------------------------------------------------------------------------------------- measuring


def batch_samples(batch: Any) -> int:
    """Samples in a batch (its ``image`` tensor's first dimension)."""
    from nbhelpers.train.engine import batch_size

    return int(batch_size(batch) or 0)


def rate_of(batches: Iterator[Any], seconds: float, warmup: int) -> tuple[int, float]:
    """``(samples, elapsed seconds)`` drawn from ``batches`` over about ``seconds``, after ``warmup`` batches.

    Raises:
        RuntimeError: ``batches`` ran out during the warm-up or before any timed batch.
    """
    try:
        for _ in range(warmup):
            next(batches)
        samples, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds or samples == 0:
            samples += batch_samples(next(batches))
    except StopIteration:
        raise RuntimeError(
            "the training stream ran out: fewer batches than the warm-up and one more"
        ) from None
    return samples, elapsed


def load_rate(load: Callable[[int], Any], seconds: float) -> tuple[int, float]:
    """``(samples, seconds)`` of ``load(limit)`` calls (each decoding ``limit`` samples into memory) over
    about ``seconds``, after one small call (imports, first shard opened) left out."""
    load(16)
    samples, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds or samples == 0:
        samples += len(load(LOAD_CHUNK))
    return samples, elapsed


@contextlib.contextmanager
def pinned(cores: int | None) -> Iterator[None]:
    """Runs on the first ``cores`` CPUs (and torch on as many threads), as on a 2-core Colab VM; the
    DataLoader workers started inside inherit it. None, or a machine without ``sched_setaffinity``: as is."""
    if cores is None or not hasattr(os, "sched_setaffinity"):
        yield
        return
    before, threads = os.sched_getaffinity(0), torch.get_num_threads()
    os.sched_setaffinity(0, sorted(before)[:cores])
    torch.set_num_threads(min(cores, len(before)))
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)
        torch.set_num_threads(threads)


def measure(
    recipe: str,
    preset: str,
    seconds: float = 10.0,
    workers: int | None = None,
    *,
    data_dir: Path | None = None,
    image_size: int | None = None,
    cores: int | None = 2,
) -> dict[str, Any]:
    """The loader's rate for ``recipe``'s ``preset`` and what was measured (see the module docstring).

    Args:
        recipe: a recipe name (``clip``, ``fusion``, ...).
        preset: one of its presets (``t4``, ``demo``, a reproduction's name).
        seconds: how long to draw batches after the warm-up (> 0).
        workers: DataLoader workers (None: the preset's ``num_workers``).
        data_dir: a folder with shards under ``synthetic/`` (None: :data:`DATA_DIR`, built if missing).
        image_size: the model's input side (None: the preset's model's).
        cores: CPUs to run on (None: all of this machine's).

    Returns:
        ``{"recipe", "preset", "what", "image_size", "micro_batch", "num_workers", "in_memory", "samples",
        "seconds", "samples_per_s", "cores", "machine", ...}``, plus ``load_samples_per_s`` for ``memory``.

    Raises:
        ValueError: an unknown recipe, ``seconds`` not positive, or a model size that cannot be found.
        ConfigError: an unknown preset.
    """
    if not seconds > 0:
        raise ValueError(f"seconds: must be > 0, got {seconds!r}")
    data_dir = synthetic_shards(DATA_DIR if data_dir is None else Path(data_dir))
    config = preset_config(recipe, preset, data_dir, workers)
    inputs = model_inputs(recipe, config, image_size)
    with pinned(cores):
        what, samples, elapsed, extra = _measure(recipe, config, inputs, seconds)
    micro = max(1, config.batch_size // config.grad_accum_steps)
    return {
        "recipe": recipe, "preset": preset, "what": what, "image_size": inputs["image_size"],
        "micro_batch": micro, "num_workers": config.num_workers, "in_memory": config.in_memory,
        "samples": samples, "seconds": round(elapsed, 3), "samples_per_s": samples / elapsed, **extra,
        "cores": len(os.sched_getaffinity(0)) if cores is None else cores, "machine": cpu_model(),
    }  # fmt: skip


def _measure(
    recipe: str, config: Any, inputs: dict[str, Any], seconds: float
) -> tuple[str, int, float, dict]:
    from nbhelpers.data.memory import load_split
    from nbhelpers.train.recipes.config import manifests
    from nbhelpers.train.recipes.data import train_data

    found, size = manifests(config), inputs["image_size"]
    if recipe == "fusion" and not config.trainable_backbone:
        samples, elapsed = load_rate(lambda n: load_split(found, config.train_split, size, limit=n), seconds)
        return "features", samples, elapsed, {}
    if recipe == "ssl":
        from nbhelpers.train.recipes.ssl import load_images, train_batches

        batches, _ = train_batches(config, load_images(config, config.train_split))
        return ("ssl", *rate_of(iter(batches(1)), seconds, warmup=2), {})
    extra = {}
    if config.in_memory:
        tokenizer = inputs["tokenizer"]
        samples, elapsed = load_rate(
            lambda n: load_split(found, config.train_split, size, tokenizer, n), seconds
        )
        extra["load_samples_per_s"] = samples / elapsed
    data = train_data(
        config, found, size, inputs["tokenizer"], inputs["mean"], inputs["std"], labels=inputs["labels"]
    )
    # Every worker's first batch includes its start-up and its first shard's opening.
    stream = iter(data.batches(1))
    try:
        samples, elapsed = rate_of(stream, seconds, warmup=2 * max(1, config.num_workers))
    finally:
        del stream  # shuts the DataLoader's workers down
    return ("memory" if config.in_memory else "stream"), samples, elapsed, extra


def loader_samples_per_s(
    recipe: str,
    preset: str,
    seconds: float = 10.0,
    workers: int | None = None,
    *,
    image_size: int | None = None,
    data_dir: Path | None = None,
    cores: int | None = 2,
) -> float:
    """Training samples per second ``recipe``'s ``preset`` data pipeline delivers on 2 cores of this machine
    (:func:`measure`'s ``samples_per_s``, which see for the arguments; the module docstring says what is
    measured for each recipe).

    Raises:
        ValueError: an unknown recipe, ``seconds`` not positive, or a model size that cannot be found (an
            ``hf:`` backbone offline: pass ``image_size``).
        ConfigError: an unknown preset.
    """
    found = measure(recipe, preset, seconds, workers, data_dir=data_dir, image_size=image_size, cores=cores)
    return found["samples_per_s"]


def main(argv: Iterable[str] | None = None) -> int:
    """``python -m benchmarks.t4_loader RECIPE PRESET [--seconds S] [--workers N] ...``: prints JSON."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.t4_loader", description=__doc__.split("\n")[0]
    )
    parser.add_argument("recipe")
    parser.add_argument("preset")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=None, help="default: the preset's num_workers")
    parser.add_argument("--data-dir", type=Path, default=None, help=f"default: {DATA_DIR} (built if missing)")
    parser.add_argument("--image-size", type=int, default=None, help="default: the preset's model's")
    parser.add_argument("--cores", type=int, default=2, help="CPUs to run on (0: all)")
    args = parser.parse_args(None if argv is None else list(argv))
    found = measure(
        args.recipe, args.preset, args.seconds, args.workers, data_dir=args.data_dir,
        image_size=args.image_size, cores=args.cores or None,
    )  # fmt: skip
    print(json.dumps(found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
