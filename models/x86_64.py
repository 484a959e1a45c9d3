"""x86_64 instruction models, written from the Intel SDM (Vol. 2, 64-bit mode).

Classes are keyed as the opcode maps of Vol. 2 appendix A give them: an opcode map, the
opcode byte, and where the map uses ModRM.reg as an opcode extension (group 5, ``FF``) the
ModRM byte.  Semantics: the instruction pages of Jcc, JMP, CALL, RET, LOOP/LOOPcc and
JRCXZ (near forms, 64-bit operand and address size), the condition codes of appendix B.1.4.7
(table B-1) and the effective address of chapter 2.2.1.6 (RIP-relative addressing: the
address of the next instruction plus the sign-extended disp32).  State: the sixteen general
registers, ``rflags`` (CF bit 0, PF 2, ZF 6, SF 7, OF 11), memory.

An instruction is given as :class:`X86Insn`: its opcode and ModRM bytes, its length, its
relative displacement or immediate as a raw field, REX.B, and its memory operand as the
ModRM/SIB decoding names it (base, index, scale, disp32).  Prefixes other than REX are not
modelled: kprobe_ref refuses the prefixed forms whose meaning they change (``66``, ``67``,
``64``/``65``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from kprobe_ref import bits
from kprobe_ref.bits import BV, Cond
from kprobe_ref.models.state import Memory, State, bit, load, read_indexed, select, store

__all__ = [
    "CLASSES",
    "GPRS",
    "ISA",
    "MAP_0F",
    "MAP_1BYTE",
    "REGS",
    "MemOperand",
    "X86Class",
    "X86Insn",
    "condition",
    "effective_address",
    "rip_relative_modrm",
]

ISA = "x86_64"
MAP_1BYTE, MAP_0F = "1byte", "0f"
GPRS: tuple[str, ...] = (
    "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
    "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
)  # fmt: skip
"""General registers by their 4-bit number (REX.B/R/X : ModRM field), SDM Vol. 2 table 2-2."""
REGS: tuple[str, ...] = (*GPRS, "rflags")
EXTRAS: tuple[str, ...] = ()
CF, PF, ZF, SF, OF = 0, 2, 6, 7, 11


@dataclass(frozen=True)
class MemOperand:
    """A decoded memory operand: ``base + index * scale + sext(disp32)``.  ``base`` is a
    register name, ``"rip"`` or ``None``; ``index`` a register name or ``None``."""

    base: str | None
    index: str | None
    scale: int
    disp: BV


@dataclass(frozen=True)
class X86Insn:
    """The parts of one instruction the modelled classes read."""

    opcode: BV
    modrm: BV
    length: BV
    imm: BV = 0
    """rel8 / rel32 displacement or imm16, as the raw unsigned field."""
    rex_b: BV = 0
    mem: MemOperand | None = None


@dataclass(frozen=True)
class X86Class:
    """One class: its opcode map, encoding predicate over (opcode, ModRM) and step."""

    name: str
    opmap: str
    encoding: Callable[[BV, BV], Cond]
    step: Callable[[State, X86Insn], State]
    manual: str = ""


# -- condition codes (appendix B.1.4.7, table B-1) ------------------------------------------------


def condition(tttn: BV, rflags: BV) -> Cond:
    """The condition ``tttn`` (the low nibble of Jcc), each of the sixteen spelled out."""
    cf, pf, zf, sf, of = (bit(rflags, b) for b in (CF, PF, ZF, SF, OF))
    sf_ne_of = bits.ne(bits.extract(rflags, SF, SF), bits.extract(rflags, OF, OF), 1)
    n = bits.b_not
    tests: list[Cond] = [
        of, n(of),                                   # O, NO
        cf, n(cf),                                   # B/NAE/C, NB/AE/NC
        zf, n(zf),                                   # E/Z, NE/NZ
        bits.b_or(cf, zf), bits.b_and(n(cf), n(zf)),  # BE/NA, NBE/A
        sf, n(sf),                                   # S, NS
        pf, n(pf),                                   # P/PE, NP/PO
        sf_ne_of, n(sf_ne_of),                       # L/NGE, NL/GE
        bits.b_or(zf, sf_ne_of),                     # LE/NG: ZF = 1 or SF != OF
        bits.b_and(n(zf), n(sf_ne_of)),              # NLE/G: ZF = 0 and SF = OF
    ]  # fmt: skip
    return bits.eq(select(tttn, [bits.ite(t, 1, 0, 1) for t in tests], 1, 4), 1, 1)


# -- operands ------------------------------------------------------------------------------------


def _next(s: State, i: X86Insn) -> BV:
    return bits.add(s.pc, i.length)


def _rel(s: State, i: X86Insn, width: int) -> BV:
    return bits.add(_next(s, i), bits.sext(i.imm, width))


def effective_address(s: State, i: X86Insn) -> BV:
    """``base + index * scale + sext(disp32)``; a ``rip`` base is the next instruction's
    address (2.2.1.6)."""
    m = i.mem
    assert m is not None
    ea = bits.sext(m.disp, 32)
    if m.base == "rip":
        ea = bits.add(ea, _next(s, i))
    elif m.base is not None:
        ea = bits.add(ea, s.reg(m.base))
    if m.index is not None:
        ea = bits.add(ea, bits.mul(s.reg(m.index), m.scale))
    return ea


def _rm_register(s: State, i: X86Insn) -> BV:
    """The register ``REX.B:ModRM.rm`` names (mod = 11)."""
    return read_indexed(s.regs, GPRS, bits.concat(i.rex_b, bits.extract(i.modrm, 2, 0), 3, 1), 4)


def _push(s: State, value: BV) -> tuple[BV, Memory]:
    rsp = bits.sub(s.reg("rsp"), 8)
    return rsp, store(s.mem, rsp, 8, value)


# -- semantics -----------------------------------------------------------------------------------


def _step_jcc(width: int) -> Callable[[State, X86Insn], State]:
    def step(s: State, i: X86Insn) -> State:
        """Jcc: ``RIP = cond ? next + sext(rel) : next``."""
        taken = condition(bits.extract(i.opcode, 3, 0), s.reg("rflags"))
        return s.evolve(bits.ite(taken, _rel(s, i, width), _next(s, i)))
    return step


def _step_jmp(width: int) -> Callable[[State, X86Insn], State]:
    def step(s: State, i: X86Insn) -> State:
        """JMP rel: ``RIP = next + sext(rel)``."""
        return s.evolve(_rel(s, i, width))
    return step


def step_call_rel32(s: State, i: X86Insn) -> State:
    """CALL rel32: ``Push(next); RIP = next + sext(rel32)``."""
    rsp, mem = _push(s, _next(s, i))
    return s.evolve(_rel(s, i, 32), {"rsp": rsp}, mem)


def step_ret(s: State, i: X86Insn) -> State:
    """RET: ``RIP = Pop()``."""
    rsp = s.reg("rsp")
    return s.evolve(load(s.mem, rsp, 8), {"rsp": bits.add(rsp, 8)})


def step_ret_imm16(s: State, i: X86Insn) -> State:
    """RET imm16: ``RIP = Pop(); RSP = RSP + imm16`` (zero-extended)."""
    rsp = s.reg("rsp")
    return s.evolve(load(s.mem, rsp, 8), {"rsp": bits.add(bits.add(rsp, 8), bits.zext(i.imm, 16))})


def _step_loop(kind: str) -> Callable[[State, X86Insn], State]:
    def step(s: State, i: X86Insn) -> State:
        """LOOP/LOOPE/LOOPNE: ``RCX = RCX - 1``; branch if ``RCX != 0`` (and ZF = 1 / 0).
        JRCXZ: branch if ``RCX = 0``; RCX unchanged."""
        rcx = s.reg("rcx")
        if kind == "jrcxz":
            return s.evolve(bits.ite(bits.eq(rcx, 0), _rel(s, i, 8), _next(s, i)))
        count = bits.sub(rcx, 1)
        zf = bit(s.reg("rflags"), ZF)
        extra: Cond = {"loop": True, "loope": zf, "loopne": bits.b_not(zf)}[kind]
        taken = bits.b_and(bits.ne(count, 0), extra)
        return s.evolve(bits.ite(taken, _rel(s, i, 8), _next(s, i)), {"rcx": count})
    return step


def _target(s: State, i: X86Insn) -> BV:
    if i.mem is None:
        return _rm_register(s, i)
    return load(s.mem, effective_address(s, i), 8)


def step_call_ind(s: State, i: X86Insn) -> State:
    """CALL r/m64: ``target = r/m64; Push(next); RIP = target``."""
    target = _target(s, i)
    rsp, mem = _push(s, _next(s, i))
    return s.evolve(target, {"rsp": rsp}, mem)


def step_jmp_ind(s: State, i: X86Insn) -> State:
    """JMP r/m64: ``RIP = r/m64``."""
    return s.evolve(_target(s, i))


# -- encodings (appendix A) -------------------------------------------------------------------


def _opcode(value: int, mask: int = 0xFF) -> Callable[[BV, BV], Cond]:
    return lambda op, modrm: bits.eq(bits.and_(op, mask, 8), value, 8)


def _group5(reg: int, register_form: bool) -> Callable[[BV, BV], Cond]:
    """``FF /reg`` with mod = 11 (register operand) or mod != 11 (memory operand)."""
    def enc(op: BV, modrm: BV) -> Cond:
        mod11 = bits.eq(bits.extract(modrm, 7, 6), 0b11, 2)
        form = mod11 if register_form else bits.b_not(mod11)
        return bits.b_and(bits.eq(op, 0xFF, 8), bits.eq(bits.extract(modrm, 5, 3), reg, 3), form)
    return enc


def rip_relative_modrm(modrm: BV) -> Cond:
    """ModRM ``00 reg 101``: in 64-bit mode, ``[RIP + disp32]`` (2.2.1.6)."""
    return bits.b_and(bits.eq(bits.extract(modrm, 7, 6), 0, 2),
                      bits.eq(bits.extract(modrm, 2, 0), 0b101, 3))


CLASSES: dict[str, X86Class] = {c.name: c for c in (
    X86Class("jcc_rel8", MAP_1BYTE, _opcode(0x70, 0xF0), _step_jcc(8), "Jcc 70+cc cb"),
    X86Class("jcc_rel32", MAP_0F, _opcode(0x80, 0xF0), _step_jcc(32), "Jcc 0F 80+cc cd"),
    X86Class("jmp_rel8", MAP_1BYTE, _opcode(0xEB), _step_jmp(8), "JMP EB cb"),
    X86Class("jmp_rel32", MAP_1BYTE, _opcode(0xE9), _step_jmp(32), "JMP E9 cd"),
    X86Class("call_rel32", MAP_1BYTE, _opcode(0xE8), step_call_rel32, "CALL E8 cd"),
    X86Class("ret", MAP_1BYTE, _opcode(0xC3), step_ret, "RET C3"),
    X86Class("ret_imm16", MAP_1BYTE, _opcode(0xC2), step_ret_imm16, "RET C2 iw"),
    X86Class("loopne", MAP_1BYTE, _opcode(0xE0), _step_loop("loopne"), "LOOPNE E0 cb"),
    X86Class("loope", MAP_1BYTE, _opcode(0xE1), _step_loop("loope"), "LOOPE E1 cb"),
    X86Class("loop", MAP_1BYTE, _opcode(0xE2), _step_loop("loop"), "LOOP E2 cb"),
    X86Class("jrcxz", MAP_1BYTE, _opcode(0xE3), _step_loop("jrcxz"), "JRCXZ E3 cb"),
    X86Class("call_ind_reg", MAP_1BYTE, _group5(2, True), step_call_ind, "CALL FF /2 r64"),
    X86Class("call_ind_mem", MAP_1BYTE, _group5(2, False), step_call_ind, "CALL FF /2 m64"),
    X86Class("jmp_ind_reg", MAP_1BYTE, _group5(4, True), step_jmp_ind, "JMP FF /4 r64"),
    X86Class("jmp_ind_mem", MAP_1BYTE, _group5(4, False), step_jmp_ind, "JMP FF /4 m64"),
)}  # fmt: skip
"""Every modelled class, by the decode table's class name."""
