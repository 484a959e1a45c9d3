"""aarch64 simulation rules: one function per simulated class, same signature.

Mirrors Linux ``arch/arm64/kernel/probes/simulate-insn.c`` and the pseudocode of the Arm
ARM (DDI 0487) instruction pages in C6.2: B, BL, B.cond, BC.cond, CBZ/CBNZ, TBZ/TBNZ, BR,
BLR, RET, ADR, ADRP, LDR/LDRSW/PRFM (literal) and LDR (literal, SIMD&FP), and the
condition test ``ConditionHolds`` (J1.1.3 ``shared/functions/system``).  Each rule has the
same sections: FIELDS (from the decoded instruction), READ SOURCES (every register and
memory operand, before anything is written), OPERATION, WRITE RESULTS / PC.  Register 31 is
the zero register in every simulated instruction.  Rules use only :mod:`kprobe_ref.bits`,
so the proofs run them on Z3 terms.
"""

from __future__ import annotations

from collections.abc import Callable

from kprobe_ref import bits
from kprobe_ref.arch.aarch64.regs import xreg
from kprobe_ref.arch.base import Decoded, SimState
from kprobe_ref.bits import BV, Cond

__all__ = ["RULES", "condition", "simulate"]


def _flag(nzcv: BV, bit: int) -> Cond:
    return bits.eq(bits.extract(nzcv, bit, bit), 1, 1)


def condition(cond: int, nzcv: BV) -> Cond:
    """``ConditionHolds(cond)`` with the flags N, Z, C, V in bits 31..28 of ``nzcv``.

    ``cond<3:1>`` picks the test; ``cond<0>`` set inverts it, except for ``1111`` which,
    like ``1110`` (AL), always holds."""
    n, z, c, v = (_flag(nzcv, b) for b in (31, 30, 29, 28))
    n_eq_v = bits.b_or(bits.b_and(n, v), bits.b_and(bits.b_not(n), bits.b_not(v)))
    base: tuple[Cond, ...] = (
        z,  # 000: EQ / NE
        c,  # 001: CS / CC
        n,  # 010: MI / PL
        v,  # 011: VS / VC
        bits.b_and(c, bits.b_not(z)),  # 100: HI / LS
        n_eq_v,  # 101: GE / LT
        bits.b_and(n_eq_v, bits.b_not(z)),  # 110: GT / LE
        True,  # 111: AL / NV
    )
    test = base[(cond >> 1) & 7]
    return bits.b_not(test) if cond & 1 and cond != 0b1111 else test


def _next(s: SimState) -> BV:
    return bits.add(s.address, 4)


def _rel(s: SimState, imm: int, width: int) -> BV:
    """``PC + SignExtend(imm:'00')`` for an immediate field of ``width`` bits."""
    return bits.add(s.address, bits.sext(bits.shl(imm, 2, width + 2), width + 2))


def sim_b(s: SimState, d: Decoded) -> None:
    """B: go to ``PC + sext(imm26:'00')``."""
    s.set_pc(_rel(s, d.fields["imm"], 26))


def sim_bl(s: SimState, d: Decoded) -> None:
    """BL: X30 = PC + 4, then go to ``PC + sext(imm26:'00')``."""
    # WRITE RESULTS / PC
    s.set_reg("x30", _next(s))
    s.set_pc(_rel(s, d.fields["imm"], 26))


def sim_b_cond(s: SimState, d: Decoded) -> None:
    """B.cond and BC.cond: go to ``PC + sext(imm19:'00')`` when the condition holds.  The
    two differ only in a branch-prediction hint."""
    # READ SOURCES
    nzcv = s.reg("pstate")
    # OPERATION
    taken = condition(d.fields["cond"], nzcv)
    # WRITE RESULTS / PC
    s.set_pc(bits.ite(taken, _rel(s, d.fields["imm"], 19), _next(s)))


def sim_cbz(s: SimState, d: Decoded) -> None:
    """CBZ/CBNZ: compare Wt (sf = 0) or Xt (sf = 1) with zero."""
    # FIELDS
    f = d.fields
    width = 64 if f["sf"] else 32
    # READ SOURCES
    value = s.reg(xreg(f["rt"]))
    # OPERATION
    zero = bits.eq(value, 0, width)
    taken = zero if d.klass == "cbz" else bits.b_not(zero)
    # WRITE RESULTS / PC
    s.set_pc(bits.ite(taken, _rel(s, f["imm"], 19), _next(s)))


def sim_tbz(s: SimState, d: Decoded) -> None:
    """TBZ/TBNZ: test bit ``b5:b40`` of Rt (Wt when b5 = 0, which holds for bits < 32)."""
    # FIELDS
    f = d.fields
    bit = f["b5"] << 5 | f["b40"]
    # READ SOURCES
    value = s.reg(xreg(f["rt"]))
    # OPERATION
    set_ = bits.eq(bits.extract(value, bit, bit), 1, 1)
    taken = set_ if d.klass == "tbnz" else bits.b_not(set_)
    # WRITE RESULTS / PC
    s.set_pc(bits.ite(taken, _rel(s, f["imm"], 14), _next(s)))


def sim_br(s: SimState, d: Decoded) -> None:
    """BR and RET: go to Xn (RET defaults to X30 but may name any register)."""
    # READ SOURCES
    target = s.reg(xreg(d.fields["rn"]))
    # WRITE RESULTS / PC
    s.set_pc(target)


def sim_blr(s: SimState, d: Decoded) -> None:
    """BLR: read Xn, then X30 = PC + 4, then go to the value read (``blr x30`` goes to the
    old X30)."""
    # READ SOURCES
    target = s.reg(xreg(d.fields["rn"]))
    # WRITE RESULTS / PC
    s.set_reg("x30", _next(s))
    s.set_pc(target)


def sim_adr(s: SimState, d: Decoded) -> None:
    """ADR: Xd = PC + sext(immhi:immlo); ADRP: Xd = (PC with bits 11..0 cleared) +
    sext(immhi:immlo:Zeros(12))."""
    # FIELDS
    f = d.fields
    imm = bits.concat(f["immhi"], f["immlo"], 2, 19)
    # OPERATION
    if d.klass == "adrp":
        base = bits.and_(s.address, bits.not_(0xFFF))
        result = bits.add(base, bits.sext(bits.shl(imm, 12, 33), 33))
    else:
        result = bits.add(s.address, bits.sext(imm, 21))
    # WRITE RESULTS / PC
    s.set_reg(xreg(f["rd"]), result)
    s.set_pc(_next(s))


_LITERAL: dict[str, tuple[int, bool]] = {
    "ldr_lit_w": (4, False),
    "ldr_lit_x": (8, False),
    "ldrsw_lit": (4, True),
}
"""Load size and sign extension of the general-register literal loads."""


def sim_ldr_lit(s: SimState, d: Decoded) -> None:
    """LDR Wt|Xt and LDRSW Xt (literal): load from ``PC + sext(imm19:'00')``; a W load is
    zero-extended to 64 bits, LDRSW sign-extends a word.  Rt = 31 discards the value."""
    # FIELDS
    size, signed = _LITERAL[d.klass]
    # READ SOURCES
    value = s.load(_rel(s, d.fields["imm"], 19), size)
    # OPERATION
    result = bits.sext(value, 32) if signed else bits.zext(value, 8 * size)
    # WRITE RESULTS / PC
    s.set_reg(xreg(d.fields["rt"]), result)
    s.set_pc(_next(s))


_SIMD_SIZE = {"ldr_lit_s": 4, "ldr_lit_d": 8, "ldr_lit_q": 16}


def sim_ldr_lit_simd(s: SimState, d: Decoded) -> None:
    """LDR St|Dt|Qt (literal): load 4, 8 or 16 bytes from ``PC + sext(imm19:'00')`` into
    V register ``t`` (0..31; 31 is V31, not a zero register), zero-extended to 128 bits."""
    # FIELDS
    size = _SIMD_SIZE[d.klass]
    # READ SOURCES
    value = s.load(_rel(s, d.fields["imm"], 19), size)
    # WRITE RESULTS / PC
    s.set_extra(f"q{d.fields['rt']}", bits.zext(value, 8 * size, 128))
    s.set_pc(_next(s))


def sim_nop(s: SimState, d: Decoded) -> None:
    """NOP, WFE, WFI and PRFM (literal): no architectural effect; continue at PC + 4."""
    s.set_pc(_next(s))


RULES: dict[str, Callable[[SimState, Decoded], None]] = {
    "b": sim_b,
    "bl": sim_bl,
    "b_cond": sim_b_cond,
    "bc_cond": sim_b_cond,
    "cbz": sim_cbz,
    "cbnz": sim_cbz,
    "tbz": sim_tbz,
    "tbnz": sim_tbz,
    "br": sim_br,
    "ret": sim_br,
    "blr": sim_blr,
    "adr": sim_adr,
    "adrp": sim_adr,
    "ldr_lit_w": sim_ldr_lit,
    "ldr_lit_x": sim_ldr_lit,
    "ldrsw_lit": sim_ldr_lit,
    "ldr_lit_s": sim_ldr_lit_simd,
    "ldr_lit_d": sim_ldr_lit_simd,
    "ldr_lit_q": sim_ldr_lit_simd,
    "prfm_lit": sim_nop,
    "nop": sim_nop,
    "wfe": sim_nop,
    "wfi": sim_nop,
}
"""The rule of each simulated class."""


def simulate(d: Decoded, s: SimState) -> None:
    """Apply the simulated instruction ``d`` to ``s``."""
    RULES[d.klass](s, d)
