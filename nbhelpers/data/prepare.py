"""Converting one source into shards: the work behind ``01_prepare_webdataset``, and its config."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

from nbhelpers.cli import check_known, explicit_nulls, field_help, first_sentence, parse_value, user_errors
from nbhelpers.config import BaseConfig, ConfigError, param, preset_names
from nbhelpers.data.records import SkipCounter
from nbhelpers.data.shards import MANIFEST, read_manifest, write_manifest, write_split
from nbhelpers.data.skip_check import TooManySkippedError, check_kept
from nbhelpers.data.sources import SOURCES, get_source
from nbhelpers.data.sources._rows import (
    RowSpec,
    build_label_map,
    check_split_name,
    parse_mapping,
    parse_names,
)
from nbhelpers.data.sources.hf import LAYOUTS, HFOptions, fetch_layout
from nbhelpers.data.sources.own import SEPARATORS, OwnOptions, parse_files
from nbhelpers.data.taxonomy import CLASSES, SEVEN_CLASSES, LabelSet
from nbhelpers.fileio import NoSpaceError
from nbhelpers.folder_lock import ON_BUSY, FolderBusyError, hold_folder
from nbhelpers.stop_signals import stop_requests

#: Splits written with the large training shard size; every other split uses the eval shard size.
TRAIN_SPLITS = ("train",)
#: Sources whose samples are rows of a table with image, text and label columns.
ROW_SOURCES = ("hf", "own")
#: Parameters of the row sources only; of ``hf`` only; of ``own`` only (set for another source: an error).
ROW_PARAMS = ("label_map", "classes", "valid_pair_classes", "splits")
HF_PARAMS = ("hf_dataset", "hf_config", "hf_revision", "hf_layout", "streaming")
OWN_PARAMS = ("own_files", "split_column")


@dataclass
class PrepareConfig(BaseConfig):
    """Parameters of ``01_prepare_webdataset``: which source to convert, where, and how."""

    SECTION: ClassVar[str] = "prepare"

    source: str = param(
        "synthetic",
        choices=SOURCES,
        help="what to convert: synthetic, a raw layout, hf (a Hugging Face dataset) or own (your own folder)",
    )
    raw_dir: str = param(
        "",
        help="folder of the raw dataset (raw layouts, own; hf: the folder of image paths, or where hf_layout "
        "downloads to)",
    )
    out_dir: str = param(
        "data/shards", help="shards go to {out_dir}/{source}/ ({out_dir}/{hf_layout}/ for a mirror)"
    )
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
    max_skipped_fraction: float = param(
        0.5,
        min=0,
        help="fail when a split skips more than this fraction of its rows (unmapped labels, missing images...); "
        "1: accept any loss (a run that keeps no sample always fails)",
    )
    on_busy: str = param(
        "wait",
        choices=ON_BUSY,
        help="another process writes these shards: wait for it (then resume, which keeps its shards) or fail",
    )
    # hf and own: rows with image, text and label columns
    image_column: str = param(
        "image",
        help="hf/own: column of the image (a path relative to the folder, bytes, or a datasets Image)",
    )
    text_column: str = param("text", help="hf/own: column of the text")
    label_column: str = param("label", help="hf/own: column of the label")
    id_column: str = param("", help="hf/own: column of a unique sample id (empty: the row number)")
    label_map: str | dict = param(
        "",
        help='hf/own: your label value -> class name, "0:True/Neutral,1:Hate" or a JSON object; '
        '"unlabelled" for none (empty: the labels are class names)',
    )
    classes: str | list = param(
        "", help='hf/own: your own class names, "cat,dog,bird" (empty: the seven classes)'
    )
    valid_pair_classes: str | list = param(
        "",
        help="hf/own: classes whose image and text truly belong together, the contrastive positives "
        "(empty: all of your own classes; of the seven, True/Neutral)",
    )
    splits: str | dict = param(
        "",
        help='hf/own: our split name, then the dataset\'s, "train:train,val:validation" (empty: every split, '
        "same names)",
    )
    # hf only
    hf_dataset: str = param(
        "",
        help="hf: a hub dataset id (owner/name) or a local folder (save_to_disk, or parquet/jsonl/csv files)",
    )
    hf_config: str = param("", help="hf: the dataset's configuration name (empty: its default)")
    hf_revision: str = param("", help="hf: a branch, tag or commit of a hub dataset (empty: the default)")
    hf_layout: str = param(
        "",
        choices=("", *LAYOUTS),
        help="hf: the dataset repository holds this raw layout; it is downloaded into raw_dir and read as that source",
    )
    streaming: bool = param(
        False, help="hf: read rows as they download instead of preparing the whole dataset"
    )
    # own only
    own_files: str | dict = param(
        "",
        help='own: tables in raw_dir, one per split "train:train.csv,val:val.jsonl,test:test.parquet", or one '
        "table with split_column",
    )
    split_column: str = param("", help="own: the column naming each row's split, when own_files is one table")

    def check(self) -> None:
        if self.max_skipped_fraction > 1:
            raise ConfigError(f"max_skipped_fraction: a fraction in 0..1, got {self.max_skipped_fraction}")
        self._check_params_belong()
        if self.source == "synthetic":
            return
        if self.source == "hf":
            self._check_hf()
        else:
            if not self.raw_dir:
                raise ConfigError(
                    f"raw_dir: required for source {self.source!r} (the folder of the raw dataset)"
                )
            if not Path(self.raw_dir).is_dir():
                raise ConfigError(f"raw_dir: {self.raw_dir!r} is not a folder")
        if self.reads_rows:
            try:
                self.source_options()
            except ValueError as err:
                raise ConfigError(str(err)) from None

    def _check_params_belong(self) -> None:
        defaults = {
            f.name: f.default
            for f in dataclasses.fields(self)
            if f.name in ROW_PARAMS + HF_PARAMS + OWN_PARAMS
        }
        for names, allowed, sources in (
            (ROW_PARAMS, self.reads_rows, "'hf' (without hf_layout) or 'own'"),
            (HF_PARAMS, self.source == "hf", "'hf'"),
            (OWN_PARAMS, self.source == "own", "'own'"),
        ):
            for name in names:
                if not allowed and getattr(self, name) != defaults[name]:
                    raise ConfigError(f"{name}: only for source {sources}, not {self.source!r}")

    def _check_hf(self) -> None:
        if not self.hf_dataset.strip():
            raise ConfigError("hf_dataset: required for source 'hf' (a hub dataset id, or a local folder)")
        local = Path(self.hf_dataset).expanduser().is_dir()
        if self.raw_dir and Path(self.raw_dir).exists() and not Path(self.raw_dir).is_dir():
            raise ConfigError(f"raw_dir: {self.raw_dir!r} is not a folder")
        if self.hf_layout:
            if not local and not self.raw_dir:
                raise ConfigError(
                    f"raw_dir: required to download {self.hf_dataset!r} into (hf_layout={self.hf_layout!r})"
                )
        elif self.raw_dir and not Path(self.raw_dir).is_dir():
            raise ConfigError(
                f"raw_dir: {self.raw_dir!r} is not a folder (the folder image paths are relative to)"
            )

    @property
    def reads_rows(self) -> bool:
        """Whether the source is a table of rows (``hf`` without ``hf_layout``, or ``own``)."""
        return self.source in ROW_SOURCES and not self.hf_layout

    @property
    def shard_source(self) -> str:
        """The source name of the shards: ``hf_layout`` for a raw-layout mirror, else ``source``."""
        return self.hf_layout or self.source

    @property
    def label_set(self) -> LabelSet:
        """The classes the shards are labelled with: ``classes`` (every pair valid unless
        ``valid_pair_classes`` says), or the seven.

        Raises:
            ValueError: naming ``classes`` or ``valid_pair_classes`` when they do not make a label set.
        """
        names = parse_names(self.classes, "classes")
        valid = parse_names(self.valid_pair_classes, "valid_pair_classes") or None
        if not names:
            if valid is None:
                return SEVEN_CLASSES
            names = CLASSES
        try:
            LabelSet.from_names(names)
        except ValueError as err:
            raise ValueError(f"classes: {err}") from None
        try:
            return LabelSet.from_names(names, valid)
        except ValueError as err:
            raise ValueError(f"valid_pair_classes: {err}") from None

    def row_spec(self) -> RowSpec:
        """The columns and label map of a row source (image folders are set when reading).

        Raises:
            ValueError: naming the parameter that is blank or malformed.
        """
        for name in ("image_column", "text_column", "label_column"):
            if not getattr(self, name).strip():
                raise ValueError(f"{name}: name the column (it is blank)")
        labels = self.label_set
        return RowSpec(
            source=self.source,
            image_column=self.image_column.strip(),
            text_column=self.text_column.strip(),
            label_column=self.label_column.strip(),
            id_column=self.id_column.strip(),
            label_map=build_label_map(parse_mapping(self.label_map, "label_map"), labels),
        )

    def split_map(self) -> dict[str, str]:
        """``splits`` as our split name -> the dataset's.

        Raises:
            ValueError: naming ``splits`` when it is malformed or names a split the shards cannot have.
        """
        mapping = parse_mapping(
            self.splits, "splits", separators=SEPARATORS, example="train=train,val=validation"
        )
        for ours in mapping:
            check_split_name(ours, "splits")
        return mapping

    def source_options(self) -> HFOptions | OwnOptions:
        """What the ``hf`` or ``own`` reader is given, from the parameters.

        Raises:
            ValueError: naming the parameter that is missing, malformed or contradicts another.
        """
        rows, split_map = self.row_spec(), self.split_map()
        if self.source == "hf":
            return HFOptions(
                dataset=self.hf_dataset.strip(),
                rows=rows,
                config=self.hf_config.strip(),
                revision=self.hf_revision.strip(),
                streaming=self.streaming,
                split_map=split_map,
            )
        files, table = parse_files(self.own_files)
        split_column = self.split_column.strip()
        if table and not split_column:
            raise ValueError(
                f"split_column: required when own_files names one table ({table!r}): the column naming each "
                "row's split; or name one table per split (own_files='train=train.csv,val=val.csv')"
            )
        if files and split_column:
            raise ValueError(
                "split_column: only with one table in own_files; here own_files names one per split"
            )
        if files and split_map:
            raise ValueError("splits: own_files already names each split's table; leave splits empty")
        return OwnOptions(rows=rows, files=files, table=table, split_column=split_column, split_map=split_map)

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
        return Path(self.out_dir) / self.shard_source


def prepare(config: PrepareConfig, progress: bool = True) -> dict[str, Any]:
    """Writes the shards, ``sizes.json`` and ``manifest.json`` of ``config.source``; returns the manifest.

    Re-running resumes: complete shards whose inputs did not change are kept as they are.

    One process writes a shard folder at a time (its lock file beside it; :mod:`nbhelpers.folder_lock`): another
    waits for it (``on_busy="wait"``) or fails at once (``"fail"``). SIGINT (Ctrl-C, a notebook's stop)
    and SIGTERM stop it at once with a consistent folder: the shard being written in this process is
    discarded, those in worker processes are finished, queued ones are dropped, and ``manifest.json`` is
    moved aside from the moment a shard is rewritten until every split is done. A re-run resumes.

    The manifest records the label set (``classes``, ``valid_pair_classes``): the seven classes, or the
    ``classes`` parameter's for a row source.

    Raises:
        FileNotFoundError: if ``config.raw_dir`` lacks the source's files, or a Hugging Face dataset cannot
            be loaded (before any shard is written).
        ValueError: naming the parameter, when a row source's split or column is not in its tables.
        TooManySkippedError: after writing the shards and manifest, when no sample was kept or a split
            skipped more than ``config.max_skipped_fraction`` of its rows (:mod:`nbhelpers.data.skip_check`).
        NoSpaceError: naming the file, when the disk (or the file size limit) has no room for it; no
            incomplete shard is left for a re-run to keep.
        FolderBusyError: another process writes ``config.source_dir`` and ``on_busy="fail"``.
        KeyboardInterrupt: SIGINT came (the folder is consistent; a re-run resumes).
        SystemExit: SIGTERM came (code 143; as for SIGINT).
    """
    source, raw_dir, options = _reader(config)
    source.check(raw_dir, **options)
    splits = source.SPLITS if source.SPLITS is not None else source.splits(raw_dir, **options)
    with (  # only now, when the checks passed: a failed check leaves no shard folder behind
        hold_folder(config.source_dir, config.on_busy, what="shard folder"),
        stop_requests("prepare", "(the shards of worker processes are finished first)", at_once=True),
    ):
        return _write_shards(config, source, raw_dir, options, splits, progress)


def _write_shards(
    config: PrepareConfig,
    source: ModuleType,
    raw_dir: Path | None,
    options: dict[str, Any],
    splits: Sequence[str],
    progress: bool,
) -> dict[str, Any]:
    read_kwargs = options
    if config.source == "synthetic":
        read_kwargs = {"seed": config.seed, "sizes": config.synthetic_sizes, "image_size": config.image_size}
    labels = config.label_set
    results = {}
    for split in splits:
        skips = SkipCounter()
        records = source.read(raw_dir, split, skips, config.limit, **read_kwargs)
        results[split] = write_split(
            records,
            config.source_dir,
            split,
            shard_size=config.train_shard_size if split in TRAIN_SPLITS else config.eval_shard_size,
            image_size=config.image_size,
            reader_skips=skips,
            workers=config.workers,
            progress=progress,
            labels=labels,
        )
    write_manifest(
        config.source_dir, config.shard_source, config.image_size, results, config.to_dict(), labels=labels
    )
    check_kept(results, config.max_skipped_fraction, labels, config.source_dir / MANIFEST)
    return read_manifest(config.source_dir)


def _reader(config: PrepareConfig) -> tuple[ModuleType, Path | None, dict[str, Any]]:
    """The reader module, its ``raw_dir`` and the options its ``check``/``splits``/``read`` take."""
    raw_dir = Path(config.raw_dir) if config.raw_dir else None
    if config.hf_layout:
        return get_source(config.hf_layout), fetch_layout(config.hf_dataset, raw_dir, config.hf_revision), {}
    if config.reads_rows:
        return get_source(config.source), raw_dir, {"options": config.source_options()}
    return get_source(config.source), raw_dir, {}


PROG = "nbhelpers.data.prepare"


def _parser() -> argparse.ArgumentParser:
    """``--field value`` for every field of :class:`PrepareConfig`, its help showing type and default."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        usage=f"python -m {PROG} [list] [--preset NAME] [--field value ...]",
        description=f"{__doc__.strip()} 'list' names the sources and presets. A value is read as JSON when "
        "it parses (3, true, null: None even where the preset sets a value), else kept as a string.",
        epilog="defaults shown are the demo preset's values",
    )
    for row in field_help(PrepareConfig, "demo"):
        flag, default = f"--{row.name}", json.dumps(row.default)
        help_text = f"{row.type}, default {default}" + (f": {row.help}" if row.help else "")
        if row.name == "preset":
            parser.add_argument(flag, default="demo", help=help_text.replace("%", "%%"))
        else:
            parser.add_argument(
                flag, type=parse_value, default=argparse.SUPPRESS, help=help_text.replace("%", "%%")
            )
    return parser


def sources_listing() -> str:
    """``list``: each source with the first line of its reader's docstring, then the presets."""
    lines = ["sources (--source NAME):"]
    for name in SOURCES:
        lines.append(f"  {name:<14} {first_sentence(get_source(name).__doc__)}")
    lines.append(f"presets (--preset NAME): {', '.join(preset_names(PrepareConfig.SECTION))}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """``python -m nbhelpers.data.prepare --source synthetic --preset demo [--field value ...]``.

    ``--field null`` sets the field to None (e.g. ``--limit null``: no limit) even where the preset sets
    it; a field left out takes the preset's value. ``list`` prints the sources and presets.

    Raises:
        SystemExit: status 2 with one line on stderr for an unknown option, a value that is not allowed
            or a raw folder that is missing (:mod:`nbhelpers.cli`).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["list"]:
        print(sources_listing())
        return
    parser = _parser()
    known, unknown = parser.parse_known_args(argv)
    args = vars(known)
    with user_errors(PROG):
        check_known(unknown, [f.name for f in dataclasses.fields(PrepareConfig)])
    preset = args.pop("preset")
    with user_errors(PROG):
        config = PrepareConfig.from_params(preset, **explicit_nulls(args))
    try:
        with user_errors(PROG):
            manifest = prepare(config)
    except (TooManySkippedError, NoSpaceError, FolderBusyError) as err:
        # One line, no traceback: the data, the disk or another prepare is in the way, not the code.
        # Exit 2: the parameters do not fit the data; 1: no room to write, or the folder is busy.
        parser.exit(2 if isinstance(err, TooManySkippedError) else 1, f"{PROG}: error: {err}\n")
    summary = {split: info["num_samples"] for split, info in manifest["splits"].items()}
    print(json.dumps({"source_dir": str(config.source_dir), "samples": summary}))


if __name__ == "__main__":
    main()
