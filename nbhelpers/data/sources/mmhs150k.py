"""Reader for MMHS150K (Gomez et al., 2020, "Exploring Hate Speech Detection in Multimodal
Publications", WACV).

On-disk layout::

    raw_dir/
      MMHS150K_GT.json          {tweet_id: {tweet_text, labels, labels_str, img_url, tweet_url}}
      img_resized/<tweet_id>.jpg
      img_txt/<tweet_id>.json   optional: {"img_text": <text found in the image by OCR>}
      splits/{train,val,test}_ids.txt   one tweet id a line

``labels`` holds the votes of three annotators, each in 0..5 (0 NotHate, 1 Racist, 2 Sexist,
3 Homophobe, 4 Religion, 5 OtherHate). A tweet is class 6 Hate when at least two of the three votes are
a hate category (any of 1..5, not necessarily the same one), else class 0 True/Neutral; this is the
paper's majority rule for its binary hate/not-hate task.

Text: the tweet with its ``https://t.co/...`` links removed (they point at the tweet's own media and
say nothing), then the OCR text of the image on a new line when there is one: in many of these tweets
the hateful words are in the picture, not in the tweet.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from functools import lru_cache
from itertools import islice
from pathlib import Path
from typing import Any

from nbhelpers.data.records import Record, SkipCounter
from nbhelpers.data.sources._common import (
    as_int,
    check_layout,
    check_limit,
    check_split,
    clean_text,
    load_json,
    path_inside,
    require_file,
)
from nbhelpers.data.taxonomy import HATE, TRUE_NEUTRAL

NAME = "mmhs150k"
SPLITS: tuple[str, ...] = ("train", "val", "test")
GT_FILE = "MMHS150K_GT.json"
#: The meaning of each annotator vote, as in the dataset's ``labels_str``.
VOTE_NAMES: tuple[str, ...] = ("NotHate", "Racist", "Sexist", "Homophobe", "Religion", "OtherHate")
NUM_VOTES = 3
OCR_SEPARATOR = "\n"
# Twitter's shortened links, with the whitespace before them, e.g. " https://t.co/Ab12Cd".
_TCO_LINK = re.compile(r"\s*https?://t\.co/\S*", re.IGNORECASE)

LAYOUT = (
    "  raw_dir/MMHS150K_GT.json\n"
    "  raw_dir/img_resized/<tweet_id>.jpg\n"
    "  raw_dir/img_txt/<tweet_id>.json  (optional OCR text)\n"
    "  raw_dir/splits/{train,val,test}_ids.txt"
)


def check(raw_dir: Path) -> None:
    """Checks that the annotation file, the image folder and the three split files are present.

    Raises:
        FileNotFoundError: naming every missing file and the expected layout.
    """
    required = [GT_FILE, "img_resized/", *(f"splits/{s}_ids.txt" for s in SPLITS)]
    check_layout(NAME, raw_dir, required, LAYOUT)


def hate_label(votes: Sequence[int]) -> int:
    """Merges three annotator votes into a class: 6 Hate when at least two are in 1..5, else 0.

    >>> hate_label([0, 1, 0]), hate_label([1, 0, 2])
    (0, 6)

    Raises:
        ValueError: unless ``votes`` is three integers in 0..5.
    """
    ints = [as_int(v) for v in votes] if isinstance(votes, list | tuple) else []
    if len(ints) != NUM_VOTES or any(v is None or not 0 <= v < len(VOTE_NAMES) for v in ints):
        raise ValueError(f"expected {NUM_VOTES} votes in 0..{len(VOTE_NAMES) - 1}, got {votes!r}")
    return HATE if sum(v > 0 for v in ints) >= 2 else TRUE_NEUTRAL


def strip_links(text: str) -> str:
    """Removes ``t.co`` links from a tweet and strips the result."""
    return _TCO_LINK.sub("", text).strip()


def read(raw_dir: Path, split: str, skips: SkipCounter, limit: int | None = None) -> Iterator[Record]:
    """Yields the records of ``split`` in the order of its ids file.

    Skips (counted in ``skips``): ``blank_line`` (ids file), ``duplicate_id``, ``unknown_id`` (an id
    absent from the annotations), ``malformed_row`` (an annotation that is not an object or has no
    string ``tweet_text``), ``unknown_label`` (not three votes in 0..5), ``empty_text`` (nothing left
    after removing links, and no OCR text), ``path_outside_raw_dir`` (an id whose image or OCR file
    would lie outside ``img_resized/`` or ``img_txt/``, e.g. ``../../x``: never read),
    ``missing_image``. An OCR file that cannot be parsed is counted as ``malformed_ocr``; its tweet is
    still yielded, without OCR text.

    Args:
        raw_dir: the dataset's root folder.
        split: one of :data:`SPLITS`.
        skips: the counter that receives every skipped input.
        limit: yield at most this many records (``None``: all).

    Raises:
        ValueError: for an unknown split, a negative ``limit``, or an annotation file that is not a
            JSON object.
        FileNotFoundError: if the annotation file or the split's ids file is missing.
    """
    raw_dir = Path(raw_dir)
    check_split(NAME, split, SPLITS)
    check_limit(limit)
    ids_path = raw_dir / "splits" / f"{split}_ids.txt"
    require_file(NAME, ids_path)
    require_file(NAME, raw_dir / GT_FILE)
    return islice(_records(raw_dir, split, ids_path, skips), limit)


def _records(raw_dir: Path, split: str, ids_path: Path, skips: SkipCounter) -> Iterator[Record]:
    annotations = _load_annotations(raw_dir / GT_FILE)
    seen: set[str] = set()
    with open(ids_path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, start=1):
            where = f"{ids_path.name}:{lineno}"
            tweet_id = line.strip()
            if not tweet_id:
                skips.skip("blank_line", where)
                continue
            if tweet_id in seen:
                skips.skip("duplicate_id", f"{where} id {tweet_id}")
                continue
            seen.add(tweet_id)
            entry = annotations.get(tweet_id)
            if entry is None:
                skips.skip("unknown_id", f"{where} id {tweet_id}")
                continue
            if not isinstance(entry, dict) or not isinstance(entry.get("tweet_text"), str):
                skips.skip("malformed_row", f"{GT_FILE} id {tweet_id}")
                continue
            votes = entry.get("labels")
            try:
                label = hate_label(votes)
            except ValueError:
                skips.skip("unknown_label", f"{GT_FILE} id {tweet_id} labels {votes!r}")
                continue
            votes = [as_int(v) for v in votes]  # valid: hate_label checked them

            image = path_inside(raw_dir / "img_resized", f"{tweet_id}.jpg", skips, where)
            ocr_file = path_inside(raw_dir / "img_txt", f"{tweet_id}.json", skips, where) if image else None
            if image is None or ocr_file is None:
                continue
            tweet = strip_links(entry["tweet_text"])
            ocr = _ocr_text(ocr_file, skips)
            text = OCR_SEPARATOR.join(t for t in (tweet, ocr) if t)
            if not text:
                skips.skip("empty_text", f"{GT_FILE} id {tweet_id}")
                continue
            if not image.is_file():
                skips.skip("missing_image", str(image))
                continue
            labels_str = entry.get("labels_str")
            if not isinstance(labels_str, list):
                labels_str = [VOTE_NAMES[v] for v in votes]
            yield Record(
                source=NAME,
                source_id=tweet_id,
                split=split,
                text=text,
                label=label,
                image=image,
                meta={
                    "labels": votes,
                    "labels_str": labels_str,
                    "hateful": int(label == HATE),
                },
            )


def _ocr_text(path: Path, skips: SkipCounter) -> str:
    """The OCR text in ``path``, or ``""`` when there is no file (most images carry no text)."""
    if not path.is_file():
        return ""
    try:
        data = json.loads(path.read_bytes())
    except (ValueError, RecursionError):
        skips.skip("malformed_ocr", str(path))
        return ""
    if not isinstance(data, dict):
        skips.skip("malformed_ocr", str(path))
        return ""
    return clean_text(data.get("img_text"))


def _load_annotations(path: Path) -> dict[str, Any]:
    stat = path.stat()
    # The file holds all 150k tweets and every split reads it: cache one parse, invalidated when the
    # file changes.
    return _load_annotations_cached(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=1)
def _load_annotations_cached(path: str, mtime_ns: int, size: int) -> dict[str, Any]:
    del mtime_ns, size  # only part of the cache key
    data = load_json(Path(path))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object keyed by tweet id, got {type(data).__name__}")
    return data
