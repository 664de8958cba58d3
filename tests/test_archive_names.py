"""Archive descriptions of glacierfs and other tools -> path and mtime (archive_names.py), and
the NAME~DATE names of older versions (naming.py). Pure functions: no service needed."""

from __future__ import annotations

import base64
import json

import pytest

from glacierfs.archive_names import decode, parse_time, safe_path
from glacierfs.naming import dated_name

MTIME = 1355314332 * 10**9  # 2012-12-12T12:12:12Z


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def test_mt2_and_its_double_encoded_predecessor_mt1():
    fields = {"filename": "dir/fïle ~.txt", "mtime": "20121212T121212Z"}
    data = json.dumps(fields, ensure_ascii=False).encode()
    assert decode("mt2 " + b64url(data)).path == (b"dir", "fïle ~.txt".encode())
    assert decode("mt2 " + b64url(data)).mtime_ns == MTIME
    mt1 = decode("mt1 " + b64url(data.decode("latin-1").encode()))
    assert (mt1.kind, mt1.path) == ("mt1", (b"dir", "fïle ~.txt".encode()))


def test_fastglacier_base64_plain_and_folder_markers():
    path = base64.b64encode("Фото/a+b.jpg".encode()).decode()
    found = decode(f"<m><v>4</v><p>{path}</p><lm>20121212T121212Z</lm></m>")
    assert (found.kind, found.path, found.mtime_ns) == (
        "fastglacier", ("Фото".encode(), b"a+b.jpg"), MTIME)
    assert decode("<m><v>3</v><p>x &lt;1&gt; &amp; y</p><lm>20121212T121212Z</lm></m>"
                  ).path == (b"x <1> & y",)
    folder = decode(f"<m><v>4</v><p>{base64.b64encode(b'f/g/').decode()}</p></m>")
    assert (folder.path, folder.is_dir, folder.mtime_ns) == ((b"f", b"g"), True, None)


def test_a_path_glacierfs_cut_short_is_marked():
    cut = decode(json.dumps({"path": "a/bb", "mtime": "2012-12-12T12:12:12Z",
                             "truncated": True}))
    assert (cut.path, cut.truncated, cut.mtime_ns) == ((b"a", b"bb"), True, MTIME)
    assert decode(json.dumps({"path": "a/bb"})).truncated is False


def test_json_path_keys_snapshots_and_bare_names():
    assert decode(json.dumps({"path": "a/b", "mtime": "2012-12-12T12:12:12Z"})).mtime_ns == MTIME
    assert decode(json.dumps({"Path": "A"})).path == (b"A",)
    assert decode(json.dumps({"glacierfs": "catalog", "path": ".glacierfs/x",
                              "created": "2012-12-12T12:12:12.000Z"})).kind == "snapshot"
    assert decode('{"other": 1}').path == (b'{"other": 1}',)  # JSON without a path: bare
    assert decode("just a name").path == (b"just a name",)
    # glacierfs describes non-UTF-8 names with surrogateescape: the bytes come back
    raw = b"caf\xe9"
    assert decode(json.dumps({"path": raw.decode("utf-8", "surrogateescape")})).path == (raw,)


@pytest.mark.parametrize("description", [
    "", "   ", "/absolute/path", "../up", "a/../b", "a//b", "a/./b", "trailing/", "nul\0byte",
    "x" * 256, "mt2 !!!not-base64", "mt2 " + b64url(b"[1, 2]"),
    "<m><v>4</v><p>not base64!</p><lm>20121212T121212Z</lm></m>",
    json.dumps({"path": 7}), json.dumps({"path": ""}),
])
def test_no_usable_name(description):
    assert decode(description).path is None


def test_safe_path_limits_components_to_255_bytes():
    assert safe_path("a/" + "é" * 127) is not None  # 254 bytes
    assert safe_path("a/" + "é" * 128) is None  # 256 bytes


def test_times():
    assert parse_time("2026-11-22T05:47:54.325Z") == 1795326474325000000
    assert parse_time("20261122T054754Z") == 1795326474 * 10**9
    assert parse_time("2026-13-01T00:00:00Z") is None
    assert parse_time(None) is None
    # beyond what the catalog holds (signed 64-bit ns): clamped, as utimens clamps
    assert parse_time("9999-12-31T23:59:59Z") == 2**63 - 1
    assert parse_time("1000-01-01T00:00:00Z") == -(2**63)


def test_dated_names_stay_within_255_bytes_and_whole_characters():
    when = parse_time("2026-11-22T05:47:54.325Z")
    assert dated_name(b"photo.jpg", when) == b"photo.jpg~20261122T054754.325Z"
    long = "é".encode() * 127  # 254 bytes
    cut = dated_name(long, when)
    assert len(cut) <= 255 and cut.endswith(b"~20261122T054754.325Z")
    cut.decode("utf-8")  # no character cut in half
