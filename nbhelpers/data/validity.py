"""What the shards accept as a label and as a text, and the error that turns a rejection into a counted skip.

The rules, applied when a shard is written and again when it is read (images: :mod:`nbhelpers.data.image`):

- **Label**: an ``int`` (not a ``bool``) in ``0..6``, or ``-1`` (unlabelled) where the source allows it.
  ``True``, ``3.7``, ``"7"``, ``9`` and ``-5`` are rejected (``invalid_label``); nothing is coerced.
- **Text**: a ``str`` that is not blank once stripped (``invalid_text`` otherwise). A lone surrogate
  (U+D800..U+DFFF, the only code points a ``str`` can hold that UTF-8 cannot encode; they come from JSON
  escapes such as ``"\\ud83d"``, half of a cut emoji) is replaced by U+FFFD and the text is counted as
  repaired (``unencodable_text``), so the sample is kept and the repair is visible.
- **Bytes of text**: decoded as UTF-8; a byte sequence that is not UTF-8 is decoded as Windows-1252 (the
  encoding of the stray non-UTF-8 rows in web-scraped dumps), and a byte Windows-1252 leaves undefined as
  Latin-1, so no byte is lost or silently turned into U+FFFD; the caller counts the row as repaired
  (``non_utf8_text``).
"""

from __future__ import annotations

import re
from typing import Any

from nbhelpers.data.taxonomy import NUM_CLASSES, UNLABELLED

_SURROGATE = re.compile("[\ud800-\udfff]")


class Rejected(ValueError):
    """An input that cannot become a sample.

    Attributes:
        reason: the snake_case key it is counted under (``invalid_label``, ``undecodable_image``, ...).
    """

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def valid_label(value: Any, *, allow_unlabelled: bool = True, num_classes: int = NUM_CLASSES) -> int:
    """Returns ``value`` when it is a valid label: an int in ``0..num_classes - 1``, or ``-1`` if allowed.

    Raises:
        Rejected: ``invalid_label``, naming the value, for anything else (bools, floats, strings included).
    """
    if isinstance(value, int) and not isinstance(value, bool):
        if 0 <= value < num_classes or (allow_unlabelled and value == UNLABELLED):
            return value
    allowed = f"an int in 0..{num_classes - 1}" + (f" or {UNLABELLED}" if allow_unlabelled else "")
    raise Rejected("invalid_label", f"label must be {allowed}, got {value!r}")


def valid_text(value: Any) -> tuple[str, bool]:
    """Returns ``(text, repaired)``: ``value`` stripped, lone surrogates replaced by U+FFFD.

    Raises:
        Rejected: ``invalid_text`` if ``value`` is not a string or is blank.
    """
    if not isinstance(value, str):
        raise Rejected("invalid_text", f"text must be a str, got {type(value).__name__}")
    text = value.strip()
    if not text:
        raise Rejected("invalid_text", "text is empty")
    repaired = _SURROGATE.sub("\ufffd", text)
    return repaired, repaired != text


def decode_text(data: bytes) -> tuple[str, bool]:
    """Decodes ``data`` as UTF-8, falling back to Windows-1252 (then Latin-1) for the bytes that are not.

    Returns:
        ``(text, repaired)``, ``repaired`` true when some bytes were not UTF-8.
    """
    parts: list[str] = []
    repaired = False
    while True:
        try:
            parts.append(data.decode("utf-8"))
            return "".join(parts), repaired
        except UnicodeDecodeError as err:
            repaired = True
            parts.append(data[: err.start].decode("utf-8"))
            parts.extend(_cp1252(byte) for byte in data[err.start : err.end])
            data = data[err.end :]


def _cp1252(byte: int) -> str:
    try:
        return bytes([byte]).decode("cp1252")
    except UnicodeDecodeError:  # 0x81, 0x8D, 0x8F, 0x90, 0x9D have no Windows-1252 character
        return chr(byte)
