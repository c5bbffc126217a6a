import pytest

from tests.helpers import make_shards


@pytest.fixture(scope="package")
def tiny_shards(tmp_path_factory):
    """Synthetic shards at 64 px: 140 train (about 20 valid pairs), 42 val/test/unseen."""
    root = tmp_path_factory.mktemp("recipe_shards")
    make_shards(root, train=140, val=42, test=42, unseen=42, train_shard=70, eval_shard=42)
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
