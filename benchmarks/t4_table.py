"""README's "Will it fit a T4?" table, rendered from ``benchmarks/results/t4.jsonl``.

    python -m benchmarks.t4_table            # writes README.md's block ``t4`` from the results
    python -m benchmarks.t4_table --check    # exit 1 if README.md's table is not the results'

``t4.jsonl`` holds one JSON object a line, one per preset estimate (``python -m benchmarks.t4``): ``recipe``,
``preset``, ``micro_batch``, ``peak_gib`` (estimated GPU memory peak), ``t4_samples_per_s`` (estimated T4
rate), ``epoch_minutes``, ``loader_samples_per_s`` (measured on 2 CPU cores), ``bound`` (``"data"`` or
``"gpu"``), and from a GPU run ``measured_peak_gib`` and ``measured_samples_per_s``. The latest line of a
(recipe, preset) wins. The measured columns appear once any line has them; a cell without a figure is "—".
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: the repository root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.readme_tables import markdown_table, render_command  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "t4.jsonl"
#: The page whose generated block this table is.
PAGE = ROOT / "README.md"
BLOCK = "t4"
#: GPU memory a Colab T4 leaves to a training run (16 GB card; Colab shows about 15 GiB).
#: The budget a preset must fit: a T4's 15 GiB less room for the allocator's fragmentation and other tensors.
T4_USABLE_GIB = 14.0
NONE = "—"
#: The fields every line must have.
FIELDS = (
    "recipe",
    "preset",
    "micro_batch",
    "peak_gib",
    "t4_samples_per_s",
    "epoch_minutes",
    "loader_samples_per_s",
    "bound",
)
MEASURED = ("measured_peak_gib", "measured_samples_per_s")


def read_results(path: Path) -> list[dict[str, Any]]:
    """The lines of ``path`` (JSON Lines), each checked for :data:`FIELDS`.

    Raises:
        FileNotFoundError: ``path`` is missing.
        ValueError: a line that is not a JSON object, or lacks a field, naming the file and line.
    """
    lines = []
    for number, text in enumerate(Path(path).read_text().splitlines(), 1):
        if not text.strip():
            continue
        try:
            line = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{number}: not JSON ({err.msg})") from None
        missing = [f for f in FIELDS if not isinstance(line, dict) or f not in line]
        if missing:
            raise ValueError(f"{path}:{number}: missing {', '.join(missing)}")
        lines.append(line)
    return lines


def number(value: Any, digits: int = 0) -> str:
    """``value`` with ``digits`` decimals and thousands separators; "—" for None or NaN, "∞" for infinity."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NONE
    if isinstance(value, float) and math.isinf(value):
        return "∞"
    return f"{value:,.{digits}f}"


def fits(line: Mapping[str, Any]) -> str:
    """ "yes" when the peak (measured if there is one, else estimated) is within :data:`T4_USABLE_GIB`."""
    peak = line.get("measured_peak_gib")
    peak = line["peak_gib"] if peak is None else peak
    if peak is None:
        return NONE
    return "yes" if peak <= T4_USABLE_GIB else "no"


def speed_and_epoch(line: Mapping[str, Any]) -> list[str]:
    """The samples/s and epoch cells. A fusion preset trains its head on features extracted once by its
    frozen towers: its cost is that extraction (a head epoch on features in memory takes seconds), so both
    cells show the extraction, marked as such."""
    extract_minutes = line.get("extract_minutes")
    if extract_minutes is None or not line.get("epoch_samples"):
        return [number(line["t4_samples_per_s"]), number(line["epoch_minutes"], 1)]
    rate = line["epoch_samples"] / (extract_minutes * 60)
    return [f"{number(rate)} (extraction)", f"{number(extract_minutes, 1)} (extraction, once)"]


def table(lines: Sequence[Mapping[str, Any]]) -> str:
    """README's block ``t4``: a line of prose, then one row per (recipe, preset), the latest line of each.

    Raises:
        ValueError: ``lines`` is empty.
    """
    if not lines:
        raise ValueError("no T4 estimates to render")
    latest = {(line["recipe"], line["preset"]): line for line in lines}
    measured = any(any(line.get(k) is not None for k in MEASURED) for line in latest.values())
    header = [
        "recipe", "preset", "micro-batch", "est. peak (GiB)", f"fits {T4_USABLE_GIB:g} GiB",
        "est. T4 samples/s", "est. epoch (min)", "loader samples/s (2 cores)", "bound by",
    ]  # fmt: skip
    if measured:
        header += ["measured peak (GiB)", "measured samples/s"]
    rows = []
    for (recipe, preset), line in latest.items():
        row = [
            recipe, f"`{preset}`", number(line["micro_batch"]), number(line["peak_gib"], 1), fits(line),
            *speed_and_epoch(line),
            number(line["loader_samples_per_s"]), line["bound"] or NONE,
        ]  # fmt: skip
        if measured:
            row += [number(line.get("measured_peak_gib"), 1), number(line.get("measured_samples_per_s"))]
        rows.append(row)
    note = (
        "Estimated by `python -m benchmarks.t4` (memory and FLOPs of the real-size models, a T4's datasheet "
        "peaks at an assumed share, the data pipeline timed on 2 CPU cores)"
        + ("; measured columns from a GPU run." if measured else "; no GPU run yet.")
    )
    return note + "\n\n" + markdown_table(header, rows)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (see the module docstring)."""
    return render_command(
        sys.argv[1:] if argv is None else list(argv), prog="python -m benchmarks.t4_table", block=BLOCK,
        results=RESULTS, page=PAGE, body=lambda path: table(read_results(path)),
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
