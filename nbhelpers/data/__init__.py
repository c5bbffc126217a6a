"""Data: the seven-class taxonomy and label sets, one reader per raw format, shards, and the loader.

Submodules: ``taxonomy``, ``records``, ``validity``, ``sources`` (``synthetic``, ``hateful_memes``,
``mmhs150k``, ``fakeddit``, ``coco``, and ``hf`` and ``own`` over one row reader), ``image``, ``shards``,
``tar_samples``, ``prepare``, ``loader``, ``sampler``, ``memory``, ``transforms``, ``inspect``, ``verify``. The
names most notebooks need are re-exported here, imported on first use so that importing one light submodule
(``taxonomy``, ``sources``) does not pull in torch and webdataset.
"""

import importlib

_EXPORTS = {
    "CLASSES": "taxonomy",
    "NUM_CLASSES": "taxonomy",
    "class_name": "taxonomy",
    "is_valid_pair": "taxonomy",
    "LabelSet": "taxonomy",
    "SEVEN_CLASSES": "taxonomy",
    "label_set_of": "taxonomy",
    "make_loader": "loader",
    "make_pipeline": "loader",
    "shard_set": "loader",
    "SeededBatchSampler": "sampler",
    "TensorSplit": "memory",
    "epoch_batches": "memory",
    "load_split": "memory",
    "PrepareConfig": "prepare",
    "read_manifest": "shards",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
