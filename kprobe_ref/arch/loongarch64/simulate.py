"""loongarch64 simulation rules: one function per simulated class, same signature.

Mirrors Linux ``arch/loongarch/kernel/inst.c`` (``simu_pc``, ``simu_branch``) and the
LoongArch Reference Manual, volume 1, chapter 2.2.5 (PCADDI, PCALAU12I, PCADDU12I,
PCADDU18I) and 2.2.6 (B, BL, JIRL, BEQ..BGEU, BEQZ, BNEZ), and chapter 3.2.5 (BCEQZ,
BCNEZ), which Linux does not simulate.  Each rule has the same sections: FIELDS (from the
decoded instruction), READ SOURCES (every operand, before anything is written), OPERATION,
WRITE RESULTS / PC.  ``s.address`` is the probed instruction's address (the manual's
``PC``).  Registers are named ``r0``..``r31``; ``r0`` reads 0 and writes to it are dropped.
The FP condition flags are outside ``pt_regs`` and are read with ``s.extra("fcc<n>")``.
Rules use only :mod:`kprobe_ref.bits`, so the proofs run them on Z3 terms.
"""

from __future__ import annotations

from collections.abc import Callable

from kprobe_ref import bits
from kprobe_ref.arch.base import Decoded, SimState
from kprobe_ref.arch.loongarch64.encoding import (
    I16_WIDTH,
    I21_WIDTH,
    I26_WIDTH,
    PCADDI_WIDTH,
    PCADDU12I_WIDTH,
    PCADDU18I_WIDTH,
)
from kprobe_ref.arch.loongarch64.regs import gr
from kprobe_ref.bits import BV, Cond

__all__ = ["RULES", "branch_condition", "simulate"]

_PC_REL_WIDTH = {"pcaddi": PCADDI_WIDTH, "pcaddu12i": PCADDU12I_WIDTH,
                 "pcalau12i": PCADDU12I_WIDTH, "pcaddu18i": PCADDU18I_WIDTH}
_CLEAR_LOW_12 = bits.mask(64) ^ 0xFFF


def sim_pc_rel(s: SimState, d: Decoded) -> None:
    """PCADDI / PCADDU12I / PCADDU18I: ``rd = PC + sext({si20, n'b0})`` with n = 2, 12,
    18; PCALAU12I: ``rd = (PC + sext({si20, 12'b0})) & ~0xfff``.  Continue at ``PC + 4``."""
    # FIELDS
    rd, imm = d.fields["rd"], d.fields["imm"]
    # OPERATION
    value = bits.add(s.address, bits.sext(imm, _PC_REL_WIDTH[d.klass]))
    if d.klass == "pcalau12i":
        value = bits.and_(value, _CLEAR_LOW_12)
    # WRITE RESULTS / PC
    s.set_reg(gr(rd), value)
    s.set_pc(bits.add(s.address, 4))


def sim_b(s: SimState, d: Decoded) -> None:
    """B: go to ``PC + sext({offs26, 2'b0})``."""
    s.set_pc(bits.add(s.address, bits.sext(d.fields["imm"], I26_WIDTH)))


def sim_bl(s: SimState, d: Decoded) -> None:
    """BL: ``r1 = PC + 4``; go to ``PC + sext({offs26, 2'b0})``."""
    # OPERATION
    target = bits.add(s.address, bits.sext(d.fields["imm"], I26_WIDTH))
    # WRITE RESULTS / PC
    s.set_reg("r1", bits.add(s.address, 4))
    s.set_pc(target)


def sim_jirl(s: SimState, d: Decoded) -> None:
    """JIRL: go to ``rj + sext({offs16, 2'b0})`` with rj read before ``rd = PC + 4`` is
    written (``jirl ra, ra, 0`` jumps to the old ``ra``).  No bit of the target is
    cleared; a misaligned one faults at the next fetch, as on hardware."""
    # FIELDS
    rd, rj, imm = d.fields["rd"], d.fields["rj"], d.fields["imm"]
    # READ SOURCES
    base = s.reg(gr(rj))
    # OPERATION
    target = bits.add(base, bits.sext(imm, I16_WIDTH))
    link = bits.add(s.address, 4)
    # WRITE RESULTS / PC
    s.set_reg(gr(rd), link)
    s.set_pc(target)


def branch_condition(klass: str, a: BV, b: BV) -> Cond:
    """The condition of a two-register branch ``b<cond> rj, rd``: ``a`` is rj, ``b`` is rd
    (BLT/BGE signed, BLTU/BGEU unsigned)."""
    conditions: dict[str, Callable[[], Cond]] = {
        "beq": lambda: bits.eq(a, b),
        "bne": lambda: bits.ne(a, b),
        "blt": lambda: bits.slt(a, b),
        "bge": lambda: bits.b_not(bits.slt(a, b)),
        "bltu": lambda: bits.ult(a, b),
        "bgeu": lambda: bits.b_not(bits.ult(a, b)),
    }
    return conditions[klass]()


def sim_branch(s: SimState, d: Decoded) -> None:
    """BEQ/BNE/BLT/BGE/BLTU/BGEU ``rj, rd``: go to ``PC + sext({offs16, 2'b0})`` when the
    condition holds, else to ``PC + 4``."""
    # FIELDS
    f = d.fields
    # READ SOURCES
    a, b = s.reg(gr(f["rj"])), s.reg(gr(f["rd"]))
    # OPERATION
    taken = branch_condition(d.klass, a, b)
    target = bits.add(s.address, bits.sext(f["imm"], I16_WIDTH))
    # WRITE RESULTS / PC
    s.set_pc(bits.ite(taken, target, bits.add(s.address, 4)))


def sim_bz(s: SimState, d: Decoded) -> None:
    """BEQZ / BNEZ ``rj``: go to ``PC + sext({offs21, 2'b0})`` when rj is zero / not zero,
    else to ``PC + 4``."""
    # FIELDS
    rj, imm = d.fields["rj"], d.fields["imm"]
    # READ SOURCES
    value = s.reg(gr(rj))
    # OPERATION
    zero = bits.eq(value, 0)
    taken = zero if d.klass == "beqz" else bits.b_not(zero)
    target = bits.add(s.address, bits.sext(imm, I21_WIDTH))
    # WRITE RESULTS / PC
    s.set_pc(bits.ite(taken, target, bits.add(s.address, 4)))


def sim_bcz(s: SimState, d: Decoded) -> None:
    """BCEQZ / BCNEZ ``$fcc<cj>``: go to ``PC + sext({offs21, 2'b0})`` when the condition
    flag is 0 / 1, else to ``PC + 4``.  The flag is one bit; only bit 0 is read."""
    # FIELDS
    cj, imm = d.fields["cj"], d.fields["imm"]
    # READ SOURCES
    flag = s.extra(f"fcc{cj}")
    # OPERATION
    clear = bits.eq(bits.and_(flag, 1), 0)
    taken = clear if d.klass == "bceqz" else bits.b_not(clear)
    target = bits.add(s.address, bits.sext(imm, I21_WIDTH))
    # WRITE RESULTS / PC
    s.set_pc(bits.ite(taken, target, bits.add(s.address, 4)))


RULES: dict[str, Callable[[SimState, Decoded], None]] = {
    **dict.fromkeys(("pcaddi", "pcalau12i", "pcaddu12i", "pcaddu18i"), sim_pc_rel),
    "b": sim_b,
    "bl": sim_bl,
    "jirl": sim_jirl,
    **dict.fromkeys(("beq", "bne", "blt", "bge", "bltu", "bgeu"), sim_branch),
    "beqz": sim_bz,
    "bnez": sim_bz,
    "bceqz": sim_bcz,
    "bcnez": sim_bcz,
}
"""The rule of each simulated class."""


def simulate(d: Decoded, s: SimState) -> None:
    """Apply the simulated instruction ``d`` to ``s``."""
    RULES[d.klass](s, d)
