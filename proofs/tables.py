"""The implementation's decode tables as Z3 predicates, and its field extraction lifted to
symbolic words.

Fixed-width rows (aarch64, riscv64, and any ISA whose rows have ``mask_match`` and
optionally ``width``, ``nonzero`` and ``letter_mask``) hold ``word & mask == match``, and,
with ``nonzero``, that the bits of that letter are not all zero.  x86_64 rows hold over the
opcode map, the opcode byte and, where the row gives one, the ModRM byte.

The rules read fields from ``Decoded.fields``, which the implementation's ``decode``
computes on concrete words.  :func:`lift_fields` turns that into a function of a symbolic
word by probing: starting from a word of the row with every free bit set, it flips each
free bit and records which bits of which field change.  That is exact for field extractors
that are affine over GF(2) (each field bit is one word bit, or a constant), which every
extractor of a fixed-width ISA is; :func:`lift_fields` checks it on random words of the row.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import import_module
from typing import Any

import z3

from kprobe_ref import bits
from kprobe_ref.arch import get_arch
from kprobe_ref.bits import BV, Cond

__all__ = [
    "Lifted",
    "decode_module",
    "lift_fields",
    "row_predicate",
    "row_width",
    "rows_by_class",
    "x86_row_predicate",
]


def decode_module(isa: str) -> Any:
    """The implementation's decode module of ``isa`` (``ROWS``, ``lookup``, ``decode``)."""
    return import_module(f"kprobe_ref.arch.{isa}.decode")


def row_width(row: Any) -> int:
    """The width in bits of a fixed-width row's words (32 unless the row says)."""
    return int(getattr(row, "width", 32))


def row_predicate(row: Any, w: BV) -> Cond:
    """Whether word ``w`` (of the row's width) belongs to the row."""
    mask, match = row.mask_match
    width = row_width(row)
    c = bits.eq(bits.and_(w, mask, width), match, width)
    if getattr(row, "nonzero", ""):
        c = bits.b_and(c, bits.ne(bits.and_(w, row.letter_mask(row.nonzero), width), 0, width))
    return c


def rows_by_class(rows: Sequence[Any]) -> dict[str, list[Any]]:
    """The rows of each class, in table order."""
    out: dict[str, list[Any]] = {}
    for r in rows:
        out.setdefault(r.klass, []).append(r)
    return out


def x86_row_predicate(row: Any, opmap: str, opcode: BV, modrm: BV) -> Cond:
    """Whether an instruction in ``opmap`` with these opcode and ModRM bytes is in the row."""
    if row.opmap != opmap:
        return False
    mask, match = row.opcode_mask_match
    c = bits.eq(bits.and_(opcode, mask, 8), match, 8)
    if row.modrm is not None:
        mmask, mmatch = row.modrm_mask_match
        c = bits.b_and(c, bits.eq(bits.and_(modrm, mmask, 8), mmatch, 8))
    return c


@dataclass(frozen=True)
class Lifted:
    """A row's field extractor as a function of a symbolic word.

    ``depends[name]`` lists the word bits field ``name`` reads; ``fields(w)`` gives every
    field (64-bit terms for a symbolic ``w``, ints for a concrete one)."""

    base: int
    constant: dict[str, int]
    flips: dict[str, dict[int, int]]
    width: int

    @property
    def depends(self) -> dict[str, list[int]]:
        return {name: sorted(f) for name, f in self.flips.items()}

    def fields(self, w: BV) -> dict[str, BV]:
        out: dict[str, BV] = {}
        for name, value in self.constant.items():
            acc: BV = value
            for k, diff in self.flips[name].items():
                changed = bits.ne(bits.extract(w, k, k), (self.base >> k) & 1, 1)
                acc = bits.xor(acc, bits.ite(changed, diff, 0, 64), 64)
            out[name] = acc
        return out


def _word_bytes(w: int, width: int) -> bytes:
    return w.to_bytes(width // 8, "little")


def _decode_fields(isa: str, row: Any, w: int) -> dict[str, int] | None:
    d = get_arch(isa).decode(_word_bytes(w, row_width(row)), 0x1000, False)
    return dict(d.fields) if d.klass == row.klass else None


def lift_fields(isa: str, row: Any, samples: int = 48) -> Lifted:
    """Lift the implementation's decode of ``row`` to symbolic words (see the module
    docstring); raise ``ValueError`` if a sample word disagrees with the lift."""
    width = row_width(row)
    mask, match = row.mask_match
    free = [k for k in range(width) if not (mask >> k) & 1]
    base = match | (bits.mask(width) & ~mask)
    start = _decode_fields(isa, row, base)
    if start is None:
        raise ValueError(f"{row.klass}: the all-ones word {base:#x} does not decode to the row")
    flips: dict[str, dict[int, int]] = {name: {} for name in start}
    for k in free:
        probe = _decode_fields(isa, row, base ^ (1 << k))
        if probe is None:
            raise ValueError(f"{row.klass}: flipping bit {k} leaves the row")
        for name, value in probe.items():
            if value != start[name]:
                flips[name][k] = value ^ start[name]
    lifted = Lifted(base, start, flips, width)
    _check_affine(isa, row, lifted, free, samples)
    return lifted


def _check_affine(isa: str, row: Any, lifted: Lifted, free: list[int], samples: int) -> None:
    rng = random.Random(row.klass)
    for _ in range(samples):
        w = row.mask_match[1] | sum(rng.getrandbits(1) << k for k in free)
        real = _decode_fields(isa, row, w)
        if real is None:
            continue
        if real != lifted.fields(w):
            raise ValueError(f"{row.klass}: fields of {w:#x} are not affine in the word")


def key_of(w: BV, positions: Sequence[int]) -> tuple[BV, int]:
    """The bits of ``w`` at ``positions`` gathered into one value (first position lowest),
    and its width."""
    if not positions:
        return 0, 1
    parts = [bits.extract(w, k, k) for k in reversed(positions)]
    if isinstance(w, int):
        return sum(((w >> k) & 1) << i for i, k in enumerate(positions)), len(positions)
    return (parts[0] if len(parts) == 1 else z3.Concat(*parts)), len(positions)


def with_key(base: int, positions: Sequence[int], key: int) -> int:
    """``base`` with the bits at ``positions`` set from ``key`` (first position lowest)."""
    out = base
    for i, k in enumerate(positions):
        out = (out & ~(1 << k)) | (((key >> i) & 1) << k)
    return out


Predicate = Callable[[BV], Cond]
