"""``python -m nbhelpers.predict``: one meme as one JSON object (equal to the Python API and to the run's
re-scoring), a table of one's own with its unreadable rows counted, the run list, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nbhelpers.evaluation.run_discovery import inspect_run
from nbhelpers.evaluation.run_scoring import evaluate_run
from nbhelpers.predict import load
from nbhelpers.predict.__main__ import main
from nbhelpers.predict.table import score_table, write_scores
from tests.predict.test_predict import shard_samples

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MEMELAB_PROGRESS": "off"}
    return subprocess.run(
        [sys.executable, "-m", "nbhelpers.predict", *map(str, args)],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip


@pytest.mark.slow
def test_one_meme_from_the_cli_equals_python_and_the_rescoring(tiny_runs, tmp_path):
    run = tiny_runs / "runs" / "clip_classifier_lora"
    predictor = load(run, device="cpu")
    images, texts = shard_samples(predictor, k=1)
    (tmp_path / "meme.jpg").write_bytes(images[0])
    done = run_cli(run, "--image", tmp_path / "meme.jpg", "--text", texts[0], "--device", "cpu")
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert set(record) >= {"run", "classes", "probabilities", "uncalibrated_probabilities", "predicted"}
    assert set(record) >= {"thresholds_passed", "temperature"}
    from_cli = np.array([record["probabilities"][c] for c in record["classes"]])
    from_python = predictor.predict(tmp_path / "meme.jpg", texts[0]).probabilities[0]
    rescored = evaluate_run(inspect_run(run), "test").scores[0]
    assert np.abs(from_cli - from_python).max() <= 1e-6
    assert np.abs(from_cli - rescored).max() <= 1e-6
    assert record["run"] == "clip_classifier_lora" and record["classes"] == list(predictor.classes)


def _table_folder(tmp_path: Path, predictor) -> tuple[Path, list[bytes], list[str], list[dict]]:
    """A folder with pictures and captions of 3 test samples, plus a missing, a corrupt and a captionless row."""
    images, texts = shard_samples(predictor, k=3)
    raw = tmp_path / "raw"
    (raw / "img").mkdir(parents=True)
    for i, data in enumerate(images):
        (raw / "img" / f"{i}.jpg").write_bytes(data)
    (raw / "img" / "broken.jpg").write_bytes(b"not a jpeg")
    rows = [{"image": f"img/{i}.jpg", "text": t, "key": f"m{i}"} for i, t in enumerate(texts)]
    rows += [
        {"image": "img/absent.jpg", "text": "a caption", "key": "absent"},
        {"image": "img/broken.jpg", "text": "a caption", "key": "broken"},
        {"image": "img/0.jpg", "text": "  ", "key": "blank"},
        {"image": "../outside.jpg", "text": "a caption", "key": "outside"},
    ]
    return raw, images, texts, rows


def test_a_table_is_scored_with_unreadable_rows_counted(tiny_runs, tmp_path):
    predictor = load(tiny_runs / "runs" / "fusion_cross", device="cpu")
    raw, images, texts, rows = _table_folder(tmp_path, predictor)
    pd.DataFrame(rows).to_csv(raw / "memes.csv", index=False)
    found = score_table(predictor, raw / "memes.csv", id_column="key", batch_size=2, progress=False)
    assert list(found.table["id"]) == ["m0", "m1", "m2"]
    assert dict(found.skipped) == {
        "missing_image": 1, "undecodable_image": 1, "invalid_text": 1, "path_outside_raw_dir": 1,
    }  # fmt: skip
    direct = predictor.predict(images, texts)
    np.testing.assert_allclose(found.table["hateful"], direct.scores, rtol=0, atol=1e-6)
    np.testing.assert_allclose(found.table["hateful_probability"], direct.scores, rtol=0, atol=1e-6)
    assert list(found.table["predicted"]) == direct.predicted
    # Written and read back in every output format.
    for suffix in (".csv", ".jsonl", ".parquet"):
        out = write_scores(found.table, tmp_path / f"scores{suffix}")
        back = {".csv": pd.read_csv, ".jsonl": lambda p: pd.read_json(p, lines=True)}.get(
            suffix, pd.read_parquet
        )(out)
        np.testing.assert_allclose(back["hateful"], direct.scores, rtol=0, atol=1e-6)


def test_a_parquet_table_with_image_bytes_and_a_jsonl_table(tiny_runs, tmp_path):
    predictor = load(tiny_runs / "runs" / "cass_mm", device="cpu")
    raw, images, texts, rows = _table_folder(tmp_path, predictor)
    pd.DataFrame({"picture": images, "caption": texts}).to_parquet(raw / "memes.parquet")
    found = score_table(predictor, raw / "memes.parquet", image_column="picture", text_column="caption",
                        progress=False)  # fmt: skip
    assert list(found.table["id"]) == ["1", "2", "3"] and not found.skipped
    direct = predictor.predict(images, texts)
    np.testing.assert_allclose(
        found.table[list(predictor.classes)].to_numpy(), direct.probabilities, atol=1e-6
    )
    with open(raw / "memes.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows[:3])
        f.write("{not json\n")
    found = score_table(predictor, raw / "memes.jsonl", progress=False)
    assert len(found.table) == 3 and dict(found.skipped) == {"malformed_row": 1}
    with pytest.raises(ValueError, match="text_column: no column 'caption'"):
        score_table(predictor, raw / "memes.jsonl", text_column="caption", progress=False)


def test_the_cli_scores_a_table_and_lists_the_runs(tiny_runs, tmp_path, capsys):
    run = tiny_runs / "runs" / "unimodal_image"
    predictor = load(run, device="cpu")
    raw, images, texts, rows = _table_folder(tmp_path, predictor)
    pd.DataFrame(rows).to_csv(raw / "memes.csv", index=False)
    out = tmp_path / "scores.csv"
    argv = [str(run), "--table", str(raw / "memes.csv"), "--raw_dir", str(raw), "--out", str(out)]
    assert main([*argv, "--device", "cpu", "--no_progress"]) == 0
    written = pd.read_csv(out)
    # An image run reads no caption: the blank-caption row is scored.
    assert len(written) == 4
    assert capsys.readouterr().err.startswith(
        "4 rows scored; skipped: missing_image 1, path_outside_raw_dir 1, undecodable_image 1;"
    )
    assert main(["list", "--runs_dir", str(tiny_runs / "runs")]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in listed] == [
        "cass_mm", "clip_classifier_lora", "fusion_cross", "unimodal_image", "unimodal_late_fusion",
        "unimodal_text",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "argv, message",
    [
        (["{run}"], "give --image and --text"),
        (["{run}", "--table", "t.csv"], "--out: where to write"),
        (["{run}", "--table", "t.csv", "--out", "s.csv", "--text", "x"], "either --table or --image"),
        (["{tmp}/missing", "--text", "x", "--image", "x.png"], "does not exist"),
        (["{run}", "--text", "x", "--image", "{tmp}/absent.png"], "missing image file"),
        (["{run}", "--table", "{tmp}/absent.csv", "--out", "s.csv"], "table: no file"),
        (["{run}", "--batch_size", "0", "--text", "x"], "--batch_size: must be >= 1"),
        (["{run}", "--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(tiny_runs, tmp_path, capsys, argv, message):
    run = tiny_runs / "runs" / "clip_classifier_lora"
    argv = [a.format(run=run, tmp=tmp_path) for a in argv]
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--device", "cpu"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("nbhelpers.predict: error: ") and len(err.strip().splitlines()) == 1
    assert message in err


def test_help_runs(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0 and "--table" in capsys.readouterr().out
