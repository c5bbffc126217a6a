"""benchmarks/peers: its loaders and ceilings, its JSON lines, the docs/performance.md block made from them,
and the commands it times."""

import csv
import json

import pytest
import torch

from benchmarks import peers
from benchmarks.peers import cli, loaders
from benchmarks.peers.common import QUICK
from benchmarks.readme_tables import read_block

ROW = {
    "benchmark": "loader vs torchvision ImageFolder", "kind": "peer", "ours": 512.0, "peer": 400.0, "ratio": 1.28,
    "unit": "samples/s", "machine": "CPU X, 2 cores, torch 2.0 (2 threads), 2026-01-01",
    "command": "python -m benchmarks.peers", "peer_name": "torchvision ImageFolder", "batch": 64, "workers": 2,
    "runs": [[512.0, 400.0], [500.0, 410.0], [520.0, 390.0]], "ours_mb": 900, "peer_mb": 800,
    "memory_ratio": 1.125,
}  # fmt: skip
CEILING = dict(
    ROW, benchmark="loader vs ceiling: decode + resize", kind="ceiling", peer=1024.0, ratio=0.5,
    peer_name="ceiling: decode + resize",
)  # fmt: skip


@pytest.fixture
def restored_webdataset(monkeypatch):
    """open_clip's loader switches webdataset's pickle decoders off for its process, as our open_clip_train
    entry point does: put the registries back so later tests see webdataset as installed."""
    import webdataset
    from webdataset import autodecode, filters

    monkeypatch.setattr(autodecode, "decoders", dict(autodecode.decoders))
    monkeypatch.setattr(filters, "default_decoders", list(filters.default_decoders))
    monkeypatch.setattr(webdataset, "decode", webdataset.decode)


@pytest.fixture(scope="module")
def quick_data(tmp_path_factory):
    cache = tmp_path_factory.mktemp("peers")
    manifest = peers.ensure_shards(cache, QUICK)
    return manifest, peers.ensure_folder(manifest, cache / "folder")


def test_the_folder_export_keeps_every_caption_in_one_index_file(quick_data):
    manifest, folder = quick_data
    assert (folder / ".complete").read_text() == "64\n"
    assert not list(folder.glob("*/*.txt"))
    with open(folder / "captions.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(list(folder.glob("*/*.jpg"))) == 64
    assert all((folder / r["path"]).is_file() and r["caption"] for r in rows)


@pytest.mark.parametrize("name", list(loaders.LOADERS))
def test_every_loader_delivers_normalised_64_px_images_and_tokens(quick_data, name, restored_webdataset):
    manifest, folder = quick_data
    batch = next(iter(loaders.LOADERS[name][1](manifest, folder, 8, 0)))
    if name.startswith("ceiling"):  # decoded and resized only
        assert batch.dtype == torch.uint8 and batch.shape == (8, 3, 64, 64)
        return
    images, tokens = (batch["image"], batch["tokens"]) if isinstance(batch, dict) else batch[:2]
    assert images.dtype == torch.float32 and images.shape == (8, 3, 64, 64)
    assert tokens.shape == (8, loaders.tokenizer().context_length) and tokens.dtype == torch.long
    assert -2.5 < images.mean().item() < 2.5 and images.std().item() > 0.1  # normalised, not 0..255
    rate, rss = loaders.loader_rate(lambda: loaders.LOADERS[name][1](manifest, folder, 8, 0), 8, 0, 16)
    assert rate > 0 and rss > 50


def test_a_loader_is_measured_in_a_process_of_its_own(quick_data):
    manifest, folder = quick_data
    rate, rss = loaders.measure_in_process("ceiling: decode + resize", manifest, folder, 8, 0, 16)
    assert rate > 0 and rss > 50


def test_loader_rows_pair_ours_with_each_peer_and_the_ceiling_repeat_by_repeat(monkeypatch, quick_data):
    calls = []
    fake = {name: (100.0 * (i + 1), 10.0 * (i + 1)) for i, name in enumerate(loaders.LOADERS)}

    def measure(name, manifest, root, batch, workers, samples):
        calls.append(name)
        rate, rss = fake[name]
        return rate + len(calls), rss  # a different rate each repeat

    monkeypatch.setattr(loaders, "measure_in_process", measure)
    plan = peers.Plan(**{**QUICK.__dict__, "repeats": 2, "workers": (0, 2)})
    rows = cli.bench_loaders(*quick_data, plan, "m", "c")
    per_setting = list(loaders.LOADERS)
    assert calls == per_setting * 4  # interleaved: every loader once, then again
    assert [r["peer_name"] for r in rows] == per_setting[1:] * 2
    assert [r["kind"] for r in rows[: len(per_setting) - 1]] == ["peer"] * (len(per_setting) - 2) + [
        "ceiling"
    ]
    first = rows[0]
    assert first["runs"] == [[101.0, 202.0], [107.0, 208.0]] and first["workers"] == 0
    assert (first["ours"], first["peer"], first["ratio"]) == (104.0, 205.0, round(104 / 205, 3))
    assert (first["ours_mb"], first["peer_mb"], first["memory_ratio"]) == (10, 20, 0.5)


def test_row_takes_medians_of_the_repeats():
    r = peers.row("x", [(10.0, 5.0), (30.0, 4.0), (20.0, 100.0)], "samples/s", "m", "c", batch=1)
    assert (r["ours"], r["peer"], r["ratio"], r["kind"]) == (20.0, 5.0, 4.0, "peer")
    assert list(r)[: len(peers.KEYS)] == list(peers.KEYS) and r["batch"] == 1 and "ours_mb" not in r


def test_table_shows_the_peers_then_ours_as_a_share_of_each_ceiling():
    text = peers.table(
        [ROW, dict(ROW, benchmark="training vs open_clip_train", peer_name="open_clip_train"), CEILING]
    )
    assert text == (
        "Measured on CPU X, 2 cores, torch 2.0 (2 threads), 2026-01-01 by `python -m benchmarks.peers` (median of "
        "3 interleaved repeats, each side in a process of its own; ratio = ours / peer, above 1: ours is faster)."
        "\n\n| what | peer | batch | workers | ours | peer's | ours / peer | peak RSS ours / peer |\n"
        "|---|---|---|---|---|---|---|---|\n"
        "| loader | torchvision ImageFolder | 64 | 2 | 512 samples/s | 400 | 1.28 | 900 / 800 MB (1.12) |\n"
        "| training | open_clip_train | 64 | 2 | 512 samples/s | 400 | 1.28 | 900 / 800 MB (1.12) |\n\n"
        "| what | ceiling | batch | workers | ours | ceiling's | ours as share of ceiling |\n"
        "|---|---|---|---|---|---|---|\n"
        "| loader | ceiling: decode + resize | 64 | 2 | 512 samples/s | 1,024 | 50% |\n\n"
        "Ours / peer: 1.28 to 1.28; ours is faster than every peer in every setting. "
        "Ours as a share of the ceiling: 50% of ceiling: decode + resize (2 workers)."
    )


def test_summary_names_every_figure_where_ours_is_slower():
    slower = dict(ROW, ratio=0.9, peer_name="open_clip_train data", workers=0)
    assert peers.summary([ROW, slower]) == (
        "Ours / peer: 0.90 to 1.28; ours is slower against open_clip_train data (0 workers)."
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
    assert peers.bare_loop_command(7)[2:] == ["benchmarks.peers.bare_loop", "7", "64"]


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
    recorded = json.loads(out.read_text())
    assert len(recorded["times"]) == 5 and recorded["times"] == sorted(recorded["times"])
    assert recorded["rss_mb"] > 50
    assert peers.steady_rate([0.0, 1.0, 2.0, 3.0, 5.0], warmup=2, batch=64) == 3 * 64 / 4.0
    assert peers.main(["steps", "--stop-after", "3", str(out), "toy_trainer", "5"]) == 0  # cut short
    assert len(json.loads(out.read_text())["times"]) == 3


def test_the_bare_loop_makes_one_optimiser_step_per_step_and_learns(tmp_path, monkeypatch):
    import torch.nn.functional as F

    losses = []
    monkeypatch.setattr(F, "cross_entropy", _recording(F.cross_entropy, losses))
    out = tmp_path / "times.json"
    assert peers.main(["steps", str(out), "benchmarks.peers.bare_loop", "3", "4"]) == 0
    assert len(json.loads(out.read_text())["times"]) == 3
    assert len(losses) == 6 and losses[-1] < losses[0]  # two terms a step; the same batch, so it fits it


def _recording(fn, into):
    def wrapped(*args, **kwargs):
        loss = fn(*args, **kwargs)
        into.append(loss.item())
        return loss

    return wrapped


def test_docs_table_is_the_committed_results():
    assert peers.PAGE == peers.ROOT / "docs" / "performance.md"
    page = peers.PAGE.read_text()
    assert read_block(page, peers.BLOCK) == peers.table(peers.read_results(peers.RESULTS))


def test_rows_of_the_first_version_say_so_and_have_no_memory_column():
    first = {k: v for k, v in ROW.items() if k not in ("kind", "ours_mb", "peer_mb", "memory_ratio")}
    text = peers.table([first])
    assert "by the first version of this benchmark" in text and "each side in a process" not in text
    assert "| what | peer | batch | workers | ours | peer's | ours / peer |\n" in text
