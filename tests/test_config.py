import pytest

from nbhelpers.config import ConfigError, preset_names, preset_values
from nbhelpers.data.prepare import PrepareConfig


def test_presets_are_data_and_cover_demo_and_t4():
    assert {"demo", "t4"} <= set(preset_names())
    assert (
        preset_values("t4", "prepare")["synthetic_train"]
        > preset_values("demo", "prepare")["synthetic_train"]
    )


def test_preset_values_apply_and_explicit_parameters_win():
    demo = PrepareConfig.from_params("demo")
    assert demo.synthetic_train == preset_values("demo", "prepare")["synthetic_train"]
    assert demo.train_shard_size == preset_values("demo", "prepare")["train_shard_size"]
    override = PrepareConfig.from_params("t4", synthetic_train=123, limit=None)
    assert override.synthetic_train == 123  # explicit wins
    assert override.synthetic_val == preset_values("t4", "prepare")["synthetic_val"]  # None keeps the preset


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"source": "reddit"}, "source: 'reddit' is not allowed; allowed: synthetic, hateful_memes"),
        ({"image_size": -3}, "image_size: must be >= 16"),
        ({"limit": 0}, "limit: must be >= 1"),
        ({"limit": "abc"}, "limit: expected int"),  # an optional field of the wrong type
        ({"train_shard_size": "big"}, "train_shard_size: expected int"),
        ({"source": "coco"}, "raw_dir: required for source 'coco'"),
        ({"source": "fakeddit", "raw_dir": "/no/such/folder"}, "raw_dir: '/no/such/folder' is not a folder"),
        ({"epochs": 3}, "epochs: unknown parameter for PrepareConfig"),
    ],
)
def test_bad_values_stop_with_a_message_naming_the_parameter(params, message):
    with pytest.raises(ConfigError) as err:
        PrepareConfig.from_params("demo", **params)
    assert message in str(err.value)


def test_unknown_preset_lists_the_allowed_ones():
    with pytest.raises(ConfigError, match="preset: unknown preset 'huge'; allowed: demo, t4"):
        PrepareConfig.from_params("huge")


def test_ints_are_accepted_for_floats_and_bools_are_not_ints():
    with pytest.raises(ConfigError, match="seed: expected an integer"):
        PrepareConfig.from_params("demo", seed=True)


def test_to_dict_is_json_and_round_trips():
    config = PrepareConfig.from_params("demo", limit=10)
    again = PrepareConfig.from_params(**{k: v for k, v in config.to_dict().items()})
    assert again == config
