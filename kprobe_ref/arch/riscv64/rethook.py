"""riscv64 return-address hijacking for kretprobes and uretprobes.

Mirrors Linux ``arch/riscv/kernel/probes/rethook.c`` (``arch_rethook_prepare``,
``arch_rethook_fixup_return``).  At function entry the return address is in ``ra``
(``x1``): it is saved with the stack pointer as the frame, and ``ra`` is pointed at the
trampoline.  The trampoline is a single ``ebreak``; when the function returns into it
(``ret`` is ``jalr x0, 0(ra)``, which leaves ``ra`` alone) ``sp`` is back at its entry value,
so the frame is ``sp``.  The host then sets the PC *and* ``ra`` to the saved address: after an
unprobed return ``ra`` would still hold the real return address, and a caller may rely on it.
"""

from __future__ import annotations

from kprobe_ref import bits
from kprobe_ref.arch.base import SimState
from kprobe_ref.arch.riscv64.encoding import BREAK_STEP
from kprobe_ref.bits import BV
from kprobe_ref.ptregs import PtRegs

__all__ = ["TRAMPOLINE", "rethook_prepare", "rethook_return", "return_frame"]

TRAMPOLINE = BREAK_STEP
"""The trampoline's code: it traps at its first instruction."""


def rethook_prepare(s: SimState, trampoline: int) -> tuple[BV, BV]:
    """At function entry: return ``(real return address, frame)`` and point ``ra`` at the
    trampoline.  ``frame`` is the stack pointer at entry."""
    # READ SOURCES
    ra, sp = s.reg("x1"), s.reg("x2")
    # WRITE RESULTS
    s.set_reg("x1", trampoline)
    return ra, sp


def return_frame(regs: PtRegs) -> int:
    """At the trampoline trap: the frame of the returning call (the callee restored ``sp``)."""
    return regs.sp


def rethook_return(regs: PtRegs, real_ret: int) -> None:
    """At the trampoline trap: continue where the unprobed ``ret`` (``jalr x0, 0(ra)``)
    would, the saved ``ra`` with bit 0 cleared, and leave ``ra`` holding the saved value, as
    the unprobed return does.  (Without the clearing an odd ``ra`` would diverge: the proof
    of the trampoline obligation found it.)"""
    regs.pc = bits.and_(real_ret, ~1 & ((1 << 64) - 1))
    regs.set("ra", real_ret)
