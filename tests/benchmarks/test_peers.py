"""benchmarks/peers.py: its JSON lines, the docs/performance.md table made from them, and the commands it times."""

import json

import pytest

from benchmarks import peers
from benchmarks.readme_tables import read_block

ROW = {
    "benchmark": "loader vs torchvision ImageFolder", "ours": 512.0, "peer": 400.0, "ratio": 1.28,
    "unit": "samples/s", "machine": "CPU X, 2 cores, torch 2.0 (2 threads), 2026-01-01",
    "command": "python -m benchmarks.peers", "peer_name": "torchvision ImageFolder", "batch": 64, "workers": 2,
    "runs": [[512.0, 400.0], [500.0, 410.0], [520.0, 390.0]],
}  # fmt: skip


@pytest.fixture
def restored_webdataset(monkeypatch):
    """The quick run switches webdataset's pickle decoders off for its process, as our open_clip_train entry
    point does: put the registries back so later tests see webdataset as installed."""
    import webdataset
    from webdataset import autodecode, filters

    monkeypatch.setattr(autodecode, "decoders", dict(autodecode.decoders))
    monkeypatch.setattr(filters, "default_decoders", list(filters.default_decoders))
    monkeypatch.setattr(webdataset, "decode", webdataset.decode)


def test_quick_run_writes_json_lines_whose_ratio_is_ours_over_peer(tmp_path, restored_webdataset):
    out = tmp_path / "peers.jsonl"
    assert peers.main(["--quick", "--out", str(out), "--cache", str(tmp_path / "cache")]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["peer_name"] for r in rows] == ["open_clip_train data", "torchvision ImageFolder"]
    for r in rows:
        assert set(peers.KEYS) <= set(r)
        assert isinstance(r["benchmark"], str) and r["unit"] == "samples/s"
        assert r["ours"] > 0 and r["peer"] > 0 and r["ratio"] == round(r["ours"] / r["peer"], 3)
        assert r["command"].startswith("python -m benchmarks.peers --quick")
        assert "cores" in r["machine"] and "torch" in r["machine"]
        assert r["batch"] == 8 and r["workers"] == 0 and len(r["runs"]) == 1
    exported = tmp_path / "cache" / "quick" / "folder"
    assert (exported / ".complete").read_text() == "64\n"
    assert len(list(exported.glob("*/*.jpg"))) == len(list(exported.glob("*/*.txt"))) == 64


def test_row_takes_medians_of_the_repeats():
    r = peers.row("x", [(10.0, 5.0), (30.0, 4.0), (20.0, 100.0)], "samples/s", "m", "c", batch=1)
    assert (r["ours"], r["peer"], r["ratio"]) == (20.0, 5.0, 4.0)
    assert list(r)[: len(peers.KEYS)] == list(peers.KEYS) and r["batch"] == 1


def test_table_renders_one_line_per_figure():
    text = peers.table([ROW, dict(ROW, benchmark="training vs open_clip_train", peer_name="open_clip_train")])
    assert text == (
        "Measured on CPU X, 2 cores, torch 2.0 (2 threads), 2026-01-01 by `python -m benchmarks.peers` (median of "
        "3 interleaved repeats; ratio = ours / peer, above 1: ours is faster).\n\n"
        "| what | peer | batch | workers | ours | peer's | ours / peer |\n|---|---|---|---|---|---|---|\n"
        "| loader | torchvision ImageFolder | 64 | 2 | 512 samples/s | 400 | 1.28 |\n"
        "| training | open_clip_train | 64 | 2 | 512 samples/s | 400 | 1.28 |"
    )


def test_render_check_fails_on_a_stale_table(tmp_path):
    page = tmp_path / "performance.md"
    page.write_text("x\n<!-- peers:begin -->\nold\n<!-- peers:end -->\n")
    results = tmp_path / "r.jsonl"
    results.write_text(json.dumps(ROW) + "\n")
    assert peers.main(["render", "--check", "--page", str(page), "--results", str(results)]) == 1
    assert peers.main(["render", "--page", str(page), "--results", str(results)]) == 0
    # --readme: the flag's name from when the table was in README.md
    assert peers.main(["render", "--check", "--readme", str(page), "--results", str(results)]) == 0
    assert read_block(page.read_text(), "peers") == peers.table([ROW])


def test_training_commands_are_the_same_work_for_both_trainers(tmp_path):
    from open_clip_train.params import parse_args as open_clip_args

    from nbhelpers.train.__main__ import parse_args
    from nbhelpers.train.recipes.clip import ClipConfig

    manifest = {"_dir": str(tmp_path / "synthetic"), "splits": {"train": {"shards": ["train-00000.tar"]}}}
    recipe, params = parse_args(peers.ours_train_command(tmp_path, tmp_path / "runs", 7, 2)[3:])
    ours = ClipConfig.from_params(params.pop("preset"), **params)
    theirs = open_clip_args(peers.open_clip_train_command(manifest, tmp_path / "logs", 7, 2)[3:])
    assert recipe == "clip" and ours.model == theirs.model == peers.MODEL
    assert (ours.in_memory, ours.valid_only, ours.mixed_precision) == (False, False, "no")
    assert theirs.precision == "fp32" and theirs.dataset_resampled and theirs.device == "cpu"
    assert ours.batch_size == theirs.batch_size == 64 and ours.epochs == theirs.epochs == 1
    assert ours.steps_per_epoch * 64 == theirs.train_num_samples == 7 * 64
    assert ours.num_workers == theirs.workers == 2
    assert ours.max_grad_norm == theirs.grad_clip_norm == 1.0 and ours.lr == theirs.lr == 1e-3
    assert ours.image_size == 64 and ours.grad_accum_steps == 1


@pytest.mark.parametrize("argv", [["render", "--nope"], ["--only", "everything"]])
def test_bad_arguments_exit(argv):
    with pytest.raises(SystemExit):
        peers.main(argv)


def test_steps_are_timed_inside_the_trainer_and_the_rate_skips_the_warm_up(tmp_path, monkeypatch):
    (tmp_path / "toy_trainer.py").write_text(
        "import sys, torch\n"
        "w = torch.nn.Parameter(torch.zeros(2))\n"
        "opt = torch.optim.AdamW([w], lr=0.1)\n"
        "for _ in range(int(sys.argv[1])):\n"
        "    w.sum().backward()\n"
        "    opt.step()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "times.json"
    assert peers.main(["steps", str(out), "toy_trainer", "5"]) == 0
    times = json.loads(out.read_text())
    assert len(times) == 5 and times == sorted(times)
    assert peers.steady_rate([0.0, 1.0, 2.0, 3.0, 5.0], warmup=2, batch=64) == 3 * 64 / 4.0


def test_docs_table_is_the_committed_results():
    assert peers.PAGE == peers.ROOT / "docs" / "performance.md"
    page = peers.PAGE.read_text()
    assert read_block(page, peers.BLOCK) == peers.table(peers.read_results(peers.RESULTS))
