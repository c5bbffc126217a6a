"""Sharing a trained classifier: a self-contained folder that :func:`nbhelpers.predict.load` reads, with a
Hugging Face model card, optionally uploaded to the Hub.

``python -m nbhelpers.export RUN_DIR OUT_DIR [--push_to_hub REPO]`` writes::

    OUT_DIR/
      memelab_model.json      what the folder is: recipe, task, classes, shard image side, digests
      model.safetensors       every weight the model predicts with (no pickle), TrainedRun.weights()
      config.json             the run's config (how to rebuild the architecture)
      metrics.json            the run's figures
      operating_points.json   its calibration and thresholds, when it has them
      README.md               the model card (YAML front matter + sections, the Hub's format)

A late-fusion run (02) has no weights of its own: its text and image runs are exported into ``text/`` and
``image/`` inside the folder. Nothing outside the folder is read to load it again, except what builds the
architecture itself: a text run's Hugging Face tokenizer and config (``text_model``: a Hub id, or the
packaged MiniLM vocabulary of the demo's tiny BERT) and a Hugging Face fusion backbone's config.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nbhelpers.evaluation.operating_points import OPERATING_POINTS_FILE
from nbhelpers.fileio import atomic_open, read_json, write_json_atomic
from nbhelpers.predict.model_card import model_card
from nbhelpers.predict.predictor import EXPORT_FILE, WEIGHTS_FILE, Predictor, load

#: The format of ``memelab_model.json`` this module writes.
FORMAT, FORMAT_VERSION = "memelab-model", 1


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_weights(predictor: Predictor, out: Path) -> str:
    """``model.safetensors`` of the predictor's one model, atomically; returns its SHA-256."""
    from safetensors.torch import save  # bytes, so that the file is written atomically

    trained = predictor.models[0]
    metadata = {"format": "pt", "recipe": trained.recipe, "name": predictor.name}
    path = out / WEIGHTS_FILE
    with atomic_open(path, "wb") as f:
        f.write(save(trained.weights(), metadata=metadata))
    return _sha256(path)


def _export_one(predictor: Predictor, source: Path, out: Path, info: dict[str, Any]) -> dict[str, Any]:
    """Writes the weights, config, metrics and operating points of one run into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    info["weights_sha256"] = _write_weights(predictor, out)
    write_json_atomic(out / "config.json", read_json(source / "config.json"))
    write_json_atomic(out / "metrics.json", predictor.metrics)
    return info


def _info(predictor: Predictor) -> dict[str, Any]:
    metrics = predictor.metrics
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "name": predictor.name,
        "recipe": metrics.get("recipe"),
        "model_name": predictor.model_name,
        "task": metrics.get("task"),
        "modality": predictor.modality,
        "classes": list(predictor.classes),
        "shard_image_size": predictor.shard_image_size,
        "checkpoint": metrics.get("checkpoint"),
    }


def export(
    run_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    overwrite: bool = False,
    license: str | None = None,
) -> Path:
    """Writes a classifier run as a self-contained folder (see the module docstring).

    Args:
        run_dir: the run folder (any classifier recipe).
        out_dir: the folder to write; it must not exist, or be empty, unless ``overwrite``.
        overwrite: replace what ``out_dir`` holds.
        license: the model card's licence (a Hub licence id) for a model of the synthetic benchmark alone;
            a real source's terms always make it ``other`` (:func:`~nbhelpers.predict.model_card.licence`).

    Returns:
        ``out_dir``.

    Raises:
        RunNotFoundError: the run, or a file loading it needs, is missing.
        ValueError: the run is not a finished classifier run.
        FileExistsError: ``out_dir`` holds files and ``overwrite`` is False.
    """
    source, out = Path(run_dir), Path(out_dir)
    if out.is_file() or (out.is_dir() and any(out.iterdir())):
        if not overwrite:
            raise FileExistsError(f"out_dir: {out} exists and is not empty (overwrite=True replaces it)")
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    predictor = load(source, device="cpu")
    info = _info(predictor)
    if license:
        info["license"] = license
    fused_from = predictor.metrics.get("fused_from")
    out.mkdir(parents=True, exist_ok=True)
    if fused_from:
        info["parts"] = {}
        for kind, trained in zip(("text", "image"), predictor.models):
            part = Predictor(
                trained.run_dir.name, [trained], read_json(trained.run_dir / "metrics.json"),
                predictor.shard_image_size, device="cpu",
            )  # fmt: skip
            part_info = _export_one(part, trained.run_dir, out / kind, _info(part))
            write_json_atomic(out / kind / EXPORT_FILE, part_info)
            info["parts"][kind] = kind
        write_json_atomic(out / "metrics.json", {**predictor.metrics, "fused_from": dict(info["parts"])})
    else:
        _export_one(predictor, source, out, info)
    if (source / OPERATING_POINTS_FILE).is_file():
        shutil.copyfile(source / OPERATING_POINTS_FILE, out / OPERATING_POINTS_FILE)
    read_config = read_json(source / "config.json") if (source / "config.json").is_file() else {}
    with atomic_open(out / "README.md", "w") as f:
        f.write(model_card(info, predictor.metrics, read_config, predictor.operating_points))
    write_json_atomic(out / EXPORT_FILE, info)  # last: a folder without it is not a finished export
    return out


def push_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    token: str | None = None,
    private: bool = True,
    commit_message: str = "Upload memelab model",
) -> str:
    """Uploads an exported folder to the Hugging Face Hub as a model repository (created if missing).

    Args:
        folder: from :func:`export` (it must hold ``memelab_model.json``).
        repo_id: ``user/name`` on the Hub.
        token: a Hub token (None: the one ``huggingface-cli login`` saved, or ``HF_TOKEN``).
        private: create the repository private (a model trained on harmful content should not be public
            by accident).
        commit_message: the upload's commit message.

    Returns:
        The URL of the upload's commit.

    Raises:
        FileNotFoundError: ``folder`` is not an exported model.
    """
    from huggingface_hub import HfApi

    folder = Path(folder)
    if not (folder / EXPORT_FILE).is_file():
        raise FileNotFoundError(f"{folder}: no {EXPORT_FILE}; write the folder with nbhelpers.export first")
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    commit = api.upload_folder(
        folder_path=str(folder), repo_id=repo_id, repo_type="model", commit_message=commit_message
    )
    return str(getattr(commit, "commit_url", commit))


def exported_info(folder: str | os.PathLike) -> Mapping[str, Any]:
    """The ``memelab_model.json`` of an exported folder.

    Raises:
        FileNotFoundError: the folder is not an exported model.
    """
    path = Path(folder) / EXPORT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: no {EXPORT_FILE} (not a folder written by nbhelpers.export)")
    return read_json(path)
