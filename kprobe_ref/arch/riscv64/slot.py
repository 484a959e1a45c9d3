"""riscv64 out-of-line slots.

Mirrors Linux ``arch/riscv/kernel/probes/kprobes.c`` (``arch_prepare_ss_slot``): the slot
holds the probed instruction unchanged followed by a 4-byte ``ebreak``, the end-of-step
breakpoint.  No relocation exists: on RISC-V only the simulated classes (JAL, JALR,
AUIPC, branches and their compressed forms) read the PC, so a stepped instruction computes
the same result at any address, and the slot needs no reach.  After the step the PC resumes
at the probe address plus the instruction's length (2 or 4).
"""

from __future__ import annotations

from kprobe_ref.arch.base import Decoded, SlotPlan, Verdict
from kprobe_ref.arch.riscv64.encoding import EBREAK

__all__ = ["SLOT_SIZE", "build_slot"]

SLOT_SIZE = 16
"""Bytes one slot takes: at most 4 of instruction and 4 of ``ebreak``, rounded up."""


def build_slot(d: Decoded, slot_addr: int, user: bool) -> SlotPlan:
    """Build the slot for a stepped instruction placed at ``slot_addr`` (any even
    address)."""
    assert d.verdict is Verdict.STEP_OUT_OF_LINE
    return SlotPlan(d.raw + EBREAK, d.length, d.length, "copy")
