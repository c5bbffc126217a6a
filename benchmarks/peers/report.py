"""The JSON lines of the peers benchmark and the docs/performance.md block made from them."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path

from benchmarks.peers.common import BLOCK, PAGE, RESULTS
from benchmarks.readme_tables import markdown_table, render_command


def row(
    benchmark: str,
    runs: list[tuple[float, float]],
    unit: str,
    where: str,
    command: str,
    kind: str = "peer",
    memory: list[tuple[float, float]] | None = None,
    **extra,
) -> dict:
    """A JSON line: the medians of ``runs`` (pairs ``(ours, peer)``, or ``(ours, ceiling)`` for ``kind``
    ``"ceiling"``) and their ratio, and the same of the peak RSS pairs ``memory`` (MB) if given."""
    ours = round(statistics.median(r[0] for r in runs), 1)
    peer = round(statistics.median(r[1] for r in runs), 1)
    line = {
        "benchmark": benchmark,
        "kind": kind,
        "ours": ours,
        "peer": peer,
        "ratio": round(ours / peer, 3),
        "unit": unit,
        "machine": where,
        "command": command,
        **extra,
        "runs": [[round(a, 1), round(b, 1)] for a, b in runs],
    }
    if memory:
        ours_mb = round(statistics.median(m[0] for m in memory))
        peer_mb = round(statistics.median(m[1] for m in memory))
        line.update(ours_mb=ours_mb, peer_mb=peer_mb, memory_ratio=round(ours_mb / peer_mb, 3))
    return line


def read_results(path: Path = RESULTS) -> list[dict]:
    """The JSON lines of ``path``."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _memory(r: dict) -> str:
    if "ours_mb" not in r:
        return ""
    return f"{r['ours_mb']:,} / {r['peer_mb']:,} MB ({r['memory_ratio']:.2f})"


def summary(rows: Sequence[dict]) -> str:
    """One sentence per kind of figure: the range of the ratios, and every figure where ours is slower."""
    peers = [r for r in rows if r.get("kind", "peer") == "peer"]
    ceilings = [r for r in rows if r.get("kind") == "ceiling"]
    lines = []
    if peers:
        low, high = min(r["ratio"] for r in peers), max(r["ratio"] for r in peers)
        slower = [r for r in peers if r["ratio"] < 1.0]
        lines.append(
            f"Ours / peer: {low:.2f} to {high:.2f}; "
            + (
                "ours is slower against "
                + ", ".join(f"{r['peer_name']} ({r.get('workers', '')} workers)" for r in slower)
                if slower
                else "ours is faster than every peer in every setting"
            )
            + "."
        )
    if ceilings:
        shares = ", ".join(
            f"{100 * r['ratio']:.0f}% of {r['peer_name']} ({r['workers']} workers)" for r in ceilings
        )
        lines.append(f"Ours as a share of the ceiling: {shares}.")
    return " ".join(lines)


def table(rows: Sequence[dict]) -> str:
    """The docs/performance.md block: which machine and command, the figures against the peers, the
    figures against the ceilings (ours as a share of each), and a sentence of :func:`summary`."""
    machines = sorted({r["machine"] for r in rows})
    commands = sorted({r["command"] for r in rows})
    note = (
        f"Measured on {'; '.join(machines)} by `{'`, `'.join(commands)}` (median of "
        f"{max(len(r.get('runs', [])) for r in rows)} interleaved repeats"
        + (
            ", each side in a process of its own"
            if all("kind" in r for r in rows)
            # rows without a kind: from the first version of this benchmark
            else "; by the first version of this benchmark: the loaders in one process, the folder loader "
            "reading a caption file per image, no ceilings"
        )
        + "; ratio = ours / peer, above 1: ours is faster)."
    )
    peers = [r for r in rows if r.get("kind", "peer") == "peer"]
    ceilings = [r for r in rows if r.get("kind") == "ceiling"]
    parts = [note]
    if peers:
        memory = any("ours_mb" in r for r in peers)  # a column only where the rows measured it
        header = ("what", "peer", "batch", "workers", "ours", "peer's", "ours / peer")
        header += ("peak RSS ours / peer",) * memory
        cells = [
            (
                r["benchmark"].split(" vs ")[0], r.get("peer_name", r["benchmark"].split(" vs ")[-1]),
                r.get("batch", ""), r.get("workers", ""), f"{r['ours']:,.0f} {r['unit']}", f"{r['peer']:,.0f}",
                f"{r['ratio']:.2f}", *(_memory(r),) * memory,
            )
            for r in peers
        ]  # fmt: skip
        parts.append(markdown_table(header, cells))
    if ceilings:
        header = ("what", "ceiling", "batch", "workers", "ours", "ceiling's", "ours as share of ceiling")
        cells = [
            (
                r["benchmark"].split(" vs ")[0], r["peer_name"], r.get("batch", ""), r.get("workers", ""),
                f"{r['ours']:,.0f} {r['unit']}", f"{r['peer']:,.0f}", f"{100 * r['ratio']:.0f}%",
            )
            for r in ceilings
        ]  # fmt: skip
        parts.append(markdown_table(header, cells))
    parts.append(summary(rows))
    return "\n\n".join(parts)


def render(argv: Sequence[str]) -> int:
    return render_command(
        argv, prog="python -m benchmarks.peers render", block=BLOCK, results=RESULTS, page=PAGE,
        body=lambda path: table(read_results(path)),
    )  # fmt: skip
