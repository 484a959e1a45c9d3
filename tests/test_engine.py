"""The ISA-independent probe engine on the x86_64 machine: shared points, handler order and
skipping, enable/disable, reentrancy, handler faults, bad input, tracer events, and probes
changed on code that already ran or while they are in use."""

from __future__ import annotations

import pytest

from kprobe_ref import (
    InvalidAddress,
    InvalidProbeDefinition,
    KprobeError,
    NotRegistered,
    ProbeBuilder,
    ProbeEvent,
    PtRegs,
    UnsupportedInstruction,
    register_kprobe,
    unregister_kprobe,
)
from kprobe_ref.sim import Machine

BASE = 0x40_0000
# f(x): rax = x; rax += 1; call g; ret      g: rax *= 3 (lea); ret
CODE = bytes.fromhex(
    "4889f8"        # 0x00 mov rax, rdi
    "4883c001"      # 0x03 add rax, 1
    "e801000000"    # 0x07 call 0x0d
    "c3"            # 0x0c ret
    "488d0440"      # 0x0d lea rax, [rax + rax*2]
    "c3"            # 0x11 ret
    "cc"            # 0x12 int3 (never executed)
)  # fmt: skip
OFFSETS = (0x00, 0x03, 0x07, 0x0C, 0x0D, 0x11)


def machine() -> Machine:
    m = Machine("x86_64")
    m.map(BASE, 0x1000, "rx")
    m.write(BASE, CODE)
    m.add_symbol("f", BASE, 0x0D)
    m.add_symbol("g", BASE + 0x0D, 5)
    return m


def f(x: int) -> int:
    return (x + 1) * 3


def probe(m: Machine, off: int, **kw: object) -> object:
    b = ProbeBuilder().with_symbol_addr(BASE).with_offset(off)
    for name, value in kw.items():
        b = getattr(b, f"with_{name}")(value)
    return register_kprobe(m.manager, m.points, b)


def snapshot(m: Machine) -> tuple[bytes, dict[int, object], dict[int, object], int]:
    return (m.read(BASE, len(CODE)), dict(m.points), dict(m.manager.break_list),
            len(m.manager.debug_list))


def test_probes_at_every_instruction_keep_the_result() -> None:
    m = machine()
    hits: list[int] = []
    handles = [probe(m, off, pre_handler=lambda _d, _r, off=off: hits.append(off))
               for off in OFFSETS]
    assert m.call(BASE, 4) == f(4)
    assert hits == [0x00, 0x03, 0x07, 0x0D, 0x11, 0x0C]
    for h in handles:
        unregister_kprobe(m.manager, m.points, h)  # type: ignore[arg-type]
    assert m.read(BASE, len(CODE)) == CODE


def test_shared_point_runs_handlers_in_registration_order_and_restores_on_last() -> None:
    m = machine()
    order: list[str] = []
    a = probe(m, 3, pre_handler=lambda _d, _r: order.append("a"),
              post_handler=lambda _d, _r: order.append("A"))
    b = probe(m, 3, pre_handler=lambda _d, _r: order.append("b"),
              post_handler=lambda _d, _r: order.append("B"))
    assert len(m.points) == 1
    assert m.call(BASE, 1) == f(1)
    assert order == ["a", "b", "A", "B"]
    unregister_kprobe(m.manager, m.points, a)  # type: ignore[arg-type]
    assert m.read(BASE + 3, 1) == b"\xcc"
    unregister_kprobe(m.manager, m.points, b)  # type: ignore[arg-type]
    assert m.read(BASE, len(CODE)) == CODE and not m.points and not m.manager.debug_list


def test_pre_handler_returning_true_skips_the_instruction_and_later_handlers() -> None:
    m = machine()
    seen: list[str] = []

    def skip_add(_d: object, regs: PtRegs) -> bool:
        seen.append("first")
        regs.pc = BASE + 7  # skip "add rax, 1"
        return True

    probe(m, 3, pre_handler=skip_add, post_handler=lambda _d, _r: seen.append("post"))
    probe(m, 3, pre_handler=lambda _d, _r: seen.append("second"))
    assert m.call(BASE, 4) == 4 * 3
    assert seen == ["first"]


def test_x86_pre_handler_sees_rip_one_past_the_breakpoint() -> None:
    m = machine()
    rips: list[int] = []
    probe(m, 3, pre_handler=lambda _d, r: rips.append(r.rip))
    m.call(BASE, 0)
    assert rips == [BASE + 4]


def test_disable_removes_the_breakpoint_and_enable_restores_it() -> None:
    m = machine()
    hits: list[int] = []
    a = probe(m, 3, pre_handler=lambda _d, _r: hits.append(1))
    b = probe(m, 3, pre_handler=lambda _d, _r: hits.append(2), enable=False)
    assert not b.is_enabled()  # type: ignore[attr-defined]
    m.call(BASE, 0)
    assert hits == [1]
    a.disable()  # type: ignore[attr-defined]
    assert m.read(BASE, len(CODE)) == CODE
    m.call(BASE, 0)
    assert hits == [1]
    b.enable()  # type: ignore[attr-defined]
    assert m.read(BASE + 3, 1) == b"\xcc"
    assert m.call(BASE, 5) == f(5)
    assert hits == [1, 2]


def test_reentrant_hit_is_missed_and_the_instruction_still_runs() -> None:
    m = machine()
    inner: list[int] = []
    h_g = probe(m, 0x0D, pre_handler=lambda _d, _r: None)

    def pre(_d: object, _r: PtRegs) -> None:
        inner.append(m.call(BASE, 10))  # hits the probe on g from inside a handler

    probe(m, 0, pre_handler=pre)
    assert m.call(BASE, 2) == f(2)
    assert inner == [f(10)]
    assert h_g.nmissed == 1 and h_g.nhit == 1  # type: ignore[attr-defined]
    assert not m.manager.ctl_stack()


def test_handler_exception_goes_to_fault_handler_and_changes_nothing() -> None:
    m = machine()
    errors: list[BaseException] = []

    def bad(_d: object, regs: PtRegs) -> None:
        regs.rax = 0xDEAD
        regs.rip = 0
        raise ValueError("boom")

    probe(m, 3, pre_handler=bad, fault_handler=lambda _d, _r, e: errors.append(e))
    assert m.call(BASE, 7) == f(7)
    assert len(errors) == 1 and isinstance(errors[0], ValueError)


@pytest.mark.parametrize("make", [
    lambda m: ProbeBuilder().with_symbol_addr(BASE).with_offset(1),          # not a boundary
    lambda m: ProbeBuilder().with_symbol_addr(0x5000_0000),                  # unmapped
    lambda m: ProbeBuilder().with_symbol_addr(BASE + 0x12),                  # int3: rejected
    lambda m: ProbeBuilder(),                                                # no address
    lambda m: ProbeBuilder().with_symbol_addr(BASE).with_user_mode(1),       # user mode
    lambda m: ProbeBuilder().with_symbol_addr(0x1000),                       # return stop page
])  # fmt: skip
def test_bad_input_is_a_kprobe_error_and_changes_nothing(make: object) -> None:
    m = machine()
    probe(m, 3)
    before = snapshot(m)
    with pytest.raises(KprobeError) as info:
        register_kprobe(m.manager, m.points, make(m))  # type: ignore[operator]
    assert str(info.value)
    assert snapshot(m) == before
    assert m.call(BASE, 1) == f(1)


def test_rejection_carries_a_reason_code() -> None:
    m = machine()
    m.add_symbol("trap", BASE + 0x12, 1)
    with pytest.raises(UnsupportedInstruction) as info:
        register_kprobe(m.manager, m.points, ProbeBuilder().with_symbol_addr(BASE + 0x12))
    assert info.value.reason == "exception-generating" and info.value.address == BASE + 0x12


def test_slot_area_cannot_be_probed() -> None:
    m = machine()
    probe(m, 3)
    slot = m.points[BASE + 3].slot_addr
    assert slot is not None
    with pytest.raises(InvalidAddress, match="must not be probed"):
        register_kprobe(m.manager, m.points, ProbeBuilder().with_symbol_addr(slot))


def test_double_unregister_is_an_error() -> None:
    m = machine()
    h = probe(m, 3)
    unregister_kprobe(m.manager, m.points, h)  # type: ignore[arg-type]
    with pytest.raises(NotRegistered):
        unregister_kprobe(m.manager, m.points, h)  # type: ignore[arg-type]
    assert m.read(BASE, len(CODE)) == CODE


def test_wrong_builder_type_is_an_error() -> None:
    m = machine()
    with pytest.raises(InvalidProbeDefinition):
        register_kprobe(m.manager, m.points, object())  # type: ignore[arg-type]


def test_tracer_sees_hit_slot_step_and_simulation() -> None:
    m = machine()
    events: list[ProbeEvent] = []
    m.manager.tracers.append(events.append)
    probe(m, 3, post_handler=lambda d, r: None)   # stepped, two traps
    probe(m, 7)   # simulated call
    m.call(BASE, 0)
    kinds = [(e.kind, e.address - BASE) for e in events if e.kind != "slot-prepared"]
    assert kinds == [("hit", 3), ("slot", 3), ("step-done", 3), ("hit", 7), ("simulated", 7)]
    assert m.trap_count == 3


def test_tracer_sees_a_boosted_step_without_a_second_trap() -> None:
    m = machine()
    events: list[ProbeEvent] = []
    m.manager.tracers.append(events.append)
    probe(m, 3)   # stepped, pre-handler only
    m.call(BASE, 0)
    kinds = [(e.kind, e.address - BASE) for e in events if e.kind != "slot-prepared"]
    assert kinds == [("hit", 3), ("boosted", 3)]
    assert m.trap_count == 1


def test_register_and_unregister_on_code_that_already_ran() -> None:
    m = machine()
    for _ in range(3):
        assert m.call(BASE, 1) == f(1)  # translated and cached by the CPU
    hits: list[int] = []
    h = probe(m, 3, pre_handler=lambda _d, _r: hits.append(1))
    assert m.call(BASE, 1) == f(1) and hits == [1]
    unregister_kprobe(m.manager, m.points, h)  # type: ignore[arg-type]
    assert m.call(BASE, 1) == f(1) and hits == [1]


def test_unregister_from_inside_its_own_handler() -> None:
    m = machine()
    handle: list[object] = []
    hits: list[int] = []

    def pre(_d: object, _r: PtRegs) -> None:
        hits.append(1)
        unregister_kprobe(m.manager, m.points, handle[0])  # type: ignore[arg-type]

    handle.append(probe(m, 3, pre_handler=pre))
    assert m.call(BASE, 2) == f(2)  # the slot is still stepped after the unregister
    assert m.call(BASE, 2) == f(2)
    assert hits == [1]
    assert m.read(BASE, len(CODE)) == CODE
    assert not m.manager.debug_list and not m.points


@pytest.mark.parametrize("kind", ["slot", "boosted"])
def test_unregister_while_its_slot_is_being_stepped(kind: str) -> None:
    """A probe removed between its breakpoint and its end-of-step trap (here by another
    probe's handler, from a nested call on a different path), or just before a boosted
    step, keeps its slot until no CPU can be inside it; the slot is freed after."""
    m = machine()
    h = probe(m, 3, post_handler=lambda d, r: None) if kind == "slot" else probe(m, 3)
    point = m.points[BASE + 3]
    slot = point.slot_addr
    freed: list[int] = []
    free = m.free_kernel_exec_memory
    m.free_kernel_exec_memory = lambda a: (freed.append(a), free(a))  # type: ignore[method-assign]

    def unregister(e: ProbeEvent) -> None:
        if e.kind == kind:
            unregister_kprobe(m.manager, m.points, h)  # type: ignore[arg-type]
            assert not freed  # the CPU is about to enter the slot

    m.manager.tracers.append(unregister)
    assert m.call(BASE, 3) == f(3)
    assert point.retired and point.busy == 0
    assert not m.manager.debug_list
    assert slot is not None and m.read(BASE, len(CODE)) == CODE
    assert freed == [slot] and not m.manager.slot_garbage


def test_simulated_access_fault_is_reported_at_the_probed_address() -> None:
    from kprobe_ref.sim import GuestFault

    m = Machine("x86_64")
    code = b"\xff\x24\x25\x00\x00\x00\x50"  # jmp [0x50000000] (unmapped)
    m.map(BASE, 0x1000, "rx")
    m.write(BASE, code)
    m.add_symbol("jump", BASE, len(code))
    errs: list[BaseException] = []
    register_kprobe(m.manager, m.points, ProbeBuilder().with_symbol_addr(BASE))
    for _ in range(2):
        with pytest.raises(GuestFault) as info:
            m.run(BASE, {BASE + len(code)})
        errs.append(info.value)
        assert info.value.pc == BASE and info.value.fault_addr == 0x5000_0000
    assert not m.manager.ctl_stack() and m.points[BASE].busy == 0
