"""The synthetic benchmark's premise: neither modality alone beats chance, both together solve it."""

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.preprocessing import OneHotEncoder

from nbhelpers.data.records import SkipCounter
from nbhelpers.data.sources import synthetic
from nbhelpers.data.taxonomy import NUM_CLASSES


def _attributes(split, n, seed=0):
    specs = [synthetic.sample_spec(seed, split, i, size=64) for i in range(n)]
    image = [
        [s.image_colour, synthetic.SEEN_SHAPES.index(s.shape) if s.shape in synthetic.SEEN_SHAPES else -1,
         s.phrase, round(s.centre[0], 1), round(s.centre[1], 1), s.background // 32]
        for s in specs
    ]  # fmt: skip
    text = [[s.text_colour, s.template] for s in specs]
    labels = np.array([s.label for s in specs])
    return np.array(image, dtype=object), np.array(text, dtype=object), labels


def _fit_score(train_x, train_y, test_x, test_y):
    enc = OneHotEncoder(handle_unknown="ignore").fit(train_x)
    clf = RandomForestClassifier(n_estimators=100, min_samples_leaf=1, random_state=0)
    clf.fit(enc.transform(train_x), train_y)
    return float((clf.predict(enc.transform(test_x)) == test_y).mean())


def test_one_modality_is_at_chance_and_both_solve_it():
    img_tr, txt_tr, y_tr = _attributes("train", 4000)
    img_te, txt_te, y_te = _attributes("test", 2000)
    chance = 1 / NUM_CLASSES
    image_only = _fit_score(img_tr, y_tr, img_te, y_te)
    text_only = _fit_score(txt_tr, y_tr, txt_te, y_te)
    both = _fit_score(np.hstack([img_tr, txt_tr]), y_tr, np.hstack([img_te, txt_te]), y_te)
    assert abs(image_only - chance) < 0.04, image_only
    assert abs(text_only - chance) < 0.04, text_only
    assert both > 0.97, both


def test_label_is_the_colour_difference():
    for i in range(300):
        spec = synthetic.sample_spec(3, "train", i)
        assert spec.label == (spec.image_colour - spec.text_colour) % NUM_CLASSES
        assert synthetic.COLOUR_NAMES[spec.text_colour] in spec.caption


def test_only_class_zero_captions_name_the_drawn_colour():
    specs = [synthetic.sample_spec(0, "train", i) for i in range(500)]
    names_drawn = [
        synthetic.COLOUR_NAMES[s.image_colour] in s.caption.replace(".", " ").split() for s in specs
    ]
    assert names_drawn == [s.label == 0 for s in specs]
    assert sum(names_drawn) > 40


def test_deterministic_in_seed_and_index_and_differs_across_seeds():
    a = synthetic.sample_spec(0, "val", 17)
    assert a == synthetic.sample_spec(0, "val", 17)
    assert a != synthetic.sample_spec(1, "val", 17)
    assert np.array_equal(np.asarray(synthetic.render(a)), np.asarray(synthetic.render(a)))


def test_unseen_split_uses_only_held_out_shapes_templates_and_phrases():
    unseen = [synthetic.sample_spec(0, "unseen", i) for i in range(300)]
    seen = [synthetic.sample_spec(0, "train", i) for i in range(300)]
    assert {s.shape for s in unseen} == set(synthetic.UNSEEN_SHAPES)
    assert {s.template for s in unseen} <= set(synthetic.UNSEEN_TEMPLATES)
    assert {s.phrase for s in unseen} <= set(synthetic.UNSEEN_PHRASES)
    assert not {s.shape for s in seen} & set(synthetic.UNSEEN_SHAPES)
    assert not {s.template for s in seen} & set(synthetic.UNSEEN_TEMPLATES)


@pytest.mark.parametrize("size", [64, 256])
def test_rendered_figure_carries_the_colour(size):
    for i in range(20):
        spec = synthetic.sample_spec(0, "train", i, size=size)
        pixels = np.asarray(synthetic.render(spec)).reshape(-1, 3).astype(int)
        target = np.array(synthetic.COLOURS[synthetic.COLOUR_NAMES[spec.image_colour]])
        distances = np.abs(pixels[:, None, :] - np.array(list(synthetic.COLOURS.values()))[None]).sum(-1)
        nearest = distances.argmin(1)
        close = distances.min(1) < 60
        # the most frequent saturated colour in the picture is the figure's
        counts = np.bincount(nearest[close], minlength=NUM_CLASSES)
        assert counts.argmax() == spec.image_colour, (i, counts, target)


def test_read_yields_sizes_limit_and_rejects_unknown_split():
    records = list(
        synthetic.read(None, "val", SkipCounter(), sizes={"val": 12, "train": 1, "test": 1, "unseen": 1})
    )
    assert len(records) == 12
    assert len(list(synthetic.read(None, "val", SkipCounter(), limit=5))) == 5
    assert records[0].meta["hateful"] == int(records[0].label == 6)
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        list(synthetic.read(None, "dev", SkipCounter()))
    with pytest.raises(ValueError, match="limit must be None or a non-negative int"):
        list(synthetic.read(None, "val", SkipCounter(), limit=-1))
