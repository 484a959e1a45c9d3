"""The ISA-independent vocabulary every ISA package speaks.

The probe engine handles one probed instruction in one of three ways, decided once, at
registration, by the ISA's ``decode`` module:

- ``REJECT``: the instruction cannot be probed safely; the reason code says why.
- ``SIMULATE``: the trap handler computes the instruction's effect itself (branches, calls,
  returns, PC-relative address computation and literal loads).  No slot is used.
- ``STEP_OUT_OF_LINE``: the instruction, relocated if it has a PC-relative operand, runs in
  an executable slot followed by an end-of-step breakpoint; the trap at that breakpoint
  returns to the instruction after the probe.  A stepped instruction may also get a
  *boosted* slot variant that ends with a jump back to the next instruction instead of the
  breakpoint (one trap per hit), used when nothing needs the second trap (``docs/boost.md``).

Simulation rules read and write architectural state only through :class:`SimState`, so the
same rule runs on a concrete trap frame and, in the proofs, on Z3 terms.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from kprobe_ref import bits
from kprobe_ref.bits import BV, Cond

__all__ = ["NO_REACH", "Decoded", "Reach", "SimState", "SlotPlan", "SlotReach", "Verdict",
           "bucket_rows", "compile_pattern", "jump_back", "reach_window"]


def compile_pattern(bits: str) -> tuple[int, int]:
    """``(mask, match)`` of a decode-table bit pattern, most significant bit first: ``0`` and
    ``1`` are fixed bits, any other character (a field letter, ``x``) is free, spaces are
    ignored.  A word belongs to the pattern when ``word & mask == match``."""
    bits = bits.replace(" ", "")
    mask = int("".join("1" if b in "01" else "0" for b in bits), 2)
    match = int("".join("1" if b == "1" else "0" for b in bits), 2)
    return mask, match


def bucket_rows(masks: Sequence[tuple[int, int]], shift: int, bits: int) -> list[tuple[int, ...]]:
    """Index decode-table rows by one bit field of the word: for each value of the
    ``bits``-bit field at ``shift``, the indices (in table order) of the rows whose
    ``(mask, match)`` allows that value.  A lookup then tests only the rows of the word's
    bucket, and finds the same row as a scan of the whole table."""
    top = ((1 << bits) - 1) << shift
    out = []
    for v in range(1 << bits):
        key = v << shift
        out.append(tuple(i for i, (mask, match) in enumerate(masks)
                         if (key ^ match) & mask & top == 0))
    return out


class Verdict(enum.Enum):
    """How a probed instruction is handled."""

    REJECT = "reject"
    SIMULATE = "simulate"
    STEP_OUT_OF_LINE = "step"


@dataclass(frozen=True)
class Decoded:
    """One decoded instruction and its verdict.

    ``klass`` names the decode-table row (the instruction class); ``reason`` is the row's
    stable reason code; ``fields`` holds the encoding fields the rule needs (immediates as
    raw unsigned field values, register numbers), never absolute addresses.
    """

    address: int
    raw: bytes
    verdict: Verdict
    klass: str
    reason: str
    text: str
    fields: Mapping[str, int] = field(default_factory=dict)

    @property
    def length(self) -> int:
        """The instruction's length in bytes."""
        return len(self.raw)


@dataclass(frozen=True)
class SlotPlan:
    """The contents of one out-of-line slot and how to leave it.

    ``code`` is written at the slot address; the end-of-step breakpoint sits at
    ``break_offset``.  ``resume_delta`` is added to the probe address to find where execution
    continues after the step.  ``scratch`` names a register the slot borrows (x86 far user
    slots); its probed-time value is saved before the step and restored after.
    ``scratch_value`` is the value the register must hold while the slot runs.
    """

    code: bytes
    break_offset: int
    resume_delta: int
    rule: str
    scratch: str | None = None
    scratch_value: int = 0
    boosted: bool = False
    """A boosted variant: the slot ends with a jump to ``probe address + resume_delta``
    instead of a breakpoint (``break_offset`` is then where that jump starts), so leaving it
    takes no trap and it never borrows a scratch register."""


@dataclass(frozen=True)
class Reach:
    """One reach constraint on the address ``s`` of a slot: the PC-relative field of an
    instruction placed ``offset`` bytes into the slot must express the distance from
    ``s + offset`` to ``target``, so ``low <= target - (s + offset) <= high``.

    Addresses are plain integers (no wrap-around): a slot never lies on the other side of
    the address space from its code.  ``why`` names the field for error messages."""

    target: int
    offset: int
    low: int
    high: int
    why: str

    def window(self) -> tuple[int, int]:
        """The slot addresses that meet the constraint: ``[first, last]``, inclusive."""
        return self.target - self.offset - self.high, self.target - self.offset - self.low

    def holds(self, slot: int) -> bool:
        """Whether a slot at ``slot`` meets the constraint."""
        return self.low <= self.target - (slot + self.offset) <= self.high


@dataclass(frozen=True)
class SlotReach:
    """Where an out-of-line slot for one instruction may go.

    ``required`` are the relocation constraints: a slot that misses one cannot be built
    (an x86_64 ``[rip + disp32]`` operand rewritten for the slot).  ``boost`` are the
    constraints of the boosted variant's jump back (and of its own relocated copy): a slot
    that misses one still works, with two traps per hit.  A host places the slot where all
    of them hold when it can, and where the required ones hold otherwise."""

    required: tuple[Reach, ...] = ()
    boost: tuple[Reach, ...] = ()


NO_REACH = SlotReach()
"""A slot that may go anywhere and has no boosted jump to place."""


def reach_window(reaches: Sequence[Reach], lo: int = 0,
                 hi: int = (1 << 64) - 1) -> tuple[int, int] | None:
    """The slot addresses in ``[lo, hi]`` meeting every constraint, as ``[first, last]``
    (inclusive), or ``None`` when there is none.  The constraints' windows are intervals, so
    their intersection is one interval."""
    for r in reaches:
        first, last = r.window()
        lo, hi = max(lo, first), min(hi, last)
    return (lo, hi) if lo <= hi else None


def jump_back(d: Decoded, at: int, low: int, high: int, why: str) -> Reach:
    """The reach constraint of a direct jump placed ``at`` bytes into the slot, whose
    displacement (measured from its own address, as fixed-width ISAs do; x86 callers pass
    ``at`` as the end of the jump) lies in ``[low, high]`` and which lands on the
    instruction after the probe."""
    return Reach(d.address + d.length, at, low, high, why)


class SimState(Protocol):
    """Architectural state as a simulation rule sees it.

    ``address`` is the probed instruction's own address (not the trap PC).  Registers are
    named as in the ISA's ``regs`` module; memory is little-endian.
    """

    @property
    def address(self) -> BV:
        """The address of the instruction being simulated."""

    def reg(self, name: str) -> BV:
        """Read a 64-bit register (the zero register reads 0)."""

    def set_reg(self, name: str, value: BV) -> None:
        """Write a 64-bit register (writes to the zero register are dropped)."""

    def set_pc(self, value: BV) -> None:
        """Set where execution continues."""

    def load(self, addr: BV, size: int) -> BV:
        """Read ``size`` bytes of memory as an unsigned little-endian value."""

    def store(self, addr: BV, size: int, value: BV) -> None:
        """Write the low ``size`` bytes of ``value`` to memory, little-endian."""

    def extra(self, name: str) -> BV:
        """Read state outside ``pt_regs`` (FP/SIMD registers, FP condition flags)."""

    def set_extra(self, name: str, value: BV) -> None:
        """Write state outside ``pt_regs``."""


def copy_and_jump(d: Decoded, slot_addr: int, reaches: Callable[[BV, BV], Cond],
                  jump_word: Callable[[BV, BV], BV]) -> SlotPlan | None:
    """The boosted slot of a fixed-width ISA placed at ``slot_addr``: the instruction copied
    unchanged, then the ISA's 32-bit direct jump (``jump_word``) to the instruction after
    the probe; ``None`` when that jump cannot reach it from the slot (``reaches``)."""
    assert d.verdict is Verdict.STEP_OUT_OF_LINE
    at, target = slot_addr + d.length, (d.address + d.length) & ((1 << 64) - 1)
    if not reaches(at, target):
        return None
    jump = bits.concrete(jump_word(at, target), "a jump word")
    return SlotPlan(d.raw + jump.to_bytes(4, "little"), d.length, d.length, "copy+jump",
                    boosted=True)
