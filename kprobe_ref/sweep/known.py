"""Disagreements with SLEIGH that are understood, each with the reason.

An entry covers the words ``w & mask == value`` of one kind of finding; a finding's pattern
is explained when an entry of its kind contains it.  Entries are written from the ISA
manuals, never from the sweep's own output, and each says who is right.  On loongarch64, a
pattern that shares words with an instruction the P-code CPU corrects
(:data:`kprobe_ref.sim.loongarch_overrides.OVERRIDES`) is also tagged with that
instruction: Ghidra's specification is known to be wrong there.
"""

from __future__ import annotations

from dataclasses import dataclass

from kprobe_ref.arch.base import compile_pattern
from kprobe_ref.sweep.patterns import Cube

__all__ = ["KNOWN", "Known", "explain", "sleigh_errors"]


@dataclass(frozen=True)
class Known:
    """An understood disagreement of ``kind`` over the words of ``pattern``."""

    isa: str
    kind: str
    pattern: str
    why: str

    @property
    def cube(self) -> Cube:
        """``(mask, value)`` of the pattern."""
        return compile_pattern(self.pattern)


KNOWN: tuple[Known, ...] = (
    Known("riscv64", "rejected-decodable", "100 0 00000 00000 10",
          "C.JR with rs1 = x0 is reserved (RVC opcode map); Ghidra decodes it as a jump to "
          "x0"),
    Known("riscv64", "rejected-decodable", "xxx x xxxxx xxxxx xx",
          "a compressed HINT or reserved encoding capstone does not decode; refusing it is "
          "safe (no compiler emits RVC HINTs), Ghidra decodes it"),
)
"""The explained disagreements."""


def _contains(outer: Cube, inner: Cube) -> bool:
    return outer[0] & ~inner[0] == 0 and inner[1] & outer[0] == outer[1]


def _width(pattern: str) -> int:
    return len(pattern.replace(" ", ""))


def explain(isa: str, kind: str, cube: Cube, width: int) -> str | None:
    """The reason an entry gives for the cube's words, if one covers them all."""
    for k in KNOWN:
        if k.isa == isa and k.kind == kind and _width(k.pattern) == width and \
                _contains(k.cube, cube):
            return k.why
    return None


def sleigh_errors(isa: str, cube: Cube, width: int) -> list[str]:
    """loongarch64: the corrected instructions whose words the cube shares."""
    if isa != "loongarch64" or width != 32:
        return []
    from kprobe_ref.sim.loongarch_overrides import OVERRIDES

    return [o.mnemonic for o in OVERRIDES
            if (cube[1] ^ o.match) & cube[0] & o.mask == 0]
