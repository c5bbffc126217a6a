"""What every notebook must carry to open and run on Colab, and to run headless with papermill."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
README = (ROOT / "README.md").read_text(encoding="utf-8")
BADGE = "[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
GITHUB = "https://github.com/"


def read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def source(cell: dict) -> str:
    return cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])


def first_code_cell(notebook: dict) -> str:
    return source(next(cell for cell in notebook["cells"] if cell["cell_type"] == "code"))


def default_repo() -> str:
    """The repository colab_setup.py clones by default (``https://github.com/<owner>/<repo>``)."""
    match = re.search(r'^DEFAULT_REPO = "(.+)"$', (ROOT / "colab_setup.py").read_text(), re.M)
    assert match and match.group(1).startswith(GITHUB)
    return match.group(1)


def test_all_nine_notebooks_are_checked():
    assert [nb.name[:2] for nb in NOTEBOOKS] == [f"{i:02d}" for i in range(1, 10)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_the_notebook_asks_colab_for_a_t4_gpu(path):
    metadata = read(path)["metadata"]
    assert metadata["accelerator"] == "GPU"
    assert metadata["colab"]["gpuType"] == "T4"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_the_readme_table_has_the_notebooks_badge(path):
    owner_repo = default_repo().removeprefix(GITHUB)
    url = f"https://colab.research.google.com/github/{owner_repo}/blob/main/notebooks/{path.name}"
    row = f"| [{path.stem}](notebooks/{path.name}) {BADGE}({url}) |"
    assert row in README


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_the_first_code_cell_is_the_bootstrap_and_a_parameters_cell_follows(path):
    notebook = read(path)
    bootstrap = first_code_cell(notebook)
    assert bootstrap == first_code_cell(read(NOTEBOOKS[0]))  # one bootstrap, the same everywhere
    assert '\nif "google.colab" in sys.modules:\n' in bootstrap
    assert f'os.environ.get("MEMELAB_REPO", "{default_repo()}")' in bootstrap
    assert 'runpy.run_path(str(home / "colab_setup.py"))' in bootstrap
    code = [i for i, cell in enumerate(notebook["cells"]) if cell["cell_type"] == "code"]
    tagged = [
        i for i, cell in enumerate(notebook["cells"]) if "parameters" in cell["metadata"].get("tags", [])
    ]
    assert len(tagged) == 1 and tagged[0] > code[0]


def test_outside_colab_the_bootstrap_only_moves_to_the_repository_root(tmp_path):
    """Run as papermill runs it (cwd notebooks/): no clone, no install, no Drive; just the working folder."""
    code = first_code_cell(read(NOTEBOOKS[0])) + "\nprint(os.getcwd())\n"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT / "notebooks", capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert (result.stdout, result.stderr) == (f"{ROOT}\n", "")
