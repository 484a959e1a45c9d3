"""riscv64 simulation rules: one function per simulated class, same signature.

Mirrors Linux ``arch/riscv/kernel/probes/simulate-insn.c`` and the RISC-V Unprivileged ISA
manual, chapter 2.5 (control transfer: JAL, JALR, conditional branches), 2.4 (AUIPC) and
the "C" chapter (C.J, C.JR, C.JALR, C.BEQZ, C.BNEZ; C.JAL is RV32-only).  Each rule has the
same sections: FIELDS (from the decoded instruction), READ SOURCES (every register operand,
before anything is written), OPERATION, WRITE RESULTS / PC.  ``s.address`` is the probed
instruction's address (the manual's ``pc``).  Registers are named ``x0``..``x31``; ``x0``
reads 0 and writes to it are dropped.  Rules use only :mod:`kprobe_ref.bits`, so the proofs
run them on Z3 terms.
"""

from __future__ import annotations

from collections.abc import Callable

from kprobe_ref import bits
from kprobe_ref.arch.base import Decoded, SimState
from kprobe_ref.arch.riscv64.encoding import B_WIDTH, CB_WIDTH, CJ_WIDTH, I_WIDTH, J_WIDTH
from kprobe_ref.arch.riscv64.regs import xreg
from kprobe_ref.bits import BV, Cond

__all__ = ["RULES", "branch_condition", "simulate"]

_CLEAR_BIT0 = bits.mask(64) ^ 1


def sim_jal(s: SimState, d: Decoded) -> None:
    """JAL: ``rd = pc + 4``; go to ``pc + sext(imm)``."""
    # FIELDS
    rd, imm = d.fields["rd"], d.fields["imm"]
    # OPERATION
    target = bits.add(s.address, bits.sext(imm, J_WIDTH))
    link = bits.add(s.address, 4)
    # WRITE RESULTS / PC
    s.set_reg(xreg(rd), link)
    s.set_pc(target)


def sim_jalr(s: SimState, d: Decoded) -> None:
    """JALR: go to ``(rs1 + sext(imm)) & ~1`` with rs1 read before ``rd = pc + 4`` is
    written (``jalr ra, 0(ra)`` jumps to the old ``ra``)."""
    # FIELDS
    rd, rs1, imm = d.fields["rd"], d.fields["rs1"], d.fields["imm"]
    # READ SOURCES
    base = s.reg(xreg(rs1))
    # OPERATION
    target = bits.and_(bits.add(base, bits.sext(imm, I_WIDTH)), _CLEAR_BIT0)
    link = bits.add(s.address, 4)
    # WRITE RESULTS / PC
    s.set_reg(xreg(rd), link)
    s.set_pc(target)


def sim_auipc(s: SimState, d: Decoded) -> None:
    """AUIPC: ``rd = pc + sext(imm[31:12] << 12)`` (modulo 2**64); continue at ``pc + 4``."""
    # FIELDS
    rd, imm = d.fields["rd"], d.fields["imm"]
    # OPERATION
    value = bits.add(s.address, bits.sext(imm, 32))
    # WRITE RESULTS / PC
    s.set_reg(xreg(rd), value)
    s.set_pc(bits.add(s.address, 4))


def branch_condition(funct3: int, a: BV, b: BV) -> Cond:
    """The condition of a conditional branch: BEQ 000, BNE 001, BLT 100, BGE 101 (signed),
    BLTU 110, BGEU 111 (unsigned).  010 and 011 are reserved and never reach a rule."""
    conditions: dict[int, Callable[[], Cond]] = {
        0b000: lambda: bits.eq(a, b),
        0b001: lambda: bits.ne(a, b),
        0b100: lambda: bits.slt(a, b),
        0b101: lambda: bits.b_not(bits.slt(a, b)),
        0b110: lambda: bits.ult(a, b),
        0b111: lambda: bits.b_not(bits.ult(a, b)),
    }
    return conditions[funct3]()


def sim_branch(s: SimState, d: Decoded) -> None:
    """BEQ/BNE/BLT/BGE/BLTU/BGEU: go to ``pc + sext(imm)`` when the condition holds, else
    to ``pc + 4``."""
    # FIELDS
    f = d.fields
    # READ SOURCES
    a, b = s.reg(xreg(f["rs1"])), s.reg(xreg(f["rs2"]))
    # OPERATION
    taken = branch_condition(f["funct3"], a, b)
    target = bits.add(s.address, bits.sext(f["imm"], B_WIDTH))
    # WRITE RESULTS / PC
    s.set_pc(bits.ite(taken, target, bits.add(s.address, 4)))


def sim_c_j(s: SimState, d: Decoded) -> None:
    """C.J: go to ``pc + sext(imm)`` (``jal x0, offset``)."""
    s.set_pc(bits.add(s.address, bits.sext(d.fields["imm"], CJ_WIDTH)))


def sim_c_jr(s: SimState, d: Decoded) -> None:
    """C.JR: go to ``rs1 & ~1`` (``jalr x0, 0(rs1)``)."""
    # READ SOURCES
    base = s.reg(xreg(d.fields["rs1"]))
    # WRITE RESULTS / PC
    s.set_pc(bits.and_(base, _CLEAR_BIT0))


def sim_c_jalr(s: SimState, d: Decoded) -> None:
    """C.JALR: go to ``rs1 & ~1`` and set ``ra = pc + 2``, rs1 read first (``c.jalr ra``
    jumps to the old ``ra``)."""
    # READ SOURCES
    base = s.reg(xreg(d.fields["rs1"]))
    # OPERATION
    target = bits.and_(base, _CLEAR_BIT0)
    # WRITE RESULTS / PC
    s.set_reg("x1", bits.add(s.address, 2))
    s.set_pc(target)


def sim_c_bz(s: SimState, d: Decoded) -> None:
    """C.BEQZ / C.BNEZ: go to ``pc + sext(imm)`` when rs1' is zero / not zero, else to
    ``pc + 2``."""
    # FIELDS
    rs1, imm = d.fields["rs1"], d.fields["imm"]
    # READ SOURCES
    value = s.reg(xreg(rs1))
    # OPERATION
    zero = bits.eq(value, 0)
    taken = zero if d.klass == "c_beqz" else bits.b_not(zero)
    target = bits.add(s.address, bits.sext(imm, CB_WIDTH))
    # WRITE RESULTS / PC
    s.set_pc(bits.ite(taken, target, bits.add(s.address, 2)))


RULES: dict[str, Callable[[SimState, Decoded], None]] = {
    "jal": sim_jal,
    "jalr": sim_jalr,
    "auipc": sim_auipc,
    **dict.fromkeys(("beq", "bne", "blt", "bge", "bltu", "bgeu"), sim_branch),
    "c_j": sim_c_j,
    "c_jr": sim_c_jr,
    "c_jalr": sim_c_jalr,
    "c_beqz": sim_c_bz,
    "c_bnez": sim_c_bz,
}
"""The rule of each simulated class."""


def simulate(d: Decoded, s: SimState) -> None:
    """Apply the simulated instruction ``d`` to ``s``."""
    RULES[d.klass](s, d)
