"""aarch64 instruction models, written from the Arm Architecture Reference Manual (DDI 0487).

Encodings are the diagrams of chapter C4 ("A64 Instruction Set Encoding"); semantics are the
pseudocode of the C6.2 instruction pages (B, BL, B.cond, BC.cond, CBZ, CBNZ, TBZ, TBNZ, BR,
BLR, RET, ADR, ADRP, LDR (literal), LDRSW (literal), PRFM (literal), LDR (literal, SIMD&FP),
NOP, WFE, WFI) and ``ConditionHolds`` (J1, ``shared/functions/system``).  State: ``x0`` ..
``x30``, ``sp``, ``pstate`` (N, Z, C, V in bits 31..28, the SPSR layout), memory, and the
SIMD&FP registers ``q0`` .. ``q31`` (128 bits) as extras.  Register number 31 is the zero
register in every modelled class.

:data:`PC_CLASSES` lists, from the manual, every encoding that reads or writes the PC other
than by falling through, including those kprobe_ref refuses; the proofs check that no word
the decode table steps out of line is one of them.
"""

from __future__ import annotations

from collections.abc import Callable

from kprobe_ref import bits
from kprobe_ref.bits import BV, Cond
from kprobe_ref.models.state import (
    ModelClass,
    State,
    bit,
    load,
    read_indexed,
    select,
    write_indexed,
)

__all__ = ["CLASSES", "ISA", "PC_CLASSES", "REGS", "X_NAMES", "condition_holds"]

ISA = "aarch64"
X_NAMES: tuple[str | None, ...] = (*(f"x{i}" for i in range(31)), None)
"""Register number -> name; 31 is the zero register XZR."""
REGS: tuple[str, ...] = (*(f"x{i}" for i in range(31)), "sp", "pstate")
EXTRAS: tuple[str, ...] = tuple(f"q{i}" for i in range(32))


def _f(w: BV, hi: int, lo: int) -> BV:
    return bits.extract(w, hi, lo)


def _is(w: BV, hi: int, lo: int, value: int) -> Cond:
    return bits.eq(_f(w, hi, lo), value, hi - lo + 1)


def _all(*cs: Cond) -> Cond:
    return bits.b_and(*cs)


def _x(s: State, n: BV) -> BV:
    """``X[n]`` with 31 reading as zero."""
    return read_indexed(s.regs, X_NAMES, n, 5)


def _set_x(s: State, n: BV, value: BV) -> dict[str, BV]:
    return write_indexed(s.regs, X_NAMES, n, 5, value)


def _offset(imm: BV, width: int) -> BV:
    """``SignExtend(imm:'00', 64)`` of an immediate field ``width`` bits wide."""
    return bits.sext(bits.concat(imm, 0, 2, width), width + 2)


def _next(s: State) -> BV:
    return bits.add(s.pc, 4)


# -- ConditionHolds --------------------------------------------------------------------------


def condition_holds(cond: BV, pstate: BV) -> Cond:
    """``ConditionHolds(cond)``: the test chosen by ``cond<3:1>``, inverted when ``cond<0>``
    is 1 and ``cond`` is not ``1111``."""
    n, z, c, v = (bit(pstate, b) for b in (31, 30, 29, 28))
    tests: list[Cond] = [
        z,
        c,
        n,
        v,
        bits.b_and(c, bits.b_not(z)),
        bits.eq(_f(pstate, 31, 31), _f(pstate, 28, 28), 1),
        bits.b_and(bits.eq(_f(pstate, 31, 31), _f(pstate, 28, 28), 1), bits.b_not(z)),
        True,
    ]
    result = bits.eq(select(_f(cond, 3, 1), [bits.ite(t, 1, 0, 1) for t in tests], 1, 3), 1, 1)
    invert = bits.b_and(bit(cond, 0), bits.ne(cond, 0b1111, 4))
    return bits.b_or(bits.b_and(result, bits.b_not(invert)), bits.b_and(bits.b_not(result), invert))


# -- encodings (C4.1) ----------------------------------------------------------------------


def enc_b(w: BV) -> Cond:
    """B: ``0 00101 imm26``."""
    return _is(w, 31, 26, 0b000101)


def enc_bl(w: BV) -> Cond:
    """BL: ``1 00101 imm26``."""
    return _is(w, 31, 26, 0b100101)


def enc_b_cond(w: BV) -> Cond:
    """B.cond: ``0101010 0 imm19 0 cond``."""
    return _all(_is(w, 31, 24, 0b0101_0100), _is(w, 4, 4, 0))


def enc_bc_cond(w: BV) -> Cond:
    """BC.cond (FEAT_HBC): ``0101010 0 imm19 1 cond``."""
    return _all(_is(w, 31, 24, 0b0101_0100), _is(w, 4, 4, 1))


def enc_cbz(w: BV) -> Cond:
    """CBZ: ``sf 011010 0 imm19 Rt``."""
    return _all(_is(w, 30, 25, 0b011010), _is(w, 24, 24, 0))


def enc_cbnz(w: BV) -> Cond:
    """CBNZ: ``sf 011010 1 imm19 Rt``."""
    return _all(_is(w, 30, 25, 0b011010), _is(w, 24, 24, 1))


def enc_tbz(w: BV) -> Cond:
    """TBZ: ``b5 011011 0 b40 imm14 Rt``."""
    return _all(_is(w, 30, 25, 0b011011), _is(w, 24, 24, 0))


def enc_tbnz(w: BV) -> Cond:
    """TBNZ: ``b5 011011 1 b40 imm14 Rt``."""
    return _all(_is(w, 30, 25, 0b011011), _is(w, 24, 24, 1))


def enc_br(w: BV) -> Cond:
    """BR: ``1101011 0000 11111 000000 Rn 00000``."""
    return _all(_is(w, 31, 21, 0b1101011_0000), _is(w, 20, 10, 0b11111_000000), _is(w, 4, 0, 0))


def enc_blr(w: BV) -> Cond:
    """BLR: ``1101011 0001 11111 000000 Rn 00000``."""
    return _all(_is(w, 31, 21, 0b1101011_0001), _is(w, 20, 10, 0b11111_000000), _is(w, 4, 0, 0))


def enc_ret(w: BV) -> Cond:
    """RET: ``1101011 0010 11111 000000 Rn 00000``."""
    return _all(_is(w, 31, 21, 0b1101011_0010), _is(w, 20, 10, 0b11111_000000), _is(w, 4, 0, 0))


def enc_adr(w: BV) -> Cond:
    """ADR: ``0 immlo 10000 immhi Rd``."""
    return _all(_is(w, 31, 31, 0), _is(w, 28, 24, 0b10000))


def enc_adrp(w: BV) -> Cond:
    """ADRP: ``1 immlo 10000 immhi Rd``."""
    return _all(_is(w, 31, 31, 1), _is(w, 28, 24, 0b10000))


def _enc_literal(opc: int, v: int, w: BV) -> Cond:
    """Load register (literal): ``opc 011 V 00 imm19 Rt``."""
    return _all(_is(w, 31, 30, opc), _is(w, 29, 27, 0b011), _is(w, 26, 26, v), _is(w, 25, 24, 0))


def _enc_hint(crm_op2: int, w: BV) -> Cond:
    """HINT #imm: ``1101010100 0 00 011 0010 CRm op2 11111``."""
    return bits.eq(w, 0xD503_201F | crm_op2 << 5, 32)


# -- semantics (C6.2) ------------------------------------------------------------------------


def step_b(s: State, w: BV) -> State:
    """B: ``PC = PC + SignExtend(imm26:'00')``."""
    return s.evolve(bits.add(s.pc, _offset(_f(w, 25, 0), 26)))


def step_bl(s: State, w: BV) -> State:
    """BL: ``X[30] = PC + 4``; branch as B."""
    return s.evolve(bits.add(s.pc, _offset(_f(w, 25, 0), 26)), {"x30": _next(s)})


def step_b_cond(s: State, w: BV) -> State:
    """B.cond, BC.cond: branch to ``PC + SignExtend(imm19:'00')`` if ``ConditionHolds``."""
    taken = condition_holds(_f(w, 3, 0), s.reg("pstate"))
    return s.evolve(bits.ite(taken, bits.add(s.pc, _offset(_f(w, 23, 5), 19)), _next(s)))


def step_cb(s: State, w: BV) -> State:
    """CBZ/CBNZ: ``operand = X[t]`` of ``datasize = 32 << sf``; branch if
    ``IsZero(operand)`` differs from ``op``."""
    operand = _x(s, _f(w, 4, 0))
    is_zero = bits.ite(bit(w, 31), bits.ite(bits.eq(operand, 0, 64), 1, 0, 1),
                       bits.ite(bits.eq(operand, 0, 32), 1, 0, 1), 1)
    taken = bits.ne(is_zero, _f(w, 24, 24), 1)
    return s.evolve(bits.ite(taken, bits.add(s.pc, _offset(_f(w, 23, 5), 19)), _next(s)))


def step_tb(s: State, w: BV) -> State:
    """TBZ/TBNZ: ``bit_pos = b5:b40``; branch if ``X[t]<bit_pos>`` equals ``op``."""
    pos = bits.concat(_f(w, 31, 31), _f(w, 23, 19), 5, 1)
    tested = bits.extract(bits.lshr(_x(s, _f(w, 4, 0)), bits.zext(pos, 6)), 0, 0)
    taken = bits.eq(tested, _f(w, 24, 24), 1)
    return s.evolve(bits.ite(taken, bits.add(s.pc, _offset(_f(w, 18, 5), 14)), _next(s)))


def step_br(s: State, w: BV) -> State:
    """BR Xn, RET Xn: ``PC = X[n]``."""
    return s.evolve(_x(s, _f(w, 9, 5)))


def step_blr(s: State, w: BV) -> State:
    """BLR Xn: ``target = X[n]``; ``X[30] = PC + 4``; ``PC = target``."""
    target = _x(s, _f(w, 9, 5))
    return s.evolve(target, {"x30": _next(s)})


def step_adr(s: State, w: BV) -> State:
    """ADR: ``X[d] = PC + SignExtend(immhi:immlo, 64)``."""
    imm = bits.sext(bits.concat(_f(w, 23, 5), _f(w, 30, 29), 2, 19), 21)
    return s.evolve(_next(s), _set_x(s, _f(w, 4, 0), bits.add(s.pc, imm)))


def step_adrp(s: State, w: BV) -> State:
    """ADRP: ``X[d] = PC<63:12>:Zeros(12) + SignExtend(immhi:immlo:Zeros(12), 64)``."""
    imm = bits.sext(bits.concat(bits.concat(_f(w, 23, 5), _f(w, 30, 29), 2, 19), 0, 12, 21), 33)
    base = bits.concat(_f(s.pc, 63, 12), 0, 12, 52)
    return s.evolve(_next(s), _set_x(s, _f(w, 4, 0), bits.add(base, imm)))


def _literal_address(s: State, w: BV) -> BV:
    return bits.add(s.pc, _offset(_f(w, 23, 5), 19))


def step_ldr_lit_w(s: State, w: BV) -> State:
    """LDR Wt (literal): ``X[t] = ZeroExtend(Mem[PC + offset, 4])``."""
    data = load(s.mem, _literal_address(s, w), 4)
    return s.evolve(_next(s), _set_x(s, _f(w, 4, 0), bits.zext(data, 32)))


def step_ldr_lit_x(s: State, w: BV) -> State:
    """LDR Xt (literal): ``X[t] = Mem[PC + offset, 8]``."""
    data = load(s.mem, _literal_address(s, w), 8)
    return s.evolve(_next(s), _set_x(s, _f(w, 4, 0), data))


def step_ldrsw_lit(s: State, w: BV) -> State:
    """LDRSW Xt (literal): ``X[t] = SignExtend(Mem[PC + offset, 4], 64)``."""
    data = load(s.mem, _literal_address(s, w), 4)
    return s.evolve(_next(s), _set_x(s, _f(w, 4, 0), bits.sext(data, 32)))


def _ldr_simd(s: State, w: BV, size: int) -> State:
    """LDR St|Dt|Qt (literal): ``V[t] = Mem[PC + offset, size]``, the rest of the 128-bit
    register zeroed (V31 is a register, not a zero register)."""
    data = load(s.mem, _literal_address(s, w), size)
    value = bits.zext(data, 8 * size, 128)
    t = _f(w, 4, 0)
    updates = {f"q{k}": bits.ite(bits.eq(t, k, 5), value, s.extras[f"q{k}"], 128)
               for k in range(32)}
    return s.evolve(_next(s), extras=updates)


def step_ldr_lit_s(s: State, w: BV) -> State:
    """LDR St (literal)."""
    return _ldr_simd(s, w, 4)


def step_ldr_lit_d(s: State, w: BV) -> State:
    """LDR Dt (literal)."""
    return _ldr_simd(s, w, 8)


def step_ldr_lit_q(s: State, w: BV) -> State:
    """LDR Qt (literal)."""
    return _ldr_simd(s, w, 16)


def step_hint(s: State, w: BV) -> State:
    """PRFM (literal), NOP, WFE, WFI: no architectural effect (a prefetch is a hint; WFE
    and WFI may complete at any time); ``PC = PC + 4``."""
    return s.evolve(_next(s))


def _c(name: str, enc: Callable[[BV], Cond], step: Callable[[State, BV], State],
       manual: str) -> ModelClass:
    return ModelClass(name, 32, enc, step, manual)


CLASSES: dict[str, ModelClass] = {c.name: c for c in (
    _c("b", enc_b, step_b, "C6.2 B"),
    _c("bl", enc_bl, step_bl, "C6.2 BL"),
    _c("b_cond", enc_b_cond, step_b_cond, "C6.2 B.cond"),
    _c("bc_cond", enc_bc_cond, step_b_cond, "C6.2 BC.cond"),
    _c("cbz", enc_cbz, step_cb, "C6.2 CBZ"),
    _c("cbnz", enc_cbnz, step_cb, "C6.2 CBNZ"),
    _c("tbz", enc_tbz, step_tb, "C6.2 TBZ"),
    _c("tbnz", enc_tbnz, step_tb, "C6.2 TBNZ"),
    _c("br", enc_br, step_br, "C6.2 BR"),
    _c("blr", enc_blr, step_blr, "C6.2 BLR"),
    _c("ret", enc_ret, step_br, "C6.2 RET"),
    _c("adr", enc_adr, step_adr, "C6.2 ADR"),
    _c("adrp", enc_adrp, step_adrp, "C6.2 ADRP"),
    _c("ldr_lit_w", lambda w: _enc_literal(0b00, 0, w), step_ldr_lit_w, "C6.2 LDR (literal)"),
    _c("ldr_lit_x", lambda w: _enc_literal(0b01, 0, w), step_ldr_lit_x, "C6.2 LDR (literal)"),
    _c("ldrsw_lit", lambda w: _enc_literal(0b10, 0, w), step_ldrsw_lit,
       "C6.2 LDRSW (literal)"),
    _c("prfm_lit", lambda w: _enc_literal(0b11, 0, w), step_hint, "C6.2 PRFM (literal)"),
    _c("ldr_lit_s", lambda w: _enc_literal(0b00, 1, w), step_ldr_lit_s,
       "C7.2 LDR (literal, SIMD&FP)"),
    _c("ldr_lit_d", lambda w: _enc_literal(0b01, 1, w), step_ldr_lit_d,
       "C7.2 LDR (literal, SIMD&FP)"),
    _c("ldr_lit_q", lambda w: _enc_literal(0b10, 1, w), step_ldr_lit_q,
       "C7.2 LDR (literal, SIMD&FP)"),
    _c("nop", lambda w: _enc_hint(0b0000_000, w), step_hint, "C6.2 NOP"),
    _c("wfe", lambda w: _enc_hint(0b0000_010, w), step_hint, "C6.2 WFE"),
    _c("wfi", lambda w: _enc_hint(0b0000_011, w), step_hint, "C6.2 WFI"),
)}  # fmt: skip
"""Every modelled class, by the decode table's class name."""


def _diagram(*patterns: str) -> Callable[[BV], Cond]:
    """A predicate from encoding diagrams: 32 characters from bit 31 down, ``0``/``1``
    fixed, any other character free; a word matches if it matches any diagram."""
    def enc(w: BV) -> Cond:
        hits: list[Cond] = []
        for p in patterns:
            d = p.replace(" ", "")
            fixed = [(31 - i, int(c)) for i, c in enumerate(d) if c in "01"]
            hits.append(bits.b_and(*(bits.eq(_f(w, k, k), v, 1) for k, v in fixed)))
        return bits.b_or(*hits)
    return enc


_enc_eret_family = _diagram(
    "1101011 0100 11111 000000 11111 00000",  # ERET
    "1101011 0100 11111 00001x 11111 11111",  # ERETAA, ERETAB
    "1101011 0101 11111 000000 11111 00000",  # DRPS
)
_enc_pauth_branch = _diagram(
    "1101011 0000 11111 00001x nnnnn 11111",  # BRAAZ, BRABZ
    "1101011 0001 11111 00001x nnnnn 11111",  # BLRAAZ, BLRABZ
    "1101011 0010 11111 00001x 11111 11111",  # RETAA, RETAB
    "1101011 1000 11111 00001x nnnnn mmmmm",  # BRAA, BRAB
    "1101011 1001 11111 00001x nnnnn mmmmm",  # BLRAA, BLRAB
)


def _enc_ldr_lit_unallocated(w: BV) -> Cond:
    """LDR (literal, SIMD&FP) with ``opc = 11`` (unallocated, but in the PC-relative
    group)."""
    return _enc_literal(0b11, 1, w)


_enc_exception = _diagram(
    "11010100 000 iiiiiiiiiiiiiiii 000 01",  # SVC
    "11010100 000 iiiiiiiiiiiiiiii 000 1x",  # HVC, SMC
    "11010100 001 iiiiiiiiiiiiiiii 000 00",  # BRK
    "11010100 010 iiiiiiiiiiiiiiii 000 00",  # HLT
    "11010100 011 iiiiiiiiiiiiiiii 000 00",  # TCANCEL
    "11010100 101 iiiiiiiiiiiiiiii 000 01",  # DCPS1
    "11010100 101 iiiiiiiiiiiiiiii 000 1x",  # DCPS2, DCPS3
)
"""Exception generation (C4.1.3): the exception records the PC in ``ELR``."""


PC_CLASSES: dict[str, tuple[int, Callable[[BV], Cond]]] = {
    **{name: (32, c.encoding) for name, c in CLASSES.items()
       if name not in ("nop", "wfe", "wfi")},
    "eret_drps": (32, _enc_eret_family),  # ERET, ERETAA/AB, DRPS
    "pauth_branch": (32, _enc_pauth_branch),
    "ldr_lit_v_unallocated": (32, _enc_ldr_lit_unallocated),
    "exception_generating": (32, _enc_exception),
}  # fmt: skip
"""``(width, encoding predicate)`` of every class that reads or writes the PC (C4.1.3 branches,
exception generating and system; C4.1.2 PC-relative addressing; C4.1.5 load register
(literal)).  NOP, WFE and WFI are modelled but do not use the PC."""
