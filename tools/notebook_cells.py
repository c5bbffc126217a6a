"""Reading and writing the notebooks' JSON in their committed format, and papermill's injected cell.

The committed notebooks are written by papermill: JSON with a one-space indent, non-ASCII kept, and no
trailing newline; :func:`write_notebook` keeps whatever ending the file had, so an edit of a cell's
source changes nothing else in the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: The tag papermill gives the cell it injects after the ``parameters`` cell.
INJECTED_TAG = "injected-parameters"
PARAMETERS_TAG = "parameters"


def read_notebook(path: Path) -> dict[str, Any]:
    """The notebook at ``path`` as a dict (its JSON)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_notebook(path: Path, notebook: dict[str, Any]) -> None:
    """Writes ``notebook`` to ``path`` as papermill does, keeping the file's trailing newline (or none)."""
    path = Path(path)
    newline = path.exists() and path.read_text(encoding="utf-8").endswith("\n")
    path.write_text(
        json.dumps(notebook, indent=1, ensure_ascii=False) + ("\n" if newline else ""), encoding="utf-8"
    )


def tags(cell: dict[str, Any]) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def cell_source(cell: dict[str, Any]) -> str:
    source = cell["source"]
    return source if isinstance(source, str) else "".join(source)


def set_cell_source(cell: dict[str, Any], text: str) -> None:
    """Sets a cell's source in the notebook format's list-of-lines form."""
    cell["source"] = text.splitlines(keepends=True)


def strip_injected(notebook: dict[str, Any]) -> int:
    """Removes papermill's ``injected-parameters`` cells from ``notebook``; returns how many there were."""
    cells = notebook["cells"]
    kept = [cell for cell in cells if INJECTED_TAG not in tags(cell)]
    notebook["cells"] = kept
    return len(cells) - len(kept)


def strip_injected_file(path: Path) -> int:
    """Removes papermill's ``injected-parameters`` cells from the notebook file at ``path``, in place.

    Returns:
        How many cells were removed (the file is rewritten only when there were some).
    """
    notebook = read_notebook(path)
    removed = strip_injected(notebook)
    if removed:
        write_notebook(path, notebook)
    return removed


def parameters_index(notebook: dict[str, Any], name: str = "notebook") -> int:
    """The index of the notebook's one cell tagged ``parameters``.

    Raises:
        ValueError: if ``name`` has no such cell, or more than one.
    """
    found = [i for i, cell in enumerate(notebook["cells"]) if PARAMETERS_TAG in tags(cell)]
    if len(found) != 1:
        raise ValueError(f"{name}: expected one cell tagged {PARAMETERS_TAG!r}, found {len(found)}")
    return found[0]
