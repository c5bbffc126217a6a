"""Training recipes, one module each; every recipe's ``run(config)`` is what its notebook calls.

``python -m nbhelpers.train RECIPE key=value ...`` (or ``accelerate launch -m nbhelpers.train ...``)
runs the same function from the command line. :data:`RECIPES` lists them by name, and
:func:`get_recipe` returns one as a :class:`Recipe` (``run``, ``load_trained``, ``predict_run``, ...);
a recipe's module is imported only when its recipe is asked for.
"""

from nbhelpers.train.recipes.registry import RECIPE_MODULES, RECIPES, Recipe, TrainedRun, get_recipe

__all__ = ["RECIPE_MODULES", "RECIPES", "Recipe", "TrainedRun", "get_recipe"]
