"""The register names a probe definition may use, per ISA.

``%REG`` in a fetch argument is looked up by Linux's ``regs_query_register_offset``, in a
table each architecture keeps next to its ptrace code.  The names are the ``pt_regs`` field
names of that architecture, not the assembler's: x86_64 has ``%ax`` and ``%ip`` (``%rax`` is
an error), aarch64 ``%x0``..``%x30``, ``%lr``, ``%sp``, ``%pc``, ``%pstate``, riscv64 the
psABI names of its ``pt_regs`` (``%a0``, ``%epc``, ...), loongarch64 ``%r0``..``%r31`` and
its CSR fields.  Each entry maps the kernel's name to the field of this project's
:class:`~kprobe_ref.ptregs.PtRegs` that holds the same value.  The tables are those of
Linux 6.12.
"""

from __future__ import annotations

__all__ = ["KERNEL_REGISTERS", "register_field"]

_X86_64: dict[str, str] = {
    **{f"r{n}": f"r{n}" for n in range(8, 16)},
    "bx": "rbx", "cx": "rcx", "dx": "rdx", "si": "rsi", "di": "rdi", "bp": "rbp",
    "ax": "rax", "orig_ax": "orig_rax", "ip": "rip", "cs": "cs", "flags": "rflags",
    "sp": "rsp", "ss": "ss",
}  # fmt: skip

_AARCH64: dict[str, str] = {
    **{f"x{n}": f"x{n}" for n in range(31)},
    "lr": "x30", "sp": "sp", "pc": "pc", "pstate": "pstate",
}  # fmt: skip

_RISCV64_NAMES = (
    "epc", "ra", "sp", "gp", "tp", "t0", "t1", "t2", "s0", "s1",
    "a0", "a1", "a2", "a3", "a4", "a5", "a6", "a7",
    "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11",
    "t3", "t4", "t5", "t6", "status", "badaddr", "cause", "orig_a0",
)  # fmt: skip
_RISCV64: dict[str, str] = {name: name for name in _RISCV64_NAMES}

_LOONGARCH64_CSRS = ("orig_a0", "csr_era", "csr_badvaddr", "csr_crmd", "csr_prmd",
                     "csr_euen", "csr_ecfg", "csr_estat")
_LOONGARCH64: dict[str, str] = {
    **{f"r{n}": f"r{n}" for n in range(32)},
    **{name: name for name in _LOONGARCH64_CSRS},
}

KERNEL_REGISTERS: dict[str, dict[str, str]] = {
    "x86_64": _X86_64,
    "aarch64": _AARCH64,
    "riscv64": _RISCV64,
    "loongarch64": _LOONGARCH64,
}
"""ISA -> kernel register name -> ``PtRegs`` field (or architectural alias)."""


def register_field(isa: str, name: str) -> str | None:
    """The ``PtRegs`` name of kernel register ``name`` on ``isa``, or ``None`` when the
    kernel's table has no such register (case matters, as in ``strcmp``)."""
    return KERNEL_REGISTERS[isa].get(name)
