"""riscv64 out-of-line slots.

Mirrors Linux ``arch/riscv/kernel/probes/kprobes.c`` (``arch_prepare_ss_slot``): the slot
holds the probed instruction unchanged followed by a 4-byte ``ebreak``, the end-of-step
breakpoint.  No relocation exists: on RISC-V only the simulated classes (JAL, JALR,
AUIPC, branches and their compressed forms) read the PC, so a stepped instruction computes
the same result at any address, and the slot needs no reach.  After the step the PC resumes
at the probe address plus the instruction's length (2 or 4).

Boosted variant (``docs/boost.md``): ``[insn, jal x0, next]`` at :data:`BOOST_OFFSET`.
``jal x0`` reaches +-1 MiB and writes no register; every form reaching further needs a
scratch register (``auipc``+``jalr``), which a probe may not borrow without a second trap,
so the variant exists only when the slot lies within :data:`BOOST_REACH` of the code (the
host places kernel slots there when it can); otherwise the probe takes two traps.
"""

from __future__ import annotations

from kprobe_ref import bits
from kprobe_ref.arch.base import Decoded, SlotPlan, SlotReach, Verdict, copy_and_jump, jump_back
from kprobe_ref.arch.riscv64.encoding import BREAK_STEP
from kprobe_ref.bits import BV, Cond

__all__ = ["BOOST_OFFSET", "BOOST_REACH", "SLOT_SIZE", "build_boosted_slot", "build_slot",
           "jump_reaches", "jump_word", "reach"]

SLOT_SIZE = 16
"""Bytes one slot takes: the two-trap variant (at most 4 of instruction and 4 of
``ebreak``) and the boosted one (instruction and ``jal``)."""
BOOST_OFFSET = 8
"""The boosted variant's place in a slot."""
BOOST_REACH = (1 << 20) - (1 << 16)
"""How far from the code a kernel slot may lie for ``jal x0`` back to reach (1 MiB less a
margin for the code's own extent)."""


def build_slot(d: Decoded, slot_addr: int, user: bool) -> SlotPlan:
    """Build the slot for a stepped instruction placed at ``slot_addr`` (any even
    address)."""
    assert d.verdict is Verdict.STEP_OUT_OF_LINE
    return SlotPlan(d.raw + BREAK_STEP, d.length, d.length, "copy")


def jump_reaches(at: BV, target: BV) -> Cond:
    """Whether ``jal x0`` at ``at`` can land on ``target``: the distance is even and lies
    in [-2**20, 2**20)."""
    off = bits.sub(target, at)
    return bits.b_and(bits.eq(bits.extract(off, 0, 0), 0, 1),
                      bits.eq(bits.sext(bits.extract(off, 20, 0), 21), off))


def jump_word(at: BV, target: BV) -> BV:
    """The 32-bit word of ``jal x0, target`` placed at ``at``: ``inst[31|30:21|20|19:12] =
    imm[20|10:1|11|19:12]``, rd = 0, opcode ``1101111``."""
    off = bits.sub(target, at)
    parts = ((bits.extract(off, 20, 20), 31), (bits.extract(off, 10, 1), 21),
             (bits.extract(off, 11, 11), 20), (bits.extract(off, 19, 12), 12))
    word: BV = 0b1101111
    for value, at_bit in parts:
        word = bits.or_(word, bits.shl(value, at_bit, 32), 32)
    return word


def build_boosted_slot(d: Decoded, slot_addr: int, user: bool) -> SlotPlan | None:
    """The boosted variant ``[insn, jal x0, next]`` placed at ``slot_addr``, or ``None`` when
    ``jal`` cannot reach the next instruction from there."""
    return copy_and_jump(d, slot_addr, jump_reaches, jump_word)


def reach(d: Decoded, user: bool) -> SlotReach:
    """Where a slot for ``d`` may go: anywhere (nothing in it is relocated), and for the
    boosted variant within reach of its jump back."""
    back = jump_back(d, BOOST_OFFSET + d.length, -(1 << 20), (1 << 20) - 2, "jal x0 back, +-1 MiB")
    return SlotReach((), (back,))
