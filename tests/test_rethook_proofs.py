"""The return-address hijacking obligations: proved on every ISA, and each fails (with a
counterexample) when the trampoline's host side, the entry hijack or the instance stack is
broken on purpose."""

from __future__ import annotations

from typing import Any

import pytest
import z3

from kprobe_ref.arch import ARCHES, get_arch
from kprobe_ref.kretprobe import RethookTable
from kprobe_ref.proofs import rethook
from kprobe_ref.proofs.core import prove
from kprobe_ref.ptregs import PtRegs

ISAS = sorted(ARCHES)


class Mutated:
    """An ISA's hooks with one method replaced."""

    def __init__(self, isa: str, **overrides: Any) -> None:
        self._arch = get_arch(isa)
        self._overrides = overrides

    def __getattr__(self, name: str) -> Any:
        if name in self._overrides:
            return self._overrides[name]
        return getattr(self._arch, name)


@pytest.mark.parametrize("isa", ISAS)
def test_trampoline_and_entry_hijack_are_proved(isa: str) -> None:
    for ob in rethook.obligations([isa]):
        if ob.kind != "instance-stack":
            result = ob.check()
            assert result.proved, (ob.kind, result.detail, result.counterexample)


@pytest.mark.parametrize("isa", ISAS)
def test_trampoline_fails_when_the_link_or_return_address_is_not_restored(isa: str) -> None:
    link = rethook.LINK[isa]

    def forget_link(regs: PtRegs, real: int) -> None:
        regs.pc = real  # the return address, but not the link register

    def forget_return(regs: PtRegs, real: int) -> None:
        if link is not None:
            regs.set(link, real)  # the link register, but the PC stays at the trampoline

    mutations = [forget_return] if link is None else [forget_link, forget_return]
    for bad in mutations:
        result = prove(rethook.trampoline_claim(isa, Mutated(isa, rethook_return=bad)))
        assert not result.proved and result.counterexample, bad.__name__


@pytest.mark.parametrize("isa", ISAS)
def test_entry_hijack_fails_when_it_clobbers_a_register(isa: str) -> None:
    arch = get_arch(isa)
    victim = rethook.SIM_REGS[isa][3]

    def clobbering(state: Any, trampoline: Any) -> Any:
        out = arch.rethook_prepare(state, trampoline)
        state.set_reg(victim, z3.BitVecVal(0, 64))
        return out

    result = prove(rethook.entry_claim(isa, Mutated(isa, rethook_prepare=clobbering)))
    assert not result.proved and result.counterexample


def test_instance_stack_fails_when_skipped_instances_are_not_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def pop_without_dropping(self: RethookTable, frame: int) -> Any:
        return self.m.aux.pop_kretprobe_instance_from_task()

    monkeypatch.setattr(RethookTable, "_pop_returning", pop_without_dropping)
    result = rethook.instance_stack("x86_64")
    assert not result.proved and result.counterexample is not None
    assert "j" in result.counterexample["sequence"]  # found through a non-local exit


@pytest.mark.slow
@pytest.mark.parametrize("isa", ["x86_64", "aarch64"])
def test_instance_stack_is_proved_by_exhaustion(isa: str) -> None:
    result = rethook.instance_stack(isa)
    assert result.proved, (result.detail, result.counterexample)
