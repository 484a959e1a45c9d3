"""aarch64 out-of-line slots.

Mirrors Linux ``arch/arm64/kernel/probes/kprobes.c`` (``arch_prepare_ss_slot``) and
``uprobes.c`` (``arch_uprobe_copy_ixol``): a slot is the probed word followed by
``BRK #6`` (``KPROBES_BRK_SS_IMM``), whose trap returns to the word after the probe.  No
instruction that reaches a slot uses the PC (every PC-relative class is simulated or
refused by the decode table), so the word is copied unchanged and a slot may lie at any
distance from the probed code.
"""

from __future__ import annotations

from kprobe_ref.arch.aarch64.encoding import BRK_STEP
from kprobe_ref.arch.base import Decoded, SlotPlan, Verdict

__all__ = ["build_slot"]


def build_slot(d: Decoded, slot_addr: int, user: bool) -> SlotPlan:
    """Build the slot ``[insn, BRK #6]`` for a stepped word; execution resumes at
    ``probe address + 4``."""
    assert d.verdict is Verdict.STEP_OUT_OF_LINE
    return SlotPlan(d.raw + BRK_STEP, 4, 4, "copy")
