"""A notebook's config from its parameters: every config field is a parameter, and no other name is.

A notebook's ``parameters`` cell assigns every field of its config class (``None``: the preset's value)
and its few notebook-only parameters; its first line starts with :data:`PARAMETERS_MARKER`. The next
cell calls :func:`notebook_config`, which builds the validated config from the notebook's globals and
stops on any name the parameters could not mean: a misspelling typed into the parameters cell, or one
passed with ``papermill -p``, which papermill itself only warns about before running the whole notebook
with the preset's values.

The names to check come from IPython's input history (``In``), not from the globals, so the variables
that later cells define never raise a false alarm when the config cell is run again: the latest run of
the parameters cell, plus every cell papermill injected after it (first line exactly ``# Parameters``).
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

from nbhelpers.config import BaseConfig, ConfigError

C = TypeVar("C", bound=BaseConfig)

#: The first line of every notebook's own parameters cell starts with this.
PARAMETERS_MARKER = "# Parameters:"
#: The whole first line of the cell papermill injects after the parameters cell.
INJECTED_MARKER = "# Parameters"


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


def check_parameter_names(
    config_class: type[BaseConfig], history: Sequence[str], *, extra: Iterable[str] = ()
) -> None:
    """Stops on a parameter that is neither a field of ``config_class`` nor in ``extra``.

    Args:
        config_class: the notebook's config class.
        history: the sources of the executed cells in execution order (IPython's ``In``).
        extra: the notebook-only parameters (not config fields) its parameters cell may set.

    Raises:
        ConfigError: naming every unknown parameter and, for each, the closest allowed names.
    """
    allowed = set(field_names(config_class)) | set(extra)
    unknown: list[str] = []
    for source in parameter_sources(history):
        unknown.extend(n for n in assigned_names(source) if n not in allowed and n not in unknown)
    if not unknown:
        return
    parts = []
    for name in unknown:
        close = difflib.get_close_matches(name, sorted(allowed), n=3)
        parts.append(f"{name} (closest: {', '.join(close)})" if close else f"{name} (no close name)")
    plural = "s" if len(unknown) > 1 else ""
    raise ConfigError(
        f"{'; '.join(parts)}: unknown parameter{plural} for {config_class.__name__} (set in the parameters "
        f"cell or with papermill -p); allowed: {', '.join(sorted(allowed))}"
    )


def notebook_config(
    config_class: type[C],
    namespace: Mapping[str, Any],
    *,
    extra: Iterable[str] = (),
    history: Sequence[str] | None = None,
) -> C:
    """The validated config of a notebook from its parameters (its globals).

    Every field of ``config_class`` present in ``namespace`` is passed to
    ``config_class.from_params(preset, ...)``; ``None`` (or a field absent from the namespace) takes the
    preset's value, and ``preset`` itself defaults to the field's default. Before that, the parameter
    names are checked (:func:`check_parameter_names`) against the fields and ``extra``.

    Args:
        config_class: the notebook's config class.
        namespace: the notebook's globals (``globals()``).
        extra: the notebook-only parameters (not config fields), e.g. ``("compare_modes",)``.
        history: the sources of the executed cells in execution order; default: ``namespace["In"]``
            (IPython's input history). Without one (outside IPython) the names are not checked.

    Returns:
        The config, validated.

    Raises:
        ConfigError: for an unknown or misspelled parameter (naming the closest allowed names), an
            unknown preset, or a value that is not allowed.
    """
    extra = tuple(extra)
    names = field_names(config_class)
    clash = sorted(set(extra) & set(names))
    if clash:
        raise ValueError(
            f"extra: {clash[0]!r} is a field of {config_class.__name__}, not a notebook-only name"
        )
    if history is None:
        history = namespace.get("In")
    if history is not None:
        check_parameter_names(config_class, history, extra=extra)
    preset = namespace.get("preset")
    if preset is None:
        preset = next(f.default for f in dataclasses.fields(config_class) if f.name == "preset")
    values = {name: namespace[name] for name in names if name != "preset" and name in namespace}
    return config_class.from_params(preset, **values)
