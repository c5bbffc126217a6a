"""A run bound to its config: fingerprints, folder names, refusals and stages."""

import json

import pytest

from nbhelpers.config import ConfigError
from nbhelpers.fileio import sha256_file
from nbhelpers.train.identity import (
    RUN_RECORD,
    RunIdentity,
    RunMismatchError,
    bind_run,
    bind_stage,
    check_run_name,
    file_input,
    local_inputs,
    recorded_input,
)


def identity(**config):
    return RunIdentity.of("cass_mm", {"epochs": 2, "lr": 1e-3, "run_name": "", "progress": True, **config})


def files(folder):
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_fingerprint_covers_what_changes_weights_and_ignores_bookkeeping():
    base = identity()
    assert base.fingerprint == identity().fingerprint and len(base.fingerprint) == 64
    assert identity(epochs=3).fingerprint != base.fingerprint
    assert identity(lr=2e-3).fingerprint != base.fingerprint
    # where the run goes, its progress bar and the splits scored at the end do not change the weights
    for bookkeeping in (
        {"run_name": "x"},
        {"progress": False},
        {"report_to": "wandb"},
        {"runs_dir": "/elsewhere"},
        {"eval_splits": "a"},
    ):
        assert identity(**bookkeeping).fingerprint == base.fingerprint
    with_data = RunIdentity.of("cass_mm", {"epochs": 2}, data={"synthetic": "a" * 64})
    assert (
        with_data.fingerprint
        != RunIdentity.of("cass_mm", {"epochs": 2}, data={"synthetic": "b" * 64}).fingerprint
    )
    assert base.folder_name("cass_mm") == f"cass_mm-{base.fingerprint[:8]}"


def test_differences_name_each_changed_field():
    stored = identity(epochs=2).record()
    now = RunIdentity.of(
        "cass_mm", {"epochs": 3, "lr": 1e-3}, inputs={"pretrained": {"path": "w.pt", "sha256": "c" * 64}}
    )
    lines = now.differences(stored)
    assert "epochs: 2 -> 3" in lines
    assert any(
        line.startswith("inputs.pretrained: '(absent)' -> w.pt (sha256 cccccccccccc)") for line in lines
    )


def test_bind_run_records_the_identity_and_accepts_the_same_one_again(tmp_path):
    folder = tmp_path / "runs" / "a"
    assert bind_run(folder, identity()) == folder
    assert json.loads((folder / RUN_RECORD).read_text())["fingerprint"] == identity().fingerprint
    (folder / "checkpoints").mkdir()
    assert bind_run(folder, identity(progress=False)) == folder  # bookkeeping differs only: the same run


def test_bind_run_refuses_another_config_before_writing_anything(tmp_path):
    folder = tmp_path / "a"
    bind_run(folder, identity())
    (folder / "config.json").write_text("{}")
    before = files(folder)
    with pytest.raises(RunMismatchError) as caught:
        bind_run(folder, identity(epochs=3))
    message = str(caught.value)
    assert "epochs: 2 -> 3" in message and "leave run_name empty" in message and str(folder) in message
    assert caught.value.differences == ["epochs: 2 -> 3"]
    assert files(folder) == before


def test_bind_run_refuses_a_folder_with_files_but_no_record(tmp_path):
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    with pytest.raises(RunMismatchError, match="holds files but no run.json"):
        bind_run(folder, identity())
    assert not (folder / RUN_RECORD).exists()


def test_a_stage_whose_input_changed_is_deleted_and_bound_again(tmp_path):
    weights = tmp_path / "towers.pt"
    weights.write_bytes(b"first towers")
    stage = tmp_path / "run" / "classifier"
    assert bind_stage(stage, RunIdentity.of("cass_mm", {}, inputs={"towers": file_input(weights)})) is False
    (stage / "epoch_0001.pt").write_bytes(b"head trained on the first towers")
    same = RunIdentity.of("cass_mm", {}, inputs={"towers": file_input(weights)})
    assert bind_stage(stage, same) is False and (stage / "epoch_0001.pt").exists()  # unchanged input: kept
    weights.write_bytes(b"other towers, v2")
    changed = RunIdentity.of("cass_mm", {}, inputs={"towers": file_input(weights)})
    with pytest.warns(UserWarning, match="inputs changed .*inputs.towers"):
        assert bind_stage(stage, changed) is True
    assert sorted(p.name for p in stage.iterdir()) == [RUN_RECORD]
    assert json.loads((stage / RUN_RECORD).read_text())["inputs"]["towers"]["sha256"] == sha256_file(weights)


@pytest.mark.parametrize("name", ["../x", "/abs/path", "a/b", "..", ".", "x y", "-x", "a\\b", "x" * 129])
def test_run_names_that_leave_runs_dir_are_refused(name):
    with pytest.raises(ConfigError, match="run_name: .* is not a plain run name"):
        check_run_name(name)


@pytest.mark.parametrize("name", ["", "clip", "cass_mm-3fa2c1d0", "my.run_2"])
def test_plain_run_names_pass(name):
    assert check_run_name(name) == name


def test_local_inputs_hash_files_and_folders_and_skip_tags(tmp_path):
    (tmp_path / "w.pt").write_bytes(b"weights")
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text("{}")
    found = local_inputs(a=tmp_path / "w.pt", b=tmp_path / "bert", c="laion2b_s34b_b79k", d=None)
    assert set(found) == {"a", "b"} and found["a"]["sha256"] == sha256_file(tmp_path / "w.pt")
    (tmp_path / "bert" / "config.json").write_text('{"x": 1}')
    assert sha256_file(tmp_path / "bert") != found["b"]["sha256"]


def test_recorded_input_is_checked_by_content(tmp_path):
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"weights")
    run = tmp_path / "run"
    bind_run(run, RunIdentity.of("fusion", {}, inputs=local_inputs(pretrained=weights)))
    assert recorded_input(run, "pretrained") == str(weights)
    assert recorded_input(run, "other") is None
    weights.write_bytes(b"weights, retrained")
    with pytest.raises(ValueError, match="changed since"):
        recorded_input(run, "pretrained")
    weights.unlink()
    with pytest.raises(FileNotFoundError, match="is missing"):
        recorded_input(run, "pretrained")


def test_the_data_digest_follows_each_shards_inputs_not_only_its_counts(tmp_path):
    from PIL import Image

    from nbhelpers.data.records import Record
    from nbhelpers.data.shards import read_manifest, write_manifest, write_split
    from nbhelpers.train.identity import manifest_digest

    def build(folder, colour):
        records = [
            Record(
                "synthetic",
                f"id{i}",
                "train",
                f"text {i}",
                i % 2,
                lambda c=colour: Image.new("RGB", (8, 8), c),
            )
            for i in range(4)
        ]
        result = write_split(records, folder, "train", shard_size=4, image_size=16, progress=False)
        write_manifest(folder, "synthetic", 16, {"train": result}, {})
        return read_manifest(folder)

    first = build(tmp_path / "a", (255, 0, 0))
    same = build(tmp_path / "b", (255, 0, 0))
    # Another text, same counts and shard names: other data.
    records = [
        Record("synthetic", f"id{i}", "train", f"other {i}", i % 2, lambda: Image.new("RGB", (8, 8)))
        for i in range(4)
    ]
    result = write_split(records, tmp_path / "c", "train", shard_size=4, image_size=16, progress=False)
    write_manifest(tmp_path / "c", "synthetic", 16, {"train": result}, {})
    other = read_manifest(tmp_path / "c")
    assert first["splits"]["train"]["class_counts"] == other["splits"]["train"]["class_counts"]
    assert manifest_digest(first, "train") == manifest_digest(same, "train")  # wherever it lies
    assert manifest_digest(first, "train") != manifest_digest(other, "train")
