"""The recipes' names and modules: data only, so that any recipe module can read them.

:mod:`nbhelpers.train.recipes.registry` builds :data:`~nbhelpers.train.recipes.registry.RECIPES` from
them; :class:`~nbhelpers.train.recipes.results.RunMetrics` checks a run's ``recipe`` against them.
"""

#: Every recipe, in the order of the notebooks that call them: name -> the module defining its ``RECIPE``.
RECIPE_MODULES: dict[str, str] = {
    "unimodal": "nbhelpers.train.recipes.unimodal",
    "clip": "nbhelpers.train.recipes.clip",
    "ssl": "nbhelpers.train.recipes.ssl",
    "cass_mm": "nbhelpers.train.recipes.cass_mm",
    "clip_classifier": "nbhelpers.train.recipes.clip_classifier",
    "fusion": "nbhelpers.train.recipes.fusion",
}
