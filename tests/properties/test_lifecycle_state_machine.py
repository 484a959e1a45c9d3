"""The probe lifecycle against a model, on all four ISAs.

Operations: register, unregister, enable and disable of kprobes, kretprobes, uprobes and
uretprobes on three corpus functions (``factorial``, ``gcd``, the recursive ``power_mod``) in
the kernel and in a process; calls of those functions; calls stopped by a step limit; and
probes whose pre-handler makes a nested call (which may itself abort).  The model is a list
of live handles with the hit, miss and return counts each should have, computed from the
unprobed runs' per-instruction execution counts (a nested call's hits are reentrant, so
they are misses; a return probe whose pool is empty misses).

Invariants after every step: each point's bytes are its breakpoint when an enabled probe is
there and the original otherwise, and the functions are byte-identical to the image when no
probe is armed; the slots in use are exactly those of live points (plus the trampoline); no
control block, busy point or return-probe instance is left over; every call returns what the
unprobed call returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from kprobe_ref import (
    KprobeError,
    KretprobeBuilder,
    ProbeBuilder,
    PtRegs,
    register_kprobe,
    register_kretprobe,
    register_uprobe,
    register_uretprobe,
    unregister_kprobe,
    unregister_kretprobe,
    unregister_uprobe,
    unregister_uretprobe,
)
from kprobe_ref.manager import check_probe, instruction_starts
from kprobe_ref.sim import Machine, MachineError
from kprobe_ref.sim.elf import Image
from kprobe_ref.tools.verify import bundled_image

FUNCTIONS = {"factorial": ((3,), (5,)), "gcd": ((48, 18), (17, 5)),
             "power_mod": ((3, 13, 1000), (2, 10, 1000))}
NESTED = ("gcd", (48, 18))
SPACES = ("kernel", "user")


@dataclass(frozen=True)
class Baseline:
    """Unprobed runs of one address space: result and per-instruction execution counts."""

    starts: dict[str, int]
    sites: dict[str, tuple[int, ...]]
    runs: dict[tuple[str, tuple[int, ...]], tuple[int, dict[int, int]]]


def _image(m: Machine, space: str, pid: int) -> Image:
    return m.images[0] if space == "kernel" else m.process(pid).image


def _instructions(m: Machine, space: str, pid: int, image: Image, name: str
                  ) -> tuple[int, ...]:
    start, size = image.functions[name], image.sizes[name]
    if m.arch.variable_length:
        code = m.read_memory(start, size, None if space == "kernel" else pid)
        return instruction_starts(m.isa, start, code)[0]
    return tuple(range(start, start + size, m.arch.insn_align))


def _call(m: Machine, space: str, pid: int, addr: int, args: tuple[int, ...],
          max_steps: int = 200_000) -> int:
    if space == "kernel":
        return m.call(addr, *args, max_steps=max_steps)
    return m.call_user(pid, addr, *args, max_steps=max_steps)


@cache
def baseline(isa: str, space: str) -> Baseline:
    m = Machine(isa)
    m.load_elf(bundled_image(isa))
    pid = m.spawn(bundled_image(isa, "user"))
    image = _image(m, space, pid)
    starts = {n: image.functions[n] for n in FUNCTIONS}
    sites = {n: _instructions(m, space, pid, image, n) for n in FUNCTIONS}
    counts = m.watch({a for s in sites.values() for a in s}, None if space == "kernel" else pid)
    runs = {}
    for name, cases in FUNCTIONS.items():
        for args in cases:
            before = dict(counts)
            ret = _call(m, space, pid, starts[name], args)
            runs[(name, args)] = (ret, {a: counts.get(a, 0) - before.get(a, 0)
                                        for a in counts})
    return Baseline(starts, sites, runs)


@dataclass(eq=False)
class Live:
    """A registered handle and what the model expects of it."""

    handle: Any
    space: str
    addr: int
    kind: str
    """``kprobe``, ``kretprobe`` or ``nester`` (a kprobe whose pre-handler calls gcd)."""
    maxactive: int = 0
    aborting: bool = False
    hits: int = 0
    missed: int = 0
    rp_missed: int = 0
    fired: int = 0
    fires: list[int] = field(default_factory=list)

    @property
    def kprobe(self) -> Any:
        return self.handle.kprobe if self.kind == "kretprobe" else self.handle

    @property
    def enabled(self) -> bool:
        return bool(self.handle.is_enabled())


class LifecycleMachine(RuleBasedStateMachine):
    """The lifecycle of every probe kind on one ISA (subclassed per ISA below)."""

    isa = "x86_64"

    @initialize()
    def setup(self) -> None:
        self.m = Machine(self.isa)
        self.m.load_elf(bundled_image(self.isa))
        self.pid = self.m.spawn(bundled_image(self.isa, "user"))
        self.base = {s: baseline(self.isa, s) for s in SPACES}
        self.original = {s: {n: self._read(s, b.starts[n], self._size(s, n))
                             for n, b in [(n, self.base[s]) for n in FUNCTIONS]}
                         for s in SPACES}
        self.live: list[Live] = []
        self.exact = True
        self.probeable = {s: [a for n in FUNCTIONS for a in self.base[s].sites[n]
                              if self._probeable(s, a)] for s in SPACES}

    # -- helpers ------------------------------------------------------------------------------
    def _tables(self, space: str) -> tuple[Any, Any]:
        if space == "kernel":
            return self.m.manager, self.m.points
        proc = self.m.process(self.pid)
        return proc.manager, proc.points

    def _space(self, space: str) -> Any:
        return self.m.kernel if space == "kernel" else self.m.process(self.pid).space

    def _size(self, space: str, name: str) -> int:
        return _image(self.m, space, self.pid).sizes[name]

    def _read(self, space: str, addr: int, n: int) -> bytes:
        return bytes(self._space(space).read(addr, n))

    def _probeable(self, space: str, addr: int) -> bool:
        try:
            check_probe(*self._tables(space), addr)
        except KprobeError:
            return False
        return True

    def _nested(self, space: str, aborting: bool) -> Any:
        start = self.base[space].starts[NESTED[0]]

        def pre(_d: object, _r: PtRegs) -> None:
            _call(self.m, space, self.pid, start, NESTED[1], 3 if aborting else 200_000)

        return pre

    # -- operations ---------------------------------------------------------------------------
    @rule(space=st.sampled_from(SPACES), pick=st.integers(0, 1 << 16), enabled=st.booleans(),
          kind=st.sampled_from(["kprobe", "kprobe", "nester", "aborting"]))
    def register_probe(self, space: str, pick: int, enabled: bool, kind: str) -> None:
        sites = self.probeable[space]
        addr = sites[pick % len(sites)]
        b = ProbeBuilder().with_symbol_addr(addr).with_enable(enabled)
        if kind in ("nester", "aborting"):
            b = b.with_pre_handler(self._nested(space, kind == "aborting"))
        mgr, points = self._tables(space)
        if space == "user":
            h = register_uprobe(mgr, points, b.with_user_mode(self.pid))
        else:
            h = register_kprobe(mgr, points, b)
        self.live.append(Live(h, space, addr, "kprobe" if kind == "kprobe" else "nester",
                              aborting=kind == "aborting"))

    @rule(space=st.sampled_from(SPACES), name=st.sampled_from(sorted(FUNCTIONS)),
          maxactive=st.sampled_from([1, 2, 20]), enabled=st.booleans())
    def register_return_probe(self, space: str, name: str, maxactive: int,
                              enabled: bool) -> None:
        addr = self.base[space].starts[name]
        if not self._probeable(space, addr):
            return
        fires: list[int] = []
        b = KretprobeBuilder().with_symbol_addr(addr).with_maxactive(maxactive) \
            .with_ret_handler(lambda _d, _r: fires.append(1))
        mgr, points = self._tables(space)
        if space == "user":
            h = register_uretprobe(mgr, points, b.with_user_mode(self.pid))
        else:
            h = register_kretprobe(mgr, points, b)
        if not enabled:
            h.disable()
        self.live.append(Live(h, space, addr, "kretprobe", maxactive, fires=fires))

    @precondition(lambda self: self.live)
    @rule(pick=st.integers(0, 1 << 16))
    def unregister(self, pick: int) -> None:
        entry = self.live.pop(pick % len(self.live))
        mgr, points = self._tables(entry.space)
        unreg = {("kernel", False): unregister_kprobe, ("user", False): unregister_uprobe,
                 ("kernel", True): unregister_kretprobe, ("user", True): unregister_uretprobe}
        unreg[(entry.space, entry.kind == "kretprobe")](mgr, points, entry.handle)
        self._check_counts(entry)

    @precondition(lambda self: self.live)
    @rule(pick=st.integers(0, 1 << 16))
    def toggle(self, pick: int) -> None:
        entry = self.live[pick % len(self.live)]
        entry.handle.disable() if entry.enabled else entry.handle.enable()

    @rule(space=st.sampled_from(SPACES), name=st.sampled_from(sorted(FUNCTIONS)),
          case=st.integers(0, 1))
    def call(self, space: str, name: str, case: int) -> None:
        args = FUNCTIONS[name][case]
        ret, counts = self.base[space].runs[(name, args)]
        self._expect(space, counts)
        got = _call(self.m, space, self.pid, self.base[space].starts[name], args)
        assert got == ret, f"{name}{args} returned {got:#x}, unprobed {ret:#x}"
        if any(e.aborting and e.enabled for e in self.live):
            self._resync()
        for entry in self.live:
            self._check_counts(entry)

    @rule(space=st.sampled_from(SPACES), name=st.sampled_from(sorted(FUNCTIONS)),
          steps=st.integers(1, 40))
    def aborted_call(self, space: str, name: str, steps: int) -> None:
        args = FUNCTIONS[name][1]
        try:
            got = _call(self.m, space, self.pid, self.base[space].starts[name], args, steps)
        except MachineError:
            pass
        else:
            assert got == self.base[space].runs[(name, args)][0]
        self._resync()

    # -- the model --------------------------------------------------------------------------
    def _expect(self, space: str, counts: dict[int, int]) -> None:
        """Add one top-level call's hits, misses and returns to the model."""
        live = [e for e in self.live if e.space == space and e.enabled]
        nested = self.base[space].runs[NESTED][1]
        for e in live:
            n = counts.get(e.addr, 0)
            e.hits += n
            if e.kind == "kretprobe":
                e.rp_missed += max(0, n - e.maxactive)
                e.fired += n - max(0, n - e.maxactive)
            if e.kind == "nester" and not e.aborting:
                for other in live:
                    other.missed += n * nested.get(other.addr, 0)

    def _resync(self) -> None:
        """After a run whose hits the model does not predict, take the counts as they are."""
        for e in self.live:
            e.hits, e.missed = e.kprobe.nhit, e.kprobe.nmissed
            if e.kind == "kretprobe":
                e.rp_missed, e.fired = e.handle.nmissed, len(e.fires)

    def _check_counts(self, e: Live) -> None:
        assert (e.kprobe.nhit, e.kprobe.nmissed) == (e.hits, e.missed), (
            f"{e.kind} at {e.addr:#x}: hits/misses {e.kprobe.nhit}/{e.kprobe.nmissed}, "
            f"model {e.hits}/{e.missed}")
        if e.kind == "kretprobe":
            assert (e.handle.nmissed, len(e.fires)) == (e.rp_missed, e.fired)
        if not e.aborting:
            assert e.kprobe.handler_errors == 0

    # -- invariants ---------------------------------------------------------------------------
    @invariant()
    def memory_holds_breakpoints_exactly_where_armed(self) -> None:
        if not hasattr(self, "m"):
            return
        for space in SPACES:
            _, points = self._tables(space)
            for name in FUNCTIONS:
                start = self.base[space].starts[name]
                code = bytearray(self.original[space][name])
                for p in points.values():
                    assert p.armed == p.wants_breakpoint()
                    off = p.address - start
                    if p.armed and 0 <= off < len(code):
                        code[off:off + len(p.breakpoint)] = p.breakpoint
                assert self._read(space, start, len(code)) == bytes(code)

    @invariant()
    def no_slot_leaks_and_no_stale_state(self) -> None:
        if not hasattr(self, "m"):
            return
        for space in SPACES:
            mgr, points = self._tables(space)
            assert set(points) == {e.addr for e in self.live if e.space == space}
            used = {u for a in self._space(space).exec_areas for u in a.used}
            slots = {p.slot_addr for p in points.values() if p.slot_addr is not None}
            trampoline = {mgr.rethooks.trampoline} if mgr.rethooks is not None else set()
            assert used == slots | trampoline
            assert set(mgr.debug_list.values()) <= set(points.values())
            assert not mgr.ctl_stack()
            assert all(p.busy == 0 for p in points.values())
            assert not self._space(space).instances
        for e in self.live:
            if e.kind == "kretprobe":
                assert len(e.handle.free) == e.maxactive

    def teardown(self) -> None:
        if not hasattr(self, "m"):
            return
        while self.live:
            self.unregister(0)
        for space in SPACES:
            for name in FUNCTIONS:
                start = self.base[space].starts[name]
                assert self._read(space, start, len(self.original[space][name])) == \
                    self.original[space][name]


class X86Lifecycle(LifecycleMachine):
    isa = "x86_64"


class Aarch64Lifecycle(LifecycleMachine):
    isa = "aarch64"


class Riscv64Lifecycle(LifecycleMachine):
    isa = "riscv64"


class Loongarch64Lifecycle(LifecycleMachine):
    isa = "loongarch64"


TestX86Lifecycle = X86Lifecycle.TestCase
TestAarch64Lifecycle = Aarch64Lifecycle.TestCase
TestRiscv64Lifecycle = Riscv64Lifecycle.TestCase
TestLoongarch64Lifecycle = Loongarch64Lifecycle.TestCase
