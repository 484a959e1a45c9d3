"""loongarch64 out-of-line slots.

Mirrors Linux ``arch/loongarch/kernel/kprobes.c`` (``arch_prepare_ss_slot``) and
``uprobes.c`` (``arch_uprobe_pre_xol``): the slot holds the probed word unchanged followed
by ``break 11`` (``BRK_KPROBE_SSTEPBP``; ``break 13``, ``BRK_UPROBE_XOLBP``, in a process),
the end-of-step breakpoint.  No relocation exists: every LoongArch instruction that reads
the PC is simulated or refused by the decode table, so a stepped word computes the same
result at any address and the slot needs no reach.  After the step the PC resumes at the
probe address plus 4.
"""

from __future__ import annotations

from kprobe_ref.arch.base import Decoded, SlotPlan, Verdict
from kprobe_ref.arch.loongarch64.encoding import BREAK_KPROBE_STEP, BREAK_UPROBE_STEP

__all__ = ["SLOT_SIZE", "build_slot", "step_break"]

SLOT_SIZE = 16
"""Bytes one slot takes: the word and the breakpoint, rounded up."""


def step_break(user: bool) -> bytes:
    """The end-of-step breakpoint: ``break 13`` in a process, ``break 11`` in the kernel."""
    return BREAK_UPROBE_STEP if user else BREAK_KPROBE_STEP


def build_slot(d: Decoded, slot_addr: int, user: bool) -> SlotPlan:
    """Build the slot ``[insn, break 11|13]`` for a stepped word placed at ``slot_addr``
    (any 4-aligned address)."""
    assert d.verdict is Verdict.STEP_OUT_OF_LINE
    return SlotPlan(d.raw + step_break(user), 4, 4, "copy")
