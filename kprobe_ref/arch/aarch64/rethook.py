"""aarch64 return-address hijacking for kretprobes and uretprobes.

Mirrors Linux ``arch/arm64/kernel/probes/rethook.c`` (``arch_rethook_prepare``) and
``uprobes.c`` (``arch_uretprobe_hijack_return_addr``).  At function entry the return
address is in the link register X30: it is saved and X30 is pointed at the trampoline, a
single ``BRK #6`` (the engine tells it from an end-of-step trap by its address).  The frame
is SP at entry: AAPCS64 callees restore SP before returning, so at the trampoline trap SP
is again the entry value.  Linux keys the frame on X29 instead, which needs frame pointers.
At the trap the PC and X30 are both set to the real return address: an unprobed ``ret``
leaves X30 holding the address it returned to.
"""

from __future__ import annotations

from kprobe_ref.arch.aarch64.encoding import BREAK_STEP
from kprobe_ref.arch.base import SimState
from kprobe_ref.bits import BV
from kprobe_ref.ptregs import PtRegs

__all__ = ["TRAMPOLINE", "rethook_prepare", "rethook_return", "return_frame"]

TRAMPOLINE = BREAK_STEP
"""The trampoline's code: it traps at its first word."""


def rethook_prepare(s: SimState, trampoline: int) -> tuple[BV, BV]:
    """At function entry: return ``(real return address, frame)`` and point X30 at the
    trampoline.  ``frame`` is SP at entry."""
    # READ SOURCES
    real = s.reg("x30")
    sp = s.reg("sp")
    # WRITE RESULTS
    s.set_reg("x30", trampoline)
    return real, sp


def return_frame(regs: PtRegs) -> int:
    """At the trampoline trap: the frame of the returning call (SP, restored by the
    callee)."""
    return regs.sp


def rethook_return(regs: PtRegs, real_ret: int) -> None:
    """At the trampoline trap: continue at the real return address, with X30 holding it as
    after an unprobed return."""
    regs.pc = real_ret
    regs.set("x30", real_ret)
