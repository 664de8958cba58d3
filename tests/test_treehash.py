"""SHA-256 tree hash (glacier-api.md §5): glacierfs.treehash against botocore and published vectors."""

from __future__ import annotations

import hashlib
import io
import random

import pytest
from botocore.utils import calculate_tree_hash

from glacierfs.treehash import (
    file_hashes,
    TreeHasher,
    combine,
    combine_hex,
    is_megabyte_aligned,
    is_tree_hash_aligned,
    tree_hash,
)

MiB = 1024 * 1024
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

SIZES = [
    0,
    1,
    MiB - 1,
    MiB,
    MiB + 1,
    2 * MiB + 1,
    3 * MiB,
    int(6.5 * MiB),
    13 * MiB + 12345,
]


def random_bytes(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def botocore_tree_hash(data: bytes) -> str:
    return calculate_tree_hash(io.BytesIO(data))


def feed_randomly(data: bytes, seed: int) -> TreeHasher:
    """Feed `data` to a TreeHasher in random slices: empty, tiny, around 1 MiB, several MiB."""
    rng = random.Random(seed)
    hasher = TreeHasher()
    view = memoryview(data)
    pos = 0
    while pos < len(data):
        kind = rng.randrange(5)
        if kind == 0:
            step = 0
        elif kind == 1:
            step = rng.randint(1, 100)
        elif kind == 2:
            step = rng.randint(MiB - 5, MiB + 5)
        elif kind == 3:
            step = rng.randint(1, 3 * MiB)
        else:
            step = rng.randint(1, 64 * 1024)
        piece = view[pos:pos + step]
        # Vary the buffer type as well.
        hasher.update(bytes(piece) if kind % 2 else piece)
        pos += len(piece)
    return hasher


# ---- agreement with botocore.utils.calculate_tree_hash ----------------------------------------


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s}B")
def test_tree_hash_matches_botocore(size):
    data = random_bytes(size, seed=size)
    expected = botocore_tree_hash(data)
    assert len(expected) == 64
    assert tree_hash(data) == expected
    assert tree_hash(bytearray(data)) == expected
    assert tree_hash(memoryview(data)) == expected


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s}B")
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_tree_hasher_random_slicings_match_botocore(size, seed):
    data = random_bytes(size, seed=size + 7)
    expected = botocore_tree_hash(data)
    hasher = feed_randomly(data, seed=seed * 1000 + size)
    assert hasher.size == size
    assert hasher.hexdigest() == expected
    assert hasher.digest() == bytes.fromhex(expected)


def test_tree_hasher_one_byte_at_a_time_across_chunk_boundary():
    data = random_bytes(MiB + 300, seed=99)
    hasher = TreeHasher()
    hasher.update(data[: MiB - 200])
    for i in range(MiB - 200, len(data)):
        hasher.update(data[i:i + 1])
    assert hasher.hexdigest() == botocore_tree_hash(data)


def test_tree_hasher_digest_can_be_read_midway():
    data = random_bytes(5 * MiB + 17, seed=5)
    hasher = TreeHasher()
    cuts = [0, 10, MiB, 2 * MiB + 1, 4 * MiB, len(data)]
    for a, b in zip(cuts, cuts[1:]):
        hasher.update(data[a:b])
        assert hasher.hexdigest() == botocore_tree_hash(data[:b]), b
        assert hasher.size == b
    # Reading the digest twice changes nothing.
    assert hasher.hexdigest() == botocore_tree_hash(data)


def test_empty_hasher_is_sha256_of_nothing():
    assert TreeHasher().hexdigest() == EMPTY_SHA256
    hasher = TreeHasher()
    hasher.update(b"")
    assert hasher.hexdigest() == EMPTY_SHA256
    assert hasher.size == 0


# ---- published and local vectors (§5.5) ---------------------------------------------------------

VECTORS = [
    ("empty", b"", EMPTY_SHA256),
    ("a*1024", b"a" * 1024, "2edc986847e209b4016e141a6dc8716d3207350f416969382d431539bf292e4a"),
    ("a*1MiB", b"a" * MiB, "9bc1b2a288b26af7257a36277ae3816a7d4f16e89c1e7e77d0a5c48bad62b360"),
    ("a*4MiB", b"a" * 4 * MiB, "9491cb2ed1d4e7cd53215f4017c23ec4ad21d7050a1e6bb636c4f67e8cddb844"),
    ("a*(4MiB+20)", b"a" * (4 * MiB + 20),
     "12f3cbd6101b981cde074039f6f728071da8879d6f632de8afc7cdf00661b08f"),
    ("hello world", b"hello world",
     "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"),
    ("4608000 zeros", bytes(4_608_000),
     "3d760edb291bfc9d90d35809243de092aea4c47b308290ad12d084f69988ae0c"),
    ("Welcome", b"Welcome to Amazon Glacier.",
     "726e392cb4d09924dbad1cc0ba3b00c3643d03d14cb4b823e2f041cff612a628"),
    # §5.5 local table
    ("hello", b"hello", "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"),
    ("a*3MiB", b"a" * 3 * MiB, "70239f4f2ead7561f69d48b956b547edef52a1280a93c262c0b582190be7db17"),
    ("a*(2MiB+1)", b"a" * (2 * MiB + 1),
     "b4c40de8c0f297322b07d3be87d1228c6f2f45b75c8c515def68bf5e2e228592"),
    ("a*6.5MiB", b"a" * int(6.5 * MiB),
     "0dae0a3f606e3eae41361ffc1dc3e1c5311ae06f9c14299ca46052f89947f412"),
]


@pytest.mark.parametrize("data,expected", [(d, h) for _, d, h in VECTORS],
                         ids=[name for name, _, _ in VECTORS])
def test_published_vectors(data, expected):
    assert tree_hash(data) == expected
    hasher = feed_randomly(data, seed=len(data))
    assert hasher.hexdigest() == expected
    assert botocore_tree_hash(data) == expected  # the vectors themselves are sound


def test_small_inputs_equal_plain_sha256_and_large_ones_do_not():
    for data in (b"x", b"a" * 1024, b"a" * MiB):
        assert tree_hash(data) == hashlib.sha256(data).hexdigest()
    data = b"a" * 4 * MiB
    assert hashlib.sha256(data).hexdigest().startswith("299285fc")
    assert tree_hash(data) != hashlib.sha256(data).hexdigest()


def test_odd_node_is_promoted_not_rehashed():
    data = b"a" * (2 * MiB + 1)
    h0 = hashlib.sha256(data[:MiB]).digest()
    h1 = hashlib.sha256(data[MiB:2 * MiB]).digest()
    h2 = hashlib.sha256(data[2 * MiB:]).digest()
    expected = hashlib.sha256(hashlib.sha256(h0 + h1).digest() + h2).hexdigest()
    assert tree_hash(data) == expected


# ---- combining part hashes (§5.2) -------------------------------------------------------------

WHOLE = 13 * MiB + 12345


@pytest.fixture(scope="module")
def archive13():
    data = random_bytes(WHOLE, seed=1313)
    return data, botocore_tree_hash(data)


@pytest.mark.parametrize("part_mib", [1, 2, 4, 8, 16])
def test_power_of_two_part_hashes_combine_to_archive_hash(archive13, part_mib):
    data, whole = archive13
    part = part_mib * MiB
    parts = [data[i:i + part] for i in range(0, len(data), part)]
    assert len(parts) == -(-WHOLE // part)
    hexes = [tree_hash(p) for p in parts]
    assert combine_hex(hexes) == whole
    assert combine([bytes.fromhex(h) for h in hexes]).hex() == whole


def test_three_mib_part_hashes_do_not_combine_to_archive_hash(archive13):
    data, whole = archive13
    part = 3 * MiB
    hexes = [tree_hash(data[i:i + part]) for i in range(0, len(data), part)]
    assert len(hexes) == 5
    assert combine_hex(hexes) != whole


def test_combine_of_leaf_hashes_is_tree_hash():
    data = random_bytes(5 * MiB + 3, seed=77)
    leaves = [hashlib.sha256(data[i:i + MiB]).digest() for i in range(0, len(data), MiB)]
    assert combine(leaves).hex() == botocore_tree_hash(data)


def test_combine_edge_cases():
    assert combine([]).hex() == EMPTY_SHA256
    assert combine_hex([]) == EMPTY_SHA256
    one = hashlib.sha256(b"x").hexdigest()
    assert combine_hex([one]) == one  # a single node is the root, not re-hashed


# ---- range alignment (§5.3) -------------------------------------------------------------------


def tree_nodes(size: int) -> set[tuple[int, int]]:
    """Brute force: every node of the archive's tree as (start_chunk, end_chunk), end exclusive,
    built with the §5.1 pairing rule (odd node promoted unchanged)."""
    chunks = max(1, -(-size // MiB))
    level = [(i, i + 1) for i in range(chunks)]
    nodes = set(level)
    while len(level) > 1:
        nxt = [(level[i][0], level[i + 1][1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        nodes.update(nxt)
        level = nxt
    return nodes


ALIGN_SIZES = [int(3.1 * MiB), int(6.5 * MiB), 13 * MiB, 16 * MiB, 100 * MiB + 3]


@pytest.mark.parametrize("size", ALIGN_SIZES, ids=lambda s: f"{s}B")
def test_is_tree_hash_aligned_matches_brute_force_nodes(size):
    chunks = -(-size // MiB)
    nodes = tree_nodes(size)
    assert (0, chunks) in nodes
    aligned_seen = 0
    for s in range(chunks):
        for e in range(s + 1, chunks + 1):
            first = s * MiB
            last = min(e * MiB, size) - 1
            assert is_megabyte_aligned(first, last, size)
            expected = (s, e) in nodes
            assert is_tree_hash_aligned(first, last, size) == expected, (s, e)
            aligned_seen += expected
    assert aligned_seen == len(nodes)


@pytest.mark.parametrize("size", ALIGN_SIZES, ids=lambda s: f"{s}B")
def test_non_megabyte_aligned_ranges_are_not_tree_hash_aligned(size):
    chunks = -(-size // MiB)
    for s in range(chunks):
        for e in range(s + 1, chunks + 1):
            first = s * MiB
            last = min(e * MiB, size) - 1
            for f2, l2 in ((first + 1, last), (first, last - 1), (first + 512, last)):
                if f2 <= l2:
                    assert not is_megabyte_aligned(f2, l2, size), (f2, l2)
                    assert not is_tree_hash_aligned(f2, l2, size), (f2, l2)
    # Out of bounds is never aligned.
    assert not is_tree_hash_aligned(0, size, size)
    assert not is_megabyte_aligned(0, size, size)


def test_aligned_range_hash_is_a_node_hash():
    """§5.3 definition: a range is tree-hash aligned exactly when its own tree hash is a node of
    the archive's tree. Check against the real digests for a 6.5 MiB archive."""
    size = int(6.5 * MiB)
    data = random_bytes(size, seed=65)
    chunks = -(-size // MiB)
    level = [(i, i + 1, hashlib.sha256(data[i * MiB:(i + 1) * MiB]).digest())
             for i in range(chunks)]
    node_hashes = {(s, e): h for s, e, h in level}
    while len(level) > 1:
        nxt = [(level[i][0], level[i + 1][1],
                hashlib.sha256(level[i][2] + level[i + 1][2]).digest())
               for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        node_hashes.update({(s, e): h for s, e, h in nxt})
        level = nxt
    assert node_hashes[(0, chunks)].hex() == tree_hash(data)
    digests = set(node_hashes.values())
    for s in range(chunks):
        for e in range(s + 1, chunks + 1):
            first, last = s * MiB, min(e * MiB, size) - 1
            range_hash = bytes.fromhex(tree_hash(data[first:last + 1]))
            assert is_tree_hash_aligned(first, last, size) == (range_hash in digests), (s, e)


def test_section_5_3_example_6_5_mib():
    size = int(6.5 * MiB)
    assert is_tree_hash_aligned(2 * MiB, 4 * MiB - 1, size)
    assert not is_tree_hash_aligned(1 * MiB, 3 * MiB - 1, size)
    assert is_megabyte_aligned(1 * MiB, 3 * MiB - 1, size)  # MB-aligned, yet not a node
    # The short last chunk and the last four chunks are nodes; the whole archive is the root.
    assert is_tree_hash_aligned(6 * MiB, size - 1, size)
    assert is_tree_hash_aligned(4 * MiB, size - 1, size)
    assert is_tree_hash_aligned(0, size - 1, size)


def test_is_megabyte_aligned_rules():
    size = int(6.5 * MiB)
    assert is_megabyte_aligned(0, MiB - 1, size)
    assert is_megabyte_aligned(MiB, size - 1, size)  # end = last byte
    assert not is_megabyte_aligned(1, MiB - 1, size)  # start not on a MiB
    assert not is_megabyte_aligned(0, MiB, size)  # end+1 not a MiB multiple
    assert not is_megabyte_aligned(0, size, size)  # past the end
    assert not is_megabyte_aligned(2 * MiB, MiB - 1, size)  # reversed


@pytest.mark.parametrize("size", [0, 1, MiB, 3 * MiB + 5])
def test_file_hashes_match_botocore_and_hashlib(tmp_path, size):
    data = random.Random(size).randbytes(size)
    path = tmp_path / "part"
    path.write_bytes(data)
    assert file_hashes(path, plain=True) == (calculate_tree_hash(io.BytesIO(data)),
                                              hashlib.sha256(data).hexdigest())
    assert file_hashes(path) == (calculate_tree_hash(io.BytesIO(data)), None)
    assert file_hashes(path, tree=False, plain=True) == (None, hashlib.sha256(data).hexdigest())
