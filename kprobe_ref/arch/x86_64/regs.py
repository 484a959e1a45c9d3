"""x86_64 ``pt_regs`` and the C calling convention (System V AMD64 ABI).

Field order follows Linux ``arch/x86/include/asm/ptrace.h``.  The PC is ``rip``; a trap frame
for ``int3`` holds the address after the breakpoint, as Linux's does.
"""

from __future__ import annotations

from kprobe_ref.ptregs import PtRegs

__all__ = [
    "ARG_REGS",
    "CPU_REGS",
    "GPR_BY_NUMBER",
    "RETURN_REGS",
    "X86_64PtRegs",
]

GPR_BY_NUMBER: tuple[str, ...] = (
    "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
    "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
)  # fmt: skip
"""General registers by their 4-bit encoding number (ModRM.reg/rm extended by REX)."""

ARG_REGS: tuple[str, ...] = ("rdi", "rsi", "rdx", "rcx", "r8", "r9")
RETURN_REGS: tuple[str, str] = ("rax", "rdx")


class X86_64PtRegs(PtRegs):
    """The x86_64 trap frame."""

    ISA = "x86_64"
    FIELDS = (
        "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8",
        "rax", "rcx", "rdx", "rsi", "rdi", "orig_rax", "rip", "cs", "rflags", "rsp", "ss",
    )  # fmt: skip
    PC = "rip"
    SP = "rsp"
    RET = RETURN_REGS
    ARGS = ARG_REGS


CPU_REGS: dict[str, str] = {name: name for name in (*GPR_BY_NUMBER, "rip", "rflags")}
"""``pt_regs`` field -> CPU backend register (the names coincide on x86_64)."""
