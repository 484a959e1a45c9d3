"""Guest-side failures of the simulated machine.

These are not :class:`~kprobe_ref.errors.KprobeError`\\ s: nothing was wrong with a probe
definition; the emulated code itself faulted or ran too long.
"""

from __future__ import annotations

__all__ = ["GuestFault", "MachineError", "StepLimitExceeded"]


class MachineError(Exception):
    """Base class of guest-side failures."""


class GuestFault(MachineError):
    """An emulated instruction faulted.

    ``pc`` is the faulting instruction's address; when the fault happened in an out-of-line
    slot (or in a simulated instruction) it is the probed instruction's address, as a kernel
    reports it.  ``fault_addr`` is the data address of a memory fault, if any."""

    def __init__(self, pc: int, detail: str, fault_addr: int | None = None) -> None:
        where = f" accessing {fault_addr:#x}" if fault_addr is not None else ""
        super().__init__(f"guest fault at {pc:#x}{where}: {detail}")
        self.pc = pc
        self.detail = detail
        self.fault_addr = fault_addr


class StepLimitExceeded(MachineError):
    """A run executed ``max_steps`` instructions without reaching a stop address."""

    def __init__(self, pc: int, steps: int) -> None:
        super().__init__(f"step limit of {steps} instructions reached at {pc:#x}")
        self.pc = pc
        self.steps = steps
