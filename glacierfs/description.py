"""Archive descriptions that name the file.

AWS's vault-to-S3 migration names objects by decoding archive descriptions: a JSON object with
a "path" key is one form it understands. So each archive's description is
{"path": "<path relative to the mount>", "mtime": "<ISO 8601 UTC>"} in printable ASCII
(json.dumps escapes everything else), at most 1,024 characters. A path that does not fit is cut
and marked "truncated": true; the catalog stays the truth. rsync writes each file as
`.NAME.XXXXXX` and renames it when done, so such a name is described by its final path.
"""

from __future__ import annotations

import datetime as dt
import json
import re

MAX_DESCRIPTION = 1024


# rsync's XXXXXX is mkstemp's: six of [A-Za-z0-9]. Six lowercase letters are far likelier a
# word (`.env.sample`, `.config.backup`) than a temporary's suffix (1 in 180 of those). A name
# may hold a newline (DOTALL).
_RSYNC_TEMP = re.compile(rb"\.(.+)\.(?![a-z]{6}\Z)[A-Za-z0-9]{6}", re.DOTALL)
# rsync cuts NAME in its temporary name to 246 bytes (receiver.c get_tmpname), so a NAME of
# that length may be the start of a longer one.
RSYNC_NAME_MAX = 246


def final_path(path: bytes) -> tuple[bytes, bool]:
    """The name a file will have, and whether it may be cut short: rsync's temporary
    `.NAME.XXXXXX` becomes NAME."""
    head, slash, name = path.rpartition(b"/")
    match = _RSYNC_TEMP.fullmatch(name)
    if not match:
        return path, False
    return head + slash + match.group(1), len(match.group(1)) >= RSYNC_NAME_MAX


def describe(path: bytes, mtime: float) -> str:
    final, cut = final_path(path)
    relative = final.lstrip(b"/").decode("utf-8", "surrogateescape")
    when = dt.datetime.fromtimestamp(mtime, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    fields = {"path": relative, "mtime": when}
    if cut:
        fields["truncated"] = True
    text = json.dumps(fields, ensure_ascii=True)
    if len(text) <= MAX_DESCRIPTION:
        return text
    # Cut characters off the end of the path until the JSON fits.
    keep = len(relative)
    while keep > 0:
        keep -= max(1, (len(text) - MAX_DESCRIPTION) // 6)
        text = json.dumps({"path": relative[:keep], "mtime": when, "truncated": True},
                          ensure_ascii=True)
        if len(text) <= MAX_DESCRIPTION:
            return text
    return json.dumps({"path": "", "mtime": when, "truncated": True})

