"""N CPUs run probed functions while probes are registered, unregistered, enabled and
disabled between their instructions, under random schedules and migrations (all four ISAs).

Invariants: every call returns what it returns unprobed; for every probe, hits plus missed
hits equal the executions of its address while it was registered and enabled (nothing lost,
nothing counted twice); kernel text is byte-identical to the image whenever nothing is
armed; executable memory is never handed out while a CPU is inside it (the machine raises
``ReuseWhileInside``)."""

from __future__ import annotations

import os
from functools import cache

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from kprobe_ref import (
    KprobeError,
    KretprobeBuilder,
    ProbeBuilder,
    register_kprobe,
    register_kretprobe,
    unregister_kprobe,
    unregister_kretprobe,
)
from kprobe_ref.manager import instruction_starts
from kprobe_ref.sim import Machine
from kprobe_ref.tools.verify import bundled_image

ISAS = ("x86_64", "aarch64", "riscv64", "loongarch64")
CPUS = 4
FUNCS = (("gcd", (1071, 462)), ("factorial", (5,)), ("popcount_manual", (0xF0F0,)),
         ("fibonacci", (5,)))
THOROUGH = os.environ.get("HYPOTHESIS_PROFILE") == "thorough"


@cache
def reference(isa: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Unprobed results of FUNCS and candidate probe sites (the first instructions of each
    function)."""
    m = Machine(isa)
    sym = m.load_elf(bundled_image(isa)).symbols
    results = tuple(m.call(sym[f], *a) for f, a in FUNCS)
    sites: list[int] = []
    for f, _ in FUNCS:
        fn = m.kernel.function_containing(sym[f])
        assert fn is not None
        starts, _ = instruction_starts(isa, fn[0], m.read(fn[0], fn[1]))
        sites += starts[:4]
    return results, tuple(sites)


class Probe:
    def __init__(self, site: int, ret: bool) -> None:
        self.site, self.ret = site, ret
        self.handle: object = None
        self.hits = 0
        self.active_since: int | None = None
        self.expected = 0


def machine_for(isa: str) -> type[RuleBasedStateMachine]:
    class SmpMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.m = Machine(isa, cpus=CPUS)
            self.sym = self.m.load_elf(bundled_image(isa)).symbols
            self.want, sites = reference(isa)
            self.counts = self.m.watch(set(sites))
            lo = min(sites)
            self.text = (lo, self.m.read(lo, max(sites) + 16 - lo))
            self.calls: dict[int, int] = {}
            self.probes: list[Probe] = []

        # -- the CPUs ----------------------------------------------------------------------
        @rule(cpu=st.integers(0, CPUS - 1), f=st.integers(0, len(FUNCS) - 1))
        def start(self, cpu: int, f: int) -> None:
            if self.m.smp.pc(cpu) is None:
                name, args = FUNCS[f]
                self.m.start(cpu, self.sym[name], *args)
                self.calls[cpu] = f

        @rule(cpu=st.integers(0, CPUS - 1), n=st.integers(1, 40))
        def step(self, cpu: int, n: int) -> None:
            self.m.step(cpu, n)
            self._check_done(cpu)

        @rule(src=st.integers(0, CPUS - 1), dst=st.integers(0, CPUS - 1))
        def migrate(self, src: int, dst: int) -> None:
            smp = self.m.smp
            if smp.pc(src) is None or smp.pc(dst) is not None:
                return
            if self.m.manager._ctl.get(src):
                with pytest.raises(KprobeError):
                    self.m.migrate(src, dst)
                return
            self.m.migrate(src, dst)
            self.calls[dst] = self.calls.pop(src)

        def _check_done(self, cpu: int) -> None:
            if cpu in self.calls and self.m.done(cpu):
                f = self.calls.pop(cpu)
                assert self.m.result(cpu) == self.want[f], FUNCS[f]

        # -- the probes (another CPU's work: between instructions) -------------------------
        @rule(i=st.integers(0, 15), ret=st.booleans(), enabled=st.booleans())
        def register(self, i: int, ret: bool, enabled: bool) -> None:
            sites = reference(isa)[1]
            site = sites[i % len(sites)]
            if ret and site not in {self.sym[f] for f, _ in FUNCS}:
                ret = False
            p = Probe(site, ret)

            def count(_d: object, _r: object) -> None:
                p.hits += 1

            try:
                if ret:
                    p.handle = register_kretprobe(
                        self.m.manager, self.m.points,
                        KretprobeBuilder().with_symbol_addr(site).with_maxactive(2)
                        .with_entry_handler(count))
                    if not enabled:
                        p.handle.disable()
                else:
                    p.handle = register_kprobe(
                        self.m.manager, self.m.points,
                        ProbeBuilder().with_symbol_addr(site).with_pre_handler(count)
                        .with_enable(enabled))
            except KprobeError:
                return
            self.probes.append(p)
            if enabled:
                p.active_since = self.counts[site]

        def _close(self, p: Probe) -> None:
            if p.active_since is not None:
                p.expected += self.counts[p.site] - p.active_since
                p.active_since = None

        @precondition(lambda self: self.probes)
        @rule(i=st.integers(0, 63))
        def unregister(self, i: int) -> None:
            p = self.probes.pop(i % len(self.probes))
            self._close(p)
            if p.ret:
                unregister_kretprobe(self.m.manager, self.m.points, p.handle)  # type: ignore[arg-type]
            else:
                unregister_kprobe(self.m.manager, self.m.points, p.handle)  # type: ignore[arg-type]
            self._check_counts(p)

        @precondition(lambda self: self.probes)
        @rule(i=st.integers(0, 63), on=st.booleans())
        def toggle(self, i: int, on: bool) -> None:
            p = self.probes[i % len(self.probes)]
            h = p.handle
            if on and not h.is_enabled():  # type: ignore[attr-defined]
                h.enable()  # type: ignore[attr-defined]
                p.active_since = self.counts[p.site]
            elif not on and h.is_enabled():  # type: ignore[attr-defined]
                self._close(p)
                h.disable()  # type: ignore[attr-defined]

        def _check_counts(self, p: Probe) -> None:
            missed = p.handle.nmissed  # type: ignore[attr-defined]
            assert p.hits + missed == p.expected, (hex(p.site), p.hits, missed, p.expected)

        # -- invariants ---------------------------------------------------------------------
        @invariant()
        def text_pristine_when_nothing_is_armed(self) -> None:
            if not any(pt.armed for pt in self.m.manager.break_list.values()):
                lo, text = self.text
                assert self.m.read(lo, len(text)) == text

        def teardown(self) -> None:
            for cpu in range(CPUS):
                self.m.step(cpu, 1_000_000)
                self._check_done(cpu)
            while self.probes:
                self.unregister(0)
            assert not self.calls

    SmpMachine.TestCase.settings = settings(
        max_examples=300 if THOROUGH else 20, stateful_step_count=80 if THOROUGH else 40)
    return SmpMachine


@pytest.mark.parametrize("isa", ISAS)
def test_smp_state_machine(isa: str) -> None:
    machine_for(isa).TestCase().runTest()
