"""SHA-256 tree hash as Glacier defines it: pure, incremental, combinable; file_hashes() is the
one reader of a whole file, for every place that hashes a part file again.

Data is cut into 1 MiB chunks; each leaf is SHA-256 of a chunk; parents are SHA-256 of the two
raw child digests; an odd node at the end of a level moves up unchanged. Zero bytes hash to
SHA-256(b"").

Why a stack works: the pairing rule (left to right, odd node promoted) builds exactly the tree
whose root joins the largest power-of-two subtree on the left with the tree of what is left on
the right. So we keep complete power-of-two subtrees on a stack, merge equal levels as leaves
arrive (a binary counter), and fold the stack from the right at the end. Memory is O(log n).
"""

from __future__ import annotations

import hashlib

MiB = 1 << 20
CHUNK = MiB  # leaf size fixed by the service


def _join(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(left + right).digest()


def combine(digests: list[bytes]) -> bytes:
    """Combine subtree digests in order with the service's pairing rule.

    Used for leaves, and for part tree hashes: a part of 2^k MiB is an aligned subtree, so the
    archive hash is this pairing applied to the part hashes in range order.
    """
    if not digests:
        return hashlib.sha256(b"").digest()
    level = list(digests)
    while len(level) > 1:
        paired = [_join(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def combine_hex(hex_digests: list[str]) -> str:
    return combine([bytes.fromhex(h) for h in hex_digests]).hex()


class TreeHasher:
    """Incremental tree hash: feed bytes in any slicing, read the digest at any time."""

    __slots__ = ("_stack", "_chunk", "_chunk_len", "size")

    def __init__(self) -> None:
        self._stack: list[tuple[int, bytes]] = []  # (level, digest) of complete subtrees
        self._chunk = hashlib.sha256()
        self._chunk_len = 0
        self.size = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view:
            take = min(CHUNK - self._chunk_len, len(view))
            self._chunk.update(view[:take])
            self._chunk_len += take
            self.size += take
            view = view[take:]
            if self._chunk_len == CHUNK:
                self.add_leaf(self._chunk.digest())
                self._chunk = hashlib.sha256()
                self._chunk_len = 0

    def add_leaf(self, digest: bytes) -> None:
        """Append the SHA-256 of the next full 1 MiB chunk (or of the short last one)."""
        level = 0
        while self._stack and self._stack[-1][0] == level:
            _, left = self._stack.pop()
            digest = _join(left, digest)
            level += 1
        self._stack.append((level, digest))

    def digest(self) -> bytes:
        nodes = [d for _, d in self._stack]
        if self._chunk_len or not nodes:
            nodes.append(self._chunk.digest())
        result = nodes[-1]
        for left in reversed(nodes[:-1]):
            result = _join(left, result)
        return result

    def hexdigest(self) -> str:
        return self.digest().hex()


def tree_hash(data: bytes | bytearray | memoryview) -> str:
    """Hex tree hash of an in-memory buffer."""
    hasher = TreeHasher()
    hasher.update(data)
    return hasher.hexdigest()


def is_megabyte_aligned(first: int, last: int, size: int) -> bool:
    """A byte range [first, last] that RetrievalByteRange accepts (glacier-api.md §5.3)."""
    return (
        0 <= first <= last < size
        and first % MiB == 0
        and ((last + 1) % MiB == 0 or last == size - 1)
    )


def is_tree_hash_aligned(first: int, last: int, size: int) -> bool:
    """True when [first, last] is exactly one node of the archive's tree (§5.3)."""
    if not is_megabyte_aligned(first, last, size):
        return False
    chunks = -(-size // MiB)
    start = first // MiB
    end = -(-(last + 1) // MiB)
    span = 1
    while start % span == 0 and span < 2 * chunks:
        if end == min(start + span, chunks):
            return True
        span *= 2
    return False


def file_hashes(path, tree: bool = True, plain: bool = False) -> tuple[str | None, str | None]:
    """(tree hash, plain SHA-256) of a file, each only if asked for, in one read."""
    tree_hasher = TreeHasher() if tree else None
    plain_hasher = hashlib.sha256() if plain else None
    with open(path, "rb") as src:
        while chunk := src.read(CHUNK):
            if tree_hasher is not None:
                tree_hasher.update(chunk)
            if plain_hasher is not None:
                plain_hasher.update(chunk)
    return (tree_hasher.hexdigest() if tree_hasher else None,
            plain_hasher.hexdigest() if plain_hasher else None)
