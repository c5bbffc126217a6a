"""Reader for MS-COCO 2017 captions (Lin et al., 2014, "Microsoft COCO: Common Objects in Context",
ECCV; captions by Chen et al., 2015, "Microsoft COCO Captions: Data Collection and Evaluation Server").

On-disk layout::

    raw_dir/
      annotations/captions_train2017.json  annotations/captions_val2017.json
      train2017/<file_name>  val2017/<file_name>

Each annotation file holds ``images`` (``id``, ``file_name``, ...) and ``annotations`` (``image_id``,
``caption``, ...), about five captions per image. COCO supplies clean image-caption pairs: every record
is class 0 True/Neutral, the class whose pairs the contrastive losses trust.
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
    load_json,
    require_file,
)
from nbhelpers.data.taxonomy import TRUE_NEUTRAL

NAME = "coco"
SPLITS: tuple[str, ...] = ("train", "val")

LAYOUT = (
    "  raw_dir/annotations/captions_{train,val}2017.json\n"
    "  raw_dir/{train,val}2017/<file_name>  (e.g. train2017/000000000009.jpg)"
)


def annotation_file(raw_dir: Path, split: str) -> Path:
    """The captions file of ``split``."""
    return Path(raw_dir) / "annotations" / f"captions_{split}2017.json"


def image_folder(raw_dir: Path, split: str) -> Path:
    """The image folder of ``split``."""
    return Path(raw_dir) / f"{split}2017"


def check(raw_dir: Path) -> None:
    """Checks that both captions files and both image folders are present.

    Raises:
        FileNotFoundError: naming every missing file and the expected layout.
    """
    required = [f"annotations/captions_{s}2017.json" for s in SPLITS] + [f"{s}2017/" for s in SPLITS]
    check_layout(NAME, raw_dir, required, LAYOUT)


def read(raw_dir: Path, split: str, skips: SkipCounter, limit: int | None = None) -> Iterator[Record]:
    """Yields one record per image, in the order of the file's ``images``.

    The text is the image's first caption in annotation order; all its captions go in
    ``meta["captions"]``.

    Skips (counted in ``skips``): ``malformed_row`` (an image without an integer ``id`` or a
    ``file_name``, an annotation without an integer ``image_id`` or a string ``caption``),
    ``duplicate_id`` (an image id listed twice), ``unknown_id`` (an annotation whose image is not in
    ``images``), ``empty_text`` (a blank caption), ``no_caption`` (an image left with no caption),
    ``path_outside_raw_dir`` (a ``file_name`` that leaves the split's image folder: never read),
    ``missing_image``. Annotation problems are counted when the first record is drawn, since every
    annotation must be read to group captions by image.

    Args:
        raw_dir: the dataset's root folder.
        split: one of :data:`SPLITS`.
        skips: the counter that receives every skipped input.
        limit: yield at most this many records (``None``: all).

    Raises:
        ValueError: for an unknown split, a negative ``limit``, or a captions file that is not a JSON
            object with ``images`` and ``annotations`` lists.
        FileNotFoundError: if the split's captions file is missing.
    """
    raw_dir = Path(raw_dir)
    check_split(NAME, split, SPLITS)
    check_limit(limit)
    path = annotation_file(raw_dir, split)
    require_file(NAME, path)
    return islice(_records(raw_dir, split, path, skips), limit)


def _records(raw_dir: Path, split: str, path: Path, skips: SkipCounter) -> Iterator[Record]:
    data = load_json(path)
    if not isinstance(data, dict) or not all(
        isinstance(data.get(k), list) for k in ("images", "annotations")
    ):
        raise ValueError(f"{path}: expected a JSON object with 'images' and 'annotations' lists")

    files: dict[int, str] = {}  # image id -> file name, in the order of `images`
    for i, image in enumerate(data["images"]):
        image_id = as_int(image.get("id")) if isinstance(image, dict) else None
        file_name = image.get("file_name") if isinstance(image, dict) else None
        if image_id is None or not isinstance(file_name, str) or not file_name.strip():
            skips.skip("malformed_row", f"{path.name} images[{i}]")
            continue
        if image_id in files:
            skips.skip("duplicate_id", f"{path.name} images[{i}] id {image_id}")
            continue
        files[image_id] = file_name.strip()

    captions: dict[int, list[str]] = {}
    for i, ann in enumerate(data["annotations"]):
        image_id = as_int(ann.get("image_id")) if isinstance(ann, dict) else None
        if image_id is None or not isinstance(ann.get("caption"), str):
            skips.skip("malformed_row", f"{path.name} annotations[{i}]")
            continue
        if image_id not in files:
            skips.skip("unknown_id", f"{path.name} annotations[{i}] image_id {image_id}")
            continue
        caption = clean_text(ann["caption"])
        if not caption:
            skips.skip("empty_text", f"{path.name} annotations[{i}]")
            continue
        captions.setdefault(image_id, []).append(caption)

    folder = image_folder(raw_dir, split)
    for image_id, file_name in files.items():
        caps = captions.get(image_id)
        if not caps:
            skips.skip("no_caption", f"{path.name} image {image_id}")
            continue
        image = image_inside(folder, file_name, skips, f"{path.name} image {image_id}")
        if image is None:
            continue
        yield Record(
            source=NAME,
            source_id=str(image_id),
            split=split,
            text=caps[0],
            label=TRUE_NEUTRAL,
            image=image,
            meta={"captions": caps, "file_name": file_name},
        )
