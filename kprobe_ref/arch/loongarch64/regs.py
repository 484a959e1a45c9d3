"""loongarch64 ``pt_regs`` and the C calling convention (LoongArch ELF psABI, LP64).

Field layout follows Linux ``arch/loongarch/include/asm/ptrace.h``: ``regs[0..31]``, then
``orig_a0``, ``csr_era`` (the exception return address: the PC), ``csr_badvaddr``,
``csr_crmd``, ``csr_prmd``, ``csr_euen``, ``csr_ecfg`` and ``csr_estat``.  ``r0`` is
hard-wired to zero (manual vol. 1, 1.1): its slot in the frame exists, as in Linux, but
rules read it as 0 and drop writes to it.  A trap frame for ``break`` holds the address of
the ``break`` itself in ``csr_era``.  The CSR fields are trap bookkeeping with no CPU
counterpart in the simulated machine.
"""

from __future__ import annotations

from typing import ClassVar

from kprobe_ref.ptregs import PtRegs

__all__ = ["ABI_NAMES", "ARG_REGS", "CPU_REGS", "RETURN_REGS", "LoongArch64PtRegs", "gr"]

ABI_NAMES: tuple[str, ...] = (
    "zero", "ra", "tp", "sp", "a0", "a1", "a2", "a3",
    "a4", "a5", "a6", "a7", "t0", "t1", "t2", "t3",
    "t4", "t5", "t6", "t7", "t8", "u0", "fp", "s0",
    "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8",
)  # fmt: skip
"""The psABI name of each general register ``r0``..``r31`` (``r21`` is reserved: ``u0``;
``r22`` is ``fp``, also called ``s9``)."""

ARG_REGS: tuple[str, ...] = ("a0", "a1", "a2", "a3", "a4", "a5", "a6", "a7")
RETURN_REGS: tuple[str, str] = ("a0", "a1")


def gr(n: int) -> str:
    """The architectural name ``rN`` of general register ``n`` (what rules use)."""
    return f"r{n}"


class LoongArch64PtRegs(PtRegs):
    """The loongarch64 trap frame."""

    ISA = "loongarch64"
    GPR_COUNT = 32
    FIELDS = ("orig_a0", "csr_era", "csr_badvaddr", "csr_crmd", "csr_prmd", "csr_euen",
              "csr_ecfg", "csr_estat")
    ALIASES: ClassVar[dict[str, str]] = {
        **{gr(n): f"regs[{n}]" for n in range(32)},
        **{ABI_NAMES[n]: f"regs[{n}]" for n in range(32)},
        "s9": "regs[22]",
    }
    ZERO = "r0"
    PC = "csr_era"
    SP = "sp"
    RET = RETURN_REGS
    ARGS = ARG_REGS


CPU_REGS: dict[str, str] = {**{ABI_NAMES[n]: gr(n) for n in range(1, 32)}, "csr_era": "pc"}
"""``pt_regs`` register -> CPU backend register: ``regs[1..31]`` by their psABI names (the
machine looks up the argument, return and stack registers by those names) to the P-code
CPU's ``r1``..``r31``, and ``csr_era`` to ``pc``.  ``regs[0]`` is the zero register."""
