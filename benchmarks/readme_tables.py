"""Generated documentation blocks: a Markdown table (or any text) between two HTML comment markers.

A benchmark writes its figures to ``benchmarks/results/`` and renders them into its documentation page
(``docs/performance.md``, ``docs/reproducing.md``) between ``<!-- NAME:begin -->`` and
``<!-- NAME:end -->``, so that the page's tables are always the committed results' and a test can check
that they still are (render again, compare).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path


def markers(name: str) -> tuple[str, str]:
    """The begin and end markers of the block ``name``: ``<!-- name:begin -->``, ``<!-- name:end -->``."""
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub Markdown table, one line per row, no trailing newline.

    Args:
        header: the column names.
        rows: the cells of each row, as many as ``header`` (each written with ``str``; ``|`` escaped).

    Raises:
        ValueError: a row with another number of cells than ``header``.
    """
    for i, row in enumerate(rows):
        if len(row) != len(header):
            raise ValueError(f"rows[{i}] has {len(row)} cells, the header {len(header)}")

    def line(cells: Sequence[object]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), "|" + "---|" * len(header), *(line(row) for row in rows)])


def _span(text: str, name: str) -> tuple[int, int]:
    """Where the block ``name``'s content starts and ends in ``text`` (between its two markers)."""
    begin, end = markers(name)
    if text.count(begin) != 1 or text.count(end) != 1:
        raise ValueError(
            f"expected exactly one {begin} and one {end}; found {text.count(begin)} and {text.count(end)}"
        )
    start, stop = text.index(begin) + len(begin), text.index(end)
    if stop < start:
        raise ValueError(f"{end} comes before {begin}")
    return start, stop


def read_block(text: str, name: str) -> str:
    """The content of the block ``name`` in ``text``, without its markers and the newlines next to them.

    Raises:
        ValueError: the markers are missing, repeated, or out of order.
    """
    start, stop = _span(text, name)
    return text[start:stop].strip("\n")


def replace_block(text: str, name: str, body: str) -> str:
    """``text`` with the content of the block ``name`` replaced by ``body`` (markers kept, each on its line).

    Raises:
        ValueError: the markers are missing, repeated, or out of order.
    """
    start, stop = _span(text, name)
    return text[:start] + "\n" + body.strip("\n") + "\n" + text[stop:]


def render_table(
    text: str, name: str, header: Sequence[str], rows: Sequence[Sequence[object]], note: str = ""
) -> str:
    """``text`` with the block ``name`` set to a Markdown table (after ``note``, a line of prose, if given).

    Raises:
        ValueError: bad markers (:func:`replace_block`) or a row of the wrong length (:func:`markdown_table`).
    """
    table = markdown_table(header, rows)
    return replace_block(text, name, f"{note}\n\n{table}" if note else table)


def render_command(
    argv: Sequence[str], *, prog: str, block: str, results: Path, page: Path, body: Callable[[Path], str]
) -> int:
    """A benchmark's ``render [--results FILE] [--page FILE] [--check]``: writes the block ``block`` of its
    documentation page as ``body(results)``, or with ``--check`` changes nothing and returns 1 if it differs.

    ``--readme`` is accepted as another name of ``--page`` (the tables were in README.md before ``docs/``).
    """
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--results", type=Path, default=results)
    parser.add_argument("--page", "--readme", dest="page", type=Path, default=page, help=f"default: {page}")
    parser.add_argument("--check", action="store_true", help="exit 1 if the page differs, change nothing")
    args = parser.parse_args(argv)
    text, new = args.page.read_text(), body(args.results)
    if args.check:
        same = read_block(text, block) == new.strip("\n")
        print(f"{args.page.name}: " + ("table up to date" if same else "table differs from the results"))
        return 0 if same else 1
    args.page.write_text(replace_block(text, block, new))
    print(f"rendered {args.results} into {args.page}")
    return 0
