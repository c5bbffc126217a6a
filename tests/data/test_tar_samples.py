"""Reading shards: the direct header parsing gives exactly what tarfile gives, on any tar, cut or corrupt."""

import io
import random
import tarfile

import pytest

from nbhelpers.data.tar_samples import Group, ShardReadError, _members, _tarfile_members, iter_groups


def _tar(fmt: int, members: list[tuple[str, str, bytes]], mtime: float = 0) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            info.mtime = mtime
            if kind == "file":
                info.size = len(data)
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
            elif kind == "link":
                info.type, info.linkname = tarfile.SYMTYPE, "elsewhere"
            tar.addfile(info, io.BytesIO(data) if kind == "file" else None)
    return buf.getvalue()


def _retyped(data: bytes, index: int, typeflag: bytes, size: int) -> bytes:
    """``data`` with the ``index``-th header block set to ``typeflag`` and ``size``, checksum redone."""
    header = bytearray(data[index * 512 : (index + 1) * 512])
    header[156:157] = typeflag
    header[124:136] = b"%011o\0" % size
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    return data[: index * 512] + bytes(header) + data[(index + 1) * 512 :]


SAMPLE = [("s0.jpg", "file", b"j" * 700), ("s0.txt", "file", b"a caption"), ("s0.json", "file", b"{}")]
TARS = {
    "ustar": _tar(tarfile.USTAR_FORMAT, SAMPLE),
    "gnu, a long name": _tar(tarfile.GNU_FORMAT, [("k" * 150 + ".jpg", "file", b"y" * 10), *SAMPLE]),
    "pax, fractional times": _tar(tarfile.PAX_FORMAT, SAMPLE, mtime=1.5),
    "pax from the second member": _tar(tarfile.PAX_FORMAT, [SAMPLE[0], ("é.txt", "file", b"t"), SAMPLE[2]]),
    "a folder and a link": _tar(tarfile.GNU_FORMAT, [SAMPLE[0], ("d", "dir", b""), ("l.json", "link", b"")]),
    "a name prefix": _tar(tarfile.USTAR_FORMAT, [("p" * 120 + "/s0.jpg", "file", b"z" * 10), SAMPLE[1]]),
    "an old-style folder": _tar(tarfile.USTAR_FORMAT, [("d/", "file", b""), *SAMPLE]),
    "an unknown type with data": _retyped(_tar(tarfile.USTAR_FORMAT, SAMPLE), 0, b"Z", 700),
    "empty archive": _tar(tarfile.USTAR_FORMAT, []),
}


def _outcome(read, data: bytes):
    got = []
    try:
        got.extend(read(io.BytesIO(data)))
    except tarfile.ReadError as err:
        return got, str(err)
    return got, None


#: Where a header's fields start and end (name, mode, uid, gid, size, mtime, checksum, type, link name,
#: magic, version, user, group, device numbers, prefix).
FIELDS = (0, 100, 108, 116, 124, 136, 148, 156, 157, 257, 263, 265, 297, 329, 337, 345, 500)


@pytest.mark.parametrize("name", list(TARS))
def test_same_members_and_errors_as_tarfile_wherever_the_tar_is_cut(name):
    data = TARS[name]
    blocks = (len(data.rstrip(b"\0")) + 1023) // 512  # past that, only the end-of-archive zeros are cut
    cuts = {b * 512 + o for b in range(blocks) for o in (0, 1, 155, 156, 157, 300, 511)} | {len(data)}
    for cut in sorted(cuts):
        assert _outcome(_members, data[:cut]) == _outcome(_tarfile_members, data[:cut]), cut


@pytest.mark.parametrize("name", ["ustar", "a folder and a link", "a name prefix"])
def test_same_members_and_errors_as_tarfile_whatever_header_byte_is_changed(name):
    data = TARS[name]
    rng = random.Random(0)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        headers = [m.offset for m in tar.getmembers()][:3]
    assert len(headers) >= 2
    for header in headers:
        starts = set(FIELDS[:-1]) | {f - 1 for f in FIELDS[1:]} | set(rng.sample(range(500), 20))
        for pos in sorted(header + p for p in starts):
            for value in (0, 0x20, 0x37, 0x38, 0xFF):
                changed = data[:pos] + bytes([value]) + data[pos + 1 :]
                assert _outcome(_members, changed) == _outcome(_tarfile_members, changed), (pos, value)


def test_base_256_sizes_and_signed_checksums_are_left_to_tarfile():
    data = bytearray(TARS["ustar"])
    data[124:136] = b"\x80" + (700).to_bytes(11, "big")  # base-256 size, as GNU tar writes large files
    data[148:156] = b" " * 8
    signed = sum(b - 256 if b > 127 else b for b in data[:512])
    data[148:156] = b"%06o\0 " % (signed & 0o777777) if signed >= 0 else b"-%05o\0 " % -signed
    assert _outcome(_members, bytes(data)) == _outcome(_tarfile_members, bytes(data))
    assert _outcome(_members, bytes(data))[0][0] == ("s0.jpg", True, b"j" * 700)


def test_groups_of_a_plain_shard(tmp_path):
    path = tmp_path / "a.tar"
    path.write_bytes(TARS["a folder and a link"])
    assert list(iter_groups(path)) == [
        Group("s0", {"jpg": b"j" * 700}),
        Group("d", not_files=["d"]),
        Group("l.json", not_files=["l.json"]),
    ]
    path.write_bytes(TARS["ustar"][:600])
    with pytest.raises(ShardReadError, match="truncated or corrupt tar \\(unexpected end of data\\)"):
        list(iter_groups(path))
