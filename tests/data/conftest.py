import pytest

from nbhelpers.data.prepare import PrepareConfig, prepare

SMALL = {"synthetic_train": 40, "synthetic_val": 12, "synthetic_test": 12, "synthetic_unseen": 12}


@pytest.fixture(scope="session")
def small_synthetic(tmp_path_factory):
    """Synthetic shards at 64 px: train 40 samples in shards of 16, other splits 12 in shards of 5."""
    out = tmp_path_factory.mktemp("shards")
    config = PrepareConfig.from_params(
        "demo", out_dir=str(out), image_size=64, train_shard_size=16, eval_shard_size=5, workers=1, **SMALL
    )
    manifest = prepare(config, progress=False)
    return config, manifest
