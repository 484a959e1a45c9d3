"""Corrections to Ghidra's AARCH64 SLEIGH specification, applied before its P-code.

The P-code CPU (:mod:`kprobe_ref.sim.pcode`) asks :func:`lookup` about every aarch64 word
before translating it (through the ISA record, :mod:`kprobe_ref.sim.pcode.isa.aarch64`), as
it asks :mod:`kprobe_ref.sim.pcode.overrides.loongarch64` about LoongArch words.  Each entry
names an instruction by a bit pattern written from the Arm Architecture Reference Manual
(C6.2, "LDPSW") and computes its effect with :mod:`kprobe_ref.bits`.  Found by running the
x86_64/aarch64/riscv64 corpus on unicorn and on the P-code CPU
(``tests/properties/test_two_cpus.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from kprobe_ref import bits
from kprobe_ref.bits import BV

__all__ = ["OVERRIDES", "Aarch64View", "Override", "lookup"]


class Aarch64View(Protocol):
    """What an override may touch: X registers, SP and memory."""

    def x(self, n: int) -> BV:
        """``X<n>`` for n < 31; 31 reads as 0 (XZR)."""

    def set_x(self, n: int, value: BV) -> None:
        """Write ``X<n>``; writes to 31 (XZR) are dropped."""

    def sp(self) -> BV:
        """The stack pointer."""

    def set_sp(self, value: BV) -> None:
        """Write the stack pointer."""

    def load(self, addr: BV, size: int) -> BV:
        """Guest memory read of ``size`` bytes."""


@dataclass(frozen=True)
class Override:
    """One corrected instruction: ``pattern`` has 32 characters (spaces ignored)."""

    mnemonic: str
    pattern: str
    fn: Callable[[Aarch64View, int], None]
    mask: int = field(init=False)
    match: int = field(init=False)

    def __post_init__(self) -> None:
        p = self.pattern.replace(" ", "")
        assert len(p) == 32, self.mnemonic
        object.__setattr__(self, "mask", int("".join("1" if c in "01" else "0" for c in p), 2))
        object.__setattr__(self, "match", int("".join(c if c in "01" else "0" for c in p), 2))


def _ldpsw(writeback: bool, post: bool) -> Callable[[Aarch64View, int], None]:
    def ldpsw(m: Aarch64View, w: int) -> None:
        """LDPSW Xt1, Xt2, [Xn|SP{, #imm}]{!} / [Xn|SP], #imm: two 32-bit words at
        ``addr`` and ``addr + 4``, sign-extended.  Ghidra reads the second word at
        ``addr + 8`` (the LDP X stride)."""
        # FIELDS
        rt, rn, rt2 = w & 31, (w >> 5) & 31, (w >> 10) & 31
        offset = bits.sext(((w >> 15) & 0x7F) << 2, 9)
        # READ SOURCES
        base = m.sp() if rn == 31 else m.x(rn)
        # OPERATION
        addr = base if post else bits.add(base, offset)
        first = bits.sext(m.load(addr, 4), 32)
        second = bits.sext(m.load(bits.add(addr, 4), 4), 32)
        # WRITE RESULTS
        if writeback:
            new_base = bits.add(base, offset)
            if rn == 31:
                m.set_sp(new_base)
            else:
                m.set_x(rn, new_base)
        m.set_x(rt, first)
        m.set_x(rt2, second)

    return ldpsw


OVERRIDES: tuple[Override, ...] = (
    Override("ldpsw (post-index)", "0110 1000 11ii iiii iutt tttn nnnn dddd", _ldpsw(True, True)),
    Override("ldpsw (pre-index)", "0110 1001 11ii iiii iutt tttn nnnn dddd", _ldpsw(True, False)),
    Override("ldpsw (offset)", "0110 1001 01ii iiii iutt tttn nnnn dddd", _ldpsw(False, False)),
)
"""Every aarch64 correction."""


def lookup(word: int) -> Override | None:
    """The override for ``word``, if any."""
    for entry in OVERRIDES:
        if word & entry.mask == entry.match:
            return entry
    return None
