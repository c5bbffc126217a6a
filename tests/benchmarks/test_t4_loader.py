import json
import math

import pytest

from benchmarks import t4_loader
from nbhelpers.config import ConfigError
from tests.helpers import make_shards


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("t4_loader")
    make_shards(data_dir, train=200, val=16, test=16, unseen=16, train_shard=50, eval_shard=16)
    return data_dir


def test_a_streamed_preset_is_timed_over_real_batches(shards):
    # CLIP's t4 preset streams from the shards (in_memory=false): decode, crop to ViT-B/32's 224 px, tokenise.
    found = t4_loader.measure("clip", "t4", seconds=0.5, workers=0, data_dir=shards)
    assert found["what"] == "stream" and found["image_size"] == 224 and found["num_workers"] == 0
    assert found["micro_batch"] == 64 and found["samples"] > 0 and found["samples"] % 64 == 0
    assert found["seconds"] >= 0.5
    assert found["samples_per_s"] == pytest.approx(found["samples"] / found["seconds"], rel=1e-3)


def test_an_in_memory_preset_times_its_batches_and_its_load(shards):
    rate = t4_loader.loader_samples_per_s("unimodal", "demo", seconds=0.3, data_dir=shards)
    assert math.isfinite(rate) and rate > 0
    found = t4_loader.measure("unimodal", "demo", seconds=0.3, data_dir=shards)
    assert found["what"] == "memory" and found["image_size"] == 32 and found["load_samples_per_s"] > 0


def test_fusion_with_a_frozen_backbone_times_the_decoding_for_its_features(shards):
    found = t4_loader.measure("fusion", "demo", seconds=0.3, data_dir=shards, image_size=48)
    assert found["what"] == "features" and found["image_size"] == 48
    # whole load_split calls of LOAD_CHUNK samples each
    assert found["samples"] > 0 and found["samples"] % t4_loader.LOAD_CHUNK == 0


def test_cli_prints_json(shards, capsys):
    argv = ["ssl", "demo", "--seconds", "0.2", "--data-dir", str(shards)]
    assert t4_loader.main(argv) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["recipe"] == "ssl" and found["what"] == "ssl" and found["samples_per_s"] > 0


@pytest.mark.parametrize(
    "args, error, message",
    [
        (("nope", "demo"), ValueError, "unknown recipe 'nope'"),
        (("clip", "nope"), ConfigError, "unknown preset 'nope'"),
    ],
)
def test_bad_names_are_refused(shards, args, error, message):
    with pytest.raises(error, match=message):
        t4_loader.measure(*args, seconds=0.1, data_dir=shards)
    with pytest.raises(ValueError, match="seconds: must be > 0"):
        t4_loader.measure("clip", "demo", seconds=0, data_dir=shards)
