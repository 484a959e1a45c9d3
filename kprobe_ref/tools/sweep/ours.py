"""Our verdict for every word of a range, as registration decides it for a lone word.

``check_probe`` on a word with no exclusive sequence before it gives what the ISA's
``decode`` gives: the row the word matches (its verdict, class and reason), or, for a word no
row matches, "step" (``plain``) when the ISA's validity oracle accepts it and "reject"
(``undecodable``) otherwise (aarch64 has no oracle and steps every unlisted word; riscv64
asks capstone; loongarch64 asks Ghidra's specification).  :func:`row_indices` finds the
rows of a whole range without testing every row against every word: the range is cut into
aligned blocks of 4,096 words, and only the rows whose fixed bits above the block's low 12
bits agree with the block are tried on its words (a row whose fixed bits all lie above
them matches the whole block at once).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from kprobe_ref.arch.base import compile_pattern
from kprobe_ref.proofs.tables import decode_module

__all__ = ["PLAIN", "UNDECODABLE", "Rule", "fingerprint", "row_indices", "rules"]

BLOCK_BITS = 12


@dataclass(frozen=True)
class Rule:
    """One outcome of the decoder: a table row, ``plain`` or ``undecodable``."""

    label: str
    """The row's class, ``#n`` added when several rows share it (as the proofs name them)."""
    klass: str
    verdict: str
    reason: str
    mask: int = 0
    match: int = 0
    nonzero: int = 0
    """Bits of which at least one must be set (riscv64 ``c.jr``: rs1 != x0)."""
    width: int = 32

    def matches(self, w: int) -> bool:
        """Whether the word ``w`` belongs to this row."""
        return w & self.mask == self.match and (not self.nonzero or w & self.nonzero != 0)


PLAIN = Rule("plain", "plain", "step", "no-pc-use")
UNDECODABLE = Rule("undecodable", "undecodable", "reject", "undecodable")


def _label(rows: Sequence[Any], i: int) -> str:
    same = [j for j, r in enumerate(rows) if r.klass == rows[i].klass]
    return rows[i].klass if len(same) == 1 else f"{rows[i].klass}#{same.index(i) + 1}"


def _nonzero(row: Any) -> int:
    letter = getattr(row, "nonzero", "")
    if not letter:
        return 0
    bits = row.pattern.replace(" ", "")
    return int("".join("1" if b == letter else "0" for b in bits), 2)


@lru_cache(maxsize=8)
def rules(isa: str, width: int = 32) -> tuple[Rule, ...]:
    """The rows of ``isa``'s decode table that decode ``width``-bit words, in table order."""
    table = decode_module(isa).ROWS
    out = []
    for i, row in enumerate(table):
        bits = row.pattern.replace(" ", "")
        if len(bits) != width:
            continue
        mask, match = compile_pattern(bits)
        out.append(Rule(_label(table, i), row.klass, row.verdict.value, row.reason, mask,
                        match, _nonzero(row), width))
    return tuple(out)


def fingerprint(isa: str) -> str:
    """A digest of every row (pattern, verdict, reason) of ``isa``'s table and of the SLEIGH
    classification's version: checkpoints made with another table are not reused."""
    from kprobe_ref.tools.sweep.sleigh import VERSION

    text = VERSION + repr([(r.label, r.width, r.mask, r.match, r.nonzero, r.verdict, r.reason)
                 for w in (16, 32) for r in rules(isa, w)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _candidates(table: Sequence[Rule], base: int) -> tuple[list[int], int]:
    """Rows that can match a word of the aligned block at ``base``, and the first row that
    matches all of it (-1 if none)."""
    low = (1 << BLOCK_BITS) - 1
    maybe = [i for i, r in enumerate(table) if (base ^ r.match) & r.mask & ~low == 0]
    for i in maybe:
        r = table[i]
        if r.mask & low == 0 and not r.nonzero:
            return maybe, i
    return maybe, -1


def row_indices(isa: str, width: int, words: Sequence[int]) -> list[int]:
    """For each word, the index into :func:`rules` of the row it matches, or -1.  ``words``
    is sorted (a shard's words)."""
    table = rules(isa, width)
    out = [-1] * len(words)
    maybe: list[int] = []
    block, whole = -1, -1
    for k, w in enumerate(words):
        b = w >> BLOCK_BITS
        if b != block:
            block = b
            maybe, whole = _candidates(table, b << BLOCK_BITS)
        if whole >= 0:
            out[k] = whole
            continue
        for i in maybe:
            if table[i].matches(w):
                out[k] = i
                break
    return out
