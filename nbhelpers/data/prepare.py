"""Converting one source into shards: the work behind ``01_prepare_webdataset``."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from nbhelpers.config import PrepareConfig
from nbhelpers.data.records import SkipCounter
from nbhelpers.data.shards import read_manifest, write_manifest, write_split
from nbhelpers.data.sources import get_source

#: Splits written with the large training shard size; every other split uses the eval shard size.
TRAIN_SPLITS = ("train",)


def prepare(config: PrepareConfig, progress: bool = True) -> dict[str, Any]:
    """Writes the shards, ``sizes.json`` and ``manifest.json`` of ``config.source``; returns the manifest.

    Re-running resumes: complete shards whose inputs did not change are kept as they are.

    Raises:
        FileNotFoundError: if ``config.raw_dir`` lacks the source's files (before any shard is written).
    """
    source = get_source(config.source)
    raw_dir = Path(config.raw_dir) if config.raw_dir else None
    source.check(raw_dir)
    kwargs: dict[str, Any] = {}
    if config.source == "synthetic":
        kwargs = {"seed": config.seed, "sizes": config.synthetic_sizes, "image_size": config.image_size}
    results = {}
    for split in source.SPLITS:
        skips = SkipCounter()
        records = source.read(raw_dir, split, skips, config.limit, **kwargs)
        results[split] = write_split(
            records,
            config.source_dir,
            split,
            shard_size=config.train_shard_size if split in TRAIN_SPLITS else config.eval_shard_size,
            image_size=config.image_size,
            reader_skips=skips,
            workers=config.workers,
            progress=progress,
        )
    write_manifest(config.source_dir, config.source, config.image_size, results, config.to_dict())
    return read_manifest(config.source_dir)


def ensure_shards(
    source: str = "synthetic", out_dir: str | Path = "data/shards", preset: str = "demo", **params: Any
) -> dict[str, Any]:
    """Returns the manifest of ``source`` under ``out_dir``, building the shards first if there are none.

    Training notebooks call this so that each runs alone on a fresh clone.
    """
    try:
        return read_manifest(Path(out_dir) / source)
    except FileNotFoundError:
        config = PrepareConfig.from_params(preset, source=source, out_dir=str(out_dir), **params)
        return prepare(config)


def main(argv: list[str] | None = None) -> None:
    """``python -m nbhelpers.data.prepare --source synthetic --preset demo [--field value ...]``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="demo")
    for f in dataclasses.fields(PrepareConfig):
        if f.name != "preset":
            parser.add_argument(f"--{f.name}", type=json_or_str, default=None, help=f.metadata.get("help"))
    args = vars(parser.parse_args(argv))
    config = PrepareConfig.from_params(args.pop("preset"), **args)
    manifest = prepare(config)
    summary = {split: info["num_samples"] for split, info in manifest["splits"].items()}
    print(json.dumps({"source_dir": str(config.source_dir), "samples": summary}))


def json_or_str(text: str) -> Any:
    """Parses a command-line value as a JSON literal (``3``, ``null``, ``true``), else keeps the string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


if __name__ == "__main__":
    main()
