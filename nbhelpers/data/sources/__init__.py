"""One reader per raw dataset format, the synthetic benchmark, Hugging Face datasets and your own data.

Every source module defines:

- ``NAME``: the source name used in parameters and manifests;
- ``SPLITS``: the split names it writes, in order; ``None`` for a source whose splits its parameters
  decide (``hf``, ``own``), which then defines ``splits(raw_dir, options) -> tuple[str, ...]``;
- ``check(raw_dir)``: raises ``FileNotFoundError`` naming what is missing, before any heavy work;
- ``read(raw_dir, split, skips) -> Iterator[Record]``: the split's records, in a deterministic order,
  counting every input it cannot use in ``skips``.

``hf`` and ``own`` take their parameters as a keyword ``options`` in ``check``, ``splits`` and ``read``
(:class:`~nbhelpers.data.sources.hf.HFOptions`, :class:`~nbhelpers.data.sources.own.OwnOptions`); both turn
rows into records by :mod:`nbhelpers.data.sources._rows`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

SOURCES: tuple[str, ...] = ("synthetic", "hateful_memes", "mmhs150k", "fakeddit", "coco", "hf", "own")


def get_source(name: str) -> ModuleType:
    """Returns the reader module of source ``name``.

    Raises:
        ValueError: if ``name`` is not one of :data:`SOURCES`.
    """
    if name not in SOURCES:
        raise ValueError(f"unknown source {name!r}; allowed: {', '.join(SOURCES)}")
    return importlib.import_module(f"{__name__}.{name}")
