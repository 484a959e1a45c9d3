"""x86_64 return-address hijacking for kretprobes and uretprobes.

Mirrors Linux ``arch/x86/kernel/rethook.c`` (``arch_rethook_prepare``,
``arch_rethook_fixup_return``).  At function entry the return address is the quadword at
``[rsp]``: it is saved and replaced by the trampoline's address.  The trampoline is a single
``int3``; when the function returns into it, ``ret`` has already popped the slot, so at the
trap ``rsp`` is the caller's stack pointer after an unprobed return and the frame recorded
at entry is ``rsp - 8``.  The host then sets ``rip`` to the saved address: every other
register, the flags and memory are as the function left them.
"""

from __future__ import annotations

from kprobe_ref.arch.base import SimState
from kprobe_ref.arch.x86_64.encoding import BREAK_STEP
from kprobe_ref.bits import BV
from kprobe_ref.ptregs import PtRegs

__all__ = ["TRAMPOLINE", "rethook_prepare", "rethook_return", "return_frame"]

TRAMPOLINE = BREAK_STEP
"""The trampoline's code: it traps at its first byte."""


def rethook_prepare(s: SimState, trampoline: int) -> tuple[BV, BV]:
    """At function entry: return ``(real return address, frame)`` and point ``[rsp]`` at the
    trampoline.  ``frame`` is the address of the return-address slot."""
    # READ SOURCES
    rsp = s.reg("rsp")
    real = s.load(rsp, 8)
    # WRITE RESULTS
    s.store(rsp, 8, trampoline)
    return real, rsp


def return_frame(regs: PtRegs) -> int:
    """At the trampoline trap: the frame of the returning call (``ret`` popped it)."""
    return (regs.sp - 8) & ((1 << 64) - 1)


def rethook_return(regs: PtRegs, real_ret: int) -> None:
    """At the trampoline trap: continue at the real return address."""
    regs.pc = real_ret
