"""dd with odd block sizes, writes out of order within one open, and parallel cp."""

from __future__ import annotations

import os
import random
import subprocess
import sys

import pytest

from tests.mount.mount_helpers import PART, assert_archive, cost, open_uploads, pattern
from tests.vault_helpers import archives_by_path


@pytest.mark.parametrize("size, bs", [
    (3 * PART + 4321, 7777),       # block size that divides neither parts nor 1 MiB leaves
    (300, 1),                      # 300 one-byte writes, one UploadArchive
    (2 * PART + 123_457, 1_000_000),
    (PART - 5, 7777),
])
def test_dd_block_sizes(mount, tmp_path, size, bs):
    m = mount()
    source = tmp_path / "source"
    data = pattern(size, size)
    source.write_bytes(data)
    before = m.stats()
    result = subprocess.run(["dd", f"if={source}", f"of={m.path / 'out.bin'}", f"bs={bs}",
                             "status=none"], capture_output=True, text=True)
    after = m.stats()
    assert result.returncode == 0, result.stderr
    assert (m.path / "out.bin").stat().st_size == size
    assert_archive(m.glacier, m.vault, "out.bin", data)
    parts = -(-size // PART)
    if size < PART:
        assert cost(before, after) == {"UploadArchive": 1}
    else:
        assert cost(before, after) == {"InitiateMultipartUpload": 1, "UploadMultipartPart": parts,
                                       "CompleteMultipartUpload": 1}
    assert (m.path / "out.bin").read_bytes() == data


def test_dd_count_of_one_byte_writes(mount, tmp_path):
    m = mount()
    source = tmp_path / "source"
    source.write_bytes(pattern(5000, 1))
    result = subprocess.run(["dd", f"if={source}", f"of={m.path / 'head'}", "bs=1", "count=77",
                             "status=none"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (m.path / "head").stat().st_size == 77
    assert_archive(m.glacier, m.vault, "head", source.read_bytes()[:77])


def test_pwrite_shuffled_blocks_in_one_open(mount):
    m = mount()
    size = 3 * PART + 54_321
    data = pattern(size, 42)
    block = 100_003
    offsets = list(range(0, size, block))
    random.Random(7).shuffle(offsets)
    assert offsets[0] != 0
    fd = os.open(m.path / "shuffled.bin", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for offset in offsets:
            assert os.pwrite(fd, data[offset:offset + block], offset) == len(
                data[offset:offset + block])
    finally:
        os.close(fd)
    assert (m.path / "shuffled.bin").stat().st_size == size
    assert_archive(m.glacier, m.vault, "shuffled.bin", data)
    assert open_uploads(m.glacier, m.vault) == []
    assert (m.path / "shuffled.bin").read_bytes() == data


def test_dd_second_half_then_first_half_through_one_open(mount, tmp_path):
    """One shell opens the file once (fd 3); two dd's write through it, the second half
    first; the shell's close completes the archive. dd's seek= on stdout is relative to the
    shared offset, so the offset is put back to 0 between the two."""
    m = mount()
    size = 4 * PART + 999
    data = pattern(size, 3)
    source = tmp_path / "source"
    source.write_bytes(data)
    half = 2  # in MiB blocks
    script = (
        f'exec 3>"$1"\n'
        f'dd if="$2" bs=1M skip={half} seek={half} conv=notrunc status=none >&3 || exit 11\n'
        f'"$3" -c "import os; os.lseek(3, 0, os.SEEK_SET)" || exit 12\n'
        f'dd if="$2" bs=1M count={half} conv=notrunc status=none >&3 || exit 13\n'
        f'exec 3>&- || exit 14\n'
    )
    result = subprocess.run(["bash", "-c", script, "bash", str(m.path / "halves.bin"),
                             str(source), sys.executable], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (m.path / "halves.bin").stat().st_size == size
    assert_archive(m.glacier, m.vault, "halves.bin", data)
    assert open_uploads(m.glacier, m.vault) == []


def test_parallel_cp_of_multipart_files(mount, tmp_path):
    m = mount()
    sizes = [3 * PART + 1, 2 * PART, 4 * PART - 1, 2 * PART + 777_777]
    sources = []
    for index, size in enumerate(sizes):
        source = tmp_path / f"src{index}"
        source.write_bytes(pattern(size, 100 + index))
        sources.append(source)
    before = m.stats()
    procs = [subprocess.Popen(["cp", str(src), str(m.path / f"par{i}.bin")],
                              stderr=subprocess.PIPE, text=True)
             for i, src in enumerate(sources)]
    errors = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    for proc in procs:
        proc.stderr.close()
    after = m.stats()
    assert errors == [(0, "")] * len(sizes)
    archives = archives_by_path(m.glacier, m.vault)
    assert sorted(archives) == [f"par{i}.bin" for i in range(len(sizes))]
    for index, source in enumerate(sources):
        assert_archive(m.glacier, m.vault, f"par{index}.bin", source.read_bytes(), archives)
        assert (m.path / f"par{index}.bin").stat().st_size == sizes[index]
    assert cost(before, after) == {
        "InitiateMultipartUpload": len(sizes),
        "UploadMultipartPart": sum(-(-s // PART) for s in sizes),
        "CompleteMultipartUpload": len(sizes),
    }
    assert open_uploads(m.glacier, m.vault) == []
