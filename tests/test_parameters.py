import pytest

from nbhelpers.config import ConfigError, preset_values
from nbhelpers.data.prepare import PrepareConfig
from nbhelpers.parameters import (
    assigned_names,
    check_parameter_names,
    field_names,
    notebook_config,
    parameter_sources,
)
from nbhelpers.train.recipes.clip import ClipConfig

PARAMS = '# Parameters: every field of PrepareConfig\npreset = "demo"\nsource = None\nlimit = None\n'
INJECTED = '# Parameters\npreset = "t4"\n'


def test_a_namespace_value_wins_and_none_takes_the_preset():
    namespace = {"preset": "t4", "synthetic_train": 123, "synthetic_val": None, "result": object()}
    config = notebook_config(PrepareConfig, namespace)
    t4 = preset_values("t4", "prepare")
    assert config.preset == "t4"
    assert config.synthetic_train == 123
    assert config.synthetic_val == t4["synthetic_val"] == 2000
    assert config.synthetic_test == t4["synthetic_test"] == 5000  # a field absent from the namespace
    assert config.image_size == 256  # not in the preset: the field's default


def test_no_preset_in_the_namespace_means_the_fields_default():
    assert notebook_config(PrepareConfig, {}).preset == "demo"
    assert notebook_config(PrepareConfig, {"preset": None}).synthetic_train == 4000


def test_a_bad_value_still_stops_with_the_configs_own_message():
    with pytest.raises(ConfigError, match="image_size: must be >= 16, got 3"):
        notebook_config(PrepareConfig, {"image_size": 3}, history=[PARAMS])


def test_an_unknown_name_in_the_parameters_cell_names_the_closest_fields():
    cell = "# Parameters: every field of ClipConfig\npreset = 'demo'\nepoch = 20\nepochs = None\nsourse = 'coco'\n"
    history = ["", "from nbhelpers.train.recipes.clip import ClipConfig", cell]
    with pytest.raises(ConfigError) as err:
        notebook_config(ClipConfig, {"epoch": 20}, history=history)
    message = str(err.value)
    assert message.startswith(
        "epoch (closest: epochs); sourse (closest: sources): unknown parameters for ClipConfig"
    )
    assert "allowed: batch_size, checkpoint_every," in message


def test_an_unknown_name_injected_by_papermill_names_the_closest_fields():
    history = [PARAMS, "# Parameters\npreset = 'demo'\nsourse = 'hateful_memes'\n"]
    with pytest.raises(
        ConfigError, match=r"^sourse \(closest: source\): unknown parameter for PrepareConfig"
    ):
        notebook_config(PrepareConfig, {}, history=history)


def test_a_name_with_no_close_field_says_so():
    with pytest.raises(ConfigError, match=r"^xyzzy \(no close name\): unknown parameter"):
        check_parameter_names(PrepareConfig, [PARAMS + "xyzzy = 1\n"])


def test_only_the_last_parameters_run_and_the_injected_cells_after_it_count():
    old_run = PARAMS + "epoch = 3\n"  # fixed by the user, then the cell was run again
    stale_injected = "# Parameters\nlimt = 5\n"  # injected before the last run of the parameters cell
    later = ["result = prepare(config)", "source = 'x'\nmanifest = 1"]
    history = ["", old_run, stale_injected, PARAMS, INJECTED, *later]
    assert parameter_sources(history) == [PARAMS, INJECTED]
    namespace = {"preset": "t4", "result": 1, "manifest": 1, "epoch": 3, "limt": 5}
    assert notebook_config(PrepareConfig, namespace, history=history).preset == "t4"


def test_variables_of_later_cells_are_no_false_alarm_when_the_config_cell_runs_again():
    config_cell = "config = notebook_config(PrepareConfig, globals())"
    history = ["", PARAMS, config_cell, "manifest = prepare(config)\nskips = 1", config_cell]
    namespace = {"preset": "demo", "manifest": {}, "skips": 1, "config": None, "In": history}
    assert notebook_config(PrepareConfig, namespace).source == "synthetic"  # history from namespace["In"]
    namespace["In"] = [*history, PARAMS + 'out_dri = "x"\n', config_cell]  # a new run of the parameters cell
    with pytest.raises(
        ConfigError, match=r"^out_dri \(closest: out_dir\): unknown parameter for PrepareConfig"
    ):
        notebook_config(PrepareConfig, namespace)


def test_without_a_parameters_run_every_injected_cell_counts():
    assert parameter_sources(["x = 1", INJECTED, "y = 2", "# Parameters\nepochs = 1"]) == [
        INJECTED,
        "# Parameters\nepochs = 1",
    ]
    assert parameter_sources(["x = 1", "# Parameters are set above\ny = 2"]) == []


def test_outside_ipython_the_names_are_not_checked():
    config = notebook_config(PrepareConfig, {"epoch": 20, "limit": 7})  # no In: nothing to check against
    assert config.limit == 7


def test_extras_are_allowed_names_but_not_config_fields():
    history = [PARAMS + "compare_modes = True\n"]
    assert notebook_config(PrepareConfig, {"compare_modes": True}, extra=("compare_modes",), history=history)
    with pytest.raises(ConfigError, match=r"^compare_modes \(no close name\)"):
        notebook_config(PrepareConfig, {}, history=history)
    with pytest.raises(ValueError, match="extra: 'limit' is a field of PrepareConfig"):
        notebook_config(PrepareConfig, {}, extra=("limit",))


def test_assigned_names_are_the_cells_top_level_assignments():
    source = "a = 1\nb: int = 2\nc += 3\nd, (e, *f) = 1, (2, 3)\nx.y = 4\nz[0] = 5\nif a:\n    g = 6\na = 7\n"
    assert assigned_names(source) == ["a", "b", "c", "d", "e", "f"]
    assert assigned_names("epochs = (") == []  # the kernel already stopped on the syntax error


def test_field_names_start_with_the_preset():
    assert field_names(PrepareConfig)[:3] == ("preset", "source", "raw_dir")
