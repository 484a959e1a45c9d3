"""riscv64 ``pt_regs`` and the C calling convention (RISC-V psABI, integer registers).

Field order follows Linux ``arch/riscv/include/asm/ptrace.h``: ``epc`` first, then the
general registers ``x1``..``x31`` by their ABI names in encoding order, then the trap CSRs
``status``, ``badaddr``, ``cause`` and ``orig_a0``.  ``x0`` is hard-wired to zero (RISC-V
unprivileged ISA, chapter 2.1) and has no slot in the frame: it reads 0 and writes to it are
dropped.  A trap frame for ``ebreak``/``c.ebreak`` holds the address of the breakpoint
itself in ``epc``, as Linux's does.
"""

from __future__ import annotations

from typing import ClassVar

from kprobe_ref.ptregs import PtRegs

__all__ = ["ABI_NAMES", "ARG_REGS", "CPU_REGS", "RETURN_REGS", "Riscv64PtRegs", "xreg"]

_MASK64 = (1 << 64) - 1

ABI_NAMES: tuple[str, ...] = (
    "zero", "ra", "sp", "gp", "tp", "t0", "t1", "t2",
    "s0", "s1", "a0", "a1", "a2", "a3", "a4", "a5",
    "a6", "a7", "s2", "s3", "s4", "s5", "s6", "s7",
    "s8", "s9", "s10", "s11", "t3", "t4", "t5", "t6",
)  # fmt: skip
"""The psABI name of each integer register ``x0``..``x31``."""

ARG_REGS: tuple[str, ...] = ("a0", "a1", "a2", "a3", "a4", "a5", "a6", "a7")
RETURN_REGS: tuple[str, str] = ("a0", "a1")


def xreg(n: int) -> str:
    """The architectural name ``xN`` of register number ``n`` (what simulation rules use)."""
    return f"x{n}"


class Riscv64PtRegs(PtRegs):
    """The riscv64 trap frame."""

    ISA = "riscv64"
    FIELDS = ("epc", *ABI_NAMES[1:], "status", "badaddr", "cause", "orig_a0")
    ALIASES: ClassVar[dict[str, str]] = {
        **{xreg(n): ABI_NAMES[n] for n in range(1, 32)},
        "fp": "s0",
        "pc": "epc",
    }
    ZERO = "x0"
    PC = "epc"
    SP = "sp"
    RET = RETURN_REGS
    ARGS = ARG_REGS

    # Linux names a field ``sp``, the name of the base class's ISA-neutral accessor: this
    # one stores the field itself, so both spellings reach one value.
    @property
    def sp(self) -> int:
        """The stack pointer (field ``sp``, ``x2``)."""
        value: int = self.__dict__.get("sp", 0)
        return value

    @sp.setter
    def sp(self, value: int) -> None:
        self.__dict__["sp"] = value & _MASK64


CPU_REGS: dict[str, str] = {"epc": "pc", **{ABI_NAMES[n]: xreg(n) for n in range(1, 32)}}
"""``pt_regs`` field -> CPU backend register (the backend names registers ``x1``..``x31``
and ``pc``).  ``status``, ``badaddr``, ``cause`` and ``orig_a0`` are trap bookkeeping with no
CPU counterpart here."""
