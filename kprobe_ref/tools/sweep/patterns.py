"""Encoding patterns: a set of words written as disjoint ``(mask, value)`` cubes.

A cube holds every word ``w`` with ``w & mask == value``.  :func:`cover` turns a sorted list
of words into cubes exactly covering it: runs of consecutive words become aligned
power-of-two blocks, then cubes with the same mask whose values differ in one bit are merged
(the adjacency step of Quine-McCluskey), until nothing merges.  Every word lies in exactly
one cube, so cube sizes add up to the set's size.  :func:`merge` does the same to the cubes
of several disjoint sets (the shards of one finding).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ["Cube", "cover", "fmt", "merge", "size"]

Cube = tuple[int, int]


def _blocks(words: Sequence[int], width: int) -> list[Cube]:
    full = (1 << width) - 1
    out: list[Cube] = []
    k = 0
    while k < len(words):
        start = end = words[k]
        while k + 1 < len(words) and words[k + 1] == end + 1:
            k, end = k + 1, end + 1
        k += 1
        lo = start
        while lo <= end:
            n = (lo & -lo).bit_length() - 1 if lo else width
            while n > 0 and lo + (1 << n) - 1 > end:
                n -= 1
            out.append((full & ~((1 << n) - 1), lo))
            lo += 1 << n
    return out


def merge(cubes: Iterable[Cube], width: int) -> list[Cube]:
    """Merge disjoint cubes pairwise (same mask, values one fixed bit apart) until no pair
    merges; the result covers the same words, still disjointly."""
    cur = set(cubes)
    changed = True
    while changed:
        changed = False
        for bit in range(width - 1, -1, -1):
            b = 1 << bit
            by_mask: dict[int, set[int]] = {}
            for mask, value in cur:
                if mask & b:
                    by_mask.setdefault(mask, set()).add(value)
            for mask, values in by_mask.items():
                for v in sorted(values):
                    if v & b or v not in values or v | b not in values:
                        continue
                    values.discard(v)
                    values.discard(v | b)
                    cur.discard((mask, v))
                    cur.discard((mask, v | b))
                    cur.add((mask & ~b, v))
                    changed = True
    return sorted(cur, key=lambda c: (-size(c, width), c[1]))


def cover(words: Sequence[int], width: int) -> list[Cube]:
    """Disjoint cubes covering exactly the sorted ``words``."""
    return merge(_blocks(words, width), width)


def size(cube: Cube, width: int) -> int:
    """How many ``width``-bit words the cube holds."""
    return 1 << (width - bin(cube[0]).count("1"))


def fmt(cube: Cube, width: int) -> str:
    """The cube as a bit pattern, most significant bit first (``x`` for a free bit), with
    ``mask/value`` in hex."""
    mask, value = cube
    bits = "".join("x" if not mask >> i & 1 else str(value >> i & 1)
                   for i in range(width - 1, -1, -1))
    digits = width // 4
    return f"{bits}  ({mask:#0{digits + 2}x}/{value:#0{digits + 2}x})"
