"""The seed's event callbacks on kprobes and kretprobes, and probes placed by symbol name,
on all four ISAs."""

from __future__ import annotations

import pytest

from kprobe_ref import (
    KretprobeBuilder,
    ProbeBuilder,
    PtRegs,
    register_kprobe,
    register_kretprobe,
    unregister_kprobe,
)
from kprobe_ref.arch import instruction_starts
from kprobe_ref.errors import (
    InvalidProbeDefinition,
    NotRegistered,
    SymbolNotUnique,
    UnknownSymbol,
)
from kprobe_ref.sim import Machine
from kprobe_ref.tools.verify import bundled_image

ISAS = ["x86_64", "aarch64", "riscv64", "loongarch64"]


def machine(isa: str) -> tuple[Machine, int, int]:
    m = Machine(isa)
    image = m.load_elf(bundled_image(isa))
    return m, image.symbols["gcd"], image.sizes["gcd"]


@pytest.mark.parametrize("isa", ISAS)
def test_kprobe_callbacks_run_after_the_post_handler_in_id_order(isa: str) -> None:
    """At every instruction of gcd (stepped and simulated ones): callbacks run once per
    completed hit, after the post handler, in ascending id order, with the registers
    after the step."""
    m, gcd, size = machine(isa)
    starts = instruction_starts(isa, gcd, m.read(gcd, size))[0]
    log: list[tuple[str, int]] = []
    for addr in starts:
        def post(_d: object, regs: PtRegs, a: int = addr) -> None:
            log.append(("post", a))

        h = register_kprobe(m.manager, m.points,
                            ProbeBuilder().with_symbol_addr(addr).with_post_handler(post))
        h.register_event_callback(7, lambda regs, a=addr: log.append(("cb7", a)))
        h.register_event_callback(2, lambda regs, a=addr: log.append(("cb2-old", a)))
        h.register_event_callback(2, lambda regs, a=addr: log.append(("cb2", a)))
        h.register_event_callback(5, lambda regs, a=addr: log.append(("cb5", regs.pc)))
        assert h.has_event_callbacks() and len(h.event_callbacks()) == 3
    assert m.call(gcd, 48, 18) == 6
    assert log and not any(kind == "cb2-old" for kind, _ in log)
    groups = [log[i:i + 4] for i in range(0, len(log), 4)]
    for group in groups:
        assert [k for k, _ in group] == ["post", "cb2", "cb5", "cb7"]
        assert group[0][1] == group[1][1] == group[3][1]
        assert group[2][1] != group[0][1]  # the PC has moved past the probed instruction


@pytest.mark.parametrize("isa", ISAS)
def test_kprobe_callbacks_only_while_enabled_and_not_after_unregister(isa: str) -> None:
    m, gcd, _ = machine(isa)
    calls: list[int] = []
    h = register_kprobe(m.manager, m.points, ProbeBuilder().with_symbol_addr(gcd)
                        .with_event_callback(1, lambda regs: calls.append(1)))
    m.call(gcd, 4, 6)
    h.disable()
    m.call(gcd, 4, 6)
    h.enable()
    h.unregister_event_callback(1)
    m.call(gcd, 4, 6)
    assert calls == [1]
    with pytest.raises(NotRegistered):
        h.unregister_event_callback(1)
    with pytest.raises(InvalidProbeDefinition):
        h.register_event_callback("one", lambda regs: None)  # type: ignore[arg-type]
    unregister_kprobe(m.manager, m.points, h)


@pytest.mark.parametrize("isa", ISAS)
def test_skipping_pre_handler_runs_no_callbacks(isa: str) -> None:
    """A pre-handler that sets the PC itself skips the instruction: no step completes, so
    neither the post handler nor the callbacks run (Linux's rule for post handlers)."""
    from kprobe_ref.sim.machine import RETURN_STOP

    m, gcd, _ = machine(isa)
    calls: list[str] = []

    def skip(_d: object, regs: PtRegs) -> bool:
        regs.pc = RETURN_STOP  # return to the caller at once
        regs.set(regs.RET[0], 99)
        return True

    h = register_kprobe(m.manager, m.points, ProbeBuilder().with_symbol_addr(gcd)
                        .with_pre_handler(skip)
                        .with_post_handler(lambda _d, _r: calls.append("post")))
    h.register_event_callback(0, lambda regs: calls.append("cb"))
    assert m.call(gcd, 4, 6) == 99
    assert calls == []


@pytest.mark.parametrize("isa", ISAS)
def test_kretprobe_callbacks_run_at_return_after_the_return_handler(isa: str) -> None:
    m, gcd, _ = machine(isa)
    log: list[tuple[str, int]] = []
    rp = register_kretprobe(
        m.manager, m.points,
        KretprobeBuilder().with_symbol("gcd")
        .with_ret_handler(lambda _d, regs: log.append(("ret", regs.first_ret_value())))
        .with_event_callback(lambda regs: log.append(("cb0", regs.first_ret_value()))),
    )
    rp.register_event_callback(3, lambda regs: log.append(("cb3", regs.pc)))
    assert m.call(gcd, 48, 18) == 6
    assert log[:2] == [("ret", 6), ("cb0", 6)] and log[2][0] == "cb3"
    assert not rp.kprobe.has_event_callbacks()  # the entry probe's step needs no trap
    rp.unregister_event_callback(0)
    log.clear()
    m.call(gcd, 10, 4)
    assert [k for k, _ in log] == ["ret", "cb3"]


@pytest.mark.parametrize("isa", ISAS)
def test_failing_callback_is_reported_and_the_rest_run(isa: str) -> None:
    m, gcd, _ = machine(isa)
    seen: list[object] = []

    def bad(regs: PtRegs) -> None:
        regs.pc = 0
        raise RuntimeError("callback failed")

    h = register_kprobe(m.manager, m.points, ProbeBuilder().with_symbol_addr(gcd)
                        .with_fault_handler(lambda _d, _r, e: seen.append(e)))
    h.register_event_callback(1, bad)
    h.register_event_callback(2, lambda regs: seen.append("second"))
    assert m.call(gcd, 48, 18) == 6
    assert isinstance(seen[0], RuntimeError) and seen[1] == "second"


@pytest.mark.parametrize("isa", ISAS)
def test_probe_by_symbol_name_and_offset(isa: str) -> None:
    m, gcd, size = machine(isa)
    second = instruction_starts(isa, gcd, m.read(gcd, size))[0][1]
    hits: list[int] = []
    h = register_kprobe(m.manager, m.points, ProbeBuilder().with_symbol("gcd")
                        .with_offset(second - gcd)
                        .with_pre_handler(lambda _d, regs: hits.append(regs.pc)))
    assert h.address == second
    m.call(gcd, 48, 18)
    assert hits
    before = dict(m.points)
    with pytest.raises(UnknownSymbol):
        register_kprobe(m.manager, m.points, ProbeBuilder().with_symbol("no_such_function"))
    m.add_symbol("twice", gcd, 4)
    m.add_symbol("twice", second, 4)
    with pytest.raises(SymbolNotUnique):
        register_kprobe(m.manager, m.points, ProbeBuilder().with_symbol("twice"))
    with pytest.raises(InvalidProbeDefinition):
        register_kprobe(m.manager, m.points,
                        ProbeBuilder().with_symbol("gcd").with_symbol_addr(gcd))
    with pytest.raises(UnknownSymbol):
        register_kretprobe(m.manager, m.points, KretprobeBuilder().with_symbol("nope"))
    assert dict(m.points) == before
