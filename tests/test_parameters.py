import pytest

from nbhelpers.config import NULL, ConfigError, preset_values
from nbhelpers.data.prepare import PrepareConfig
from nbhelpers.parameters import (
    assigned_names,
    check_parameter_names,
    field_names,
    notebook_config,
    parameter_sources,
    parse_overrides,
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
        notebook_config(PrepareConfig, {"image_size": 3}, history=[PARAMS + "image_size = 3\n"])


def test_an_unknown_name_in_the_parameters_cell_names_the_closest_fields():
    cell = "# Parameters: every field of ClipConfig\npreset = 'demo'\nepoch = 20\nepochs = None\nsourse = 'coco'\n"
    history = ["", "from nbhelpers.train.recipes.clip import ClipConfig", cell]
    with pytest.raises(ConfigError) as err:
        notebook_config(ClipConfig, {"epoch": 20}, history=history)
    message = str(err.value)
    assert message.startswith(
        "epoch (closest: epochs); sourse (closest: sources): unknown parameters for ClipConfig"
    )
    assert "allowed: accumulate_loss, batch_size, checkpoint_every," in message


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
    with pytest.raises(ValueError, match="extra: 'overrides' is a field of PrepareConfig or overrides"):
        notebook_config(PrepareConfig, {}, extra=("overrides",))


def test_assigned_names_are_the_cells_top_level_assignments():
    source = "a = 1\nb: int = 2\nc += 3\nd, (e, *f) = 1, (2, 3)\nx.y = 4\nz[0] = 5\nif a:\n    g = 6\na = 7\n"
    assert assigned_names(source) == ["a", "b", "c", "d", "e", "f"]
    assert assigned_names("epochs = (") == []  # the kernel already stopped on the syntax error


def test_field_names_start_with_the_preset():
    assert field_names(PrepareConfig)[:3] == ("preset", "source", "raw_dir")


# -------------------------------------------------------------------------------- overrides
KNOBS = '# Parameters: the knobs of PrepareConfig\npreset = "t4"\nlimit = None\noverrides = {}\n'


def _config(overrides, **knobs):
    """The config of a parameters cell setting ``knobs`` and ``overrides`` (as typed in the cell)."""
    cell = KNOBS + "".join(f"{k} = {v!r}\n" for k, v in knobs.items()) + f"overrides = {overrides!r}\n"
    namespace = {"preset": "t4", "limit": None, **knobs, "overrides": overrides}
    return notebook_config(PrepareConfig, namespace, history=["", cell])


def test_overrides_set_any_field_and_the_preset_gives_the_rest():
    config = _config({"synthetic_train": 123, "workers": 1}, limit=7)
    t4 = preset_values("t4", "prepare")
    assert (config.synthetic_train, config.workers, config.limit) == (123, 1, 7)
    assert config.synthetic_val == t4["synthetic_val"] == 2000  # not overridden: the preset's value
    assert config.image_size == 256  # in no preset: the field's default


def test_none_in_overrides_takes_the_preset_and_null_sets_none():
    config = _config({"synthetic_train": None, "limit": NULL})
    assert config.synthetic_train == preset_values("t4", "prepare")["synthetic_train"]
    assert config.limit is None
    assert _config({"limit": None}, limit=5).limit == 5  # a None override sets nothing: no clash


def test_an_unknown_key_in_overrides_names_the_closest_fields():
    with pytest.raises(ConfigError) as err:
        _config({"synthetic_trian": 1, "workers": 2, "xyzzy": 3})
    message = str(err.value)
    assert message.startswith(
        "synthetic_trian (closest: synthetic_train, synthetic_val, synthetic_test); xyzzy (no close name): "
        "unknown keys in overrides for PrepareConfig"
    )
    assert "allowed: classes, eval_shard_size," in message


def test_the_preset_is_a_parameter_not_an_override():
    with pytest.raises(
        ConfigError, match=r"^preset: set it as a parameter \(preset = ...\), not in overrides"
    ):
        _config({"preset": "demo"})


def test_a_field_set_as_a_parameter_and_in_overrides_is_an_error_naming_it():
    with pytest.raises(ConfigError) as err:
        _config({"limit": 5, "workers": 1}, limit=7, workers=2, seed=3)
    assert str(err.value) == (
        "limit, workers: set both as a parameter and in overrides (limit = 7 and overrides['limit'] = 5; "
        "workers = 2 and overrides['workers'] = 1); set each field in one place"
    )


def test_a_field_that_is_no_knob_can_still_be_set_at_the_top_level():
    # papermill -p synthetic_train 9: an injected cell after the parameters cell
    history = ["", KNOBS, "# Parameters\nsynthetic_train = 9\n"]
    namespace = {"preset": "t4", "overrides": {}, "synthetic_train": 9}
    assert notebook_config(PrepareConfig, namespace, history=history).synthetic_train == 9
    namespace["overrides"] = {"synthetic_train": 8}  # and it clashes with the same field in overrides
    with pytest.raises(ConfigError, match="^synthetic_train: set both as a parameter and in overrides"):
        notebook_config(PrepareConfig, namespace, history=history)


def test_papermill_overrides_replace_the_cells():
    # papermill -p overrides '{...}' injects the text; -y 'overrides: {...}' injects a dict
    for injected in ("overrides = '{\"workers\": 3}'", "overrides = {'workers': 3}"):
        history = ["", KNOBS + 'overrides = {"limit": 4}\n', f"# Parameters\n{injected}\n"]
        namespace = {"preset": "t4", "overrides": eval(injected.split(" = ", 1)[1])}
        config = notebook_config(PrepareConfig, namespace, history=history)
        assert (config.workers, config.limit) == (3, None)


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ('{"epochs": 2, "x": null, "y": true}', {"epochs": 2, "x": None, "y": True}),  # JSON
        ("{'lr': 1e-3, 'x': None, 'sizes': [1, 2]}", {"lr": 1e-3, "x": None, "sizes": [1, 2]}),  # Python
        ("", {}),
    ],
)
def test_overrides_given_as_text_are_parsed(text, parsed):
    assert parse_overrides(text or None) == parsed


@pytest.mark.parametrize("value", ["epochs: 2", "[1, 2]", [("epochs", 2)], {1: 2}, 3])
def test_overrides_that_are_no_dict_of_names_stop(value):
    with pytest.raises(ConfigError, match=r"^overrides: expected a dict of field name -> value"):
        parse_overrides(value)


def test_unknown_top_level_names_still_stop_with_overrides_allowed():
    with pytest.raises(ConfigError) as err:
        check_parameter_names(PrepareConfig, [KNOBS + "overides = {}\n"])
    assert str(err.value).startswith("overides (closest: overrides): unknown parameter for PrepareConfig")
    assert check_parameter_names(PrepareConfig, [KNOBS]) == ["preset", "limit", "overrides"]


def test_later_variables_sharing_a_fields_name_are_not_read():
    # e.g. notebook 08 imports a module as ssl_recipe, a field of its config, after the config cell
    history = ["", KNOBS, "config = ...", "import json as workers"]
    namespace = {"preset": "t4", "limit": None, "overrides": {}, "workers": object()}
    assert notebook_config(PrepareConfig, namespace, history=history).workers == 2


def test_a_kernel_keeping_no_history_reads_every_field_of_the_namespace():
    # nbval runs cells with store_history=False: In holds none of them, yet the cell's values must apply
    namespace = {"preset": "demo", "limit": 7, "overrides": {"workers": 3}, "In": [""]}
    config = notebook_config(PrepareConfig, namespace)
    assert (config.limit, config.workers) == (7, 3)
