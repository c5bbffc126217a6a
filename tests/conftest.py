"""Fixtures shared across test packages."""

from __future__ import annotations

import os

import pytest
import torch

from nbhelpers.models.clip import TINY_VIT, create_clip
from nbhelpers.train.recipes import get_recipe
from tests.helpers import make_label_shards, make_shards, save_tiny_bert

# Under pytest-xdist (`make test` runs two workers on two cores) each worker, and every process a test
# starts, computes on one thread: two workers with two OpenMP threads each would spin against each other.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

#: The ssl recipe's smallest DINO: a 2-layer ViT on 16-px pictures.
TINY_DINO = dict(
    method="dino", backbone="vit_test", vit_backbone="vit_test", image_size=16, small_image=True,
    method_kwargs=dict(n_local_crops=2, out_dim=64, head_hidden_dim=32, head_bottleneck_dim=16),
)  # fmt: skip


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory):
    """Real runs of every recipe, made by its ``run()`` on tiny shards (48 test samples): the text, image
    and late-fusion runs of ``unimodal``; ``clip``; a DINO ViT (``ssl_dino_vit_test``); ``cass_mm``;
    ``clip_classifier_lora`` and ``fusion_cross`` on a tiny CLIP's exported weights (``run:tinyclip``, a
    folder holding only ``clip_weights.pt``).

    Shared by several test modules: copy a run before changing it.
    """
    root = tmp_path_factory.mktemp("tiny_runs")
    make_shards(root / "shards", train=64, val=32, test=48, unseen=16, train_shard=64, eval_shard=48)
    save_tiny_bert(root)
    runs, shards = str(root / "runs"), str(root / "shards")
    tiny = dict(runs_dir=runs, data_dir=shards, batch_size=16, progress=False, eval_splits="test,val")
    # Explicit run names (the folders the tests open); a run with none is named by its fingerprint.
    get_recipe("unimodal").run(
        dict(
            tiny,
            run_name="unimodal",
            text_model=str(root / "tinybert"),
            text_max_length=16,
            image_size=32,
            epochs=2,
        )
    )
    torch.manual_seed(0)
    clip, _, _, _ = create_clip(TINY_VIT)
    (root / "runs" / "tinyclip").mkdir(parents=True)
    torch.save(clip.state_dict(), root / "runs" / "tinyclip" / "clip_weights.pt")
    get_recipe("fusion").run(
        dict(tiny, run_name="fusion_cross", pretrained="run:tinyclip", epochs=3, eval_splits="")
    )
    get_recipe("clip_classifier").run(
        dict(tiny, run_name="clip_classifier_lora", pretrained="run:tinyclip", epochs=1)
    )
    get_recipe("cass_mm").run(dict(tiny, run_name="cass_mm", epochs=1, head_epochs=2))
    get_recipe("clip").run(dict(tiny, run_name="clip", batch_size=8, epochs=1, steps_per_epoch=2))
    get_recipe("ssl").run(dict(tiny, run_name="ssl_dino_vit_test", **TINY_DINO, epochs=1, steps_per_epoch=2))
    return root


#: The runs of ``tiny_label_runs``, each a recipe's classifier over the three classes.
LABEL_RUNS = ("unimodal_text", "unimodal_image", "unimodal_late_fusion", "cass_mm", "clip_classifier_lora")
LABEL_RUNS += ("fusion_cross",)


@pytest.fixture(scope="session")
def tiny_label_runs(tmp_path_factory):
    """:func:`tiny_runs`' classifiers on shards of a label set of the user's own, the three classes
    ``cat``, ``dog``, ``bird`` (:data:`tests.helpers.THREE_CLASSES`; 30 train, 12 val, 12 test samples):
    the text, image and late-fusion runs of ``unimodal``, ``cass_mm``, ``clip_classifier_lora`` and
    ``fusion_cross`` (its head over the three classes), the last two on a tiny CLIP's weights
    (``run:tinyclip``).

    Shared by several test modules: copy a run before changing it.
    """
    root = tmp_path_factory.mktemp("tiny_label_runs")
    make_label_shards(root / "shards", train=30, val=12, test=12)
    save_tiny_bert(root)
    runs, shards = str(root / "runs"), str(root / "shards")
    tiny = dict(runs_dir=runs, data_dir=shards, batch_size=16, progress=False, eval_splits="test,val")
    get_recipe("unimodal").run(
        dict(tiny, run_name="unimodal", text_model=str(root / "tinybert"), text_max_length=16, epochs=1)
    )
    torch.manual_seed(0)
    clip, _, _, _ = create_clip(TINY_VIT)
    (root / "runs" / "tinyclip").mkdir(parents=True)
    torch.save(clip.state_dict(), root / "runs" / "tinyclip" / "clip_weights.pt")
    get_recipe("fusion").run(dict(tiny, run_name="fusion_cross", pretrained="run:tinyclip", epochs=3))
    get_recipe("clip_classifier").run(
        dict(tiny, run_name="clip_classifier_lora", pretrained="run:tinyclip", epochs=1)
    )
    get_recipe("cass_mm").run(dict(tiny, run_name="cass_mm", epochs=1, head_epochs=2, cnn_image_size=16))
    return root
