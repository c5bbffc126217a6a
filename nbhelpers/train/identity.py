"""What a run is bound to: its fingerprint, its folder, and the refusal to mix two configs in one folder.

A run's weights are a function of its config, its training data and the files it started from (a CLIP
run's exported weights, a local checkpoint). :class:`RunIdentity` holds all three; its fingerprint (a
SHA-256 of their canonical JSON) is stored in ``runs/<name>/run.json`` when the run starts. Then:

- the same identity in the same folder loads the finished run or resumes an interrupted one (as before);
- with no explicit ``run_name`` the folder is ``<recipe name>-<fingerprint[:8]>``, so another config (say
  ``epochs=20``) trains a new run beside the old one, which stays untouched;
- an explicit ``run_name`` whose ``run.json`` holds another identity is refused before any file is
  touched (:class:`RunMismatchError` lists the differing fields and how to proceed).

Fields that cannot change the weights (where runs go, progress bars, how often to checkpoint, which
splits to score at the end) are left out of the identity: a finished run re-scored on other splits is the
same run.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from accelerate import PartialState

from nbhelpers.config import ConfigError
from nbhelpers.data.shards import shard_stats_path
from nbhelpers.data.taxonomy import LabelSet
from nbhelpers.fileio import read_json, sha256_file, to_jsonable, write_json_atomic

#: The record of what a run (or a stage of one) is bound to.
RUN_RECORD = "run.json"
#: Config fields that cannot change a run's weights: never part of its identity.
BOOKKEEPING_FIELDS = frozenset(
    {
        "preset",
        "run_name",
        "runs_dir",
        "data_dir",  # the data itself is in the identity, by content, not by where it lies
        "progress",
        "report_to",
        "resume",
        "on_busy",
        "checkpoint_every",
        "keep_last",
        "eval_splits",
        "feature_batch_size",
        "feature_cache",
    }
)
#: A run name: letters, digits, ``.``, ``_``, ``-``; starting with a letter or digit; no path separators.
_RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
FINGERPRINT_CHARS = 8


class RunMismatchError(RuntimeError):
    """A run folder holds another config's run; nothing was written.

    Attributes:
        run_dir: the folder.
        differences: ``"field: stored -> now"`` lines.
    """

    def __init__(self, run_dir: Path, differences: Sequence[str], reason: str = "") -> None:
        self.run_dir, self.differences = Path(run_dir), list(differences)
        lines = "\n".join(f"  {d}" for d in self.differences)
        what = (
            reason
            or f"was made by another config; its weights are not this config's. Differences (stored -> now):\n{lines}"
        )
        super().__init__(
            f"{self.run_dir} {what}\nNothing was written. To proceed, either leave run_name empty (every "
            "config gets its own folder, <recipe>-<fingerprint>), choose a new run_name, or delete "
            f"{self.run_dir} to train it again with this config."
        )


def check_run_name(name: str, parameter: str = "run_name") -> str:
    """Returns ``name`` if it is a plain folder name (so the run stays under ``runs_dir``).

    Raises:
        ConfigError: for a path (``../x``, ``/abs``, ``a/b``), ``.``/``..``, or other characters.
    """
    if name and (not _RUN_NAME.fullmatch(name) or name in (".", "..")):
        raise ConfigError(
            f"{parameter}: {name!r} is not a plain run name (letters, digits, '.', '_', '-', starting with a "
            "letter or digit, at most 128 characters; no '/' or '..'): runs stay under runs_dir"
        )
    return name


def file_input(path: str | os.PathLike) -> dict[str, str]:
    """An input file (or folder) as the identity records it: its path and the SHA-256 of its content."""
    return {"path": str(path), "sha256": sha256_file(path)}


def manifest_digest(manifest: Mapping[str, Any], split: str) -> str:
    """A digest of one split of a shard manifest: its shards, counts and each shard's input fingerprint.

    Two builds of the same inputs give the same digest wherever they lie; rebuilt shards from other
    inputs (another seed, a repaired raw file) give another. Shards labelled with a label set of the
    user's own add it (class names and valid-pair classes), so the same samples under other classes are
    other data; the seven merged classes add nothing (their runs keep the fingerprints they had).
    """
    info = manifest.get("splits", {}).get(split, {})
    shard_prints = []
    folder = Path(manifest.get("_dir", "."))
    for shard in info.get("shards", []):
        stats = shard_stats_path(folder / shard)
        shard_prints.append(read_json(stats).get("fingerprint", "") if stats.is_file() else "")
    payload = {
        "source": manifest.get("source"),
        "image_size": manifest.get("image_size"),
        "split": split,
        "shards": info.get("shards", []),
        "num_samples": info.get("num_samples"),
        "class_counts": info.get("class_counts"),
        "shard_fingerprints": shard_prints,
    }
    labels = LabelSet.from_manifest(manifest)
    if not labels.is_default:
        payload.update(labels.to_manifest())
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


@dataclass
class RunIdentity:
    """Everything a run's weights depend on.

    Attributes:
        recipe: the recipe's name.
        config: the config fields that can change the weights (:data:`BOOKKEEPING_FIELDS` left out).
        data: ``{source: digest}`` of the training data (see :func:`manifest_digest`).
        inputs: ``{name: {"path", "sha256"}}`` of the files the run starts from.
    """

    recipe: str
    config: dict[str, Any]
    data: dict[str, str] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        recipe: str,
        config: Mapping[str, Any],
        data: Mapping[str, str] | None = None,
        inputs: Mapping[str, Any] | None = None,
        exclude: Iterable[str] = (),
    ) -> RunIdentity:
        """The identity of ``config`` (a dict of every field), leaving out bookkeeping and ``exclude``."""
        skip = BOOKKEEPING_FIELDS | set(exclude)
        kept = {k: v for k, v in to_jsonable(dict(config)).items() if k not in skip}
        return cls(recipe, kept, dict(data or {}), to_jsonable(dict(inputs or {})))

    def record(self) -> dict[str, Any]:
        """What ``run.json`` holds: the fingerprint and every part it is computed from."""
        body = {"recipe": self.recipe, "config": self.config, "data": self.data, "inputs": self.inputs}
        return {"fingerprint": _digest(body), **body}

    @property
    def fingerprint(self) -> str:
        return self.record()["fingerprint"]

    def folder_name(self, base: str) -> str:
        """``<base>-<fingerprint[:8]>``: the folder of a run with no explicit name."""
        return f"{base}-{self.fingerprint[:FINGERPRINT_CHARS]}"

    def differences(self, stored: Mapping[str, Any]) -> list[str]:
        """``"name: stored -> now"`` for every part that differs from a stored ``run.json``."""
        now = self.record()
        lines = []
        if stored.get("recipe") != now["recipe"]:
            lines.append(f"recipe: {stored.get('recipe')!r} -> {now['recipe']!r}")
        for part in ("config", "data", "inputs"):
            old, new = stored.get(part) or {}, now[part]
            for key in sorted(set(old) | set(new)):
                if old.get(key) != new.get(key):
                    label = key if part == "config" else f"{part}.{key}"
                    lines.append(
                        f"{label}: {_short(old.get(key, '(absent)'))} -> {_short(new.get(key, '(absent)'))}"
                    )
        return lines


def _digest(body: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, allow_nan=True).encode()).hexdigest()


def _short(value: Any) -> str:
    if isinstance(value, Mapping) and "sha256" in value:
        return f"{value.get('path')} (sha256 {str(value['sha256'])[:12]})"
    if isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value):
        return value[:12]
    return repr(value)


def read_run_record(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """A run folder's ``run.json``, or None if it has none."""
    path = Path(run_dir) / RUN_RECORD
    return read_json(path) if path.is_file() else None


def bind_run(run_dir: str | os.PathLike, identity: RunIdentity, *, write: bool = True) -> Path:
    """Binds ``run_dir`` to ``identity``: refuses a folder that holds another run, else records it.

    Args:
        run_dir: the run's folder (created if missing).
        identity: what the run is bound to.
        write: record ``run.json`` (False: only check). Under several processes only the main one
            writes, and every process waits for it before going on.

    Returns:
        ``run_dir`` as a Path.

    Raises:
        RunMismatchError: the folder's ``run.json`` holds another identity, or the folder holds files but no
            ``run.json``; raised before anything is written.
    """
    run_dir = Path(run_dir)
    state = PartialState()
    stored = read_run_record(run_dir)
    occupied = run_dir.is_dir() and any(run_dir.iterdir())
    state.wait_for_everyone()  # every process has read the folder before the main one writes to it
    if stored is not None:
        if stored.get("fingerprint") != identity.fingerprint:
            raise RunMismatchError(run_dir, identity.differences(stored))
        return run_dir
    if occupied:
        raise RunMismatchError(
            run_dir, [], reason=f"holds files but no {RUN_RECORD}: it is not a run this config can continue."
        )
    if write and state.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(run_dir / RUN_RECORD, identity.record())
    state.wait_for_everyone()
    return run_dir


def bind_stage(stage_dir: str | os.PathLike, identity: RunIdentity, *, write: bool = True) -> bool:
    """Binds a stage trained on another stage's output (e.g. a head on frozen features) to its inputs.

    Unlike a run, a stage whose inputs changed is derived state: it is deleted and trained again,
    never reused. Under several processes only the main one deletes and writes; every process waits.

    Returns:
        True if a stale stage was deleted.
    """
    stage_dir = Path(stage_dir)
    state = PartialState()
    write = write and state.is_main_process
    stored = read_run_record(stage_dir)
    stale = (
        stage_dir.is_dir()
        and any(stage_dir.iterdir())
        and (stored is None or stored.get("fingerprint") != identity.fingerprint)
    )
    if stale and write:
        changed = identity.differences(stored) if stored else [f"no {RUN_RECORD}"]
        warnings.warn(
            f"{stage_dir}: its inputs changed ({'; '.join(changed)}); deleting it and training it again",
            stacklevel=2,
        )
        shutil.rmtree(stage_dir)
    if write:
        stage_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(stage_dir / RUN_RECORD, identity.record())
    state.wait_for_everyone()
    return bool(stale)


def local_inputs(**paths: str | os.PathLike | None) -> dict[str, dict[str, str]]:
    """The inputs that are local files or folders (weights a run starts from), by content.

    A name that is not a local path (an open_clip tag, a hub id, empty) is left out: it is part of the
    config already.
    """
    return {name: file_input(path) for name, path in paths.items() if path and Path(path).exists()}


def recorded_input(run_dir: str | os.PathLike, name: str) -> str | None:
    """The local file a bound run started from (``inputs[name]`` of its ``run.json``), checked by content.

    Loading a run whose frozen part lives outside its checkpoints (a fusion head's backbone) reads the
    exact file the run trained on, never whatever the config's ``pretrained`` resolves to today.

    Returns:
        The path, or None if the run records no such input (a tag or hub id: the config names it).

    Raises:
        FileNotFoundError: the recorded file is gone.
        ValueError: the file's content changed since the run started.
    """
    entry = ((read_run_record(run_dir) or {}).get("inputs") or {}).get(name)
    if entry is None:
        return None
    path = Path(entry["path"])
    if not path.exists():
        raise FileNotFoundError(
            errno.ENOENT, f"{run_dir}: the {name} it was trained from is missing", str(path)
        )
    if sha256_file(path) != entry["sha256"]:
        raise ValueError(
            f"{run_dir}: the {name} it was trained from, {path}, changed since (sha256 "
            f"{entry['sha256'][:12]} recorded, {sha256_file(path)[:12]} now): its predictions would not be "
            "this run's; train the run again"
        )
    return str(path)
