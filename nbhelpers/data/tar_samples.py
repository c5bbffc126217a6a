"""Reading a shard's tar as samples: members grouped by key, and a cut-off shard reported, never hidden.

A shard written by :mod:`nbhelpers.data.shards` holds, per sample, the regular files ``{key}.jpg``,
``{key}.txt`` and ``{key}.json``, one after another. :func:`iter_groups` reads the tar as a stream and
yields one :class:`Group` per run of members sharing a key (the key is a member's name up to the first
dot of its last path part, as WebDataset cuts it). A member whose extension its group already holds
starts a new group with the same key, so a repeated key is seen, not merged. When the tar ends in the
middle of a member (a shard cut short by a full disk or an interrupted copy), the groups read in full
so far are yielded and :class:`ShardReadError` is raised naming the file; callers compare the groups
read with the count the manifest records, which also catches a cut that falls between two members.

Members are returned as bytes and never decoded here: nothing in a shard is unpickled or executed.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

#: The members every sample has, and the only ones a shard may hold.
MEMBERS: tuple[str, ...] = ("jpg", "txt", "json")


class ShardReadError(OSError):
    """A shard that is missing, not a tar, or ends in the middle of a member.

    Attributes:
        path: the shard.
        detail: what is wrong, without the path.
        missing: true when the file does not exist.
    """

    def __init__(self, path: str | Path, message: str, missing: bool = False):
        super().__init__(f"{path}: {message}")
        self.path = str(path)
        self.detail = message
        self.missing = missing


@dataclass
class Group:
    """The consecutive members of one key: ``members`` maps an extension (``jpg``) to its bytes.

    A member that is not a regular file (a folder, a link) is never read: it comes as a group of its
    own with no ``members`` and its name in ``not_files``, for a verifier to report.
    """

    key: str
    members: dict[str, bytes] = field(default_factory=dict)
    not_files: list[str] = field(default_factory=list)


def split_name(name: str) -> tuple[str, str]:
    """``(key, extension)`` of a member name, cut at the first dot of its last path part, as WebDataset.

    >>> split_name("hateful_memes_train_42.json"), split_name("dir/a.b.c"), split_name("noext")
    (('hateful_memes_train_42', 'json'), ('dir/a', 'b.c'), ('noext', ''))
    """
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext


def iter_groups(path: str | Path) -> Iterator[Group]:
    """Yields the groups of the tar at ``path`` in file order.

    Raises:
        ShardReadError: if the file is missing or not a tar (before any group), or when it ends in the
            middle of a member (after the complete groups before it).
    """
    try:
        f = open(path, "rb")  # closed by the with below; open across the yields
    except FileNotFoundError as err:
        raise ShardReadError(path, "no such file", missing=True) from err
    except OSError as err:
        raise ShardReadError(path, f"cannot open: {err}") from err
    with f:
        current: Group | None = None
        failure: Exception | None = None
        try:
            with tarfile.open(fileobj=f, mode="r|") as tar:
                for member in tar:
                    if not member.isfile():
                        if current is not None:
                            yield current
                        current = None
                        yield Group(key=member.name, not_files=[member.name])
                        continue
                    key, ext = split_name(member.name)
                    reader = tar.extractfile(member)
                    data = reader.read() if reader is not None else b""
                    if len(data) != member.size:
                        raise tarfile.ReadError(f"member {member.name} is cut short")
                    if current is not None and (current.key != key or ext in current.members):
                        yield current
                        current = None
                    if current is None:
                        current = Group(key=key)
                    current.members[ext] = data
        except (tarfile.TarError, EOFError, OSError) as err:
            failure = err
        if current is not None and (failure is None or set(MEMBERS) <= current.members.keys()):
            yield current  # after a failure, only a sample whose every member was read in full
        if failure is not None:
            raise ShardReadError(path, f"truncated or corrupt tar ({failure})") from failure
