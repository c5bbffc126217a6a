"""The documentation: README.md as a landing page, its Python example run as written, its figures the
seed study's, and every relative link in README.md, CONTRIBUTING.md and docs/*.md pointing somewhere."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

from benchmarks import seeds
from benchmarks.readme_tables import read_block
from tests.helpers import make_shards

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
#: The two commands of a fresh machine, exactly as CI and the Makefile's users read them.
COMMANDS = (
    "make demo   # creates .venv, installs, builds the synthetic shards, runs every notebook in order (demo preset)",
    "make test   # creates .venv, installs, runs ruff, lint-imports, every unit test and the committed notebooks "
    "(pytest --nbval-lax)",
)
FENCE = re.compile(r"^(```|~~~)")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FIGURE = re.compile(r"\d\.\d{3} ± \d\.\d{3}")


def prose(text: str) -> list[str]:
    """The lines of a Markdown text outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.lstrip()):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (``-`` and ``_`` kept), spaces -> ``-``."""
    text = re.sub(r"`|\*\*|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    kept = "".join(c for c in text if c in "-_ " or unicodedata.category(c)[0] in "LN")
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a Markdown file's headings (repeated headings get ``-1``, ``-2``, ... as on GitHub)."""
    seen: dict[str, int] = {}
    for line in prose(path.read_text(encoding="utf-8")):
        match = re.match(r"#{1,6}\s+(.+?)\s*#*$", line)
        if match:
            base = slug(match.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            seen.setdefault(f"{base}-{n}" if n else base, 1)
    return set(seen)


def relative_links(path: Path) -> list[str]:
    """Every link target of ``path`` outside code blocks that is not a URL (``http:``, ``mailto:``, ...)."""
    targets = []
    for line in prose(path.read_text(encoding="utf-8")):
        line = re.sub(r"`[^`]*`", "", line)  # inline code is not a link
        targets += [t for t in LINK.findall(line) if not re.match(r"[a-z][a-z0-9+.-]*:", t)]
    return targets


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, re.S | re.M)


def test_every_documentation_page_is_checked():
    names = {p.relative_to(ROOT).as_posix() for p in PAGES}
    assert {"README.md", "CONTRIBUTING.md", "docs/data.md", "docs/performance.md"} <= names


def test_the_readme_is_a_landing_page():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    for command in COMMANDS:
        assert command in text.splitlines()
    assert len(python_blocks(text)) == 1


@pytest.mark.parametrize("path", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_point_at_files_and_headings_that_exist(path):
    broken = []
    for target in relative_links(path):
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    assert not broken, f"{path.relative_to(ROOT)}: " + "; ".join(broken)


def test_the_link_checker_finds_links_and_anchors(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "# A page: `code`, **bold** & more\n\n## Runs\n\n## Runs\n\n[x](other.md#the-seven-classes) "
        "[y](#runs-1) [z](https://example.org) `[no](link.md)`\n```\n# not a heading\n[no](link.md)\n```\n"
    )
    assert relative_links(page) == ["other.md#the-seven-classes", "#runs-1"]
    assert anchors(page) == {"a-page-code-bold--more", "runs", "runs-1"}


def test_the_readme_figures_are_the_seed_studys():
    """Every mean ± sd in the README is in the row of the same model in docs/reproducing.md's generated
    tables (which test_seeds checks against benchmarks/results/seeds.json)."""
    block = read_block(seeds.PAGE.read_text(encoding="utf-8"), seeds.BLOCK)
    rows = [line for line in README.read_text(encoding="utf-8").splitlines() if FIGURE.search(line)]
    assert len(rows) >= 3
    for row in rows:
        model = row.split("|")[1].strip()
        matches = [line for line in block.splitlines() if line.startswith(f"| {model} |")]
        assert matches, f"no row {model!r} in the seed study's tables"
        assert any(set(FIGURE.findall(row)) <= set(FIGURE.findall(m)) for m in matches), row


def test_the_readme_python_example_runs_as_written(tmp_path, monkeypatch):
    """The README's example, unchanged, on tiny synthetic shards at ``data/shards``: trains the demo
    recipe into ``runs/``, loads it and scores ``unseen``."""
    (code,) = python_blocks(README.read_text(encoding="utf-8"))
    make_shards(
        tmp_path / "data" / "shards", train=64, val=8, test=16, unseen=16, train_shard=64, eval_shard=16
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MEMELAB_PROGRESS", "off")
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["result"].run_dir.parent == Path("runs")
    assert namespace["scores"].shape == (16, 7) and namespace["labels"].shape == (16,)
    assert 0.0 <= namespace["top1"] <= 1.0
    assert namespace["trained"].class_names[0] == "True/Neutral"
