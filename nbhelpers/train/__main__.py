"""Command line: ``python -m nbhelpers.train RECIPE key=value ...``.

Runs the registered recipe's ``run(config)`` (:data:`nbhelpers.train.recipes.RECIPES`) with
``config = {key: value, ...}``. Values are read as JSON literals when they parse (``epochs=3`` is an
int, ``lr=1e-4`` a float, ``amp=true`` a bool, ``sizes=[1,2]`` a list, ``x=null`` None) and kept as
strings otherwise (``preset=demo``, ``data_dir=/content/shards``); quote a number to keep it a string
(``name='"007"'``). Works under ``accelerate launch -m nbhelpers.train RECIPE ...``.

An explicit ``key=null`` sets the field to None even where the preset sets a value (``keep_last=null``:
keep every checkpoint): the recipe receives :data:`nbhelpers.config.NULL` for it, not ``None``, which
would mean "the preset's value" as it does in a notebook's parameters cell. Leave a key out to take the
preset's value.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from nbhelpers.config import NULL
from nbhelpers.train.precision import process_state
from nbhelpers.train.recipes.registry import RECIPES, Recipe, get_recipe

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


def main(argv: Sequence[str] | None = None, registry: Mapping[str, Recipe] = RECIPES) -> Any:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the recipe and return what its ``run`` returns.

    The recipe's ``run`` gets the parsed ``key=value`` pairs as a dict, with :data:`~nbhelpers.config.NULL`
    for each ``key=null`` (an explicit None, not the preset's value).

    Args:
        argv: the arguments after the program name.
        registry: the recipes by name (:data:`~nbhelpers.train.recipes.RECIPES`).

    Raises:
        SystemExit: with status 2 and the reason on stderr for a bad command line or unknown recipe (the
            message lists the recipes).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        name, config = parse_args(argv)
        recipe = get_recipe(name, registry)
    except ValueError as err:
        print(f"nbhelpers.train: {err}", file=sys.stderr)
        if "available recipes" not in str(err):
            print(f"available recipes: {', '.join(registry)}", file=sys.stderr)
        raise SystemExit(2) from None
    process_state()  # before any recipe asks: several CPU processes under torchrun find each other
    return recipe.run({key: NULL if value is None else value for key, value in config.items()})


if __name__ == "__main__":
    main()
