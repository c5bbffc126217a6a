import json

import pytest

from benchmarks import t4_table
from benchmarks.readme_tables import read_block

LINE = dict(
    recipe="clip", preset="t4", micro_batch=64, peak_gib=6.04, t4_samples_per_s=412.3, epoch_minutes=1.62,
    loader_samples_per_s=95.2, bound="data",
)  # fmt: skip


def write_lines(path, lines):
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_estimates_alone_render_without_measured_columns(tmp_path):
    older = dict(LINE, peak_gib=99.0)
    fusion = dict(
        LINE, recipe="fusion", preset="hateclipper_vitl14_cross", peak_gib=16.25, t4_samples_per_s=1234.5,
        epoch_minutes=None, loader_samples_per_s=float("inf"), bound="gpu",
    )  # fmt: skip
    lines = t4_table.read_results(write_lines(tmp_path / "t4.jsonl", [older, fusion, LINE]))
    assert t4_table.table(lines).splitlines()[2:] == [
        "| recipe | preset | micro-batch | est. peak (GiB) | fits 14 GiB | est. T4 samples/s | est. epoch (min) "
        "| loader samples/s (2 cores) | bound by |",
        "|---|---|---|---|---|---|---|---|---|",
        "| clip | `t4` | 64 | 6.0 | yes | 412 | 1.6 | 95 | data |",  # the latest line of clip/t4
        "| fusion | `hateclipper_vitl14_cross` | 64 | 16.2 | no | 1,234 | — | ∞ | gpu |",
    ]
    assert "no GPU run yet" in t4_table.table(lines).splitlines()[0]


def test_measured_figures_add_two_columns_and_decide_the_fit(tmp_path):
    measured = dict(
        LINE, preset="clip_big", peak_gib=16.0, measured_peak_gib=13.5, measured_samples_per_s=380.0
    )
    lines = t4_table.read_results(write_lines(tmp_path / "t4.jsonl", [LINE, measured]))
    rows = t4_table.table(lines).splitlines()
    assert rows[2].endswith("| bound by | measured peak (GiB) | measured samples/s |")
    assert rows[4] == "| clip | `t4` | 64 | 6.0 | yes | 412 | 1.6 | 95 | data | — | — |"
    assert rows[5] == "| clip | `clip_big` | 64 | 16.0 | yes | 412 | 1.6 | 95 | data | 13.5 | 380 |"


def test_render_writes_and_checks_the_block(tmp_path):
    results = write_lines(tmp_path / "t4.jsonl", [LINE])
    page = tmp_path / "README.md"
    page.write_text("# x\n<!-- t4:begin -->\nold\n<!-- t4:end -->\n")
    args = ["--results", str(results), "--page", str(page)]
    assert t4_table.main([*args, "--check"]) == 1
    assert t4_table.main(args) == 0 and t4_table.main([*args, "--check"]) == 0
    assert read_block(page.read_text(), "t4") == t4_table.table([LINE])


def test_bad_lines_are_named(tmp_path):
    path = tmp_path / "t4.jsonl"
    path.write_text(json.dumps({k: v for k, v in LINE.items() if k != "bound"}) + "\n")
    with pytest.raises(ValueError, match=r"t4.jsonl:1: missing bound"):
        t4_table.read_results(path)
    path.write_text("\n{oops\n")
    with pytest.raises(ValueError, match=r"t4.jsonl:2: not JSON"):
        t4_table.read_results(path)


@pytest.mark.skipif(
    not t4_table.RESULTS.exists(), reason="no benchmarks/results/t4.jsonl: python -m benchmarks.t4"
)
def test_readme_table_is_the_committed_results():
    assert t4_table.PAGE.name == "README.md"
    assert read_block(t4_table.PAGE.read_text(), t4_table.BLOCK) == t4_table.table(
        t4_table.read_results(t4_table.RESULTS)
    )
