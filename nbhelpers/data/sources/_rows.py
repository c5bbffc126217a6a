"""Rows with image, text and label columns, turned into records: what the ``hf`` and ``own`` sources share.

A Hugging Face dataset and a user's own annotation files (CSV, JSON lines, parquet) are both tables: one
row per sample, with a column holding the image, one the text, one the label and optionally one an id.
The two sources differ only in where the rows come from; this module turns rows into
:class:`~nbhelpers.data.records.Record` objects by one rule, and parses the parameters that describe
the rows (columns, label map, split map, class names) from the literal values a notebook or a command
line can pass.

An image cell may be:

- a file path relative to the dataset's folder (never absolute, never leaving it: ``path_outside_raw_dir``);
- encoded image bytes (a parquet ``binary`` column);
- a ``datasets`` ``Image`` value read with ``decode=False`` (``{"bytes": ..., "path": ...}``), or the same
  struct as ``datasets`` writes it to parquet; a value with only a path follows the path rule, except
  that an absolute path inside one of the source's ``trusted_roots`` (the ``datasets`` and hub caches,
  where ``datasets`` itself extracts images) is accepted;
- a PIL image.

Labels are looked up in a label map by their *key*: integers in any common spelling (``1``, ``1.0``,
``"1"``) become ``"1"``, booleans ``"true"``/``"false"``, strings are stripped. A map's own keys are
normalised the same way, so ``{"1": "Hate"}`` matches a parquet ``int64`` 1, a CSV ``"1"`` and a JSON
``1.0`` alike.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from nbhelpers.data.image import decode_rgb
from nbhelpers.data.records import ImageRef, Record, SkipCounter
from nbhelpers.data.sources._common import as_int, clean_text, image_inside
from nbhelpers.data.taxonomy import UNLABELLED, LabelSet

#: What a split name written to the shards may hold: shard files are ``{split}-NNNNN.tar`` and sample
#: keys ``{source}_{split}_{id}``, so no ``-`` (it would make one split's shards look like another's),
#: no ``.`` and no ``/``.
SPLIT_NAME = re.compile(r"^[A-Za-z0-9_]+$")
#: The label map target meaning "no label" (written as -1; the loader drops such samples).
UNLABELLED_NAME = "unlabelled"


@dataclass(frozen=True)
class Row:
    """One row of a table.

    Attributes:
        number: its position in the split's table or file (the sample id when there is no id column).
        where: the file and line, or split and index, for skip examples.
        values: the row's cells by column name.
    """

    number: int
    where: str
    values: Mapping[str, Any]


@dataclass(frozen=True)
class RowSpec:
    """How the rows of a table become records.

    Attributes:
        source: the source name written into each record (``hf`` or ``own``).
        image_column, text_column, label_column: the columns holding the image, the text and the label.
        id_column: the column holding a unique id; empty: the row number.
        label_map: label key (see :func:`label_key`) -> label index in the label set, or -1 (unlabelled).
        image_root: the folder relative image paths are read from (``None``: the table holds no paths).
        trusted_roots: folders an *absolute* image path may point into (``datasets``' own caches).
    """

    source: str
    image_column: str
    text_column: str
    label_column: str
    id_column: str = ""
    label_map: Mapping[str, int] = field(default_factory=dict)
    image_root: Path | None = None
    trusted_roots: tuple[Path, ...] = ()

    @property
    def columns(self) -> tuple[str, ...]:
        """The columns read, without repeats (the id column when set)."""
        names = (self.image_column, self.text_column, self.label_column, self.id_column)
        return tuple(dict.fromkeys(n for n in names if n))

    def with_roots(self, image_root: Path | None, trusted_roots: tuple[Path, ...] = ()) -> RowSpec:
        """This spec reading image paths from ``image_root`` (and absolute ones inside ``trusted_roots``)."""
        return dataclasses.replace(self, image_root=image_root, trusted_roots=trusted_roots)


@dataclass(frozen=True)
class EmbeddedImage:
    """An image held as encoded bytes in a table cell: a picklable callable the shard writer decodes.

    Decoding follows the same rule as image files (:func:`nbhelpers.data.image.decode_rgb`): a cell that
    is not an image, or is truncated or too large, is counted by the writer (``undecodable_image``,
    ``image_too_large``).
    """

    data: bytes
    name: str

    def __call__(self) -> Image.Image:
        return decode_rgb(self.data, self.name)


def check_columns(spec: RowSpec, available: Iterable[str], where: str) -> None:
    """Checks that every column ``spec`` reads is among ``available``.

    Raises:
        ValueError: naming the parameter (``image_column``, ...), the missing column, ``where`` and the
            columns there are.
    """
    available = list(available)
    for param, column in (
        ("image_column", spec.image_column),
        ("text_column", spec.text_column),
        ("label_column", spec.label_column),
        ("id_column", spec.id_column),
    ):
        if column and column not in available:
            raise ValueError(f"{param}: no column {column!r} in {where}; its columns: {', '.join(available)}")


def records_from_rows(
    rows: Iterable[Row],
    split: str,
    spec: RowSpec,
    skips: SkipCounter,
    label_names: Sequence[str] | None = None,
) -> Iterator[Record]:
    """Yields the record of every usable row, in order; every other row is counted in ``skips``.

    Skips: ``missing_id`` (an id column cell that is empty), ``duplicate_id``, ``missing_label`` (an empty
    label cell), ``unmapped_label`` (a label the label map does not name; its examples show distinct labels, with
    their ``ClassLabel`` names), ``empty_text`` (a text that
    is not a string or is blank), ``missing_image`` (an empty image cell, or a path to no file),
    ``path_outside_raw_dir`` (an image path that is absolute or leaves the dataset's folder),
    ``malformed_row`` (an image cell of another type).

    Args:
        rows: the split's rows.
        split: the split name written into the records.
        spec: the columns, label map and image folders.
        skips: receives every skipped row.
        label_names: the names of a ``datasets`` ``ClassLabel`` label column: an integer label the map
            does not name is looked up by its class name too.

    Raises:
        ValueError: if a cell holds an image path and ``spec.image_root`` is ``None`` (no folder to read it
            from), naming ``image_column``.
    """
    seen: set[str] = set()
    for row in rows:
        values = row.values
        if spec.id_column:
            source_id = id_key(values.get(spec.id_column))
            if source_id is None:
                skips.skip("missing_id", row.where)
                continue
        else:
            source_id = str(row.number)
        if source_id in seen:
            skips.skip("duplicate_id", f"{row.where} id {source_id}")
            continue
        seen.add(source_id)

        raw_label = values.get(spec.label_column)
        key = label_key(raw_label)
        if key is None:
            skips.skip("missing_label", row.where)
            continue
        label = _lookup(spec.label_map, key, raw_label, label_names)
        if label is None:
            name = _class_label_name(raw_label, label_names)
            named = "" if name is None else f" (ClassLabel name {name!r})"
            skips.skip("unmapped_label", f"{row.where} label {key!r}{named}", value=name or key)
            continue

        text = clean_text(values.get(spec.text_column))
        if not text:
            skips.skip("empty_text", row.where)
            continue
        image = image_ref(values.get(spec.image_column), spec, skips, row.where)
        if image is None:
            continue
        meta: dict[str, Any] = {"source_label": key}
        if isinstance(image, EmbeddedImage):
            # The shard fingerprint sees no file for an embedded image; its digest makes a changed image
            # rewrite its shard on resume, as a changed file does.
            meta["image_sha1"] = hashlib.sha1(image.data).hexdigest()
        yield Record(
            source=spec.source,
            source_id=source_id,
            split=split,
            text=text,
            label=label,
            image=image,
            meta=meta,
        )


def _lookup(
    label_map: Mapping[str, int], key: str, raw: Any, label_names: Sequence[str] | None
) -> int | None:
    if key in label_map:
        return label_map[key]
    name = _class_label_name(raw, label_names)
    return None if name is None else label_map.get(label_key(name) or "")


def _class_label_name(raw: Any, label_names: Sequence[str] | None) -> str | None:
    """The ``ClassLabel`` name of an integer label, or ``None`` (no names, or not one of their indices)."""
    index = as_int(raw)
    if label_names is not None and index is not None and 0 <= index < len(label_names):
        return label_names[index]
    return None


def image_ref(value: Any, spec: RowSpec, skips: SkipCounter, where: str) -> ImageRef | None:
    """The image of a cell (see the module docstring), or ``None`` with the reason counted in ``skips``.

    Raises:
        ValueError: for a relative path when ``spec.image_root`` is ``None``, naming ``image_column``.
    """
    if isinstance(value, Mapping):  # a datasets Image value: bytes when embedded, else a path
        data, path = value.get("bytes"), value.get("path")
        value = data if data else path
    if isinstance(value, bytes | bytearray | memoryview):
        if not len(value):
            skips.skip("missing_image", f"{where}: empty image bytes")
            return None
        return EmbeddedImage(bytes(value), where)
    if isinstance(value, Image.Image):
        buffer = io.BytesIO()
        value.save(buffer, format="PNG")
        return EmbeddedImage(buffer.getvalue(), where)
    if value is None or (isinstance(value, str) and not value.strip()):
        skips.skip("missing_image", f"{where}: no image")
        return None
    if not isinstance(value, str):
        skips.skip("malformed_row", f"{where}: image cell of type {type(value).__name__}")
        return None
    return _image_path(value.strip(), spec, skips, where)


def _image_path(path: str, spec: RowSpec, skips: SkipCounter, where: str) -> Path | None:
    if Path(path).is_absolute() and spec.trusted_roots:
        try:
            resolved = Path(path).resolve()
        except (OSError, RuntimeError, ValueError):
            resolved = None
        if resolved is not None and any(resolved.is_relative_to(r.resolve()) for r in spec.trusted_roots):
            if not resolved.is_file():
                skips.skip("missing_image", str(resolved))
                return None
            return resolved
    if spec.image_root is None:
        if Path(path).is_absolute():
            skips.skip("path_outside_raw_dir", f"{where}: {path!r} is outside the dataset")
            return None
        raise ValueError(
            f"image_column: {spec.image_column!r} holds file paths ({path!r} at {where}); set raw_dir to "
            "the folder they are relative to"
        )
    return image_inside(spec.image_root, path, skips, where)


# ------------------------------------------------------------------------------------- label keys and maps


def id_key(value: Any) -> str | None:
    """The id of an id cell: strings stripped as they are (``"01235"`` stays ``"01235"``), integers and
    integral floats in decimal; ``None`` for an empty cell (``None``, NaN, a blank string)."""
    if value is None or isinstance(value, bool) or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def label_key(value: Any) -> str | None:
    """The key a label (or id) cell is looked up by; ``None`` for an empty cell.

    Integers in any spelling (``1``, ``1.0``, ``"1"``, ``" 1.0 "``) -> ``"1"``; booleans -> ``"true"`` /
    ``"false"``; other strings stripped; other floats as Python writes them; ``None``, NaN and blank
    strings -> ``None``.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value != value:  # NaN: pandas' and parquet's empty cell
        return None
    number = as_int(value)
    if number is not None:
        return str(number)
    text = value.strip() if isinstance(value, str) else str(value)
    return text or None


def build_label_map(spec: Mapping[str, str] | None, labels: LabelSet) -> dict[str, int]:
    """Label key -> label index from a map of the user's label values to class names.

    Args:
        spec: the user's label value -> class name (or ``"unlabelled"``); ``None`` or empty: every class
            name is its own label value (a table whose labels are the class names needs no map).
        labels: the label set the class names belong to.

    Raises:
        ValueError: naming ``label_map`` for a class name not in ``labels``, or two values with the same key.
    """
    if not spec:
        return {name: i for i, name in enumerate(labels.names)}
    mapping: dict[str, int] = {}
    for value, name in spec.items():
        key = label_key(value)
        if key is None:
            raise ValueError(f"label_map: a blank label value ({value!r}) cannot be mapped")
        if name == UNLABELLED_NAME:
            index = UNLABELLED
        elif isinstance(name, str) and name in labels.names:
            index = labels.names.index(name)
        else:
            raise ValueError(
                f"label_map: {value!r} maps to {name!r}, which is not a class; classes: "
                f"{', '.join(labels.names)} (or {UNLABELLED_NAME!r})"
            )
        if key in mapping:
            raise ValueError(f"label_map: {value!r} is given twice (as {key!r})")
        mapping[key] = index
    return mapping


# ------------------------------------------------------------------------------- literal parameter forms


def parse_mapping(
    value: str | Mapping[Any, Any], param: str, separators: str = ":", example: str = "0:True/Neutral,1:Hate"
) -> dict[str, str]:
    """A mapping parameter from its literal form.

    Accepted: a dict; a JSON object string (``'{"0": "True/Neutral", "1": "Hate"}'``); a compact string
    ``"0:True/Neutral,1:Hate"`` (one of ``separators`` between key and value; each item is cut at the
    first of them, so keys cannot hold one, nor either side a comma: use the JSON form for those). An
    empty string or dict is an empty mapping. ``example`` is quoted in the message of a malformed item.

    Raises:
        ValueError: naming ``param`` for malformed text, a non-string value, a blank side or a repeated key.
    """
    if isinstance(value, Mapping):
        items = [(str(k) if not isinstance(k, str) else k, v) for k, v in value.items()]
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            return {}
        if text.startswith("{"):
            try:
                loaded = json.loads(text)
            except ValueError as err:
                raise ValueError(f"{param}: not a valid JSON object: {err}") from None
            if not isinstance(loaded, dict):
                raise ValueError(f"{param}: expected a JSON object, got {text!r}")
            items = list(loaded.items())
        else:
            items = []
            for item in text.split(","):
                if not item.strip():
                    continue
                cut = min((item.find(sep) for sep in separators if sep in item), default=-1)
                if cut < 0:
                    spelled = " or ".join(f"key{sep}value" for sep in separators)
                    raise ValueError(f"{param}: {item.strip()!r} is not {spelled} (e.g. {example!r})")
                items.append((item[:cut].strip(), item[cut + 1 :].strip()))
    else:
        raise ValueError(f"{param}: expected a string or a dict, got {type(value).__name__}")
    result: dict[str, str] = {}
    for key, target in items:
        if not isinstance(target, str):
            raise ValueError(f"{param}: the value of {key!r} must be a string, got {target!r}")
        if not key.strip() or not target.strip():
            raise ValueError(f"{param}: blank key or value in {key!r}: {target!r}")
        if key.strip() in result:
            raise ValueError(f"{param}: {key.strip()!r} is given twice")
        result[key.strip()] = target.strip()
    return result


def parse_names(value: str | Sequence[str], param: str) -> tuple[str, ...]:
    """A list-of-names parameter from its literal form: a list, a JSON array string, or ``"a,b,c"``.

    Raises:
        ValueError: naming ``param`` for malformed text, a non-string item or a blank name.
    """
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return ()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except ValueError as err:
                raise ValueError(f"{param}: not a valid JSON array: {err}") from None
            if not isinstance(value, list):
                raise ValueError(f"{param}: expected a JSON array, got {text!r}")
        else:
            value = text.split(",")
    names = []
    for name in value:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"{param}: names must be non-blank strings, got {name!r}")
        names.append(name.strip())
    return tuple(names)


def check_split_name(name: str, param: str) -> str:
    """Returns ``name`` when it can be a split of the shards (:data:`SPLIT_NAME`).

    Raises:
        ValueError: naming ``param`` and what a split name may hold.
    """
    if not SPLIT_NAME.match(name):
        raise ValueError(
            f"{param}: {name!r} cannot name a split of the shards (letters, digits and _ only); "
            "map it to another name"
        )
    return name
