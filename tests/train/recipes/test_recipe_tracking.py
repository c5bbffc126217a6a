"""Every recipe's run, trained with its defaults, leaves TensorBoard event files equal to its history."""

from nbhelpers.train.recipes import clip
from nbhelpers.train.run_dir import read_json
from nbhelpers.train.tracking import LOGS_DIR
from tests.train.test_tracking import event_scalars, history_scalars


def test_every_recipe_run_logs_its_history_to_tensorboard(tiny_runs):
    histories = sorted((tiny_runs / "runs").rglob("history.json"))
    # unimodal (text, image), fusion_cross, clip_classifier_lora, cass_mm (both stages), clip, ssl
    assert len(histories) >= 7
    for history in histories:
        logs = history.parent / LOGS_DIR
        assert list(logs.glob("events.out.tfevents.*")), history
        expected = history_scalars(read_json(history))
        assert expected and event_scalars(logs) == expected, history


def test_report_to_leaves_the_run_folder_unchanged():
    fingerprints = {
        clip.ClipConfig.from_params("demo", report_to=where).identity().fingerprint
        for where in ("tensorboard", "wandb", "none")
    }
    assert len(fingerprints) == 1
