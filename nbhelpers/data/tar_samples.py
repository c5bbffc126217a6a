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

The tar is read as :mod:`tarfile` reads it, with the same results and errors, but the commonest member,
a regular file under a plain ustar or GNU header (every member of a shard written by
:mod:`nbhelpers.data.shards`), is parsed here directly: :mod:`tarfile` spends most of a shard's reading
time on the generality of its header objects. Every other header (PAX and GNU extended headers,
folders, links, a header with anything unusual in a field) goes to :meth:`tarfile.TarInfo.frombuf`, and
from the first extended header on, to :mod:`tarfile` itself.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

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


BLOCK = tarfile.BLOCKSIZE
#: Header types that :mod:`tarfile` turns into a member only together with the headers after them.
_EXTENDED = frozenset({tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.GNUTYPE_SPARSE,
                       tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE})  # fmt: skip
_MAGICS = (b"ustar\x0000", b"ustar  \x00")
_OCTAL_DIGITS = b"01234567"
_UTF8 = tarfile.ENCODING.lower().replace("-", "") == "utf8"


def _octal(field: bytes) -> int | None:
    """The value of a numeric header field written as plain octal digits, as tarfile reads it, or None
    for any other spelling (base-256, signs, stray characters), which is left to tarfile."""
    text = field.split(b"\0", 1)[0].strip()
    if text.translate(None, _OCTAL_DIGITS):
        return None
    return int(text, 8) if text else 0


def _plain_file(header: bytes) -> tuple[str, int] | None:
    """``(name, size)`` of a regular-file header that tarfile would read the same way; None for any
    other block (an end-of-archive block, a bad checksum, a folder, a link, an extended header, a name
    prefix, an unusual field), each of which tarfile decides."""
    if len(header) != BLOCK or header[156:157] not in (tarfile.REGTYPE, tarfile.AREGTYPE):
        return None
    if header[257:265] not in _MAGICS or header[345] != 0 or not _UTF8:
        return None
    values = [_octal(header[a:b]) for a, b in ((100, 108), (108, 116), (116, 124), (124, 136), (136, 148),
                                               (148, 156), (329, 337), (337, 345))]  # fmt: skip
    if None in values or values[5] != sum(header) - sum(header[148:156]) + 8 * 32:
        return None  # a signed checksum, or a wrong one: tarfile's to accept or refuse
    name = header[:100].split(b"\0", 1)[0].decode(tarfile.ENCODING, "surrogateescape")
    if header[156:157] == tarfile.AREGTYPE and name.endswith("/"):
        return None  # an old-style folder
    return name, values[3]


def _members(f: BinaryIO) -> Iterator[tuple[str, bool, bytes]]:
    """``(name, is a regular file, data)`` of each member of the tar ``f``, as tarfile in stream mode
    reads them (:func:`_tarfile_members`), faster (see the module docstring).

    Raises:
        tarfile.ReadError: as :func:`_tarfile_members` does.
    """
    offset = 0
    while True:
        header = f.read(BLOCK)
        plain = _plain_file(header)
        if plain is not None:
            name, size = plain
            is_file = has_data = True
        else:
            try:
                info = tarfile.TarInfo.frombuf(header, tarfile.ENCODING, "surrogateescape")
            except tarfile.EOFHeaderError:
                return
            except tarfile.EmptyHeaderError:
                if offset == 0:
                    raise tarfile.ReadError("empty file") from None
                return
            except (tarfile.TruncatedHeaderError, tarfile.InvalidHeaderError) as err:
                if offset == 0:
                    raise tarfile.ReadError(str(err)) from None
                return  # tarfile ends the archive at a bad header after the first
            if info.type in _EXTENDED:
                f.seek(offset)
                yield from _tarfile_members(f)
                return
            name, size, is_file = info.name, info.size, info.isreg()
            has_data = is_file or info.type not in tarfile.SUPPORTED_TYPES
        offset += BLOCK
        if not has_data:
            yield name, is_file, b""
            continue
        data = f.read(size) if is_file else b""
        if len(data) != size and is_file:
            raise tarfile.ReadError("unexpected end of data")
        yield name, is_file, data
        # As tarfile, the rest of a member (its padding; all of it for an unknown type) is checked only
        # on the way to the next header.
        rest = -size % BLOCK + (0 if is_file else size)
        if rest and len(f.read(rest)) != rest:
            raise tarfile.ReadError("unexpected end of data")
        offset += size + -size % BLOCK


def _tarfile_members(f: BinaryIO) -> Iterator[tuple[str, bool, bytes]]:
    """``(name, is a regular file, data)`` of each member from the position of ``f`` on, by tarfile.

    Raises:
        tarfile.ReadError: not a tar, or it ends in the middle of a member.
    """
    with tarfile.open(fileobj=f, mode="r|") as tar:
        for member in tar:
            if not member.isfile():
                yield member.name, False, b""
                continue
            reader = tar.extractfile(member)
            data = reader.read() if reader is not None else b""
            if len(data) != member.size:
                raise tarfile.ReadError(f"member {member.name} is cut short")
            yield member.name, True, data


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
            for name, is_file, data in _members(f):
                if not is_file:
                    if current is not None:
                        yield current
                    current = None
                    yield Group(key=name, not_files=[name])
                    continue
                key, ext = split_name(name)
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
