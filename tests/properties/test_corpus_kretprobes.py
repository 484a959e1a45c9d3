"""A kretprobe at every corpus function entry: return values as unprobed, return handlers run
once per call; with a small pool, ``nmissed`` counts exactly the calls that found it empty.
"""

from __future__ import annotations

import pytest

from kprobe_ref import KretprobeBuilder, PtRegs, register_kretprobe, unregister_kretprobe
from kprobe_ref.arch import ARCHES
from kprobe_ref.tools.verify import Case, Runner, bundled_image, bundled_specs

ISAS = sorted(ARCHES)
_RUNNERS: dict[str, Runner] = {}


def _runner(isa: str) -> Runner:
    if isa not in _RUNNERS:
        _RUNNERS[isa] = Runner(isa, bundled_image(isa))
    return _RUNNERS[isa]


def _functions(isa: str) -> list[str]:
    return [n for n, s in bundled_specs(isa).items() if s.callable and s.cases]


@pytest.mark.slow
@pytest.mark.parametrize("isa", ISAS)
def test_kretprobe_at_every_function_entry(isa: str) -> None:
    r = _runner(isa)
    specs = bundled_specs(isa)
    problems = []
    for name in _functions(isa):
        entry = r.image.functions[name]
        counts = r.m.watch({entry})
        counts.clear()
        want = [r.run(name, c) for c in specs[name].cases]
        calls = counts.get(entry, 0)
        r.m.cpu.watch.discard(entry)
        returns: list[int] = []
        rp = register_kretprobe(r.m.manager, r.m.points, KretprobeBuilder()
                                .with_symbol_addr(entry).with_maxactive(4096)
                                .with_ret_handler(
                                    lambda _d, regs, out=returns: out.append(regs.pc)))
        got = [r.run(name, c) for c in specs[name].cases]
        unregister_kretprobe(r.m.manager, r.m.points, rp)
        if got != want:
            problems.append(f"{name}: results differ")
        if len(returns) != calls or rp.nmissed:
            problems.append(f"{name}: {len(returns)} returns, {calls} calls, "
                            f"{rp.nmissed} missed")
        if r.m.task_kretprobe_instances():
            problems.append(f"{name}: instances left on the task")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("pool", [1, 2, 3, 5])
def test_nmissed_is_exact_when_the_pool_is_too_small(isa: str, pool: int) -> None:
    """The oracle: a run with an unbounded pool records each call's depth; a call finds the
    pool empty exactly when ``pool`` calls are live above it, i.e. at depth > pool."""
    r = _runner(isa)
    name, case = "hanoi_moves", Case((6,))
    entry = r.image.functions[name]
    depth, depths = [0], []

    def enter(_d: object, _r: PtRegs) -> None:
        depth[0] += 1
        depths.append(depth[0])

    def leave(_d: object, _r: PtRegs) -> None:
        depth[0] -= 1

    rp = register_kretprobe(r.m.manager, r.m.points, KretprobeBuilder().with_symbol_addr(entry)
                            .with_entry_handler(enter).with_ret_handler(leave)
                            .with_maxactive(4096))
    want = r.run(name, case)
    unregister_kretprobe(r.m.manager, r.m.points, rp)
    assert max(depths) > pool
    fired: list[int] = []
    rp = register_kretprobe(r.m.manager, r.m.points, KretprobeBuilder().with_symbol_addr(entry)
                            .with_ret_handler(lambda _d, _r: fired.append(1))
                            .with_maxactive(pool))
    got = r.run(name, case)
    unregister_kretprobe(r.m.manager, r.m.points, rp)
    assert got == want
    assert rp.nmissed == sum(d > pool for d in depths)
    assert len(fired) == sum(d <= pool for d in depths)
