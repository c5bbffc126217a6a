"""One reader per raw dataset format, plus the synthetic benchmark.

Every source module defines:

- ``NAME``: the source name used in parameters and manifests;
- ``SPLITS``: the split names it writes, in order;
- ``check(raw_dir)``: raises ``FileNotFoundError`` naming what is missing, before any heavy work;
- ``read(raw_dir, split, skips) -> Iterator[Record]``: the split's records, in a deterministic order,
  counting every input it cannot use in ``skips``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

SOURCES: tuple[str, ...] = ("synthetic", "hateful_memes", "mmhs150k", "fakeddit", "coco")


def get_source(name: str) -> ModuleType:
    """Returns the reader module of source ``name``.

    Raises:
        ValueError: if ``name`` is not one of :data:`SOURCES`.
    """
    if name not in SOURCES:
        raise ValueError(f"unknown source {name!r}; allowed: {', '.join(SOURCES)}")
    return importlib.import_module(f"{__name__}.{name}")
