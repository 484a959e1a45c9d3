"""loongarch64 return-address hijacking for kretprobes and uretprobes.

Mirrors Linux ``arch/loongarch/kernel/rethook.c`` (``arch_rethook_prepare``,
``arch_rethook_fixup_return``) and ``uprobes.c`` (``arch_uretprobe_hijack_return_addr``).
At function entry the return address is in ``ra`` (``r1``): it is saved with the stack
pointer as the frame, and ``ra`` is pointed at the trampoline, a single ``break 11``
(``break 13`` in a process; the engine tells it from an end-of-step trap by its address).
A function returns with ``jirl $zero, $ra, 0``, which leaves ``ra`` alone, and the psABI
callee restores ``sp``, so at the trampoline trap ``sp`` is the entry value again.  The
host then sets the PC *and* ``ra`` to the saved address: after an unprobed return ``ra``
would still hold the real return address, and a caller may rely on it.
"""

from __future__ import annotations

from kprobe_ref.arch.base import SimState
from kprobe_ref.arch.loongarch64.slot import step_break
from kprobe_ref.bits import BV
from kprobe_ref.ptregs import PtRegs

__all__ = ["rethook_prepare", "rethook_return", "return_frame", "trampoline"]


def trampoline(user: bool) -> bytes:
    """The trampoline's code: it traps at its first word."""
    return step_break(user)


def rethook_prepare(s: SimState, trampoline: int) -> tuple[BV, BV]:
    """At function entry: return ``(real return address, frame)`` and point ``ra`` at the
    trampoline.  ``frame`` is ``sp`` at entry."""
    # READ SOURCES
    ra, sp = s.reg("r1"), s.reg("r3")
    # WRITE RESULTS
    s.set_reg("r1", trampoline)
    return ra, sp


def return_frame(regs: PtRegs) -> int:
    """At the trampoline trap: the frame of the returning call (the callee restored
    ``sp``)."""
    return regs.sp


def rethook_return(regs: PtRegs, real_ret: int) -> None:
    """At the trampoline trap: continue at the real return address with ``ra`` holding
    it, as an unprobed return leaves it."""
    regs.pc = real_ret
    regs.set("ra", real_ret)
