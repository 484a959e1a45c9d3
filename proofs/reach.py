"""Reach obligations: the slot windows of ``ArchOps.reach`` are exactly where a slot works.

A host places a slot anywhere in the window that ``reach`` describes (``docs/slots.md``),
so each window must be *sound* (every slot address in it gets a working relocation and jump
back) and, to refuse only when no place exists, *complete* (every slot address where the
ISA's own encoders succeed lies in it).  Two claims per ISA, each over a symbolic probe
address and a symbolic slot address (64-bit, no wrap-around: a slot is never placed on the
other side of the address space from its code):

- ``reach``/``boost-window``: the boosted variant's jump back (``jump_back``) — a slot ``s``
  lies in its window exactly when the ISA's ``jump_reaches``, the check the slot builder
  uses, accepts the jump placed in ``s``'s variant for the instruction after the probe.
  On x86_64 this covers every instruction length (1 to 15 bytes).
- ``reach``/``relocation-window`` (x86_64): a kernel slot ``s`` lies in the window of a
  ``[rip + disp32]`` operand exactly when :func:`new_displacement`, the rewrite the slot
  builder applies, fits 32 bits; for every displacement and instruction length, and the
  same for the copy in the boosted variant.  The fixed-width ISAs relocate nothing (every
  PC-relative class is simulated), and their ``reach`` must say so: no required window.
"""

from __future__ import annotations

from collections.abc import Callable

import z3

from kprobe_ref.arch import get_arch
from kprobe_ref.arch.base import Decoded, Reach, SlotReach, Verdict
from kprobe_ref.arch.x86_64 import slot as x86_slot
from kprobe_ref.proofs.boost import SLOT_MODULES
from kprobe_ref.proofs.core import Obligation, Result, prove, timed

__all__ = ["reach_obligations"]

ReachRule = Callable[[Decoded, bool], SlotReach]

_LENGTHS = {"x86_64": range(1, 16), "aarch64": (4,), "riscv64": (2, 4), "loongarch64": (4,)}
_TOP = 1 << 64


def _decoded(isa: str, address: object, length: int, disp: int | None) -> Decoded:
    """A stepped instruction at a symbolic ``address`` (an integer term).  Only its length,
    and on x86_64 its displacement field, matter to ``reach``."""
    raw = bytearray(length)
    fields: dict[str, int] = {}
    if disp is not None:
        fields["disp_offset"] = length - 4
        raw[length - 4:] = (disp & 0xFFFF_FFFF).to_bytes(4, "little")
    return Decoded(address, bytes(raw), Verdict.STEP_OUT_OF_LINE, "sample", "sample",  # type: ignore[arg-type]
                   "sample", fields)


def _in(r: Reach, s: z3.ExprRef) -> z3.BoolRef:
    """Whether the slot address ``s`` lies in the constraint's window."""
    first, last = r.window()
    return z3.And(s >= first, s <= last)


_WIDE = 128
"""Bits of the terms the windows are computed in: wide enough that no sum of two 64-bit
addresses and a small offset wraps, so the windows' plain-integer arithmetic is exact."""


def _addresses() -> tuple[z3.BitVecRef, z3.BitVecRef]:
    """A probe address and a slot address: 64-bit values held in :data:`_WIDE` bits."""
    addr, s = z3.BitVec("address", 64), z3.BitVec("slot", 64)
    return z3.ZeroExt(_WIDE - 64, addr), z3.ZeroExt(_WIDE - 64, s)


def _low64(x: z3.BitVecRef) -> z3.BitVecRef:
    return z3.Extract(63, 0, x)


def _domain(isa: str, addr: z3.BitVecRef, s: z3.BitVecRef) -> z3.BoolRef:
    """Probe addresses that leave room for the instruction, both aligned as instructions
    are, and a slot within 2**62 of the code (so no distance wraps)."""
    align = get_arch(isa).insn_align
    aligned = [z3.Extract(align.bit_length() - 2, 0, x) == 0 for x in (addr, s)] if align > 1 \
        else []
    return z3.And(addr < _TOP - 16, s - addr < 1 << 62, addr - s < 1 << 62, *aligned)


def _int_domain(addr: z3.ArithRef, s: z3.ArithRef) -> z3.BoolRef:
    """:func:`_domain` for integer terms on x86_64 (no alignment)."""
    return z3.And(addr >= 0, addr < _TOP - 16, s >= 0, s < _TOP)


def _only(rs: tuple[Reach, ...], why: str) -> Reach | None:
    hits = [r for r in rs if why in r.why]
    return hits[0] if len(hits) == 1 else None


def _boost_window(isa: str, rule: ReachRule) -> Result:
    addr, s = _addresses()
    arch, mod = get_arch(isa), SLOT_MODULES[isa]
    claims = []
    for length in _LENGTHS[isa]:
        d = _decoded(isa, addr, length, None)
        back = _only(rule(d, False).boost, "back")
        if back is None:
            return Result(False, 0.0, {"length": str(length)},
                          "reach gives no single jump-back constraint for the boost")
        at = s + arch.boost_offset + length
        reaches = mod.jump_reaches(_low64(at), _low64(addr + length))
        claims.append(z3.Implies(_domain(isa, addr, s), _in(back, s) == reaches))
    return prove(z3.And(*claims), "every probe and slot address, every instruction length")


_DISPS = (0, 1, -1, 7, -8, (1 << 31) - 1, -(1 << 31), 0x1234_5678, -0x7654_3210)


def _relocation_window(isa: str, rule: ReachRule) -> Result:
    addr, s = z3.Int("address"), z3.Int("slot")  # integers: no wrap, and z3 solves it fast
    if isa != "x86_64":
        d = _decoded(isa, 0x1000, _LENGTHS[isa][0], None)
        extra = rule(d, False).required + rule(d, True).required
        return Result(not extra, 0.0, None if not extra else {"required": repr(extra)},
                      "nothing is relocated, so no slot address is required")
    claims = []
    for length in range(5, 16):
        for disp in _DISPS:
            d = _decoded(isa, addr, length, disp)
            rs = rule(d, False)
            for at, pool in ((0, rs.required), (x86_slot.BOOST_OFFSET, rs.boost)):
                r = _only(pool, "rip-relative")
                if r is None:
                    return Result(False, 0.0, {"length": str(length), "disp": hex(disp)},
                                  "reach gives no single rip-relative constraint")
                new = x86_slot.new_displacement(disp & 0xFFFF_FFFF, addr, s + at)
                fits = z3.And(new >= -(1 << 31), new < (1 << 31))
                claims.append(z3.Implies(_int_domain(addr, s), _in(r, s) == fits))
        if rule(_decoded(isa, addr, length, 0), True).required:
            return Result(False, 0.0, {"length": str(length)},
                          "a process slot borrows a scratch register: nothing is required")
    return prove(z3.And(*claims), "every probe and slot address, lengths 5-15, sampled disp32")


def reach_obligations(isa: str, rule: ReachRule | None = None) -> list[Obligation]:
    """The reach obligations of ``isa``; ``rule`` replaces the ISA's ``reach`` (to show a
    wrong one fails)."""
    r: ReachRule = rule or SLOT_MODULES[isa].reach
    return [Obligation(isa, "reach", "boost-window", timed(lambda: _boost_window(isa, r))),
            Obligation(isa, "reach", "relocation-window",
                       timed(lambda: _relocation_window(isa, r)))]
