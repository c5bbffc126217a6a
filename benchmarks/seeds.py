"""Every demo recipe of notebooks 02-08, trained with several seeds: mean ± sd per recipe, metric and split.

    python -m benchmarks.seeds --seeds 0 1 2                  # trains what is missing, writes results/seeds.json
    python -m benchmarks.seeds --seeds 0 1 2 --recipes cass_mm clip_classifier_baseline \\
        --variant epochs_x2 cass_mm.epochs=10 clip_classifier_baseline.epochs=6
    python -m benchmarks.seeds --seeds 0 1 2 --recipes cass_mm --variant train_x2 data.synthetic_train=8000
    python -m benchmarks.seeds render                         # docs/reproducing.md's tables from results/seeds.json

Each run is one ``python -m nbhelpers.train RECIPE preset=demo seed=S run_name=NAME runs_dir=...`` into
``runs/seeds/<variant>/seed<S>/NAME``, on the synthetic shards of the demo preset (built by
``python -m nbhelpers.data.prepare --source synthetic --preset demo`` if missing). The data's own seed
stays fixed (0): only the recipes' seed changes, which sets each model's initialisation and its data
order. The recipes that start from notebook 03's CLIP (06's classifiers, 07's fusion heads) start from
the CLIP run of the same seed (``pretrained=run:clip`` names the folder ``clip`` of that seed), so the
spread covers the whole pipeline.

A variant changes the config: ``ENTRY.field=value`` one entry's field, ``field=value`` every entry's
(dependencies included), ``data.field=value`` the shards (another prepare field, e.g. ``synthetic_train``;
its shards go to ``data/seeds/<variant>``). Each variant is a separate block of ``seeds.json``.

Resumable: a run the CLI finished is loaded, never trained again, and an entry whose runs are finished
with the same command line is not handed to the CLI at all (``--recheck`` hands it again).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file (`python benchmarks/seeds.py`): the repository root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.machine import cpu_model  # noqa: E402
from benchmarks.readme_tables import markdown_table, render_command, replace_block  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "seeds.json"
#: The documentation page whose generated block this benchmark renders.
PAGE = ROOT / "docs" / "reproducing.md"
BLOCK = "seeds"
DEFAULT_VARIANT = "demo"
#: Per-split numbers of a metrics.json that are counts or properties of the data, not scores.
NOT_SCORES = frozenset({"num_samples", "num_pairs", "positive_rate"})


@dataclass(frozen=True)
class Row:
    """One run folder an entry writes, and how docs/reproducing.md names it.

    Attributes:
        folder: the run folder's name in the seed's runs dir.
        label: the model's name in docs/reproducing.md.
        notebook: the notebook that trains it.
        modality: image, text, late fusion or multimodal.
        table: which table of docs/reproducing.md shows it: ``7class``, ``binary`` or ``representation``.
    """

    folder: str
    label: str
    notebook: str
    modality: str
    table: str


@dataclass(frozen=True)
class Entry:
    """One command of the study: a recipe with the parameters its notebook gives it.

    Attributes:
        key: the run name (``run_name=key``) and the name a variant's ``key.field=value`` uses.
        recipe: the registered recipe the CLI runs.
        params: ``field -> value`` passed to the CLI besides the preset, seed, run name and folders.
        rows: the run folders it writes.
        needs: entries that must run first in the same runs dir (the CLIP that ``run:clip`` names).
    """

    key: str
    recipe: str
    params: Mapping[str, str]
    rows: tuple[Row, ...]
    needs: tuple[str, ...] = ()


def _fusion(kind: str) -> Entry:
    label = f"Hate-CLIPper `{kind}`" + (" on the demo CLIP" if kind == "cross" else "")
    return Entry(
        f"fusion_{kind}", "fusion", {"fusion": kind, "pretrained": "run:clip"},
        (Row(f"fusion_{kind}", label, "07", "multimodal", "binary"),), needs=("clip",),
    )  # fmt: skip


def _classifier(mode: str, label: str) -> Entry:
    key = f"clip_classifier_{mode}"
    params = {"mode": mode, "pretrained": "run:clip", "eval_splits": "test,unseen"}
    return Entry(key, "clip_classifier", params, (Row(key, label, "06", "multimodal", "7class"),), ("clip",))


#: Every run the notebooks 02-08 make with the demo preset, in the order they make them. ``clip`` must be
#: named ``clip``: ``pretrained=run:clip`` names the folder ``runs_dir/clip`` when it exists.
ENTRIES: tuple[Entry, ...] = (
    Entry(
        "unimodal", "unimodal", {},
        (
            Row("unimodal_image", "ResNet-18", "02", "image", "7class"),
            Row("unimodal_text", "tiny BERT", "02", "text", "7class"),
            Row("unimodal_late_fusion", "late fusion (sum of probabilities)", "02", "late fusion", "7class"),
        ),
    ),
    Entry(
        "clip", "clip", {"eval_splits": "test,unseen"},
        (Row("clip", "CLIP (03), zero-shot colour prompts", "03", "multimodal", "representation"),),
    ),
    Entry(
        "ssl_barlow_twins", "ssl", {},
        (Row("ssl_barlow_twins", "Barlow Twins, ResNet-18", "04", "image", "representation"),),
    ),
    Entry(
        "ssl_dino", "ssl", {"method": "dino", "backbone": "vit_tiny_demo"},
        (Row("ssl_dino", "DINO, ViT (demo size; trained visibly by 08)", "08", "image", "representation"),),
    ),
    Entry("cass_mm", "cass_mm", {}, (Row("cass_mm", "CASS-MM + transformer head", "05", "multimodal", "7class"),)),
    _classifier("baseline", "CLIP baseline (full fine-tuning) + head"),
    _classifier("lora", "CLIP LoRA (rank 4, every `out_proj`) + head"),
    _fusion("cross"),
    _fusion("align"),
    _fusion("concat"),
)  # fmt: skip
BY_KEY = {e.key: e for e in ENTRIES}


@dataclass
class Variant:
    """A config change applied to the study: its name and its ``key=value`` overrides, sorted by scope.

    Attributes:
        name: the variant's name (``demo``: none).
        overrides: the overrides as given.
        every: ``field -> value`` for every entry.
        by_entry: ``entry -> {field: value}``.
        data: ``prepare field -> value`` (the shards).
    """

    name: str
    overrides: list[str] = field(default_factory=list)
    every: dict[str, str] = field(default_factory=dict)
    by_entry: dict[str, dict[str, str]] = field(default_factory=dict)
    data: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, tokens: Sequence[str]) -> Variant:
        """``[NAME, key=value, ...]`` as a variant.

        Raises:
            ValueError: no name, a name that is not a plain folder name, a token without ``=``, an unknown
                entry in ``ENTRY.field``, or a key given twice.
        """
        if not tokens or "=" in tokens[0]:
            raise ValueError("--variant: expected a name first, then key=value pairs")
        name = tokens[0]
        if not name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"--variant: {name!r} is not a plain name (letters, digits, _ and -)")
        variant = cls(name, list(tokens[1:]))
        seen = set()
        for token in tokens[1:]:
            key, sep, value = token.partition("=")
            if not sep or not key:
                raise ValueError(f"--variant: expected key=value, got {token!r}")
            if key in seen:
                raise ValueError(f"--variant: {key!r} is given twice")
            seen.add(key)
            scope, dot, name_ = key.rpartition(".")
            if not dot:
                variant.every[key] = value
            elif scope == "data":
                variant.data[name_] = value
            elif scope in BY_KEY:
                variant.by_entry.setdefault(scope, {})[name_] = value
            else:
                raise ValueError(
                    f"--variant: {key!r}: {scope!r} is neither 'data' nor an entry ({', '.join(BY_KEY)})"
                )
        return variant

    def params(self, entry: Entry) -> dict[str, str]:
        """The entry's parameters with this variant's overrides."""
        return {**entry.params, **self.every, **self.by_entry.get(entry.key, {})}


def select(keys: Iterable[str] | None) -> list[Entry]:
    """The entries named (all if None) and what they need, in the study's order.

    Raises:
        ValueError: an unknown entry name (the message lists them).
    """
    if keys is None:
        return list(ENTRIES)
    wanted = set()
    for key in keys:
        if key not in BY_KEY:
            raise ValueError(f"--recipes: unknown entry {key!r}; known: {', '.join(BY_KEY)}")
        wanted |= {key, *BY_KEY[key].needs}
    return [e for e in ENTRIES if e.key in wanted]


def command(entry: Entry, params: Mapping[str, str], seed: int, runs_dir: Path, data_dir: Path) -> list[str]:
    """The CLI arguments (after ``python -m nbhelpers.train``) of ``entry``'s run with ``seed``."""
    fixed = {"preset": "demo", "seed": str(seed), "run_name": entry.key, "runs_dir": str(runs_dir)}
    fixed.update(data_dir=str(data_dir), progress="false")
    return [entry.recipe, *(f"{k}={v}" for k, v in {**fixed, **params}.items())]


def subprocess_runner(argv: Sequence[str], log: Path) -> None:
    """Runs ``python -m nbhelpers.train *argv`` in a fresh process, its output appended to ``log``.

    Raises:
        RuntimeError: the run failed; the message holds the end of its log.
    """
    env = dict(os.environ, PYTHONHASHSEED="0", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    with log.open("a") as out:
        out.write(f"$ python -m nbhelpers.train {' '.join(argv)}\n")
        out.flush()
        done = subprocess.run(
            [sys.executable, "-m", "nbhelpers.train", *argv],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    if done.returncode:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-15:])
        raise RuntimeError(f"exit status {done.returncode}; end of {log}:\n{tail}")


def in_process_runner(argv: Sequence[str], log: Path) -> None:
    """Runs the CLI's ``main(argv)`` in this process (quick checks: no interpreter start per run)."""
    from nbhelpers.train.__main__ import main

    with log.open("a") as out:
        out.write(f"$ python -m nbhelpers.train {' '.join(argv)} (in process)\n")
    main(list(argv))


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def scores(metrics: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """``split -> {metric: value}`` of one run's ``metrics.json``.

    ``splits`` gives every numeric score per split (counts excluded); an SSL run's ``probes``
    (``split -> probe label -> encoder -> metric``) gives ``<label>.<metric>`` for the trained encoder
    and ``<label>.random_<metric>`` for the same probe on the randomly initialised one.

    Raises:
        ValueError: the run has neither ``splits`` nor ``probes``.
    """
    out: dict[str, dict[str, float]] = {}
    for split, values in (metrics.get("splits") or {}).items():
        out[split] = {k: float(v) for k, v in values.items() if _number(v) and k not in NOT_SCORES}
    for split, labels in (metrics.get("probes") or {}).items():
        for label, encoders in labels.items():
            for encoder, values in encoders.items():
                prefix = "random_" if encoder.startswith("random") else ""
                for k, v in values.items():
                    if _number(v):
                        out.setdefault(split, {})[f"{label}.{prefix}{k}"] = float(v)
    if not out:
        raise ValueError(f"metrics of {metrics.get('recipe', '?')!r} hold neither 'splits' nor 'probes'")
    return out


def summary(values: Sequence[float]) -> dict[str, Any]:
    """``{"mean", "sd", "n", "values"}``: the sample standard deviation (n - 1), None below two values."""
    values = [float(v) for v in values]
    return {
        "mean": round(statistics.fmean(values), 6),
        "sd": round(statistics.stdev(values), 6) if len(values) > 1 else None,
        "n": len(values),
        "values": values,
    }


def row_record(entry: Entry, row: Row, seeds: Sequence[int], runs_root: Path) -> dict[str, Any] | None:
    """The row's figures over the seeds whose run finished (None if none did)."""
    found = []
    for seed in seeds:
        path = runs_root / f"seed{seed}" / row.folder / "metrics.json"
        if path.is_file():
            found.append((seed, path, json.loads(path.read_text())))
    if not found:
        return None
    per_seed = [scores(m) for _, _, m in found]
    splits: dict[str, dict[str, Any]] = {}
    for split in per_seed[0]:
        for metric in per_seed[0][split]:
            values = [s.get(split, {}).get(metric) for s in per_seed]
            if all(v is not None for v in values):
                splits.setdefault(split, {})[metric] = summary(values)
    return {
        "label": row.label, "notebook": row.notebook, "modality": row.modality, "table": row.table,
        "recipe": entry.recipe, "entry": entry.key, "seeds": [s for s, _, _ in found],
        "runs": [_shown(p.parent) for _, p, _ in found], "fingerprints": [m.get("fingerprint") for _, _, m in found],
        "train_seconds": summary([m.get("train_seconds") or 0.0 for _, _, m in found]),
        "scores": splits,
    }  # fmt: skip


def _shown(path: Path) -> str:
    """``path`` relative to the repository when inside it (what the JSON records)."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def machine() -> dict[str, Any]:
    """The machine the figures come from: CPU model, cores, OS, Python, torch and its threads."""
    import torch

    cpu = cpu_model()
    return {
        "cpu": cpu, "cores": os.cpu_count(), "os": platform.platform(), "python": platform.python_version(),
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }  # fmt: skip


def ensure_shards(data_dir: Path, data: Mapping[str, str], log: Callable[[str], None]) -> dict[str, Any]:
    """The synthetic shards' manifest under ``data_dir``, built with the demo preset (and ``data``) if missing.

    Raises:
        ValueError: the shards exist but were built with other values of ``data``'s fields.
        RuntimeError: building them failed.
    """
    manifest = data_dir / "synthetic" / "manifest.json"
    if not manifest.is_file():
        argv = ["--source", "synthetic", "--preset", "demo", "--out_dir", str(data_dir)]
        for key, value in data.items():
            argv += [f"--{key}", value]
        log(f"building shards: python -m nbhelpers.data.prepare {' '.join(argv)}")
        done = subprocess.run([sys.executable, "-m", "nbhelpers.data.prepare", *argv], cwd=ROOT)
        if done.returncode:
            raise RuntimeError(f"building the shards in {data_dir} failed (exit status {done.returncode})")
    found = json.loads(manifest.read_text())
    for key, value in data.items():
        stored = found.get("config", {}).get(key)
        if str(stored) != value:
            raise ValueError(
                f"{manifest}: {key} is {stored!r}, the variant asks for {value!r}; use another data dir"
            )
    return found


def data_record(manifest: Mapping[str, Any], data_dir: Path) -> dict[str, Any]:
    """What the runs were trained and scored on: the shards' folder, generator seed, image size, split sizes."""
    config = manifest.get("config", {})
    return {
        "data_dir": _shown(data_dir), "source": manifest.get("source"), "preset": config.get("preset"),
        "data_seed": config.get("seed"), "image_size": manifest.get("image_size"),
        "samples": {split: info["num_samples"] for split, info in manifest.get("splits", {}).items()},
    }  # fmt: skip


def _stamp_ok(stamp: Path, argv: Sequence[str], entry: Entry, runs_dir: Path) -> bool:
    """Whether ``entry``'s runs finished with exactly ``argv`` and still hold the figures they finished with."""
    if not stamp.is_file():
        return False
    record = json.loads(stamp.read_text())
    if record.get("argv") != list(argv):
        return False
    for row in entry.rows:
        metrics = runs_dir / row.folder / "metrics.json"
        if not metrics.is_file() or json.loads(metrics.read_text()).get("fingerprint") != record[
            "fingerprints"
        ].get(row.folder):
            return False
    return True


def run_study(
    variant: Variant,
    seeds: Sequence[int],
    entries: Sequence[Entry],
    *,
    runs_root: Path,
    data_dir: Path,
    results: Path,
    runner: Callable[[Sequence[str], Path], None] = subprocess_runner,
    recheck: bool = False,
    invocation: str = "",
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Trains (or loads) every entry for every seed, then writes the variant's block of ``results``.

    ``results`` is rewritten after each entry, so an interrupted study leaves the figures it has. Rows of
    this variant that another call wrote stay unless this call has figures for them.

    Returns:
        The whole results file as written. Its ``failures`` lists the runs that failed (they are
        retried on the next call; entries needing them are skipped).
    """
    manifest = ensure_shards(data_dir, variant.data, log)
    variant_root = runs_root / variant.name
    failed: dict[str, str] = {}
    document = json.loads(results.read_text()) if results.is_file() else {}
    for entry in entries:
        params = variant.params(entry)
        for seed in seeds:
            runs_dir = variant_root / f"seed{seed}"
            runs_dir.mkdir(parents=True, exist_ok=True)
            tag = f"[{variant.name} seed {seed}] {entry.key}"
            missing = [n for n in entry.needs if f"{n}@{seed}" in failed]
            if missing:
                log(f"{tag}: skipped, {', '.join(missing)} failed")
                failed[f"{entry.key}@{seed}"] = f"needs {', '.join(missing)}"
                continue
            argv = command(entry, params, seed, runs_dir, data_dir)
            stamp = runs_dir / f"{entry.key}.done.json"
            if not recheck and _stamp_ok(stamp, argv, entry, runs_dir):
                log(f"{tag}: finished before")
                continue
            start = time.perf_counter()
            try:
                runner(argv, runs_dir / f"{entry.key}.log")
            except Exception as err:  # report, go on with the others; the next call retries it
                log(f"{tag}: FAILED ({type(err).__name__}: {err})")
                failed[f"{entry.key}@{seed}"] = f"{type(err).__name__}: {err}"
                continue
            fingerprints = {
                row.folder: json.loads((runs_dir / row.folder / "metrics.json").read_text()).get(
                    "fingerprint"
                )
                for row in entry.rows
            }
            stamp.write_text(json.dumps({"argv": argv, "fingerprints": fingerprints}, indent=1) + "\n")
            log(f"{tag}: done in {time.perf_counter() - start:.0f} s")
        document = write_results(
            results, variant, seeds, entries, variant_root, manifest, data_dir, invocation
        )
    document["failures"] = failed
    return document


def write_results(
    results: Path,
    variant: Variant,
    seeds: Sequence[int],
    entries: Sequence[Entry],
    variant_root: Path,
    manifest: Mapping[str, Any],
    data_dir: Path,
    invocation: str,
) -> dict[str, Any]:
    """Merges this variant's rows into ``results`` (written atomically) and returns the whole document."""
    document = json.loads(results.read_text()) if results.is_file() else {}
    document.setdefault("what", "mean ± sample sd over seeds of every demo recipe; see benchmarks/seeds.py")
    variants = document.setdefault("variants", {})
    old = variants.get(variant.name, {})
    same = old.get("overrides") == variant.overrides and old.get("seeds") == list(seeds)
    rows = dict(old.get("rows", {})) if same else {}
    for entry in entries:
        for row in entry.rows:
            record = row_record(entry, row, seeds, variant_root)
            if record is not None:
                rows[row.folder] = record
    variants[variant.name] = {
        "overrides": variant.overrides, "seeds": list(seeds), "command": invocation,
        "date": datetime.date.today().isoformat(), "machine": machine(), "data": data_record(manifest, data_dir),
        "rows": {r.folder: rows[r.folder] for e in ENTRIES for r in e.rows if r.folder in rows},
    }  # fmt: skip
    results.parent.mkdir(parents=True, exist_ok=True)
    tmp = results.with_suffix(".tmp")
    tmp.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n")
    tmp.replace(results)
    return document


# --- the docs block ---------------------------------------------------------------------------------


def cell(stat: Mapping[str, Any] | None) -> str:
    """``mean ± sd`` to three decimals (the mean alone for one seed; empty when there is no figure)."""
    if not stat:
        return ""
    if stat["sd"] is None:
        return f"{stat['mean']:.3f}"
    return f"{stat['mean']:.3f} ± {stat['sd']:.3f}"


def _get(row: Mapping[str, Any], split: str, metric: str) -> Mapping[str, Any] | None:
    return row["scores"].get(split, {}).get(metric)


def render(document: Mapping[str, Any]) -> str:
    """docs/reproducing.md's block ``seeds`` (tables of mean ± sd) from the results document."""
    variants = document["variants"]
    demo = variants[DEFAULT_VARIANT]
    rows = demo["rows"]
    seeds = ", ".join(str(s) for s in demo["seeds"])
    m = demo["machine"]
    data = demo["data"]
    parts = [
        f"Mean ± sample standard deviation over seeds {seeds} (n = {len(demo['seeds'])}; the recipes' `seed`: "
        f"initialisation and data order; the data's seed fixed at {data['data_seed']}), on the synthetic "
        f"`test` split ({data['samples'].get('test')} samples) and `unseen` ({data['samples'].get('unseen')}). "
        f"Measured {demo['date']} on {m['cpu']} ({m['cores']} cores, torch {m['torch']} with "
        f"{m['torch_threads']} thread{'s' if m['torch_threads'] != 1 else ''}, no GPU) by "
        f"`{demo['command']}`; every figure per seed is in `benchmarks/results/seeds.json`.",
    ]

    def by_table(table: str, source: Mapping[str, Any] = rows) -> list[Mapping[str, Any]]:
        return [r for r in source.values() if r["table"] == table]

    seven = [
        [r["label"], r["notebook"], r["modality"], cell(_get(r, "test", "top1")), cell(_get(r, "test", "top2")),
         cell(_get(r, "unseen", "top1"))]
        for r in sorted(by_table("7class"), key=lambda r: r["modality"] != "multimodal")
    ]  # fmt: skip
    parts.append(
        markdown_table(("Model", "Notebook", "Modality", "Top-1", "Top-2", "Top-1 on `unseen`"), seven)
    )
    binary = [
        [r["label"], r["notebook"], cell(_get(r, "test", "auroc")), cell(_get(r, "test", "accuracy")),
         cell(_get(r, "unseen", "auroc"))]
        for r in by_table("binary")
    ]  # fmt: skip
    parts.append(
        markdown_table(
            ("Hateful (binary: label 6)", "Notebook", "AUROC test", "accuracy test", "AUROC `unseen`"), binary
        )
    )
    representation = []
    for r in by_table("representation"):
        if r["recipe"] == "clip":
            zero_shot = cell(_get(r, "test", "zero_shot_accuracy"))
            representation.append(
                [r["label"], r["notebook"], "picture colour", f"zero-shot {zero_shot}", "", ""]
            )
        else:
            random = f"{cell(_get(r, 'test', 'colour.random_linear_probe'))} / {cell(_get(r, 'test', 'colour.random_knn'))}"
            representation.append(
                [r["label"], r["notebook"], "picture colour", cell(_get(r, "test", "colour.linear_probe")),
                 cell(_get(r, "test", "colour.knn")), random]
            )  # fmt: skip
    parts.append(
        markdown_table(
            (
                "Representation",
                "Notebook",
                "probe label",
                "linear probe",
                "kNN",
                "same probes, random encoder",
            ),
            representation,
        )
    )
    others = [name for name in variants if name != DEFAULT_VARIANT]
    changed = []  # the 7-class rows some variant retrained, in the study's order
    for name in others:
        changed += [
            f for f, r in variants[name]["rows"].items() if r["table"] == "7class" and f not in changed
        ]
    if changed:
        stable = []
        for folder in changed:
            for name in [DEFAULT_VARIANT, *others]:
                r = variants[name]["rows"].get(folder)
                if r is None:
                    continue
                unseen = _get(r, "unseen", "top1")
                per_seed = ", ".join(f"{v:.3f}" for v in unseen["values"]) if unseen else ""
                change = " ".join(variants[name]["overrides"]) or "demo preset"
                stable.append(
                    [r["label"], f"`{change}`", cell(_get(r, "test", "top1")), cell(unseen), per_seed,
                     f"{r['train_seconds']['mean']:.0f}"]
                )  # fmt: skip
        parts.append(
            markdown_table(
                ("Model", "variant", "Top-1", "Top-1 on `unseen`", "`unseen` per seed", "train s / seed"),
                stable,
            )
        )
    return "\n\n".join(parts)


def update_page(text: str, document: Mapping[str, Any]) -> str:
    """``text`` (docs/reproducing.md) with its block ``seeds`` rendered from ``document``."""
    return replace_block(text, BLOCK, render(document))


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (see the module docstring); returns the exit status (1 if a run failed)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["render"]:
        return render_command(
            argv[1:], prog="python -m benchmarks.seeds render", block=BLOCK, results=RESULTS, page=PAGE,
            body=lambda path: render(json.loads(path.read_text())),
        )  # fmt: skip
    parser = argparse.ArgumentParser(prog="python -m benchmarks.seeds", description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--recipes", nargs="+", default=None, help=f"entries (default all): {', '.join(BY_KEY)}"
    )
    parser.add_argument("--variant", nargs="+", default=[DEFAULT_VARIANT], metavar="NAME [KEY=VALUE ...]")
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="shards (default data/shards, or data/seeds/<variant>)"
    )
    parser.add_argument("--runs-root", type=Path, default=Path("runs/seeds"))
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument(
        "--recheck", action="store_true", help="hand every run to the CLI again (it loads finished ones)"
    )
    parser.add_argument(
        "--in-process", action="store_true", help="run the CLI in this process (quick checks)"
    )
    args = parser.parse_args(argv)
    try:
        variant = Variant.parse(args.variant)
        entries = select(args.recipes)
    except ValueError as err:
        parser.error(str(err))
    if args.data_dir is None:
        args.data_dir = Path("data/seeds") / variant.name if variant.data else Path("data/shards")
    elif variant.data:
        parser.error(
            "--data-dir: a variant with data.* overrides writes its own shards; leave --data-dir out"
        )
    cwd = Path.cwd()
    os.chdir(ROOT)  # where the CLI runs: relative paths are the repository's
    try:
        document = run_study(
            variant, args.seeds, entries, runs_root=args.runs_root, data_dir=args.data_dir, results=args.results,
            runner=in_process_runner if args.in_process else subprocess_runner, recheck=args.recheck,
            invocation=" ".join(["python -m benchmarks.seeds", *argv]),
        )  # fmt: skip
    finally:
        os.chdir(cwd)
    print(f"wrote {args.results}")
    if document["failures"]:
        print("failed:", json.dumps(document["failures"], indent=1))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
