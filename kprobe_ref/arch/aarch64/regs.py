"""aarch64 ``pt_regs`` and the C calling convention (AAPCS64).

Field layout follows Linux ``arch/arm64/include/asm/ptrace.h``: ``regs[0..30]``, then
``sp``, ``pc`` and ``pstate``.  Register number 31 is not in the frame: depending on the
instruction it names the zero register (``xzr``) or the stack pointer, and each rule picks
the right one (Arm ARM, C1.2.5 "Register names").  A trap frame for ``brk`` holds the address
of the ``brk`` itself.  Only the condition flags NZCV (bits 31..28) of ``pstate`` travel
between the frame and the CPU backend.
"""

from __future__ import annotations

from typing import ClassVar

from kprobe_ref.ptregs import PtRegs

__all__ = ["ARG_REGS", "CPU_REGS", "RETURN_REGS", "ZERO_REG", "Aarch64PtRegs", "xreg"]

_MASK64 = (1 << 64) - 1

ZERO_REG = "xzr"
"""The name rules use for register 31 where it means the zero register."""

ARG_REGS: tuple[str, ...] = tuple(f"x{i}" for i in range(8))
RETURN_REGS: tuple[str, str] = ("x0", "x1")


def xreg(n: int) -> str:
    """The name of general register ``n`` where 31 encodes the zero register."""
    return ZERO_REG if n == 31 else f"x{n}"


class Aarch64PtRegs(PtRegs):
    """The aarch64 trap frame."""

    ISA = "aarch64"
    GPR_COUNT = 31
    FIELDS = ("sp", "pc", "pstate")
    ALIASES: ClassVar[dict[str, str]] = {
        **{f"x{i}": f"regs[{i}]" for i in range(31)},
        "fp": "regs[29]",
        "lr": "regs[30]",
    }
    ZERO = ZERO_REG
    PC = "pc"
    SP = "sp"
    RET = RETURN_REGS
    ARGS = ARG_REGS


CPU_REGS: dict[str, str] = {
    **{f"x{i}": f"x{i}" for i in range(31)},
    "sp": "sp",
    "pc": "pc",
    "pstate": "nzcv",
}
"""``pt_regs`` name -> unicorn register (``pstate`` carries NZCV only)."""
