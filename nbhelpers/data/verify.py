"""Checking written shards against their manifest: ``python -m nbhelpers.data.verify DIR``.

``DIR`` is a source's shard folder (holding ``manifest.json``) or a data folder holding several (each
``DIR/<source>/manifest.json``). Every shard of every split is read in full and checked:

- the tar reads to its end (a shard cut short is reported, with how many samples it still holds);
- it holds exactly the number of samples ``sizes.json`` records for it;
- every member is a regular file named ``{key}.jpg``, ``{key}.txt`` or ``{key}.json`` and every sample
  has all three; no key appears twice in the split;
- every ``json`` is an object whose ``label`` is valid (:func:`nbhelpers.data.validity.valid_label`),
  whose ``label_name`` matches it and whose ``split`` is the shard's split;
- every ``jpg`` decodes (:func:`nbhelpers.data.image.decode_rgb`) to the manifest's ``image_size``
  square, and every ``txt`` is non-blank UTF-8;

then each split's sample count and class counts are compared with the manifest's. The report has one
line per shard and per split. The command exits 0 when everything matches, 1 on any mismatch and 2 on a
usage error (no such folder, no manifest in it). Notebook 01 calls :func:`check_shards` at its end.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbhelpers.cli import USAGE_STATUS
from nbhelpers.data.image import decode_rgb
from nbhelpers.data.shards import MANIFEST, SIZES, read_manifest
from nbhelpers.data.tar_samples import MEMBERS, ShardReadError, iter_groups
from nbhelpers.data.taxonomy import SEVEN_CLASSES, LabelSet
from nbhelpers.data.validity import Rejected, valid_label, valid_text
from nbhelpers.fileio import read_json

#: Problems listed per shard before the rest are only counted.
MAX_LISTED = 10
PROG = "nbhelpers.data.verify"


class ShardVerificationError(ValueError):
    """Shards that do not match their manifest; the message is the failing lines of the report.

    Attributes:
        report: the full :class:`Report`.
    """

    def __init__(self, report: Report):
        super().__init__(report.summary() + "\n" + "\n".join(report.failures()))
        self.report = report


@dataclass
class ShardCheck:
    """What one shard holds and what is wrong with it."""

    path: str
    split: str
    expected: int | None
    samples: int = 0
    class_counts: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def line(self) -> str:
        expected = "?" if self.expected is None else self.expected
        head = f"{'ok  ' if self.ok else 'FAIL'}  {self.path}  {self.samples} of {expected} samples"
        listed = self.problems[:MAX_LISTED]
        more = len(self.problems) - len(listed)
        tail = [f"        {p}" for p in listed] + ([f"        ... and {more} more"] if more > 0 else [])
        return "\n".join([head, *tail])


@dataclass
class SplitCheck:
    """A split's totals against the manifest's."""

    source: str
    split: str
    samples: int
    expected: int
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def line(self) -> str:
        head = (
            f"{'ok  ' if self.ok else 'FAIL'}  {self.source}/{self.split}: {self.samples} samples, "
            f"manifest says {self.expected}"
        )
        return "\n".join([head, *(f"        {p}" for p in self.problems)])


@dataclass
class Report:
    """The result of :func:`verify`: one check per shard and per split, and folder-level problems."""

    shards: list[ShardCheck] = field(default_factory=list)
    splits: list[SplitCheck] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and all(c.ok for c in (*self.shards, *self.splits))

    def summary(self) -> str:
        bad_shards = sum(not c.ok for c in self.shards)
        bad_splits = sum(not c.ok for c in self.splits)
        samples = sum(c.samples for c in self.shards)
        if self.ok:
            return (
                f"OK: {len(self.shards)} shards, {len(self.splits)} splits, {samples} samples match "
                "their manifests"
            )
        return (
            f"FAILED: {bad_shards} of {len(self.shards)} shards and {bad_splits} of {len(self.splits)} "
            f"splits do not match their manifests"
        )

    def failures(self) -> list[str]:
        """The lines of what failed: folder problems, then failing shards and splits."""
        return [*self.problems, *(c.line() for c in (*self.shards, *self.splits) if not c.ok)]

    def __str__(self) -> str:
        return "\n".join([*self.problems, *(c.line() for c in (*self.shards, *self.splits)), self.summary()])


def find_manifests(path: str | Path) -> list[Path]:
    """The manifest files of ``path``: its own, or those of its direct sub-folders.

    Raises:
        FileNotFoundError: naming ``path`` if it is not a folder or holds no manifest.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a folder")
    if (path / MANIFEST).is_file():
        return [path / MANIFEST]
    found = sorted(p / MANIFEST for p in path.iterdir() if (p / MANIFEST).is_file())
    if not found:
        raise FileNotFoundError(
            f"no {MANIFEST} in {path} or its sub-folders; build the shards first (notebook 01)"
        )
    return found


def verify(path: str | Path) -> Report:
    """Reads every shard of the manifest(s) in ``path`` and checks it against them.

    Raises:
        FileNotFoundError: if ``path`` holds no manifest (see :func:`find_manifests`).
    """
    report = Report()
    for manifest_file in find_manifests(path):
        _verify_manifest(manifest_file, report)
    return report


def check_shards(path: str | Path) -> Report:
    """:func:`verify`, raising when anything does not match (what notebook 01 runs at its end).

    Raises:
        ShardVerificationError: listing every failing shard and split.
        FileNotFoundError: if ``path`` holds no manifest.
    """
    report = verify(path)
    if not report.ok:
        raise ShardVerificationError(report)
    return report


def _verify_manifest(manifest_file: Path, report: Report) -> None:
    root = manifest_file.parent
    try:
        manifest = read_manifest(manifest_file)
        splits = manifest["splits"]
        source = manifest["source"]
        image_size = manifest["image_size"]
        labels = LabelSet.from_manifest(manifest)
    except (ValueError, KeyError, TypeError) as err:
        report.problems.append(f"FAIL  {manifest_file}: not a readable manifest ({err})")
        return
    try:
        sizes = read_json(root / SIZES)
    except (OSError, ValueError) as err:
        report.problems.append(f"FAIL  {root / SIZES}: cannot read it ({err}); shard counts unchecked")
        sizes = {}
    for split, info in splits.items():
        keys: set[str] = set()
        classes: Counter[str] = Counter()
        samples = 0
        for name in info.get("shards", []):
            check = _verify_shard(root / name, split, sizes.get(name), image_size, keys, labels)
            report.shards.append(check)
            samples += check.samples
            classes.update(check.class_counts)
        expected = info.get("num_samples", 0)
        split_check = SplitCheck(source=source, split=split, samples=samples, expected=expected)
        if samples != expected:
            split_check.problems.append(f"sample count {samples} != manifest's {expected}")
        want = {name: count for name, count in info.get("class_counts", {}).items() if count}
        got = {name: count for name, count in classes.items() if count}
        if got != want:
            differ = sorted(set(got) | set(want))
            split_check.problems.append(
                "class counts differ: "
                + ", ".join(
                    f"{n} {got.get(n, 0)} (manifest {want.get(n, 0)})"
                    for n in differ
                    if got.get(n) != want.get(n)
                )
            )
        report.splits.append(split_check)


def _verify_shard(
    path: Path,
    split: str,
    expected: int | None,
    image_size: int,
    keys: set[str],
    labels: LabelSet = SEVEN_CLASSES,
) -> ShardCheck:
    check = ShardCheck(path=str(path), split=split, expected=expected)
    problems = check.problems
    if expected is None:
        problems.append(f"not listed in {SIZES}")
    try:
        for group in iter_groups(path):
            problems.extend(f"member {name} is not a regular file" for name in group.not_files)
            if not group.members:
                continue
            check.samples += 1
            _check_sample(group.key, group.members, split, image_size, check, labels)
            if group.key in keys:
                problems.append(f"key {group.key} appears twice in split {split}")
            keys.add(group.key)
    except ShardReadError as err:
        state = "missing" if err.missing else f"truncated or unreadable after {check.samples} samples"
        problems.append(f"{state}: {err.detail}")
    if expected is not None and check.samples != expected:
        problems.append(f"holds {check.samples} samples, {SIZES} says {expected}")
    return check


def _check_sample(
    key: str,
    members: dict[str, bytes],
    split: str,
    image_size: int,
    check: ShardCheck,
    labels: LabelSet = SEVEN_CLASSES,
) -> None:
    problems = check.problems
    if "/" in key:
        problems.append(f"key {key} holds a '/'")
    for ext in sorted(members):
        if ext not in MEMBERS:
            problems.append(f"member {key}.{ext}: not one of {', '.join(MEMBERS)}")
    missing = [m for m in MEMBERS if m not in members]
    if missing:
        problems.append(f"sample {key} has no {', '.join(missing)} member")
    if "json" in members:
        _check_json(key, members["json"], split, check, labels)
    if "jpg" in members:
        try:
            image = decode_rgb(members["jpg"], f"{key}.jpg")
        except Rejected as err:
            problems.append(f"{key}.jpg: {err.reason}: {err}")
        else:
            if image.size != (image_size, image_size):
                problems.append(
                    f"{key}.jpg is {image.width}x{image.height}, manifest's image_size is {image_size}"
                )
    if "txt" in members:
        try:
            valid_text(members["txt"].decode("utf-8"))
        except UnicodeDecodeError as err:
            problems.append(f"{key}.txt is not UTF-8: {err}")
        except Rejected as err:
            problems.append(f"{key}.txt: {err}")


def _check_json(
    key: str, data: bytes, split: str, check: ShardCheck, labels: LabelSet = SEVEN_CLASSES
) -> None:
    try:
        meta: Any = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as err:
        check.problems.append(f"{key}.json is not JSON: {err}")
        return
    if not isinstance(meta, dict):
        check.problems.append(f"{key}.json is not an object")
        return
    try:
        label = valid_label(meta.get("label"), num_classes=len(labels))
    except Rejected as err:
        check.problems.append(f"{key}.json: {err}")
        return
    check.class_counts[labels.name(label)] += 1
    if meta.get("label_name") != labels.name(label):
        check.problems.append(
            f"{key}.json: label_name {meta.get('label_name')!r} does not match label {label}"
        )
    if meta.get("split") != split:
        check.problems.append(f"{key}.json: split {meta.get('split')!r}, but the shard is in split {split!r}")


def main(argv: list[str] | None = None) -> int:
    """``python -m nbhelpers.data.verify DIR``: prints the report; returns 0 (all match), 1 or 2 (usage)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        usage=f"python -m {PROG} [-h] [--failures-only] DIR",
        description="Read every shard of a manifest and check counts, labels and images against it.",
    )
    parser.add_argument("dir", help="a source's shard folder (with manifest.json), or a folder of them")
    parser.add_argument("--failures-only", action="store_true", help="print only what failed")
    args = parser.parse_args(argv)
    try:
        report = verify(args.dir)
    except FileNotFoundError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)  # nbhelpers.cli's form, as a status, not an exit
        return USAGE_STATUS
    print("\n".join([*report.failures(), report.summary()]) if args.failures_only else report)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
