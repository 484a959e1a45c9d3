"""x86_64 instruction structure: prefixes, opcode maps, ModRM, operands, and encoders.

Written from the Intel SDM Vol. 2, chapter 2 (instruction format) and appendix A (opcode
maps).  Lengths, operand decoding and the position of the displacement come from capstone;
this module parses the prefix and opcode bytes itself, so that decode rows can be keyed by
(opcode map, opcode byte, ModRM.reg) exactly as the SDM's tables are, and it cross-checks
capstone's displacement against the bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import capstone
from capstone import x86 as csx86

from kprobe_ref.arch.x86_64.regs import GPR_BY_NUMBER

__all__ = [
    "BASE_NONE",
    "BASE_RIP",
    "BREAK_KPROBE",
    "BREAK_STEP",
    "BREAK_UPROBE",
    "INT3",
    "LEGACY_PREFIXES",
    "MAP_0F",
    "MAP_0F3A",
    "MAP_0F38",
    "MAP_1BYTE",
    "MAP_VEX",
    "REX_PREFIXES",
    "Insn",
    "MemOperand",
    "encode_call_rel32",
    "encode_jcc_rel32",
    "encode_jmp_rel32",
    "opcode_position",
    "parse",
    "sdm_length",
]

LEGACY_PREFIXES = frozenset({0xF0, 0xF2, 0xF3, 0x2E, 0x36, 0x3E, 0x26, 0x64, 0x65, 0x66, 0x67})
REX_PREFIXES = frozenset(range(0x40, 0x50))
"""REX bytes.  In 64-bit mode a REX prefix counts only when it immediately precedes the
opcode (or the ``0F`` escape); one followed by any other prefix is ignored (SDM Vol. 2,
2.2.1), so the prefix area is any mix of legacy and REX bytes and only its last byte can be
the instruction's REX."""
MAP_1BYTE, MAP_0F, MAP_0F38, MAP_0F3A, MAP_VEX = "1byte", "0f", "0f38", "0f3a", "vex"
BASE_RIP = 16
"""Memory-operand base number meaning RIP-relative."""
BASE_NONE = 17
"""Memory-operand base or index number meaning absent."""
INT3 = b"\xcc"
BREAK_KPROBE = BREAK_UPROBE = BREAK_STEP = INT3
"""The breakpoints by role: a probe, a uprobe, the end of a step (and the trampoline)."""


@dataclass(frozen=True)
class MemOperand:
    """An explicit memory operand: ``seg:[base + index*scale + disp]``."""

    base: int
    index: int
    scale: int
    disp: int
    """The displacement as an unsigned 32-bit field value (sign-extended when used)."""
    segment: str | None


@dataclass(frozen=True)
class Insn:
    """One x86_64 instruction's structure."""

    raw: bytes
    text: str
    prefixes: frozenset[int]
    """The legacy prefixes present, wherever they stand in the prefix area."""
    rex: int
    """The effective REX byte (the last prefix byte, if it is a REX), else 0."""
    prefix_bytes: bytes
    """The whole prefix area in order: legacy and REX bytes, ignored REX bytes included."""
    opmap: str
    opcode: int
    modrm: int | None
    """The byte after the opcode: the ModRM byte for opcodes that have one."""
    mem: MemOperand | None
    disp_offset: int | None
    """Byte offset of a RIP-relative disp32, or ``None`` when the operand is not RIP-relative."""
    imm_offset: int
    reg_operand: int | None
    """Register number of a sole register operand (``call rax``), else ``None``."""
    transfers_control: bool = False
    """capstone counts it a jump, call, return or interrupt, or it reads or writes RIP
    implicitly: a safety net under the decode table, which must never step such a thing."""

    @property
    def modrm_rm_register(self) -> int | None:
        """The general register ModRM.rm names in the register form (mod 11), extended by
        the effective REX.B; ``None`` for the memory forms."""
        if self.modrm is None or self.modrm >> 6 != 3:
            return None
        return (self.modrm & 7) | (8 if self.rex & 1 else 0)

    @property
    def length(self) -> int:
        return len(self.raw)

    @property
    def modrm_reg(self) -> int | None:
        return None if self.modrm is None else (self.modrm >> 3) & 7

    @property
    def modrm_mod(self) -> int | None:
        return None if self.modrm is None else self.modrm >> 6


@lru_cache(maxsize=1)
def _capstone() -> capstone.Cs:
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    md.detail = True
    return md


def _reg_number(cs_reg: int) -> int:
    if cs_reg == 0:
        return BASE_NONE
    if cs_reg in (csx86.X86_REG_RIP, csx86.X86_REG_EIP):
        return BASE_RIP  # EIP-relative (0x67): the same field, the address taken mod 2**32
    name = _capstone().reg_name(cs_reg)
    if name in GPR_BY_NUMBER:
        return GPR_BY_NUMBER.index(name)
    return -1  # a register the rules do not use as an address (a 32-bit one, say)


def _prefix_area(code: bytes) -> int:
    """Length of the prefix area: the longest run of legacy and REX bytes at the start."""
    i = 0
    while i < len(code) and (code[i] in LEGACY_PREFIXES or code[i] in REX_PREFIXES):
        i += 1
    return i


def _opcode_position(code: bytes) -> tuple[frozenset[int], int, str, int]:
    """Skip prefixes; return (legacy prefixes, effective REX, opcode map, offset of the
    opcode byte).  VEX, EVEX and XOP escapes carry their own map: they are keyed as
    ``MAP_VEX`` with the opcode byte after their payload."""
    i = _prefix_area(code)
    prefixes = frozenset(b for b in code[:i] if b in LEGACY_PREFIXES)
    rex = code[i - 1] if i > 0 and code[i - 1] in REX_PREFIXES else 0
    lead = code[i] if i < len(code) else -1
    nxt = code[i + 1] if i + 1 < len(code) else 0
    if lead == 0xC5:
        return prefixes, rex, MAP_VEX, i + 2
    if lead == 0xC4 or (lead == 0x8F and nxt & 0x1F >= 8):
        return prefixes, rex, MAP_VEX, i + 3
    if lead == 0x62:
        return prefixes, rex, MAP_VEX, i + 4
    if lead == 0x0F and nxt in (0x38, 0x3A):
        return prefixes, rex, MAP_0F38 if nxt == 0x38 else MAP_0F3A, i + 2
    if lead == 0x0F:
        return prefixes, rex, MAP_0F, i + 1
    return prefixes, rex, MAP_1BYTE, i


def _mem_operand(ins: capstone.CsInsn) -> MemOperand | None:
    for op in ins.operands:
        if op.type == csx86.X86_OP_MEM:
            seg = _capstone().reg_name(op.mem.segment) if op.mem.segment else None
            return MemOperand(
                base=_reg_number(op.mem.base),
                index=_reg_number(op.mem.index),
                scale=op.mem.scale,
                disp=op.mem.disp & 0xFFFF_FFFF,
                segment=seg,
            )
    return None


def _sole_register(ins: capstone.CsInsn) -> int | None:
    ops = list(ins.operands)
    if len(ops) == 1 and ops[0].type == csx86.X86_OP_REG:
        return _reg_number(ops[0].reg)
    return None


def _rip_disp_offset(ins: capstone.CsInsn, raw: bytes, mem: MemOperand | None) -> int | None:
    """Locate a RIP-relative disp32 and check that the bytes there hold capstone's value."""
    if mem is None or mem.base != BASE_RIP:
        return None
    off = int(ins.disp_offset)
    field = int.from_bytes(raw[off : off + 4], "little")
    if off <= 0 or off + 4 > len(raw) or field != mem.disp:
        raise ValueError(f"capstone's displacement for {raw.hex()} is not at offset {off}")
    return off


_CONTROL_GROUPS = frozenset({
    capstone.CS_GRP_JUMP, capstone.CS_GRP_CALL, capstone.CS_GRP_RET, capstone.CS_GRP_INT,
    capstone.CS_GRP_IRET, capstone.CS_GRP_BRANCH_RELATIVE,
})  # fmt: skip


def _transfers_control(ins: capstone.CsInsn) -> bool:
    if _CONTROL_GROUPS.intersection(ins.groups):
        return True
    return csx86.X86_REG_RIP in ins.regs_read or csx86.X86_REG_RIP in ins.regs_write
def opcode_position(raw: bytes) -> tuple[frozenset[int], int, str, int]:
    """The legacy prefixes, REX byte, opcode map and offset of the opcode byte of an
    instruction."""
    return _opcode_position(raw)


def _modrm_length(code: bytes, at: int) -> int:
    """Bytes taken by the ModRM byte at ``code[at]`` with its SIB and displacement (64-bit
    addressing); 0 when ``code`` ends first."""
    if at >= len(code):
        return 0
    modrm = code[at]
    mod, rm = modrm >> 6, modrm & 7
    n = 1
    if mod != 3 and rm == 4:
        if at + 1 >= len(code):
            return 0
        n += 1
        if mod == 0 and code[at + 1] & 7 == 5:
            n += 4
    if mod == 0 and rm == 5:
        n += 4
    n += {1: 1, 2: 4}.get(mod, 0)
    return n if at + n <= len(code) else 0


def sdm_length(code: bytes, cs_length: int) -> int:
    """The length of the instruction at the start of ``code`` given capstone's length:
    capstone decodes UD1 (``0F B9``) and UD0 (``0F FF``) without operands, but the SDM
    (Vol. 2B, "UD") gives both a ModRM operand, as binutils and Linux's own decoder do (Linux
    uses ``ud1 %esp, %ecx``, ``0F B9 CC``, in static-call trampolines).  0 when ``code``
    ends inside the ModRM operand."""
    _prefixes, _rex, opmap, at = _opcode_position(code[:cs_length])
    if opmap != MAP_0F or at >= cs_length or code[at] not in (0xB9, 0xFF) or \
            cs_length != at + 1:
        return cs_length
    tail = _modrm_length(code, at + 1)
    return at + 1 + tail if tail else 0


def parse(code: bytes, addr: int) -> Insn | None:
    """Decode the instruction at the start of ``code``; ``None`` if it is not valid x86_64."""
    ins = next(_capstone().disasm(code[:15], addr, count=1), None)
    if ins is None:
        return None
    raw = bytes(ins.bytes)
    n = sdm_length(code[:15], len(raw))
    if n == 0:
        return None
    if n != len(raw):
        raw = bytes(code[:n])
        return _ud_insn(raw, ins)
    prefixes, rex, opmap, at = _opcode_position(raw)
    area = _prefix_area(raw)
    opcode = raw[at] if at < len(raw) else 0
    modrm = raw[at + 1] if at + 1 < len(raw) else None
    mem = _mem_operand(ins)
    return Insn(
        raw=raw,
        text=f"{ins.mnemonic} {ins.op_str}".strip(),
        prefixes=prefixes,
        rex=rex,
        prefix_bytes=raw[:area],
        opmap=opmap,
        opcode=opcode,
        modrm=modrm,
        mem=mem,
        disp_offset=_rip_disp_offset(ins, raw, mem),
        imm_offset=int(ins.imm_offset),
        reg_operand=_sole_register(ins),
        transfers_control=_transfers_control(ins),
    )


def _ud_insn(raw: bytes, ins: capstone.CsInsn) -> Insn:
    """UD0/UD1 with their ModRM operand (see :func:`sdm_length`)."""
    prefixes, rex, opmap, at = _opcode_position(raw)
    return Insn(raw=raw, text=f"{ins.mnemonic} (modrm {raw[at + 1]:#04x})",
                prefixes=prefixes, rex=rex, prefix_bytes=raw[:_prefix_area(raw)], opmap=opmap,
                opcode=raw[at], modrm=raw[at + 1],
                mem=None, disp_offset=None, imm_offset=0, reg_operand=None)


def length(code: bytes, addr: int) -> int:
    """Length of the instruction at the start of ``code``; 0 if undecodable."""
    ins = next(_capstone().disasm_lite(code[:15], addr, count=1), None)
    return 0 if ins is None else sdm_length(code[:15], int(ins[1]))


def _rel32(target: int, next_ip: int) -> bytes:
    disp = target - next_ip
    if not -(1 << 31) <= disp < (1 << 31):
        raise ValueError(f"target {target:#x} out of rel32 reach of {next_ip:#x}")
    return (disp & 0xFFFF_FFFF).to_bytes(4, "little")


def encode_jmp_rel32(at: int, target: int) -> bytes:
    """``jmp rel32`` placed at ``at`` jumping to ``target`` (E9 cd)."""
    return b"\xe9" + _rel32(target, at + 5)


def encode_call_rel32(at: int, target: int) -> bytes:
    """``call rel32`` placed at ``at`` calling ``target`` (E8 cd)."""
    return b"\xe8" + _rel32(target, at + 5)


def encode_jcc_rel32(cc: int, at: int, target: int) -> bytes:
    """``jcc rel32`` with condition ``cc`` (0..15) at ``at`` (0F 80+cc cd)."""
    return bytes((0x0F, 0x80 | cc)) + _rel32(target, at + 6)
