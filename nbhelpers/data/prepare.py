"""Converting one source into shards: the work behind ``01_prepare_webdataset``, and its config."""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from nbhelpers.config import NULL, BaseConfig, ConfigError, param
from nbhelpers.data.records import SkipCounter
from nbhelpers.data.shards import read_manifest, write_manifest, write_split
from nbhelpers.data.sources import SOURCES, get_source

#: Splits written with the large training shard size; every other split uses the eval shard size.
TRAIN_SPLITS = ("train",)


@dataclass
class PrepareConfig(BaseConfig):
    """Parameters of ``01_prepare_webdataset``: which source to convert, where, and how."""

    SECTION: ClassVar[str] = "prepare"

    source: str = param("synthetic", choices=SOURCES, help="raw dataset to convert")
    raw_dir: str = param("", help="folder of the raw dataset in its own layout (not needed for synthetic)")
    out_dir: str = param("data/shards", help="shards go to {out_dir}/{source}/")
    image_size: int = param(256, min=16, help="side of the square JPEGs in the shards")
    train_shard_size: int = param(10000, min=1, help="samples per training shard")
    eval_shard_size: int = param(1000, min=1, help="samples per shard of the other splits")
    limit: int | None = param(None, min=1, help="at most this many samples per split (quick runs)")
    seed: int = param(0, min=0, help="seed of the synthetic generator")
    synthetic_train: int = param(4000, min=1, help="synthetic samples in train")
    synthetic_val: int = param(500, min=1, help="synthetic samples in val")
    synthetic_test: int = param(1000, min=1, help="synthetic samples in test")
    synthetic_unseen: int = param(
        1000, min=1, help="synthetic samples in unseen (held-out shapes and templates)"
    )
    workers: int = param(2, min=1, help="processes writing shards")

    def check(self) -> None:
        if self.source != "synthetic":
            if not self.raw_dir:
                raise ConfigError(
                    f"raw_dir: required for source {self.source!r} (the folder of the raw dataset)"
                )
            if not Path(self.raw_dir).is_dir():
                raise ConfigError(f"raw_dir: {self.raw_dir!r} is not a folder")

    @property
    def synthetic_sizes(self) -> dict[str, int]:
        return {
            "train": self.synthetic_train,
            "val": self.synthetic_val,
            "test": self.synthetic_test,
            "unseen": self.synthetic_unseen,
        }

    @property
    def source_dir(self) -> Path:
        return Path(self.out_dir) / self.source


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


def main(argv: list[str] | None = None) -> None:
    """``python -m nbhelpers.data.prepare --source synthetic --preset demo [--field value ...]``.

    ``--field null`` sets the field to None (e.g. ``--limit null``: no limit) even where the preset sets
    it; a field left out takes the preset's value.
    """
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="demo")
    for f in dataclasses.fields(PrepareConfig):
        if f.name != "preset":
            parser.add_argument(
                f"--{f.name}", type=json_or_str, default=argparse.SUPPRESS, help=f.metadata.get("help")
            )
    args = vars(parser.parse_args(argv))
    preset = args.pop("preset")
    config = PrepareConfig.from_params(preset, **{k: NULL if v is None else v for k, v in args.items()})
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
