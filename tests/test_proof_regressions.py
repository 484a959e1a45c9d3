"""The three Linux table bugs, put back into copies of our tables and rules, each make the
matching proof obligation fail with a counterexample."""

from __future__ import annotations

import dataclasses

import pytest

from kprobe_ref.arch.aarch64 import decode as a64_decode
from kprobe_ref.arch.riscv64 import decode as rv_decode
from kprobe_ref.arch.x86_64 import simulate as x86_simulate
from kprobe_ref.bits import BV, Cond
from kprobe_ref.proofs.core import Obligation
from kprobe_ref.proofs.decode import decode_obligations
from kprobe_ref.proofs.simulate import simulate_obligations


def _only(obs: list[Obligation], kind: str, klass: str) -> Obligation:
    (ob,) = [o for o in obs if o.kind == kind and o.klass == klass]
    return ob


def test_riscv_c_jr_mask_0xf007_matches_c_mv_and_fails_the_model_equivalence() -> None:
    # Linux: match 0x8002, mask 0xf007 -- bits 15..12 and 2..0 only, so c.mv with an even
    # rs2 is taken for c.jr.
    rows = [dataclasses.replace(r, pattern="1000 sssss xxxx0 10") if r.klass == "c_jr" else r
            for r in rv_decode.ROWS]
    assert next(r for r in rows if r.klass == "c_jr").mask_match == (0xF007, 0x8002)
    result = _only(decode_obligations("riscv64", rows), "decode-model", "c_jr").check()
    assert not result.proved and result.counterexample is not None
    word = int(result.counterexample["word"], 16)
    assert (word >> 2) & 0x1F != 0  # rs2 != 0: a c.mv, not a c.jr


def test_arm64_bcond_mask_0xff000010_steps_bc_cond_and_fails_the_pc_obligation() -> None:
    # Linux's aarch64_insn_is_bcond was mask 0xff000010, match 0x54000000: BC.cond (bit 4
    # set, FEAT_HBC) was not a branch, so it was stepped out of line relative to the slot.
    rows = [r for r in a64_decode.ROWS if r.klass != "bc_cond"]
    assert next(r for r in rows if r.klass == "b_cond").mask_match == (0xFF000010, 0x54000000)
    result = _only(decode_obligations("aarch64", rows), "decode-pc", "bc_cond").check()
    assert not result.proved and result.counterexample is not None
    word = int(result.counterexample["word"], 16)
    assert word & 0xFF000010 == 0x54000010


def _linux_condition(cc: int, rflags: BV) -> Cond:
    """x86 conditions with JNG/JNLE (0xE/0xF) written with && instead of ||."""
    if cc >> 1 == 7:
        zf = x86_simulate._flag(rflags, x86_simulate.ZF)
        sf = x86_simulate._flag(rflags, x86_simulate.SF)
        of = x86_simulate._flag(rflags, x86_simulate.OF)
        from kprobe_ref import bits

        sf_ne_of = bits.ne(bits.ite(sf, 1, 0, 1), bits.ite(of, 1, 0, 1), 1)
        test = bits.b_and(zf, sf_ne_of)
        return bits.b_not(test) if cc & 1 else test
    return x86_simulate.condition(cc, rflags)


@pytest.mark.parametrize("klass", ["jcc_rel8", "jcc_rel32"])
def test_x86_jng_jnle_with_and_fails_the_simulate_obligation(
        klass: str, monkeypatch: pytest.MonkeyPatch) -> None:
    original = x86_simulate.condition
    monkeypatch.setattr(x86_simulate, "condition",
                        lambda cc, rf: _linux_condition(cc, rf) if cc >> 1 == 7
                        else original(cc, rf))
    result = _only(simulate_obligations("x86_64"), "simulate", klass).check()
    assert not result.proved and result.counterexample is not None
    assert int(result.counterexample["opcode"], 16) & 0xE == 0xE


def _boost(isa: str, klass: str, **kw: object) -> Obligation:
    from kprobe_ref.proofs.boost import boost_obligations

    (ob,) = [o for o in boost_obligations(isa, **kw) if o.klass == klass]  # type: ignore[arg-type]
    return ob


def test_a_boost_reach_rule_wider_than_b_fails_jump_lands() -> None:
    from kprobe_ref import bits

    def too_wide(at: BV, target: BV) -> Cond:  # +-256 MiB: imm26 words cannot say it
        off = bits.sub(target, at)
        return bits.eq(bits.sext(bits.extract(off, 28, 0), 29), off)

    result = _boost("aarch64", "jump-lands", reaches=too_wide).check()
    assert not result.proved and result.counterexample is not None


def test_a_boost_reach_rule_narrower_than_jal_fails_jump_reach() -> None:
    from kprobe_ref import bits

    def too_narrow(at: BV, target: BV) -> Cond:  # +-512 KiB: half of what jal reaches
        off = bits.sub(target, at)
        return bits.eq(bits.sext(bits.extract(off, 19, 0), 20), off)

    result = _boost("riscv64", "jump-reach", reaches=too_narrow).check()
    assert not result.proved and result.counterexample is not None


def test_a_loongarch_b_with_its_offset_halves_swapped_fails_jump_lands(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kprobe_ref import bits
    from kprobe_ref.arch.loongarch64 import slot as la_slot

    def swapped(at: BV, target: BV) -> BV:
        off = bits.sub(target, at)
        high = bits.shl(bits.extract(off, 27, 18), 10, 32)
        return bits.or_(bits.or_(0x5000_0000, high, 32), bits.extract(off, 17, 2), 32)

    monkeypatch.setattr(la_slot, "jump_word", swapped)
    result = _boost("loongarch64", "jump-lands").check()
    assert not result.proved and result.counterexample is not None
