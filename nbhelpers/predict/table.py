"""Scoring a table of memes of one's own (CSV, TSV, JSON lines, JSON or parquet) with a :class:`Predictor`.

The table is read as the own-data source reads one (:mod:`nbhelpers.data.sources.own`): the same formats,
the same column parameters (``image_column``, ``text_column``, ``id_column``), images as paths relative to
``raw_dir`` (never outside it) or as bytes in a parquet cell. A row that cannot be scored (a malformed line,
a missing or undecodable image, a blank caption) is skipped and counted under the data layer's reason, as
preparing shards counts it; the scores of every other row are written, in the table's order.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from nbhelpers.data.image import load_rgb
from nbhelpers.data.records import SkipCounter
from nbhelpers.data.sources._rows import RowSpec, check_columns, id_key, image_ref
from nbhelpers.data.sources.own import FORMATS, iter_table, table_columns
from nbhelpers.data.validity import Rejected
from nbhelpers.fileio import atomic_open
from nbhelpers.predict.predictor import BATCH_SIZE, Predictor
from nbhelpers.progress import Progress

#: Output formats by suffix.
OUT_FORMATS = (".csv", ".jsonl", ".parquet")


@dataclass
class TableScores:
    """What :func:`score_table` found.

    Attributes:
        table: one row per scored sample: ``id``, ``predicted``, one column per class (calibrated
            probabilities), ``hateful_probability`` (binary runs), ``thresholds_passed`` (``;``-joined),
            ``temperature``, and ``uncalibrated:<class>`` columns when the run is calibrated.
        skipped: rows left out, by reason, with examples.
    """

    table: pd.DataFrame
    skipped: SkipCounter = field(default_factory=SkipCounter)

    def summary(self) -> str:
        """One line: rows scored and rows skipped by reason."""
        skipped = ", ".join(f"{reason} {n}" for reason, n in sorted(self.skipped.items()))
        return f"{len(self.table)} rows scored" + (f"; skipped: {skipped}" if skipped else "")


def _rows(
    path: Path, raw_dir: Path, spec: RowSpec, predictor: Predictor, skips: SkipCounter
) -> Iterator[tuple[str, Any, str]]:
    """``(id, decoded image or None, caption)`` of every usable row; the others counted in ``skips``."""
    seen: set[str] = set()
    for row in iter_table(path, skips, spec.columns):
        key = id_key(row.values.get(spec.id_column)) if spec.id_column else str(row.number)
        if key is None:
            skips.skip("missing_id", row.where)
            continue
        if key in seen:
            skips.skip("duplicate_id", f"{row.where}: id {key!r}")
            continue
        image = None
        if predictor.reads_image:
            ref = image_ref(row.values.get(spec.image_column), spec, skips, row.where)
            if ref is None:
                continue
            try:
                image = load_rgb(ref)
            except Rejected as err:
                skips.skip(err.reason, f"{row.where}: {err}")
                continue
        try:
            text = predictor.prepare_text(row.values.get(spec.text_column) if spec.text_column else None)
        except ValueError as err:
            skips.skip("invalid_text", f"{row.where}: {err}")
            continue
        seen.add(key)
        yield key, image, text


def score_table(
    predictor: Predictor,
    path: str | os.PathLike,
    raw_dir: str | os.PathLike | None = None,
    image_column: str = "image",
    text_column: str = "text",
    id_column: str = "",
    batch_size: int = BATCH_SIZE,
    progress: bool = True,
) -> TableScores:
    """Scores every row of a table (see the module docstring).

    Args:
        predictor: from :func:`~nbhelpers.predict.load`.
        path: the table (``.csv``, ``.tsv``, ``.jsonl``, ``.ndjson``, ``.json``, ``.parquet``).
        raw_dir: the folder image paths are relative to (default: the table's folder).
        image_column, text_column, id_column: the columns, as the own-data source names them (``id_column``
            empty: the row number, a CSV's line).
        batch_size: samples per forward pass.
        progress: show a progress bar (:class:`~nbhelpers.progress.Progress`).

    Raises:
        FileNotFoundError: no table at ``path``.
        ValueError: an unknown table format, or a column the table lacks (naming the parameter).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"table: no file {path}")
    if path.suffix.lower() not in FORMATS:
        raise ValueError(f"table: {path.name} is not one of {', '.join(FORMATS)}")
    raw_dir = Path(raw_dir) if raw_dir else path.parent
    if not raw_dir.is_dir():
        raise FileNotFoundError(f"raw_dir: no folder {raw_dir}")
    spec = RowSpec(
        source="own",
        image_column=image_column if predictor.reads_image else "",
        text_column=text_column if predictor.reads_text else "",
        label_column="",
        id_column=id_column,
        image_root=raw_dir,
    )
    check_columns(spec, table_columns(path), path.name)
    skips = SkipCounter()
    bar = Progress(desc=f"scoring {path.name}", unit="row", enabled=progress)
    keys: list[str] = []
    found = []
    batch: list[tuple[str, Any, str]] = []

    def flush() -> None:
        if batch:
            found.append(predictor.predict([b[1] for b in batch], [b[2] for b in batch], batch_size))
            keys.extend(b[0] for b in batch)
            bar.update(len(batch))
            batch.clear()

    for sample in _rows(path, raw_dir, spec, predictor, skips):
        batch.append(sample)
        if len(batch) == batch_size:
            flush()
    flush()
    bar.close()
    return TableScores(_frame(keys, found, predictor), skips)


def _frame(keys: list[str], found: list, predictor: Predictor) -> pd.DataFrame:
    records = [r for predictions in found for r in predictions.records()]
    calibrated = predictor.operating_points is not None
    rows = []
    for key, record in zip(keys, records):
        row: dict[str, Any] = {"id": key, "predicted": record["predicted"], **record["probabilities"]}
        if "hateful_probability" in record:
            row["hateful_probability"] = record["hateful_probability"]
        row["thresholds_passed"] = ";".join(record["thresholds_passed"])
        row["temperature"] = record["temperature"]
        if calibrated:
            row.update({f"uncalibrated:{c}": p for c, p in record["uncalibrated_probabilities"].items()})
        rows.append(row)
    columns = ["id", "predicted", *predictor.classes]
    return pd.DataFrame(rows, columns=None if rows else columns)


def write_scores(table: pd.DataFrame, out: str | os.PathLike) -> Path:
    """Writes the scores atomically as CSV, JSON lines or parquet (by ``out``'s suffix).

    Raises:
        ValueError: another suffix.
    """
    out = Path(out)
    writers: dict[str, Callable[[Any], None]] = {
        ".csv": lambda f: table.to_csv(f, index=False),
        ".jsonl": lambda f: table.to_json(f, orient="records", lines=True, force_ascii=False),
        ".parquet": lambda f: table.to_parquet(f, index=False),
    }
    if out.suffix.lower() not in writers:
        raise ValueError(f"out: {out.name} must end in one of {', '.join(OUT_FORMATS)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    mode = "wb" if out.suffix.lower() == ".parquet" else "w"
    with atomic_open(out, mode) as f:
        writers[out.suffix.lower()](f)
    return out
