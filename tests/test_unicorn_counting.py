"""A unicorn CPU that does not count every instruction (``counting = False``, what verified
audits use) gives the same results, stops where it must, and still bounds a run."""

from __future__ import annotations

import pytest

from kprobe_ref import ProbeBuilder, register_kprobe
from kprobe_ref.sim import Machine, StepLimitExceeded

BASE = 0x40_0000
# sum = 0; for (i = rdi; i; i--) sum += i; return sum
LOOP = bytes.fromhex("31c0" "4885ff" "7408" "4801f8" "48ffcf" "75f8" "c3")
SPIN = bytes.fromhex("ebfe")  # jmp .


def machine(counting: bool) -> Machine:
    m = Machine("x86_64")
    m.map(BASE, 0x1000, "rx")
    m.write(BASE, LOOP)
    m.write(BASE + 0x100, SPIN)
    m.add_symbol("loop", BASE, len(LOOP))
    m.add_symbol("spin", BASE + 0x100, len(SPIN))
    m.cpu.counting = counting
    return m


@pytest.mark.parametrize("counting", [True, False])
def test_results_and_probes_are_the_same_either_way(counting: bool) -> None:
    m = machine(counting)
    assert m.call(BASE, 100) == 5050
    hits: list[int] = []
    register_kprobe(m.manager, m.points, ProbeBuilder().with_symbol_addr(BASE + 7)
                    .with_pre_handler(lambda _d, _r: hits.append(1)))
    assert m.call(BASE, 100) == 5050
    assert len(hits) == 100


@pytest.mark.parametrize("counting", [True, False])
def test_a_runaway_run_is_still_bounded(counting: bool) -> None:
    m = machine(counting)
    with pytest.raises(StepLimitExceeded):
        m.call(BASE + 0x100, max_steps=10_000)


def test_watched_addresses_are_counted_exactly_when_not_counting() -> None:
    m = machine(False)
    counts = m.watch({BASE + 7})
    assert m.call(BASE, 7) == 28
    assert counts[BASE + 7] == 7
