"""Relocation obligations (x86_64, the only ISA that rewrites a stepped instruction).

- ``relocate`` / ``rip_relative``: with ``disp' = sext(disp) + addr - slot`` computed
  exactly (128-bit, as ``slot.new_displacement`` computes it on Python integers), and the
  precondition the implementation checks (``disp'`` fits a signed 32-bit field), the
  effective address ``slot + len + sext(disp'<31:0>)`` equals ``addr + len + sext(disp)``
  for every ``addr``, ``slot``, ``disp`` and ``len``.
- ``relocate-necessity`` / ``rip_relative``: without the precondition the claim is false;
  the obligation is *proved* when Z3 returns the counterexample, which it records.
- ``relocate`` / ``rip_scratch``: for every ModRM.reg and each prefix form (none, REX.W,
  REX.WRB, VEX3), ``slot.rewrite_to_scratch`` yields ModRM ``10 reg rrr`` with REX.B/VEX.B
  naming a low register ``rrr`` that the instruction names nowhere else, the same
  displacement bytes, and, with the scratch register holding ``addr + len`` (the plan's
  ``scratch_value``), the address ``[scratch + sext(disp)]`` equals the original one.

The implementation's arithmetic is on Python integers, so the first claim restates it in
128-bit terms; :func:`agrees_with_implementation` checks the restatement against
``new_displacement`` and ``rewrite_displacement`` on random inputs.
"""

from __future__ import annotations

import random

import z3

from kprobe_ref.arch.x86_64 import slot as x86_slot
from kprobe_ref.bits import to_signed
from kprobe_ref.models.x86_64 import GPRS
from kprobe_ref.proofs.core import Obligation, Result, counterexample, prove, timed

__all__ = ["agrees_with_implementation", "relocate_obligations", "rip_claim"]


def _vars() -> tuple[z3.BitVecRef, z3.BitVecRef, z3.BitVecRef, z3.BitVecRef]:
    return (z3.BitVec("addr", 64), z3.BitVec("slot", 64), z3.BitVec("disp", 32),
            z3.BitVec("len", 64))


def rip_claim(addr: z3.BitVecRef | int, slot: z3.BitVecRef | int, disp: z3.BitVecRef | int,
              length: z3.BitVecRef | int) -> tuple[z3.BoolRef, z3.BoolRef]:
    """``(precondition, same effective address)`` of the displacement rewrite."""
    a, s = z3.ZeroExt(64, z3.BitVecVal(addr, 64) if isinstance(addr, int) else addr), \
        z3.ZeroExt(64, z3.BitVecVal(slot, 64) if isinstance(slot, int) else slot)
    d32 = z3.BitVecVal(disp, 32) if isinstance(disp, int) else disp
    n = z3.BitVecVal(length, 64) if isinstance(length, int) else length
    new = z3.SignExt(96, d32) + a - s
    pre = z3.And(new >= -(1 << 31), new < (1 << 31))
    ea_slot = z3.Extract(63, 0, s) + n + z3.SignExt(32, z3.Extract(31, 0, new))
    ea_orig = z3.Extract(63, 0, a) + n + z3.SignExt(32, d32)
    return pre, ea_slot == ea_orig


def agrees_with_implementation(samples: int = 2000) -> str | None:
    """``None`` if ``new_displacement`` and ``rewrite_displacement`` agree with the 128-bit
    restatement on random inputs (near and far slots), else the first disagreement."""
    rng = random.Random(6)
    raw = bytes.fromhex("488b0500000000")
    for _ in range(samples):
        addr = rng.getrandbits(64)
        slot = (addr + rng.randint(-(1 << 33), 1 << 33)) % (1 << 64) if rng.random() < 0.7 \
            else rng.getrandbits(64)
        disp = rng.getrandbits(32)
        new = to_signed(disp, 32) + addr - slot
        if x86_slot.new_displacement(disp, addr, slot) != new:
            return f"new_displacement({disp:#x}, {addr:#x}, {slot:#x})"
        fits = -(1 << 31) <= new < (1 << 31)
        code = raw[:3] + disp.to_bytes(4, "little")
        try:
            out = x86_slot.rewrite_displacement(code, 3, addr, slot)
        except OverflowError:
            if fits:
                return f"rewrite refused a fitting displacement at {addr:#x} -> {slot:#x}"
            continue
        if not fits or int.from_bytes(out[3:7], "little") != new & 0xFFFF_FFFF:
            return f"rewrite gave {out.hex()} at {addr:#x} -> {slot:#x}"
    return None


def _rip() -> Result:
    bad = agrees_with_implementation()
    if bad is not None:
        return Result(False, 0.0, None, f"restatement disagrees with the implementation: {bad}")
    pre, same = rip_claim(*_vars())
    return prove(z3.Implies(pre, same), "precondition: sext(disp)+addr-slot fits in s32")


def _rip_necessity() -> Result:
    _, same = rip_claim(*_vars())
    solver = z3.Solver()
    solver.add(z3.Not(same))
    if solver.check() != z3.sat:
        return Result(False, 0.0, None, "no counterexample: the precondition is not needed")
    return Result(True, 0.0, counterexample(solver.model()),
                  "without the fit check the rewritten address differs")


_FORMS = {
    "plain": (b"", b"\x8b"),
    "rex.w": (b"\x48", b"\x8b"),
    "rex.wrb": (b"\x4d", b"\x8b"),
    "vex3": (b"\xc4\xe1\x78", b"\x10"),
}
"""Prefix and opcode of each RIP-relative form tried: ``mov r32, m32``, ``mov r64, m64``,
``mov r64(r8..r15), m64`` with a stray REX.B, ``vmovups xmm, m128`` (VEX3, vvvv = 1111)."""


def _scratch_case(prefix: bytes, opcode: bytes, reg: int) -> Result | None:
    disp = bytes.fromhex("78563412")
    raw = prefix + opcode + bytes([(reg << 3) | 0b101]) + disp
    off = len(prefix) + len(opcode) + 1
    out, scratch = x86_slot.rewrite_to_scratch(raw, off)
    modrm = out[off - 1]
    number = GPRS.index(scratch)
    problems = []
    if modrm >> 6 != 0b10 or (modrm >> 3) & 7 != reg or modrm & 7 != number or number == 4:
        problems.append(f"ModRM {modrm:#04x}")
    if out[off:] != disp or len(out) != len(raw):
        problems.append("displacement or length changed")
    if number == reg:
        problems.append("scratch is the reg operand")
    if prefix[:1] == b"\x4d" and out[0] & 1:
        problems.append("REX.B still set")
    if prefix[:1] == b"\xc4" and not out[1] & 0x20:
        problems.append("VEX.B (inverted) still selects r8..r15")
    if problems:
        return Result(False, 0.0, {"bytes": raw.hex(), "rewritten": out.hex()},
                      "; ".join(problems))
    return None


def _scratch() -> Result:
    for prefix, opcode in _FORMS.values():
        for reg in range(8):
            bad = _scratch_case(prefix, opcode, reg)
            if bad is not None:
                return bad
    addr, _, disp, length = _vars()
    scratch_value = addr + length
    return prove(scratch_value + z3.SignExt(32, disp) == (addr + length) + z3.SignExt(32, disp),
                 f"{8 * len(_FORMS)} encodings rewritten; [scratch + disp] == [rip + disp]")


def relocate_obligations(isa: str) -> list[Obligation]:
    """The relocation obligations of ``isa`` (none on ISAs whose slots copy unchanged)."""
    if isa != "x86_64":
        return []
    return [
        Obligation(isa, "relocate", "rip_relative", timed(_rip)),
        Obligation(isa, "relocate-necessity", "rip_relative", timed(_rip_necessity)),
        Obligation(isa, "relocate", "rip_scratch", timed(_scratch)),
    ]
