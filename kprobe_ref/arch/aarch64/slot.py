"""aarch64 out-of-line slots.

Mirrors Linux ``arch/arm64/kernel/probes/kprobes.c`` (``arch_prepare_ss_slot``) and
``uprobes.c`` (``arch_uprobe_copy_ixol``): a slot is the probed word followed by
``BRK #6`` (``KPROBES_BRK_SS_IMM``), whose trap returns to the word after the probe.  No
instruction that reaches a slot uses the PC (every PC-relative class is simulated or
refused by the decode table), so the word is copied unchanged and a slot may lie at any
distance from the probed code.

Boosted variant (``docs/boost.md``): ``[insn, B next]`` at :data:`BOOST_OFFSET`, where
``next`` is the probe address plus 4.  ``B`` reaches +-128 MiB (imm26, in words) and writes
no register, so the variant exists when the slot lies within :data:`BOOST_REACH` of the
code; otherwise the probe takes two traps.  Every stepped word may be boosted: none uses the
PC, and a fault in the variant is attributed to its probe by the slot address.
"""

from __future__ import annotations

from kprobe_ref import bits
from kprobe_ref.arch.aarch64.encoding import BREAK_STEP
from kprobe_ref.arch.base import Decoded, SlotPlan, SlotReach, Verdict, copy_and_jump, jump_back
from kprobe_ref.bits import BV, Cond

__all__ = ["BOOST_OFFSET", "BOOST_REACH", "SLOT_SIZE", "build_boosted_slot", "build_slot",
           "jump_reaches", "jump_word", "reach"]

SLOT_SIZE = 16
"""Bytes one slot takes: the two-trap variant (word and ``BRK #6``) and the boosted one
(word and ``B``)."""
BOOST_OFFSET = 8
"""The boosted variant's place in a 16-byte slot: after the two-trap variant's 8 bytes."""
BOOST_REACH = (1 << 27) - (1 << 20)
"""How far from the code a kernel slot may lie for ``B`` back to reach (128 MiB less a
margin for the code's own extent)."""


def build_slot(d: Decoded, slot_addr: int, user: bool) -> SlotPlan:
    """Build the slot ``[insn, BRK #6]`` for a stepped word; execution resumes at
    ``probe address + 4``."""
    assert d.verdict is Verdict.STEP_OUT_OF_LINE
    return SlotPlan(d.raw + BREAK_STEP, 4, 4, "copy")


def jump_reaches(at: BV, target: BV) -> Cond:
    """Whether ``B`` at ``at`` can land on ``target``: the distance is a multiple of 4 that
    fits imm26 words, i.e. lies in [-2**27, 2**27)."""
    off = bits.sub(target, at)
    return bits.b_and(bits.eq(bits.extract(off, 1, 0), 0, 2),
                      bits.eq(bits.sext(bits.extract(off, 27, 0), 28), off))


def jump_word(at: BV, target: BV) -> BV:
    """The 32-bit word of ``B target`` placed at ``at`` (meaningful when
    :func:`jump_reaches`): opcode ``000101`` and imm26 = distance / 4."""
    off = bits.sub(target, at)
    return bits.or_(0x1400_0000, bits.extract(off, 27, 2), 32)


def build_boosted_slot(d: Decoded, slot_addr: int, user: bool) -> SlotPlan | None:
    """The boosted variant ``[insn, B next]`` placed at ``slot_addr``, or ``None`` when
    ``B`` cannot reach the next instruction from there."""
    return copy_and_jump(d, slot_addr, jump_reaches, jump_word)


def reach(d: Decoded, user: bool) -> SlotReach:
    """Where a slot for ``d`` may go: anywhere (nothing in it is relocated), and for the
    boosted variant within reach of its jump back."""
    back = jump_back(d, BOOST_OFFSET + 4, -(1 << 27), (1 << 27) - 4, "B back, +-128 MiB")
    return SlotReach((), (back,))
