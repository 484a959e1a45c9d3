"""riscv64 as the P-code CPU runs it (Ghidra's ``RISCV:LE:64:RV64GC``)."""

from __future__ import annotations

from collections.abc import Callable

from kprobe_ref import bits
from kprobe_ref.bits import BV
from kprobe_ref.sim.pcode.isa.base import BARRIER, IsaRecord, same_rule
from kprobe_ref.sim.pcode.ops import DIVIDE, CallOther, zero_divisor
from kprobe_ref.sim.pcode.state import Vn

__all__ = ["RECORD"]


_ABI = [
    "zero", "ra", "sp", "gp", "tp", "t0", "t1", "t2", "s0", "s1", "a0", "a1", "a2", "a3", "a4",
    "a5", "a6", "a7", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11", "t3", "t4",
    "t5", "t6",
]
"""The SLEIGH (ABI) name of each x register."""


def _div_riscv(op: str, a: BV, b: BV, w: int) -> BV:
    """RISC-V (unprivileged ISA, M extension, "Division by zero"): a quotient by zero is all
    ones, a remainder by zero is the dividend; ``MIN / -1`` is ``MIN`` with remainder 0."""
    if zero_divisor(b, w):
        return bits.mask(w) if op in ("INT_DIV", "INT_SDIV") else bits.wrap(a, w)
    return DIVIDE[op](a, b, w)


def _registers(vn: Callable[[str], Vn]) -> dict[str, Vn]:
    """x1..x31 (x0 is not a register: it reads 0) and pc."""
    return {f"x{i}": vn(_ABI[i]) for i in range(1, 32)} | {"pc": vn("pc")}


CALLOTHERS: dict[str, CallOther] = {
    "ebreak": CallOther("break", "ebreak and c.ebreak (code 0)"),
    "ecall": CallOther("syscall", "ecall"),
    "fence": CallOther("nop", "fence: " + BARRIER),
    "fence.i": CallOther("nop", "fence.i: the translation cache is already coherent"),
}

RECORD = IsaRecord(
    name="riscv64",
    language="RISCV:LE:64:RV64GC",
    pc="pc",
    registers=_registers,
    callothers=CALLOTHERS,
    division=same_rule(_div_riscv),
    zero_register="zero",
    indirect_mask=bits.mask(64) - 1,
)
"""Every indirect jump is a JALR, whose target has bit 0 cleared (unprivileged ISA, 2.5);
Ghidra's ``c.jr``/``c.jalr`` P-code omits that, hence ``indirect_mask``."""
