"""aarch64 as the P-code CPU runs it (Ghidra's ``AARCH64:LE:64:v8A``, which is v8.5-A and
decodes ``bc.cond``)."""

from __future__ import annotations

import functools
from collections.abc import Callable

from kprobe_ref import bits
from kprobe_ref.bits import BV
from kprobe_ref.sim.pcode.isa.base import (
    BARRIER,
    HINT,
    CpuAccess,
    IsaRecord,
    PackedRegister,
    Replacement,
    same_rule,
)
from kprobe_ref.sim.pcode.ops import CallOther, div_plain
from kprobe_ref.sim.pcode.overrides import aarch64 as overrides
from kprobe_ref.sim.pcode.state import Vn

__all__ = ["RECORD"]


def _registers(vn: Callable[[str], Vn]) -> dict[str, Vn]:
    """x0..x30, sp and pc."""
    return {f"x{i}": vn(f"x{i}") for i in range(31)} | {"sp": vn("sp"), "pc": vn("pc")}


NZCV = PackedRegister("nzcv", {"NG": (31, 1), "ZR": (30, 1), "CY": (29, 1), "OV": (28, 1)})
"""NZCV in bits 31..28, over Ghidra's one-byte NG, ZR, CY and OV."""

CALLOTHERS: dict[str, CallOther] = {
    "SoftwareBreakpoint": CallOther("break", "brk #imm16", 0),
    "CallSupervisor": CallOther("syscall", "svc #imm16", 0),
    "DataMemoryBarrier": CallOther("nop", "dmb: " + BARRIER),
    "DataSynchronizationBarrier": CallOther("nop", "dsb: " + BARRIER),
    "InstructionSynchronizationBarrier": CallOther(
        "nop", "isb: the translation cache is already coherent with every write"),
    "Hint_Prefetch": CallOther("nop", "prfm: " + HINT),
    "Yield": CallOther("nop", "yield: " + HINT),
    "ClearExclusiveLocal": CallOther("nop", "clrex: the exclusive monitor always passes "
                                     "on one CPU without interrupts"),
    "ExclusiveMonitorPass": CallOther("const", "stxr: one CPU with no intervening "
                                      "exception, so the monitor is still held", value=1),
    "ExclusiveMonitorsStatus": CallOther("const", "stxr status: 0 means the store "
                                         "happened", value=0),
    "UndefinedInstructionException": CallOther("fault", "udf: undefined instruction"),
}


class _View:
    """The CPU as an override sees it (:class:`kprobe_ref.sim.pcode.overrides.aarch64.
    Aarch64View`)."""

    def __init__(self, cpu: CpuAccess) -> None:
        self._cpu = cpu

    def x(self, n: int) -> BV:
        """``X<n>``; 31 reads 0."""
        return 0 if n == 31 else self._cpu.state.get(self._cpu.regmap[f"x{n}"])

    def set_x(self, n: int, value: BV) -> None:
        """Write ``X<n>``; 31 is dropped."""
        if n != 31:
            self._cpu.state.set(self._cpu.regmap[f"x{n}"], bits.wrap(value))

    def sp(self) -> BV:
        """The stack pointer."""
        return self._cpu.state.get(self._cpu.regmap["sp"])

    def set_sp(self, value: BV) -> None:
        """Write the stack pointer."""
        self._cpu.state.set(self._cpu.regmap["sp"], bits.wrap(value))

    def load(self, addr: BV, size: int) -> BV:
        """Guest memory read."""
        return self._cpu.state.load(addr, size)


def _override(cpu: CpuAccess, word: int) -> Replacement | None:
    """The replacement of ``word`` from :mod:`kprobe_ref.sim.pcode.overrides.aarch64`."""
    entry = overrides.lookup(word)
    if entry is None:
        return None
    return entry.mnemonic, functools.partial(entry.fn, _View(cpu), word)


RECORD = IsaRecord(
    name="aarch64",
    language="AARCH64:LE:64:v8A",
    pc="pc",
    registers=_registers,
    callothers=CALLOTHERS,
    division=same_rule(div_plain),
    packed=(NZCV,),
    override=_override,
)
"""SLEIGH tests for a zero divisor itself (``udiv``/``sdiv`` give 0), so the plain rule."""
