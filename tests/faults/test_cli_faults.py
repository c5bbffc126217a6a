"""Faults of the command lines and of the files and processes they leave: hostile shards handed to the
open_clip entry point, missing shards, file permissions under a umask, pool workers of a killed
``prepare``, and an explicit ``null`` on the command line."""

from __future__ import annotations

import builtins
import io
import json
import os
import pickle
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import psutil
import pytest
import torch
import webdataset
from PIL import Image
from webdataset import autodecode, filters

from nbhelpers.config import NULL, ConfigError, preset_values
from nbhelpers.data import shards as shard_writer
from nbhelpers.data.prepare import main as prepare_main
from nbhelpers.data.records import Record
from nbhelpers.fileio import atomic_open, current_umask, write_json_atomic
from nbhelpers.parameters import notebook_config
from nbhelpers.train.__main__ import main as train_main
from nbhelpers.train.checkpoint import save_checkpoint
from nbhelpers.train.open_clip_cli import check_shards, disable_pickle_decoders, shard_options
from nbhelpers.train.recipes.clip_classifier import ClipClassifierConfig
from nbhelpers.train.recipes.ssl import SSLConfig
from nbhelpers.train.run_dir import list_checkpoints
from tests.helpers import make_shards

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


class _CreatesFile:
    """Unpickles as ``open(path, "w")``: the marker file appears iff the pickle was decoded."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return builtins.open, (self.path, "w")


def _jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(out, format="JPEG")
    return out.getvalue()


def _write_tar(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            if name.endswith("/"):
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
                continue
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return path


def _sample(key: str = "s0") -> dict[str, bytes]:
    return {f"{key}.jpg": _jpeg(), f"{key}.txt": b"a red square", f"{key}.json": b'{"label": 0}'}


def _crafted_shard(path: Path, marker: Path, extension: str = "pyd") -> Path:
    return _write_tar(path, {**_sample(), f"s0.{extension}": pickle.dumps(_CreatesFile(marker))})


def _cli(*args: str, timeout: float = 60) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "nbhelpers.train.open_clip_cli", *args],
        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    return done, time.monotonic() - start


def _train_args(train_data: str, logs: Path, *extra: str) -> list[str]:
    return [
        "--dataset-type", "webdataset", "--train-data", train_data, "--train-num-samples", "1",
        "--model", "memelab-tiny-vit", "--batch-size", "1", "--epochs", "1", "--workers", "0",
        "--device", "cpu", "--precision", "fp32", "--report-to", "", "--logs", str(logs), "--name", "x",
        *extra,
    ]  # fmt: skip


@pytest.fixture
def restored_webdataset(monkeypatch):
    """webdataset's decoder registries as installed, put back after the test."""
    monkeypatch.setattr(autodecode, "decoders", dict(autodecode.decoders))
    monkeypatch.setattr(filters, "default_decoders", list(filters.default_decoders))
    monkeypatch.setattr(webdataset, "decode", webdataset.decode)


# --- 1: a crafted pickle in a shard ------------------------------------------------------------------


def test_crafted_pickle_shard_is_refused_by_the_cli_before_training(tmp_path):
    marker = tmp_path / "pwned"
    shard = _crafted_shard(tmp_path / "train-00000.tar", marker)
    done, seconds = _cli(*_train_args(str(shard), tmp_path / "logs"))
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"{shard}: member 's0.pyd' is not an image, txt or json" in done.stderr
    assert "--train-data: refused before training, 1 of 1 shards" in done.stderr
    assert not marker.exists()
    assert not (tmp_path / "logs").exists()  # nothing trained, no run folder
    assert seconds < 20


def test_webdataset_decodes_no_pickle_once_disabled(tmp_path, restored_webdataset):
    def decode_all(shard: Path) -> list[dict]:
        pipeline = webdataset.DataPipeline(
            webdataset.SimpleShardList(str(shard)),
            webdataset.tarfile_to_samples(),
            webdataset.decode("pilrgb"),
        )
        return list(pipeline)

    # Webdataset as installed runs the crafted pickle: the hazard this guards against.
    before = tmp_path / "before"
    decode_all(_crafted_shard(tmp_path / "a.tar", before))
    assert before.exists()

    assert disable_pickle_decoders() == [
        "cbor",
        "mp",
        "msg",
        "npy",
        "npz",
        "pickle",
        "pth",
        "pyd",
        "tb",
        "ten",
    ]
    assert disable_pickle_decoders() == []  # idempotent
    after = tmp_path / "after"
    payloads = {ext: pickle.dumps(_CreatesFile(after)) for ext in ("pyd", "pickle", "pth")}
    shard = _write_tar(tmp_path / "b.tar", {**_sample(), **{f"s0.{e}": p for e, p in payloads.items()}})
    [sample] = decode_all(shard)
    assert not after.exists()
    assert {ext: sample[ext] for ext in payloads} == payloads  # left as raw bytes
    assert sample["txt"] == "a red square" and sample["json"] == {"label": 0}
    assert sample["jpg"].size == (8, 8) and sample["jpg"].mode == "RGB"


def test_a_spawned_worker_gets_the_safe_decoder_with_the_pipeline(tmp_path, restored_webdataset):
    # A data-loader worker started with spawn imports webdataset afresh, with its pickle decoders;
    # the decoding stage built after disable_pickle_decoders carries the safe handlers with it.
    disable_pickle_decoders()
    stage = tmp_path / "stage.pkl"
    stage.write_bytes(pickle.dumps(webdataset.decode("pilrgb")))
    marker = tmp_path / "pwned"
    shard = _crafted_shard(tmp_path / "c.tar", marker, "pickle")
    fresh = (
        "import pickle, sys, webdataset\n"
        "stage = pickle.load(open(sys.argv[1], 'rb'))\n"
        "samples = webdataset.DataPipeline(webdataset.SimpleShardList(sys.argv[2]),"
        " webdataset.tarfile_to_samples(), stage)\n"
        "print(*(type(s['pickle']).__name__ for s in samples))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", fresh, str(stage), str(shard)],
        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["bytes"]
    assert not marker.exists()


@pytest.mark.parametrize(
    ("member", "problem"),
    [
        ("s0.pickle", "member 's0.pickle' is not an image, txt or json"),
        ("s0.pth", "member 's0.pth' is not an image, txt or json"),
        ("s0.PYD", "member 's0.PYD' is not an image, txt or json"),
        ("s0.pyd.gz", "member 's0.pyd.gz' is not an image, txt or json"),
        ("s0.json.gz", "member 's0.json.gz' is not an image, txt or json"),
        ("s0.npy", "member 's0.npy' is not an image, txt or json"),
        ("__meta__", "member '__meta__' is not an image, txt or json"),
        ("sub/s1.pyd", "member 'sub/s1.pyd' is not an image, txt or json"),
    ],
)
def test_members_other_than_image_txt_json_are_refused(tmp_path, member, problem):
    good = _write_tar(tmp_path / "train-00000.tar", _sample())
    bad = _write_tar(tmp_path / "train-00001.tar", {**_sample("s1"), member: b"\x80\x04N."})
    with pytest.raises(ValueError) as err:
        check_shards(str(tmp_path / "train-{00000..00001}.tar"))
    assert str(err.value) == (
        "--train-data: refused before training, 1 of 2 shards hold members other than an image, txt or "
        f"json (allowed extensions: jpg, jpeg, png, webp, txt, json): {bad}: {problem}"
    )
    assert check_shards(str(good)) == [good]


def test_links_and_unreadable_tars_are_refused_and_folders_and_our_shards_pass(tmp_path):
    link = _write_tar(tmp_path / "link.tar", _sample(), links={"s0.json": "/etc/passwd"})
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar at all" * 64)
    with pytest.raises(ValueError, match="2 of 2 shards") as err:
        check_shards(f"{link}::{junk}", "--val-data")
    message = str(err.value)
    assert message.startswith("--val-data: refused before training")
    assert f"{link}: member 's0.json' is not a regular file; {junk}: not a readable tar file" in message
    folders = _write_tar(
        tmp_path / "folders.tar", {"part/": b"", **{f"part/{k}": v for k, v in _sample().items()}}
    )
    assert check_shards(f"file://{folders}") == [folders]
    manifest = make_shards(tmp_path / "ours", train=6, val=3, test=3, unseen=3, train_shard=3, eval_shard=3)
    ours = [Path(manifest["_dir"]) / s for s in manifest["splits"]["train"]["shards"]]
    assert check_shards(str(Path(manifest["_dir"]) / "train-{00000..00001}.tar")) == ours


# --- 17: shards that do not exist ---------------------------------------------------------------------


def test_missing_shards_stop_the_cli_at_once_naming_each(tmp_path):
    for k in (0, 2):
        _write_tar(tmp_path / f"train-0000{k}.tar", _sample())
    pattern = str(tmp_path / "train-{00000..00003}.tar")
    done, seconds = _cli(*_train_args(pattern, tmp_path / "logs", "--val-data", str(tmp_path / "val.tar")))
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1] == (
        f"nbhelpers.train.open_clip_cli: error: --train-data: 2 of 4 shards not found: "
        f"{tmp_path / 'train-00001.tar'}, {tmp_path / 'train-00003.tar'}"
    )
    assert seconds < 20
    with pytest.raises(
        FileNotFoundError, match=rf"^--val-data: 1 of 1 shards not found: {tmp_path}/val.tar$"
    ):
        check_shards(str(tmp_path / "val.tar"), "--val-data")
    many = str(tmp_path / "none-{00..11}.tar")
    with pytest.raises(FileNotFoundError, match=r"12 of 12 shards not found: .*none-09\.tar, and 2 more$"):
        check_shards(many)


def test_remote_shards_are_refused_and_other_dataset_types_are_not_shards(tmp_path):
    with pytest.raises(ValueError, match=r"^pipe:cat x\.tar: not a local shard file"):
        check_shards(f"{tmp_path}/a.tar::pipe:cat x.tar")
    with pytest.raises(ValueError, match=r"^https://host/train-0\.tar: not a local shard file"):
        check_shards("https://host/train-{0..1}.tar")
    assert shard_options(["--train-data", "t.tar", "--val-data", "v.csv"]) == {"--train-data": "t.tar"}
    assert shard_options(["--dataset-type", "csv", "--train-data", "t.tar"]) == {}
    # read by open_clip_train's own parser, abbreviations included
    assert shard_options(["--dataset-type", "webdataset", "--val-da", "v-{0..1}"]) == {
        "--val-data": "v-{0..1}"
    }


# --- 3: files follow the umask --------------------------------------------------------------------------


@pytest.fixture(params=[(0o022, 0o644), (0o077, 0o600)], ids=["umask022", "umask077"])
def umask(request):
    mask, mode = request.param
    old = os.umask(mask)
    try:
        yield mode
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_every_written_file_follows_the_umask(tmp_path, umask):
    write_json_atomic(tmp_path / "run.json", {"a": 1})
    with atomic_open(tmp_path / "blob.bin", "wb") as f:
        f.write(b"\x00\x01")
    record = Record("synthetic", "7", "train", "a red square", 0, lambda: Image.new("RGB", (20, 10)))
    shard = tmp_path / "shards" / "train-00000.tar"
    assert shard_writer.write_shard(shard, [record], image_size=16).num_samples == 1
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    checkpoint = tmp_path / "run" / "checkpoints" / "epoch_0001.pt"
    save_checkpoint(
        checkpoint,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=None,
        epoch=1,
        global_step=1,
        rng=[],
    )
    written = [
        tmp_path / "run.json",
        tmp_path / "blob.bin",
        shard,
        shard.with_name(".train-00000.tar.stats.json"),
    ]
    assert {p.name: _mode(p) for p in [*written, checkpoint]} == {
        p.name: umask for p in [*written, checkpoint]
    }
    assert not list(tmp_path.rglob("*.tmp"))


def test_the_umask_is_read_without_changing_it_even_without_proc(monkeypatch):
    old = os.umask(0o027)
    try:
        assert current_umask() == 0o027

        def no_proc(*args, **kwargs):
            raise OSError("no /proc here")

        monkeypatch.setattr("nbhelpers.fileio.open", no_proc, raising=False)
        assert current_umask() == 0o027
        assert os.umask(0o027) == 0o027  # left as it was
    finally:
        os.umask(old)


# --- 16: pool workers die with a killed parent --------------------------------------------------------


def _descendants_gone(children: list[psutil.Process], within: float) -> list[psutil.Process]:
    deadline = time.monotonic() + within
    while True:
        alive = []
        for child in children:
            try:
                if child.is_running() and child.status() != psutil.STATUS_ZOMBIE:
                    alive.append(child)
            except psutil.NoSuchProcess:
                pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


def _kill_all(processes: list[psutil.Process]) -> None:
    for p in processes:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


def test_prepare_killed_mid_write_leaves_no_pool_worker(tmp_path):
    out = tmp_path / "shards"
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "nbhelpers.data.prepare", "--source", "synthetic", "--out_dir", str(out),
            "--workers", "2", "--image_size", "128", "--train_shard_size", "100", "--synthetic_train", "4000",
            "--synthetic_val", "10", "--synthetic_test", "10", "--synthetic_unseen", "10",
        ],
        cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    parent = psutil.Process(proc.pid)
    children: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # until both workers are writing a shard
            children = parent.children(recursive=True)
            if len(children) >= 2 and len(list(out.glob("synthetic/.train-*.tmp"))) >= 1:
                break
            time.sleep(0.05)
        else:
            pytest.fail("prepare never started writing shards")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        alive = _descendants_gone(children, within=5)
        assert alive == [], f"pool workers outlived the killed parent: {alive}"
    finally:
        proc.kill()
        _kill_all(children)


_POOL_SCRIPT = """
import multiprocessing, os, sys, time
from concurrent.futures import ProcessPoolExecutor
from nbhelpers.data import shards

def init(parent_pid, forked, ready):
    shards._set_parent_death_signal = lambda signum: None  # the watchdog thread alone
    shards.die_with_parent(parent_pid, forked)
    ready.wait()

if __name__ == "__main__":
    context = multiprocessing.get_context(sys.argv[1])
    ready = context.Barrier(3)
    forked = context.get_start_method() == "fork"
    with ProcessPoolExecutor(2, mp_context=context, initializer=init, initargs=(os.getpid(), forked, ready)) as pool:
        futures = [pool.submit(time.sleep, 120) for _ in range(2)]
        ready.wait(timeout=60)  # both workers are watching
        print(*(p.pid for p in pool._processes.values()), flush=True)
        time.sleep(120)
"""


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_the_watchdog_alone_ends_workers_of_a_killed_parent(tmp_path, method):
    # Without PR_SET_PDEATHSIG (other systems), the watchdog thread ends forked and spawned workers.
    script = tmp_path / "pool.py"
    script.write_text(_POOL_SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script), method], cwd=REPO, env=ENV, stdout=subprocess.PIPE, text=True
    )
    workers: list[psutil.Process] = []
    try:
        workers = [psutil.Process(int(pid)) for pid in proc.stdout.readline().split()]
        assert len(workers) == 2 and all(w.is_running() for w in workers)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        alive = _descendants_gone(workers, within=5)
        assert alive == [], f"{method} workers outlived the killed parent: {alive}"
    finally:
        proc.kill()
        _kill_all(workers)


# --- 18: an explicit null on the command line -----------------------------------------------------------

TINY_SSL = [
    "backbone=vit_test", "image_size=16", "small_image=true", "batch_size=16",
    'method_kwargs={"projector_sizes": [32, 32]}',
    "epochs=3", "progress=false",
]  # fmt: skip


@pytest.fixture(scope="module")
def ssl_shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("ssl_shards")
    make_shards(root, train=32, val=8, test=16, unseen=8, train_shard=32, eval_shard=16)
    return root


@pytest.mark.parametrize(("given", "kept"), [(["keep_last=null"], [1, 2, 3]), ([], [2, 3])])
def test_keep_last_null_on_the_command_line_keeps_every_checkpoint(ssl_shards, tmp_path, given, kept):
    runs = tmp_path / "runs"
    result = train_main(["ssl", f"data_dir={ssl_shards}", f"runs_dir={runs}", *TINY_SSL, *given])
    assert [epoch for epoch, _ in list_checkpoints(result.run_dir)] == kept
    assert json.loads((result.run_dir / "config.json").read_text())["keep_last"] == (None if given else 2)


def test_none_still_takes_the_preset_in_notebooks_and_null_means_none():
    full_lr = preset_values("t4", "clip_classifier")["full_lr"]
    assert full_lr is not None
    assert ClipClassifierConfig.from_params("t4", keep_last=None, full_lr=None).full_lr == full_lr
    from_notebook = notebook_config(
        ClipClassifierConfig, {"preset": "t4", "keep_last": None, "full_lr": None}
    )
    assert (from_notebook.keep_last, from_notebook.full_lr) == (2, full_lr)
    explicit = ClipClassifierConfig.from_params("t4", keep_last=NULL, full_lr=NULL)
    assert (explicit.keep_last, explicit.full_lr) == (None, None)
    with pytest.raises(ConfigError, match=r"^epochs: expected int, got None"):
        SSLConfig.from_params("demo", epochs=NULL)  # an explicit null where None is not allowed


def test_prepare_command_line_null_sets_none(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        prepare_main(["--out_dir", str(tmp_path), "--workers", "null"])  # was: the preset's 2
    assert exit_info.value.code == 2
    assert (
        capsys.readouterr().err
        == "nbhelpers.data.prepare: error: workers: expected int, got None (NoneType)\n"
    )
    prepare_main(
        ["--out_dir", str(tmp_path), "--limit", "null", "--image_size", "16", "--workers", "1",
         "--synthetic_train", "3", "--synthetic_val", "2", "--synthetic_test", "2", "--synthetic_unseen", "2"]
    )  # fmt: skip
    assert json.loads(capsys.readouterr().out)["samples"] == {"train": 3, "val": 2, "test": 2, "unseen": 2}
    config = json.loads((tmp_path / "synthetic" / "manifest.json").read_text())["config"]
    assert config["limit"] is None and config["workers"] == 1
