"""loongarch64 as the P-code CPU runs it (Ghidra's ``Loongarch:LE:64:lp64d``)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NoReturn

from kprobe_ref import bits
from kprobe_ref.bits import BV
from kprobe_ref.sim.cpu import StopKind
from kprobe_ref.sim.pcode.isa.base import (
    BARRIER,
    HINT,
    CpuAccess,
    IsaRecord,
    Replacement,
    same_rule,
)
from kprobe_ref.sim.pcode.ops import DIVIDE, CallOther, zero_divisor
from kprobe_ref.sim.pcode.overrides import loongarch64 as overrides
from kprobe_ref.sim.pcode.state import IntegerState, Space, Vn
from kprobe_ref.sim.pcode.trap import Trap

__all__ = ["RECORD"]


def _div_loongarch(op: str, a: BV, b: BV, w: int) -> BV:
    """LoongArch (manual 2.2.1.8): division by zero raises no exception and its result is
    undefined; this gives qemu's value (the divisor taken as 1: quotient = dividend,
    remainder = 0), which :mod:`kprobe_ref.sim.undefined` lists."""
    if zero_divisor(b, w):
        return bits.wrap(a, w) if op in ("INT_DIV", "INT_SDIV") else 0
    return DIVIDE[op](a, b, w)


def _registers(vn: Callable[[str], Vn]) -> dict[str, Vn]:
    """r1..r31 (8 bytes each after SLEIGH's ``zero``), pc and the flags fcc0..fcc7."""
    base = vn("zero").offset
    out = {f"r{i}": Vn(Space.REGISTER, base + 8 * i, 8) for i in range(1, 32)}
    return out | {"pc": vn("pc")} | {f"fcc{i}": vn(f"fcc{i}") for i in range(8)}


CALLOTHERS: dict[str, CallOther] = {
    "break": CallOther("break", "break code15", 0),
    "syscall": CallOther("syscall", "syscall code15", 0),
    "dbar": CallOther("nop", "dbar: " + BARRIER),
    "ibar": CallOther("nop", "ibar: the translation cache is already coherent"),
    "bound_check_exception": CallOther("fault", "ldgt/ldle/stgt/stle/asrt*: the bound "
                                       "check failed (BCE exception)"),
    "preld_loadl1cache": CallOther("nop", "preld: " + HINT),
    "preld_storel1cache": CallOther("nop", "preld: " + HINT),
    "preld_nop": CallOther("nop", "preld with a reserved hint: " + HINT),
    "preldx_loadl1cache": CallOther("nop", "preldx: " + HINT),
    "preldx_storel1cache": CallOther("nop", "preldx: " + HINT),
    "preldx_nop": CallOther("nop", "preldx with a reserved hint: " + HINT),
}


class _View:
    """The CPU as an override sees it (:class:`kprobe_ref.sim.pcode.overrides.loongarch64.
    LoongArchView`): general registers, fcc flags, memory and the reservation."""

    def __init__(self, cpu: CpuAccess) -> None:
        self._cpu = cpu
        self._state = cpu.state
        self._gr = [cpu.regmap["r1"], *(cpu.regmap[f"r{n}"] for n in range(1, 32))]
        """Varnode of general register ``n`` at index ``n`` (index 0 is never used)."""
        regs = cpu.state.regs if isinstance(cpu.state, IntegerState) else None
        self._regs = regs
        """The register file of an integer state, read and written directly."""

    def gr(self, n: int) -> BV:
        """Return general register ``n`` (r0 reads 0)."""
        if n == 0:
            return 0
        if self._regs is not None:
            return self._regs.read(self._gr[n].offset, 8)
        return self._state.get(self._gr[n])

    def set_gr(self, n: int, value: BV) -> None:
        """Write general register ``n`` (writes to r0 are dropped)."""
        if not n:
            return
        if self._regs is not None:
            self._regs.write(self._gr[n].offset, 8, bits.concrete(value, "a register value"))
        else:
            self._state.set(self._gr[n], bits.wrap(value))

    def fcc(self, n: int) -> BV:
        """Condition flag ``fcc<n>``."""
        return self._cpu.state.get(self._cpu.regmap[f"fcc{n}"])

    def load(self, addr: BV, size: int) -> BV:
        """Guest memory read."""
        return self._cpu.state.load(addr, size)

    def store(self, addr: BV, size: int, value: BV) -> None:
        """Guest memory write."""
        self._cpu.state.store(addr, size, value)

    def get_reservation(self) -> int | None:
        """The address reserved by the last ``ll``, or None."""
        return self._cpu.reservation

    def set_reservation(self, addr: int | None) -> None:
        """Reserve ``addr`` (``ll``) or drop the reservation (``sc``)."""
        self._cpu.reservation = addr

    def fault(self, detail: str, addr: int) -> NoReturn:
        """Stop the CPU with a FAULT."""
        raise Trap(StopKind.FAULT, detail=detail, fault_addr=addr)


def _override(cpu: CpuAccess, word: int) -> Replacement | None:
    """The replacement of ``word`` from :mod:`kprobe_ref.sim.pcode.overrides.loongarch64`."""
    entry = overrides.lookup(word)
    if entry is None:
        return None
    return entry.mnemonic, functools.partial(entry.fn, _View(cpu), word)


RECORD = IsaRecord(
    name="loongarch64",
    language="Loongarch:LE:64:lp64d",
    pc="pc",
    registers=_registers,
    callothers=CALLOTHERS,
    division=same_rule(_div_loongarch),
    zero_register="zero",
    override=_override,
)
