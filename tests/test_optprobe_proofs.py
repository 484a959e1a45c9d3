"""The optimized-probe obligations hold for the x86_64 rules, and each fails on a mutated
rule: a region rule blind to branch targets or to indirect jumps, a detour that relocates
RIP-relative operands for the wrong place, a jump back to the wrong instruction."""

from __future__ import annotations

import dataclasses

import pytest

from kprobe_ref.arch.base import OptPlan, OptRegion
from kprobe_ref.arch.x86_64 import optimize as x86_opt
from kprobe_ref.arch.x86_64 import slot as x86_slot
from kprobe_ref.proofs.core import Result
from kprobe_ref.proofs.optprobe import Function, corpus_functions, optprobe_obligations
from tests.helpers import CODE
from tests.test_optprobe import LOOP_INTO, loads_code


def _check(klass: str, **kw: object) -> Result:
    obligation = next(o for o in optprobe_obligations("x86_64", **kw)  # type: ignore[arg-type]
                      if o.klass == klass)
    return obligation.check()


@pytest.mark.parametrize("klass", ["no-branch-into-region", "detour-same-state",
                                   "jump-back-lands"])
def test_the_x86_rules_prove(klass: str) -> None:
    r = _check(klass)
    assert r.proved, (r.detail, r.counterexample)


def test_isas_without_optimized_probes_have_no_obligations() -> None:
    assert optprobe_obligations("aarch64") == optprobe_obligations("loongarch64") == []


def test_a_region_rule_blind_to_branch_targets_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    real = x86_opt.flow.__wrapped__
    monkeypatch.setattr(x86_opt, "flow", lambda code, start: dataclasses.replace(
        real(code, start), targets=frozenset()))
    loop = [Function("loop", CODE, LOOP_INTO)]
    r = _check("no-branch-into-region", functions=loop)
    assert not r.proved and r.counterexample is not None
    assert r.counterexample["target"] == hex(CODE + 3)
    assert not _check("no-branch-into-region").proved  # the corpus has such functions too


@pytest.mark.parametrize("name", ["lex_count", "x86_indirect"])
def test_a_region_rule_blind_to_indirect_jumps_fails(monkeypatch: pytest.MonkeyPatch,
                                                     name: str) -> None:
    """``lex_count`` jumps through a table, ``x86_indirect`` also through a register."""
    real = x86_opt.flow.__wrapped__
    monkeypatch.setattr(x86_opt, "flow", lambda code, start: dataclasses.replace(
        real(code, start), indirect=None, tables=()))
    function = [f for f in corpus_functions() if f.name == name]
    r = _check("no-branch-into-region", functions=function)
    assert not r.proved and r.counterexample is not None
    assert r.counterexample["function"] == name


def test_relocating_for_the_wrong_place_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    real = x86_opt._relocate
    monkeypatch.setattr(x86_opt, "_relocate", lambda d, at: real(d, at - len(x86_opt.ENTRY)))
    loads = [Function("loads", CODE, loads_code())]
    r = _check("detour-same-state", functions=loads)
    assert not r.proved and r.counterexample is not None
    assert r.counterexample["sample probe"] == hex(CODE + 3)
    assert not _check("detour-same-state").proved


def _back_to_second_byte(region: OptRegion, addr: int, detour: int) -> OptPlan | str:
    """A detour whose jump back returns after the first instruction only, as a one-
    instruction boosted slot would."""
    p = x86_opt.build_detour(region, addr, detour)
    if isinstance(p, str):
        return p
    field = x86_slot.jump_rel32_field(detour + p.back, addr + region.insns[0].length)
    assert isinstance(field, int)
    back = b"\xe9" + field.to_bytes(4, "little")
    return dataclasses.replace(p, detour=p.detour[:p.back] + back)


def test_a_jump_back_to_the_wrong_instruction_fails() -> None:
    r = _check("jump-back-lands", build=_back_to_second_byte)
    assert not r.proved and r.counterexample is not None
