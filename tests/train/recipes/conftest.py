import pytest

from nbhelpers.config import PrepareConfig
from nbhelpers.data.prepare import prepare


@pytest.fixture(scope="package")
def tiny_shards(tmp_path_factory):
    """Synthetic shards at 64 px: 140 train (about 20 valid pairs), 42 val/test/unseen."""
    root = tmp_path_factory.mktemp("recipe_shards")
    config = PrepareConfig.from_params(
        "demo", out_dir=str(root), image_size=64, synthetic_train=140, synthetic_val=42, synthetic_test=42,
        synthetic_unseen=42, train_shard_size=70, eval_shard_size=42, workers=1,
    )  # fmt: skip
    prepare(config, progress=False)
    return root


def common(root, tmp_path, **overrides):
    """Parameters every recipe smoke test shares: tiny data, no progress bar, a fresh runs folder."""
    return {
        "data_dir": str(root),
        "runs_dir": str(tmp_path / "runs"),
        "batch_size": 16,
        "progress": False,
        "mixed_precision": "no",
        **overrides,
    }
