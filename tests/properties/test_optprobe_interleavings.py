"""Any interleaving of register (pre-handler only, or with a post handler), unregister,
enable, disable, adding and removing event callbacks and explicit optimizer runs, with
optimization on, on a corpus function of x86_64 and of riscv64: the function's results are
the unprobed ones, every enabled probe is hit as often as its instruction executes, a run
takes no trap when every enabled point is optimized, only points whose probes all lack a
post handler and an event callback are optimized, no optimized region holds another
point, memory holds exactly each point's jump or breakpoint, and once every probe is gone
the original bytes are back and the detours freed."""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from kprobe_ref import Kprobe, ProbeBuilder, optimize_kprobes, register_kprobe, unregister_kprobe
from kprobe_ref.manager import second_trap_users
from kprobe_ref.tools.verify import Runner, bundled_image, bundled_specs

FUNCTION = "crc32_bitwise"


class OptimizedInterleavings(RuleBasedStateMachine):
    """Random probe operations on one corpus function, optimization on."""

    isa = "x86_64"

    @initialize()
    def setup(self) -> None:
        self.r = Runner(self.isa, bundled_image(self.isa))
        self.m = self.r.m
        self.m.manager.optimization = True
        self.cases = bundled_specs(self.isa)[FUNCTION].cases[:2]
        self.start = self.r.image.functions[FUNCTION]
        self.size = self.r.image.sizes[FUNCTION]
        self.original = self.m.read(self.start, self.size)
        self.sites = self.r.instructions(FUNCTION)
        self.expected, self.executions = self.r.baseline(FUNCTION, self.cases)
        self.live: list[Kprobe] = []

    @rule(pick=st.integers(0, 1 << 16), post=st.booleans(), enabled=st.booleans())
    def register(self, pick: int, post: bool, enabled: bool) -> None:
        addr = self.sites[pick % len(self.sites)]
        b = ProbeBuilder().with_symbol_addr(addr).with_enable(enabled) \
            .with_pre_handler(lambda _d, _r: None)
        if post:
            b = b.with_post_handler(lambda _d, _r: None)
        self.live.append(register_kprobe(self.m.manager, self.m.points, b))

    @rule(pick=st.integers(0, 1 << 16))
    def unregister(self, pick: int) -> None:
        if self.live:
            unregister_kprobe(self.m.manager, self.m.points,
                              self.live.pop(pick % len(self.live)))

    @rule(pick=st.integers(0, 1 << 16))
    def toggle(self, pick: int) -> None:
        if self.live:
            h = self.live[pick % len(self.live)]
            h.disable() if h.is_enabled() else h.enable()

    @rule(pick=st.integers(0, 1 << 16))
    def callback(self, pick: int) -> None:
        if self.live:
            h = self.live[pick % len(self.live)]
            if h.has_event_callbacks():
                h.unregister_event_callback(7)
            else:
                h.register_event_callback(7, lambda _r: None)

    @rule()
    def optimize(self) -> None:
        optimize_kprobes(self.m.manager)

    @rule()
    def run(self) -> None:
        hits = {id(h): h.nhit for h in self.live}
        traps = self.m.trap_count
        got = [self.r.run(FUNCTION, c) for c in self.cases]
        assert got == self.expected
        for h in self.live:
            want = self.executions[h.address] if h.enabled else 0
            assert h.nhit - hits[id(h)] == want, hex(h.address)
        enabled = [h for h in self.live if h.enabled]
        if all(h.optimized for h in enabled):
            assert self.m.trap_count == traps

    @invariant()
    def memory_and_points_match_the_model(self) -> None:
        if not hasattr(self, "r"):
            return
        code = bytearray(self.original)
        for point in self.m.points.values():
            written = point.written()
            assert (written is not None) == point.wants_breakpoint()
            if written is not None:
                at = point.address - self.start
                code[at:at + len(written[0])] = written[0]
            if point.opt is not None:
                assert not any(second_trap_users(p) for p in point.probes)
                end = point.address + point.opt.plan.region
                assert not [a for a in self.m.points if point.address < a < end]
        assert self.m.read(self.start, self.size) == bytes(code)
        assert set(self.m.points) == {h.address for h in self.live}

    def teardown(self) -> None:
        if not hasattr(self, "r"):
            return
        for h in self.live:
            unregister_kprobe(self.m.manager, self.m.points, h)
        assert self.m.read(self.start, self.size) == self.original
        self.r.run(FUNCTION, self.cases[0])  # a quiescent point: retired detours go
        assert not self.m.points and not self.m.manager.opt_entries
        assert not self.m.manager.opt_garbage


class RiscvOptimizedInterleavings(OptimizedInterleavings):
    isa = "riscv64"


TestOptimizedInterleavings = OptimizedInterleavings.TestCase
TestRiscvOptimizedInterleavings = RiscvOptimizedInterleavings.TestCase
