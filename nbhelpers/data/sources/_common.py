"""Parsing helpers shared by the raw-format readers: layout checks, JSON lines, lenient integers, and
the rule that keeps file paths named by a dataset inside the dataset's folder.

Real annotation files are large and occasionally damaged (a blank line, a cut-off row, a label stored
as ``"1.0"``, a line nested thousands of levels deep) or hostile (an image path of ``../../x.png``).
These helpers turn such inputs into counted skips instead of exceptions, so a reader never stops
half-way through a split, never reads outside the dataset and never drops an input without saying why.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from nbhelpers.data.records import SkipCounter


def check_layout(name: str, raw_dir: Path, required: Sequence[str], layout: str) -> None:
    """Checks that every path of ``required`` exists under ``raw_dir``.

    Args:
        name: the source name, for the message.
        raw_dir: the dataset's root folder.
        required: paths relative to ``raw_dir``; a trailing ``/`` means a folder, otherwise a file.
        layout: a short description of the expected layout, quoted in the message.

    Raises:
        FileNotFoundError: naming every missing path and the expected layout.
    """
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise FileNotFoundError(f"{name}: raw_dir {raw_dir} is not a folder. Expected layout:\n{layout}")
    missing = []
    for rel in required:
        path = raw_dir / rel.rstrip("/")
        found = path.is_dir() if rel.endswith("/") else path.is_file()
        if not found:
            missing.append(rel)
    if missing:
        raise FileNotFoundError(
            f"{name}: missing {', '.join(missing)} in {raw_dir}. Expected layout:\n{layout}"
        )


def check_split(name: str, split: str, allowed: Sequence[str]) -> None:
    """Raises ``ValueError`` naming the allowed splits when ``split`` is not one of them."""
    if split not in allowed:
        raise ValueError(f"{name}: unknown split {split!r}; allowed: {', '.join(allowed)}")


def check_limit(limit: int | None) -> None:
    """Raises ``ValueError`` for a negative ``limit`` (``None`` means no limit, 0 yields nothing)."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be None or a non-negative int, got {limit!r}")


def require_file(name: str, path: Path) -> None:
    """Raises ``FileNotFoundError`` naming ``path`` when it is not a file."""
    if not path.is_file():
        raise FileNotFoundError(f"{name}: missing {path}")


def iter_jsonl(path: Path, skips: SkipCounter) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yields ``(line_number, object)`` for every line of a JSON-lines file that holds a JSON object.

    Lines are read as bytes so that one badly encoded line is a counted ``malformed_row`` rather than a
    ``UnicodeDecodeError`` that ends the file; a line nested too deeply for the parser is counted as
    ``nested_too_deep`` rather than a ``RecursionError``.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
    """
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            where = f"{path.name}:{lineno}"
            if not raw.strip():
                skips.skip("blank_line", where)
                continue
            try:
                obj = json.loads(raw)
            except ValueError:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
                skips.skip("malformed_row", where)
                continue
            except RecursionError:
                skips.skip("nested_too_deep", where)
                continue
            if not isinstance(obj, dict):
                skips.skip("malformed_row", where)
                continue
            yield lineno, obj


def load_json(path: Path) -> Any:
    """Loads a whole JSON file.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: naming the file if it is not valid UTF-8 JSON, or is nested too deeply to parse; a
            damaged annotation file cannot be read row by row, so this is the one failure a reader does
            not turn into a skip.
    """
    with open(path, "rb") as f:
        data = f.read()
    try:
        return json.loads(data)
    except ValueError as err:
        raise ValueError(f"{path} is not a valid JSON file: {err}") from err
    except RecursionError as err:
        raise ValueError(f"{path} is not a valid JSON file: nested too deeply to parse") from err


def path_inside(root: Path, relative: str, skips: SkipCounter, where: str) -> Path | None:
    """``root / relative`` with every symlink resolved, when it stays inside ``root``; else ``None``.

    A dataset file names its images by paths (``img/42.png``) or ids (``<id>.jpg``); either may be
    hostile (``../../x.png``, ``/etc/passwd``, a symlink pointing out of the dataset). Such a path is
    never read: it is counted as ``path_outside_raw_dir``. ``root`` itself is the folder the user gave
    (or the layout's image folder in it), resolved too, so a dataset whose image folder is a symlink to
    another disk still reads.

    Args:
        root: the folder the path must stay in.
        relative: the path as the dataset file spells it.
        skips: receives ``path_outside_raw_dir`` when the path escapes.
        where: the file and line, for the example.
    """
    try:
        base = root.resolve()
        resolved = (root / relative).resolve() if not Path(relative).is_absolute() else None
    except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL byte in the path
        resolved = None
    if resolved is None or not resolved.is_relative_to(base):
        skips.skip("path_outside_raw_dir", f"{where}: {relative!r} is outside {root}")
        return None
    return resolved


def image_inside(root: Path, relative: str, skips: SkipCounter, where: str) -> Path | None:
    """An image file a dataset file names: :func:`path_inside`, then present (else ``missing_image``)."""
    image = path_inside(root, relative, skips, where)
    if image is not None and not image.is_file():
        skips.skip("missing_image", str(image))
        return None
    return image


def as_int(value: Any) -> int | None:
    """Returns ``value`` as an int when it is one in any common spelling (``3``, ``3.0``, ``"3"``,
    ``" 3.0 "``), else ``None``. Booleans are not ints here: a label of ``true`` is not class 1."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            pass
        try:
            number = float(text)
        except ValueError:
            return None
        return int(number) if number.is_integer() else None
    return None


def clean_text(value: Any) -> str:
    """Returns ``value`` stripped when it is a string, else ``""`` (so callers test one thing)."""
    return value.strip() if isinstance(value, str) else ""
