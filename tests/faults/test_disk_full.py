"""No room to write (a full disk, a quota, the file size limit): one error naming the file, and nothing
half-written that a re-run trusts.

A full disk is simulated without root with ``RLIMIT_FSIZE`` in a child process that ignores ``SIGXFSZ``:
a write past the limit then fails with ``EFBIG``, as a write to a full disk fails with ``ENOSPC``; both
take the same path through :func:`nbhelpers.fileio.atomic_open`.
"""

from __future__ import annotations

import errno
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from nbhelpers.data.prepare import PrepareConfig, prepare
from nbhelpers.data.shards import PREVIOUS_MANIFEST
from nbhelpers.data.verify import verify
from nbhelpers.fileio import NoSpaceError, atomic_open, read_json, write_json_atomic
from nbhelpers.train.engine import fit
from nbhelpers.train.run_dir import list_checkpoints
from tests.faults.checkpoint_fit import STALL_EPOCH, batches, make_model, step_fn, tiny_spec

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE and SIGXFSZ are POSIX")

#: Run a Python snippet under a file size limit of ``sys.argv[1]`` bytes (0: none), SIGXFSZ ignored.
LIMITED = textwrap.dedent(
    """
    import resource, signal, sys
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    limit = int(sys.argv.pop(1))
    if limit:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    """
)


def _child(code: str, *args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    return subprocess.run(
        [sys.executable, "-c", LIMITED + textwrap.dedent(code), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def _dot_files(folder: Path) -> list[str]:
    """Hidden files other than shard sidecars and the manifest a rewrite moved aside: temporaries."""
    kept = (".stats.json", PREVIOUS_MANIFEST)
    return sorted(p.name for p in folder.rglob(".*") if not p.name.endswith(kept))


@pytest.mark.parametrize("cause", [errno.ENOSPC, errno.EFBIG])
def test_a_write_with_no_room_names_the_file_and_keeps_the_old_one(tmp_path, cause):
    target = tmp_path / "manifest.json"
    write_json_atomic(target, {"v": 1})
    with pytest.raises(NoSpaceError) as caught, atomic_open(target, "w") as f:
        f.write('{"v": 2, "tru')
        raise OSError(cause, os.strerror(cause))
    err = caught.value
    assert err.errno == cause and err.filename == str(target)
    assert str(err).startswith(f"{target}: cannot write it: ")
    assert ("no space left" in str(err)) == (cause == errno.ENOSPC)
    assert read_json(target) == {"v": 1} and sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]
    # it crosses a process boundary (a shard-writing worker) intact
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is NoSpaceError and str(again) == str(err) and again.errno == cause
    # a library that turns the OSError into its own error (torch.save: a RuntimeError) is seen through
    with pytest.raises(NoSpaceError, match="no space left"), atomic_open(tmp_path / "x.pt", "wb"):
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc] unexpected pos") from None
    # any other error passes unchanged
    with pytest.raises(OSError) as other, atomic_open(tmp_path / "y.json", "w"):
        raise OSError(errno.EIO, "Input/output error")
    assert type(other.value) is OSError


PREPARE = """
from nbhelpers.data.prepare import main
main(sys.argv[1:])
"""


SIZES = {"synthetic_train": 24, "synthetic_val": 4, "synthetic_test": 4, "synthetic_unseen": 4}


def _prepare(out: Path, seed: int) -> None:
    config = PrepareConfig.from_params("demo", out_dir=str(out), image_size=32, seed=seed, workers=1, **SIZES)
    prepare(config, progress=False)


def test_prepare_on_a_full_disk_fails_naming_the_shard_and_a_rerun_rebuilds_it(tmp_path):
    out = tmp_path / "shards"
    source = out / "synthetic"
    _prepare(out, seed=0)
    old_train = (source / "train-00000.tar").read_bytes()

    # new inputs (another seed) on a disk with room for small files only: the 24-sample train shard
    # (about 80 kB) does not fit; written by a pool worker (workers=2), through the command line
    args = ["--out_dir", str(out), "--image_size", "32", "--seed", "1", "--workers", "2"]
    args += [arg for name, n in SIZES.items() for arg in (f"--{name}", str(n))]
    full = _child(PREPARE, str(32 * 1024), *args)
    assert full.returncode == 1
    line = full.stderr.strip().splitlines()[-1]
    assert line.startswith(f"nbhelpers.data.prepare: error: {source / 'train-00000.tar'}: cannot write it: ")
    assert "file size limit" in line and "Traceback" not in full.stderr
    # nothing half-written: no temporary file, and the shard is still the complete one of seed 0
    assert _dot_files(source) == []
    assert (source / "train-00000.tar").read_bytes() == old_train

    # the re-run with room rebuilds the shard (its sidecar's fingerprint is seed 0's): it equals a clean run
    _prepare(out, seed=1)
    _prepare(tmp_path / "clean", seed=1)
    for shard in sorted(source.glob("*.tar")):
        assert shard.read_bytes() == (tmp_path / "clean" / "synthetic" / shard.name).read_bytes(), shard.name
    assert (source / "train-00000.tar").read_bytes() != old_train
    assert verify(source).ok


# Epoch STALL_EPOCH's checkpoint finds the disk full (a file size limit while torch.save writes it).
TRAIN = """
from pathlib import Path
import resource
import torch
from nbhelpers.train.engine import fit
from tests.faults.checkpoint_fit import STALL_EPOCH, batches, make_model, step_fn, tiny_spec

real_save = torch.save

def save_on_a_full_disk(obj, f, *args, **kwargs):
    if not (isinstance(obj, dict) and obj.get("epoch") == STALL_EPOCH):
        return real_save(obj, f, *args, **kwargs)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
    try:
        return real_save(obj, f, *args, **kwargs)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))

torch.save = save_on_a_full_disk
fit(make_model(), step_fn, batches, tiny_spec(Path(sys.argv[1])))
"""


def test_a_checkpoint_on_a_full_disk_fails_naming_it_and_the_resume_ignores_it(tmp_path):
    reference = make_model()
    fit(reference, step_fn, batches, tiny_spec(tmp_path / "reference"))

    run_dir = tmp_path / "full"
    done = _child(TRAIN, "0", str(run_dir))
    assert done.returncode != 0
    checkpoint = run_dir / "checkpoints" / f"epoch_{STALL_EPOCH:04d}.pt"
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith(f"nbhelpers.fileio.NoSpaceError: {checkpoint}: cannot write it: ")
    ), done.stderr[-2000:]
    # no partial checkpoint, digest or temporary file: the newest checkpoint is the epoch before
    assert [e for e, _ in list_checkpoints(run_dir)] == [1, STALL_EPOCH - 1]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
        *(f"epoch_{e:04d}.pt{suffix}" for e in (1, STALL_EPOCH - 1) for suffix in ("", ".sha256.json")),
        "latest.json",
    ]
    assert read_json(run_dir / "checkpoints" / "latest.json")["epoch"] == STALL_EPOCH - 1

    resumed = make_model(99)
    fit(resumed, step_fn, batches, tiny_spec(run_dir))
    for name, value in reference.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], value), name
