"""Breakpoint and slot obligations.

- ``breakpoint``: for every instruction length the ISA has, kernel and user, the engine's
  arm (``patch(addr, breakpoint)``) followed by its disarm (``patch(addr,
  original[:len(breakpoint)])``) over a symbolic memory holding a symbolic instruction at a
  symbolic address gives back exactly the original memory; the breakpoint is no longer than
  the instruction, so while armed no byte past the instruction changes.
- ``slot``: for each out-of-line rule, ``build_slot`` holds ``insn' + step breakpoint``
  with ``insn'`` the instruction (``copy``) or its rewritten form (``rip-displacement``,
  ``rip-scratch-register``), ends the step at ``len(insn)`` and resumes at
  ``addr + len(insn)``.  ``build_slot`` is byte arithmetic on concrete instructions, so this
  is checked on a sample of instructions of each rule (the count is in the detail).
"""

from __future__ import annotations

import random
from typing import Any

import z3

from kprobe_ref.arch import get_arch
from kprobe_ref.arch.base import Decoded, Verdict
from kprobe_ref.arch.x86_64 import slot as x86_slot
from kprobe_ref.models.state import load, store, symbolic_memory
from kprobe_ref.proofs.core import Obligation, Result, prove, timed

__all__ = ["slot_obligations"]

_LENGTHS = {"x86_64": range(1, 16), "aarch64": (4,), "riscv64": (2, 4), "loongarch64": (4,)}


def _patch(mem: Any, addr: z3.BitVecRef, data: list[Any]) -> Any:
    for i, b in enumerate(data):
        mem = store(mem, addr + i, 1, b)
    return mem


def _breakpoint(isa: str) -> Result:
    arch = get_arch(isa)
    claims = []
    for n in _LENGTHS.get(isa, (arch.insn_align,)):
        for user in (False, True):
            d = Decoded(0, bytes(n), Verdict.STEP_OUT_OF_LINE, "plain", "", "")
            bp = arch.breakpoint(d, user)
            if len(bp) > n:
                return Result(False, 0.0, {"length": str(n)}, f"breakpoint {bp.hex()} too long")
            mem, addr = symbolic_memory(), z3.BitVec("addr", 64)
            original = [load(mem, addr + i, 1) for i in range(n)]
            armed = _patch(mem, addr, list(bp))
            restored = _patch(armed, addr, original[: len(bp)])
            claims.append(restored == mem)
    return prove(z3.And(*claims), f"lengths {list(_LENGTHS.get(isa, ()))}, kernel and user")


def _samples(isa: str, n: int) -> list[Decoded]:
    arch, rng = get_arch(isa), random.Random(isa)
    out: list[Decoded] = []
    while len(out) < n:
        code = rng.getrandbits(32).to_bytes(4, "little")
        d = arch.decode(code + bytes(12), 0x40_0000, False)
        if d.verdict is Verdict.STEP_OUT_OF_LINE and "disp_offset" not in d.fields:
            out.append(d)
    return out


def _copy_slots(isa: str) -> Result:
    arch = get_arch(isa)
    step = arch.step_breakpoint(False)
    sample = _samples(isa, 300)
    for d in sample:
        plan = arch.build_slot(d, 0x7000_0000, False)
        if (plan.code, plan.break_offset, plan.resume_delta) != (d.raw + step, d.length,
                                                                  d.length):
            return Result(False, 0.0, {"bytes": d.raw.hex()}, f"slot {plan.code.hex()}")
    return Result(True, 0.0, None, f"checked on {len(sample)} stepped instructions")


_RIP = ("488b05", "8b0d", "4c8d05", "ff35", "c5f81005", "66480f6e05")


def _rip_slots() -> Result:
    arch, rng, count = get_arch("x86_64"), random.Random(1), 0
    for head in _RIP:
        for _ in range(50):
            code = bytes.fromhex(head) + rng.getrandbits(32).to_bytes(4, "little")
            addr = rng.getrandbits(47)
            d = arch.decode(code, addr, True)
            for slot in ((addr + rng.randint(-(1 << 30), 1 << 30)) % (1 << 47),
                         addr ^ (1 << 46)):
                plan = arch.build_slot(d, slot, True)
                want = _expected_rip(d, slot, plan.rule)
                if plan.code != want + b"\xcc" or plan.resume_delta != d.length:
                    return Result(False, 0.0, {"bytes": d.raw.hex(), "slot": hex(slot)},
                                  f"slot {plan.code.hex()}")
                count += 1
    return Result(True, 0.0, None, f"checked on {count} (instruction, slot) pairs")


def _expected_rip(d: Decoded, slot: int, rule: str) -> bytes:
    off = d.fields["disp_offset"]
    if rule == "rip-displacement":
        return x86_slot.rewrite_displacement(d.raw, off, d.address, slot)
    return x86_slot.rewrite_to_scratch(d.raw, off)[0]


def slot_obligations(isa: str) -> list[Obligation]:
    """The breakpoint and slot obligations of ``isa``."""
    obs = [Obligation(isa, "breakpoint", "arm-disarm", timed(lambda: _breakpoint(isa))),
           Obligation(isa, "slot", "copy", timed(lambda: _copy_slots(isa)))]
    if isa == "x86_64":
        obs.append(Obligation(isa, "slot", "rip_relative", timed(_rip_slots)))
    return obs
