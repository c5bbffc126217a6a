"""Command line: ``python -m nbhelpers.train RECIPE key=value ...``.

Runs the registered recipe's ``run(config)`` (:data:`nbhelpers.train.recipes.RECIPES`) with the
recipe's config built from ``key=value`` pairs. Values are read as JSON literals when they parse
(``epochs=3`` is an int, ``lr=1e-4`` a float, ``amp=true`` a bool, ``sizes=[1,2]`` a list, ``x=null``
None) and kept as strings otherwise (``preset=demo``, ``data_dir=/content/shards``); quote a number to
keep it a string (``name='"007"'``). Works under ``accelerate launch -m nbhelpers.train RECIPE ...``.

An explicit ``key=null`` sets the field to None even where the preset sets a value (``keep_last=null``:
keep every checkpoint): the recipe receives :data:`nbhelpers.config.NULL` for it, not ``None``, which
would mean "the preset's value" as it does in a notebook's parameters cell. Leave a key out to take the
preset's value.

``python -m nbhelpers.train list`` (or ``--help``) lists the recipes and their presets;
``python -m nbhelpers.train RECIPE --help`` prints every parameter with its type, default and help
(``RECIPE preset=t4 --help``: the t4 preset's values). A mistake on the command line or in the config
(an unknown parameter, a value that is not allowed, missing shards) prints one line,
``nbhelpers.train: error: ...``, and exits with status 2 (:mod:`nbhelpers.cli`).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

from nbhelpers.cli import (
    USER_ERRORS,
    UsageError,
    config_help,
    explicit_nulls,
    parse_pairs,
    parse_value,
    user_errors,
    wants_help,
)
from nbhelpers.config import BaseConfig, preset_names
from nbhelpers.train.identity import RunMismatchError
from nbhelpers.train.precision import process_state
from nbhelpers.train.recipes.registry import RECIPES, Recipe, RecipeRegistry

PROG = "nbhelpers.train"
USAGE = "usage: python -m nbhelpers.train RECIPE [key=value ...]"
#: What a recipe's run may raise that the user caused: besides bad values and missing files, a run
#: folder that holds another config's run (the message says how to proceed).
RUN_ERRORS = (*USER_ERRORS, RunMismatchError)

__all__ = ["PROG", "USAGE", "main", "overview", "parse_args", "parse_value", "recipe_help"]


def parse_args(argv: Sequence[str]) -> tuple[str, dict[str, Any]]:
    """Split ``RECIPE key=value ...`` into the recipe name and its config dict (``key=null``: None).

    Args:
        argv: the arguments after the program name.

    Returns:
        ``(recipe, config)``.

    Raises:
        UsageError: no recipe; an argument without ``=`` or with an empty key; a key given twice.
    """
    if not argv or "=" in argv[0] or argv[0].startswith("-"):
        raise UsageError(f"expected a recipe name first. {USAGE}")
    return argv[0], parse_pairs(argv[1:])


def overview(registry: Mapping[str, Recipe] = RECIPES) -> str:
    """``--help`` and ``list`` with no recipe: the usage, then each recipe with its summary and presets."""
    lines = [
        USAGE,
        "       python -m nbhelpers.train RECIPE --help   (every parameter of RECIPE)",
        "       python -m nbhelpers.train list",
        "",
        "recipes (preset=NAME picks a preset; the recipe's --help shows its values):",
    ]
    for name in registry:
        summary = registry.summary(name) if isinstance(registry, RecipeRegistry) else ""
        lines.append(f"  {name:<16} {summary}".rstrip())
        lines.append(f"  {'':<16} presets: {', '.join(preset_names(name))}")
    return "\n".join(lines)


def recipe_help(recipe: Recipe, preset: str = "demo") -> str:
    """A recipe's ``--help``: usage, what it trains, its notebook and presets, every parameter.

    Raises:
        ConfigError: for a preset the recipe does not have.
    """
    config_class = recipe.config_class
    doc = sys.modules[config_class.__module__].__doc__ or ""
    summary = doc.strip().split("\n\n")[0]
    return "\n".join(
        [
            f"usage: python -m nbhelpers.train {recipe.name} [key=value ...]",
            "",
            summary,
            f"notebook: {recipe.notebook}; presets: {', '.join(preset_names(config_class.SECTION))}",
            "",
            config_help(config_class, preset),
        ]
    )


def _recipe(name: str, registry: Mapping[str, Recipe]) -> Recipe:
    if name not in registry:
        raise UsageError(f"unknown recipe {name!r}; available recipes: {', '.join(registry)}")
    return registry[name]


def main(argv: Sequence[str] | None = None, registry: Mapping[str, Recipe] = RECIPES) -> Any:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the recipe and return what its ``run`` returns.

    The recipe's ``run`` gets its config built from the ``key=value`` pairs (a recipe whose config class
    is no :class:`~nbhelpers.config.BaseConfig` gets the dict, with :data:`~nbhelpers.config.NULL` for
    each ``key=null``). ``--help`` and ``list`` print and return None.

    Args:
        argv: the arguments after the program name.
        registry: the recipes by name (:data:`~nbhelpers.train.recipes.RECIPES`).

    Raises:
        SystemExit: with status 2 and one line on stderr for a bad command line, an unknown recipe or
            parameter, a value that is not allowed, missing shards or a run folder of another config.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] in (["list"], ["-h"], ["--help"]):
        print(overview(registry))
        return None
    with user_errors(PROG):
        if not argv or "=" in argv[0] or argv[0].startswith("-"):
            raise UsageError(f"expected a recipe name first; available recipes: {', '.join(registry)}")
        recipe = _recipe(argv[0], registry)
        if wants_help(argv[1:]):
            params = parse_pairs([a for a in argv[1:] if a not in ("-h", "--help")])
            print(recipe_help(recipe, params.get("preset", "demo")))
            return None
        name, params = parse_args(argv)
        params = explicit_nulls(params)
        config: Any = params
        if isinstance(recipe.config_class, type) and issubclass(recipe.config_class, BaseConfig):
            config = recipe.config_class.coerce(params)  # every bad value stops here, before any work
    process_state()  # before any recipe asks: several CPU processes under torchrun find each other
    with user_errors(PROG, RUN_ERRORS):
        return recipe.run(config)


if __name__ == "__main__":
    main()
