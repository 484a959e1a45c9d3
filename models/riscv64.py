"""riscv64 instruction models, written from the RISC-V Unprivileged ISA manual.

Encodings and immediates: chapter 2.2-2.3 (formats R/I/S/B/U/J), the "RV32/64G Instruction
Set Listings" chapter, and the RVC opcode map and formats of the "C" chapter (CR, CB, CJ).
Semantics: chapter 2.4 (AUIPC), 2.5 (JAL, JALR, conditional branches) and the expansions
of the "C" chapter (C.J is ``jal x0``, C.JR is ``jalr x0, 0(rs1)``, C.JALR is
``jalr x1, 0(rs1)``, C.BEQZ/C.BNEZ are ``beq``/``bne rs1', x0``; C.JAL is RV32-only).
RV64GC has IALIGN = 16, so no modelled target is misaligned.  State: ``x1`` .. ``x31``
(``x0`` reads zero), the PC.

:data:`PC_CLASSES` lists every encoding that reads or writes the PC other than by falling
through, including the ones kprobe_ref refuses (ECALL, EBREAK, xRET, the reserved branch
funct3 values).
"""

from __future__ import annotations

from collections.abc import Callable

from kprobe_ref import bits
from kprobe_ref.bits import BV, Cond
from kprobe_ref.models.state import ModelClass, State, read_indexed, select, write_indexed

__all__ = ["CLASSES", "ISA", "PC_CLASSES", "REGS", "X_NAMES"]

ISA = "riscv64"
X_NAMES: tuple[str | None, ...] = (None, *(f"x{i}" for i in range(1, 32)))
"""Register number -> name; ``x0`` is hard-wired to zero."""
REGS: tuple[str, ...] = tuple(f"x{i}" for i in range(1, 32))
EXTRAS: tuple[str, ...] = ()


def _f(w: BV, hi: int, lo: int) -> BV:
    return bits.extract(w, hi, lo)


def _is(w: BV, hi: int, lo: int, value: int) -> Cond:
    return bits.eq(_f(w, hi, lo), value, hi - lo + 1)


def _cat(*parts: tuple[BV, int]) -> BV:
    """Concatenate ``(value, width)`` parts, most significant first."""
    out, width = parts[0]
    for value, w in parts[1:]:
        out = bits.concat(out, value, w, width)
        width += w
    return out


def _x(s: State, n: BV) -> BV:
    return read_indexed(s.regs, X_NAMES, n, 5)


def _set_x(s: State, n: BV, value: BV) -> dict[str, BV]:
    return write_indexed(s.regs, X_NAMES, n, 5, value)


# -- immediates (2.3, "C" chapter) -----------------------------------------------------------


def imm_i(w: BV) -> BV:
    """I-immediate, sign-extended: ``inst[31:20]``."""
    return bits.sext(_f(w, 31, 20), 12)


def imm_b(w: BV) -> BV:
    """B-immediate: ``imm[12|10:5|4:1|11] = inst[31|30:25|11:8|7]``, bit 0 zero."""
    return bits.sext(_cat((_f(w, 31, 31), 1), (_f(w, 7, 7), 1), (_f(w, 30, 25), 6),
                          (_f(w, 11, 8), 4), (0, 1)), 13)


def imm_u(w: BV) -> BV:
    """U-immediate: ``inst[31:12]`` followed by twelve zeros, sign-extended (RV64)."""
    return bits.sext(_cat((_f(w, 31, 12), 20), (0, 12)), 32)


def imm_j(w: BV) -> BV:
    """J-immediate: ``imm[20|10:1|11|19:12] = inst[31|30:21|20|19:12]``, bit 0 zero."""
    return bits.sext(_cat((_f(w, 31, 31), 1), (_f(w, 19, 12), 8), (_f(w, 20, 20), 1),
                          (_f(w, 30, 21), 10), (0, 1)), 21)


def imm_cj(h: BV) -> BV:
    """CJ offset: ``offset[11|4|9:8|10|6|7|3:1|5] = inst[12:2]``."""
    return bits.sext(_cat((_f(h, 12, 12), 1), (_f(h, 8, 8), 1), (_f(h, 10, 9), 2),
                          (_f(h, 6, 6), 1), (_f(h, 7, 7), 1), (_f(h, 2, 2), 1),
                          (_f(h, 11, 11), 1), (_f(h, 5, 3), 3), (0, 1)), 12)


def imm_cb(h: BV) -> BV:
    """CB branch offset: ``offset[8|4:3] = inst[12:10]``, ``offset[7:6|2:1|5] = inst[6:2]``."""
    return bits.sext(_cat((_f(h, 12, 12), 1), (_f(h, 6, 5), 2), (_f(h, 2, 2), 1),
                          (_f(h, 11, 10), 2), (_f(h, 4, 3), 2), (0, 1)), 9)


# -- encodings ---------------------------------------------------------------------------------


def enc_jal(w: BV) -> Cond:
    """JAL: opcode ``1101111``."""
    return _is(w, 6, 0, 0b1101111)


def enc_jalr(w: BV) -> Cond:
    """JALR: opcode ``1100111``, funct3 ``000``."""
    return bits.b_and(_is(w, 6, 0, 0b1100111), _is(w, 14, 12, 0))


def enc_auipc(w: BV) -> Cond:
    """AUIPC: opcode ``0010111``."""
    return _is(w, 6, 0, 0b0010111)


def _enc_branch(funct3: int) -> Callable[[BV], Cond]:
    def enc(w: BV) -> Cond:
        """BRANCH: opcode ``1100011`` with the given funct3."""
        return bits.b_and(_is(w, 6, 0, 0b1100011), _is(w, 14, 12, funct3))
    return enc


def enc_c_j(h: BV) -> Cond:
    """C.J: quadrant 1, funct3 ``101``."""
    return bits.b_and(_is(h, 1, 0, 0b01), _is(h, 15, 13, 0b101))


def enc_c_beqz(h: BV) -> Cond:
    """C.BEQZ: quadrant 1, funct3 ``110``."""
    return bits.b_and(_is(h, 1, 0, 0b01), _is(h, 15, 13, 0b110))


def enc_c_bnez(h: BV) -> Cond:
    """C.BNEZ: quadrant 1, funct3 ``111``."""
    return bits.b_and(_is(h, 1, 0, 0b01), _is(h, 15, 13, 0b111))


def enc_c_jr(h: BV) -> Cond:
    """C.JR: quadrant 2, funct4 ``1000``, rs1 != 0, rs2 = 0 (rs2 != 0 is C.MV)."""
    return bits.b_and(_is(h, 1, 0, 0b10), _is(h, 15, 12, 0b1000), _is(h, 6, 2, 0),
                      bits.ne(_f(h, 11, 7), 0, 5))


def enc_c_jalr(h: BV) -> Cond:
    """C.JALR: quadrant 2, funct4 ``1001``, rs1 != 0, rs2 = 0 (rs1 = 0 is C.EBREAK,
    rs2 != 0 is C.ADD)."""
    return bits.b_and(_is(h, 1, 0, 0b10), _is(h, 15, 12, 0b1001), _is(h, 6, 2, 0),
                      bits.ne(_f(h, 11, 7), 0, 5))


# -- semantics -------------------------------------------------------------------------------


def step_jal(s: State, w: BV) -> State:
    """JAL: ``x[rd] = pc + 4; pc += sext(offset)``."""
    return s.evolve(bits.add(s.pc, imm_j(w)), _set_x(s, _f(w, 11, 7), bits.add(s.pc, 4)))


def step_jalr(s: State, w: BV) -> State:
    """JALR: ``t = pc + 4; pc = (x[rs1] + sext(offset)) & ~1; x[rd] = t``."""
    target = bits.and_(bits.add(_x(s, _f(w, 19, 15)), imm_i(w)), bits.not_(1))
    return s.evolve(target, _set_x(s, _f(w, 11, 7), bits.add(s.pc, 4)))


def step_auipc(s: State, w: BV) -> State:
    """AUIPC: ``x[rd] = pc + sext(immediate[31:12] << 12)``."""
    return s.evolve(bits.add(s.pc, 4), _set_x(s, _f(w, 11, 7), bits.add(s.pc, imm_u(w))))


def _taken(funct3: BV, a: BV, b: BV) -> Cond:
    """BEQ 000, BNE 001, BLT 100, BGE 101, BLTU 110, BGEU 111 (010, 011 reserved)."""
    tests: list[Cond] = [bits.eq(a, b), bits.ne(a, b), False, False, bits.slt(a, b),
                         bits.sle(b, a), bits.ult(a, b), bits.ule(b, a)]
    return bits.eq(select(funct3, [bits.ite(t, 1, 0, 1) for t in tests], 1, 3), 1, 1)


def step_branch(s: State, w: BV) -> State:
    """Bcc: ``if (x[rs1] op x[rs2]) pc += sext(offset)`` else ``pc + 4``."""
    taken = _taken(_f(w, 14, 12), _x(s, _f(w, 19, 15)), _x(s, _f(w, 24, 20)))
    return s.evolve(bits.ite(taken, bits.add(s.pc, imm_b(w)), bits.add(s.pc, 4)))


def step_c_j(s: State, h: BV) -> State:
    """C.J: ``pc += sext(offset)``."""
    return s.evolve(bits.add(s.pc, imm_cj(h)))


def step_c_jr(s: State, h: BV) -> State:
    """C.JR: ``pc = x[rs1] & ~1``."""
    return s.evolve(bits.and_(_x(s, _f(h, 11, 7)), bits.not_(1)))


def step_c_jalr(s: State, h: BV) -> State:
    """C.JALR: ``t = pc + 2; pc = x[rs1] & ~1; x[1] = t``."""
    target = bits.and_(_x(s, _f(h, 11, 7)), bits.not_(1))
    return s.evolve(target, {"x1": bits.add(s.pc, 2)})


def step_c_bz(s: State, h: BV) -> State:
    """C.BEQZ (funct3 110) / C.BNEZ (111): branch if ``x[8 + rs1']`` is / is not zero."""
    value = _x(s, bits.concat(0b01, _f(h, 9, 7), 3, 2))
    is_zero = bits.ite(bits.eq(value, 0), 1, 0, 1)
    taken = bits.ne(is_zero, _f(h, 13, 13), 1)
    return s.evolve(bits.ite(taken, bits.add(s.pc, imm_cb(h)), bits.add(s.pc, 2)))


_BRANCHES = {"beq": 0b000, "bne": 0b001, "blt": 0b100, "bge": 0b101, "bltu": 0b110,
             "bgeu": 0b111}

CLASSES: dict[str, ModelClass] = {
    "jal": ModelClass("jal", 32, enc_jal, step_jal, "2.5.1 JAL"),
    "jalr": ModelClass("jalr", 32, enc_jalr, step_jalr, "2.5.1 JALR"),
    "auipc": ModelClass("auipc", 32, enc_auipc, step_auipc, "2.4.1 AUIPC"),
    **{name: ModelClass(name, 32, _enc_branch(f3), step_branch, "2.5.2 conditional branches")
       for name, f3 in _BRANCHES.items()},
    "c_j": ModelClass("c_j", 16, enc_c_j, step_c_j, "C.J"),
    "c_beqz": ModelClass("c_beqz", 16, enc_c_beqz, step_c_bz, "C.BEQZ"),
    "c_bnez": ModelClass("c_bnez", 16, enc_c_bnez, step_c_bz, "C.BNEZ"),
    "c_jr": ModelClass("c_jr", 16, enc_c_jr, step_c_jr, "C.JR"),
    "c_jalr": ModelClass("c_jalr", 16, enc_c_jalr, step_c_jalr, "C.JALR"),
}  # fmt: skip
"""Every modelled class, by the decode table's class name."""


def _enc_system_pc(w: BV) -> Cond:
    """SYSTEM with funct3 ``000``: ECALL, EBREAK, MRET, SRET, WFI, SFENCE.VMA (the traps
    and returns write the PC; ``*EPC`` records it)."""
    return bits.b_and(_is(w, 6, 0, 0b1110011), _is(w, 14, 12, 0))


def _enc_branch_reserved(w: BV) -> Cond:
    """BRANCH with the reserved funct3 ``010``/``011``."""
    return bits.b_and(_is(w, 6, 0, 0b1100011), _is(w, 14, 13, 0b01))


def _enc_c_ebreak(h: BV) -> Cond:
    """C.EBREAK ``1001 00000 00000 10``."""
    return bits.eq(h, 0x9002, 16)


PC_CLASSES: dict[str, tuple[int, Callable[[BV], Cond]]] = {
    **{name: (c.width, c.encoding) for name, c in CLASSES.items()},
    "system_pc": (32, _enc_system_pc),
    "branch_reserved": (32, _enc_branch_reserved),
    "c_ebreak": (16, _enc_c_ebreak),
}
"""``(width, encoding predicate)`` of every class that reads or writes the PC."""
