"""Reader for Fakeddit's multimodal files (Nakamura et al., 2020, "r/Fakeddit: A New Multimodal
Benchmark Dataset for Fine-grained Fake News Detection", LREC).

On-disk layout::

    raw_dir/
      multimodal_train.tsv  multimodal_validate.tsv  multimodal_test_public.tsv
      public_image_set/<id>.jpg      (or images/<id>.jpg, or any folder given as image_dir)

The TSV files are written by pandas: a leading unnamed index column, then ``author, clean_title,
created_utc, domain, hasImage, id, image_url, linked_submission_id, num_comments, score, subreddit,
title, upvote_ratio, 2_way_label, 3_way_label, 6_way_label``, tab-separated, fields quoted with ``"``
(doubled inside) only when they hold a tab, a quote or a newline. The text of a sample is
``clean_title``. The files are UTF-8; a line that is not is decoded by
:func:`nbhelpers.data.validity.decode_text` (its stray bytes as Windows-1252) and counted as repaired
(``non_utf8_text``), never turned into U+FFFD silently.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

from nbhelpers.data.records import Record, SkipCounter
from nbhelpers.data.sources._common import (
    as_int,
    check_layout,
    check_limit,
    check_split,
    image_inside,
    require_file,
)
from nbhelpers.data.taxonomy import (
    FALSE_CONNECTION,
    IMPOSTER,
    MANIPULATED,
    MISLEADING,
    SATIRE,
    TRUE_NEUTRAL,
)
from nbhelpers.data.validity import decode_text

NAME = "fakeddit"
SPLITS: tuple[str, ...] = ("train", "val", "test")
FILES: dict[str, str] = {
    "train": "multimodal_train.tsv",
    "val": "multimodal_validate.tsv",
    "test": "multimodal_test_public.tsv",
}
#: Image folders looked for under ``raw_dir``, in order, when no ``image_dir`` is given.
IMAGE_DIRS: tuple[str, ...] = ("public_image_set", "images")

#: ``6_way_label`` -> merged class. The values follow the maintainers' definition in
#: https://github.com/entitize/Fakeddit/issues/14 (0 true, 1 satire/parody, 2 false connection,
#: 3 imposter content, 4 manipulated content, 5 misleading content). The paper lists the categories as
#: true, satire/parody, misleading, imposter, false connection, manipulated (the order of our
#: taxonomy), and code that reads the values in that order mislabels values 2, 4 and 5.
#: This table is the only place the mapping is written.
SIX_WAY_TO_CLASS: dict[int, int] = {
    0: TRUE_NEUTRAL,
    1: SATIRE,
    2: FALSE_CONNECTION,
    3: IMPOSTER,
    4: MANIPULATED,
    5: MISLEADING,
}
REQUIRED_COLUMNS: tuple[str, ...] = (
    "id",
    "clean_title",
    "hasImage",
    "subreddit",
    "2_way_label",
    "3_way_label",
    "6_way_label",
)
_TRUE = frozenset({"true", "1", "1.0"})
_FALSE = frozenset({"false", "0", "0.0"})

LAYOUT = (
    "  raw_dir/multimodal_{train,validate,test_public}.tsv\n"
    "  raw_dir/public_image_set/<id>.jpg  (or raw_dir/images/<id>.jpg, or pass image_dir)"
)


def find_image_dir(raw_dir: Path, image_dir: Path | str | None = None) -> Path:
    """Returns the image folder: ``image_dir`` (relative to ``raw_dir`` unless absolute) when given,
    else the first of :data:`IMAGE_DIRS` that exists.

    Raises:
        FileNotFoundError: if the folder does not exist.
    """
    raw_dir = Path(raw_dir)
    if image_dir is not None:
        folder = raw_dir / image_dir
        if not folder.is_dir():
            raise FileNotFoundError(f"{NAME}: image_dir {folder} is not a folder")
        return folder
    for name in IMAGE_DIRS:
        if (raw_dir / name).is_dir():
            return raw_dir / name
    raise FileNotFoundError(
        f"{NAME}: no image folder ({' or '.join(f'{n}/' for n in IMAGE_DIRS)}) in {raw_dir}; "
        f"pass image_dir. Expected layout:\n{LAYOUT}"
    )


def check(raw_dir: Path, image_dir: Path | str | None = None) -> None:
    """Checks that the three TSV files and the image folder are present.

    Raises:
        FileNotFoundError: naming every missing file and the expected layout.
    """
    check_layout(NAME, raw_dir, list(FILES.values()), LAYOUT)
    find_image_dir(raw_dir, image_dir)


def read(
    raw_dir: Path,
    split: str,
    skips: SkipCounter,
    limit: int | None = None,
    image_dir: Path | str | None = None,
) -> Iterator[Record]:
    """Yields the records of ``split`` in file order.

    Skips (counted in ``skips``): ``blank_line``, ``malformed_row`` (a wrong number of fields, a line
    the csv module rejects, no ``id``, an unreadable ``hasImage``), ``duplicate_id``, ``no_image``
    (``hasImage`` false), ``unknown_label`` (a ``6_way_label`` outside 0..5), ``empty_text`` (empty
    ``clean_title``), ``path_outside_raw_dir`` (an ``id`` whose image would lie outside the image
    folder, e.g. ``../../x``: never read), ``missing_image``. Repairs (counted in ``skips.repaired``):
    ``non_utf8_text``, one per line that was not UTF-8.

    Args:
        raw_dir: the dataset's root folder.
        split: one of :data:`SPLITS` (from ``train``, ``validate`` and ``test_public``).
        skips: the counter that receives every skipped row.
        limit: yield at most this many records (``None``: all).
        image_dir: the image folder, when it is neither ``public_image_set/`` nor ``images/``.

    Raises:
        ValueError: for an unknown split, a negative ``limit``, or a file without the required columns.
        FileNotFoundError: if the split's file or the image folder is missing.
    """
    raw_dir = Path(raw_dir)
    check_split(NAME, split, SPLITS)
    check_limit(limit)
    path = raw_dir / FILES[split]
    require_file(NAME, path)
    images = find_image_dir(raw_dir, image_dir)
    return islice(_records(path, images, split, skips), limit)


def _decoded_lines(path: Path, skips: SkipCounter) -> Iterator[str]:
    """The file's lines as text, each with its line ending, split as ``open(..., newline="")`` splits."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            text, repaired = decode_text(raw)
            if repaired:
                skips.repair("non_utf8_text", f"{path.name}:{lineno}")
            # newline="" also ends a line at a lone "\r"; the csv module relies on it.
            yield from _LONE_CR.split(text)


_LONE_CR = re.compile(r"(?<=\r)(?!\n)(?=.)", re.DOTALL)


def _records(path: Path, images: Path, split: str, skips: SkipCounter) -> Iterator[Record]:
    # The csv module sees quoted newlines inside titles because each line keeps its ending.
    reader = csv.reader(_decoded_lines(path, skips), delimiter="\t", quotechar='"', doublequote=True)
    header = next(reader, None)
    if header is None:
        raise ValueError(f"{path} is empty: expected a header row")
    column = {name: i for i, name in enumerate(header)}
    missing = [c for c in REQUIRED_COLUMNS if c not in column]
    if missing:
        raise ValueError(f"{path}: missing columns {', '.join(missing)}; header is {header}")

    seen: set[str] = set()
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error:  # e.g. a NUL byte: the reader resumes at the next line
            skips.skip("malformed_row", f"{path.name}:{reader.line_num}")
            continue
        where = f"{path.name}:{reader.line_num}"
        if not row or (len(row) == 1 and not row[0].strip()):
            skips.skip("blank_line", where)
            continue
        if len(row) != len(header):
            skips.skip("malformed_row", where)
            continue

        source_id = row[column["id"]].strip()
        has_image = row[column["hasImage"]].strip().lower()
        if not source_id or has_image not in _TRUE | _FALSE:
            skips.skip("malformed_row", where)
            continue
        if source_id in seen:
            skips.skip("duplicate_id", f"{where} id {source_id}")
            continue
        seen.add(source_id)
        if has_image in _FALSE:
            skips.skip("no_image", f"{where} id {source_id}")
            continue
        six_way = as_int(row[column["6_way_label"]])
        if six_way not in SIX_WAY_TO_CLASS:
            skips.skip("unknown_label", f"{where} 6_way_label {row[column['6_way_label']]!r}")
            continue
        text = row[column["clean_title"]].strip()
        if not text:
            skips.skip("empty_text", f"{where} id {source_id}")
            continue
        image = image_inside(images, f"{source_id}.jpg", skips, where)
        if image is None:
            continue
        yield Record(
            source=NAME,
            source_id=source_id,
            split=split,
            text=text,
            label=SIX_WAY_TO_CLASS[six_way],
            image=image,
            meta={
                "2_way_label": as_int(row[column["2_way_label"]]),
                "3_way_label": as_int(row[column["3_way_label"]]),
                "6_way_label": six_way,
                "subreddit": row[column["subreddit"]].strip(),
            },
        )
