import json
from pathlib import Path

import pytest

from benchmarks import scale
from tests.helpers import make_shards

REPO = Path(__file__).resolve().parents[2]


def test_one_stream_epoch_reads_whole_batches(tmp_path):
    make_shards(tmp_path, train=100, val=8, test=8, unseen=8, train_shard=50, eval_shard=8)
    found = scale.measure_in_this_process("stream", tmp_path, 100)
    assert found["processed"] == 128  # ceil(100 / 64) batches of 64 from the resampled stream
    assert found["seconds"] > 0 and found["peak_rss_mb"] >= found["import_rss_mb"] > 0
    with pytest.raises(ValueError, match="unknown measurement 'nope'; allowed: shards, stream"):
        scale.measure_in_this_process("nope", tmp_path, 100)


def fake_measure(calls):
    def measure(what, data_dir, samples):
        calls.append((what, samples))
        if what == "shards":
            (data_dir / "synthetic").mkdir(parents=True)
            (data_dir / "synthetic" / "manifest.json").write_text("{}")
        return {"seconds": samples / 100, "processed": samples, "peak_rss_mb": 500.04 + samples}

    return measure


def test_sizes_already_measured_are_skipped(tmp_path):
    calls, results = [], tmp_path / "scale.jsonl"
    kw = dict(data_root=tmp_path / "data", results=results, log=lambda line: None)
    added = scale.run_sizes([10, 20], ["stream", "clip_stream"], measure_fn=fake_measure(calls), **kw)
    # the shards are built first (they are missing), then what was asked for
    assert calls == [("shards", 10), ("stream", 10), ("clip_stream", 10), ("shards", 20), ("stream", 20), ("clip_stream", 20)]  # fmt: skip
    assert [json.loads(line) for line in results.read_text().splitlines()] == added
    assert (
        added[1]["samples_per_s"] == 100.0
        and added[1]["peak_rss_mb"] == 510.0
        and added[1]["image_size"] == 64
    )
    calls.clear()
    assert scale.run_sizes([10, 20], ["stream", "clip_stream"], measure_fn=fake_measure(calls), **kw) == []
    assert calls == []
    scale.run_sizes([10], ["shards", "stream"], measure_fn=fake_measure(calls), force=True, **kw)
    assert calls == [("shards", 10), ("stream", 10)]  # the shards were removed and written again, timed
    assert len(scale.read_results(results)) == 8


def test_render_keeps_the_latest_line_of_each_size():
    line = dict(image_size=64, load_average=1.5, date="2026-11-30", machine="cpu", import_rss_mb=400.0)
    lines = [
        dict(line, what="stream", samples=1000, seconds=3.0, samples_per_s=333.3, peak_rss_mb=700.0),
        dict(line, what="shards", samples=1000, seconds=4.0, samples_per_s=250.0, peak_rss_mb=600.0),
        dict(line, what="stream", samples=1000, seconds=2.0, samples_per_s=500.0, peak_rss_mb=701.0),
    ]
    assert scale.render(lines) == (
        "Measured 2026-11-30 on cpu, by `python -m benchmarks.scale`.\n\n"
        "| what | train samples | seconds | samples/s | peak RSS (MB) | RSS after imports (MB) | load |\n"
        "|---|---|---|---|---|---|---|\n"
        "| writing the shards (64 px, 2 workers) | 1,000 | 4.0 | 250 | 600 | 400 | 1.5 |\n"
        "| training stream, one epoch (decode + augment + tokenise) | 1,000 | 2.0 | 500 | 701 | 400 | 1.5 |"
    )


def test_docs_table_is_the_committed_results():
    lines = scale.read_results(REPO / "benchmarks" / "results" / "scale.jsonl")
    assert scale.PAGE == REPO / "docs" / "performance.md"
    page = scale.PAGE.read_text()
    assert lines and scale.update_page(page, lines) == page
