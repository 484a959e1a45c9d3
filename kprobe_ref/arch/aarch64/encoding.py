"""aarch64 instruction words: bit patterns, field extraction and encoders.

Written from the Arm Architecture Reference Manual for A-profile (DDI 0487), chapter C4
("A64 Instruction Set Encoding") and the encoding diagrams of chapter C6.  Every A64
instruction is one little-endian 32-bit word.  Decode rows are written as the manual's
diagrams are: 32 characters from bit 31 down to bit 0, ``0``/``1`` fixed, ``x`` ignored, any
other letter a field (spaces are for reading only).  The encoders build the instructions
the tests and round-trip properties need; each refuses an offset it cannot encode.  Text
for messages comes from capstone.
"""

from __future__ import annotations

from functools import cache

import capstone

from kprobe_ref.arch import base

__all__ = [
    "BREAK_KPROBE",
    "BREAK_STEP",
    "BREAK_UPROBE",
    "FIELD_NAMES",
    "NOP",
    "compile_pattern",
    "encode_adr",
    "encode_adrp",
    "encode_b",
    "encode_b_cond",
    "encode_bc_cond",
    "encode_bl",
    "encode_blr",
    "encode_br",
    "encode_brk",
    "encode_cbz",
    "encode_ldr_lit",
    "encode_ldr_lit_simd",
    "encode_ldrsw_lit",
    "encode_prfm_lit",
    "encode_ret",
    "encode_tbz",
    "field",
    "pattern_fields",
    "text",
    "to_bytes",
    "word",
]

FIELD_NAMES: dict[str, str] = {
    "i": "imm",
    "c": "cond",
    "t": "rt",
    "n": "rn",
    "d": "rd",
    "s": "sf",
    "b": "b5",
    "e": "b40",
    "h": "immhi",
    "l": "immlo",
}
"""Pattern letter -> field name in :attr:`Decoded.fields`.  ``imm`` is the row's single
immediate field (imm26, imm19, imm14 or imm16, by the row's width)."""


def word(code: bytes) -> int:
    """The instruction word at the start of ``code`` (little-endian)."""
    return int.from_bytes(code[:4], "little")


def to_bytes(w: int) -> bytes:
    """The four bytes of instruction word ``w`` in memory order."""
    return (w & 0xFFFF_FFFF).to_bytes(4, "little")


def field(w: int, hi: int, lo: int) -> int:
    """Bits ``hi`` down to ``lo`` of ``w`` (inclusive), unsigned."""
    return (w >> lo) & ((1 << (hi - lo + 1)) - 1)


def _bits(pattern: str) -> str:
    bits = pattern.replace(" ", "")
    if len(bits) != 32:
        raise ValueError(f"pattern {pattern!r} has {len(bits)} bits, not 32")
    return bits


def compile_pattern(pattern: str) -> tuple[int, int]:
    """``(mask, match)`` of a pattern: a word is in the row when ``w & mask == match``."""
    return base.compile_pattern(_bits(pattern))


@cache
def _field_spans(pattern: str) -> tuple[tuple[str, int, int], ...]:
    """``(name, hi, lo)`` of each lettered field; a letter must mark contiguous bits."""
    bits = _bits(pattern)
    spans: dict[str, list[int]] = {}
    for i, b in enumerate(bits):
        if b not in "01x":
            spans.setdefault(b, []).append(31 - i)
    out = []
    for letter, positions in spans.items():
        hi, lo = positions[0], positions[-1]
        if hi - lo + 1 != len(positions):
            raise ValueError(f"field {letter!r} of {pattern!r} is not contiguous")
        out.append((FIELD_NAMES[letter], hi, lo))
    return tuple(out)


def pattern_fields(pattern: str, w: int) -> dict[str, int]:
    """The raw (unsigned) value of every lettered field of ``pattern`` in word ``w``."""
    return {name: field(w, hi, lo) for name, hi, lo in _field_spans(pattern)}


# -- encoders ---------------------------------------------------------------------------------

NOP = 0xD503_201F


def encode_brk(imm16: int) -> int:
    """``BRK #imm16``."""
    return 0xD420_0000 | (imm16 & 0xFFFF) << 5


BREAK_KPROBE = to_bytes(encode_brk(4))
"""Linux ``KPROBES_BRK_IMM``: the breakpoint written over a kprobed instruction."""
BREAK_UPROBE = to_bytes(encode_brk(5))
"""Linux ``UPROBES_BRK_IMM``: the breakpoint written over a uprobed instruction."""
BREAK_STEP = to_bytes(encode_brk(6))
"""Linux ``KPROBES_BRK_SS_IMM``: ends an out-of-line step; also the return trampoline."""


def _offset(offset: int, bits: int, scale: int) -> int:
    """The ``bits``-wide field holding byte ``offset`` in units of ``scale``."""
    if offset % scale:
        raise ValueError(f"offset {offset:#x} is not a multiple of {scale}")
    units = offset // scale
    if not -(1 << (bits - 1)) <= units < (1 << (bits - 1)):
        raise ValueError(f"offset {offset:#x} does not fit in {bits} bits of {scale}-byte units")
    return units & ((1 << bits) - 1)


def encode_b(offset: int) -> int:
    """``B label`` with ``label = PC + offset`` (offset within +-128 MiB)."""
    return 0x1400_0000 | _offset(offset, 26, 4)


def encode_bl(offset: int) -> int:
    """``BL label``."""
    return 0x9400_0000 | _offset(offset, 26, 4)


def encode_b_cond(cond: int, offset: int) -> int:
    """``B.cond label`` (offset within +-1 MiB)."""
    return 0x5400_0000 | _offset(offset, 19, 4) << 5 | (cond & 0xF)


def encode_bc_cond(cond: int, offset: int) -> int:
    """``BC.cond label`` (FEAT_HBC)."""
    return encode_b_cond(cond, offset) | 0x10


def encode_cbz(rt: int, offset: int, sf: int = 1, nonzero: bool = False) -> int:
    """``CBZ``/``CBNZ`` ``Wt|Xt, label``."""
    return (sf & 1) << 31 | 0x3400_0000 | int(nonzero) << 24 | _offset(offset, 19, 4) << 5 | rt


def encode_tbz(rt: int, bit: int, offset: int, nonzero: bool = False) -> int:
    """``TBZ``/``TBNZ`` ``Rt, #bit, label`` (offset within +-32 KiB)."""
    return (
        ((bit >> 5) & 1) << 31
        | 0x3600_0000
        | int(nonzero) << 24
        | (bit & 0x1F) << 19
        | (_offset(offset, 14, 4) << 5)
        | rt
    )


def encode_br(rn: int) -> int:
    """``BR Xn``."""
    return 0xD61F_0000 | rn << 5


def encode_blr(rn: int) -> int:
    """``BLR Xn``."""
    return 0xD63F_0000 | rn << 5


def encode_ret(rn: int = 30) -> int:
    """``RET Xn``."""
    return 0xD65F_0000 | rn << 5


def _adr(op: int, rd: int, imm21: int) -> int:
    return op << 31 | (imm21 & 3) << 29 | 0x1000_0000 | (imm21 >> 2) << 5 | rd


def encode_adr(rd: int, offset: int) -> int:
    """``ADR Xd, PC + offset`` (offset within +-1 MiB)."""
    return _adr(0, rd, _offset(offset, 21, 1))


def encode_adrp(rd: int, page_offset: int) -> int:
    """``ADRP Xd, page(PC) + page_offset`` (a multiple of 4 KiB within +-4 GiB)."""
    return _adr(1, rd, _offset(page_offset, 21, 4096))


def encode_ldr_lit(rt: int, offset: int, size: int = 8) -> int:
    """``LDR Wt|Xt, label`` (``size`` 4 or 8)."""
    opc = {4: 0, 8: 1}[size]
    return opc << 30 | 0x1800_0000 | _offset(offset, 19, 4) << 5 | rt


def encode_ldrsw_lit(rt: int, offset: int) -> int:
    """``LDRSW Xt, label``."""
    return 0x9800_0000 | _offset(offset, 19, 4) << 5 | rt


def encode_prfm_lit(prfop: int, offset: int) -> int:
    """``PRFM prfop, label``."""
    return 0xD800_0000 | _offset(offset, 19, 4) << 5 | prfop


def encode_ldr_lit_simd(vt: int, offset: int, size: int = 16) -> int:
    """``LDR St|Dt|Qt, label`` (``size`` 4, 8 or 16)."""
    opc = {4: 0, 8: 1, 16: 2}[size]
    return opc << 30 | 0x1C00_0000 | _offset(offset, 19, 4) << 5 | vt


# -- text ---------------------------------------------------------------------------------------


@cache
def _capstone() -> capstone.Cs:
    return capstone.Cs(capstone.CS_ARCH_ARM64, capstone.CS_MODE_ARM)


def text(w: int, addr: int) -> str:
    """Assembly text of ``w`` at ``addr`` (``.inst 0x...`` when capstone cannot decode it)."""
    for insn in _capstone().disasm(to_bytes(w), addr):
        return f"{insn.mnemonic} {insn.op_str}".strip()
    return f".inst {w:#010x}"
