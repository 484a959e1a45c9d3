"""loongarch64 instruction models, written from the LoongArch Reference Manual, volume 1.

Formats and field positions: chapter 1.2 (1RI20, 2RI16, 1RI21, I26) and the encoding
tables of appendix B.  Semantics: chapter 2.2.5 (PCADDI, PCALAU12I, PCADDU12I, PCADDU18I),
2.2.6 (B, BL, JIRL, BEQ, BNE, BLT, BGE, BLTU, BGEU, BEQZ, BNEZ) and 3.2.5 (BCEQZ, BCNEZ).
Every instruction is one 32-bit word; GRLEN = 64.  State: ``r1`` .. ``r31`` (``r0``
reads zero and ignores writes, 1.1), the PC, and the eight one-bit FP condition flags
``fcc0`` .. ``fcc7`` as extras (bit 0 of each extra is the flag).

:data:`PC_CLASSES` lists every encoding that reads or writes the PC other than by falling
through, including the ones kprobe_ref refuses: BREAK, DBCL, SYSCALL, HVCL (the exception
records the PC in ERA/DERA), ERTN (writes the PC from ERA) and the BCEQZ/BCNEZ opcode with
bits 9..8 = ``1x`` (reserved forms, and the binary-translation jumps JISCR0/JISCR1).
"""

from __future__ import annotations

from collections.abc import Callable

from kprobe_ref import bits
from kprobe_ref.bits import BV, Cond
from kprobe_ref.models.state import ModelClass, State, read_indexed, select, write_indexed

__all__ = ["CLASSES", "EXTRAS", "ISA", "PC_CLASSES", "REGS", "R_NAMES"]

ISA = "loongarch64"
R_NAMES: tuple[str | None, ...] = (None, *(f"r{i}" for i in range(1, 32)))
"""Register number -> name; ``r0`` is hard-wired to zero."""
REGS: tuple[str, ...] = tuple(f"r{i}" for i in range(1, 32))
EXTRAS: tuple[str, ...] = tuple(f"fcc{i}" for i in range(8))


def _f(w: BV, hi: int, lo: int) -> BV:
    return bits.extract(w, hi, lo)


def _is(w: BV, hi: int, lo: int, value: int) -> Cond:
    return bits.eq(_f(w, hi, lo), value, hi - lo + 1)


def _r(s: State, n: BV) -> BV:
    return read_indexed(s.regs, R_NAMES, n, 5)


def _set_r(s: State, n: BV, value: BV) -> dict[str, BV]:
    return write_indexed(s.regs, R_NAMES, n, 5, value)


def _rd(w: BV) -> BV:
    return _f(w, 4, 0)


def _rj(w: BV) -> BV:
    return _f(w, 9, 5)


# -- immediates (1.2) ------------------------------------------------------------------------


def offs16(w: BV) -> BV:
    """2RI16: ``SignExtend({offs16, 2'b0}, GRLEN)``, offs16 = ``inst[25:10]``."""
    return bits.sext(bits.concat(_f(w, 25, 10), 0, 2, 16), 18)


def offs21(w: BV) -> BV:
    """1RI21: ``SignExtend({offs21, 2'b0}, GRLEN)``; offs[15:0] = ``inst[25:10]``,
    offs[20:16] = ``inst[4:0]``."""
    offs = bits.concat(_f(w, 4, 0), _f(w, 25, 10), 16, 5)
    return bits.sext(bits.concat(offs, 0, 2, 21), 23)


def offs26(w: BV) -> BV:
    """I26: ``SignExtend({offs26, 2'b0}, GRLEN)``; offs[15:0] = ``inst[25:10]``,
    offs[25:16] = ``inst[9:0]``."""
    offs = bits.concat(_f(w, 9, 0), _f(w, 25, 10), 16, 10)
    return bits.sext(bits.concat(offs, 0, 2, 26), 28)


def si20(w: BV, shift: int) -> BV:
    """1RI20: ``SignExtend({si20, shift'b0}, GRLEN)``, si20 = ``inst[24:5]``."""
    return bits.sext(bits.concat(_f(w, 24, 5), 0, shift, 20), 20 + shift)


# -- encodings (appendix B) -------------------------------------------------------------------


def _enc_op7(op: int) -> Callable[[BV], Cond]:
    def enc(w: BV) -> Cond:
        """1RI20: ``inst[31:25]`` is the opcode."""
        return _is(w, 31, 25, op)
    return enc


def _enc_op6(op: int) -> Callable[[BV], Cond]:
    def enc(w: BV) -> Cond:
        """2RI16 / 1RI21 / I26: ``inst[31:26]`` is the opcode."""
        return _is(w, 31, 26, op)
    return enc


def _enc_bcz(sub: int) -> Callable[[BV], Cond]:
    def enc(w: BV) -> Cond:
        """BCEQZ (``inst[9:8] = 00``) / BCNEZ (``01``): opcode ``010010``."""
        return bits.b_and(_is(w, 31, 26, 0b010010), _is(w, 9, 8, sub))
    return enc


# -- semantics -------------------------------------------------------------------------------


def _pc_rel(shift: int, align: bool) -> Callable[[State, BV], State]:
    def step(s: State, w: BV) -> State:
        """``GR[rd] = PC + SignExtend({si20, shift'b0})`` (PCALAU12I: with bits 11..0
        of the sum cleared); ``PC + 4``."""
        value = bits.add(s.pc, si20(w, shift))
        if align:
            value = bits.concat(_f(value, 63, 12), 0, 12, 52)
        return s.evolve(bits.add(s.pc, 4), _set_r(s, _rd(w), value))
    return step


def step_b(s: State, w: BV) -> State:
    """B: ``PC = PC + SignExtend({offs26, 2'b0})``."""
    return s.evolve(bits.add(s.pc, offs26(w)))


def step_bl(s: State, w: BV) -> State:
    """BL: ``GR[1] = PC + 4; PC = PC + SignExtend({offs26, 2'b0})``."""
    return s.evolve(bits.add(s.pc, offs26(w)), {"r1": bits.add(s.pc, 4)})


def step_jirl(s: State, w: BV) -> State:
    """JIRL: ``GR[rd] = PC + 4; PC = GR[rj] + SignExtend({offs16, 2'b0})``, GR[rj] being
    the value before the write."""
    target = bits.add(_r(s, _rj(w)), offs16(w))
    return s.evolve(target, _set_r(s, _rd(w), bits.add(s.pc, 4)))


def _cond(opcode: BV, a: BV, b: BV) -> Cond:
    """``inst[28:26]`` of opcodes 010110 .. 011011: BEQ 110, BNE 111, BLT 000, BGE 001,
    BLTU 010, BGEU 011 (a = GR[rj], b = GR[rd]; BLT/BGE signed, BLTU/BGEU unsigned)."""
    tests: list[Cond] = [bits.slt(a, b), bits.sle(b, a), bits.ult(a, b), bits.ule(b, a),
                         False, False, bits.eq(a, b), bits.ne(a, b)]
    return bits.eq(select(opcode, [bits.ite(t, 1, 0, 1) for t in tests], 1, 3), 1, 1)


def step_branch(s: State, w: BV) -> State:
    """BEQ/BNE/BLT/BGE/BLTU/BGEU ``rj, rd``: ``if cond(GR[rj], GR[rd]): PC = PC +
    SignExtend({offs16, 2'b0})``, else ``PC + 4``."""
    taken = _cond(_f(w, 28, 26), _r(s, _rj(w)), _r(s, _rd(w)))
    return s.evolve(bits.ite(taken, bits.add(s.pc, offs16(w)), bits.add(s.pc, 4)))


def step_bz(s: State, w: BV) -> State:
    """BEQZ (opcode 010000) / BNEZ (010001): branch when GR[rj] is / is not zero."""
    is_zero = bits.ite(bits.eq(_r(s, _rj(w)), 0), 1, 0, 1)
    taken = bits.ne(is_zero, _f(w, 26, 26), 1)
    return s.evolve(bits.ite(taken, bits.add(s.pc, offs21(w)), bits.add(s.pc, 4)))


def step_bcz(s: State, w: BV) -> State:
    """BCEQZ (``inst[8] = 0``) / BCNEZ (``1``): branch when FCC[cj] (``inst[7:5]``) is 0 /
    1."""
    flags = [bits.extract(s.extras[e], 0, 0) for e in EXTRAS]
    flag = select(_f(w, 7, 5), flags, 1, 3)
    taken = bits.eq(flag, _f(w, 8, 8), 1)
    return s.evolve(bits.ite(taken, bits.add(s.pc, offs21(w)), bits.add(s.pc, 4)))


_PC_REL = {"pcaddi": (0b0001100, 2, False), "pcalau12i": (0b0001101, 12, True),
           "pcaddu12i": (0b0001110, 12, False), "pcaddu18i": (0b0001111, 18, False)}
_BRANCHES = {"beq": 0b010110, "bne": 0b010111, "blt": 0b011000, "bge": 0b011001,
             "bltu": 0b011010, "bgeu": 0b011011}

CLASSES: dict[str, ModelClass] = {
    **{name: ModelClass(name, 32, _enc_op7(op), _pc_rel(shift, align), f"2.2.5 {name.upper()}")
       for name, (op, shift, align) in _PC_REL.items()},
    "beqz": ModelClass("beqz", 32, _enc_op6(0b010000), step_bz, "2.2.6 BEQZ"),
    "bnez": ModelClass("bnez", 32, _enc_op6(0b010001), step_bz, "2.2.6 BNEZ"),
    "bceqz": ModelClass("bceqz", 32, _enc_bcz(0b00), step_bcz, "3.2.5 BCEQZ"),
    "bcnez": ModelClass("bcnez", 32, _enc_bcz(0b01), step_bcz, "3.2.5 BCNEZ"),
    "jirl": ModelClass("jirl", 32, _enc_op6(0b010011), step_jirl, "2.2.6 JIRL"),
    "b": ModelClass("b", 32, _enc_op6(0b010100), step_b, "2.2.6 B"),
    "bl": ModelClass("bl", 32, _enc_op6(0b010101), step_bl, "2.2.6 BL"),
    **{name: ModelClass(name, 32, _enc_op6(op), step_branch, f"2.2.6 {name.upper()}")
       for name, op in _BRANCHES.items()},
}  # fmt: skip
"""Every modelled class, by the decode table's class name."""


def _enc_exception(w: BV) -> Cond:
    """BREAK, DBCL, SYSCALL, HVCL: ``inst[31:17] = 000000000010101`` (bits 16..15 pick the
    instruction, 14..0 the code); the exception records the PC."""
    return _is(w, 31, 17, 0b000000000010101)


def _enc_ertn(w: BV) -> Cond:
    """ERTN: the word ``0x06483800``; PC = CSR.ERA."""
    return bits.eq(w, 0x0648_3800, 32)


def _enc_bcz_reserved(w: BV) -> Cond:
    """Opcode ``010010`` with ``inst[9] = 1``: the reserved BCEQZ/BCNEZ forms and the LBT
    jumps JISCR0/JISCR1 (PC-relative on state outside the GRs)."""
    return bits.b_and(_is(w, 31, 26, 0b010010), _is(w, 9, 9, 1))


PC_CLASSES: dict[str, tuple[int, Callable[[BV], Cond]]] = {
    **{name: (c.width, c.encoding) for name, c in CLASSES.items()},
    "exception_generating": (32, _enc_exception),
    "ertn": (32, _enc_ertn),
    "bcz_reserved_jiscr": (32, _enc_bcz_reserved),
}
"""``(width, encoding predicate)`` of every class that reads or writes the PC."""
