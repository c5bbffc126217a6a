"""One writer per run and shard folder (real processes), and SIGINT/SIGTERM stops that resume exactly."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from nbhelpers.data.prepare import PrepareConfig, prepare
from nbhelpers.data.shards import shard_stats_path
from nbhelpers.folder_lock import FolderBusyError, hold_folder, lock_path, read_holder
from nbhelpers.stop_signals import stop_requests
from nbhelpers.train.engine import fit
from nbhelpers.train.run_dir import checkpoint_path, list_checkpoints, read_json
from nbhelpers.train.run_lock import hold_bound_run, locks_its_run
from nbhelpers.train.stopped import stopped_path
from tests.faults.checkpoint_fit import batches, make_model, step_fn, tiny_spec
from tests.faults.stop_children import PREPARE_PARAMS

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 120
pytestmark = [
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and flock"),
    pytest.mark.slow,  # child processes: about 10 s each on a loaded 2-core machine
]


def child(tmp_path, name, *args):
    """Starts ``python -m tests.faults.stop_children *args``; stdout and stderr go to files in tmp_path."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MEMELAB_PROGRESS": "off"}
    out, err = (open(tmp_path / f"{name}.{s}", "w") for s in ("out", "err"))  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.faults.stop_children", *map(str, args)],
        cwd=ROOT,
        env=env,
        stdout=out,
        stderr=err,
    )
    proc.logs = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
    return proc


def wait_for(predicate, proc=None, what="it"):
    deadline = time.monotonic() + TIMEOUT_S
    while not predicate():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the child ended ({proc.returncode}) before {what}: {proc.logs[1].read_text()}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def finish(proc):
    proc.wait(TIMEOUT_S)
    return proc.returncode, proc.logs[0].read_text(), proc.logs[1].read_text()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of the tiny spec: its final weights and history."""
    run_dir = tmp_path_factory.mktemp("stops") / "reference"
    model = make_model()
    history = fit(model, step_fn, batches, tiny_spec(run_dir))
    return {k: v.clone() for k, v in model.state_dict().items()}, history


def assert_same_weights(state, reference):
    assert list(state) == list(reference)
    for name, value in reference.items():
        assert torch.equal(state[name], value), name


# Locks ----------------------------------------------------------------------------------------------


def test_a_second_training_process_fails_or_waits_then_trains_nothing(tmp_path, reference):
    run_dir, release = tmp_path / "run", tmp_path / "release"
    holder = child(
        tmp_path, "a", "train", run_dir, tmp_path / "a.marker", 2, "wait", release, tmp_path / "a.pt"
    )
    wait_for((tmp_path / "a.marker").exists, holder, "the first process trains")

    failing = child(
        tmp_path, "b", "train", run_dir, tmp_path / "b.marker", 0, "fail", release, tmp_path / "b.pt"
    )
    code, _, err = finish(failing)
    assert code != 0 and "FolderBusyError" in err
    assert f"run {run_dir} is in use by process {holder.pid}" in err
    assert not (tmp_path / "b.marker").exists()

    waiting = child(
        tmp_path, "c", "train", run_dir, tmp_path / "c.marker", 0, "wait", release, tmp_path / "c.pt"
    )
    wait_for(lambda: "waiting for it to finish" in waiting.logs[1].read_text(), waiting, "the waiting line")
    assert f"process {holder.pid}" in waiting.logs[1].read_text()
    release.touch()
    assert finish(holder)[0] == 0
    code, out, err = finish(waiting)
    assert code == 0, err
    assert json.loads(out.splitlines()[-1]) == {"steps": 0}  # it found the run finished
    assert_same_weights(torch.load(tmp_path / "c.pt", weights_only=True), reference[0])
    assert_same_weights(torch.load(tmp_path / "a.pt", weights_only=True), reference[0])


def test_the_lock_of_a_killed_process_does_not_block(tmp_path, reference):
    run_dir = tmp_path / "run"
    holder = child(tmp_path, "a", "train", run_dir, tmp_path / "a.marker", 4, "wait", tmp_path / "never", "-")
    wait_for((tmp_path / "a.marker").exists, holder, "the first process trains")
    assert read_holder(run_dir)["pid"] == holder.pid
    holder.kill()  # SIGKILL: no clean-up runs
    holder.wait(TIMEOUT_S)
    model = make_model()
    fit(model, step_fn, batches, tiny_spec(run_dir, on_busy="fail"))  # resumes from epoch 1
    assert_same_weights(model.state_dict(), reference[0])
    assert read_holder(run_dir)["pid"] == os.getpid()


def test_a_recipe_run_holds_its_folder_until_it_returns(tmp_path):
    folder = tmp_path / "run"
    probe = (
        "import sys; from nbhelpers.folder_lock import hold_folder, FolderBusyError\n"
        "try:\n    with hold_folder(sys.argv[1], 'fail'): print('free')\n"
        "except FolderBusyError as err: print('busy', err)"
    )

    def other_process_sees():
        done = subprocess.run(
            [sys.executable, "-c", probe, str(folder)], capture_output=True, text=True, cwd=ROOT
        )
        return done.stdout.split()[0]

    @locks_its_run
    def run():
        hold_bound_run(folder)  # what RecipeConfig.bind does
        hold_bound_run(folder)  # re-entrant (fit asks again)
        return other_process_sees()

    assert run() == "busy"
    assert other_process_sees() == "free"


def test_one_process_holds_a_folder_once_and_fails_fast_for_others(tmp_path):
    with hold_folder(tmp_path / "f", "fail"):
        with hold_folder(tmp_path / "f", "fail"):  # the same process again: re-entrant
            pass
        assert lock_path(tmp_path / "f") == tmp_path / ".f.lock" and (tmp_path / ".f.lock").is_file()
        assert not (tmp_path / "f").exists()  # the folder itself is left to its writer
    with pytest.raises(ValueError, match="on_busy"):
        with hold_folder(tmp_path / "f", "later"):
            pass
    assert isinstance(FolderBusyError(tmp_path, {"pid": 7, "host": "h"}), RuntimeError)


def test_a_second_prepare_fails_or_waits_then_keeps_the_shards(tmp_path):
    out, release = tmp_path / "shards", tmp_path / "release"
    first = child(tmp_path, "a", "prepare", out, tmp_path / "a.marker", 12, 1, release)
    wait_for((tmp_path / "a.marker").exists, first, "the first prepare writes")
    failing = child(tmp_path, "b", "prepare", out, tmp_path / "b.marker", 0, 1, release, "--on_busy", "fail")
    code, _, err = finish(failing)
    assert code != 0 and f"shard folder {out / 'synthetic'} is in use by process {first.pid}" in err
    # pausing at its first image encoded would mark that it wrote a shard
    waiting = child(tmp_path, "c", "prepare", out, tmp_path / "c.marker", 1, 1, release)
    wait_for(lambda: "waiting for it to finish" in waiting.logs[1].read_text(), waiting, "the waiting line")
    release.touch()
    assert finish(first)[0] == 0
    assert finish(waiting)[0] == 0
    assert not (tmp_path / "c.marker").exists()  # it found every shard complete and kept it
    assert read_json(out / "synthetic" / "manifest.json")["splits"]["train"]["num_samples"] > 0


# Stops ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("signum", "pause_at", "inside_epoch"),
    [(signal.SIGINT, 5, True), (signal.SIGTERM, 4, True), (signal.SIGTERM, 6, False)],
    ids=["sigint-mid-epoch", "sigterm-mid-epoch", "sigterm-epoch-end"],
)
def test_a_stopped_training_run_resumes_to_the_same_weights(
    tmp_path, reference, signum, pause_at, inside_epoch
):
    run_dir = tmp_path / "run"
    proc = child(
        tmp_path, "a", "train", run_dir, tmp_path / "marker", pause_at, "wait", tmp_path / "never", "-"
    )
    wait_for((tmp_path / "marker").exists, proc, "the pause")
    proc.send_signal(signum)
    code, _, err = finish(proc)
    if signum == signal.SIGINT:
        assert code in (-signal.SIGINT, 1, 130) and "KeyboardInterrupt" in err
    else:
        assert code == 128 + signal.SIGTERM, err
    assert f"{signal.Signals(signum).name} received: stopping training" in err
    # the folder: whole epochs checkpointed, plus the stop's checkpoint inside an epoch; no temporaries
    epochs = pause_at // 3  # tiny_spec: 3 optimiser steps per epoch
    assert [e for e, _ in list_checkpoints(run_dir)] == list(range(1, epochs + 1))
    assert stopped_path(run_dir).is_file() == inside_epoch
    assert not [p for p in run_dir.rglob("*.tmp")]
    if inside_epoch:
        state = torch.load(stopped_path(run_dir), weights_only=True)
        assert (state["epoch"], state["global_step"]) == (epochs, pause_at)
        assert state["extra"]["stopped"]["micro"] == pause_at % 3

    model = make_model()
    history = fit(model, step_fn, batches, tiny_spec(run_dir))
    assert_same_weights(model.state_dict(), reference[0])
    assert [e["loss"] for e in history["epochs"]] == [e["loss"] for e in reference[1]["epochs"]]
    assert not stopped_path(run_dir).exists()  # superseded by the next epoch's checkpoint
    assert checkpoint_path(run_dir, 4).is_file()


def prepare_config(**overrides) -> PrepareConfig:
    return PrepareConfig.from_params("demo", **{**PREPARE_PARAMS, **overrides})


def shard_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.tar"))}


@pytest.mark.parametrize(("signum", "workers"), [(signal.SIGTERM, 1), (signal.SIGINT, 2)])
def test_a_stopped_prepare_leaves_a_consistent_folder_that_resumes(tmp_path, signum, workers):
    reference = prepare(prepare_config(out_dir=str(tmp_path / "ref")), progress=False)
    out = tmp_path / "shards"
    # An earlier, different prepare in the folder: its manifest must not outlive the shards it describes.
    prepare(prepare_config(out_dir=str(out), seed=1), progress=False)
    proc = child(tmp_path, "a", "prepare", out, tmp_path / "marker", 12, workers, tmp_path / "release")
    wait_for((tmp_path / "marker").exists, proc, "the pause mid-shard")
    proc.send_signal(signum)
    if workers > 1:  # the shard under way in a worker is finished: let it go once the stop is in
        wait_for(lambda: "received: stopping prepare" in proc.logs[1].read_text(), proc, "the stop line")
        (tmp_path / "release").touch()
    code, _, err = finish(proc)
    assert code in ((-signal.SIGINT, 1, 130) if signum == signal.SIGINT else (128 + signal.SIGTERM,)), err
    folder = out / "synthetic"
    assert not (folder / "manifest.json").exists() and not (folder / "sizes.json").exists()
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]
    for tar in folder.glob("*.tar"):  # every shard is whole: its sidecar was written after it
        assert shard_stats_path(tar).is_file(), tar

    # the first shard, written before the stop, is already the new one (the re-run keeps it)
    assert (folder / "train-00000.tar").read_bytes() == (
        tmp_path / "ref" / "synthetic" / "train-00000.tar"
    ).read_bytes()
    resumed = prepare(prepare_config(out_dir=str(out)), progress=False)
    assert shard_files(folder) == shard_files(tmp_path / "ref" / "synthetic")
    for split, info in reference["splits"].items():
        assert {k: v for k, v in resumed["splits"][split].items() if k != "resumed_shards"} == {
            k: v for k, v in info.items() if k != "resumed_shards"
        }


# The signal handling itself --------------------------------------------------------------------------


def test_stop_requests_record_the_signal_and_restore_the_handlers():
    before = signal.getsignal(signal.SIGTERM)
    with stop_requests("the test") as request:
        assert not request and request.installed
        os.kill(os.getpid(), signal.SIGTERM)
        wait_for(lambda: bool(request), what="the handler")
        assert request.signum == signal.SIGTERM
        with pytest.raises(SystemExit) as stopped:
            request.stop()
        assert stopped.value.code == 143
    assert signal.getsignal(signal.SIGTERM) is before


def test_stop_requests_install_nothing_outside_the_main_thread():
    seen = {}

    def body():
        with stop_requests() as request:
            seen["installed"] = request.installed

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert seen == {"installed": False}
