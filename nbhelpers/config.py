"""Typed, validated configs built from a notebook's parameters, with presets as data.

A notebook's ``parameters`` cell holds literals; the next cell calls ``SomeConfig.from_params(preset,
**params)``. Values come from the preset (``nbhelpers/presets/<section>.json``: ``demo`` runs on a CPU in about a
minute on the synthetic benchmark, ``t4`` is the real recipe for a 15 GB Colab T4, and a section may add
presets named for the reported result they reproduce, with ``t4`` an alias of its headline one); every
parameter that is not ``None`` overrides its preset value. Validation runs before any heavy work, and a bad value stops
with one :class:`ConfigError` that names the parameter and what is allowed.

``None`` in a parameters cell means "the preset's value"; to set a field to ``None`` whatever the preset
says, pass :data:`NULL` (what ``key=null`` on a command line becomes).
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import json
import math
import types
import typing
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any, ClassVar

PRESETS_DIR = "presets"
#: The presets every section has (a section file may leave one out: its config defaults then apply). A
#: section file may add presets of its own, named for what they reproduce (``clip_lora_7class``).
PRESETS = ("demo", "t4")


class _Null(enum.Enum):
    NULL = "null"

    def __repr__(self) -> str:
        return "NULL"


#: A parameter value meaning "``None``, not the preset's value" (``None`` itself takes the preset's).
#: An enum member, so it stays the one object through ``copy`` and ``pickle``.
NULL = _Null.NULL


class ConfigError(ValueError):
    """A parameter value that is not allowed; the message names the parameter and what is allowed."""


@cache
def _section_files() -> dict[str, dict[str, Any]]:
    """``{section: {preset: values or alias}}`` as written in ``nbhelpers/presets/<section>.json``."""
    files = {}
    for file in resources.files("nbhelpers").joinpath(PRESETS_DIR).iterdir():
        if file.name.endswith(".json"):
            files[file.name.removesuffix(".json")] = json.loads(strip_comment_lines(file.read_text()))
    return dict(sorted(files.items()))


@cache
def _presets() -> dict[str, dict[str, dict[str, Any]]]:
    """``{preset: {section: values}}`` from ``nbhelpers/presets/<section>.json`` (``{preset: values}``).

    A preset file is JSON plus whole-line ``//`` comments, where a value's source (a paper's recipe) is cited.
    A preset whose value is a string is an alias of the preset of that name in the same file
    (``"t4": "clip_lora_7class"``): it has the same values, and stays a name of its own in ``config.preset``.

    Raises:
        ValueError: for an alias to a preset its file lacks, an alias cycle, or a value that is neither
            an object nor a preset name.
    """
    presets: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in PRESETS}
    for section, entries in _section_files().items():
        for preset in entries:
            presets.setdefault(preset, {})[section] = resolve_alias(entries, preset, f"{section}.json")
    return presets


def resolve_alias(entries: dict[str, Any], preset: str, where: str = "") -> dict[str, Any]:
    """The values of ``preset`` in one section file's ``entries``, following aliases (string values).

    Raises:
        ValueError: for an alias to a name ``entries`` lacks, an alias cycle, or a value that is neither
            an object nor a string.
    """
    seen = [preset]
    value = entries[preset]
    while isinstance(value, str):
        if value not in entries:
            raise ValueError(f"{where}: preset {seen[-1]!r} is an alias of {value!r}, which the file lacks")
        if value in seen:
            raise ValueError(f"{where}: preset aliases form a cycle: {' -> '.join([*seen, value])}")
        seen.append(value)
        value = entries[value]
    if not isinstance(value, dict):
        raise ValueError(f"{where}: preset {seen[-1]!r} must be an object or the name of another preset")
    return value


def strip_comment_lines(text: str) -> str:
    """``text`` without its whole-line ``//`` comments (line numbers kept, for JSON error messages)."""
    return "\n".join("" if line.lstrip().startswith("//") else line for line in text.split("\n"))


def preset_names(section: str | None = None) -> tuple[str, ...]:
    """The preset names: ``demo``, ``t4``, then the named presets of every section (or of ``section``)."""
    presets = _presets()
    named = sorted(p for p in presets if p not in PRESETS and (section is None or section in presets[p]))
    return (*PRESETS, *named)


def preset_alias(preset: str, section: str) -> str | None:
    """The preset that ``preset`` is an alias of in ``section`` (the end of the chain), or None."""
    entries = _section_files().get(section, {})
    target = preset
    while isinstance(entries.get(target), str) and entries[target] != preset:
        target = entries[target]
    return None if target == preset else target


def preset_values(preset: str, section: str) -> dict[str, Any]:
    """The values of ``section`` (a notebook or recipe) in ``preset`` (an alias: its target's values).

    ``demo`` and ``t4`` exist for every section (empty where the section's file leaves them out); a named
    preset only for the sections whose file defines it.

    Raises:
        ConfigError: if the preset is unknown, or named but not defined for ``section``.
    """
    presets = _presets()
    if preset not in presets:
        raise ConfigError(f"preset: unknown preset {preset!r}; allowed: {', '.join(preset_names())}")
    if preset not in PRESETS and section not in presets[preset]:
        raise ConfigError(
            f"preset: {preset!r} is not a preset of {section!r} (it is one of "
            f"{', '.join(sorted(presets[preset]))}); allowed here: {', '.join(preset_names(section))}"
        )
    return dict(presets[preset].get(section, {}))


def param(
    default: Any = None,
    *,
    choices: tuple | None = None,
    min: float | None = None,  # noqa: A002
    above: float | None = None,
    help: str = "",  # noqa: A002
) -> Any:
    """A config field with its validation rules and help text.

    Args:
        default: the value when neither the preset nor a parameter sets it.
        choices: the allowed values.
        min: an inclusive lower bound.
        above: an exclusive lower bound (``above=0``: strictly positive).
        help: one line for the notebook's parameters cell and error messages.
    """
    kwargs: dict[str, Any] = {"metadata": {"choices": choices, "min": min, "above": above, "help": help}}
    if isinstance(default, (dict, list)):
        kwargs["default_factory"] = lambda: type(default)(default)
    else:
        kwargs["default"] = default
    return field(**kwargs)


def _check_type(name: str, value: Any, hint: Any) -> Any:
    """Checks ``value`` against the annotation ``hint``; returns it (ints accepted for floats)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors: list[ConfigError] = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_type(name, value, arg)
            except ConfigError as err:
                errors.append(err)
        raise (
            errors[0]
            if len(errors) == 1
            else ConfigError(f"{name}: {value!r} has the wrong type; expected {hint}")
        )
    base = origin or hint
    if base is float and isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ConfigError(f"{name}: must be a finite number, got {value!r}")
        return float(value)
    if base is int and isinstance(value, bool):
        raise ConfigError(f"{name}: expected an integer, got {value!r}")
    if base is Any or isinstance(value, base):
        return value
    raise ConfigError(
        f"{name}: expected {getattr(base, '__name__', base)}, got {value!r} ({type(value).__name__})"
    )


@dataclass
class BaseConfig:
    """Common machinery: presets, overrides, validation and serialisation."""

    #: The preset section this config reads (a notebook's or a recipe's name).
    SECTION: ClassVar[str] = ""

    preset: str = param("demo", help="named set of defaults in nbhelpers/presets/")

    @classmethod
    def from_params(cls, preset: str = "demo", **params: Any):
        """Builds a validated config: the preset's values, then every non-``None`` parameter over them.

        A parameter that is ``None`` keeps the preset's value (the notebook convention); one that is
        :data:`NULL` sets the field to ``None`` whatever the preset says.

        Raises:
            ConfigError: for an unknown preset or parameter, or a value that is not allowed.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(params) - names)
        if unknown:
            close = difflib.get_close_matches(unknown[0], sorted(names), n=3, cutoff=0.6)
            # The closest names when there are some (the full list would bury them), else every name.
            hint = f"did you mean {' or '.join(close)}?" if close else f"allowed: {', '.join(sorted(names))}"
            raise ConfigError(f"{unknown[0]}: unknown parameter for {cls.__name__}; {hint}")
        values = preset_values(preset, cls.SECTION)
        bad = sorted(set(values) - names)
        if bad:
            raise ConfigError(f"preset {preset!r} sets {bad[0]!r}, which {cls.__name__} does not have")
        values.update({k: None if v is NULL else v for k, v in params.items() if v is not None})
        values["preset"] = preset
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        """Checks every field's type and rules, then :meth:`check` for rules across fields.

        Raises:
            ConfigError: naming the first parameter that is not allowed.
        """
        check_fields(self)
        self.check()

    def check(self) -> None:
        """Rules across fields; subclasses override."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of the config."""
        return json.loads(json.dumps(dataclasses.asdict(self), default=str))

    def describe(self) -> str:
        """One ``name = value`` line per field, for the notebook to print."""
        return "\n".join(f"{k} = {v!r}" for k, v in self.to_dict().items())


def check_fields(obj: Any, prefix: str = "") -> None:
    """Checks (and normalises: ints to floats) every field of the dataclass ``obj`` against its type and
    its :func:`param` rules.

    Args:
        obj: a dataclass instance whose fields were made by :func:`param`.
        prefix: put before each field's name in messages (``"method_kwargs."``: a nested parameter).

    Raises:
        ConfigError: naming the first field (with ``prefix``) whose value is not allowed.
    """
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        name = prefix + f.name
        value = _check_type(name, getattr(obj, f.name), hints[f.name])
        setattr(obj, f.name, value)
        choices, low = f.metadata.get("choices"), f.metadata.get("min")
        if choices is not None and value is not None and value not in choices:
            raise ConfigError(f"{name}: {value!r} is not allowed; allowed: {', '.join(map(str, choices))}")
        if low is not None and value is not None and value < low:
            raise ConfigError(f"{name}: must be >= {low}, got {value!r}")
        above = f.metadata.get("above")
        if above is not None and value is not None and value <= above:
            raise ConfigError(f"{name}: must be > {above}, got {value!r}")
