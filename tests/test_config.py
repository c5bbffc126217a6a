import pytest

from nbhelpers.config import ConfigError, preset_alias, preset_names, preset_values, resolve_alias
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


def test_a_string_preset_is_an_alias_of_a_preset_of_the_same_file():
    entries = {"full": {"lr": 1.0}, "t4": "short", "short": "full", "loop": "loop2", "loop2": "loop"}
    assert resolve_alias(entries, "t4") == resolve_alias(entries, "full") == {"lr": 1.0}
    with pytest.raises(ValueError, match="cycle: loop -> loop2 -> loop"):
        resolve_alias(entries, "loop", "x.json")
    with pytest.raises(ValueError, match="'t4' is an alias of 'gone', which the file lacks"):
        resolve_alias({"t4": "gone"}, "t4")
    with pytest.raises(ValueError, match="must be an object or the name of another preset"):
        resolve_alias({"t4": 3}, "t4")


def test_named_presets_belong_to_their_sections_and_t4_names_a_headline_one():
    from nbhelpers.train.recipes.ssl import SSLConfig

    assert preset_alias("t4", "ssl") == "dino_twins_resnet50_cifar10"
    assert preset_alias("t4", "prepare") is None and preset_alias("demo", "ssl") is None
    assert SSLConfig.from_params("t4").preset == "t4"  # the name given, the alias's values
    assert "dino_twins_resnet50_cifar10" in preset_names("ssl")
    assert "dino_twins_resnet50_cifar10" not in preset_names("prepare")
    with pytest.raises(ConfigError, match="'dino_twins_resnet50_cifar10' is not a preset of 'prepare'"):
        PrepareConfig.from_params("dino_twins_resnet50_cifar10")


def test_ints_are_accepted_for_floats_and_bools_are_not_ints():
    with pytest.raises(ConfigError, match="seed: expected an integer"):
        PrepareConfig.from_params("demo", seed=True)


def test_to_dict_is_json_and_round_trips():
    config = PrepareConfig.from_params("demo", limit=10)
    again = PrepareConfig.from_params(**{k: v for k, v in config.to_dict().items()})
    assert again == config
