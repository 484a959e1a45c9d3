"""Recovery after runs that stop for good (a step limit, a guest fault, a handler's nested
call that aborts), handler failures made visible (logged, counted, strict mode), and
kprobes in no known function refused on x86_64."""

from __future__ import annotations

import logging

import pytest

from kprobe_ref import (
    InvalidAddress,
    KretprobeBuilder,
    ProbeBuilder,
    PtRegs,
    register_kprobe,
    register_kretprobe,
    unregister_kprobe,
)
from kprobe_ref.sim import GuestFault, Machine, StepLimitExceeded

BASE = 0x40_0000
# f(x): rax = x; rax += 1; call g; ret      g: rax *= 3 (lea); ret
CODE = bytes.fromhex(
    "4889f8"        # 0x00 mov rax, rdi
    "4883c001"      # 0x03 add rax, 1
    "e801000000"    # 0x07 call 0x0d
    "c3"            # 0x0c ret
    "488d0440"      # 0x0d lea rax, [rax + rax*2]
    "c3"            # 0x11 ret
)  # fmt: skip
LOAD = BASE + 0x20
LOAD_CODE = bytes.fromhex("488b07c3")  # load(p): mov rax, [rdi]; ret


def machine(strict: bool = False) -> Machine:
    m = Machine("x86_64", strict=strict)
    m.map(BASE, 0x1000, "rx")
    m.write(BASE, CODE)
    m.write(LOAD, LOAD_CODE)
    m.add_symbol("f", BASE, 0x0D)
    m.add_symbol("g", BASE + 0x0D, 5)
    m.add_symbol("load", LOAD, len(LOAD_CODE))
    return m


def f(x: int) -> int:
    return (x + 1) * 3


def counting_probe(m: Machine, off: int) -> object:
    return register_kprobe(m.manager, m.points, ProbeBuilder().with_symbol_addr(BASE + off))


def test_a_step_limit_at_any_point_of_a_probed_run_leaves_no_stale_state() -> None:
    m = machine()
    h = counting_probe(m, 3)  # stepped out of line: a step limit can stop inside its slot
    aborted = 0
    for limit in range(1, 12):
        try:
            m.call(BASE, 1, max_steps=limit)
        except StepLimitExceeded:
            aborted += 1
        assert not m.manager.ctl_stack()
        assert m.points[BASE + 3].busy == 0
    assert aborted >= 3
    hits_before = h.nhit  # type: ignore[attr-defined]
    assert m.call(BASE, 5) == f(5)
    assert h.nhit == hits_before + 1 and h.nmissed == 0  # type: ignore[attr-defined]


def test_a_nested_call_that_aborts_in_a_handler_does_not_disable_later_hits() -> None:
    m = machine()
    inner = counting_probe(m, 3)
    failures: list[BaseException] = []

    def pre(_d: object, _r: PtRegs) -> None:
        m.call(BASE, 10, max_steps=4)  # stops inside the slot of the probe at +3

    register_kprobe(m.manager, m.points, ProbeBuilder().with_symbol_addr(BASE)
                    .with_pre_handler(pre)
                    .with_fault_handler(lambda _d, _r, e: failures.append(e)))
    assert m.call(BASE, 2) == f(2)
    assert len(failures) == 1 and isinstance(failures[0], StepLimitExceeded)
    assert not m.manager.ctl_stack()
    assert inner.nmissed == 1 and inner.nhit == 1  # type: ignore[attr-defined]
    assert m.call(BASE, 2) == f(2)
    assert inner.nhit == 2  # type: ignore[attr-defined]


def test_a_retired_point_stepped_when_the_run_aborted_frees_its_slot() -> None:
    m = machine()
    h = counting_probe(m, 3)
    point = m.points[BASE + 3]
    m.manager.tracers.append(
        lambda e: unregister_kprobe(m.manager, m.points, h)  # type: ignore[arg-type]
        if e.kind in ("slot", "boosted") else None
    )
    with pytest.raises(StepLimitExceeded):
        m.call(BASE, 3, max_steps=2)  # mov, then the slot's add: stops before its end trap
    assert point.retired and point.busy == 0 and point.slot_addr is None
    assert not m.manager.debug_list and not m.manager.ctl_stack()
    assert m.read(BASE, len(CODE)) == CODE


def test_kretprobe_instances_of_faulting_calls_return_to_the_pool() -> None:
    m = machine()
    buf = m.alloc(0x1000)
    m.write(buf, (0x1234).to_bytes(8, "little"))
    returns: list[int] = []
    rp = register_kretprobe(m.manager, m.points, KretprobeBuilder().with_symbol_addr(LOAD)
                            .with_maxactive(1)
                            .with_ret_handler(lambda _d, r: returns.append(r.rax)))
    for _ in range(3):
        with pytest.raises(GuestFault):
            m.call(LOAD, 0x5000_0000)
        assert len(rp.free) == 1 and not m.task_kretprobe_instances()
    assert m.call(LOAD, buf) == 0x1234
    assert returns == [0x1234] and rp.nmissed == 0


def test_kretprobe_instances_of_a_run_stopped_by_its_step_limit_return_to_the_pool() -> None:
    m = machine()
    rp = register_kretprobe(m.manager, m.points,
                            KretprobeBuilder().with_symbol_addr(BASE).with_maxactive(1))
    with pytest.raises(StepLimitExceeded):
        m.call(BASE, 1, max_steps=3)
    assert len(rp.free) == 1 and not m.task_kretprobe_instances()
    assert m.call(BASE, 1) == f(1) and rp.nmissed == 0


def test_handler_failure_is_logged_counted_and_execution_continues(
    caplog: pytest.LogCaptureFixture,
) -> None:
    m = machine()

    def bad(_d: object, regs: PtRegs) -> None:
        regs.rax = 0xDEAD
        raise ValueError("boom")

    h = register_kprobe(m.manager, m.points, ProbeBuilder().with_symbol_addr(BASE + 3)
                        .with_pre_handler(bad).with_post_handler(bad))
    with caplog.at_level(logging.WARNING, logger="kprobe_ref"):
        assert m.call(BASE, 7) == f(7)
    assert h.handler_errors == 2  # type: ignore[attr-defined]
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert f"kprobe at {BASE + 3:#x}" in messages[0] and "pre-handler" in messages[0]
    assert "ValueError('boom')" in messages[0] and "post-handler" in messages[1]


def test_return_handler_failure_is_counted_on_the_kretprobe(
    caplog: pytest.LogCaptureFixture,
) -> None:
    m = machine()

    def bad(_d: object, _r: PtRegs) -> None:
        raise KeyError("ret")

    rp = register_kretprobe(m.manager, m.points, KretprobeBuilder().with_symbol_addr(BASE)
                            .with_ret_handler(bad).with_entry_handler(bad))
    with caplog.at_level(logging.WARNING, logger="kprobe_ref"):
        assert m.call(BASE, 1) == f(1)
    assert rp.handler_errors == 2
    assert any("return handler" in r.getMessage() for r in caplog.records)


def test_strict_mode_reraises_after_cleanup() -> None:
    m = machine(strict=True)
    calls: list[int] = []

    def bad(_d: object, _r: PtRegs) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("strict")

    h = register_kprobe(m.manager, m.points, ProbeBuilder().with_symbol_addr(BASE + 3)
                        .with_pre_handler(bad))
    with pytest.raises(ValueError, match="strict"):
        m.call(BASE, 1)
    assert not m.manager.ctl_stack() and m.points[BASE + 3].busy == 0
    assert h.handler_errors == 1  # type: ignore[attr-defined]
    assert m.call(BASE, 1) == f(1) and h.nhit == 2  # type: ignore[attr-defined]


def test_strict_mode_entry_handler_failure_returns_the_instance() -> None:
    m = machine(strict=True)

    def bad(_d: object, _r: PtRegs) -> None:
        raise ValueError("entry")

    rp = register_kretprobe(m.manager, m.points, KretprobeBuilder().with_symbol_addr(BASE)
                            .with_maxactive(1).with_entry_handler(bad))
    with pytest.raises(ValueError):
        m.call(BASE, 1)
    assert len(rp.free) == 1 and not m.task_kretprobe_instances()


def test_x86_kprobe_in_no_known_function_is_refused() -> None:
    m = Machine("x86_64")
    m.map(BASE, 0x1000, "rx")
    m.write(BASE, bytes.fromhex("48b8cccccccccccccccc" "c3"))  # movabs rax, imm64; ret
    with pytest.raises(InvalidAddress, match="no known function"):
        register_kprobe(m.manager, m.points, ProbeBuilder().with_symbol_addr(BASE + 2))
    with pytest.raises(InvalidAddress, match="no known function"):
        register_kprobe(m.manager, m.points, ProbeBuilder().with_symbol_addr(BASE))
    assert not m.points
    m.add_symbol("imm", BASE, 11)
    with pytest.raises(InvalidAddress, match="not an instruction boundary"):
        register_kprobe(m.manager, m.points, ProbeBuilder().with_symbol_addr(BASE + 2))
    h = register_kprobe(m.manager, m.points, ProbeBuilder().with_symbol_addr(BASE))
    assert m.call(BASE) == 0xCCCC_CCCC_CCCC_CCCC and h.nhit == 1


def test_fixed_width_kprobe_in_no_known_function_is_accepted() -> None:
    m = Machine("aarch64")
    m.map(BASE, 0x1000, "rx")
    m.write(BASE, bytes.fromhex("00040091" "c0035fd6"))  # add x0, x0, #1; ret
    h = register_kprobe(m.manager, m.points, ProbeBuilder().with_symbol_addr(BASE))
    assert m.call(BASE, 4) == 5 and h.nhit == 1
