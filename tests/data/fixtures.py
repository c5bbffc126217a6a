"""Small datasets in each source's real on-disk format, with planted faults.

Each ``write_<source>(root, n_per_split, faults)`` writes under ``root`` and returns what it planted::

    {
        "raw_dir": root,
        "splits": {
            split: {
                "records": <how many records read() yields>,
                "labels": {source_id: merged label, ...},   # in read() order
                "texts": {source_id: expected text, ...},
                "undecodable": [source_id, ...],            # yielded, but their image fails to decode
                "skips": {reason: count, ...},              # exactly what read() counts
            },
        },
    }

Missing image files are skipped by the readers; truncated files (the first 100 bytes of a valid image)
and files that are not images at all are yielded as records, because only decoding reveals them: the
shard writer is tested on these same fixtures for that. Good images alternate between 300x200 and
180x320 so that letterboxing pads both ways.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

SIZES: tuple[tuple[int, int], ...] = ((300, 200), (180, 320))
TRUNCATED_BYTES = 100
NOT_AN_IMAGE = b"this file is text, not an image\n"


class _Planted:
    """Collects, per split, what a reader must yield and skip."""

    def __init__(self, root: Path, splits: tuple[str, ...]):
        self.root = root
        self.splits = {
            s: {"records": 0, "labels": {}, "texts": {}, "undecodable": [], "skips": {}} for s in splits
        }

    def record(self, split: str, source_id: str, label: int, text: str, undecodable: bool = False) -> None:
        entry = self.splits[split]
        entry["records"] += 1
        entry["labels"][source_id] = label
        entry["texts"][source_id] = text
        if undecodable:
            entry["undecodable"].append(source_id)

    def skip(self, split: str, reason: str) -> None:
        skips = self.splits[split]["skips"]
        skips[reason] = skips.get(reason, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        return {"raw_dir": self.root, "splits": self.splits}


def _picture(index: int) -> Image.Image:
    """A small picture whose size alternates between landscape and portrait."""
    width, height = SIZES[index % len(SIZES)]
    colour = ((53 * index) % 256, (97 * index + 80) % 256, (151 * index + 160) % 256)
    img = Image.new("RGB", (width, height), colour)
    draw = ImageDraw.Draw(img)
    draw.rectangle((width // 5, height // 5, width // 2, height // 2), fill=(255 - colour[0], 40, 200))
    draw.ellipse((width // 2, height // 2, width - 10, height - 10), fill=(20, 255 - colour[1], 90))
    return img


def _encode(index: int, fmt: str) -> bytes:
    buf = io.BytesIO()
    _picture(index).save(buf, format=fmt)
    return buf.getvalue()


def write_image(path: Path, index: int, fmt: str) -> None:
    """Writes a valid picture (``fmt`` is ``"PNG"`` or ``"JPEG"``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_encode(index, fmt))


def write_truncated_image(path: Path, fmt: str) -> None:
    """Writes the first :data:`TRUNCATED_BYTES` bytes of a valid picture, as a cut-off download."""
    data = _encode(1, fmt)
    assert len(data) > TRUNCATED_BYTES, "the source picture must be longer than the cut"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[:TRUNCATED_BYTES])


def write_not_an_image(path: Path) -> None:
    """Writes a text file under an image's name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(NOT_AN_IMAGE)


# The fixtures spell out each format themselves rather than import the readers' constants, so that a
# wrong constant in a reader shows up as a failing test instead of a matching fixture.

# --------------------------------------------------------------------------------------- Hateful Memes

HM_SPLITS: tuple[str, ...] = ("train", "dev_seen", "dev_unseen", "test_seen", "test_unseen")


def write_hateful_memes(root: Path, n_per_split: int = 4, faults: bool = True) -> dict[str, Any]:
    """Writes a Hateful Memes release: ``img/NNNNN.png`` and the five ``.jsonl`` split files.

    Good rows alternate labels 0 and 1; the test files carry no label. With ``faults``: ``train`` gets
    a blank line, two malformed lines (bad JSON, a JSON list), an unknown label (2), a blank text, a
    missing image, a row without a label, a truncated PNG and a text file named ``.png`` (the last two
    are yielded); ``dev_seen`` repeats an id; ``test_unseen`` has a row with an empty text.
    """
    root = Path(root)
    planted = _Planted(root, HM_SPLITS)
    next_id = iter(range(10001, 99999))
    for split in HM_SPLITS:
        labelled = not split.startswith("test")
        lines: list[str] = []

        def row(meme_id: int, text: Any, label: Any = None, img: str | None = None, _lab=labelled) -> str:
            obj: dict[str, Any] = {"id": meme_id, "img": img or f"img/{meme_id:05d}.png"}
            if _lab and label is not None:
                obj["label"] = label
            obj["text"] = text
            return json.dumps(obj)

        for i in range(n_per_split):
            meme_id = next(next_id)
            write_image(root / f"img/{meme_id:05d}.png", meme_id, "PNG")
            text = f"{split} meme number {i}"
            lines.append(row(meme_id, text, label=i % 2))
            planted.record(split, str(meme_id), (6 if i % 2 else 0) if labelled else -1, text)

        if faults and split == "train":
            lines.append("")
            planted.skip(split, "blank_line")
            lines.append('{"id": 1, "img": "img/00001.png", "text": ')
            planted.skip(split, "malformed_row")
            lines.append('["a", "list"]')
            planted.skip(split, "malformed_row")
            meme_id = next(next_id)
            write_image(root / f"img/{meme_id:05d}.png", meme_id, "PNG")
            lines.append(row(meme_id, "a label that does not exist", label=2))
            planted.skip(split, "unknown_label")
            meme_id = next(next_id)
            write_image(root / f"img/{meme_id:05d}.png", meme_id, "PNG")
            lines.append(row(meme_id, "   ", label=0))
            planted.skip(split, "empty_text")
            lines.append(row(next(next_id), "my picture was never downloaded", label=1))
            planted.skip(split, "missing_image")
            meme_id = next(next_id)
            write_image(root / f"img/{meme_id:05d}.png", meme_id, "PNG")
            lines.append(json.dumps({"id": meme_id, "img": f"img/{meme_id:05d}.png", "text": "no label"}))
            planted.skip(split, "missing_label")
            meme_id = next(next_id)
            write_truncated_image(root / f"img/{meme_id:05d}.png", "PNG")
            lines.append(row(meme_id, "  my picture is cut off  ", label=1))
            planted.record(split, str(meme_id), 6, "my picture is cut off", undecodable=True)
            meme_id = next(next_id)
            write_not_an_image(root / f"img/{meme_id:05d}.png")
            lines.append(row(meme_id, "my picture is text", label=0))
            planted.record(split, str(meme_id), 0, "my picture is text", undecodable=True)
        if faults and split == "dev_seen":
            lines.append(lines[0])
            planted.skip(split, "duplicate_id")
        if faults and split == "test_unseen":
            meme_id = next(next_id)
            write_image(root / f"img/{meme_id:05d}.png", meme_id, "PNG")
            lines.append(row(meme_id, ""))
            planted.skip(split, "empty_text")
        (root / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return planted.as_dict()


# --------------------------------------------------------------------------------------------- MMHS150K

MMHS_SPLITS: tuple[str, ...] = ("train", "val", "test")
MMHS_VOTE_NAMES: tuple[str, ...] = ("NotHate", "Racist", "Sexist", "Homophobe", "Religion", "OtherHate")

#: (votes, merged label): the 2-of-3 rule's cases, cycled over the good tweets.
MMHS_VOTE_CASES: tuple[tuple[list[int], int], ...] = (
    ([0, 0, 0], 0),
    ([0, 1, 0], 0),
    ([1, 0, 2], 6),
    ([1, 1, 1], 6),
    ([5, 0, 0], 0),
    ([0, 3, 4], 6),
)


def write_mmhs150k(root: Path, n_per_split: int = 4, faults: bool = True) -> dict[str, Any]:
    """Writes an MMHS150K release: ``MMHS150K_GT.json``, ``img_resized/``, ``img_txt/``, ``splits/``.

    Good tweets end in a ``t.co`` link (removed from the text); every third carries OCR text (appended
    on a new line), and the one after it an OCR file with only spaces (nothing appended). With
    ``faults``: ``train`` gets a blank line, an id absent from the annotations, a missing image, a
    tweet that is only a link (``empty_text``), a tweet that is only a link but has OCR text (kept), two
    bad vote lists, an annotation with no ``tweet_text``, an unparsable OCR file (kept without OCR,
    ``malformed_ocr``), a truncated JPEG and a text file named ``.jpg`` (both yielded); ``val`` repeats
    an id.
    """
    root = Path(root)
    planted = _Planted(root, MMHS_SPLITS)
    gt: dict[str, Any] = {}
    ids = iter(range(1_114_679_353_714_016_256, 1_114_679_353_714_099_999))
    k = 0

    def annotate(tweet_id: str, text: str, votes: list[int]) -> None:
        gt[tweet_id] = {
            "img_url": f"http://pbs.twimg.com/media/{tweet_id}.jpg",
            "labels": votes,
            "tweet_url": f"https://twitter.com/user/status/{tweet_id}",
            "tweet_text": text,
            "labels_str": [MMHS_VOTE_NAMES[v] if 0 <= v < 6 else "?" for v in votes],
        }

    def ocr(tweet_id: str, text: str) -> None:
        path = root / "img_txt" / f"{tweet_id}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"img_text": text}), encoding="utf-8")

    for split in MMHS_SPLITS:
        lines: list[str] = []
        for _ in range(n_per_split):
            tweet_id = str(next(ids))
            votes, label = MMHS_VOTE_CASES[k % len(MMHS_VOTE_CASES)]
            tweet = f"@user{k} this is tweet {k}"
            annotate(tweet_id, f"{tweet} https://t.co/Ab{k}Xy9Z", votes)
            write_image(root / "img_resized" / f"{tweet_id}.jpg", k, "JPEG")
            expected = tweet
            if k % 3 == 0:
                ocr(tweet_id, f" words in picture {k} ")
                expected = f"{tweet}\nwords in picture {k}"
            elif k % 3 == 1:
                ocr(tweet_id, "   ")
            lines.append(tweet_id)
            planted.record(split, tweet_id, label, expected)
            k += 1

        if faults and split == "train":
            lines.append("")
            planted.skip(split, "blank_line")
            lines.append(str(next(ids)))  # never annotated
            planted.skip(split, "unknown_id")

            tweet_id = str(next(ids))
            annotate(tweet_id, "my picture was never downloaded", [1, 1, 0])
            lines.append(tweet_id)
            planted.skip(split, "missing_image")

            tweet_id = str(next(ids))
            annotate(tweet_id, "https://t.co/OnlyALink", [0, 0, 0])
            write_image(root / "img_resized" / f"{tweet_id}.jpg", 3, "JPEG")
            lines.append(tweet_id)
            planted.skip(split, "empty_text")

            tweet_id = str(next(ids))
            annotate(tweet_id, "  https://t.co/LinkThenOcr ", [2, 2, 0])
            write_image(root / "img_resized" / f"{tweet_id}.jpg", 4, "JPEG")
            ocr(tweet_id, "only the picture speaks")
            lines.append(tweet_id)
            planted.record(split, tweet_id, 6, "only the picture speaks")

            for votes in ([0, 7, 1], [1, 1]):
                tweet_id = str(next(ids))
                annotate(tweet_id, "votes that make no sense", votes)
                write_image(root / "img_resized" / f"{tweet_id}.jpg", 5, "JPEG")
                lines.append(tweet_id)
                planted.skip(split, "unknown_label")

            tweet_id = str(next(ids))
            gt[tweet_id] = {"labels": [0, 0, 0], "img_url": "", "tweet_url": ""}
            write_image(root / "img_resized" / f"{tweet_id}.jpg", 6, "JPEG")
            lines.append(tweet_id)
            planted.skip(split, "malformed_row")

            tweet_id = str(next(ids))
            annotate(tweet_id, "my OCR file is broken https://t.co/x", [0, 0, 1])
            write_image(root / "img_resized" / f"{tweet_id}.jpg", 7, "JPEG")
            (root / "img_txt" / f"{tweet_id}.json").write_text('{"img_text": "cut', encoding="utf-8")
            lines.append(tweet_id)
            planted.skip(split, "malformed_ocr")
            planted.record(split, tweet_id, 0, "my OCR file is broken")

            tweet_id = str(next(ids))
            annotate(tweet_id, "my picture is cut off", [3, 3, 3])
            write_truncated_image(root / "img_resized" / f"{tweet_id}.jpg", "JPEG")
            lines.append(tweet_id)
            planted.record(split, tweet_id, 6, "my picture is cut off", undecodable=True)

            tweet_id = str(next(ids))
            annotate(tweet_id, "my picture is text", [0, 0, 0])
            write_not_an_image(root / "img_resized" / f"{tweet_id}.jpg")
            lines.append(tweet_id)
            planted.record(split, tweet_id, 0, "my picture is text", undecodable=True)
        if faults and split == "val":
            lines.append(lines[0])
            planted.skip(split, "duplicate_id")

        path = root / "splits" / f"{split}_ids.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "img_resized").mkdir(parents=True, exist_ok=True)
    (root / "MMHS150K_GT.json").write_text(json.dumps(gt), encoding="utf-8")
    return planted.as_dict()


# --------------------------------------------------------------------------------------------- Fakeddit

FAKEDDIT_COLUMNS: tuple[str, ...] = (
    "",  # pandas' unnamed index column
    "author",
    "clean_title",
    "created_utc",
    "domain",
    "hasImage",
    "id",
    "image_url",
    "linked_submission_id",
    "num_comments",
    "score",
    "subreddit",
    "title",
    "upvote_ratio",
    "2_way_label",
    "3_way_label",
    "6_way_label",
)
#: The maintainers' 6_way_label -> merged class (entitize/Fakeddit issue 14), written out again here on
#: purpose: the test checks the reader's table against this independent copy.
FAKEDDIT_EXPECTED_CLASS: dict[int, int] = {0: 0, 1: 1, 2: 4, 3: 3, 4: 5, 5: 2}
FAKEDDIT_FILES: dict[str, str] = {
    "train": "multimodal_train.tsv",
    "val": "multimodal_validate.tsv",
    "test": "multimodal_test_public.tsv",
}


def write_fakeddit(
    root: Path, n_per_split: int = 6, faults: bool = True, image_folder: str = "public_image_set"
) -> dict[str, Any]:
    """Writes Fakeddit's three ``multimodal_*.tsv`` files as pandas writes them, and ``<id>.jpg`` images
    in ``image_folder``.

    Good rows cycle ``6_way_label`` through 0..5 (one written as ``"4.0"``, as pandas writes an int
    column that held a NaN); row 1's ``clean_title`` holds double quotes and every ``title`` a tab and
    quotes (so both are quoted), row 2's ``title`` a newline. With ``faults``: ``train`` gets a blank
    line, a row with too few fields, ``hasImage`` False, an empty ``clean_title``, ``6_way_label`` 9, a
    missing image, a truncated JPEG and a text file named ``.jpg`` (both yielded); ``val`` gets a row
    whose ``hasImage`` is neither true nor false (``malformed_row``).
    """
    root = Path(root)
    images = root / image_folder
    images.mkdir(parents=True, exist_ok=True)
    planted = _Planted(root, tuple(FAKEDDIT_FILES))
    index = 0

    def row(
        post_id: str,
        clean_title: str,
        six: int,
        has_image: str = "True",
        title: str = "",
        written: Any = None,
    ) -> list:
        nonlocal index
        index += 1
        return [
            index - 1,
            f"author_{post_id}",
            clean_title,
            1_500_000_000.0 + index,
            "i.imgur.com",
            has_image,
            post_id,
            f"https://i.imgur.com/{post_id}.jpg",
            "",
            3.0,
            10 + index,
            "photoshopbattles" if six == 4 else "nottheonion",
            title or f'He said "{clean_title}"\tthen LEFT',
            0.93,
            int(six == 0),
            0 if six == 0 else (1 if six in (1, 3, 5) else 2),
            six if written is None else written,
        ]

    for split, file_name in FAKEDDIT_FILES.items():
        with open(root / file_name, "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
            writer.writerow(FAKEDDIT_COLUMNS)
            for i in range(n_per_split):
                six_way = i % 6
                post_id = f"{split[:2]}{i:04x}q"
                clean_title = f'my "quoted" {split} title {i}' if i == 1 else f"{split} post title {i}"
                title = "first line\nsecond line" if i == 2 else ""
                written = f"{six_way}.0" if six_way == 4 else None
                write_image(images / f"{post_id}.jpg", i, "JPEG")
                writer.writerow(row(post_id, clean_title, six_way, title=title, written=written))
                planted.record(split, post_id, FAKEDDIT_EXPECTED_CLASS[six_way], clean_title)

            if faults and split == "train":
                f.write("\n")
                planted.skip(split, "blank_line")
                f.write("999\tonly_an_author\tand a title\n")
                planted.skip(split, "malformed_row")
                writer.writerow(row("noimg1q", "a post without a picture", 0, has_image="False"))
                planted.skip(split, "no_image")
                write_image(images / "emptyq.jpg", 2, "JPEG")
                writer.writerow(row("emptyq", "", 0))
                planted.skip(split, "empty_text")
                write_image(images / "badlabq.jpg", 3, "JPEG")
                writer.writerow(row("badlabq", "a label out of range", 9))
                planted.skip(split, "unknown_label")
                writer.writerow(row("missq", "my picture was never downloaded", 1))
                planted.skip(split, "missing_image")
                write_truncated_image(images / "truncq.jpg", "JPEG")
                writer.writerow(row("truncq", "my picture is cut off", 2))
                planted.record(split, "truncq", FAKEDDIT_EXPECTED_CLASS[2], "my picture is cut off", True)
                write_not_an_image(images / "textq.jpg")
                writer.writerow(row("textq", "my picture is text", 5))
                planted.record(split, "textq", FAKEDDIT_EXPECTED_CLASS[5], "my picture is text", True)
            if faults and split == "val":
                write_image(images / "maybeq.jpg", 4, "JPEG")
                writer.writerow(row("maybeq", "has it an image", 0, has_image="maybe"))
                planted.skip(split, "malformed_row")
    return planted.as_dict()


# ------------------------------------------------------------------------------------------------- COCO


def write_coco(root: Path, n_per_split: int = 4, faults: bool = True) -> dict[str, Any]:
    """Writes MS-COCO 2017 captions files and images (``annotations/``, ``train2017/``, ``val2017/``).

    Each good image has three captions, ``"caption j of image <id>"``; annotations are interleaved
    across images and their ids descend, so "first caption" means first in file order, not lowest id.
    With ``faults``: ``train`` gets an image with no caption, an annotation for an unknown image id, a
    missing image file, an annotation without ``caption``, an image entry without ``file_name``, an
    image whose first caption is blank (``empty_text``; its second caption becomes the text), a
    truncated JPEG and a text file named ``.jpg`` (both yielded); ``val`` lists an image id twice.
    """
    root = Path(root)
    planted = _Planted(root, ("train", "val"))
    next_id = iter(range(9, 10_000_000, 7))
    for split in ("train", "val"):
        folder = root / f"{split}2017"
        folder.mkdir(parents=True, exist_ok=True)
        images: list[dict[str, Any]] = []
        captions: list[tuple[int, str]] = []  # (image id, caption) in file order

        def add_image(image_id: int, kind: str = "good", _folder=folder, _images=images) -> None:
            file_name = f"{image_id:012d}.jpg"
            width, height = SIZES[image_id % 2]
            _images.append(
                {"license": 1, "file_name": file_name, "height": height, "width": width, "id": image_id}
            )
            if kind == "good":
                write_image(_folder / file_name, image_id, "JPEG")
            elif kind == "truncated":
                write_truncated_image(_folder / file_name, "JPEG")
            elif kind == "text":
                write_not_an_image(_folder / file_name)

        good = [next(next_id) for _ in range(n_per_split)]
        for image_id in good:
            add_image(image_id)
        for j in range(3):
            captions.extend((image_id, f"caption {j} of image {image_id}") for image_id in good)
        for image_id in good:
            planted.record(split, str(image_id), 0, f"caption 0 of image {image_id}")

        extra: list[dict[str, Any]] = []
        if faults and split == "train":
            lonely = next(next_id)
            add_image(lonely)
            planted.skip(split, "no_caption")
            captions.append((999_999_999, "a caption for an image nobody listed"))
            planted.skip(split, "unknown_id")
            missing = next(next_id)
            add_image(missing, kind="missing")
            captions.append((missing, "my picture was never downloaded"))
            planted.skip(split, "missing_image")
            extra.append({"image_id": good[0], "id": 1})  # no caption
            planted.skip(split, "malformed_row")
            images.append({"license": 1, "id": next(next_id), "height": 10, "width": 10})  # no file_name
            planted.skip(split, "malformed_row")
            blank_first = next(next_id)
            add_image(blank_first)
            captions += [(blank_first, "  "), (blank_first, " the second caption is the text ")]
            planted.skip(split, "empty_text")
            planted.record(split, str(blank_first), 0, "the second caption is the text")
            for kind, text in (("truncated", "my picture is cut off"), ("text", "my picture is text")):
                image_id = next(next_id)
                add_image(image_id, kind=kind)
                captions.append((image_id, text))
                planted.record(split, str(image_id), 0, text, undecodable=True)
        if faults and split == "val":
            images.append(dict(images[0]))
            planted.skip(split, "duplicate_id")

        annotations = [
            {"image_id": image_id, "id": 900_000 - i, "caption": caption}
            for i, (image_id, caption) in enumerate(captions)
        ] + extra
        data = {
            "info": {"description": "COCO 2017 Dataset (fixture)", "version": "1.0", "year": 2017},
            "licenses": [
                {"url": "http://creativecommons.org/licenses/by-nc-sa/2.0/", "id": 1, "name": "BY-NC-SA"}
            ],
            "images": images,
            "annotations": annotations,
        }
        path = root / "annotations" / f"captions_{split}2017.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data), encoding="utf-8")
    return planted.as_dict()


# ------------------------------------------------------------------------------------------- own data

#: Colours of the own-data pictures, one per class in order (far apart, so a tiny CNN tells them apart).
OWN_COLOURS: tuple[tuple[int, int, int], ...] = (
    (220, 40, 40),
    (40, 170, 60),
    (40, 70, 220),
    (240, 210, 40),
    (160, 50, 200),
    (40, 210, 220),
    (245, 130, 20),
    (130, 80, 40),
)
#: Caption templates of the own-data samples; ``{name}`` is the class name, the one word that tells it.
OWN_TEMPLATES: tuple[str, ...] = (
    "a photo of a {name}",
    "my {name} again",
    "look at this {name}",
    "the {name} of the day",
    "guess what: a {name}",
)
#: Table of each split of the own-data folder: the three formats, and one of each kind of image cell.
OWN_FILES: dict[str, str] = {"train": "train.csv", "val": "val.jsonl", "test": "test.parquet"}
OWN_COLUMNS: dict[str, str] = {"image": "image", "text": "caption", "label": "label", "id": "id"}


def own_picture(label: int, index: int, size: tuple[int, int] = (64, 48)) -> Image.Image:
    """A picture of class ``label``: a figure of the class's colour on a grey background; its position,
    size and the background's shade vary with ``index`` (nuisances, independent of the class)."""
    width, height = size
    shade = 90 + (37 * index) % 80
    img = Image.new("RGB", size, (shade, shade, shade))
    draw = ImageDraw.Draw(img)
    side = min(width, height) // 2 + (index % 3) * 4
    x0 = (13 * index) % max(1, width - side)
    y0 = (7 * index) % max(1, height - side)
    colour = OWN_COLOURS[label % len(OWN_COLOURS)]
    if index % 2:
        draw.ellipse((x0, y0, x0 + side, y0 + side), fill=colour)
    else:
        draw.rectangle((x0, y0, x0 + side, y0 + side), fill=colour)
    return img


def write_own_dataset(
    root: Path,
    classes: tuple[str, ...] = ("cat", "dog", "bird"),
    n_per_split: int | dict[str, int] = 30,
    label_values: tuple[Any, ...] | None = None,
    faults: bool = False,
) -> dict[str, Any]:
    """Writes a learnable own-data folder: images plus one annotation table per split, in three formats.

    Layout::

        root/images/{train,val}/NNNN.png      the pictures the CSV and JSON lines rows name
        root/train.csv   root/val.jsonl       columns id, image (path relative to root), caption, label
        root/test.parquet                     the same columns, the image as PNG bytes

    Sample ``i`` of a split has class ``i % len(classes)``: its picture is a figure of that class's
    colour (:data:`OWN_COLOURS`) and its caption names the class (:data:`OWN_TEMPLATES`), so either
    modality alone tells the class and every image-text pair is valid. With ``faults``, ``train`` also
    holds one row of each kind the reader skips: an unmapped label, an empty label, a blank caption, a
    missing picture, a path leaving ``root``, an absolute path and a repeated id.

    Args:
        root: the folder to write (``raw_dir``).
        classes: the class names (the ``classes`` parameter).
        n_per_split: good samples per split (an int, or ``{"train": ..., "val": ..., "test": ...}``).
        label_values: the label written for each class (default: the class names themselves, so no
            ``label_map`` is needed); e.g. ``(0, 1, 2)`` with ``label_map="0:cat,1:dog,2:bird"``.
        faults: plant the faulty rows in ``train``.

    Returns:
        ``{"raw_dir": root, "prepare": {the PrepareConfig parameters that convert it}, "splits": {split:
        {"records", "labels" (id -> label index), "texts", "undecodable", "skips"}}}`` (as the other writers).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = Path(root)
    values = tuple(label_values) if label_values is not None else tuple(classes)
    assert len(values) == len(classes), "one label value per class"
    sizes = n_per_split if isinstance(n_per_split, dict) else dict.fromkeys(OWN_FILES, n_per_split)
    planted = _Planted(root, tuple(OWN_FILES))
    for split, table in OWN_FILES.items():
        rows: list[dict[str, Any]] = []
        for i in range(sizes[split]):
            label = i % len(classes)
            sample_id = f"{split}{i:04d}"
            text = OWN_TEMPLATES[(i // len(classes)) % len(OWN_TEMPLATES)].format(name=classes[label])
            picture = own_picture(label, i)
            if table.endswith(".parquet"):
                buffer = io.BytesIO()
                picture.save(buffer, format="PNG")
                image: Any = buffer.getvalue()
            else:
                image = f"images/{split}/{i:04d}.png"
                (root / image).parent.mkdir(parents=True, exist_ok=True)
                picture.save(root / image)
            rows.append({"id": sample_id, "image": image, "caption": text, "label": values[label]})
            planted.record(split, sample_id, label, text)
        if faults and split == "train":
            good = f"images/{split}/0000.png"
            for reason, row in (
                ("unmapped_label", {"id": "f-unmapped", "image": good, "caption": "a zebra", "label": "zebra"}),
                ("missing_label", {"id": "f-nolabel", "image": good, "caption": "who knows", "label": ""}),
                ("empty_text", {"id": "f-blank", "image": good, "caption": "   ", "label": values[0]}),
                ("missing_image", {"id": "f-lost", "image": "images/gone.png", "caption": "lost", "label": values[0]}),
                ("path_outside_raw_dir", {"id": "f-out", "image": "../outside.png", "caption": "out", "label": values[0]}),
                ("path_outside_raw_dir", {"id": "f-abs", "image": str((root / good).resolve()), "caption": "abs", "label": values[0]}),
                ("duplicate_id", dict(rows[0])),
            ):  # fmt: skip
                rows.append(row)
                planted.skip(split, reason)
        path = root / table
        path.parent.mkdir(parents=True, exist_ok=True)
        if table.endswith(".csv"):
            with open(path, "w", newline="", encoding="utf-8") as f:
                writer = csv.DictWriter(f, fieldnames=list(OWN_COLUMNS.values()))
                writer.writeheader()
                writer.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in rows)
        elif table.endswith(".jsonl"):
            path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        else:
            pq.write_table(pa.Table.from_pylist(rows), path)
    return {
        **planted.as_dict(),
        "prepare": {
            "source": "own",
            "raw_dir": str(root),
            "own_files": ",".join(f"{split}={table}" for split, table in OWN_FILES.items()),
            "classes": ",".join(classes),
            "image_column": OWN_COLUMNS["image"],
            "text_column": OWN_COLUMNS["text"],
            "label_column": OWN_COLUMNS["label"],
            "id_column": OWN_COLUMNS["id"],
        },
    }
