"""Writing WebDataset shards and their manifest, atomically and resumably.

Layout written for a source, readable by ``python -m open_clip_train.main --dataset-type webdataset``::

    {out_dir}/{source}/manifest.json       splits -> shards, counts, class counts, skips by reason
    {out_dir}/{source}/sizes.json          shard file name -> sample count (what open_clip_train reads)
    {out_dir}/{source}/{split}-00000.tar   members {key}.jpg, {key}.txt, {key}.json per sample

A split's records are cut into shards of ``shard_size`` *candidate* records in the reader's order, so
shard ``k`` always holds the same inputs whatever happened to the others. Each shard is written under a
temporary name and renamed when complete, together with a small ``.{shard}.stats.json`` sidecar holding
its counts and a fingerprint of its inputs: every record's text, label and metadata, and the name, size
and modification time (in nanoseconds) of its image file. A re-run skips every shard whose tar and
sidecar exist and whose fingerprint matches, without decoding its images; a repaired or replaced image
changes the fingerprint and its shard is written again. (Image contents are not hashed: that would read
the whole dataset on every re-run.)

Every record passes the shards' acceptance rules before it is written (:mod:`nbhelpers.data.validity`
for labels and texts, :mod:`nbhelpers.data.image` for images); a rejected one is skipped and counted
by reason in the manifest's ``skipped``, a repaired one in its ``repaired``.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import multiprocessing.connection
import os
import signal
import string
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import webdataset as wds

from nbhelpers.data.image import encode_jpeg, letterbox, load_rgb
from nbhelpers.data.records import ImageRef, Record, SkipCounter
from nbhelpers.data.taxonomy import SEVEN_CLASSES, LabelSet
from nbhelpers.data.validity import Rejected, valid_label, valid_text
from nbhelpers.fileio import atomic_open, read_json, write_json_atomic
from nbhelpers.progress import Progress

MANIFEST = "manifest.json"
SIZES = "sizes.json"
#: ``manifest.json`` moved aside while a run rewrites shards (the splits it does not write are kept from it).
PREVIOUS_MANIFEST = ".manifest.previous.json"
MANIFEST_VERSION = 1
#: The modification time of every shard member, a whole number of seconds. A whole number keeps each
#: member to one plain 512-byte ustar header (a fractional time, webdataset's default, adds a PAX
#: header of its own to every member: twice the headers to parse when reading), and a fixed one makes a
#: shard's bytes a function of its inputs alone.
MEMBER_MTIME = 0
#: Characters of a source id kept as they are in a sample key; every other one is escaped.
_KEY_SAFE = frozenset(string.ascii_letters + string.digits + "-")
_KEY_ESCAPE = "_"


def encode_id(source_id: str) -> str:
    """``source_id`` spelled with letters, digits, ``-`` and ``_`` only, reversibly.

    WebDataset cuts a member name at its first dot (``{key}.{extension}``) and treats ``/`` as a folder,
    so ids like ``7.1`` cannot be used as they are; mapping every other character to one placeholder
    would make ``7.1`` and ``7_1`` the same key. Instead every character outside ``[A-Za-z0-9-]``,
    the escape ``_`` itself included, becomes ``_`` followed by the two hex digits of each of its UTF-8
    bytes (``7.1`` -> ``7_2e1``, ``7_1`` -> ``7_5f1``): distinct ids always give distinct keys.
    """
    out = []
    for char in source_id:
        if char in _KEY_SAFE:
            out.append(char)
        else:
            out.extend(f"{_KEY_ESCAPE}{byte:02x}" for byte in char.encode("utf-8", "surrogatepass"))
    return "".join(out)


def decode_id(encoded: str) -> str:
    """The source id that :func:`encode_id` spelled as ``encoded``.

    Raises:
        ValueError: if ``encoded`` is not something :func:`encode_id` writes.
    """
    data = bytearray()
    i = 0
    while i < len(encoded):
        digits = encoded[i + 1 : i + 3]
        if encoded[i] == _KEY_ESCAPE and len(digits) == 2 and set(digits) <= set("0123456789abcdef"):
            data.append(int(digits, 16))
            i += 3
        elif encoded[i] in _KEY_SAFE:
            data.extend(encoded[i].encode())
            i += 1
        else:
            raise ValueError(f"not an encoded id: {encoded!r}")
    return data.decode("utf-8", "surrogatepass")


def sample_key(record: Record) -> str:
    """The WebDataset key of ``record``: ``{source}_{split}_{encode_id(source_id)}``, no dot, no slash."""
    return f"{record.source}_{record.split}_{encode_id(record.source_id)}"


def sample_json(record: Record, labels: LabelSet = SEVEN_CLASSES) -> dict[str, Any]:
    """The ``json`` member of a sample: the label, its name in ``labels``, provenance and the source's
    labels (a record's own ``valid_pair`` in ``meta`` wins over its class's)."""
    return {
        "label": record.label,
        "label_name": labels.name(record.label),
        "source": record.source,
        "source_id": record.source_id,
        "split": record.split,
        "valid_pair": labels.is_valid_pair(record.label),
        **record.meta,
    }


@dataclass
class ShardStats:
    """What one shard holds: sample counts by class and the inputs that failed to decode."""

    name: str
    num_samples: int = 0
    class_counts: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    skip_examples: dict[str, list[str]] = field(default_factory=dict)
    fingerprint: str = ""
    repaired: dict[str, int] = field(default_factory=dict)
    repair_examples: dict[str, list[str]] = field(default_factory=dict)


def _fingerprint(records: list[Record], image_size: int, labels: LabelSet = SEVEN_CLASSES) -> str:
    """A digest of what a shard's ``txt`` and ``json`` members hold, of each image file's name, size and
    modification time, and of the image size."""
    digest = hashlib.sha1(str(image_size).encode())
    for r in records:
        try:
            described = sample_json(r, labels)
        except (ValueError, TypeError):  # an invalid label: the record will be rejected, still fingerprinted
            described = {"invalid_label": repr(r.label), "source_id": r.source_id, **r.meta}
        digest.update(
            json.dumps({"text": r.text, **described}, sort_keys=True, default=repr).encode() + b"\n"
        )
        stamp = _image_stamp(r.image)
        if stamp:
            digest.update(stamp.encode("utf-8", "surrogatepass") + b"\n")
    return digest.hexdigest()


def _image_stamp(ref: ImageRef) -> str:
    """``name size mtime_ns`` of an image file (``missing`` if there is none); empty for a drawn image,
    which the record's own fields determine."""
    if callable(ref) and not isinstance(ref, Path):
        return ""
    path = Path(ref)
    try:
        stat = os.stat(path)
    except OSError:
        return f"{path.name} missing"
    return f"{path.name} {stat.st_size} {stat.st_mtime_ns}"


def shard_stats_path(shard: Path) -> Path:
    """The hidden ``.{name}.stats.json`` beside a shard: its counts and its inputs' fingerprint."""
    return shard.with_name(f".{shard.name}.stats.json")


_stats_path = shard_stats_path


def write_shard(
    shard: Path, records: list[Record], image_size: int, labels: LabelSet = SEVEN_CLASSES
) -> ShardStats:
    """Writes ``records`` into the tar ``shard``, atomically; returns its stats.

    Images are decoded, letterboxed to ``image_size`` square and re-encoded as JPEG. A record is skipped
    and counted, by the reason of its :class:`~nbhelpers.data.validity.Rejected` error, when its label
    is invalid (``invalid_label``), its text is not a non-blank string (``invalid_text``), its key was
    already written in this shard (``duplicate_key``), or its image is missing, truncated or not an
    image (``undecodable_image``) or too large (``image_too_large``). A text holding lone surrogates is
    written with U+FFFD in their place and counted in ``repaired`` (``unencodable_text``).
    """
    stats = ShardStats(name=shard.name, fingerprint=_fingerprint(records, image_size, labels))
    skips = SkipCounter()
    classes: Counter[str] = Counter()
    keys: set[str] = set()
    with atomic_open(shard, "wb") as raw:
        # A member name over 100 bytes (a very long source id) still gets a PAX header: tarfile's
        # default format, which webdataset and open_clip_train read.
        sink = wds.TarWriter(raw, encoder=False, mode=0o644, mtime=MEMBER_MTIME)
        for record in records:
            where = f"{record.source} {record.split} id {record.source_id!r}"
            try:
                label = valid_label(record.label, num_classes=len(labels))
                text, repaired = valid_text(record.text)
                key = sample_key(record)
                if key in keys:
                    raise Rejected("duplicate_key", f"key {key} is already in {shard.name}")
                image = letterbox(load_rgb(record.image), image_size)
            except Rejected as err:
                skips.skip(err.reason, f"{where}: {err}")
                continue
            if repaired:
                skips.repair("unencodable_text", f"{where}: lone surrogate replaced by U+FFFD")
            keys.add(key)
            sink.write(
                {
                    "__key__": key,
                    "jpg": encode_jpeg(image),
                    "txt": text.encode("utf-8"),
                    "json": json.dumps(sample_json(record, labels)).encode("utf-8"),
                }
            )
            classes[labels.name(label)] += 1
        sink.close()
    stats.num_samples = sum(classes.values())
    stats.class_counts = dict(classes)
    stats.skipped = dict(skips)
    stats.skip_examples = skips.examples
    stats.repaired = dict(skips.repaired)
    stats.repair_examples = skips.repair_examples
    write_json_atomic(_stats_path(shard), stats)
    return stats


def _complete(shard: Path, fingerprint: str) -> ShardStats | None:
    stats_file = _stats_path(shard)
    if not (shard.is_file() and stats_file.is_file()):
        return None
    try:
        stats = ShardStats(**read_json(stats_file))
    except (ValueError, TypeError):
        return None
    return stats if stats.fingerprint == fingerprint else None


def _unique_keys(records: Iterable[Record], skips: SkipCounter) -> Iterator[Record]:
    """``records`` less any whose sample key an earlier record of the split already has (counted as
    ``duplicate_key``), so no key is written twice in a split, whichever shards the two would go to."""
    seen: set[str] = set()
    for record in records:
        key = sample_key(record)
        if key in seen:
            skips.skip("duplicate_key", f"{record.source} {record.split} id {record.source_id!r}: key {key}")
            continue
        seen.add(key)
        yield record


def _chunks(records: Iterable[Record], size: int) -> Iterator[list[Record]]:
    it = iter(records)
    while chunk := list(islice(it, size)):
        yield chunk


@dataclass
class SplitResult:
    """A written split, as listed in the manifest."""

    shards: list[str]
    num_samples: int
    class_counts: dict[str, int]
    skipped: dict[str, int]
    skip_examples: dict[str, list[str]]
    shard_sizes: dict[str, int]
    resumed_shards: int = 0
    repaired: dict[str, int] = field(default_factory=dict)
    repair_examples: dict[str, list[str]] = field(default_factory=dict)
    #: The reader's distinct skipped values by reason (:attr:`SkipCounter.values`); not in the manifest.
    skip_values: dict[str, list[str]] = field(default_factory=dict)


def write_split(
    records: Iterable[Record],
    out_dir: Path,
    split: str,
    *,
    shard_size: int,
    image_size: int,
    reader_skips: SkipCounter | None = None,
    workers: int = 1,
    progress: bool = True,
    labels: LabelSet = SEVEN_CLASSES,
) -> SplitResult:
    """Writes one split as shards ``{split}-{k:05d}.tar`` under ``out_dir``, resuming complete ones.

    Args:
        records: the split's records in a deterministic order.
        out_dir: the source's shard folder (created if missing).
        split: the split name, used in the shard names.
        shard_size: candidate records per shard.
        image_size: side of the square JPEGs written.
        reader_skips: what the reader skipped; merged into the split's counts once ``records`` is consumed.
        workers: processes writing shards in parallel (records must be picklable).
        progress: show a bar (or, headless, a final line; ``nbhelpers.progress``).
        labels: the classes the records' labels index (default: the seven merged classes).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    skips = SkipCounter()
    results: dict[int, ShardStats] = {}
    resumed = 0
    pending = []
    bar = Progress(desc=f"{split} shards", unit="shard", enabled=progress)
    with _pool(workers) as pool:
        for k, chunk in enumerate(_chunks(_unique_keys(records, skips), shard_size)):
            shard = out_dir / f"{split}-{k:05d}.tar"
            done = _complete(shard, _fingerprint(chunk, image_size, labels))
            if done is not None:
                results[k] = done
                resumed += 1
                bar.update()
                continue
            _retire_manifest(out_dir)
            pending.append((k, pool.submit(write_shard, shard, chunk, image_size, labels)))
            # Bound the chunks in flight: records may hold their images' bytes (parquet, datasets).
            while len(pending) > 2 * max(workers, 1):
                k_done, future = pending.pop(0)
                results[k_done] = future.result()
                bar.update()
        for k, future in pending:
            results[k] = future.result()
            bar.update()
    bar.close()
    n_shards = len(results)
    _remove_stale(out_dir, split, n_shards)
    if reader_skips is not None:
        skips.merge(reader_skips)
    classes: Counter[str] = Counter()
    names, sizes = [], {}
    for k in range(n_shards):
        stats = results[k]
        classes.update(stats.class_counts)
        skips.merge(
            SkipCounter.from_parts(stats.skipped, stats.skip_examples, stats.repaired, stats.repair_examples)
        )
        names.append(stats.name)
        sizes[stats.name] = stats.num_samples
    return SplitResult(
        shards=names,
        num_samples=sum(sizes.values()),
        class_counts={name: classes[name] for name in (*labels.names, "unlabelled") if classes[name]},
        skipped=dict(sorted(skips.items())),
        skip_examples=skips.examples,
        shard_sizes=sizes,
        resumed_shards=resumed,
        repaired=dict(sorted(skips.repaired.items())),
        repair_examples=skips.repair_examples,
        skip_values=skips.values,
    )


def _retire_manifest(out_dir: Path) -> None:
    """Moves ``manifest.json`` aside (and drops ``sizes.json``) before a shard is rewritten: a stopped
    run must not leave a manifest describing shards that changed. :func:`write_manifest` still reads
    the splits it keeps from the moved file."""
    if (out_dir / MANIFEST).is_file():
        os.replace(out_dir / MANIFEST, out_dir / PREVIOUS_MANIFEST)
    (out_dir / SIZES).unlink(missing_ok=True)


def _pool(workers: int) -> ProcessPoolExecutor | _Inline:
    """``workers`` processes that die with this one, or the inline stand-in for a single worker.

    Left by an exception (a stop: Ctrl-C, SIGTERM), the pool finishes the shards being written and drops
    the queued ones, so the folder holds only complete shards.
    """
    if workers <= 1:
        return _Inline()
    context = multiprocessing.get_context()
    return _StoppablePool(
        max_workers=workers,
        mp_context=context,
        initializer=die_with_parent,
        initargs=(os.getpid(), context.get_start_method() == "fork"),
    )


class _StoppablePool(ProcessPoolExecutor):
    def __exit__(self, exc_type, exc, tb):
        self.shutdown(wait=True, cancel_futures=exc_type is not None)
        return False


def _remove_stale(out_dir: Path, split: str, n_shards: int) -> None:
    """Deletes shards of ``split`` beyond ``n_shards`` left by an earlier, larger run, and temporary
    files that an interrupted run left behind."""
    for tmp in out_dir.glob(f".{split}-*.tmp"):
        tmp.unlink(missing_ok=True)
    for path in out_dir.glob(f"{split}-*.tar"):
        index = path.stem.rsplit("-", 1)[-1]
        if index.isdigit() and int(index) >= n_shards:
            path.unlink()
            _stats_path(path).unlink(missing_ok=True)


#: Seconds between two checks of the parent by a forked pool worker's watchdog thread.
PARENT_POLL_S = 0.5
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def die_with_parent(parent_pid: int, forked: bool) -> None:
    """Makes this process (a shard-writing pool worker) exit when its parent dies.

    A pool worker blocks on its task queue forever once the parent is gone, so a parent killed with
    ``SIGKILL`` (which runs no clean-up) would leave its workers alive. On Linux the kernel kills the
    worker with the parent (``PR_SET_PDEATHSIG``); everywhere, a daemon thread ends the worker at once
    when the parent is gone. A worker ended this way leaves at most a dot-prefixed temporary shard,
    which the next run removes.

    Args:
        parent_pid: the process that created the pool (``os.getpid()`` there).
        forked: whether the pool forks its workers from the parent (start method ``fork``); else they
            come from a fork server or are spawned, and the parent is watched through
            :func:`multiprocessing.parent_process`.
    """
    if sys.platform.startswith("linux"):
        _set_parent_death_signal(signal.SIGKILL)
    # The parent decides when to stop (it finishes the shards under way): Ctrl-C in a terminal reaches
    # every process of the group, and a worker stopped mid-shard would break the pool. SIGTERM gets its
    # default back from any handler a forked worker inherited (the pool ends broken workers with it).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if forked and os.getppid() != parent_pid:  # the parent died before the signal was set
        os._exit(1)
    threading.Thread(
        target=_watch_parent, args=(parent_pid, forked), name="parent-watchdog", daemon=True
    ).start()


def _set_parent_death_signal(signum: int) -> None:
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0)
    except (OSError, AttributeError):  # no prctl in this libc: the watchdog thread still runs
        pass


def _watch_parent(parent_pid: int, forked: bool) -> None:
    if forked:
        # An orphan is re-parented, so a changed parent id means the parent died. (The parent's
        # sentinel pipe is no use here: workers forked later hold its write end open.)
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_S)
    else:
        parent = multiprocessing.parent_process()
        if parent is None:
            return
        multiprocessing.connection.wait([parent.sentinel])  # ready when the parent is gone
    os._exit(1)


class _Inline:
    """A stand-in for a process pool that runs each task at once, in this process."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def submit(self, fn, *args):
        return _Done(fn(*args))


class _Done:
    def __init__(self, value):
        self._value = value

    def result(self):
        return self._value


def write_manifest(
    source_dir: Path,
    source: str,
    image_size: int,
    splits: dict[str, SplitResult],
    config: dict[str, Any],
    labels: LabelSet = SEVEN_CLASSES,
) -> dict[str, Any]:
    """Writes ``manifest.json`` and ``sizes.json`` for a source's shards; returns the manifest.

    Raises:
        ValueError: if the folder's earlier splits were written with another label set (rewrite them all).
    """
    source_dir = Path(source_dir)
    manifest_file = source_dir / MANIFEST
    retired = source_dir / PREVIOUS_MANIFEST  # the manifest before this run rewrote a shard
    previous_file = manifest_file if manifest_file.is_file() else retired
    previous = read_json(previous_file) if previous_file.is_file() else {}
    all_splits = dict(previous.get("splits", {}))
    kept = [name for name in all_splits if name not in splits]
    if kept and LabelSet.from_manifest(previous) != labels:
        raise ValueError(
            f"{manifest_file}: splits {kept} were written with the classes "
            f"{list(LabelSet.from_manifest(previous).names)}, not {list(labels.names)}; write every split again"
        )
    for name, result in splits.items():
        all_splits[name] = {
            "shards": result.shards,
            "num_samples": result.num_samples,
            "class_counts": result.class_counts,
            "skipped": result.skipped,
            "skip_examples": result.skip_examples,
            "repaired": result.repaired,
            "repair_examples": result.repair_examples,
        }
    manifest = {
        "version": MANIFEST_VERSION,
        "source": source,
        "image_size": image_size,
        "members": ["jpg", "txt", "json"],
        **labels.to_manifest(),
        "config": config,
        "splits": all_splits,
    }
    sizes = {}
    for name, split in all_splits.items():
        if name in splits:
            sizes.update(splits[name].shard_sizes)
        else:  # a split this call did not write: its shards' own stats
            for shard in split["shards"]:
                sizes[shard] = read_json(_stats_path(source_dir / shard))["num_samples"]
    write_json_atomic(source_dir / SIZES, sizes)
    write_json_atomic(manifest_file, manifest)
    retired.unlink(missing_ok=True)
    return manifest


def read_manifest(path: Path | str) -> dict[str, Any]:
    """Reads a manifest (a ``manifest.json`` file, or the folder holding it).

    Raises:
        FileNotFoundError: if there is no manifest there.
    """
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no shard manifest at {path}; build the shards first (notebook 01)")
    manifest = read_json(path)
    manifest["_dir"] = str(path.parent)
    return manifest
