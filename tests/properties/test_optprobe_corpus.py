"""Every instruction of every bundled x86_64 corpus function, probed in turn with a
pre-handler-only kprobe and optimization on: where the point is optimized, the function's
return value and memory are the unprobed run's, the hit count is the number of times the
instruction executes unprobed, and no trap is taken; removing the probe restores the code
and frees the detour."""

from __future__ import annotations

import pytest

from kprobe_ref import ProbeBuilder, register_kprobe, unregister_kprobe
from kprobe_ref.errors import KprobeError
from kprobe_ref.tools.verify import Runner, bundled_image, bundled_specs

FUNCTIONS = sorted(n for n, s in bundled_specs("x86_64").items() if s.callable and s.cases)
_RUNNER: list[Runner] = []


def _runner() -> Runner:
    if not _RUNNER:
        r = Runner("x86_64", bundled_image("x86_64"))
        r.m.manager.optimization = True
        _RUNNER.append(r)
    return _RUNNER[0]


@pytest.mark.slow
@pytest.mark.parametrize("name", FUNCTIONS)
def test_optimized_probe_at_every_instruction(name: str) -> None:
    r, cases = _runner(), bundled_specs("x86_64")[name].cases
    m = r.m
    baseline, totals = r.baseline(name, cases)
    problems = []
    for addr in r.instructions(name):
        hits: list[int] = []
        before = m.read(addr, 16)
        try:
            h = register_kprobe(m.manager, m.points, ProbeBuilder().with_symbol_addr(addr)
                                .with_pre_handler(lambda _d, _r, hits=hits: hits.append(1)))
        except KprobeError:
            continue
        if h.optimized:
            traps = m.trap_count
            outcomes = [r.run(name, case) for case in cases]
            if outcomes != baseline:
                problems.append(f"{addr:#x}: outcomes differ from the unprobed run")
            if m.trap_count != traps:
                problems.append(f"{addr:#x}: {m.trap_count - traps} traps")
            if len(hits) != totals[addr]:
                problems.append(f"{addr:#x}: hit {len(hits)} times, executes {totals[addr]}")
        unregister_kprobe(m.manager, m.points, h)
        if m.read(addr, 16) != before:
            problems.append(f"{addr:#x}: original bytes not restored")
    assert not problems, "\n".join(problems)
    assert not m.points and not m.manager.opt_entries and not m.manager.opt_garbage
