"""riscv64 instruction formats: length, register and immediate fields, and encoders.

Written from the RISC-V Unprivileged ISA manual, chapter 2.2-2.3 (base formats R/I/S/B/U/J
and their immediates), chapter 1.5 (instruction-length encoding) and the "C" chapter
(compressed formats CR/CI/CSS/CIW/CL/CS/CA/CB/CJ).  Immediate extractors return the
*assembled* immediate as an unsigned value of the format's width (bit 0 included, always 0
where the format has no bit 0); rules sign-extend it with :func:`kprobe_ref.bits.sext`.
Encoders are the exact inverses, for tests and round-trip properties.
"""

from __future__ import annotations

from kprobe_ref.bits import concrete, extract, to_signed

__all__ = [
    "BREAK_KPROBE", "BREAK_KPROBE_16", "BREAK_STEP", "BREAK_UPROBE",
    "B_WIDTH", "CB_WIDTH", "CI_WIDTH", "CJ_WIDTH", "C_EBREAK", "EBREAK", "I_WIDTH", "J_WIDTH",
    "S_WIDTH", "U_WIDTH",
    "c_imm_b", "c_imm_i", "c_imm_j", "c_rs1", "c_rs1_prime", "c_rs2",
    "encode_auipc", "encode_branch", "encode_c_beqz", "encode_c_bnez", "encode_c_j",
    "encode_c_jalr", "encode_c_jr", "encode_i", "encode_jal", "encode_jalr", "encode_lr",
    "encode_sc", "funct3", "imm_b", "imm_i", "imm_j", "imm_s", "imm_u", "length", "opcode",
    "rd", "rs1", "rs2", "signed", "word",
]  # fmt: skip

EBREAK = (0x0010_0073).to_bytes(4, "little")
"""``ebreak``: SYSTEM, funct12 = 1."""
C_EBREAK = (0x9002).to_bytes(2, "little")
"""``c.ebreak``: quadrant 2, funct4 = 1001, rs1 = rs2 = 0."""
BREAK_KPROBE = BREAK_UPROBE = BREAK_STEP = EBREAK
"""The breakpoints by role: a probe over a 32-bit instruction, a uprobe, the end of a step
(and the trampoline)."""
BREAK_KPROBE_16 = C_EBREAK
"""A probe over a 16-bit instruction, which a 4-byte breakpoint would overrun."""

I_WIDTH = S_WIDTH = 12
B_WIDTH = 13
U_WIDTH = 32
J_WIDTH = 21
CJ_WIDTH = 12
CB_WIDTH = 9
CI_WIDTH = 6
"""Width of each format's assembled immediate (the sign bit is the top one)."""


def _f(w: int, hi: int, lo: int) -> int:
    return concrete(extract(w, hi, lo))


def length(code: bytes) -> int:
    """Length of the instruction at the start of ``code``: 2 when bits [1:0] != 11, 4 when
    bits [4:2] != 111 as well; 0 for the 48-bit-and-longer encodings (none is ratified) or
    when ``code`` is too short."""
    if len(code) < 2:
        return 0
    low = code[0]
    if low & 0b11 != 0b11:
        return 2
    if (low >> 2) & 0b111 != 0b111 and len(code) >= 4:
        return 4
    return 0


def word(code: bytes) -> int:
    """The instruction at the start of ``code`` as an integer of its own length."""
    return int.from_bytes(code[: length(code)], "little")


# -- 32-bit formats ----------------------------------------------------------------------------


def opcode(w: int) -> int:
    """Bits [6:0]."""
    return _f(w, 6, 0)


def rd(w: int) -> int:
    """Bits [11:7]."""
    return _f(w, 11, 7)


def funct3(w: int) -> int:
    """Bits [14:12]."""
    return _f(w, 14, 12)


def rs1(w: int) -> int:
    """Bits [19:15]."""
    return _f(w, 19, 15)


def rs2(w: int) -> int:
    """Bits [24:20]."""
    return _f(w, 24, 20)


def imm_i(w: int) -> int:
    """I-type: imm[11:0] = inst[31:20]."""
    return _f(w, 31, 20)


def imm_s(w: int) -> int:
    """S-type: imm[11:5] = inst[31:25], imm[4:0] = inst[11:7]."""
    return _f(w, 31, 25) << 5 | _f(w, 11, 7)


def imm_b(w: int) -> int:
    """B-type: imm[12|10:5] = inst[31|30:25], imm[4:1|11] = inst[11:8|7]."""
    return _f(w, 31, 31) << 12 | _f(w, 7, 7) << 11 | _f(w, 30, 25) << 5 | _f(w, 11, 8) << 1


def imm_u(w: int) -> int:
    """U-type: imm[31:12] = inst[31:12], imm[11:0] = 0."""
    return _f(w, 31, 12) << 12


def imm_j(w: int) -> int:
    """J-type: imm[20|10:1|11|19:12] = inst[31|30:21|20|19:12]."""
    return _f(w, 31, 31) << 20 | _f(w, 19, 12) << 12 | _f(w, 20, 20) << 11 | _f(w, 30, 21) << 1


# -- compressed formats -------------------------------------------------------------------------


def c_rs1(h: int) -> int:
    """CR/CI: rs1 (= rd) in bits [11:7]."""
    return _f(h, 11, 7)


def c_rs2(h: int) -> int:
    """CR/CSS: rs2 in bits [6:2]."""
    return _f(h, 6, 2)


def c_rs1_prime(h: int) -> int:
    """CB/CL/CS: rs1' in bits [9:7], naming x8..x15."""
    return 8 + _f(h, 9, 7)


def c_imm_i(h: int) -> int:
    """CI: imm[5] = inst[12], imm[4:0] = inst[6:2]."""
    return _f(h, 12, 12) << 5 | _f(h, 6, 2)


def c_imm_j(h: int) -> int:
    """CJ: imm[11|4|9:8|10|6|7|3:1|5] = inst[12:2]."""
    return (_f(h, 12, 12) << 11 | _f(h, 8, 8) << 10 | _f(h, 10, 9) << 8 | _f(h, 6, 6) << 7
            | _f(h, 7, 7) << 6 | _f(h, 2, 2) << 5 | _f(h, 11, 11) << 4 | _f(h, 5, 3) << 1)


def c_imm_b(h: int) -> int:
    """CB (branches): imm[8|4:3] = inst[12:10], imm[7:6|2:1|5] = inst[6:2]."""
    return (_f(h, 12, 12) << 8 | _f(h, 6, 5) << 6 | _f(h, 2, 2) << 5 | _f(h, 11, 10) << 3
            | _f(h, 4, 3) << 1)


# -- encoders ----------------------------------------------------------------------------------


def _imm(value: int, width: int, what: str, align: int = 1) -> int:
    """Check that signed ``value`` fits ``width`` bits and is ``align``-aligned."""
    if not -(1 << (width - 1)) <= value < (1 << (width - 1)) or value % align:
        raise ValueError(f"{what} offset {value} does not fit {width} bits (align {align})")
    return value & ((1 << width) - 1)


def _reg(n: int) -> int:
    if not 0 <= n < 32:
        raise ValueError(f"no register x{n}")
    return n


def _b4(w: int) -> bytes:
    return w.to_bytes(4, "little")


def _b2(h: int) -> bytes:
    return h.to_bytes(2, "little")


def encode_i(op: int, f3: int, rd_: int, rs1_: int, imm: int) -> bytes:
    """Any I-type instruction (``addi`` is ``encode_i(0x13, 0, rd, rs1, imm)``)."""
    i = _imm(imm, I_WIDTH, "I-type")
    return _b4(i << 20 | _reg(rs1_) << 15 | f3 << 12 | _reg(rd_) << 7 | op)


def encode_jalr(rd_: int, rs1_: int, imm: int) -> bytes:
    """``jalr rd, imm(rs1)``."""
    return encode_i(0b1100111, 0, rd_, rs1_, imm)


def encode_jal(rd_: int, offset: int) -> bytes:
    """``jal rd, offset`` (offset relative to the instruction, +-1 MiB, even)."""
    i = _imm(offset, J_WIDTH, "jal", 2)
    body = (_f(i, 20, 20) << 31 | _f(i, 10, 1) << 21 | _f(i, 11, 11) << 20
            | _f(i, 19, 12) << 12)
    return _b4(body | _reg(rd_) << 7 | 0b1101111)


def encode_branch(f3: int, rs1_: int, rs2_: int, offset: int) -> bytes:
    """A conditional branch (funct3 000 beq, 001 bne, 100 blt, 101 bge, 110 bltu, 111 bgeu;
    010 and 011 are reserved but encodable for tests)."""
    i = _imm(offset, B_WIDTH, "branch", 2)
    body = (_f(i, 12, 12) << 31 | _f(i, 10, 5) << 25 | _f(i, 4, 1) << 8
            | _f(i, 11, 11) << 7)
    return _b4(body | _reg(rs2_) << 20 | _reg(rs1_) << 15 | f3 << 12 | 0b1100011)


def encode_auipc(rd_: int, imm20: int) -> bytes:
    """``auipc rd, imm20`` (``rd = pc + sext(imm20 << 12)``); ``imm20`` is the raw field."""
    if not 0 <= imm20 < 1 << 20:
        raise ValueError(f"auipc immediate {imm20:#x} is not a 20-bit field")
    return _b4(imm20 << 12 | _reg(rd_) << 7 | 0b0010111)


def _amo(funct5: int, f3: int, rd_: int, rs1_: int, rs2_: int) -> bytes:
    return _b4(funct5 << 27 | _reg(rs2_) << 20 | _reg(rs1_) << 15 | f3 << 12 | _reg(rd_) << 7
               | 0b0101111)


def encode_lr(rd_: int, rs1_: int, double: bool = True) -> bytes:
    """``lr.d rd, (rs1)`` (``lr.w`` when ``double`` is false)."""
    return _amo(0b00010, 0b011 if double else 0b010, rd_, rs1_, 0)


def encode_sc(rd_: int, rs2_: int, rs1_: int, double: bool = True) -> bytes:
    """``sc.d rd, rs2, (rs1)`` (``sc.w`` when ``double`` is false)."""
    return _amo(0b00011, 0b011 if double else 0b010, rd_, rs1_, rs2_)


def encode_c_j(offset: int) -> bytes:
    """``c.j offset`` (+-2 KiB, even)."""
    i = _imm(offset, CJ_WIDTH, "c.j", 2)
    body = (_f(i, 11, 11) << 12 | _f(i, 4, 4) << 11 | _f(i, 9, 8) << 9
            | _f(i, 10, 10) << 8 | _f(i, 6, 6) << 7 | _f(i, 7, 7) << 6
            | _f(i, 3, 1) << 3 | _f(i, 5, 5) << 2)
    return _b2(0b101 << 13 | body | 0b01)


def _c_cr(funct4: int, rs1_: int) -> bytes:
    if _reg(rs1_) == 0:
        raise ValueError("c.jr/c.jalr need rs1 != x0 (that encoding is reserved / c.ebreak)")
    return _b2(funct4 << 12 | rs1_ << 7 | 0b10)


def encode_c_jr(rs1_: int) -> bytes:
    """``c.jr rs1`` (rs1 != x0)."""
    return _c_cr(0b1000, rs1_)


def encode_c_jalr(rs1_: int) -> bytes:
    """``c.jalr rs1`` (rs1 != x0)."""
    return _c_cr(0b1001, rs1_)


def _c_branch(f3: int, rs1_: int, offset: int) -> bytes:
    if not 8 <= rs1_ < 16:
        raise ValueError(f"c.beqz/c.bnez take x8..x15, not x{rs1_}")
    i = _imm(offset, CB_WIDTH, "c.beqz/c.bnez", 2)
    body = (_f(i, 8, 8) << 12 | _f(i, 4, 3) << 10 | _f(i, 7, 6) << 5
            | _f(i, 2, 1) << 3 | _f(i, 5, 5) << 2)
    return _b2(f3 << 13 | body | (rs1_ - 8) << 7 | 0b01)


def encode_c_beqz(rs1_: int, offset: int) -> bytes:
    """``c.beqz rs1', offset`` (rs1' in x8..x15, +-256 bytes, even)."""
    return _c_branch(0b110, rs1_, offset)


def encode_c_bnez(rs1_: int, offset: int) -> bytes:
    """``c.bnez rs1', offset``."""
    return _c_branch(0b111, rs1_, offset)


def signed(value: int, width: int) -> int:
    """An assembled immediate of ``width`` bits as a signed Python integer."""
    return to_signed(value, width)
