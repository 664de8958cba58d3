"""Archive descriptions (description.py): the final path of rsync's temporaries."""

import json

import pytest

from glacierfs.description import describe, final_path


@pytest.mark.parametrize("path, final", [
    (b"/d/.photo.jpg.Ab12Cd", b"/d/photo.jpg"),  # rsync's .NAME.XXXXXX
    (b"/.f.abc123", b"/f"),
    (b"/.nl\nname.7ajdWc", b"/nl\nname"),  # a newline in the name
    (b"/.env.sample", b"/.env.sample"),  # a word, not mkstemp's suffix
    (b"/home/.config.backup", b"/home/.config.backup"),
    (b"/photo.jpg", b"/photo.jpg"),
    (b"/.hidden", b"/.hidden"),
])
def test_final_path(path, final):
    assert final_path(path) == (final, False)


def test_description_is_json_with_the_final_path():
    text = describe(b"/a b/.\xc3\x9cber.txt.Q1w2E3", 0)
    assert text.isascii()
    assert json.loads(text) == {"path": "a b/\u00dcber.txt", "mtime": "1970-01-01T00:00:00Z"}
