"""x86_64 simulation rules: one function per simulated class, same signature.

Mirrors Linux ``arch/x86/kernel/kprobes/core.c`` (the ``kprobe_emulate_*`` functions) and
the Intel SDM Vol. 2 entries for Jcc, JMP, CALL, RET, LOOP/LOOPcc and JRCXZ.  Each rule has
the same sections: FIELDS (from the decoded instruction), READ SOURCES (every register and
memory operand, before anything is written), OPERATION, WRITE RESULTS / PC.  Rules use only
:mod:`kprobe_ref.bits`, so the proofs run them on Z3 terms.
"""

from __future__ import annotations

from collections.abc import Callable

from kprobe_ref import bits
from kprobe_ref.arch.base import Decoded, SimState
from kprobe_ref.arch.x86_64.encoding import BASE_NONE, BASE_RIP
from kprobe_ref.arch.x86_64.regs import GPR_BY_NUMBER
from kprobe_ref.bits import BV, Cond

__all__ = ["RULES", "condition", "effective_address", "simulate"]

CF, PF, ZF, SF, OF = 0, 2, 6, 7, 11
"""Bit positions of the status flags in RFLAGS (SDM Vol. 1, 3.4.3)."""


def _flag(rflags: BV, bit: int) -> Cond:
    return bits.eq(bits.extract(rflags, bit, bit), 1, 1)


def condition(cc: int, rflags: BV) -> Cond:
    """The condition ``cc`` (the low nibble of Jcc/SETcc/CMOVcc, SDM appendix B.1.4.7)."""
    cf, zf, sf, of, pf = (_flag(rflags, b) for b in (CF, ZF, SF, OF, PF))
    sf_ne_of = bits.b_not(bits.b_or(bits.b_and(sf, of), bits.b_and(bits.b_not(sf), bits.b_not(of))))
    base: tuple[Cond, ...] = (
        of,  # 0: O
        cf,  # 2: B / C / NAE
        zf,  # 4: E / Z
        bits.b_or(cf, zf),  # 6: BE / NA
        sf,  # 8: S
        pf,  # A: P / PE
        sf_ne_of,  # C: L / NGE
        bits.b_or(zf, sf_ne_of),  # E: LE / NG
    )
    test = base[cc >> 1]
    return bits.b_not(test) if cc & 1 else test


def _next_ip(s: SimState, d: Decoded) -> BV:
    return bits.add(s.address, d.fields["len"])


def _rel_target(s: SimState, d: Decoded) -> BV:
    return bits.add(_next_ip(s, d), bits.sext(d.fields["disp"], d.fields["dsize"]))


def effective_address(s: SimState, d: Decoded) -> BV:
    """``base + index * scale + sext(disp32)`` of the memory operand; RIP-relative bases
    use the address of the next instruction, as the CPU does."""
    f = d.fields
    ea: BV = bits.sext(f["mdisp"], 32)
    if f["base"] == BASE_RIP:
        ea = bits.add(ea, _next_ip(s, d))
    elif f["base"] != BASE_NONE:
        ea = bits.add(ea, s.reg(GPR_BY_NUMBER[f["base"]]))
    if f["index"] != BASE_NONE:
        ea = bits.add(ea, bits.mul(s.reg(GPR_BY_NUMBER[f["index"]]), f["scale"]))
    return ea


def _push(s: SimState, rsp: BV, value: BV) -> None:
    new_rsp = bits.sub(rsp, 8)
    s.store(new_rsp, 8, value)
    s.set_reg("rsp", new_rsp)


def sim_jcc(s: SimState, d: Decoded) -> None:
    """Jcc rel8/rel32: go to ``next + sext(disp)`` when the condition holds."""
    # READ SOURCES
    rflags = s.reg("rflags")
    # OPERATION
    taken = condition(d.fields["cc"], rflags)
    # WRITE RESULTS / PC
    s.set_pc(bits.ite(taken, _rel_target(s, d), _next_ip(s, d)))


def sim_jmp_rel(s: SimState, d: Decoded) -> None:
    """JMP rel8/rel32."""
    s.set_pc(_rel_target(s, d))


def sim_call_rel(s: SimState, d: Decoded) -> None:
    """CALL rel32: push the next instruction's address, go to the target."""
    # READ SOURCES
    rsp = s.reg("rsp")
    # WRITE RESULTS / PC
    _push(s, rsp, _next_ip(s, d))
    s.set_pc(_rel_target(s, d))


def sim_ret(s: SimState, d: Decoded) -> None:
    """RET and RET imm16: pop the return address, then release ``imm16`` more bytes."""
    # FIELDS
    imm = d.fields.get("imm", 0)
    # READ SOURCES
    rsp = s.reg("rsp")
    target = s.load(rsp, 8)
    # WRITE RESULTS / PC
    s.set_reg("rsp", bits.add(rsp, 8 + imm))
    s.set_pc(target)


def sim_loop(s: SimState, d: Decoded) -> None:
    """LOOP, LOOPE, LOOPNE: decrement RCX (flags untouched), branch if RCX != 0 (and ZF
    is set / clear); JRCXZ: branch if RCX == 0, RCX untouched."""
    # READ SOURCES
    rcx, rflags = s.reg("rcx"), s.reg("rflags")
    # OPERATION
    klass = d.klass
    if klass == "jrcxz":
        taken = bits.eq(rcx, 0)
    else:
        rcx = bits.sub(rcx, 1)
        taken = bits.ne(rcx, 0)
        zf = _flag(rflags, ZF)
        if klass == "loope":
            taken = bits.b_and(taken, zf)
        elif klass == "loopne":
            taken = bits.b_and(taken, bits.b_not(zf))
        # WRITE RESULTS
        s.set_reg("rcx", rcx)
    s.set_pc(bits.ite(taken, _rel_target(s, d), _next_ip(s, d)))


def _indirect_target(s: SimState, d: Decoded) -> BV:
    if "reg" in d.fields:
        return s.reg(GPR_BY_NUMBER[d.fields["reg"]])
    return s.load(effective_address(s, d), 8)


def sim_jmp_ind(s: SimState, d: Decoded) -> None:
    """JMP r/m64: go to the register's value or the quadword in memory."""
    s.set_pc(_indirect_target(s, d))


def sim_call_ind(s: SimState, d: Decoded) -> None:
    """CALL r/m64: read the target (``call *%rsp`` reads RSP before the push), push the
    return address, go to the target."""
    # READ SOURCES
    target = _indirect_target(s, d)
    rsp = s.reg("rsp")
    # WRITE RESULTS / PC
    _push(s, rsp, _next_ip(s, d))
    s.set_pc(target)


RULES: dict[str, Callable[[SimState, Decoded], None]] = {
    "jcc_rel8": sim_jcc,
    "jcc_rel32": sim_jcc,
    "jmp_rel8": sim_jmp_rel,
    "jmp_rel32": sim_jmp_rel,
    "call_rel32": sim_call_rel,
    "ret": sim_ret,
    "ret_imm16": sim_ret,
    "loop": sim_loop,
    "loope": sim_loop,
    "loopne": sim_loop,
    "jrcxz": sim_loop,
    "call_ind_reg": sim_call_ind,
    "call_ind_mem": sim_call_ind,
    "jmp_ind_reg": sim_jmp_ind,
    "jmp_ind_mem": sim_jmp_ind,
}
"""The rule of each simulated class."""


def simulate(d: Decoded, s: SimState) -> None:
    """Apply the simulated instruction ``d`` to ``s``."""
    RULES[d.klass](s, d)
