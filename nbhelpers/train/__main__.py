"""Command line: ``python -m nbhelpers.train RECIPE key=value ...``.

Runs ``nbhelpers.train.recipes.<RECIPE>.run(config)`` with ``config = {key: value, ...}``. Values are
read as JSON literals when they parse (``epochs=3`` is an int, ``lr=1e-4`` a float, ``amp=true`` a
bool, ``sizes=[1,2]`` a list, ``x=null`` None) and kept as strings otherwise (``preset=demo``,
``data_dir=/content/shards``); quote a number to keep it a string (``name='"007"'``). Works under
``accelerate launch -m nbhelpers.train RECIPE ...``.

An explicit ``key=null`` sets the field to None even where the preset sets a value (``keep_last=null``:
keep every checkpoint): the recipe receives :data:`nbhelpers.config.NULL` for it, not ``None``, which
would mean "the preset's value" as it does in a notebook's parameters cell. Leave a key out to take the
preset's value.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from nbhelpers.config import NULL

RECIPES_PACKAGE = "nbhelpers.train.recipes"

USAGE = "usage: python -m nbhelpers.train RECIPE [key=value ...]"


def parse_value(text: str) -> Any:
    """``text`` as a JSON literal if it is one, else the string itself.

    >>> parse_value("3"), parse_value("1e-4"), parse_value("true"), parse_value("demo")
    (3, 0.0001, True, 'demo')
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_args(argv: Sequence[str]) -> tuple[str, dict[str, Any]]:
    """Split ``RECIPE key=value ...`` into the recipe name and its config dict.

    Args:
        argv: the arguments after the program name.

    Returns:
        ``(recipe, config)``.

    Raises:
        ValueError: no recipe; an argument without ``=`` or with an empty key; a key given twice.
    """
    if not argv or "=" in argv[0] or argv[0].startswith("-"):
        raise ValueError(f"expected a recipe name first. {USAGE}")
    recipe, config = argv[0], {}
    for arg in argv[1:]:
        key, sep, value = arg.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"expected key=value, got {arg!r}. {USAGE}")
        if key in config:
            raise ValueError(f"{key!r} is given twice")
        config[key] = parse_value(value)
    return recipe, config


#: Modules of the recipes package that hold shared code, not a recipe.
SHARED_MODULES = frozenset({"base"})


def available_recipes(package: str = RECIPES_PACKAGE) -> list[str]:
    """The recipe modules of ``package`` (public ``.py`` files and subpackages but the shared ``base``), sorted."""
    try:
        paths = importlib.import_module(package).__path__
    except ModuleNotFoundError:
        return []
    return sorted(
        m.name
        for m in pkgutil.iter_modules(paths)
        if not m.name.startswith("_") and m.name not in SHARED_MODULES
    )


def load_recipe(name: str, package: str = RECIPES_PACKAGE) -> ModuleType:
    """Import recipe ``name`` from ``package``.

    Raises:
        ValueError: the recipe does not exist (the message lists those that do) or has no ``run``.
        ModuleNotFoundError: the recipe exists but imports something missing (not masked).
    """
    available = available_recipes(package)
    if not name.isidentifier() or name not in available:
        listed = ", ".join(available) if available else f"none (no modules in {package})"
        raise ValueError(f"unknown recipe {name!r}; available recipes: {listed}")
    module = importlib.import_module(f"{package}.{name}")
    if not callable(getattr(module, "run", None)):
        raise ValueError(f"recipe module {module.__name__} has no run(config) function")
    return module


def main(argv: Sequence[str] | None = None, package: str = RECIPES_PACKAGE) -> Any:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the recipe and return what its ``run`` returns.

    The recipe's ``run`` gets the parsed ``key=value`` pairs as a dict, with :data:`~nbhelpers.config.NULL`
    for each ``key=null`` (an explicit None, not the preset's value).

    Raises:
        SystemExit: with status 2 and the reason on stderr for a bad command line or unknown recipe.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        recipe, config = parse_args(argv)
        module = load_recipe(recipe, package)
    except ValueError as err:
        print(f"nbhelpers.train: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    return module.run({key: NULL if value is None else value for key, value in config.items()})


if __name__ == "__main__":
    main()
