"""The simulated host: a machine with CPUs, memory, processes and a trap path.

``Machine`` implements :class:`~kprobe_ref.host.KprobeAuxiliaryOps` on emulated CPUs
(unicorn for x86_64, aarch64 and riscv64; a P-code interpreter over pypcode for all four),
so the probe engine runs against real machine code.
"""

from __future__ import annotations

from kprobe_ref.sim.errors import GuestFault, MachineError, StepLimitExceeded
from kprobe_ref.sim.machine import Machine, Process

__all__ = ["GuestFault", "Machine", "MachineError", "Process", "StepLimitExceeded"]
