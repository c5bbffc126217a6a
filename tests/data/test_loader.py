import json
import pickle
import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch
import webdataset as wds

from nbhelpers.data.loader import (
    WeightedResampledShards,
    make_loader,
    make_pipeline,
    shard_set,
    upsample_classes,
)
from nbhelpers.data.transforms import RandomResizedCropFlip, batch_normalize, eval_transform, train_transform


def _keys(pipeline, n_batches=None):
    keys = []
    for i, batch in enumerate(pipeline):
        if n_batches is not None and i >= n_batches:
            break
        keys += batch["key"]
    return keys


def test_eval_stream_reads_every_sample_once_in_order(small_synthetic):
    _, manifest = small_synthetic
    pipeline = make_pipeline([manifest], "test", batch_size=5, image_transform=eval_transform(32))
    batches = list(pipeline)
    keys = [k for b in batches for k in b["key"]]
    assert len(keys) == 12 == len(set(keys)) and keys == sorted(keys)
    assert [len(b["key"]) for b in batches] == [5, 5, 2]  # the last partial batch is kept in evaluation
    batch = batches[0]
    assert batch["image"].shape == (5, 3, 32, 32) and batch["image"].dtype == torch.float32
    assert batch["label"].dtype == torch.int64 and batch["valid_pair"].dtype == torch.bool
    assert torch.equal(batch["valid_pair"], batch["label"] == 0)
    assert pipeline.skipped == {}


def test_eval_stream_splits_by_worker_without_duplicates(small_synthetic):
    _, manifest = small_synthetic
    loader = make_loader(make_pipeline([manifest], "unseen", batch_size=4), num_workers=2)
    keys = [k for b in loader for k in b["key"]]
    assert len(keys) == 12 == len(set(keys))


def test_train_stream_is_infinite_and_reproducible_per_epoch(small_synthetic):
    _, manifest = small_synthetic

    def stream(epoch):
        return make_pipeline(
            [manifest], "train", batch_size=8, train=True, seed=3, epoch=epoch, shuffle_buffer=20
        )

    first = _keys(stream(0), 12)  # 96 samples from a 40-sample split: it resamples
    assert len(first) == 96 and len(set(first)) <= 40
    assert first == _keys(stream(0), 12)
    assert first != _keys(stream(1), 12)


def test_tokenizer_and_transform_are_applied(small_synthetic):
    import open_clip

    _, manifest = small_synthetic
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    batch = next(
        iter(
            make_pipeline(
                [manifest],
                "train",
                batch_size=4,
                train=True,
                image_transform=train_transform(48),
                tokenizer=tokenizer,
            )
        )
    )
    assert batch["tokens"].shape == (4, 77) and batch["image"].shape == (4, 3, 48, 48)
    assert torch.equal(batch["tokens"][0], tokenizer([batch["text"][0]])[0])


def test_class_upsampling_changes_class_shares(small_synthetic):
    _, manifest = small_synthetic
    plain = Counter(
        make_pipeline([manifest], "train", batch_size=400, train=True).__iter__().__next__()["label"].tolist()
    )
    only_hate = make_pipeline(
        [manifest], "train", batch_size=200, train=True, class_factors={c: 0.0 for c in range(6)}
    )
    assert set(next(iter(only_hate))["label"].tolist()) == {6}
    assert len(plain) > 3
    with pytest.raises(ValueError, match="class_factors: unknown labels \\[9\\]"):
        make_pipeline([manifest], "train", batch_size=2, train=True, class_factors={9: 2.0})


def test_upsample_classes_expected_repeats():
    samples = [{"label": i % 2} for i in range(4000)]
    counts = Counter(s["label"] for s in upsample_classes(samples, {0: 2.5, 1: 0.25}, seed=0))
    assert abs(counts[0] / 2000 - 2.5) < 0.06 and abs(counts[1] / 2000 - 0.25) < 0.03


def test_source_factors_weight_shards_by_size_times_factor(small_synthetic, tmp_path):
    _, manifest = small_synthetic
    other = tmp_path / "other"
    shutil.copytree(manifest["_dir"], other)
    m2 = json.loads((other / "manifest.json").read_text())
    m2["source"] = "other"
    (other / "manifest.json").write_text(json.dumps(m2))
    shards = shard_set([manifest, other], "train", source_factors={"other": 3.0})
    assert shards.num_samples == 80 and shards.sources == ["synthetic", "other"]
    assert shards.weights == [16.0, 16.0, 8.0, 48.0, 48.0, 24.0]
    draws = Counter(
        d["url"].startswith(str(other))
        for d, _ in zip(WeightedResampledShards(shards.urls, shards.weights, 0), range(4000))
    )
    assert abs(draws[True] / 4000 - 0.75) < 0.03


def test_unknown_split_names_the_available_ones(small_synthetic):
    _, manifest = small_synthetic
    with pytest.raises(KeyError, match="has no split 'dev_seen'"):
        shard_set([manifest], "dev_seen")


def _write_shard(path: Path, samples: list[dict]):
    with wds.TarWriter(str(path), encoder=False) as sink:
        for s in samples:
            sink.write(s)


def test_bad_samples_are_skipped_and_counted_and_pickles_never_loaded(small_synthetic, tmp_path):
    _, manifest = small_synthetic
    good = next(iter(wds.WebDataset(str(Path(manifest["_dir"]) / "val-00000.tar"), shardshuffle=False)))

    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled!')",))

    unlabelled = dict(good, __key__="u", json=json.dumps({**json.loads(good["json"]), "label": -1}).encode())
    samples = [
        dict(good, __key__="ok1", pyd=pickle.dumps(Boom())),
        dict(good, __key__="badjpg", jpg=b"not a jpeg"),
        {"__key__": "nojson", "jpg": good["jpg"], "txt": good["txt"]},
        dict(good, __key__="badjson", json=b"{oops"),
        unlabelled,
        dict(good, __key__="ok2"),
    ]
    root = tmp_path / "src"
    root.mkdir()
    _write_shard(root / "val-00000.tar", samples)
    (root / "sizes.json").write_text(json.dumps({"val-00000.tar": 6}))
    m = {
        "_dir": str(root),
        "source": "unit",
        "splits": {"val": {"shards": ["val-00000.tar"], "num_samples": 6, "class_counts": {}}},
    }
    pipeline = make_pipeline([m], "val", batch_size=10)
    with pytest.warns(UserWarning, match="skipping 1 sample"):
        keys = _keys(pipeline)
    assert keys == ["ok1", "ok2"]
    assert pipeline.skipped == {
        "undecodable_image": 1,
        "missing_member": 1,
        "bad_metadata": 1,
        "unlabelled": 1,
    }


def _fast_stream(manifest, epoch=0, **kw):
    """A training stream as the streamed recipes build it: uint8 crops, per-batch normalisation."""
    crop = RandomResizedCropFlip(32)
    return make_pipeline(
        [manifest], "train", batch_size=4, train=True, seed=3, epoch=epoch, shuffle_buffer=20,
        image_transform=crop, batch_transform=batch_normalize(), decode_min_side=crop.min_side, **kw,
    )  # fmt: skip


def _take(batches, n):
    out = []
    for batch in batches:
        out.append(batch)
        if len(out) == n:
            return out
    raise AssertionError(f"the stream ended after {len(out)} batches")


def _same(a, b):
    return a["key"] == b["key"] and torch.equal(a["image"], b["image"])


def test_train_stream_transforms_ignore_and_keep_the_global_rng(small_synthetic):
    _, manifest = small_synthetic
    torch.manual_seed(0)
    first = _take(_fast_stream(manifest), 3)
    after = torch.rand(3)
    torch.manual_seed(123)  # another global state: the same images, and the caller's state untouched
    again = _take(_fast_stream(manifest), 3)
    torch.manual_seed(0)
    assert torch.equal(torch.rand(3), after)
    assert all(_same(a, b) for a, b in zip(first, again))
    assert first[0]["image"].dtype == torch.float32 and first[0]["image"].shape == (4, 3, 32, 32)
    assert not _same(first[0], _take(_fast_stream(manifest, epoch=1), 1)[0])


def test_each_worker_runs_its_own_stream_and_the_loader_takes_them_in_turn(small_synthetic):
    _, manifest = small_synthetic
    alone = _take(_fast_stream(manifest), 3)
    one = _take(make_loader(_fast_stream(manifest), num_workers=1, seed=0), 3)
    two = _take(make_loader(_fast_stream(manifest), num_workers=2, seed=0), 6)
    assert all(_same(a, b) for a, b in zip(alone, one))  # worker 0's stream is the stream
    assert all(_same(a, b) for a, b in zip(alone, two[0::2]))  # worker 0's batches come first
    assert not any(_same(a, b) for a, b in zip(alone, two[1::2]))  # worker 1 draws its own
    again = _take(make_loader(_fast_stream(manifest), num_workers=2, seed=0), 6)
    assert all(_same(a, b) for a, b in zip(two, again))


def _identical(a, b):
    """Every field of two batches equal: tensors (dtype, shape, values) and lists (keys, texts, metadata)."""
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], torch.Tensor):
            assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
        else:
            assert a[k] == b[k], k
    return True


@pytest.mark.parametrize("workers", [0, 2])
def test_the_loader_hands_over_the_pipelines_batches_unchanged(small_synthetic, workers):
    from torch.utils.data._utils.collate import default_convert

    _, manifest = small_synthetic
    tok = lambda texts: torch.tensor([[len(t), 1] for t in texts])  # noqa: E731
    loader = make_loader(_fast_stream(manifest, tokenizer=tok), num_workers=workers, seed=0)
    got = _take(loader, 4)
    if workers == 0:  # worker 0's stream is the stream: the pipeline's own batches, every field
        alone = _take(_fast_stream(manifest, tokenizer=tok), 4)
        assert all(_identical(a, b) for a, b in zip(alone, got))
    # what the DataLoader's default conversion would have made of them: the same batches
    assert all(_identical(default_convert(b), b) for b in got)
    assert got[0]["meta"][0]["label"] == got[0]["label"][0].item() and got[0]["tokens"].shape == (4, 2)
