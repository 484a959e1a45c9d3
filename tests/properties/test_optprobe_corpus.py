"""Every instruction of every bundled x86_64 and riscv64 corpus function, probed in turn
with a pre-handler-only kprobe and optimization on: where the point is optimized, the function's
return value and memory are the unprobed run's, the hit count is the number of times the
instruction executes unprobed, and no trap is taken; removing the probe restores the code
and frees the detour."""

from __future__ import annotations

import pytest

from kprobe_ref import ProbeBuilder, register_kprobe, unregister_kprobe
from kprobe_ref.errors import KprobeError
from kprobe_ref.tools.verify import Runner, bundled_image, bundled_specs

ISAS = ("x86_64", "riscv64")
CASES = [(isa, n) for isa in ISAS
         for n, s in sorted(bundled_specs(isa).items()) if s.callable and s.cases]
_RUNNERS: dict[str, Runner] = {}


def _runner(isa: str) -> Runner:
    if isa not in _RUNNERS:
        r = Runner(isa, bundled_image(isa))
        r.m.manager.optimization = True
        _RUNNERS[isa] = r
    return _RUNNERS[isa]


@pytest.mark.slow
@pytest.mark.parametrize(("isa", "name"), CASES, ids=[f"{i}-{n}" for i, n in CASES])
def test_optimized_probe_at_every_instruction(isa: str, name: str) -> None:
    r, cases = _runner(isa), bundled_specs(isa)[name].cases
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
