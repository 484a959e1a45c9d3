"""x86_64 as the P-code CPU runs it (Ghidra's ``x86:LE:64:default``)."""

from __future__ import annotations

from collections.abc import Callable

from kprobe_ref import bits
from kprobe_ref.bits import BV
from kprobe_ref.sim.cpu import StopKind
from kprobe_ref.sim.pcode.isa.base import IsaRecord, PackedRegister
from kprobe_ref.sim.pcode.ops import DIVIDE, CallOther, DivRule, concrete, div_plain
from kprobe_ref.sim.pcode.state import Vn
from kprobe_ref.sim.pcode.trap import Trap

__all__ = ["RECORD"]


def _div_x86(op: str, a: BV, b: BV, w: int) -> BV:
    """x86 ``div``/``idiv`` (SDM vol. 2, DIV): a zero divisor, or a quotient that does not
    fit the destination (half the width of the dividend in Ghidra's P-code), raises #DE."""
    a, b = concrete(a, "x86 division"), concrete(b, "x86 division")
    if b & bits.mask(w) == 0:
        raise Trap(StopKind.FAULT, detail="#DE divide error: division by zero")
    q = bits.concrete(DIVIDE["INT_SDIV" if op in ("INT_SDIV", "INT_SREM") else "INT_DIV"](a, b, w))
    half = w // 2
    signed = op in ("INT_SDIV", "INT_SREM")
    fits = (-(1 << (half - 1)) <= bits.to_signed(q, w) < (1 << (half - 1))) if signed else (
        q < (1 << half))
    if not fits:
        raise Trap(StopKind.FAULT, detail="#DE divide error: quotient overflow")
    return DIVIDE[op](a, b, w)


def _division(mnemonic: str) -> DivRule:
    """``div`` and ``idiv`` follow the #DE rule; any other division in x86 P-code is
    plain."""
    return _div_x86 if mnemonic.split()[0].upper() in ("DIV", "IDIV") else div_plain


def _registers(vn: Callable[[str], Vn]) -> dict[str, Vn]:
    """rax..r15, rip and the segment bases, by their SLEIGH names in upper case."""
    names = ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp"]
    names += [f"r{i}" for i in range(8, 16)]
    out = {n: vn(n.upper()) for n in names}
    return out | {"rip": vn("RIP"), "fs_base": vn("FS_OFFSET"), "gs_base": vn("GS_OFFSET")}


RFLAGS = PackedRegister(
    "rflags",
    {"CF": (0, 1), "PF": (2, 1), "AF": (4, 1), "ZF": (6, 1), "SF": (7, 1), "TF": (8, 1),
     "IF": (9, 1), "DF": (10, 1), "OF": (11, 1), "IOPL": (12, 2), "NT": (14, 1),
     "RF": (16, 1), "VM": (17, 1), "AC": (18, 1), "VIF": (19, 1), "VIP": (20, 1),
     "ID": (21, 1)},
    reads_as_one=0x2,
    keeps_rest=True,
)
"""rflags over Ghidra's one-byte flag registers; bit 1 reads as 1 and the other bits are
kept aside."""

CALLOTHERS: dict[str, CallOther] = {
    "swi": CallOther("swi", "int3 is a breakpoint (code 0, intno in detail); other "
                     "int n are software interrupts, reported as a FAULT", 0),
    "syscall": CallOther("syscall", "the syscall instruction"),
    "invalidInstructionException": CallOther("fault", "ud2: undefined instruction #UD"),
    "LOCK": CallOther("nop", "lock prefix: one CPU, every instruction is atomic"),
    "UNLOCK": CallOther("nop", "lock prefix: one CPU, every instruction is atomic"),
}

RECORD = IsaRecord(
    name="x86_64",
    language="x86:LE:64:default",
    pc="rip",
    registers=_registers,
    callothers=CALLOTHERS,
    division=_division,
    packed=(RFLAGS,),
)
