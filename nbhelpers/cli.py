"""What every ``python -m nbhelpers.*`` command shares: help from the config classes, one-line errors.

A mistake the user can fix (an unknown parameter, a value that is not allowed, a missing folder) prints
``<prog>: error: <message>`` on stderr and exits with status 2, as argparse does; a bug still shows its
traceback. Parameters are documented once, in the config classes (:func:`nbhelpers.config.param`'s
``help``, the field's type and default, the preset's value): ``--help`` prints them from there, as the
notebooks' parameters cells do.

Typical use in an entry point::

    def main(argv=None):
        with user_errors(PROG):
            config = MyConfig.from_params(**explicit_nulls(parse_pairs(argv)))
            run(config)
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import sys
import types
import typing
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn

from nbhelpers.config import NULL, BaseConfig, ConfigError, preset_values

#: The exit status of a usage error (argparse's).
USAGE_STATUS = 2


class UsageError(ValueError):
    """A command line that cannot be run; the message says what is wrong in one line."""


#: The exceptions :func:`user_errors` turns into one line and status 2: what the user caused and can fix.
USER_ERRORS: tuple[type[BaseException], ...] = (UsageError, ConfigError, FileNotFoundError)


def fail(prog: str, message: object) -> NoReturn:
    """Prints ``<prog>: error: <message>`` on stderr and exits with status 2.

    Raises:
        SystemExit: always, with status :data:`USAGE_STATUS`.
    """
    print(f"{prog}: error: {message}", file=sys.stderr)
    raise SystemExit(USAGE_STATUS)


@contextmanager
def user_errors(prog: str, kinds: tuple[type[BaseException], ...] = USER_ERRORS) -> Iterator[None]:
    """Turns the exceptions ``kinds`` raised inside the block into :func:`fail`; others propagate.

    Args:
        prog: the command's name, as the error line starts (``nbhelpers.train``).
        kinds: the exception types that mean a mistake of the user's (default :data:`USER_ERRORS`).

    Raises:
        SystemExit: with status 2 for one of ``kinds``.
    """
    try:
        yield
    except kinds as err:
        message = str(err) or type(err).__name__  # an exception raised with no message still says what
        fail(prog, message)


def parse_value(text: str) -> Any:
    """``text`` as a JSON literal if it is one, else the string itself.

    >>> parse_value("3"), parse_value("1e-4"), parse_value("true"), parse_value("demo"), parse_value("null")
    (3, 0.0001, True, 'demo', None)
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_pairs(args: Sequence[str]) -> dict[str, Any]:
    """``key=value`` arguments as a dict of :func:`parse_value` values (``key=null``: None).

    Raises:
        UsageError: an argument without ``=`` or with an empty key, or a key given twice.
    """
    pairs: dict[str, Any] = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        key = key.strip()
        if not sep or not key:
            hint = f" (write {arg.lstrip('-')}=VALUE)" if arg.startswith("--") and len(arg) > 2 else ""
            raise UsageError(f"expected key=value, got {arg!r}{hint}")
        if key in pairs:
            raise UsageError(f"{key!r} is given twice")
        pairs[key] = parse_value(value)
    return pairs


def explicit_nulls(params: dict[str, Any]) -> dict[str, Any]:
    """``params`` with each None made :data:`~nbhelpers.config.NULL`: on a command line ``key=null`` means
    None whatever the preset says (in a parameters cell None means "the preset's value")."""
    return {key: NULL if value is None else value for key, value in params.items()}


def check_known(unknown: Sequence[str], names: Sequence[str]) -> None:
    """Refuses the options argparse did not know (``parse_known_args``), naming the closest field.

    Raises:
        UsageError: ``sourse: unknown parameter; did you mean source?`` for the first unknown option.
    """
    if not unknown:
        return
    name = unknown[0].lstrip("-").partition("=")[0]
    close = difflib.get_close_matches(name, list(names), n=3, cutoff=0.6)
    hint = f"did you mean --{' or --'.join(close)}?" if close else "see --help"
    raise UsageError(f"{unknown[0]}: unknown parameter; {hint}")


def first_sentence(doc: str | None, limit: int = 100) -> str:
    """The first sentence of a docstring on one line, cut to ``limit`` characters (for listings)."""
    paragraph = " ".join((doc or "").strip().split("\n\n")[0].split())
    sentence = paragraph.split(". ")[0].rstrip(".")
    return sentence if len(sentence) <= limit else sentence[: limit - 3].rstrip() + "..."


def wants_help(args: Sequence[str]) -> bool:
    """Whether ``-h`` or ``--help`` is among ``args``."""
    return any(arg in ("-h", "--help") for arg in args)


def type_name(hint: Any) -> str:
    """A readable name of a type annotation: ``int``, ``float | None``, ``dict[str, Any]``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " | ".join(type_name(arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return "None"
    if typing.get_origin(hint) is not None or hint is Any:
        return str(hint).replace("typing.", "")
    return getattr(hint, "__name__", str(hint))


@dataclasses.dataclass(frozen=True)
class FieldHelp:
    """One parameter of a config class, as ``--help`` shows it.

    Attributes:
        name: the field's name.
        type: its type, readable (:func:`type_name`).
        default: its value under the preset (else the class default).
        help: its ``help``, with its allowed values or bounds when it has some.
    """

    name: str
    type: str
    default: Any
    help: str


def field_help(config_class: type[BaseConfig], preset: str = "demo") -> list[FieldHelp]:
    """Every field of ``config_class`` with its type, its value under ``preset`` and its help.

    Raises:
        ConfigError: for a preset ``config_class`` does not have.
    """
    hints = typing.get_type_hints(config_class)
    values = preset_values(preset, config_class.SECTION)
    rows = []
    for f in dataclasses.fields(config_class):
        if f.name in values:
            default = values[f.name]
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = preset if f.name == "preset" else f.default
        meta = f.metadata
        notes = []
        if meta.get("choices"):
            notes.append("one of " + ", ".join(map(str, meta["choices"])))
        if meta.get("min") is not None:
            notes.append(f">= {meta['min']:g}")
        if meta.get("above") is not None:
            notes.append(f"> {meta['above']:g}")
        text = meta.get("help", "")
        text = "; ".join(filter(None, [text, *(note for note in notes if note not in text)]))
        rows.append(FieldHelp(f.name, type_name(hints[f.name]), default, text))
    return rows


def format_fields(rows: Sequence[FieldHelp], indent: str = "  ") -> str:
    """``name: type = default`` lines, each followed by its help indented below it (argparse's layout)."""
    lines = []
    for row in rows:
        lines.append(f"{indent}{row.name}: {row.type} = {json.dumps(row.default, default=str)}")
        if row.help:
            lines.append(f"{indent}    {row.help}")
    return "\n".join(lines)


def config_help(config_class: type[BaseConfig], preset: str = "demo") -> str:
    """The parameters section of a command's ``--help``: every field under ``preset``'s values."""
    header = f"parameters (defaults: preset {preset}'s values; key=null sets a field to None):"
    return f"{header}\n{format_fields(field_help(config_class, preset))}"
