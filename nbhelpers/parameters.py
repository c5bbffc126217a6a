"""A notebook's config from its parameters: every config field is a parameter, and no other name is.

A notebook's ``parameters`` cell assigns the few fields of its config class that people turn (its knobs;
``None``: the preset's value), :data:`OVERRIDES` (``overrides = {}``: a dict of any other field -> value)
and its few notebook-only parameters; its first line starts with :data:`PARAMETERS_MARKER`. Any field may
still be set at the top level, e.g. with ``papermill -p any_field value``. The next cell calls
:func:`notebook_config`, which builds the validated config from the notebook's globals and stops on any
name the parameters could not mean: a misspelling typed into the parameters cell, passed with
``papermill -p`` (which papermill itself only warns about before running the whole notebook with the
preset's values) or used as a key of ``overrides``; and on a field set both at the top level and in
``overrides``.

The names to check come from IPython's input history (``In``), not from the globals, so the variables
that later cells define never raise a false alarm when the config cell is run again: the latest run of
the parameters cell, plus every cell papermill injected after it (first line exactly ``# Parameters``).
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

from nbhelpers.config import BaseConfig, ConfigError

C = TypeVar("C", bound=BaseConfig)

#: The first line of every notebook's own parameters cell starts with this.
PARAMETERS_MARKER = "# Parameters:"
#: The whole first line of the cell papermill injects after the parameters cell.
INJECTED_MARKER = "# Parameters"
#: The parameter holding ``{field: value}`` for the fields the parameters cell does not list.
OVERRIDES = "overrides"


def field_names(config_class: type[BaseConfig]) -> tuple[str, ...]:
    """The config fields of ``config_class``, in declaration order (``preset`` first)."""
    return tuple(f.name for f in dataclasses.fields(config_class))


def _first_line(source: str) -> str:
    return source.lstrip("\n").split("\n", 1)[0].rstrip()


def parameter_sources(history: Sequence[str]) -> list[str]:
    """The executed cells that set this run's parameters, oldest first.

    Args:
        history: the sources of the executed cells in execution order (IPython's ``In``).

    Returns:
        The latest run of the notebook's parameters cell (first line starting with
        :data:`PARAMETERS_MARKER`) followed by every cell papermill injected after it; with no run of
        the parameters cell, every injected cell.
    """
    start = 0
    for i, source in enumerate(history):
        if _first_line(source).startswith(PARAMETERS_MARKER):
            start = i
    found = []
    for i, source in enumerate(history[start:], start):
        line = _first_line(source)
        if line == INJECTED_MARKER or (i == start and line.startswith(PARAMETERS_MARKER)):
            found.append(source)
    return found


def _target_names(target: ast.expr) -> Iterable[str]:
    if isinstance(target, ast.Name):
        yield target.id
    elif isinstance(target, (ast.Tuple, ast.List)):
        for element in target.elts:
            yield from _target_names(element)
    elif isinstance(target, ast.Starred):
        yield from _target_names(target.value)


def assigned_names(source: str) -> list[str]:
    """The names a cell assigns at its top level (``x = ...``, ``x: int = ...``, ``x += ...``), in order.

    A cell that does not parse assigns nothing: the kernel has already stopped on its syntax error.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    names: list[str] = []
    for node in tree.body:
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            targets = [node.target]
        for target in targets:
            names.extend(n for n in _target_names(target) if n not in names)
    return names


def _closest(name: str, allowed: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, sorted(allowed), n=3)
    return f"{name} (closest: {', '.join(close)})" if close else f"{name} (no close name)"


def check_parameter_names(
    config_class: type[BaseConfig], history: Sequence[str], *, extra: Iterable[str] = ()
) -> list[str]:
    """Stops on a parameter that is neither a field of ``config_class``, :data:`OVERRIDES` nor in ``extra``.

    Args:
        config_class: the notebook's config class.
        history: the sources of the executed cells in execution order (IPython's ``In``).
        extra: the notebook-only parameters (not config fields) its parameters cell may set.

    Returns:
        The names this run's parameters set (:func:`parameter_sources`), in order.

    Raises:
        ConfigError: naming every unknown parameter and, for each, the closest allowed names.
    """
    allowed = set(field_names(config_class)) | {OVERRIDES} | set(extra)
    assigned: list[str] = []
    for source in parameter_sources(history):
        assigned.extend(n for n in assigned_names(source) if n not in assigned)
    unknown = [n for n in assigned if n not in allowed]
    if not unknown:
        return assigned
    plural = "s" if len(unknown) > 1 else ""
    raise ConfigError(
        f"{'; '.join(_closest(n, allowed) for n in unknown)}: unknown parameter{plural} for "
        f"{config_class.__name__} (set in the parameters cell or with papermill -p); "
        f"allowed: {', '.join(sorted(allowed))}"
    )


def parse_overrides(value: Any) -> dict[str, Any]:
    """The :data:`OVERRIDES` parameter as a dict.

    Args:
        value: a mapping, ``None`` (no overrides), or its text: a Python or JSON dict literal, as
            ``papermill -p overrides '{"epochs": 2}'`` passes it (``-y 'overrides: {epochs: 2}'`` passes a
            dict).

    Raises:
        ConfigError: if ``value`` is not a dict of field name -> value.
    """
    if value is None:
        return {}
    if isinstance(value, str):
        text = value
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            try:
                value = json.loads(text)
            except ValueError:
                value = text
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise ConfigError(
            f'{OVERRIDES}: expected a dict of field name -> value, e.g. {{"weight_decay": 0.1}}, got {value!r}'
        )
    return dict(value)


def check_overrides(
    config_class: type[BaseConfig], overrides: Mapping[str, Any], parameters: Mapping[str, Any]
) -> None:
    """Stops on a key of ``overrides`` that is not a field, on ``preset``, and on a field set twice.

    Args:
        config_class: the notebook's config class.
        overrides: the parsed :data:`OVERRIDES` (:func:`parse_overrides`).
        parameters: the fields set at the top level (a ``None`` value sets nothing: the preset's value).

    Raises:
        ConfigError: naming every unknown key with the closest field names; or naming the fields set both
            at the top level and in ``overrides`` (with a value that is not ``None``).
    """
    fields = [n for n in field_names(config_class) if n != "preset"]
    if "preset" in overrides:
        raise ConfigError(f"preset: set it as a parameter (preset = ...), not in {OVERRIDES}")
    unknown = [k for k in overrides if k not in fields]
    if unknown:
        plural = "s" if len(unknown) > 1 else ""
        raise ConfigError(
            f"{'; '.join(_closest(k, fields) for k in unknown)}: unknown key{plural} in {OVERRIDES} for "
            f"{config_class.__name__} (every key must be one of its fields); allowed: {', '.join(sorted(fields))}"
        )
    twice = [k for k, v in overrides.items() if v is not None and parameters.get(k) is not None]
    if twice:
        details = "; ".join(
            f"{k} = {parameters[k]!r} and {OVERRIDES}[{k!r}] = {overrides[k]!r}" for k in twice
        )
        raise ConfigError(
            f"{', '.join(twice)}: set both as a parameter and in {OVERRIDES} ({details}); set each field in "
            "one place"
        )


def notebook_config(
    config_class: type[C],
    namespace: Mapping[str, Any],
    *,
    extra: Iterable[str] = (),
    history: Sequence[str] | None = None,
) -> C:
    """The validated config of a notebook from its parameters (its globals).

    The fields set at the top level and the items of ``namespace["overrides"]`` are passed to
    ``config_class.from_params(preset, ...)``; ``None`` (or a field set nowhere) takes the preset's value,
    :data:`~nbhelpers.config.NULL` sets ``None``, and ``preset`` itself defaults to the field's default.
    Before that, the parameter names are checked (:func:`check_parameter_names`) against the fields,
    :data:`OVERRIDES` and ``extra``, and the overrides against the fields (:func:`check_overrides`).

    With a history, only the names this run's parameters set (the latest run of the parameters cell and
    papermill's injected cells after it) are read from ``namespace``, so a variable of a later cell that
    happens to share a field's name never slips into the config when the config cell runs again.

    Args:
        config_class: the notebook's config class.
        namespace: the notebook's globals (``globals()``).
        extra: the notebook-only parameters (not config fields), e.g. ``("compare_modes",)``.
        history: the sources of the executed cells in execution order; default: ``namespace["In"]``
            (IPython's input history). Without one (outside IPython) the names are not checked and every
            field present in ``namespace`` is read.

    Returns:
        The config, validated.

    Raises:
        ConfigError: for an unknown or misspelled parameter or key of ``overrides`` (naming the closest
            allowed names), a field set both at the top level and in ``overrides``, an unknown preset, or a
            value that is not allowed.
    """
    extra = tuple(extra)
    names = field_names(config_class)
    clash = sorted(set(extra) & (set(names) | {OVERRIDES}))
    if clash:
        raise ValueError(
            f"extra: {clash[0]!r} is a field of {config_class.__name__} or {OVERRIDES}, not a notebook-only name"
        )
    if OVERRIDES in names:
        raise ValueError(
            f"{config_class.__name__} has a field named {OVERRIDES!r}, the parameter of the rest"
        )
    if history is None:
        history = namespace.get("In")
    readable: Iterable[str] = namespace
    if history is not None:
        assigned = check_parameter_names(config_class, history, extra=extra)
        # A kernel that keeps no history of the cells it ran (nbval runs them with store_history=False)
        # records no parameters cell: then every field in the namespace is a parameter, as outside IPython.
        if parameter_sources(history):
            readable = assigned
    given = {name: namespace[name] for name in readable if name in namespace}
    preset = given.get("preset")
    if preset is None:
        preset = next(f.default for f in dataclasses.fields(config_class) if f.name == "preset")
    values = {name: given[name] for name in names if name != "preset" and name in given}
    overrides = parse_overrides(given.get(OVERRIDES))
    check_overrides(config_class, overrides, values)
    for name, value in overrides.items():
        if value is not None:
            values[name] = value
    return config_class.from_params(preset, **values)
