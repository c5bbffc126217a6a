"""Reader for your own data: a folder of images plus annotation tables (CSV, TSV, JSON lines, JSON or
parquet), one row per sample.

On-disk layout (the names are yours; the parameters say which is which)::

    raw_dir/
      images/cat_001.jpg ...                 any folders: the image column holds paths relative to raw_dir
      train.csv  val.jsonl  test.parquet     one table per split (own_files="train=train.csv,...")
      -- or --
      annotations.csv                        one table, a column naming each row's split
                                             (own_files="annotations.csv", split_column="split")

A row holds an image (a path relative to ``raw_dir``; a parquet cell may instead hold the encoded bytes,
or the ``{"bytes", "path"}`` struct ``datasets`` writes), a text, a label and optionally an id; the
columns are parameters. Labels are mapped to the seven classes, or to your own label set, by a label map
(:mod:`nbhelpers.data.sources._rows`). Splits are whatever the parameters name: the module's ``SPLITS`` is
``None`` and :func:`splits` lists them.

Row numbers (the sample ids when there is no id column) are the line of the row in a CSV, TSV or JSON
lines file and the position from 1 in a parquet or JSON file. Encodings: CSV and TSV files are read as
UTF-8 (a byte order mark is ignored); a byte that is not UTF-8 reaches the shard writer as a lone
surrogate, which it replaces by U+FFFD and counts as repaired (``unencodable_text``).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

from nbhelpers.data.records import Record, SkipCounter
from nbhelpers.data.sources._common import check_limit, check_split, iter_jsonl, load_json
from nbhelpers.data.sources._rows import (
    Row,
    RowSpec,
    check_columns,
    check_split_name,
    id_key,
    parse_mapping,
    records_from_rows,
)

NAME = "own"
#: Decided by the parameters (``own_files``, ``split_column``, ``splits``): see :func:`splits`.
SPLITS: tuple[str, ...] | None = None
#: File suffix -> table format.
FORMATS: dict[str, str] = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
}
#: What separates a split from its table in ``own_files`` and ``splits``: either (a papermill parameters
#: cell cannot hold a comment with a second ``=``, so the notebook's help spells them with ``:``).
SEPARATORS = "=:"
#: Rows of a JSON lines file whose keys are checked against the columns before any shard is written.
PEEK_ROWS = 20
_BATCH = 256


@dataclass(frozen=True)
class OwnOptions:
    """What to read in ``raw_dir``.

    Attributes:
        rows: the columns, label map and image folder (``image_root`` is set to ``raw_dir`` when reading).
        files: our split name -> its table, relative to ``raw_dir``; empty when ``table`` is set.
        table: one table holding every split, relative to ``raw_dir``; then ``split_column`` is required.
        split_column: the column of ``table`` naming each row's split.
        split_map: our split name -> the value of ``split_column`` it reads; empty: every value found,
            under its own name.
    """

    rows: RowSpec
    files: Mapping[str, str] = field(default_factory=dict)
    table: str = ""
    split_column: str = ""
    split_map: Mapping[str, str] = field(default_factory=dict)


def parse_files(value: str | Mapping[str, str]) -> tuple[dict[str, str], str]:
    """The ``own_files`` parameter: ``(files by split, "")`` or ``({}, one table)``.

    ``"train=train.csv,val=val.csv,test=test.jsonl"`` (``:`` works as well as ``=``; or a dict, or a JSON
    object string) names one table per split; a single file name (``"annotations.csv"``) names one table
    holding every split.

    Raises:
        ValueError: naming ``own_files`` when it is empty or malformed, a split name cannot name a split
            of the shards, or a file has a suffix other than those of :data:`FORMATS`.
    """
    text = value.strip() if isinstance(value, str) else ""
    if text and not any(sep in text for sep in SEPARATORS) and not text.startswith("{"):
        _check_suffix(text)
        return {}, text
    files = parse_mapping(value, "own_files", separators=SEPARATORS, example="train=train.csv,val=val.jsonl")
    if not files:
        raise ValueError(
            "own_files: name the annotation tables in raw_dir, one per split ('train=train.csv,val=val.csv') "
            "or one holding every split ('annotations.csv' with split_column)"
        )
    for split, name in files.items():
        check_split_name(split, "own_files")
        _check_suffix(name)
    return files, ""


def _check_suffix(name: str) -> None:
    if Path(name).suffix.lower() not in FORMATS:
        raise ValueError(
            f"own_files: {name!r} is not a table this reader knows; suffixes: {', '.join(FORMATS)}"
        )


def table_path(raw_dir: Path, name: str) -> Path:
    """``raw_dir / name`` when it stays inside ``raw_dir`` (symlinks resolved).

    Raises:
        ValueError: naming ``own_files`` when ``name`` is absolute or leaves ``raw_dir``.
    """
    root = Path(raw_dir).resolve()
    path = (root / name).resolve() if not Path(name).is_absolute() else None
    if path is None or not path.is_relative_to(root):
        raise ValueError(f"own_files: {name!r} is outside raw_dir {raw_dir}; name a file inside it")
    return path


def check(raw_dir: Path, options: OwnOptions) -> None:
    """Checks that every table exists inside ``raw_dir`` and has every column the parameters name.

    Raises:
        FileNotFoundError: naming a missing folder or table.
        ValueError: naming the parameter (``own_files``, ``image_column``, ``split_column``, ...) of a table
            outside ``raw_dir`` or a column a table lacks.
    """
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise FileNotFoundError(f"{NAME}: raw_dir {raw_dir} is not a folder")
    for name in [*options.files.values(), *([options.table] if options.table else [])]:
        path = table_path(raw_dir, name)
        if not path.is_file():
            raise FileNotFoundError(f"{NAME}: missing {name} in {raw_dir} (named by own_files)")
        columns = table_columns(path)
        check_columns(options.rows, columns, name)
        if options.table and options.split_column not in columns:
            raise ValueError(
                f"split_column: no column {options.split_column!r} in {name}; its columns: {', '.join(columns)}"
            )


def splits(raw_dir: Path, options: OwnOptions) -> tuple[str, ...]:
    """The split names written, in order: ``own_files``' order, or ``splits``' order, or (one table, no
    ``splits``) the values of ``split_column`` in order of first appearance.

    Raises:
        ValueError: naming ``splits`` when a value it maps is not in the table, or a value found cannot name
            a split of the shards.
    """
    if options.files:
        return tuple(options.files)
    found = dict.fromkeys(_split_values(raw_dir, options))
    if options.split_map:
        absent = [theirs for theirs in options.split_map.values() if theirs not in found]
        if absent:
            raise ValueError(
                f"splits: {', '.join(map(repr, absent))} never occur in column {options.split_column!r} of "
                f"{options.table}; its values: {', '.join(map(repr, found))}"
            )
        return tuple(options.split_map)
    return tuple(check_split_name(value, "splits") for value in found)


def _split_values(raw_dir: Path, options: OwnOptions) -> Iterator[str]:
    for row in iter_table(table_path(raw_dir, options.table), SkipCounter(), [options.split_column]):
        value = id_key(row.values.get(options.split_column))
        if value is not None:
            yield value


def read(
    raw_dir: Path, split: str, skips: SkipCounter, limit: int | None = None, *, options: OwnOptions
) -> Iterator[Record]:
    """Yields the records of ``split`` in table order.

    Skips: those of :func:`nbhelpers.data.sources._rows.records_from_rows`, those of the table's format
    (``blank_line``, ``malformed_row``, ``nested_too_deep``), and, with one table, ``missing_split``: rows
    whose split cell is empty, counted once, in the first split.

    Raises:
        ValueError: for a split that is not one of :func:`splits`, or a negative ``limit``.
        FileNotFoundError: if the split's table is missing.
    """
    raw_dir = Path(raw_dir)
    names = splits(raw_dir, options)
    check_split(NAME, split, names)
    check_limit(limit)
    spec = options.rows.with_roots(raw_dir)
    if options.files:
        path = table_path(raw_dir, options.files[split])
        if not path.is_file():
            raise FileNotFoundError(f"{NAME}: missing {path}")
        rows = iter_table(path, skips, spec.columns)
    else:
        theirs = options.split_map.get(split, split)
        path = table_path(raw_dir, options.table)
        rows = _rows_of_split(path, spec, options.split_column, theirs, skips, first=split == names[0])
    return islice(records_from_rows(rows, split, spec, skips), limit)


def _rows_of_split(
    path: Path, spec: RowSpec, column: str, value: str, skips: SkipCounter, first: bool
) -> Iterator[Row]:
    """The rows of ``path`` whose ``column`` is ``value``; the table's unparsable rows and rows without a
    split are counted only when ``first`` (the first split), so each is counted once."""
    format_skips = skips if first else SkipCounter()
    for row in iter_table(path, format_skips, [*spec.columns, column]):
        found = id_key(row.values.get(column))
        if found is None:
            if first:
                skips.skip("missing_split", row.where)
        elif found == value:
            yield row


# ------------------------------------------------------------------------------------------------ tables


def table_columns(path: Path) -> list[str]:
    """The column names of a table: a CSV/TSV header, a parquet schema, or the keys of the first JSON rows."""
    kind = FORMATS[path.suffix.lower()]
    if kind in ("csv", "tsv"):
        with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
            header = next(csv.reader(f, delimiter="\t" if kind == "tsv" else ","), [])
        return [h.strip() for h in header]
    if kind == "parquet":
        import pyarrow.parquet as pq

        return list(pq.ParquetFile(path).schema_arrow.names)
    keys: dict[str, None] = {}
    for row in islice(iter_table(path, SkipCounter()), PEEK_ROWS):
        keys.update(dict.fromkeys(row.values))
    return list(keys)


def iter_table(path: Path, skips: SkipCounter, columns: Sequence[str] | None = None) -> Iterator[Row]:
    """The rows of a table, by its suffix; rows that cannot be parsed are counted in ``skips``.

    Args:
        path: the table.
        skips: receives ``blank_line``, ``malformed_row`` and ``nested_too_deep``.
        columns: the columns needed (a parquet file then reads only those); ``None``: all.
    """
    kind = FORMATS[path.suffix.lower()]
    if kind in ("csv", "tsv"):
        return _csv_rows(path, "\t" if kind == "tsv" else ",", skips)
    if kind == "jsonl":
        return (Row(n, f"{path.name}:{n}", obj) for n, obj in iter_jsonl(path, skips))
    if kind == "json":
        return _json_rows(path, skips)
    return _parquet_rows(path, columns)


def _csv_rows(path: Path, delimiter: str, skips: SkipCounter) -> Iterator[Row]:
    with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
        reader = csv.reader(f, delimiter=delimiter)
        header = [h.strip() for h in next(reader, [])]
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as err:  # a field over csv's size limit, a NUL byte
                skips.skip("malformed_row", f"{path.name}:{reader.line_num}: {err}")
                continue
            where = f"{path.name}:{reader.line_num}"
            if not cells:
                continue  # csv yields an empty list for an empty line: no row there
            if len(cells) != len(header):
                skips.skip("malformed_row", f"{where}: {len(cells)} fields, the header has {len(header)}")
                continue
            yield Row(reader.line_num, where, dict(zip(header, cells)))


def _json_rows(path: Path, skips: SkipCounter) -> Iterator[Row]:
    data = load_json(path)
    if not isinstance(data, list):
        raise ValueError(f"{path}: a .json table must be an array of objects (one per row)")
    for n, obj in enumerate(data, start=1):
        if isinstance(obj, dict):
            yield Row(n, f"{path.name}[{n}]", obj)
        else:
            skips.skip("malformed_row", f"{path.name}[{n}]: not an object")


def _parquet_rows(path: Path, columns: Sequence[str] | None) -> Iterator[Row]:
    import pyarrow.parquet as pq

    table = pq.ParquetFile(path)
    wanted = None if columns is None else [c for c in dict.fromkeys(columns) if c in table.schema_arrow.names]
    n = 0
    for batch in table.iter_batches(batch_size=_BATCH, columns=wanted):
        for values in batch.to_pylist():
            n += 1
            yield Row(n, f"{path.name}[{n}]", values)
