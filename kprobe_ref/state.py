"""The concrete :class:`~kprobe_ref.arch.SimState`: a trap frame plus the host's memory.

Simulation rules and return-address hijacking run on this state inside the trap handler.
Memory goes through :class:`~kprobe_ref.host.KprobeAuxiliaryOps` in the address space of
the probe (the kernel, or the process of a uprobe), so a simulated literal load in a uprobe
reads the process's memory, never the kernel's.  A memory access that fails raises
:class:`~kprobe_ref.errors.SimulatedFault`, reported at the probed instruction.
"""

from __future__ import annotations

from kprobe_ref import bits
from kprobe_ref.bits import BV
from kprobe_ref.errors import KprobeError, SimulatedFault
from kprobe_ref.host import KprobeAuxiliaryOps
from kprobe_ref.ptregs import PtRegs

__all__ = ["ConcreteState"]


def _int(v: BV) -> int:
    return bits.concrete(v, "a value of the trap-time state")


class ConcreteState:
    """Architectural state of an interrupted context, for rules that run concretely."""

    def __init__(
        self, regs: PtRegs, aux: KprobeAuxiliaryOps, pid: int | None, address: int
    ) -> None:
        self.regs = regs
        self.aux = aux
        self.pid = pid
        self._address = address

    @property
    def address(self) -> int:
        """The probed instruction's address."""
        return self._address

    def reg(self, name: str) -> int:
        """Read a register; the zero register reads 0."""
        if name == self.regs.ZERO:
            return 0
        return self.regs.get(name)

    def set_reg(self, name: str, value: BV) -> None:
        """Write a register; writes to the zero register are dropped."""
        if name != self.regs.ZERO:
            self.regs.set(name, _int(value))

    def set_pc(self, value: BV) -> None:
        """Set where execution continues."""
        self.regs.pc = _int(value)

    def load(self, addr: BV, size: int) -> int:
        """Read ``size`` bytes little-endian from the probe's address space."""
        a = _int(addr) & ((1 << 64) - 1)
        try:
            data = self.aux.read_memory(a, size, self.pid)
        except KprobeError as exc:
            raise SimulatedFault(self._address, a, str(exc)) from None
        return int.from_bytes(data, "little")

    def store(self, addr: BV, size: int, value: BV) -> None:
        """Write the low ``size`` bytes of ``value`` little-endian."""
        a = _int(addr) & ((1 << 64) - 1)
        data = (_int(value) & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
        try:
            self.aux.write_memory(a, data, self.pid)
        except KprobeError as exc:
            raise SimulatedFault(self._address, a, str(exc)) from None

    def extra(self, name: str) -> int:
        """Read state outside ``pt_regs`` from the host."""
        return self.aux.read_extra_register(name)

    def set_extra(self, name: str, value: BV) -> None:
        """Write state outside ``pt_regs`` through the host."""
        self.aux.write_extra_register(name, _int(value))
