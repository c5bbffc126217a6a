"""Checkpoint faults: damaged files are named and never loaded, resume falls back, kills lose nothing."""

import hashlib
import json
import logging
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch

from nbhelpers.train.checkpoint import (
    BadCheckpointError,
    load_checkpoint,
    load_model_weights,
    record_checkpoint_digest,
    verify_checkpoint,
)
from nbhelpers.train.engine import NonFiniteLossError, fit
from nbhelpers.train.run_dir import checkpoint_path, digest_path, list_checkpoints
from tests.faults.checkpoint_fit import STALL_EPOCH, batches, make_model, step_fn, tiny_spec

ROOT = Path(__file__).resolve().parents[2]
SIGN_FLIPS = 1000
XORED_BYTES = 64


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """An uninterrupted 4-epoch run and its final weights."""
    run_dir = tmp_path_factory.mktemp("faults") / "reference"
    model = make_model()
    fit(model, step_fn, batches, tiny_spec(run_dir))
    return run_dir, {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture
def run(finished, tmp_path):
    """A copy of the finished run to damage."""
    return Path(shutil.copytree(finished[0], tmp_path / "run"))


def assert_same_weights(model, reference):
    state = model.state_dict()
    assert list(state) == list(reference)
    for name, value in reference.items():
        assert torch.equal(state[name], value), name


def xor_bytes(path, count=XORED_BYTES):
    """XORs ``count`` bytes spread over the file's second to last quarters with 0xFF."""
    data = bytearray(path.read_bytes())
    start, stop = len(data) // 4, len(data) - 64
    for i in range(count):
        data[start + i * (stop - start) // count] ^= 0xFF
    path.write_bytes(bytes(data))


def flip_sign_bits(path, count=SIGN_FLIPS):
    """Flips the sign bit of the first ``count`` float32 values of the first stored tensor (net.0.weight)."""
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith("/data/0"))
    data = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26 : info.header_offset + 30])
    first = info.header_offset + 30 + name_len + extra_len
    assert info.compress_type == zipfile.ZIP_STORED and info.file_size >= 4 * count
    for i in range(count):
        data[first + 4 * i + 3] ^= 0x80  # little-endian float32: the sign is the top bit of byte 3
    path.write_bytes(bytes(data))


def resume(run_dir, **spec):
    """Resumes the run in this process from a fresh, differently initialised model; returns it."""
    model = make_model(99)
    fit(model, step_fn, batches, tiny_spec(run_dir, **spec))
    return model


def dot_files(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob(".*"))


def test_truncated_checkpoint_is_named_with_the_bytes_left(run):
    path = checkpoint_path(run, 4)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(BadCheckpointError) as err:
        load_checkpoint(path)
    assert (
        str(err.value)
        == f"checkpoint {path} is truncated: {size // 2:,} of the {size:,} bytes written remain"
    )
    assert (err.value.path, err.value.unverified) == (path, False)


def test_empty_checkpoint_is_named(run):
    path = checkpoint_path(run, 4)
    path.write_bytes(b"")
    with pytest.raises(BadCheckpointError) as err:
        load_checkpoint(path)
    assert str(err.value) == f"checkpoint {path} is empty (0 bytes): not a checkpoint"


def test_files_that_are_not_checkpoints_are_named(run):
    replaced = checkpoint_path(run, 4)
    written = replaced.stat().st_size
    replaced.write_bytes(b"not a checkpoint at all")
    with pytest.raises(BadCheckpointError) as err:
        load_checkpoint(replaced)
    assert str(err.value) == (
        f"checkpoint {replaced} is not the checkpoint written here: it was replaced (23 bytes starting "
        f"b'not a checkpoint'; {written:,} bytes were written)"
    )
    text = checkpoint_path(run, 5)  # no digest: what the file is decides the message
    text.write_bytes(b"not a checkpoint at all")
    with pytest.raises(BadCheckpointError) as err:
        load_checkpoint(text)
    assert str(err.value) == (
        f"checkpoint {text} is not a checkpoint: not the zip archive torch.save writes "
        "(it starts b'not a checkpoint')"
    )
    weights = checkpoint_path(run, 6)
    torch.save({"weight": torch.zeros(2)}, weights)
    with pytest.raises(BadCheckpointError) as err:
        load_checkpoint(weights)
    assert str(err.value) == f"checkpoint {weights} is not a checkpoint of format 1 (found None)"
    assert not err.value.unverified


def test_flipped_sign_bits_are_caught_and_resume_retrains_the_epoch(run, finished):
    path = checkpoint_path(run, 4)
    recorded = json.loads(digest_path(path).read_text())["sha256"]
    before = torch.load(path, weights_only=True)["model"]["net.0.weight"]
    flip_sign_bits(path)
    after = torch.load(path, weights_only=True)["model"]["net.0.weight"]  # still loads: only the digest tells
    assert int((after != before).sum()) == SIGN_FLIPS and torch.equal(after.abs(), before.abs())
    with pytest.raises(BadCheckpointError) as err:
        load_checkpoint(path)
    now = hashlib.sha256(path.read_bytes()).hexdigest()
    assert str(err.value) == (
        f"checkpoint {path} has changed since it was written: same size ({path.stat().st_size:,} bytes) but "
        f"SHA-256 {now[:16]}..., not the {recorded[:16]}... recorded (flipped bits or overwritten bytes: disk, "
        "copy or sync corruption)"
    )
    with pytest.warns(
        UserWarning, match=r"^resuming from epoch_0003\.pt \(epoch 3\).*skipped epoch_0004\.pt \(has changed"
    ):
        model = resume(run)
    assert_same_weights(model, finished[1])
    verify_checkpoint(path)  # epoch 4 written again, with its digest
    retrained = load_checkpoint(path)["model"]
    assert all(torch.equal(retrained[k], v) for k, v in finished[1].items())


def test_xored_bytes_are_caught_and_a_non_finite_loss_names_the_verified_checkpoint(run):
    path = checkpoint_path(run, 4)
    xor_bytes(path)
    with pytest.raises(
        BadCheckpointError, match=r"^checkpoint .*epoch_0004\.pt has changed since it was written: same size"
    ):
        load_checkpoint(path)

    def nan_loss(model, batch):
        loss, logs = step_fn(model, batch)
        return loss * float("nan"), logs

    with pytest.warns(UserWarning, match="skipped epoch_0004.pt"), pytest.raises(NonFiniteLossError) as err:
        fit(make_model(99), nan_loss, batches, tiny_spec(run))
    assert err.value.last_checkpoint == checkpoint_path(run, 3)
    assert str(err.value) == (
        "non-finite training state at epoch 4, optimiser step 10: loss is nan; last good checkpoint: "
        f"{checkpoint_path(run, 3)} (kept; resume=True restarts from it)"
    )


def test_checkpoint_without_its_digest_is_unverified_and_skipped(run, finished):
    path = checkpoint_path(run, 4)
    digest_path(path).unlink()
    with pytest.raises(BadCheckpointError) as err:
        load_checkpoint(path)
    assert str(err.value) == (
        f"checkpoint {path} has no digest file epoch_0004.pt.sha256.json, so it cannot be verified (copied "
        "without it, or written before checkpoints recorded their SHA-256); if you trust it, record its "
        "digest with nbhelpers.train.checkpoint.record_checkpoint_digest"
    )
    assert err.value.unverified
    with pytest.warns(
        UserWarning, match=r"^resuming from epoch_0003\.pt .*skipped epoch_0004\.pt \(has no digest"
    ):
        assert_same_weights(resume(run), finished[1])
    assert verify_checkpoint(path)  # written again, with its digest


def test_unreadable_digest_file_makes_the_checkpoint_unverified(run):
    path = checkpoint_path(run, 4)
    digest_path(path).write_text('{"sha256": "ab')
    with pytest.raises(
        BadCheckpointError,
        match=r"cannot be verified: its digest file epoch_0004\.pt\.sha256\.json is unreadable \(JSONDecodeError",
    ) as err:
        verify_checkpoint(path)
    assert err.value.unverified


def test_stale_temporaries_are_removed_on_resume_and_nothing_else(run, caplog):
    ckpts = run / "checkpoints"
    stale = [ckpts / ".epoch_0005.pt.k2j_9x0a.tmp", run / ".history.json.abcdefgh.tmp"]
    for path in stale:
        path.write_bytes(b"half a file")
    kept = [
        ckpts / ".epoch_0005.pt.short.tmp",  # not mkstemp's 8 characters
        ckpts / "epoch_0005.pt.abcdefgh.tmp",  # not dot-prefixed
        run / ".notes",
        run / "notes.tmp",
        run / "classifier" / ".epoch_0001.pt.abcdefgh.tmp",  # another folder
    ]
    for path in kept:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"keep")
    (ckpts / ".dir.abcdefgh.tmp").mkdir()  # not a file
    (run / ".link.abcdefgh.tmp").symlink_to(run / "notes.tmp")  # not a regular file
    with caplog.at_level(logging.WARNING, logger="nbhelpers.train.run_dir"):
        resume(run)  # a finished run: nothing is trained
    assert [r.getMessage() for r in caplog.records if r.name == "nbhelpers.train.run_dir"] == [
        f"removed {path} (11 bytes): the temporary file of a write that was cut off" for path in sorted(stale)
    ]
    assert not any(path.exists() for path in stale)
    assert all(path.read_bytes() == b"keep" for path in kept)
    assert (ckpts / ".dir.abcdefgh.tmp").is_dir() and (run / ".link.abcdefgh.tmp").is_symlink()


def test_resume_falls_back_to_the_newest_good_checkpoint_naming_each_skipped_file(run, finished):
    four, three = checkpoint_path(run, 4), checkpoint_path(run, 3)
    size = four.stat().st_size
    with open(four, "r+b") as f:
        f.truncate(1000)
    digest_path(three).unlink()
    with pytest.warns(UserWarning) as warned:
        model = resume(run)
    assert [str(w.message) for w in warned] == [
        f"resuming from epoch_0002.pt (epoch 2), the newest good checkpoint of {run / 'checkpoints'}; skipped "
        f"epoch_0004.pt (is truncated: 1,000 of the {size:,} bytes written remain); epoch_0003.pt (has no "
        "digest file epoch_0003.pt.sha256.json, so it cannot be verified (copied without it, or written "
        "before checkpoints recorded their SHA-256); if you trust it, record its digest with "
        "nbhelpers.train.checkpoint.record_checkpoint_digest); each is overwritten when its epoch finishes again"
    ]
    assert_same_weights(model, finished[1])
    for _, path in list_checkpoints(run):
        verify_checkpoint(path)


def test_no_good_checkpoint_restarts_from_epoch_0_with_a_warning(run, finished):
    for epoch in (1, 2, 3, 4):
        xor_bytes(checkpoint_path(run, epoch))
    model = make_model()  # from scratch, so initialised as the reference was
    with pytest.warns(UserWarning) as warned:
        fit(model, step_fn, batches, tiny_spec(run))
    (message,) = [str(w.message) for w in warned]
    assert message.startswith(
        f"no good checkpoint in {run / 'checkpoints'}: skipped epoch_0004.pt (has changed"
    )
    assert [
        m.group(1) for m in re.finditer(r"(epoch_000\d\.pt) \(has changed since it was written", message)
    ] == ["epoch_0004.pt", "epoch_0003.pt", "epoch_0002.pt", "epoch_0001.pt"]
    assert message.endswith(
        "none holds training that could be lost, so training restarts from epoch 0 and overwrites them as "
        "epochs finish"
    )
    assert_same_weights(model, finished[1])  # trained from scratch: the same run
    for _, path in list_checkpoints(run):
        verify_checkpoint(path)


def test_no_good_checkpoint_but_an_unverified_one_is_refused_not_overwritten(run):
    for epoch in (1, 2, 3, 4):
        digest_path(checkpoint_path(run, epoch)).unlink()
    before = {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}
    with pytest.raises(BadCheckpointError) as err:
        resume(run)
    assert str(err.value).startswith(f"checkpoint {checkpoint_path(run, 4)} has no digest file")
    assert (
        f"No checkpoint of {run / 'checkpoints'} is good, and training does not restart from epoch 0 over one "
        f"that may be; to restart, delete {run / 'checkpoints'}. Skipped: epoch_0004.pt (has no digest"
    ) in str(err.value)
    assert {p: p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()} == before
    record_checkpoint_digest(checkpoint_path(run, 4))  # vouched for: the finished run resumes, untrained
    model = resume(run)
    assert_same_weights(model, load_checkpoint(checkpoint_path(run, 4))["model"])


def test_load_model_weights_never_loads_a_bad_file(run):
    path = checkpoint_path(run, 4)
    flip_sign_bits(path)
    model = make_model(5)
    untouched = {k: v.clone() for k, v in model.state_dict().items()}
    for target in (run, path):  # a run directory (its latest checkpoint) or the file
        with pytest.raises(BadCheckpointError, match=f"^checkpoint {re.escape(str(path))} has changed since"):
            load_model_weights(model, target)
    assert_same_weights(model, untouched)


def test_non_finite_loss_never_names_a_checkpoint_damaged_during_training(tmp_path):
    calls = []

    def nan_at_step_8(model, batch):
        calls.append(1)
        loss, logs = step_fn(model, batch)
        return (loss * float("nan") if len(calls) == 8 else loss), logs

    def damage_epoch_2(model, step, total):
        if step == 7:  # epoch 3's first step: epoch_0002.pt was written and verified
            xor_bytes(checkpoint_path(tmp_path / "run", 2))

    with pytest.raises(NonFiniteLossError) as err:
        fit(make_model(), nan_at_step_8, batches, tiny_spec(tmp_path / "run"), on_step_end=damage_epoch_2)
    assert (err.value.epoch, err.value.step) == (3, 8)
    assert err.value.last_checkpoint == checkpoint_path(tmp_path / "run", 1)
    assert "epoch_0002" not in str(err.value)


def test_keep_last_never_deletes_the_newest_good_checkpoint(run, finished):
    checkpoint_path(run, 1).unlink()
    digest_path(checkpoint_path(run, 1)).unlink()
    xor_bytes(checkpoint_path(run, 3))
    xor_bytes(checkpoint_path(run, 4))
    bad_four = checkpoint_path(run, 4).read_bytes()

    def stop_in_epoch_4(model, step, total):
        if step == 10:
            raise KeyboardInterrupt

    with pytest.warns(UserWarning, match="resuming from epoch_0002.pt"), pytest.raises(KeyboardInterrupt):
        fit(make_model(99), step_fn, batches, tiny_spec(run, keep_last=1), on_step_end=stop_in_epoch_4)
    # Epoch 3, just written, is kept; epoch 2 is pruned; the bad epoch 4 is left to be overwritten.
    assert [e for e, _ in list_checkpoints(run)] == [3, 4]
    verify_checkpoint(checkpoint_path(run, 3))
    assert (
        checkpoint_path(run, 4).read_bytes() == bad_four and not digest_path(checkpoint_path(run, 2)).exists()
    )
    with pytest.warns(UserWarning, match=r"resuming from epoch_0003\.pt .*skipped epoch_0004\.pt"):
        model = resume(run, keep_last=1)
    assert_same_weights(model, finished[1])
    assert [e for e, _ in list_checkpoints(run)] == [4]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "epoch_0004.pt",
        "epoch_0004.pt.sha256.json",
        "latest.json",
    ]


@pytest.mark.parametrize("stall", ["mid-write", "before-rename"])
def test_a_run_killed_while_writing_a_checkpoint_resumes_bit_exactly(stall, finished, tmp_path, caplog):
    run_dir, marker, log = tmp_path / "killed", tmp_path / "stalled", tmp_path / "child.log"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    with open(log, "wb") as out:
        child = subprocess.Popen(
            [sys.executable, "-m", "tests.faults.checkpoint_fit", str(run_dir), stall, str(marker)],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert child.poll() is None, f"the child exited with {child.returncode}: {log.read_text()}"
            assert time.monotonic() < deadline, f"the child never reached the checkpoint: {log.read_text()}"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()

    ckpts = run_dir / "checkpoints"
    (temporary,) = [p for p in ckpts.iterdir() if p.name.startswith(".")]
    assert re.fullmatch(rf"\.epoch_{STALL_EPOCH:04d}\.pt\.[a-z0-9_]{{8}}\.tmp", temporary.name)
    assert [e for e, _ in list_checkpoints(run_dir)] == [1, 2]
    # The digest is written before the checkpoint is renamed into place: here it may stand alone.
    assert digest_path(checkpoint_path(run_dir, STALL_EPOCH)).exists() == (stall == "before-rename")
    size = temporary.stat().st_size
    assert size > 0

    with caplog.at_level(logging.WARNING, logger="nbhelpers.train.run_dir"):
        model = resume(run_dir)
    assert [r.getMessage() for r in caplog.records if r.name == "nbhelpers.train.run_dir"] == [
        f"removed {temporary} ({size} bytes): the temporary file of a write that was cut off"
    ]
    assert_same_weights(model, finished[1])
    assert dot_files(run_dir) == []
    assert [e for e, _ in list_checkpoints(run_dir)] == [1, 2, 3, 4]
    for _, path in list_checkpoints(run_dir):
        verify_checkpoint(path)
