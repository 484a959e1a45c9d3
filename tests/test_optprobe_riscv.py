"""Jump-optimized kprobes on riscv64: the auipc+jalr pair through a register that is dead at
the probe (chosen by liveness over the function, branches and exits included), no trap per
hit, refusal when no register is free, and the obligations failing on mutated rules."""

from __future__ import annotations

import dataclasses

import pytest

from kprobe_ref import (
    Kprobe,
    ProbeBuilder,
    optimize_kprobes,
    register_kprobe,
    unregister_kprobe,
)
from kprobe_ref.arch.base import OptPlan, OptRegion
from kprobe_ref.arch.riscv64 import encoding as enc
from kprobe_ref.arch.riscv64 import optimize as rv_opt
from kprobe_ref.optimize import plan_region
from kprobe_ref.proofs.core import Result
from kprobe_ref.proofs.optprobe import Function, optprobe_obligations
from kprobe_ref.sim import Machine
from tests.helpers import CODE, snippet_machine

T = {f"t{i}": r for i, r in enumerate((5, 6, 7, 28, 29, 30, 31))}
A0, A1 = 10, 11


def addi(rd: int, rs1: int, imm: int) -> bytes:
    return enc.encode_i(0x13, 0, rd, rs1, imm)


def add(rd: int, rs1: int, rs2: int) -> bytes:
    return (rs2 << 20 | rs1 << 15 | rd << 7 | 0x33).to_bytes(4, "little")


RET = enc.encode_jalr(0, 1, 0)
HEAD = addi(A0, A0, 1) + addi(A0, A0, 2)
"""The region of a probe at the start: two stepped instructions, 8 bytes."""
STRAIGHT = HEAD + addi(A0, A0, 3) + RET
ALL_LIVE = HEAD + b"".join(add(A0, A0, T[f"t{i}"]) for i in range(7)) + RET
ON_TAKEN = HEAD + enc.encode_branch(1, A1, 0, 8) + RET + add(A0, A0, T["t6"]) + RET
"""``bne a1, zero, +8`` skips a ``ret`` to a read of t6: t6 is live only on the taken
path."""


def pre(m: Machine, addr: int) -> Kprobe:
    return register_kprobe(m.manager, m.points, ProbeBuilder().with_symbol_addr(addr)
                           .with_pre_handler(lambda _d, _r: None))


def test_a_probe_jumps_through_a_dead_register_and_takes_no_trap() -> None:
    m = snippet_machine("riscv64", STRAIGHT)
    seen: list[int] = []
    h = register_kprobe(m.manager, m.points, ProbeBuilder().with_symbol_addr(CODE)
                        .with_pre_handler(lambda _d, r: seen.append(r.pc)))
    assert optimize_kprobes(m.manager) == 1 and h.optimized
    point = h.point
    assert point is not None and point.opt is not None
    region = plan_region(m.manager, CODE)
    assert isinstance(region, OptRegion) and region.scratch == T["t6"]
    assert m.read(CODE, 8) == point.opt.plan.jump
    before = m.trap_count
    assert m.call(CODE, 10) == 16 and m.trap_count == before and seen == [CODE]
    unregister_kprobe(m.manager, m.points, h)
    assert m.read(CODE, len(STRAIGHT)) == STRAIGHT


def test_a_register_live_on_a_taken_branch_is_not_used() -> None:
    m = snippet_machine("riscv64", ON_TAKEN)
    region = plan_region(m.manager, CODE)
    assert isinstance(region, OptRegion) and region.scratch == T["t5"]
    h = pre(m, CODE)
    optimize_kprobes(m.manager)
    regs = m.arch.regs_class()
    regs.set("t6", 1000)
    regs.set("a1", 1)
    m.set_regs(regs)
    assert h.optimized and m.call(CODE, 5, 1) == 1008


def test_no_free_register_refuses() -> None:
    m = snippet_machine("riscv64", ALL_LIVE)
    assert plan_region(m.manager, CODE) == "no-dead-register"
    h = pre(m, CODE)
    assert optimize_kprobes(m.manager) == 0 and not h.optimized


def test_a_register_the_region_uses_is_not_chosen() -> None:
    m = snippet_machine("riscv64", addi(T["t6"], A0, 1) + addi(A0, T["t6"], 2) + RET)
    region = plan_region(m.manager, CODE)
    assert isinstance(region, OptRegion) and region.scratch == T["t5"]


# -- the obligations ------------------------------------------------------------------------


def _check(klass: str, **kw: object) -> Result:
    ob = next(o for o in optprobe_obligations("riscv64", **kw)  # type: ignore[arg-type]
              if o.klass == klass)
    return ob.check()


@pytest.mark.parametrize("klass", ["no-branch-into-region", "scratch-dead", "detour-same-state",
                                   "jumps-land"])
def test_the_riscv_rules_prove(klass: str) -> None:
    r = _check(klass)
    assert r.proved, (r.detail, r.counterexample)


def test_liveness_blind_to_branch_targets_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    real = rv_opt._successors_live

    def blind(i: int, e: rv_opt.Effect, *rest: object) -> int:
        if e.kind == "branch":
            e = dataclasses.replace(e, kind="next")
        return real(i, e, *rest)  # type: ignore[arg-type]

    monkeypatch.setattr(rv_opt, "_successors_live", blind)
    rv_opt.flow.cache_clear()
    try:
        fn = [Function("on_taken", CODE, ON_TAKEN)]
        r = _check("scratch-dead", functions=fn)
    finally:
        rv_opt.flow.cache_clear()
    assert not r.proved and r.counterexample == {"function": "on_taken", "probe": hex(CODE),
                                                 "scratch": "x31"}


def test_a_chooser_ignoring_liveness_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rv_opt, "_scratch", lambda *_a: 31)
    r = _check("scratch-dead", functions=[Function("all_live", CODE, ALL_LIVE)])
    assert not r.proved and r.counterexample is not None


def _short_by_four(region: OptRegion, addr: int, detour: int) -> OptPlan | str:
    p = rv_opt.build_detour(region, addr, detour)
    if isinstance(p, str):
        return p
    assert region.scratch is not None
    back = rv_opt.far_jump(detour + p.back, region.end - 4, region.scratch)
    assert back is not None
    return dataclasses.replace(p, detour=p.detour[:p.back] + back)


def test_a_jump_back_short_of_the_region_end_fails() -> None:
    r = _check("jumps-land", build=_short_by_four)
    assert not r.proved and r.counterexample is not None


def _dropping_the_last(region: OptRegion, addr: int, detour: int) -> OptPlan | str:
    """A detour that copies every region instruction but the last."""
    shorter = dataclasses.replace(region, insns=region.insns[:-1]) \
        if len(region.insns) > 1 else region
    p = rv_opt.build_detour(shorter, addr, detour)
    return p if isinstance(p, str) else dataclasses.replace(p, region=region.end - addr)


def test_a_detour_missing_an_instruction_fails() -> None:
    r = _check("detour-same-state", build=_dropping_the_last)
    assert not r.proved and r.counterexample is not None


LOOP_INTO = HEAD + addi(A1, A1, -1) + enc.encode_branch(1, A1, 0, -8) + RET
"""The loop branches back to the region's second instruction."""


def test_a_branch_into_the_region_refuses() -> None:
    m = snippet_machine("riscv64", LOOP_INTO)
    assert plan_region(m.manager, CODE) == "jump-target-in-region"


def test_a_region_rule_blind_to_branch_targets_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    real = rv_opt.flow.__wrapped__

    def blind(code: bytes, start: int) -> rv_opt.Flow:
        f = real(code, start)
        return dataclasses.replace(f, effects=tuple(dataclasses.replace(e, target=None)
                                                    for e in f.effects))

    monkeypatch.setattr(rv_opt, "flow", blind)
    r = _check("no-branch-into-region", functions=[Function("loop", CODE, LOOP_INTO)])
    assert not r.proved and r.counterexample is not None
    assert r.counterexample["target"] == hex(CODE + 4)
