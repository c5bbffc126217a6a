"""colab_setup.py, run as on Colab but in a temporary folder: a local git repository stands for GitHub and a
fake pip records what it is asked (and fails when told to), so every step and every re-run can be checked."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SETUP = ROOT / "colab_setup.py"
STEPS = ["clone", "pull", "requirements", "nbhelpers", "drive", "widgets"]
REQUIREMENTS = "# Colab keeps its torch\ntorch>=2.3\ntorchvision>=0.18\nnumpy>=1.24\ntqdm>=4.66\n"

FAKE_PIP = r"""
import json, os, pathlib, re, shutil, sys
args = sys.argv[1:]
kind = "requirements" if "-r" in args else "editable" if "-e" in args else "other"
entry = {"kind": kind, "args": args}
if kind == "requirements":
    entry["requirements"] = pathlib.Path(args[args.index("-r") + 1]).read_text()
with open(os.environ["FAKE_PIP_LOG"], "a") as log:
    log.write(json.dumps(entry) + "\n")
if os.environ.get("FAKE_PIP_FAIL") == kind:
    sys.exit(1)
if kind == "editable":  # what an editable install amounts to: the package and its metadata on the path
    src = pathlib.Path(args[args.index("-e") + 1])
    version = re.search(r'^version = "(.+)"', (src / "pyproject.toml").read_text(), re.M).group(1)
    site = pathlib.Path(os.environ["FAKE_SITE"])
    for old in site.glob("nbhelpers*"):
        old.unlink() if old.is_symlink() else shutil.rmtree(old)
    (site / "nbhelpers").symlink_to(src / "nbhelpers")
    dist = site / f"nbhelpers-{version}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: nbhelpers\nVersion: {version}\n")
"""


def git(cwd, *args):
    command = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=main"]
    return subprocess.run([*command, *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def commit_version(origin: Path, version: str, requirements: str) -> str:
    (origin / "pyproject.toml").write_text(f'[project]\nname = "nbhelpers"\nversion = "{version}"\n')
    (origin / "requirements.txt").write_text(requirements)
    (origin / "nbhelpers" / "__init__.py").write_text(f'__version__ = "{version}"\n')
    git(origin, "add", "-A")
    git(origin, "commit", "-q", "-m", version)
    return git(origin, "rev-parse", "--short=12", "HEAD").strip()


class Colab:
    """A temporary "Colab": the origin repository, the clone's place, a fake pip and its site folder."""

    def __init__(self, tmp_path: Path):
        self.tmp = tmp_path
        self.origin = tmp_path / "origin"
        (self.origin / "nbhelpers").mkdir(parents=True)
        git(self.origin, "init", "-q")
        self.first_commit = commit_version(self.origin, "0.1.0", REQUIREMENTS)
        self.home = tmp_path / "vm" / "memelab"
        self.home.parent.mkdir()
        self.site = tmp_path / "site"
        self.site.mkdir()
        self.pip_log = tmp_path / "pip.log"
        self.pip_log.touch()
        (tmp_path / "fake_pip.py").write_text(FAKE_PIP)

    def run(self, *args: str, **env: str) -> tuple[int, dict[str, tuple[str, str]], str]:
        """Runs the set-up; returns its exit code, ``{step: (status, detail)}`` and its whole output."""
        base = {k: v for k, v in os.environ.items() if not k.startswith("MEMELAB_")}
        base.update(
            MEMELAB_REPO=str(self.origin),
            MEMELAB_PIP=f"{sys.executable} {self.tmp / 'fake_pip.py'}",
            FAKE_PIP_LOG=str(self.pip_log),
            FAKE_SITE=str(self.site),
            PYTHONPATH=str(self.site),  # the fake pip's "site-packages"
        )
        base.update(env)
        result = subprocess.run(
            [sys.executable, str(SETUP), "--home", str(self.home), *(args or ("--outside-colab",))],
            capture_output=True,
            text=True,
            env=base,
            cwd=self.tmp,
            timeout=120,
        )
        output = result.stdout + result.stderr
        steps = {
            m.group(1): (m.group(2), m.group(3))
            for m in re.finditer(r"^  (\w+) +(done|skipped|FAILED): (.*)$", result.stdout, re.M)
        }
        return result.returncode, steps, output

    def pip_calls(self) -> list[dict]:
        return [json.loads(line) for line in self.pip_log.read_text().splitlines()]

    def statuses(self, steps):
        return [steps[name][0] if name in steps else None for name in STEPS]


@pytest.fixture
def colab(tmp_path):
    return Colab(tmp_path)


def test_an_interrupted_set_up_is_finished_by_the_re_run_and_then_everything_is_skipped(colab):
    code, steps, out = colab.run(FAKE_PIP_FAIL="requirements")
    assert code == 1, out
    assert colab.statuses(steps) == ["done", "skipped", "FAILED", None, None, None]
    assert steps["clone"][1] == f"cloned {colab.origin} at {colab.first_commit}"
    assert steps["requirements"][1].startswith("pip install -r requirements.txt exited 1")
    assert steps["requirements"][1].endswith("re-run to finish the set-up")
    assert not (colab.home / ".git" / "memelab-setup.json").exists()  # no stamp for a failed install

    code, steps, out = colab.run(FAKE_PIP_FAIL="editable")
    assert code == 1, out
    assert colab.statuses(steps) == ["skipped", "skipped", "done", "FAILED", None, None]
    assert steps["clone"][1] == f"a complete clone of {colab.origin} at {colab.first_commit}"

    code, steps, out = colab.run()
    assert code == 0, out
    assert colab.statuses(steps) == ["skipped", "skipped", "skipped", "done", "skipped", "skipped"]
    assert steps["nbhelpers"][1] == (
        f"installed nbhelpers 0.1.0 from {colab.home} in editable mode (commit {colab.first_commit})"
    )
    calls = colab.pip_calls()
    assert [call["kind"] for call in calls] == ["requirements", "requirements", "editable", "editable"]
    # Colab's torch and torchvision are never asked for; everything else is
    assert {call["requirements"] for call in calls[:2]} == {
        "# Colab keeps its torch\nnumpy>=1.24\ntqdm>=4.66\n"
    }
    assert calls[3]["args"] == ["install", "-q", "--no-deps", "-e", str(colab.home)]

    code, steps, out = colab.run()
    assert code == 0, out
    assert colab.statuses(steps) == ["skipped"] * 6
    assert (
        steps["requirements"][1]
        == "2 requirements installed already (stamp in the clone's .git/memelab-setup.json)"
    )
    assert steps["nbhelpers"][1] == f"nbhelpers 0.1.0 imports from {colab.home} (commit {colab.first_commit})"
    assert len(colab.pip_calls()) == 4  # pip was not run again


def test_a_clone_cut_short_is_cloned_afresh_and_missing_files_are_restored(colab):
    partial = colab.home.with_name("memelab.partial")
    (partial / ".git").mkdir(parents=True)  # what a killed clone leaves
    code, steps, out = colab.run()
    assert code == 0, out
    assert steps["clone"][0] == "done" and not partial.exists()
    assert (colab.home / "nbhelpers" / "__init__.py").read_text() == '__version__ = "0.1.0"\n'

    (colab.home / "requirements.txt").unlink()
    code, steps, out = colab.run()
    assert code == 0, out
    assert steps["clone"] == ("done", f"restored 1 missing tracked file(s) at {colab.first_commit}")
    assert (colab.home / "requirements.txt").read_text() == REQUIREMENTS


def test_a_folder_that_is_not_a_clone_is_left_alone(colab):
    colab.home.mkdir()
    (colab.home / "notes.txt").write_text("mine")
    code, steps, out = colab.run()
    assert code == 1
    assert steps["clone"][0] == "FAILED"
    assert "is not a git clone with a commit checked out: delete it or move it" in steps["clone"][1]
    assert [p.name for p in colab.home.iterdir()] == ["notes.txt"]
    assert colab.pip_calls() == []


def test_pull_only_when_asked_then_what_changed_is_installed_again(colab):
    assert colab.run()[0] == 0
    second = commit_version(colab.origin, "0.2.0", REQUIREMENTS + "pandas>=2.0\n")

    code, steps, out = colab.run()
    assert code == 0, out
    assert colab.statuses(steps) == ["skipped"] * 6
    assert steps["pull"][1] == "MEMELAB_PULL is not 1"

    code, steps, out = colab.run(MEMELAB_PULL="1")
    assert code == 0, out
    assert colab.statuses(steps) == ["skipped", "done", "done", "done", "skipped", "skipped"]
    assert steps["pull"][1] == f"{colab.first_commit} -> {second}"
    assert (
        steps["nbhelpers"][1]
        == f"installed nbhelpers 0.2.0 from {colab.home} in editable mode (commit {second})"
    )
    assert colab.pip_calls()[-2]["requirements"].endswith("tqdm>=4.66\npandas>=2.0\n")

    code, steps, out = colab.run(MEMELAB_PULL="1")
    assert code == 0, out
    assert steps["pull"] == ("done", f"already up to date at {second}")
    assert colab.statuses(steps)[2:] == ["skipped"] * 4


def test_drive_keeps_data_and_runs_and_existing_links_are_respected(colab):
    drive = colab.tmp / "drive" / "memelab"
    assert colab.run()[0] == 0
    (colab.home / "runs" / "clip-1").mkdir(parents=True)
    (colab.home / "runs" / "clip-1" / "run.json").write_text("{}")

    code, steps, out = colab.run(MEMELAB_DRIVE=str(drive))
    assert code == 0, out
    assert steps["drive"] == (
        "done",
        f"data/ links to {drive / 'data'}; "
        f"moved 1 entries of runs/ into {drive / 'runs'}, which runs/ now links to",
    )
    assert (colab.home / "runs").resolve() == (drive / "runs").resolve()
    assert (drive / "runs" / "clip-1" / "run.json").read_text() == "{}"
    assert (colab.home / "data").is_symlink()

    code, steps, out = colab.run(MEMELAB_DRIVE=str(drive))
    assert steps["drive"] == ("skipped", f"data/ and runs/ link into {drive} already")

    other = colab.tmp / "elsewhere"
    (colab.home / "data").unlink()
    (colab.home / "data").symlink_to(other)
    code, steps, out = colab.run(MEMELAB_DRIVE=str(drive))
    assert steps["drive"] == ("done", f"data/ now links to {drive / 'data'} (it linked to {other})")


def test_drive_refuses_to_overwrite_what_it_holds(colab):
    drive = colab.tmp / "drive" / "memelab"
    (drive / "runs" / "clip-1").mkdir(parents=True)
    assert colab.run()[0] == 0
    (colab.home / "runs" / "clip-1").mkdir(parents=True)
    code, steps, out = colab.run(MEMELAB_DRIVE=str(drive))
    assert code == 1
    assert steps["drive"][0] == "FAILED"
    assert f"{colab.home / 'runs'} and {drive / 'runs'} both hold clip-1: nothing moved" in steps["drive"][1]
    assert (colab.home / "runs").is_dir() and not (colab.home / "runs").is_symlink()


def test_outside_colab_it_does_nothing_unless_told(colab):
    code, steps, out = colab.run("--home", str(colab.home))  # no --outside-colab
    assert code == 2
    assert (
        out
        == "colab_setup.py: not on Colab, nothing done (--outside-colab --home DIR to set up DIR anyway)\n"
    )
    assert not colab.home.exists() and colab.pip_calls() == []


FAKE_COLAB = """
import sys, types
google, colab, output = (types.ModuleType(n) for n in ("google", "google.colab", "google.colab.output"))
output.enable_custom_widget_manager = lambda: print("(custom widget manager on)")
google.colab, colab.output = colab, output
sys.modules.update({"google": google, "google.colab": colab, "google.colab.output": output})
"""


def test_the_notebook_cell_on_colab_clones_then_sets_up_and_a_re_run_skips(colab):
    """The first cell of the notebooks, run in a "Colab kernel" (google.colab imported) with its clone
    folder moved into the temporary folder."""
    (colab.origin / "colab_setup.py").write_text(SETUP.read_text())
    git(colab.origin, "add", "-A")
    git(colab.origin, "commit", "-q", "-m", "set-up")
    head = git(colab.origin, "rev-parse", "--short=12", "HEAD").strip()
    notebook = json.loads((ROOT / "notebooks" / "01_prepare_webdataset.ipynb").read_text())
    cell = "".join(next(c for c in notebook["cells"] if c["cell_type"] == "code")["source"])
    assert cell.count('"/content/memelab"') == 1  # the one place it is named
    cell = cell.replace('"/content/memelab"', repr(str(colab.home)))
    assert not [
        line for line in cell.splitlines() if "/content" in line and not line.lstrip().startswith("#")
    ]
    script = FAKE_COLAB + cell + "\nprint('cwd', os.getcwd())\n"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMELAB_")}
    env.update(
        MEMELAB_REPO=str(colab.origin),
        MEMELAB_PIP=f"{sys.executable} {colab.tmp / 'fake_pip.py'}",
        FAKE_PIP_LOG=str(colab.pip_log),
        FAKE_SITE=str(colab.site),
        PYTHONPATH=str(colab.site),
    )

    def run():
        result = subprocess.run(
            [sys.executable, "-c", script],
            cwd=colab.tmp,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout.splitlines()

    lines = run()
    assert lines[0] == f"memelab set-up in {colab.home}"
    assert lines[1] == f"  clone         done: cloned {colab.origin} at {head}"
    assert [line.split(":")[0] for line in lines[2:6]] == [
        "  pull          skipped",
        "  requirements  done",
        "  nbhelpers     done",
        "  drive         skipped",
    ]
    assert lines[6:] == [
        "(custom widget manager on)",
        "  widgets       done: Colab's custom widget manager is on (ipywidgets 8 widgets display)",
        f"cwd {colab.home}",
    ]
    assert not colab.home.with_name("memelab.partial").exists()

    lines = run()
    assert [line.split(":")[0] for line in lines[1:5]] == [
        "  clone         skipped",
        "  pull          skipped",
        "  requirements  skipped",
        "  nbhelpers     skipped",
    ]
    assert lines[-1] == f"cwd {colab.home}"
