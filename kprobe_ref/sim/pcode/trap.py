"""How an instruction stops the P-code CPU: :class:`Trap` and its memory form.

A compiled op raises :class:`Trap` for a breakpoint, a system call, an unimplemented
operation or any other fault; the run loop (:meth:`~kprobe_ref.sim.pcode.cpu.PcodeCpu.run`)
turns it into a :class:`~kprobe_ref.sim.cpu.Stop` at the instruction's address.  A guest
access against the page map raises :class:`PcodeFault`, a FAULT that names the address.

These never leave the CPU: the machine reports a fatal guest fault as
:class:`kprobe_ref.sim.GuestFault`.
"""

from __future__ import annotations

from kprobe_ref.sim.cpu import StopKind

__all__ = ["PcodeFault", "Trap"]


class Trap(Exception):
    """Raised inside an instruction to stop the CPU; the run loop adds the PC."""

    def __init__(
        self, kind: StopKind, code: int = 0, detail: str = "", fault_addr: int | None = None
    ) -> None:
        super().__init__(detail)
        self.kind = kind
        self.code = code
        self.detail = detail
        self.fault_addr = fault_addr


class PcodeFault(Trap):
    """A guest access to unmapped memory or against the page permissions."""

    def __init__(self, addr: int, access: str, why: str) -> None:
        super().__init__(StopKind.FAULT, 0, f"{access} of {addr:#x}: {why}", addr)
