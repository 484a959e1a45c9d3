"""loongarch64 out-of-line slots.

Mirrors Linux ``arch/loongarch/kernel/kprobes.c`` (``arch_prepare_ss_slot``) and
``uprobes.c`` (``arch_uprobe_pre_xol``): the slot holds the probed word unchanged followed
by ``break 11`` (``BRK_KPROBE_SSTEPBP``; ``break 13``, ``BRK_UPROBE_XOLBP``, in a process),
the end-of-step breakpoint.  No relocation exists: every LoongArch instruction that reads
the PC is simulated or refused by the decode table, so a stepped word computes the same
result at any address and the slot needs no reach.  After the step the PC resumes at the
probe address plus 4.

Boosted variant (``docs/boost.md``): ``[insn, b next]`` at :data:`BOOST_OFFSET`.  ``b``
reaches +-128 MiB (offs26, in words) and writes no register, so the variant exists when the
slot lies within :data:`BOOST_REACH` of the code; otherwise the probe takes two traps.
"""

from __future__ import annotations

from kprobe_ref import bits
from kprobe_ref.arch.base import Decoded, SlotPlan, SlotReach, Verdict, copy_and_jump, jump_back
from kprobe_ref.arch.loongarch64.encoding import BREAK_STEP, BREAK_UPROBE_STEP
from kprobe_ref.bits import BV, Cond

__all__ = ["BOOST_OFFSET", "BOOST_REACH", "SLOT_SIZE", "build_boosted_slot", "build_slot",
           "jump_reaches", "jump_word", "reach", "step_break"]

BOOST_OFFSET = 8
"""The boosted variant's place in a slot: after the two-trap variant's 8 bytes."""
BOOST_REACH = (1 << 27) - (1 << 20)
"""How far from the code a kernel slot may lie for ``b`` back to reach (128 MiB less a
margin for the code's own extent)."""

SLOT_SIZE = 16
"""Bytes one slot takes: the word and the breakpoint, rounded up."""


def step_break(user: bool) -> bytes:
    """The end-of-step breakpoint: ``break 13`` in a process, ``break 11`` in the kernel."""
    return BREAK_UPROBE_STEP if user else BREAK_STEP


def build_slot(d: Decoded, slot_addr: int, user: bool) -> SlotPlan:
    """Build the slot ``[insn, break 11|13]`` for a stepped word placed at ``slot_addr``
    (any 4-aligned address)."""
    assert d.verdict is Verdict.STEP_OUT_OF_LINE
    return SlotPlan(d.raw + step_break(user), 4, 4, "copy")


def jump_reaches(at: BV, target: BV) -> Cond:
    """Whether ``b`` at ``at`` can land on ``target``: the distance is a multiple of 4 in
    [-2**27, 2**27)."""
    off = bits.sub(target, at)
    return bits.b_and(bits.eq(bits.extract(off, 1, 0), 0, 2),
                      bits.eq(bits.sext(bits.extract(off, 27, 0), 28), off))


def jump_word(at: BV, target: BV) -> BV:
    """The 32-bit word of ``b target`` placed at ``at``: opcode ``010100``,
    ``inst[25:10] = offs[17:2]``, ``inst[9:0] = offs[27:18]``."""
    off = bits.sub(target, at)
    low = bits.shl(bits.extract(off, 17, 2), 10, 32)
    return bits.or_(bits.or_(0x5000_0000, low, 32), bits.extract(off, 27, 18), 32)


def build_boosted_slot(d: Decoded, slot_addr: int, user: bool) -> SlotPlan | None:
    """The boosted variant ``[insn, b next]`` placed at ``slot_addr``, or ``None`` when
    ``b`` cannot reach the next instruction from there."""
    return copy_and_jump(d, slot_addr, jump_reaches, jump_word)


def reach(d: Decoded, user: bool) -> SlotReach:
    """Where a slot for ``d`` may go: anywhere (nothing in it is relocated), and for the
    boosted variant within reach of its jump back."""
    back = jump_back(d, BOOST_OFFSET + 4, -(1 << 27), (1 << 27) - 4, "b back, +-128 MiB")
    return SlotReach((), (back,))
