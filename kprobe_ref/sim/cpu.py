"""The CPU backend contract of the simulated machine.

A backend is one emulated CPU with one address space.  The :class:`~kprobe_ref.sim.Machine`
drives it: it maps memory, moves registers in and out by name, and runs until something
happens that the machine must handle.  Two backends exist: unicorn (x86_64, aarch64,
riscv64) and the P-code interpreter over pypcode (all four ISAs).

Register names are the ISA's architectural names in lower case:

- x86_64: ``rax rbx rcx rdx rsi rdi rbp rsp r8``..``r15 rip rflags fs_base gs_base``
- aarch64: ``x0``..``x30 sp pc nzcv`` (``nzcv`` holds N, Z, C, V in bits 31..28)
- riscv64: ``x1``..``x31 pc``
- loongarch64: ``r1``..``r31 pc fcc0``..``fcc7``

A run stops for one of the reasons of :class:`StopKind`.  A trap's ``pc`` is always the
address *of the trapping instruction* (x86 ``int3`` included); the machine converts that to
each ISA's ``pt_regs`` convention.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Sequence
from typing import NamedTuple, Protocol

__all__ = ["Cpu", "Perms", "Stop", "StopKind"]

Perms = str
"""Page permissions as a string of the letters ``r``, ``w`` and ``x`` (``""`` for none)."""


class StopKind(enum.Enum):
    """Why a run of the CPU ended."""

    STOP_AT = "stop_at"
    """The PC reached an address in ``stop_at`` (before executing the instruction there)."""
    BREAK = "break"
    """A breakpoint instruction executed: x86 ``int3``, aarch64 ``brk``, riscv ``ebreak`` or
    ``c.ebreak``, loongarch ``break``.  ``code`` is the immediate (0 where there is none)."""
    SYSCALL = "syscall"
    """A system-call instruction executed (``syscall``, ``svc``, ``ecall``, ``syscall``)."""
    FAULT = "fault"
    """An instruction faulted: unmapped or forbidden memory access, undefined instruction,
    or an operation the backend does not implement.  ``detail`` says which."""
    STEP_LIMIT = "step_limit"
    """``max_steps`` instructions executed without another stop."""


class Stop(NamedTuple):
    """The outcome of :meth:`Cpu.run` (a named tuple: one is made on every trap)."""

    kind: StopKind
    pc: int
    steps: int
    code: int = 0
    detail: str = ""
    fault_addr: int | None = None


class Cpu(Protocol):
    """One emulated CPU with its address space."""

    isa: str
    watch: set[int]
    """Addresses whose executions are counted in ``exec_counts`` (before the instruction
    runs; an instruction replaced by a breakpoint is counted when the breakpoint runs)."""
    exec_counts: Counter[int]
    counting: bool
    """Whether ``Stop.steps`` and the step limit are exact (the default).  A backend may
    run faster with it off: the step limit then bounds each run alone and ``steps`` may
    count a run that ends at a trap as one instruction."""

    def map(self, addr: int, size: int, perms: Perms) -> None:
        """Map ``size`` bytes (page multiples) of zeroed memory at ``addr``."""

    def protect(self, addr: int, size: int, perms: Perms) -> None:
        """Change the permissions of mapped pages; guest accesses obey them."""

    def mem_read(self, addr: int, n: int) -> bytes:
        """Read memory as the host, ignoring permissions."""

    def mem_write(self, addr: int, data: bytes) -> None:
        """Write memory as the host, ignoring permissions, and discard any cached
        translation of code in the written range."""

    def reg_read(self, name: str) -> int:
        """Return a register's value as an unsigned integer."""

    def reg_write(self, name: str, value: int) -> None:
        """Set a register (the value is taken modulo its width)."""

    def reg_read_many(self, names: Sequence[str]) -> list[int]:
        """Read several 64-bit registers at once (one call into the emulator)."""

    def reg_write_many(self, items: Sequence[tuple[str, int]]) -> None:
        """Write several 64-bit registers at once."""

    def run(self, pc: int, stop_at: frozenset[int], max_steps: int) -> Stop:
        """Execute from ``pc`` until a stop; ``steps`` counts executed instructions."""

    def save_context(self) -> object:
        """Snapshot every register (integer, flags, FP/SIMD) for a nested call."""

    def restore_context(self, ctx: object) -> None:
        """Restore a snapshot from :meth:`save_context`."""
