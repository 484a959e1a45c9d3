"""loongarch64 instruction formats: register and immediate fields, and encoders.

Written from the LoongArch Reference Manual, volume 1 (v1.10), chapter 1.2 (instruction
formats 2R/3R/2RI12/2RI14/2RI16/1RI21/I26/1RI20) and the encoding tables of its appendix
B.  Every instruction is one little-endian 32-bit word.  Register fields: ``rd`` bits
4..0, ``rj`` 9..5, ``rk`` 14..10; ``cj`` (an FP condition flag) bits 7..5.  Immediate
extractors return the *assembled* byte offset or addend as an unsigned value of the
format's width (the manual's ``{offs, 2'b0}``, ``{si20, 12'b0}``...); rules sign-extend it
with :func:`kprobe_ref.bits.sext`.  Encoders are the exact inverses, for tests.
"""

from __future__ import annotations

from kprobe_ref.bits import concrete, extract

__all__ = [
    "BREAK_KPROBE", "BREAK_STEP", "BREAK_UPROBE", "BREAK_UPROBE_STEP",
    "I16_WIDTH", "I21_WIDTH", "I26_WIDTH", "NOP", "PCADDI_WIDTH", "PCADDU12I_WIDTH",
    "PCADDU18I_WIDTH",
    "cj", "encode_2ri12", "encode_3r", "encode_am", "encode_b", "encode_bceqz",
    "encode_bcnez", "encode_beqz", "encode_bl", "encode_bnez", "encode_branch",
    "encode_break", "encode_jirl", "encode_ll_sc", "encode_pc_rel", "imm_i16", "imm_i21",
    "imm_i26", "imm_si20", "rd", "rj", "rk", "word",
]  # fmt: skip

I16_WIDTH = 18
"""Width of ``{offs16, 2'b0}`` (BEQ..BGEU, JIRL)."""
I21_WIDTH = 23
"""Width of ``{offs21, 2'b0}`` (BEQZ, BNEZ, BCEQZ, BCNEZ)."""
I26_WIDTH = 28
"""Width of ``{offs26, 2'b0}`` (B, BL)."""
PCADDI_WIDTH = 22
"""Width of ``{si20, 2'b0}``."""
PCADDU12I_WIDTH = 32
"""Width of ``{si20, 12'b0}`` (PCADDU12I, and PCALAU12I before its low 12 bits clear)."""
PCADDU18I_WIDTH = 38
"""Width of ``{si20, 18'b0}``."""

PC_REL_OPCODES: dict[str, int] = {"pcaddi": 0b0001100, "pcalau12i": 0b0001101,
                                  "pcaddu12i": 0b0001110, "pcaddu18i": 0b0001111}
"""Bits 31..25 of the 1RI20 PC-relative instructions."""
PC_REL_SHIFT: dict[str, int] = {"pcaddi": 2, "pcalau12i": 12, "pcaddu12i": 12, "pcaddu18i": 18}
"""How far each shifts its ``si20`` left."""
BRANCH_OPCODES: dict[str, int] = {"beq": 0b010110, "bne": 0b010111, "blt": 0b011000,
                                  "bge": 0b011001, "bltu": 0b011010, "bgeu": 0b011011}
"""Bits 31..26 of the two-register conditional branches."""


def encode_break(code: int) -> bytes:
    """``break code``: ``0000 0000 0010 1010 0`` then a 15-bit code."""
    return (0x002A_0000 | (code & 0x7FFF)).to_bytes(4, "little")


BREAK_KPROBE = encode_break(10)
"""``break 10`` (Linux ``BRK_KPROBE_BP``): written over a kprobed word."""
BREAK_STEP = encode_break(11)
"""``break 11`` (``BRK_KPROBE_SSTEPBP``): ends a kernel step; the kernel trampoline."""
BREAK_UPROBE = encode_break(12)
"""``break 12`` (``BRK_UPROBE_BP``): written over a uprobed word."""
BREAK_UPROBE_STEP = encode_break(13)
"""``break 13`` (``BRK_UPROBE_XOLBP``): ends a user step; the user trampoline."""
NOP = (0x0340_0000).to_bytes(4, "little")
"""``nop`` = ``andi $zero, $zero, 0``."""


def _f(w: int, hi: int, lo: int) -> int:
    return concrete(extract(w, hi, lo))


def word(code: bytes) -> int:
    """The 32-bit instruction word at the start of ``code``."""
    return int.from_bytes(code[:4], "little")


def rd(w: int) -> int:
    """Bits 4..0."""
    return _f(w, 4, 0)


def rj(w: int) -> int:
    """Bits 9..5."""
    return _f(w, 9, 5)


def rk(w: int) -> int:
    """Bits 14..10."""
    return _f(w, 14, 10)


def cj(w: int) -> int:
    """Bits 7..5: the condition flag of BCEQZ/BCNEZ."""
    return _f(w, 7, 5)


def imm_si20(w: int, shift: int) -> int:
    """1RI20: ``si20`` = bits 24..5, shifted left by ``shift``."""
    return _f(w, 24, 5) << shift


def imm_i16(w: int) -> int:
    """2RI16: ``{offs[15:0], 2'b0}`` with offs[15:0] = bits 25..10."""
    return _f(w, 25, 10) << 2


def imm_i21(w: int) -> int:
    """1RI21: ``{offs[20:16], offs[15:0], 2'b0}``, offs[15:0] = bits 25..10,
    offs[20:16] = bits 4..0."""
    return (_f(w, 4, 0) << 16 | _f(w, 25, 10)) << 2


def imm_i26(w: int) -> int:
    """I26: ``{offs[25:16], offs[15:0], 2'b0}``, offs[15:0] = bits 25..10,
    offs[25:16] = bits 9..0."""
    return (_f(w, 9, 0) << 16 | _f(w, 25, 10)) << 2


# -- encoders ------------------------------------------------------------------------------------


def _le(w: int) -> bytes:
    return (w & 0xFFFF_FFFF).to_bytes(4, "little")


def _words(offset: int, bits: int) -> int:
    """A byte offset as a ``bits``-wide word count; it must be 4-aligned and in range."""
    if offset % 4 or not -(1 << (bits + 1)) <= offset < 1 << (bits + 1):
        raise ValueError(f"offset {offset} does not fit {bits} bits of words")
    return (offset >> 2) & ((1 << bits) - 1)


def encode_pc_rel(klass: str, rd_: int, si20: int) -> bytes:
    """PCADDI / PCALAU12I / PCADDU12I / PCADDU18I ``rd, si20`` (si20 taken modulo 2**20)."""
    return _le(PC_REL_OPCODES[klass] << 25 | (si20 & 0xF_FFFF) << 5 | rd_)


def encode_b(offset: int) -> bytes:
    """``b offset`` (bytes, a multiple of 4 within +-128 MiB)."""
    o = _words(offset, 26)
    return _le(0b010100 << 26 | (o & 0xFFFF) << 10 | o >> 16)


def encode_bl(offset: int) -> bytes:
    """``bl offset``: links in ``ra``."""
    o = _words(offset, 26)
    return _le(0b010101 << 26 | (o & 0xFFFF) << 10 | o >> 16)


def _i21(op: int, mid: int, offset: int) -> bytes:
    o = _words(offset, 21)
    return _le(op << 26 | (o & 0xFFFF) << 10 | mid << 5 | o >> 16)


def encode_beqz(rj_: int, offset: int) -> bytes:
    """``beqz rj, offset`` (within +-4 MiB)."""
    return _i21(0b010000, rj_, offset)


def encode_bnez(rj_: int, offset: int) -> bytes:
    """``bnez rj, offset``."""
    return _i21(0b010001, rj_, offset)


def encode_bceqz(cj_: int, offset: int) -> bytes:
    """``bceqz $fcc<cj>, offset``: bits 9..8 are 00."""
    return _i21(0b010010, cj_, offset)


def encode_bcnez(cj_: int, offset: int) -> bytes:
    """``bcnez $fcc<cj>, offset``: bits 9..8 are 01."""
    return _i21(0b010010, 0b01000 | cj_, offset)


def encode_jirl(rd_: int, rj_: int, offset: int) -> bytes:
    """``jirl rd, rj, offset`` (offset in bytes, within +-128 KiB)."""
    return _le(0b010011 << 26 | _words(offset, 16) << 10 | rj_ << 5 | rd_)


def encode_branch(klass: str, rj_: int, rd_: int, offset: int) -> bytes:
    """``beq``/``bne``/``blt``/``bge``/``bltu``/``bgeu rj, rd, offset``."""
    return _le(BRANCH_OPCODES[klass] << 26 | _words(offset, 16) << 10 | rj_ << 5 | rd_)


def encode_3r(opcode17: int, rd_: int, rj_: int, rk_: int) -> bytes:
    """A 3R-format word: bits 31..15 ``opcode17``."""
    return _le(opcode17 << 15 | rk_ << 10 | rj_ << 5 | rd_)


def encode_2ri12(opcode10: int, rd_: int, rj_: int, si12: int) -> bytes:
    """A 2RI12-format word (``addi.d`` is 0b0000001011, ``ld.d`` 0b0010100011...)."""
    return _le(opcode10 << 22 | (si12 & 0xFFF) << 10 | rj_ << 5 | rd_)


def encode_ll_sc(klass: str, rd_: int, rj_: int, si14: int = 0) -> bytes:
    """``ll.w``/``sc.w``/``ll.d``/``sc.d rd, rj, si14`` (si14 in words)."""
    op = {"ll.w": 0b00100000, "sc.w": 0b00100001, "ll.d": 0b00100010, "sc.d": 0b00100011}
    return _le(op[klass] << 24 | (si14 & 0x3FFF) << 10 | rj_ << 5 | rd_)


def encode_am(opcode17: int, rd_: int, rk_: int, rj_: int) -> bytes:
    """An AM* word ``am<op> rd, rk, rj`` (``amswap.w`` is 0x70C0, ``amadd.d`` 0x70C3...)."""
    return encode_3r(opcode17, rd_, rj_, rk_)
