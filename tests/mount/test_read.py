"""Reading back: files still in the cache read byte-identical; evicted ones give ENODATA."""

from __future__ import annotations

import errno
import os
import subprocess

import pytest

from tests.mount.mount_helpers import PART, assert_archive, pattern


@pytest.mark.parametrize("size", [1, 4096, PART - 1, PART, 3 * PART + 12_345])
def test_file_just_copied_reads_back(mount, tmp_path, size):
    m = mount()
    data = pattern(size, size)
    source = tmp_path / "source"
    source.write_bytes(data)
    subprocess.run(["cp", str(source), str(m.path / "f.bin")], check=True)
    assert (m.path / "f.bin").read_bytes() == data
    # cmp reads with its own block size; ranged reads across part boundaries
    cmp = subprocess.run(["cmp", str(source), str(m.path / "f.bin")], capture_output=True,
                         text=True)
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr
    with open(m.path / "f.bin", "rb") as f:
        for offset in sorted({0, size // 2, max(size - 3, 0), PART - 1, PART, 2 * PART + 5}):
            f.seek(offset)
            assert f.read(10_000) == data[offset:offset + 10_000], offset
    assert "only in the vault" not in m.log()


def test_evicted_file_reads_enodata_with_a_log_line(mount, tmp_path):
    m = mount(cache_size="2M")
    size = 700_000
    names = [f"f{i}.bin" for i in range(5)]
    contents = {}
    for index, name in enumerate(names):
        contents[name] = pattern(size, 1000 + index)
        source = tmp_path / name
        source.write_bytes(contents[name])
        subprocess.run(["cp", str(source), str(m.path / name)], check=True)
    # 5 x 700 kB do not fit in 2 MiB: the first is evicted from the cache, still in the vault
    assert_archive(m.glacier, m.vault, names[0], contents[names[0]])
    assert os.stat(m.path / names[0]).st_size == size
    with pytest.raises(OSError) as excinfo:
        with open(m.path / names[0], "rb") as f:
            f.read()
    assert excinfo.value.errno == errno.ENODATA
    log = m.log()
    lines = [line for line in log.splitlines() if f"/{names[0]}" in line
             and "only in the vault" in line]
    assert lines, log[-3000:]  # one per read request the kernel sent (it may retry once)
    assert " WARNING " in lines[0] or " ERROR " in lines[0]
    assert "restore" in lines[0]
    # the most recent file is still cached and reads back
    assert (m.path / names[-1]).read_bytes() == contents[names[-1]]
