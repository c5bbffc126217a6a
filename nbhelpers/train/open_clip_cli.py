"""Running ``open_clip_train`` on our shards, with memelab's tiny configs registered, and nothing else.

``python -m nbhelpers.train.open_clip_cli ARGS...`` is ``python -m open_clip_train.main ARGS...`` after
:func:`nbhelpers.models.clip.register_model_configs`, so ``--model memelab-tiny-vit`` works. With a real
open_clip model name (``ViT-B-32``) the plain ``torchrun -m open_clip_train.main`` works as well, and
:func:`open_clip_command` writes that command for a manifest.

Before it trains, the entry point makes two guarantees that the plain command does not:

* no pickle is ever decoded: ``open_clip_train`` decodes samples with ``webdataset.decode("pilrgb")``,
  whose default handlers unpickle ``.pyd``/``.pickle`` members and ``torch.load`` ``.pth`` ones, so a
  crafted shard would run code. :func:`disable_pickle_decoders` leaves webdataset only its text decoders,
  for this process and for data-loader workers however they are started;
* every shard named by ``--train-data`` / ``--val-data`` exists locally and holds only images, ``txt``
  and ``json`` (:func:`check_shards` reads every tar header), else the command stops at once with
  status 2, naming the missing paths or the shard and its member. (``open_clip_train`` itself would log
  a warning per missing shard and wait forever.)
"""

from __future__ import annotations

import re
import shlex
import sys
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import webdataset
from webdataset import autodecode, filters
from webdataset.shardlists import expand_urls

from nbhelpers.cli import user_errors, wants_help
from nbhelpers.data.shards import read_manifest

PROG = "nbhelpers.train.open_clip_cli"

#: Member extensions a shard may hold: what ``open_clip_train`` reads as the image, the caption, and our
#: ``json``. A member's extension is everything after the first dot of its file name, as in webdataset.
ALLOWED_MEMBERS = ("jpg", "jpeg", "png", "webp", "txt", "json")

#: webdataset's decoders that parse text only. Every other one is removed: ``pyd``/``pickle`` unpickle,
#: ``pth`` is a ``torch.load``, and none of the rest is needed to read our shards.
TEXT_DECODERS = frozenset({"txt", "text", "transcript", "cls", "cls2", "index", "inx", "id", "json", "jsn"})

#: ``--dataset-type`` values under which ``open_clip_train`` reads ``--train-data`` as webdataset shards.
_SHARD_DATASET_TYPES = ("webdataset", "auto")

# A URL scheme (``pipe:``, ``s3://``, ``https://``): two letters at least, so that ``C:`` stays a path.
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")

#: At most this many paths or members are listed in one error message.
_LISTED = 10


def brace_urls(manifest: dict[str, Any] | str | Path, split: str = "train") -> str:
    """The shards of ``split`` as one brace expression (``dir/train-{00000..00003}.tar``) where possible."""
    manifest = manifest if isinstance(manifest, dict) else read_manifest(manifest)
    root = Path(manifest["_dir"])
    shards = manifest["splits"][split]["shards"]
    numbers = [re.fullmatch(rf"{re.escape(split)}-(\d+)\.tar", s) for s in shards]
    indices = [int(m.group(1)) for m in numbers if m]
    if len(indices) == len(shards) and indices == list(range(indices[0], indices[0] + len(indices))):
        if len(indices) == 1:
            return str(root / shards[0])
        width = len(numbers[0].group(1))
        return str(root / f"{split}-{{{indices[0]:0{width}d}..{indices[-1]:0{width}d}}}.tar")
    return "::".join(str(root / s) for s in shards)


def open_clip_command(
    manifests: Sequence[dict[str, Any] | str | Path],
    *,
    model: str = "ViT-B-32",
    pretrained: str | None = "laion2b_s34b_b79k",
    gpus: int = 4,
    batch_size: int = 256,
    epochs: int = 10,
    lr: float = 5e-4,
    val_split: str | None = "val",
    extra: Sequence[str] = (),
) -> str:
    """The multi-GPU ``torchrun -m open_clip_train.main`` command that trains CLIP on these shards."""
    read = [m if isinstance(m, dict) else read_manifest(m) for m in manifests]
    train = "::".join(brace_urls(m, "train") for m in read)
    samples = sum(m["splits"]["train"]["num_samples"] for m in read)
    args = [
        "torchrun", f"--nproc_per_node={gpus}", "-m", "open_clip_train.main",
        "--dataset-type", "webdataset", "--train-data", train, "--train-num-samples", str(samples),
        "--model", model, "--batch-size", str(batch_size), "--epochs", str(epochs), "--lr", str(lr),
        "--precision", "amp", "--workers", "4", "--local-loss", "--gather-with-grad",
    ]  # fmt: skip
    if len(read) > 1:
        args += ["--train-data-upsampling-factors", "::".join("1" for _ in read)]
    if pretrained:
        args += ["--pretrained", pretrained]
    if val_split and all(val_split in m["splits"] for m in read):
        val_samples = sum(m["splits"][val_split]["num_samples"] for m in read)
        args += [
            "--val-data",
            "::".join(brace_urls(m, val_split) for m in read),
            "--val-num-samples",
            str(val_samples),
        ]
    args += list(extra)
    return shlex.join(args)


def text_handlers(key: str, data: bytes) -> Any:
    """webdataset's basic decoding, for :data:`TEXT_DECODERS` extensions only (else ``None``: raw bytes).

    A module-level function, so that a decoding stage that names it pickles by reference and a
    data-loader worker started with ``spawn`` gets this handler, not webdataset's defaults.
    """
    if key.rsplit(".", 1)[-1] not in TEXT_DECODERS:
        return None
    return autodecode.basichandlers(key, data)


def decode_without_pickle(*args: Any, **kwargs: Any) -> Any:
    """``webdataset.decode`` with :func:`text_handlers` as its fall-back handlers (its ``post=``)."""
    kwargs.setdefault("post", [text_handlers])
    return filters.decode(*args, **kwargs)


def disable_pickle_decoders() -> list[str]:
    """Leaves webdataset only its text decoders, for this process (idempotent).

    Removes every extension but :data:`TEXT_DECODERS` from ``webdataset.autodecode.decoders`` (what
    ``wds.decode`` falls back to, in this process and forked workers), keeps only the ``*.bin`` and
    ``*.txt`` defaults of ``wds.xdecode``, and replaces ``webdataset.decode`` with
    :func:`decode_without_pickle`, so a pipeline built afterwards carries the safe handlers into workers
    that import webdataset afresh. A member of a removed type then stays undecoded bytes.

    Returns:
        The extensions removed by this call (empty when already disabled).
    """
    removed = sorted(set(autodecode.decoders) - TEXT_DECODERS)
    for extension in removed:
        del autodecode.decoders[extension]
    filters.default_decoders[:] = [(p, f) for p, f in filters.default_decoders if p in ("*.bin", "*.txt")]
    webdataset.decode = decode_without_pickle
    return removed


def shard_paths(urls: str) -> list[Path]:
    """The local shard files a ``--train-data`` value names, expanded as webdataset expands it.

    ``::`` separates sources, braces expand (``train-{00000..00003}.tar``) and ``WDS_`` environment
    variables are substituted; a ``file:`` prefix is dropped.

    Raises:
        ValueError: for a URL (``pipe:``, ``s3://``, ``https://``...), whose shards cannot be checked.
    """
    paths = []
    for url in expand_urls(urls):
        if url.startswith("file:"):
            url = re.sub(r"^file://?", "", url)  # as webdataset's gopen reads it
        elif _SCHEME.match(url):
            raise ValueError(
                f"{url}: not a local shard file; this entry point trains on local shards only, whose "
                "members it checks before training"
            )
        paths.append(Path(url))
    return paths


def check_shards(urls: str, what: str = "--train-data") -> list[Path]:
    """Checks that every shard ``urls`` names exists and holds only :data:`ALLOWED_MEMBERS`.

    Reads every tar header of every shard (not the members' data). Directory entries are allowed;
    links, devices and any other member type are refused.

    Args:
        urls: a ``--train-data`` / ``--val-data`` value.
        what: the option it came from, for the messages.

    Returns:
        The shard files, in order.

    Raises:
        FileNotFoundError: naming every missing shard.
        ValueError: naming each shard that is not a readable tar or holds another member, and that
            member; or for a URL (see :func:`shard_paths`).
    """
    paths = shard_paths(urls)
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{what}: {len(missing)} of {len(paths)} shards not found: {_listed(missing)}"
        )
    problems = [f"{path}: {problem}" for path in paths if (problem := _member_problem(path))]
    if problems:
        allowed = ", ".join(ALLOWED_MEMBERS)
        raise ValueError(
            f"{what}: refused before training, {len(problems)} of {len(paths)} shards hold members other "
            f"than an image, txt or json (allowed extensions: {allowed}): {_listed(problems, sep='; ')}"
        )
    return paths


def _member_problem(shard: Path) -> str | None:
    """What is wrong with the first bad member of ``shard`` (or the tar itself), or None."""
    try:
        with tarfile.open(shard, "r:*") as tar:
            for member in tar:
                if member.isdir():
                    continue
                name = member.name.rsplit("/", 1)[-1]
                extension = name.split(".", 1)[1] if "." in name else ""
                if not member.isfile():
                    return f"member {member.name!r} is not a regular file"
                if extension.lower() not in ALLOWED_MEMBERS:
                    return f"member {member.name!r} is not an image, txt or json"
    except (tarfile.TarError, OSError, EOFError) as err:
        return f"not a readable tar file ({err})"
    return None


def _listed(items: Sequence[Any], sep: str = ", ") -> str:
    text = sep.join(str(i) for i in items[:_LISTED])
    return text + (f"{sep}and {len(items) - _LISTED} more" if len(items) > _LISTED else "")


def shard_options(argv: Sequence[str]) -> dict[str, str]:
    """The shard options of an ``open_clip_train`` command line, as its own parser reads them.

    Returns:
        ``{"--train-data": ..., "--val-data": ...}`` for those given and read as webdataset shards
        (``--dataset-type webdataset``, or ``auto`` with a ``.tar`` path).
    """
    from open_clip_train.params import parse_args

    args = parse_args(list(argv))
    if args.dataset_type not in _SHARD_DATASET_TYPES:
        return {}
    options = {"--train-data": args.train_data, "--val-data": args.val_data}
    return {
        option: value
        for option, value in options.items()
        if value and (args.dataset_type == "webdataset" or value.rsplit(".", 1)[-1] == "tar")
    }


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m nbhelpers.train.open_clip_cli ARGS...``: checks, then ``open_clip_train.main``.

    ``list`` names memelab's model configs; ``--help`` says what this wrapper adds, then prints
    ``open_clip_train``'s options.

    Raises:
        SystemExit: with status 2 and one line on stderr (``nbhelpers.train.open_clip_cli: error: ...``)
            when a shard is missing, is not local, or
            holds a member other than an image, ``txt`` or ``json``; nothing is trained then.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["list"] or wants_help(argv):
        from nbhelpers.models.clip import MODEL_CONFIG_DIR

        models = ", ".join(sorted(path.stem for path in MODEL_CONFIG_DIR.glob("*.json")))
        if argv[:1] == ["list"]:
            print(f"memelab's model configs (--model NAME), besides open_clip's own: {models}")
            return
        # Ours first, then open_clip_train's own options.
        print(f"{__doc__.strip().split(chr(10) * 2)[0]}\n'list' names memelab's models: {models}\n")
    disable_pickle_decoders()
    with user_errors(PROG, (FileNotFoundError, ValueError)):
        for option, urls in shard_options(argv).items():
            check_shards(urls, option)

    from open_clip_train.main import main as open_clip_main

    from nbhelpers.models.clip import register_model_configs

    register_model_configs()
    open_clip_main(argv)


if __name__ == "__main__":
    main()
