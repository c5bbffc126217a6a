"""Reader for Hugging Face datasets: a hub dataset id or a local folder, read with ``datasets``.

Two ways in:

- **Rows** (``source=hf``): a dataset with image, text and label columns, e.g. the parquet dataset
  ``Multimodal-Fatima/Hatefulmemes_train`` (columns ``image``, ``text``, ``label``; label 0 -> True/Neutral,
  1 -> Hate: ``label_map="0:True/Neutral,1:Hate"``). ``hf_dataset`` is a hub id, read with
  ``datasets.load_dataset`` (``streaming=True`` reads rows as they download instead of downloading the
  whole dataset first), or a local folder: one written by ``Dataset.save_to_disk`` /
  ``DatasetDict.save_to_disk`` (read with ``datasets.load_from_disk``), or a folder of parquet, JSON lines
  or CSV files (``datasets.load_dataset(folder)``, which names splits after the files: ``train.parquet``,
  ``test.parquet``, ...). The image column may be a ``datasets`` ``Image`` feature (read without decoding:
  the shard writer decodes it by the suite's own image rule), encoded bytes, or paths relative to
  ``raw_dir`` (default: the local folder). Rows become records by
  :mod:`nbhelpers.data.sources._rows`, the rule the ``own`` source shares.
- **A raw-layout mirror** (``hf_layout``): a dataset repository holding one of the raw layouts, e.g.
  ``neuralcatcher/hateful_memes`` (``img/`` and the five ``.jsonl`` files of the Hateful Memes release).
  :func:`fetch_layout` downloads it with ``huggingface_hub.snapshot_download`` into ``raw_dir`` (real files,
  not links into the hub cache, so the layout's reader can keep every path inside ``raw_dir``) and the
  layout's own reader reads it; the shards are exactly those of that source (``{out_dir}/hateful_memes/``).

Splits are set by the dataset and the ``splits`` parameter (``SPLITS`` is ``None``; :func:`splits` lists
them). Hub access follows ``huggingface_hub``'s settings (token, ``HF_HUB_OFFLINE``, caches).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from nbhelpers.data.records import Record, SkipCounter
from nbhelpers.data.sources._common import check_limit, check_split
from nbhelpers.data.sources._rows import Row, RowSpec, check_columns, check_split_name, records_from_rows

NAME = "hf"
#: Decided by the dataset and the ``splits`` parameter: see :func:`splits`.
SPLITS: tuple[str, ...] | None = None
#: Raw layouts a dataset repository can hold (``hf_layout``): each is read by that source's reader.
LAYOUTS: tuple[str, ...] = ("hateful_memes", "mmhs150k", "fakeddit", "coco")
#: Examples for the docs and for Colab users (not used offline).
EXAMPLES: dict[str, dict[str, Any]] = {
    "rows": {
        "source": "hf",
        "hf_dataset": "Multimodal-Fatima/Hatefulmemes_train",
        "label_map": "0:True/Neutral,1:Hate",
        "splits": "train=train",
    },
    "layout": {
        "source": "hf",
        "hf_dataset": "neuralcatcher/hateful_memes",
        "hf_layout": "hateful_memes",
        "raw_dir": "/content/drive/MyDrive/hateful_memes",
    },
}


@dataclass(frozen=True)
class HFOptions:
    """Which dataset to read, and how.

    Attributes:
        dataset: a hub dataset id (``owner/name``) or a local folder.
        rows: the columns, label map and image folders.
        config: the dataset's configuration name (empty: its default).
        revision: a branch, tag or commit of a hub dataset (empty: the default branch).
        streaming: read rows as they download (hub) or from an iterable view (local), not a prepared copy.
        split_map: our split name -> the dataset's split name; empty: every split under its own name.
    """

    dataset: str
    rows: RowSpec
    config: str = ""
    revision: str = ""
    streaming: bool = False
    split_map: Mapping[str, str] = field(default_factory=dict)

    @property
    def local(self) -> Path | None:
        """The dataset's folder when ``dataset`` names one, else ``None`` (a hub id)."""
        path = Path(self.dataset).expanduser()
        return path if path.is_dir() else None

    @property
    def saved(self) -> bool:
        """Whether the local folder was written by ``save_to_disk`` (read with ``load_from_disk``)."""
        local = self.local
        return local is not None and any((local / f).is_file() for f in ("dataset_dict.json", "state.json"))


def check(raw_dir: Path | None, options: HFOptions) -> None:
    """Opens every split to be read and checks that it has every column the parameters name.

    For a hub dataset read without streaming, this is where it is downloaded and prepared (once: later
    reads use ``datasets``' cache).

    Raises:
        FileNotFoundError: naming ``hf_dataset`` when it cannot be loaded.
        ValueError: naming ``splits`` for a split the dataset lacks, or the column parameter
            (``image_column``, ...) for a column it lacks.
    """
    for split in splits(raw_dir, options):
        _open(options, options.split_map.get(split, split))


def splits(raw_dir: Path | None, options: HFOptions) -> tuple[str, ...]:
    """Our split names, in order: ``splits``' order, or the dataset's splits under their own names.

    Raises:
        FileNotFoundError: naming ``hf_dataset`` when its split names cannot be read.
        ValueError: naming ``splits`` for a split the dataset lacks, or a dataset split name that cannot
            name a split of the shards.
    """
    theirs = _dataset_splits(options)
    if options.split_map:
        absent = [s for s in options.split_map.values() if s not in theirs]
        if absent:
            raise ValueError(
                f"splits: {options.dataset} has no split {', '.join(map(repr, absent))}; "
                f"its splits: {', '.join(theirs)}"
            )
        return tuple(options.split_map)
    return tuple(check_split_name(s, "splits") for s in theirs)


def read(
    raw_dir: Path | None, split: str, skips: SkipCounter, limit: int | None = None, *, options: HFOptions
) -> Iterator[Record]:
    """Yields the records of ``split`` in the dataset's order (the same with and without streaming).

    Skips: those of :func:`nbhelpers.data.sources._rows.records_from_rows`.

    Args:
        raw_dir: the folder image paths are relative to (``None``: the local dataset folder, if any).
        split: one of :func:`splits`.
        skips: receives every skipped row.
        limit: yield at most this many records (``None``: all); with streaming, reading stops there.
        options: the dataset and how to read it.

    Raises:
        ValueError: for an unknown split, a negative ``limit``, a missing column, or image paths with no
            folder to read them from.
    """
    check_split(NAME, split, splits(raw_dir, options))
    check_limit(limit)
    dataset, label_names = _open(options, options.split_map.get(split, split))
    root = Path(raw_dir) if raw_dir else options.local
    spec = options.rows.with_roots(root, trusted_roots=_trusted_roots(options))
    rows = (Row(i, f"{split}[{i}]", values) for i, values in enumerate(dataset))
    return islice(records_from_rows(rows, split, spec, skips, label_names), limit)


def _dataset_splits(options: HFOptions) -> list[str]:
    import datasets

    try:
        if options.saved:
            loaded = datasets.load_from_disk(str(options.local))
            if isinstance(loaded, datasets.DatasetDict):
                return list(loaded)
            return [str(loaded.split) if loaded.split else "train"]
        return list(
            datasets.get_dataset_split_names(
                str(options.local or options.dataset),
                config_name=options.config or None,
                revision=options.revision or None,
            )
        )
    except (FileNotFoundError, ConnectionError) as err:
        raise FileNotFoundError(_cannot_load(options, err)) from err


def _open(options: HFOptions, their_split: str) -> tuple[Any, Sequence[str] | None]:
    """The split as an iterable of row dicts holding only the columns read, and the label column's
    ``ClassLabel`` names (``None`` if it is not one).

    Raises:
        FileNotFoundError: naming ``hf_dataset`` when it cannot be loaded.
        ValueError: naming the column parameter of a column the split lacks.
    """
    import datasets

    try:
        if options.saved:
            dataset = datasets.load_from_disk(str(options.local))
            if isinstance(dataset, datasets.DatasetDict):
                dataset = dataset[their_split]
            if options.streaming:
                dataset = dataset.to_iterable_dataset()
        else:
            dataset = datasets.load_dataset(
                str(options.local or options.dataset),
                name=options.config or None,
                split=their_split,
                revision=options.revision or None,
                streaming=options.streaming,
            )
    except (FileNotFoundError, ConnectionError) as err:
        raise FileNotFoundError(_cannot_load(options, err)) from err
    features = dataset.features
    if features is not None:
        columns = list(features)
    else:  # a streamed JSON dataset may not know its features before its first row
        columns = list(next(iter(dataset), {}))
    check_columns(options.rows, columns, f"{options.dataset} split {their_split!r}")
    spec = options.rows
    label_names = None
    if features is not None:
        if isinstance(features.get(spec.image_column), datasets.Image):
            # Bytes (or a path) instead of a PIL image: the shard writer decodes by the suite's own rule.
            dataset = dataset.cast_column(spec.image_column, datasets.Image(decode=False))
        label = features.get(spec.label_column)
        if isinstance(label, datasets.ClassLabel):
            label_names = list(label.names)
    return dataset.select_columns(list(spec.columns)), label_names


def _trusted_roots(options: HFOptions) -> tuple[Path, ...]:
    """Folders where ``datasets`` itself puts the files an ``Image`` value names by absolute path."""
    import datasets
    from huggingface_hub import constants

    roots = [Path(datasets.config.HF_DATASETS_CACHE), Path(constants.HF_HUB_CACHE)]
    if options.local is not None:
        roots.append(options.local)
    return tuple(roots)


def _cannot_load(options: HFOptions, err: Exception) -> str:
    offline = " (HF_HUB_OFFLINE is set: only local folders and cached datasets load)" if _offline() else ""
    return f"hf_dataset: cannot load {options.dataset!r}{offline}: {type(err).__name__}: {err}"


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def fetch_layout(dataset: str, raw_dir: Path | None, revision: str = "") -> Path:
    """The folder of a raw-layout mirror: ``dataset`` itself when it is a local folder, else the hub
    repository ``dataset`` downloaded into ``raw_dir``.

    ``huggingface_hub.snapshot_download(repo_id, repo_type="dataset", local_dir=raw_dir)`` resumes an
    interrupted download and, offline, returns a ``raw_dir`` that already holds the files.

    Raises:
        ValueError: naming ``raw_dir`` when a hub id is given without a folder to download into.
        FileNotFoundError: naming ``hf_dataset`` when the repository cannot be fetched.
    """
    local = Path(dataset).expanduser()
    if local.is_dir():
        return local
    if raw_dir is None:
        raise ValueError(
            f"raw_dir: the folder to download {dataset!r} into (hf_layout with a hub dataset id)"
        )
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(
            repo_id=dataset, repo_type="dataset", revision=revision or None, local_dir=str(raw_dir)
        )
    except Exception as err:  # hub errors vary by version and cause; each means the repository is not here
        offline = " (HF_HUB_OFFLINE is set)" if _offline() else ""
        raise FileNotFoundError(
            f"hf_dataset: cannot fetch the dataset repository {dataset!r} into {raw_dir}{offline}: "
            f"{type(err).__name__}: {err}"
        ) from err
    return Path(folder)
