"""Disagreements with SLEIGH that are understood, each with the reason.

An entry covers the words ``w & mask == value`` of one kind of finding; a finding's pattern
is explained when an entry of its kind contains it.  Entries are written from the ISA
manuals, never from the sweep's own output, and each says who is right.  On loongarch64, a
pattern that shares words with an instruction the P-code CPU corrects
(:data:`kprobe_ref.sim.pcode.overrides.loongarch64.OVERRIDES`) is also tagged with that
instruction: Ghidra's specification is known to be wrong there.
"""

from __future__ import annotations

from dataclasses import dataclass

from kprobe_ref.arch.base import compile_pattern
from kprobe_ref.tools.sweep.patterns import Cube

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


_ANY32 = "x" * 32
_ANY16 = "x" * 16
KNOWN: tuple[Known, ...] = (
    Known("aarch64", "simulated-class-mismatch", "11 011 0 00 " + "x" * 24,
          "PRFM (literal) hands a PC-relative address to a prefetch hint in Ghidra's "
          "P-code; a prefetch has no architectural effect, so simulating it as a no-op is "
          "a correct execution"),
    Known("aarch64", "accepted-undecodable", _ANY32,
          "every word no row lists is stepped, as Linux steps it; an unallocated word "
          "raises an undefined-instruction exception in the slot, reported at the probed "
          "address; words capstone decodes here belong to extensions Ghidra's AArch64 "
          "specification lacks (SVE2, SME, the FEAT_XS barrier forms...), none of which "
          "reads the PC"),
    Known("riscv64", "rejected-decodable", "100 0 00000 00000 10",
          "C.JR with rs1 = x0 is reserved (RVC opcode map); Ghidra decodes it as a jump to "
          "x0"),
    Known("riscv64", "rejected-decodable", _ANY16,
          "RVC HINTs (C.NOP with a non-zero immediate, C.LI/C.LUI/C.MV/C.ADD/C.SLLI with "
          "rd = x0, shifts by zero) and reserved forms capstone 5 does not decode; "
          "refusing them is safe, Ghidra decodes them"),
    Known("riscv64", "rejected-decodable", "x" * 25 + "0x01011",
          "custom-0 and custom-1 opcodes: vendor-defined, Ghidra names them custom0/custom1 "
          "without meaning; refusing them is right"),
    Known("riscv64", "rejected-decodable", "x" * 25 + "1x11011",
          "custom-2 and custom-3 opcodes: vendor-defined; refusing them is right"),
    Known("riscv64", "rejected-decodable", "x" * 27 + "11111",
          "bits 4..2 = 111 start a 48-bit or longer instruction (none is ratified), which "
          "registration refuses; Ghidra decodes the first four bytes as a 32-bit word"),
    Known("riscv64", "rejected-decodable", _ANY32,
          "extensions capstone 5 does not decode (V, Zfh, Zb*, Zk*, Zicbo*...): refused as "
          "undecodable, which is safe; Ghidra decodes them (often without P-code)"),
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
    from kprobe_ref.sim.pcode.overrides.loongarch64 import OVERRIDES

    return [o.mnemonic for o in OVERRIDES
            if (cube[1] ^ o.match) & cube[0] & o.mask == 0]
