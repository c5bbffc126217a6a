"""Reader for the Hateful Memes Challenge release (Kiela et al., 2020, "The Hateful Memes Challenge:
Detecting Hate Speech in Multimodal Memes", NeurIPS).

On-disk layout (the phase-2 release)::

    raw_dir/
      img/42953.png ...
      train.jsonl  dev_seen.jsonl  dev_unseen.jsonl  test_seen.jsonl  test_unseen.jsonl

Each line is ``{"id": 42953, "img": "img/42953.png", "label": 0, "text": "..."}``; the test files of
the competition release carry no ``label``. Older releases ship ``dev.jsonl`` and ``test.jsonl``
instead; those are readable as splits ``dev`` and ``test`` when the files are present.

Mapping: ``label`` 1 (hateful) -> class 6 Hate, 0 -> class 0 True/Neutral; a row without a label in a
test file -> -1 (unlabelled). The original label is kept in ``meta``.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice
from pathlib import Path

from nbhelpers.data.records import Record, SkipCounter
from nbhelpers.data.sources._common import (
    as_int,
    check_layout,
    check_limit,
    check_split,
    clean_text,
    image_inside,
    iter_jsonl,
    require_file,
)
from nbhelpers.data.taxonomy import HATE, TRUE_NEUTRAL, UNLABELLED

NAME = "hateful_memes"
SPLITS: tuple[str, ...] = ("train", "dev_seen", "dev_unseen", "test_seen", "test_unseen")
#: Split names of the first release, read only when their file exists.
LEGACY_SPLITS: tuple[str, ...] = ("dev", "test")
#: Splits whose files may carry no label; a row without one there is unlabelled, not broken.
UNLABELLED_SPLITS = frozenset({"test_seen", "test_unseen", "test"})
#: Hateful Memes' binary label -> merged class.
LABEL_TO_CLASS: dict[int, int] = {0: TRUE_NEUTRAL, 1: HATE}

LAYOUT = (
    "  raw_dir/img/<id>.png\n"
    "  raw_dir/{train,dev_seen,dev_unseen,test_seen,test_unseen}.jsonl"
    "  (lines of {id, img, label, text}; the Hateful Memes phase-2 release)"
)


def check(raw_dir: Path) -> None:
    """Checks that ``img/`` and the five split files are present.

    Raises:
        FileNotFoundError: naming every missing file and the expected layout.
    """
    check_layout(NAME, raw_dir, ["img/", *(f"{s}.jsonl" for s in SPLITS)], LAYOUT)


def available_splits(raw_dir: Path) -> tuple[str, ...]:
    """The readable splits of ``raw_dir``: :data:`SPLITS`, then any legacy split whose file exists."""
    raw_dir = Path(raw_dir)
    return SPLITS + tuple(s for s in LEGACY_SPLITS if (raw_dir / f"{s}.jsonl").is_file())


def read(raw_dir: Path, split: str, skips: SkipCounter, limit: int | None = None) -> Iterator[Record]:
    """Yields the records of ``split`` in file order.

    Skips (counted in ``skips``): ``blank_line``, ``malformed_row`` (not a JSON object, or no usable
    ``id``/``img``), ``nested_too_deep`` (a line too deeply nested to parse), ``duplicate_id``,
    ``missing_label`` (no label outside the test files), ``unknown_label`` (a label other than 0/1),
    ``empty_text``, ``path_outside_raw_dir`` (an ``img`` that is absolute, or leaves ``raw_dir`` through
    ``..`` or a symlink: never read), ``missing_image``.

    Args:
        raw_dir: the dataset's root folder.
        split: one of :data:`SPLITS`, or ``dev``/``test`` when the older release's file exists.
        skips: the counter that receives every skipped row.
        limit: yield at most this many records (``None``: all).

    Raises:
        ValueError: for an unknown split or a negative ``limit``.
        FileNotFoundError: if the split's file is missing.
    """
    raw_dir = Path(raw_dir)
    check_split(NAME, split, available_splits(raw_dir))
    check_limit(limit)
    path = raw_dir / f"{split}.jsonl"
    require_file(NAME, path)
    return islice(_records(raw_dir, split, path, skips), limit)


def _records(raw_dir: Path, split: str, path: Path, skips: SkipCounter) -> Iterator[Record]:
    seen: set[str] = set()
    for lineno, row in iter_jsonl(path, skips):
        where = f"{path.name}:{lineno}"
        raw_id, img = row.get("id"), row.get("img")
        if isinstance(raw_id, bool) or not isinstance(raw_id, int | str) or not str(raw_id).strip():
            skips.skip("malformed_row", where)
            continue
        if not isinstance(img, str) or not img.strip():
            skips.skip("malformed_row", where)
            continue
        source_id = str(raw_id).strip()
        if source_id in seen:
            skips.skip("duplicate_id", f"{where} id {source_id}")
            continue
        seen.add(source_id)

        if "label" not in row or row["label"] is None:
            if split not in UNLABELLED_SPLITS:
                skips.skip("missing_label", where)
                continue
            hm_label, label, hateful = None, UNLABELLED, -1
        else:
            hm_label = as_int(row["label"])
            if hm_label not in LABEL_TO_CLASS:
                skips.skip("unknown_label", f"{where} label {row['label']!r}")
                continue
            label, hateful = LABEL_TO_CLASS[hm_label], hm_label

        text = clean_text(row.get("text"))
        if not text:
            skips.skip("empty_text", where)
            continue
        image = image_inside(raw_dir, img.strip(), skips, where)
        if image is None:
            continue
        yield Record(
            source=NAME,
            source_id=source_id,
            split=split,
            text=text,
            label=label,
            image=image,
            meta={"hateful": hateful, "hm_label": hm_label},
        )
